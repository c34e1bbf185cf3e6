"""put / get / ls / rm through the real CLI against real node processes on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from node.control import request
from node.demo import NodeProcess, all_mutually_attested, start_nodes
from node.shards.demo import run_shard_demo
from node.testing import poll_until

pytestmark = pytest.mark.process


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(pred, timeout_s: float, step_s: float = 0.3, what: str = "condition"):  # type: ignore[no-untyped-def]
    return poll_until(pred, timeout_s, step_s, what)


def _init_with_reattest(data_dir: Path, reattest_s: float) -> None:
    """``init`` a local-test data dir, then set its re-attestation interval in config.toml."""
    r = cli("init", "--data-dir", str(data_dir), "--profile", "local-test")
    assert r.returncode == 0, r.stderr
    path = data_dir / "config.toml"
    text = path.read_text()
    assert "reattest_interval_s = 2.0" in text
    path.write_text(text.replace("reattest_interval_s = 2.0", f"reattest_interval_s = {reattest_s}"))


def start_federation(tmp_path: Path, n: int, started: list[NodeProcess], *,
                     reattest_s: float | None = None) -> list[NodeProcess]:
    if reattest_s is not None:
        for i in range(n):
            _init_with_reattest(tmp_path / f"node{i}", reattest_s)
    started += start_nodes([tmp_path / f"node{i}" for i in range(n)])
    wait_for(lambda: all_mutually_attested([p.status() for p in started]), 120)
    return started


def ls(p: NodeProcess) -> list[dict]:
    r = cli("ls", "--json", "--data-dir", str(p.data_dir))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_shard_demo_on_six_node_processes(tmp_path, procs):
    nodes = start_federation(tmp_path, 6, procs)
    console = Console(record=True, width=200)
    assert run_shard_demo(nodes, console), console.export_text()
    text = console.export_text()
    assert "bit-exact" in text and "clean refusal" in text


def placements(p: NodeProcess) -> list[dict]:
    reply = request(p.data_dir / "control.sock", {"cmd": "shard-placements"}, timeout_s=10)
    assert reply["ok"], reply
    return reply["placements"]


@pytest.mark.slow  # seven node processes, 1-3 minutes each: CI runs it in `make test-slow`
@pytest.mark.parametrize("victim_kind", ["holder", "manager"])
def test_cli_put_sigkill_holder_manager_repair_with_owner_stopped_get_rm(tmp_path, procs, monkeypatch,
                                                                          victim_kind):
    """Every process runs the manager role: the placement is committed to the swarm state, and
    the manager repairs a SIGKILLed holder while the owner is frozen (SIGSTOP). The holder
    killed is either a holder that is not the manager, or the manager itself (handed to a
    holder first if need be): its successor must carry on while the owner is stopped too
    (with the owner a council member, this once left the council unable to certify any state,
    docs/consensus.md "Certification liveness")."""
    monkeypatch.setenv("ENCLAVE_SWARM_SHARD_REPAIR_GRACE_S", "3")
    nodes = start_federation(tmp_path, 7, procs)
    owner = nodes[-1]  # not the founder: the Raft council keeps a quorum while it is stopped
    dd = ["--data-dir", str(owner.data_dir)]
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    # relative paths are resolved by the CLI
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "put", "in.bin", *dd],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    oid = r.stdout.strip()
    assert len(oid) == 32
    # a holder re-attesting late on a loaded machine shows "degraded" for a moment
    wait_for(lambda: ls(owner)[0]["health"] == "healthy", 60)
    [obj] = ls(owner)
    assert obj["k"] == 3 and obj["n"] == 5

    def human_healthy() -> bool:  # the same late re-attestation can show between two calls
        human = cli("ls", *dd)
        assert human.returncode == 0 and oid in human.stdout
        return "healthy" in human.stdout

    wait_for(human_healthy, 60)
    # committed at once, or by the owner's monitor when the council was still forming at put time
    wait_for(lambda: ls(owner)[0]["placement"].startswith("committed"), 120)
    by_peer = {p.status()["peer_id"]: p for p in nodes}
    holders = [h["peer_id"] for h in obj["holders"]]
    manager = owner.status()["manager"]
    if victim_kind == "manager":
        if manager not in holders:  # hand the role to a council member that holds a shard
            council = set(owner.status()["council"])
            to = next(p for p in holders if p in council)
            r = cli("manager", "transfer", "--to", to, *dd)
            assert r.returncode == 0, r.stderr
            wait_for(lambda: all(p.status()["manager"] == to for p in nodes), 60)
            manager = to
        victim = manager
    else:
        victim = next(p for p in holders if p != manager)
    watcher = next(p for pid, p in by_peer.items() if pid != victim and p is not owner)
    wait_for(lambda: [pl["object_id"] for pl in placements(watcher)] == [oid], 60)
    owner.signal(signal.SIGSTOP)
    try:
        by_peer[victim].signal(signal.SIGKILL)
        by_peer[victim].wait(10)

        def repaired() -> bool:
            [pl] = placements(watcher)
            return all(not h["pending"] and h["peer_id"] != victim for h in pl["holders"])

        wait_for(repaired, 180)
    finally:
        owner.signal(signal.SIGCONT)
    # back online, the owner re-signs its manifest (revision 1) naming the committed holders
    wait_for(lambda: ls(owner)[0]["revision"] == 1 and ls(owner)[0]["health"] == "healthy", 120)
    assert victim not in {h["peer_id"] for h in ls(owner)[0]["holders"]}
    out = tmp_path / "out.bin"
    r = cli("get", oid, "-o", str(out), *dd)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    r = cli("rm", oid, *dd)
    assert r.returncode == 0, r.stderr
    assert "5 signed receipts verified" in r.stderr
    assert ls(owner) == []
    r = cli("get", oid, "-o", str(tmp_path / "again.bin"), *dd)
    assert r.returncode == 1 and r.stderr.startswith("enclave-swarm: unknown object")
    r = cli("get", "not-hex", "-o", str(tmp_path / "x"), *dd)
    assert r.returncode == 1 and "not hex" in r.stderr


def test_cli_without_a_node_fails_cleanly(tmp_path):
    r = cli("ls", "--data-dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no node is running" in r.stderr and "Traceback" not in r.stderr
    r = cli("put", str(tmp_path / "missing.bin"), "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "not a readable file" in r.stderr


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_200_mib_put_and_get_with_bounded_rss(tmp_path, procs):
    # The subject is memory, not liveness: re-attest every 10 s (records live 30 s) instead of
    # local-test's 2 s. Sealing 200 MiB starves the owner's event loop (GIL) for seconds; with
    # 6 s records it quarantined its holders as unreachable mid-put, and with no spare node the
    # put failed (seen once, 2026-12-01; a known limit, docs/shards.md).
    nodes = start_federation(tmp_path, 6, procs, reattest_s=10.0)
    owner = nodes[0]
    dd = ["--data-dir", str(owner.data_dir)]
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(200):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    # writing the file starves the nodes on a loaded machine: let them re-attest first
    wait_for(lambda: all_mutually_attested([p.status() for p in nodes]), 120)
    before = {p.proc.pid: _vm_hwm_kib(p.proc.pid) for p in nodes}
    r = cli("put", str(src), *dd, timeout=900)
    assert r.returncode == 0, r.stderr
    oid = r.stdout.strip()
    out = tmp_path / "big.out"
    r = cli("get", oid, "-o", str(out), *dd, timeout=900)
    assert r.returncode == 0, r.stderr
    h2 = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            h2.update(chunk)
    assert h2.digest() == h.digest()
    growth = {pid: (_vm_hwm_kib(pid) - kib) / 1024 for pid, kib in before.items()}
    # 200 MiB went through the owner twice and 40 MiB through each holder: peak RSS may not
    # follow the object size (window 2 MiB per transfer, 1 MiB stripes).
    print(f"VmHWM growth per node (MiB): {sorted(round(g, 1) for g in growth.values())}")
    assert max(growth.values()) < 64, growth
