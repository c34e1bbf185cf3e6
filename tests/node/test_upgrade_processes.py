"""Upgrades on real node processes: the previous release's data dirs (tests/fixtures/datadir-v1)
come up as a federation and give their object back bit-exact; a data dir from a newer release
is refused by ``run`` with one line, exit 1 and nothing changed; rolling restarts lose nothing
and never show two managers in one term (status samples throughout, Raft stores at the end)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.demo import kill_nodes, start_nodes
from node.schema import VERSION_FILE
from tests.fixtures.datadirs import (
    committed_prefixes_agree,
    copy_fixture,
    fixture_object,
    managers_by_term,
    object_bytes,
    raft_log,
    tree_state,
)
from tests.node.rolling import Watch, cli, restart_one, settled, stop_all

pytestmark = pytest.mark.process

RUN = [sys.executable, "-m", "node.cli", "run", "--listen", "/ip4/127.0.0.1/tcp/0"]


def _newer_config(d: Path) -> str:
    p = d / "config.toml"
    p.write_text("schema_version = 2\n" + p.read_text())
    return f"{p}: config schema version 2 is newer than this release reads (up to 1)"


def _garbled_config(d: Path) -> str:
    p = d / "config.toml"
    p.write_text('schema_version = "v2"\n' + p.read_text())
    return f"{p}: unreadable config schema version 'v2'"


def _newer_raft(d: Path) -> str:
    (d / "raft" / VERSION_FILE).write_text("2\n")
    return f"{d / 'raft' / VERSION_FILE}: Raft store schema version 2 is newer than this release"


def _garbled_raft(d: Path) -> str:
    (d / "raft" / VERSION_FILE).write_bytes(b"\x00garbage")
    return f"{d / 'raft' / VERSION_FILE}: unreadable Raft store schema version"


def _newer_shards(d: Path) -> str:
    (d / "shards" / VERSION_FILE).write_text("7\n")
    return f"{d / 'shards' / VERSION_FILE}: shard store schema version 7 is newer than this release"


def _garbled_shards(d: Path) -> str:
    (d / "shards" / VERSION_FILE).write_text("1.0\n")
    return f"{d / 'shards' / VERSION_FILE}: unreadable shard store schema version"


def _bad_bootstrap_in_config(d: Path) -> str:
    p = d / "config.toml"
    p.write_text(p.read_text().replace("bootstrap = []", 'bootstrap = ["/ip4/127.0.0.1/tcp/1"]'))
    return f"{p}: network.bootstrap: '/ip4/127.0.0.1/tcp/1' has no /p2p/<peer id>"


CASES = [_newer_config, _garbled_config, _newer_raft, _garbled_raft, _newer_shards,
         _garbled_shards, _bad_bootstrap_in_config]


def test_run_refuses_a_newer_or_garbled_data_dir_with_one_line_exit_1_and_changes_nothing(tmp_path):
    """Every case at once (each process spends its first seconds importing)."""
    runs = []
    for case in CASES:
        root = copy_fixture(tmp_path / case.__name__)
        d = root / "node0"
        why = case(d)
        before = tree_state(d)
        proc = subprocess.Popen([*RUN, "--data-dir", str(d)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        runs.append((case.__name__, d, why, before, proc))
    # a bad --bootstrap flag stays a usage error, checked before the data dir is read
    flag = subprocess.Popen([*RUN, "--data-dir", str(tmp_path / "unused"), "--bootstrap", "nonsense"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for name, d, why, before, proc in runs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 1, (name, err)
            assert out == "" and err.count("\n") == 1 and err.startswith("enclave-swarm: "), (name, err)
            assert why in err, (name, err)
            assert tree_state(d) == before, name
        _, err = flag.communicate(timeout=120)
        assert flag.returncode == 2 and "--bootstrap: invalid multiaddr 'nonsense'" in err
        assert not (tmp_path / "unused").exists()
    finally:
        for *_, proc in runs:
            proc.kill()
        flag.kill()


def _get(node_dir: Path, oid: str, out: Path) -> bytes:
    r = cli("get", oid, "-o", str(out), "--data-dir", str(node_dir), timeout=300)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def _check_raft_stores(dirs: list[Path], watch: Watch) -> None:
    """After the nodes stopped: no term has two managers in any Raft log, the logs agree on
    every index both committed, and the samples' managers are the logs' where both saw a term."""
    logs = [raft_log(d / "raft") for d in dirs]
    announced = managers_by_term(logs)
    assert announced, "no manager announcement in any Raft log"
    assert all(len(m) == 1 for m in announced.values()), announced
    assert committed_prefixes_agree(logs)
    for term, managers in watch.seen.items():
        if term in announced:
            assert managers == announced[term], (term, managers, announced[term])


def test_previous_release_federation_reads_its_object_and_survives_a_rolling_restart(tmp_path):
    """The fast twin of the five-node rolling restart below, on the previous release's data
    dirs: three nodes come up from datadir-v1 (the upgrade), the owner gets the object back
    bit-exact, the manager is restarted (stop, the others notice, it rejoins), and the object
    still reads; the old stores are read, not rewritten."""
    root = copy_fixture(tmp_path / "v1")
    dirs = [root / f"node{i}" for i in range(3)]
    meta = fixture_object()
    # Their saved peer addresses are stale (the fixture's nodes listened on ephemeral ports):
    # node1 and node2 know only node0's new address and meet each other through its peer
    # exchange, past the dead saved ones (docs/libp2p.md, fix 8).
    nodes = start_nodes(dirs)
    try:
        watch = Watch()
        watch.wait(nodes, lambda sts: settled(sts, 3) and all(s["commit_index"] >= 12 for s in sts),
                   what="the old federation settling")
        data = _get(dirs[2], meta["object_id"], tmp_path / "before.bin")
        assert data == object_bytes() and hashlib.sha256(data).hexdigest() == meta["sha256"]
        # the human status says what the JSON does in summary: manager, term, role; shards; jobs
        st = nodes[2].status()
        human = cli("status", "--data-dir", str(dirs[2]))
        assert human.returncode == 0, human.stderr
        assert st is not None and f"manager {st['manager'][-12:]}" in human.stdout
        assert f"role {st['role']}" in human.stdout and "term " in human.stdout
        assert "objects owned 1" in human.stdout and "jobs owned: none" in human.stdout
        # and which schema versions the old data dir has, against what this release reads
        assert st["schema"] == {"config": 1, "raft": 1, "shards": 1,
                                "supported": {"config": 1, "raft": 1, "shards": 1}}
        assert "schema config 1/1  raft 1/1  shards 1/1" in human.stdout
        manager = next(i for i, p in enumerate(nodes) if (s := p.status()) and s["role"] == "manager")
        nodes = restart_one(nodes, manager, watch, council=3)
        assert _get(dirs[2], meta["object_id"], tmp_path / "after.bin") == object_bytes()
        stop_all(nodes)
    finally:
        kill_nodes(nodes)
    for d in dirs:  # read as version 1, not stamped: the previous release can still run them
        assert not (d / "raft" / VERSION_FILE).exists()
        assert "schema_version" not in (d / "config.toml").read_text()
    assert not (dirs[0] / "shards" / VERSION_FILE).exists()
    _check_raft_stores(dirs, watch)


@pytest.mark.slow  # five processes restarted one by one: minutes; the fast twin is above
def test_rolling_restart_of_five_nodes_loses_no_data_and_one_manager_per_term(tmp_path):
    dirs = [tmp_path / f"node{i}" for i in range(5)]
    nodes = start_nodes(dirs)
    try:
        watch = Watch()
        watch.wait(nodes, lambda sts: settled(sts, 5), what="five nodes settling")
        owner = dirs[4]
        objects: dict[str, bytes] = {}
        for size in (1, 200_000):
            src = tmp_path / f"in-{size}.bin"
            src.write_bytes(os.urandom(size))
            r = cli("put", str(src), "--shards", "3", "--threshold", "2", "--data-dir", str(owner),
                    timeout=300)
            assert r.returncode == 0, r.stderr
            objects[r.stdout.strip()] = src.read_bytes()
        for i in range(5):
            nodes = restart_one(nodes, i, watch, council=5)
        for oid, data in objects.items():
            assert _get(owner, oid, tmp_path / f"{oid}.out") == data
        stop_all(nodes)
    finally:
        kill_nodes(nodes)
    assert watch.samples > 50 and watch.seen
    _check_raft_stores(dirs, watch)
