"""Fast twin, in ``make test``, of the slow seven-process CLI test's ``rm``
(test_cli_processes.py::test_cli_put_sigkill_holder_manager_repair_with_owner_stopped_get_rm):
put, get and rm through ``python -m node.cli`` on four node processes, 2-of-3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.shards_net.test_cli_processes import cli, ls, start_federation, wait_for

pytestmark = pytest.mark.process


def stored(data_dir: Path, oid: str) -> list[Path]:
    """The shard directories a node holds for ``oid`` (node/shards/store.py: ``<oid>.<index>``)."""
    return sorted(data_dir.glob(f"**/{oid}.*"))


def test_put_get_rm_through_the_cli_erases_every_holder(tmp_path, procs):
    nodes = start_federation(tmp_path, 4, procs)
    owner = nodes[0]
    dd = ["--data-dir", str(owner.data_dir)]
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(256 * 1024 + 3))
    r = cli("put", str(src), "-n", "3", "-k", "2", *dd)
    assert r.returncode == 0, r.stderr
    oid = r.stdout.strip()
    [obj] = ls(owner)
    assert obj["object_id"] == oid and (obj["k"], obj["n"]) == (2, 3)
    holders = {h["peer_id"] for h in obj["holders"]}
    by_peer = {p.status()["peer_id"]: p for p in nodes}
    assert len(holders) == 3 and holders <= set(by_peer)
    for pid in holders:
        assert stored(by_peer[pid].data_dir, oid), pid
    out = tmp_path / "out.bin"
    r = cli("get", oid, "-o", str(out), *dd)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == src.read_bytes()

    r = cli("rm", oid, *dd)
    assert r.returncode == 0, r.stderr
    assert "3 signed receipts verified" in r.stderr
    assert ls(owner) == []
    # every holder erased its shard (the receipts say so; the disks agree)
    wait_for(lambda: all(not stored(by_peer[pid].data_dir, oid) for pid in holders), 30)
    r = cli("get", oid, "-o", str(tmp_path / "again.bin"), *dd)
    assert r.returncode == 1 and r.stderr.startswith("enclave-swarm: unknown object")
    r = cli("rm", oid, *dd)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
