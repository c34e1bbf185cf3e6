"""``enclave-swarm demo``: a local federation of real node processes on loopback.

Starts N ``enclave-swarm run`` processes with temporary data dirs (the first is the bootstrap
node of the others), waits until every pair is mutually attested, shows the federation, and
tears everything down with SIGTERM (each node says goodbye to its peers and exits 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node.control import NotRunning, request


@dataclasses.dataclass(frozen=True)
class DemoStep:
    """A later component's part of the demo: ``module.function(nodes, console) -> bool``."""

    name: str
    module: str
    function: str
    min_nodes: int


DEMO_STEPS = [
    # The manager step kills the manager, the task step one agent; the shard step then runs on
    # the nodes still alive (it needs six: `make demo` starts eight).
    DemoStep("manager", "node.manager_demo", "run_manager_demo", 3),
    DemoStep("tasks", "node.tasks.demo", "run_task_demo", 3),
    DemoStep("data shards", "node.shards.demo", "run_shard_demo", 6),
]


class NodeProcess:
    """One ``enclave-swarm run`` child process and its data dir."""

    def __init__(self, data_dir: Path, *, bootstrap: list[str] | None = None,
                 extra: list[str] | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        cmd = [sys.executable, "-m", "node.cli", "run", "--data-dir", str(data_dir),
               "--profile", "local-test", "--listen", "/ip4/127.0.0.1/tcp/0", "--tee", "sim"]
        for b in bootstrap or []:
            cmd += ["--bootstrap", b]
        cmd += extra or []
        self.log_path = log_path or data_dir.with_suffix(".log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.addrs: list[str] = []

    @property
    def name(self) -> str:
        """The node's label for people: its data dir's name (``node3``), the same in every
        step, whichever nodes a step kills."""
        return self.data_dir.name

    def wait_listening(self, timeout_s: float) -> list[str]:
        """Read the full listen addresses the node prints once it is up."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                lines = [ln for ln in buf.decode(errors="replace").splitlines() if "/p2p/" in ln]
                if lines and buf.endswith(b"\n"):
                    self.addrs = lines
                    return lines
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"node in {self.data_dir} did not start; see {self.log_path}:\n"
                           + self.tail_log())

    def tail_log(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def status(self) -> dict[str, Any] | None:
        try:
            reply = request(self.data_dir / "control.sock", {"cmd": "status"}, timeout_s=5)
        except (NotRunning, OSError, ValueError):
            return None
        return reply.get("status") if reply.get("ok") else None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 15) -> int:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return rc


def start_nodes(dirs: list[Path], *, timeout_s: float = 60.0) -> list[NodeProcess]:
    """A node process per data dir (new or existing), the first the bootstrap of the others,
    which start side by side (each spends a second or two importing before it listens).
    Returns them once every one listens; if one does not start, all are killed and the
    error is raised (the caller never saw them, so nothing else would stop them)."""
    nodes = [NodeProcess(dirs[0])]
    try:
        boot = [nodes[0].wait_listening(timeout_s)[0]]
        nodes += [NodeProcess(d, bootstrap=boot) for d in dirs[1:]]
        for p in nodes[1:]:
            p.wait_listening(timeout_s)
    except BaseException:
        kill_nodes(nodes)
        raise
    return nodes


def kill_nodes(nodes: list[NodeProcess]) -> None:
    """SIGKILL every node, then reap each."""
    for p in nodes:
        p.signal(signal.SIGKILL)
    for p in nodes:
        p.wait(10)


def council_formed(statuses: list[dict[str, Any] | None]) -> bool:
    """Every node answers, all name one manager, every other node sits on the council, and all
    are mutually attested (what the benchmarks on node processes wait for)."""
    if not all(statuses):
        return False
    managers = {s["manager"] for s in statuses if s}
    roles = sorted(s["role"] for s in statuses if s)
    return (len(managers) == 1 and None not in managers and roles.count("manager") == 1
            and roles.count("council") == len(statuses) - 1 and all_mutually_attested(statuses))


def all_mutually_attested(statuses: list[dict[str, Any] | None]) -> bool:
    if any(s is None for s in statuses):
        return False
    ids = {s["peer_id"] for s in statuses if s}
    for s in statuses:
        assert s is not None
        attested = {p["peer_id"] for p in s["peers"] if p["attested"]}
        if not ids - {s["peer_id"]} <= attested:
            return False
    return True


def gossip_converged(statuses: list[dict[str, Any] | None]) -> bool:
    """Every node holds a signed score record about every node, and sees all as members."""
    if any(s is None or "gossip" not in s for s in statuses):
        return False
    n = len(statuses)
    for s in statuses:
        assert s is not None
        scores = s["gossip"]["scores"]
        if len(scores) < n or s["gossip"]["members"] < n:
            return False
    return True


def federation_table(statuses: list[dict[str, Any]]) -> Table:
    table = Table(title="attested federation")
    for col in ("node", "peer id", "tee", "keys", "listen", "attested peers", "scores given", "mean rtt ms",
                "members", "score records"):
        table.add_column(col)
    for i, s in enumerate(statuses):
        peers = s["peers"]
        scores = sorted({p["score"] for p in peers if p["score"] is not None})
        rtts = [p["rtt_ms"] for p in peers if p["rtt_ms"] is not None]
        keys = s.get("keys") or {}
        where = f"token {keys.get('token')}" if keys.get("backend") == "pkcs11" else "file"
        table.add_row(str(i), "…" + s["peer_id"][-10:], s["tee"], where, s["addrs"][0].split("/p2p/")[0],
                      f"{s['attested_peers']}/{len(statuses) - 1}", ",".join(map(str, scores)),
                      f"{sum(rtts) / len(rtts):.2f}" if rtts else "-",
                      str(s.get("gossip", {}).get("members", "-")),
                      str(len(s.get("gossip", {}).get("scores", {}))))
    return table


def _token_node(root: Path, name: str, console: Console) -> dict[str, str] | None:
    """Initialise node ``name`` with its keys in a SoftHSM2 token of the demo's own; the
    environment its process needs (SOFTHSM2_CONF), or None (file keys) where SoftHSM2 is
    missing, saying why."""
    from node.keys.softhsm import SoftHsm, softhsm_missing

    why = softhsm_missing()
    if why is not None:
        console.print(f"  [yellow]{name} keeps file keys like the others: {why}[/yellow]")
        return None
    hsm = SoftHsm(root / "softhsm")
    token = hsm.init_token(name)
    r = subprocess.run([sys.executable, "-m", "node.cli", "init", "--data-dir", str(root / name),
                        "--profile", "local-test", "--keys", "pkcs11", "--token", name,
                        "--pkcs11-module", token.module, "--pin-file", token.pin_file],
                       capture_output=True, text=True, env={**os.environ, **hsm.env()}, timeout=60)
    if r.returncode != 0:
        console.print(f"  [yellow]{name} keeps file keys: init with SoftHSM2 failed: "
                      f"{r.stderr.strip()}[/yellow]")
        return None
    console.print(f"  {name} keeps its keys in SoftHSM2 token {name!r} (PKCS#11, {token.module}): its "
                  "identity signs inside the token and never leaves it")
    return hsm.env()


def run_demo(n: int, *, timeout_s: float = 120.0, keep: bool = False) -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    root = Path(tempfile.mkdtemp(prefix="enclave-swarm-demo-"))
    nodes: list[NodeProcess] = []
    ok = False
    try:
        console.print(f"[bold]Starting {n} enclave-swarm nodes[/bold] (simulated TEE) in {root}")
        first = NodeProcess(root / "node0")
        nodes.append(first)
        boot = first.wait_listening(30)[0]
        console.print(f"  node0 listening on {boot}")
        token_env = _token_node(root, "node1", console) if n > 1 else None
        for i in range(1, n):
            nodes.append(NodeProcess(root / f"node{i}", bootstrap=[boot],
                                     env=token_env if i == 1 else None))
        for i, p in enumerate(nodes[1:], 1):
            # n - 1 interpreters start at once: on a busy 2-core machine that takes a while
            console.print(f"  node{i} listening on {p.wait_listening(90)[0]}")
        console.print("Waiting until every pair of nodes has mutually attested…")
        deadline = time.monotonic() + timeout_s
        start = time.monotonic()
        statuses: list[dict[str, Any] | None] = []
        while time.monotonic() < deadline:
            statuses = [p.status() for p in nodes]
            if all_mutually_attested(statuses):
                ok = True
                break
            time.sleep(0.25)
        if not ok:
            console.print(f"[red]not every pair attested within {timeout_s:.0f}s[/red]")
            for i, p in enumerate(nodes):
                console.print(f"--- node{i} log ---\n{p.tail_log()}")
            return 1
        console.print(f"All {n * (n - 1)} directed attestations passed in "
                      f"{time.monotonic() - start:.1f}s.")
        start = time.monotonic()
        while time.monotonic() < deadline and not gossip_converged(statuses):
            time.sleep(0.25)
            statuses = [p.status() for p in nodes]
        if not gossip_converged(statuses):
            console.print("[red]score records did not reach every node in time[/red]")
            return 1
        console.print(f"Every node holds a signed score record about each of the {n} nodes (gossip) after "
                      f"{time.monotonic() - start:.1f}s more.")
        console.print(federation_table([s for s in statuses if s]))
        for step in DEMO_STEPS:
            alive = [p for p in nodes if p.proc.poll() is None]
            if len(alive) < step.min_nodes:
                console.print(f"(skipping the {step.name} demo: it needs {step.min_nodes} live nodes; "
                              f"run with more --nodes)")
                continue
            if not importlib.import_module(step.module).__dict__[step.function](alive, console):
                return 1
        return 0
    finally:
        console.print("Stopping the federation (SIGTERM: goodbye to peers, state saved)…")
        for p in nodes:
            p.signal(signal.SIGTERM)
        codes = [p.wait() for p in nodes]
        # Nodes a demo step SIGKILLed on purpose are expected to have died that way.
        if any(c not in (0, -signal.SIGKILL) for c in codes):
            console.print(f"[red]exit codes: {codes}[/red]")
        elif ok:
            console.print("All nodes exited cleanly.")
        if keep:
            console.print(f"data dirs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
