"""Formation as an operator starts it (issue 12, item 4): three ``enclave-swarm run`` processes,
two bootstrapping from the first, meet through the join path.

The periodic peer exchange is set to an hour in every node's config.toml and mDNS is off
(local_test), so the two joiners, which only know the first node, can only find each other by
asking it at once when they join (node/peer_exchange.py, ``PeerExchange.soon``)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.demo import NodeProcess, all_mutually_attested
from node.testing import poll_until

pytestmark = pytest.mark.process


def init(data_dirs: list[Path]) -> None:
    """``enclave-swarm init`` each (at once), then an hour's peer-exchange interval."""
    procs = [subprocess.Popen([sys.executable, "-m", "node.cli", "init", "--data-dir", str(d),
                               "--profile", "local-test"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for d in data_dirs]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    for d in data_dirs:
        cfg = d / "config.toml"
        text, n = re.subn(r"(?m)^peer_exchange_interval_s = .*$",
                          "peer_exchange_interval_s = 3600.0", cfg.read_text())
        assert n == 1
        cfg.write_text(text)


def wait_for(pred, timeout_s: float, step_s: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    return poll_until(pred, timeout_s, step_s, what)


def test_three_processes_meet_through_the_join_path_without_peer_exchange(tmp_path):
    dirs = [tmp_path / name for name in ("a", "b", "c")]
    init(dirs)
    nodes: list[NodeProcess] = []
    try:
        a = NodeProcess(dirs[0])
        nodes.append(a)
        boot = a.wait_listening(30)[0]
        nodes += [NodeProcess(d, bootstrap=[boot]) for d in dirs[1:]]
        for p in nodes[1:]:
            p.wait_listening(30)
        statuses = wait_for(lambda: (s := [p.status() for p in nodes]) and all_mutually_attested(s)
                            and s, 30)
        sa, sb, sc = statuses
        # b and c each know only a; a dialled nobody. They asked a peer at once (the join
        # exchange) and one dialled the other from what it learned.
        learned = [s["counters"].get("dial_learned", {}).get("-", 0) for s in (sb, sc)]
        assert sum(learned) >= 1
        assert all(s["counters"].get("join_exchange", {}).get("-", 0) >= 1 for s in (sb, sc))
        assert sa["counters"].get("dial_learned", {}).get("-", 0) == 0
        for s, other in ((sb, sc), (sc, sb)):
            peer = next(p for p in s["peers"] if p["peer_id"] == other["peer_id"])
            assert peer["attested"] and peer["score"] == 90
    finally:
        for p in nodes:
            p.signal(signal.SIGTERM)
        for p in nodes:
            p.wait(15)
