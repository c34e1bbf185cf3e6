"""The Raft store sealed with a key from the node's storage secret (docs/keys.md): written,
read after a restart, refused with another key; both key backends."""

from __future__ import annotations

import pytest

from consensus.messages import Entry, HardState, Snapshot, SnapshotMeta
from consensus.raft import Persisted
from node.config import NodeConfig
from node.datadir import DataDir
from node.keys.stores import RAFT_INFO, store_key
from node.raftstore import RaftStore, StoreCorrupted
from tests.keys.conftest import BACKENDS

INIT = Persisted.initial([1, 2, 3], b"genesis state with a SECRET-MARKER")


def _entries(n: int, start: int = 1) -> list[Entry]:
    return [Entry(term=1, index=start + i, kind="normal", data=b"SECRET-MARKER entry %d" % (start + i))
            for i in range(n)]


def _node(tmp_path, request, backend: str, label: str):
    """(data dir, open keys) of a node of ``backend``."""
    dd = DataDir(tmp_path / label)
    if backend == "file":
        dd.init(NodeConfig.local_test(), sealing=None)
    else:
        hsm = request.getfixturevalue("hsm")
        token = hsm.made.get(label) or hsm.init_token(label)
        dd.init_token(NodeConfig.local_test(), token, sealing=None).close()
    keys = dd.key_provider()
    if backend == "pkcs11":
        request.getfixturevalue("opened").append(keys)
    return dd, keys


def _raft_key(dd, keys) -> bytes:
    from types import SimpleNamespace

    from node.keys.stores import storage_secret_of

    # what storage_secret_of reads of a node (the manager role passes its agent)
    secret = storage_secret_of(SimpleNamespace(data_dir=dd, _identity=keys.identity, keys=keys))
    assert secret is not None
    return store_key(secret, RAFT_INFO)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sealed_raft_store_round_trips_after_restart_and_is_refused_with_another_key(
        tmp_path, request, backend):
    if backend == "pkcs11":  # both tokens exist before the module loads, as on a real host
        hsm = request.getfixturevalue("hsm")
        hsm.init_token("a")
        hsm.init_token("b")
    dd, keys = _node(tmp_path, request, backend, "a")
    key = _raft_key(dd, keys)
    raft = tmp_path / "raft"
    with RaftStore(raft, INIT, seal_key=key) as s:
        assert s.sealed
        s.save(HardState(1, 2, 3), _entries(3))
        s.save_snapshot(Snapshot(SnapshotMeta(2, 1, INIT.snapshot.meta.conf), b"state SECRET-MARKER"))
        s.save(None, _entries(2, start=4))
    for f in raft.iterdir():
        assert b"SECRET-MARKER" not in f.read_bytes(), f.name
    # restart: the key is derived again from the storage secret, through a new provider
    keys.close()
    dd2 = DataDir(dd.path)
    keys2 = dd2.key_provider()
    if backend == "pkcs11":
        request.getfixturevalue("opened").append(keys2)
    with RaftStore(raft, INIT, seal_key=_raft_key(dd2, keys2)) as s:
        p = s.load()
    assert p.snapshot.data == b"state SECRET-MARKER" and p.snapshot.meta.index == 2
    assert [e.index for e in p.entries] == [3, 4, 5] and p.hard_state.term == 1
    # another node's key (another token, another identity): refused, nothing touched
    before = {f.name: f.read_bytes() for f in raft.iterdir()}
    odd, okeys = _node(tmp_path, request, backend, "b")
    with pytest.raises(StoreCorrupted, match="sealed with another key"):
        RaftStore(raft, INIT, seal_key=_raft_key(odd, okeys))
    with pytest.raises(StoreCorrupted, match="no sealing key"):
        RaftStore(raft, INIT)
    assert {f.name: f.read_bytes() for f in raft.iterdir()} == before


def test_a_torn_tail_of_a_sealed_wal_is_still_repaired(tmp_path):
    key = bytes(range(32))
    with RaftStore(tmp_path, INIT, seal_key=key) as s:
        s.save(HardState(1, 1, 0), _entries(2))
    wal = tmp_path / "wal"
    wal.write_bytes(wal.read_bytes()[:-5])  # a torn write
    with RaftStore(tmp_path, INIT, seal_key=key) as s:
        assert s.repaired_bytes > 0
        assert [e.index for e in s.load().entries] == [1, 2]


def test_a_tampered_sealed_record_with_a_good_checksum_is_refused(tmp_path):
    import hashlib
    import struct

    key = bytes(range(32))
    with RaftStore(tmp_path, INIT, seal_key=key) as s:
        s.save(HardState(1, 1, 0), _entries(1))
    wal = tmp_path / "wal"
    data = bytearray(wal.read_bytes())
    length = struct.unpack_from(">I", data, 0)[0]
    body = bytearray(data[36:36 + length])
    body[-1] ^= 1  # flip a ciphertext bit and fix the checksum: only the AEAD tag catches it
    data[4:36] = hashlib.sha256(bytes(body)).digest()
    data[36:36 + length] = body
    wal.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted, match="does not open"):
        RaftStore(tmp_path, INIT, seal_key=key)


def test_a_store_made_before_sealing_stays_readable(tmp_path):
    with RaftStore(tmp_path, INIT) as s:
        s.save(HardState(1, 1, 0), _entries(2))
    with RaftStore(tmp_path, INIT, seal_key=bytes(32)) as s:
        assert not s.sealed and [e.index for e in s.load().entries] == [1, 2]
