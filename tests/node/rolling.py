"""Rolling restarts of real node processes (node/demo.py NodeProcess) on loopback, watched:
every status sampled on the way must show at most one manager per term."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from node.demo import NodeProcess, all_mutually_attested, kill_nodes


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def _brief(s: dict[str, Any] | None) -> Any:
    return None if not s else {k: s.get(k) for k in ("role", "manager", "term", "commit_index")}


def _attested(sts: list[dict[str, Any] | None]) -> dict[str, list[str]]:
    return {s["peer_id"][-6:]: sorted(p["peer_id"][-6:] for p in s["peers"] if p["attested"])
            for s in sts if s}


class Watch:
    """Samples the status of every live node while waiting on a condition; fails on two
    managers in one term, ever. ``seen`` (term -> managers) is what the samples showed."""

    def __init__(self) -> None:
        self.seen: dict[int, set[str]] = {}
        self.samples = 0

    def statuses(self, nodes: list[NodeProcess]) -> list[dict[str, Any] | None]:
        out = [p.status() for p in nodes]
        for s in out:
            if s and s.get("manager") and s.get("term"):
                self.seen.setdefault(s["term"], set()).add(s["manager"])
                self.samples += 1
        bad = {t: m for t, m in self.seen.items() if len(m) > 1}
        assert not bad, f"two managers in one term: {bad}"
        return out

    def wait(self, nodes: list[NodeProcess], pred: Callable[[list[dict[str, Any]]], Any],
             timeout_s: float = 120.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout_s
        sts: list[dict[str, Any] | None] = []
        while time.monotonic() < deadline:
            sts = self.statuses(nodes)
            if all(sts):
                value = pred([s for s in sts if s])
                if value:
                    return value
            time.sleep(0.2)
        raise AssertionError(f"{what} not reached; statuses: {[_brief(s) for s in sts]}\n"
                             f"attested (peer: peers it attested): {_attested(sts)}\n"
                             + "\n".join(p.tail_log(8) for p in nodes))


def agreed(sts: list[dict[str, Any]], council: int) -> str | None:
    """The manager every node names, when they agree on it and on the term, and the council
    has ``council`` members (this node's role: one manager, the rest council)."""
    managers = {s["manager"] for s in sts}
    terms = {s["term"] for s in sts}
    roles = sorted(s["role"] for s in sts)
    if len(managers) == 1 and None not in managers and len(terms) == 1 \
            and roles.count("manager") == 1 and roles.count("council") == council - 1:
        return str(managers.pop())
    return None


def settled(sts: list[dict[str, Any]], council: int) -> str | None:
    """Everyone mutually attested and agreed on one manager."""
    return agreed(sts, council) if all_mutually_attested(list(sts)) else None


def stop_all(nodes: list[NodeProcess]) -> None:
    """Stop every node gracefully (SIGTERM, as ``systemctl stop`` does; ``enclave-swarm stop``
    is the same path) and wait for it to exit 0."""
    for p in nodes:
        p.signal(signal.SIGTERM)
    for p in nodes:
        assert p.wait(60) == 0, p.tail_log()


def restart_one(nodes: list[NodeProcess], i: int, watch: Watch, council: int) -> list[NodeProcess]:
    """Stop node ``i`` gracefully, wait until every other node has noticed (no longer counts it
    attested) and agrees on a manager that is not it, start it again on its data dir, and wait
    until it has rejoined: all mutually attested, one manager, a full council. Returns the
    node list with the new process in place ``i``."""
    victim = nodes[i]
    st = victim.status()
    assert st is not None
    pid = st["peer_id"]
    r = cli("stop", "--data-dir", str(victim.data_dir))
    assert r.returncode == 0, r.stderr
    assert victim.wait(60) == 0, victim.tail_log()
    rest = [p for p in nodes if p is not victim]

    def noticed(sts: list[dict[str, Any]]) -> bool:
        gone = all(pid not in {p["peer_id"] for p in s["peers"] if p["attested"]} for s in sts)
        managers = {s["manager"] for s in sts}
        return gone and len(managers) == 1 and None not in managers and pid not in managers

    watch.wait(rest, noticed, what=f"the others noticing {victim.name} stopped")
    back = NodeProcess(victim.data_dir, bootstrap=[a for p in rest for a in p.addrs[:1]])
    nodes = [*nodes[:i], back, *nodes[i + 1:]]
    try:  # the caller's clean-up knows only the old list: this process is ours to kill
        back.wait_listening(60)
        # generous: on a loaded machine a rejoin waits out election rounds and re-attestations
        watch.wait(nodes, lambda sts: settled(sts, council), timeout_s=180.0,
                   what=f"{victim.name} rejoining")
    except BaseException:
        kill_nodes([back])
        raise
    return nodes
