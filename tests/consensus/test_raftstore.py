"""node/raftstore.py: durability, torn writes, corruption, atomic snapshots, compaction."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from consensus.messages import ConfState, HardState, Snapshot, SnapshotMeta
from consensus.raft import Config, Persisted, RawNode
from node.raftstore import RaftStore, StoreCorrupted
from tests.consensus.helpers import ents

INIT = Persisted.initial([1, 2, 3], b"genesis")


def test_fresh_store_round_trips(tmp_path: Path) -> None:
    with RaftStore(tmp_path, INIT) as s:
        s.save(HardState(1, 2, 0), ents(1, 1, 1))
        s.save(HardState(1, 2, 2), [])
    with RaftStore(tmp_path, INIT) as s:
        p = s.load()
    assert p.hard_state == HardState(1, 2, 2)
    assert [e.index for e in p.entries] == [1, 2, 3]
    assert p.snapshot.data == b"genesis"


def test_overwrite_truncates_on_replay(tmp_path: Path) -> None:
    with RaftStore(tmp_path, INIT) as s:
        s.save(HardState(1, None, 0), ents(1, 1, 1, 1))
        s.save(HardState(2, None, 1), ents(2, start=2))  # a new leader overwrote 2..4
    with RaftStore(tmp_path, INIT) as s:
        assert [(e.index, e.term) for e in s.load().entries] == [(1, 1), (2, 2)]


def _wal_with_records(tmp_path: Path) -> tuple[bytes, int]:
    with RaftStore(tmp_path, INIT) as s:
        s.save(HardState(1, 1, 0), ents(1, 1))
        before = (tmp_path / "wal").stat().st_size
        s.save(None, ents(1, start=3))
    return (tmp_path / "wal").read_bytes(), before


def test_torn_tail_at_every_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data, last_start = _wal_with_records(tmp_path / "ref")
    for cut in range(last_start, len(data)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "snapshot").write_bytes((tmp_path / "ref" / "snapshot").read_bytes())
        (d / "wal").write_bytes(data[:cut])
        with caplog.at_level(logging.WARNING, "node.raftstore"):
            caplog.clear()
            with RaftStore(d, INIT) as s:
                p = s.load()
        assert [e.index for e in p.entries] == [1, 2], cut
        assert (d / "wal").stat().st_size == last_start  # truncated on disk too
        if cut > last_start:
            assert any("truncating" in r.message for r in caplog.records)


def test_flipped_bytes_are_never_used(tmp_path: Path) -> None:
    data, last_start = _wal_with_records(tmp_path / "ref")
    rng = random.Random(1)
    for trial in range(60):
        pos = rng.randrange(last_start, len(data))
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        d = tmp_path / f"flip{trial}"
        d.mkdir()
        (d / "snapshot").write_bytes((tmp_path / "ref" / "snapshot").read_bytes())
        (d / "wal").write_bytes(bytes(bad))
        with RaftStore(d, INIT) as s:
            assert [e.index for e in s.load().entries] == [1, 2]


def test_corruption_mid_file_drops_everything_after(tmp_path: Path) -> None:
    data, _ = _wal_with_records(tmp_path)
    bad = bytearray(data)
    bad[10] ^= 0xFF  # inside the first record
    (tmp_path / "wal").write_bytes(bytes(bad))
    with RaftStore(tmp_path, INIT) as s:
        p = s.load()
    assert p.entries == () and p.hard_state == HardState()


def test_snapshot_compacts_and_survives_restart(tmp_path: Path) -> None:
    with RaftStore(tmp_path, INIT) as s:
        s.save(HardState(1, 1, 4), ents(1, 1, 1, 1, 1))
        snap = Snapshot(SnapshotMeta(3, 1, ConfState(voters=(1, 2, 3))), b"state@3")
        s.save_snapshot(snap)
        size_after = (tmp_path / "wal").stat().st_size
    assert not list(tmp_path.glob("*.tmp"))
    with RaftStore(tmp_path, INIT) as s:
        p = s.load()
    assert p.snapshot == snap and [e.index for e in p.entries] == [4, 5]
    assert p.hard_state.commit == 4 and size_after > 0


def test_received_snapshot_replaces_a_conflicting_log(tmp_path: Path) -> None:
    with RaftStore(tmp_path, INIT) as s:
        s.save(HardState(1, 1, 1), ents(1, 1, 1))
        s.save_snapshot(Snapshot(SnapshotMeta(10, 3, ConfState(voters=(1, 2))), b"s"))
        s.save(HardState(3, None, 10), [])
    with RaftStore(tmp_path, INIT) as s:
        p = s.load()
    assert p.entries == () and p.snapshot.meta.index == 10 and p.hard_state.commit == 10


def test_leftover_tmp_and_corrupt_snapshot(tmp_path: Path) -> None:
    with RaftStore(tmp_path, INIT):
        pass
    (tmp_path / "snapshot.tmp").write_bytes(b"half written")
    with RaftStore(tmp_path, INIT):
        pass
    assert not (tmp_path / "snapshot.tmp").exists()
    raw = bytearray((tmp_path / "snapshot").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "snapshot").write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupted):
        RaftStore(tmp_path, INIT)


def test_rawnode_restarts_from_the_store(tmp_path: Path) -> None:
    """End to end: a single-voter node persists through the store and restarts intact."""
    store = RaftStore(tmp_path, Persisted.initial([1]))
    rn = RawNode(Config(id=1), random.Random(1), store.load(), logger=lambda *_: None)
    rn.campaign()
    applied: list[bytes] = []
    for i in range(5):
        rn.propose(f"cmd{i}".encode())
    while rn.has_ready():
        rd = rn.ready()
        if rd.snapshot is not None:
            store.save_snapshot(rd.snapshot)
        store.save(rd.hard_state, rd.entries)
        applied += [e.data for e in rd.committed_entries if e.data]
        rn.advance(rd)
    store.save_snapshot(rn.compact(3, b"|".join(applied[:2])))
    store.close()
    store = RaftStore(tmp_path, Persisted.initial([1]))
    rn2 = RawNode(Config(id=1), random.Random(2), store.load(), logger=lambda *_: None)
    rd = rn2.ready()
    assert [e.data for e in rd.committed_entries] == [b"cmd2", b"cmd3", b"cmd4"]
    assert rn2.raft.term == 1 and rn2.raft.log.committed == 6
    store.close()
