"""Schema versions (node/schema.py) of the config, the Raft store and the shard store: the data
dirs of the previous release (tests/fixtures/datadir-v1, no versions in them) are read; a newer
or garbled version is refused with one line and nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.state import decode_state
from node.config import SCHEMA_VERSION as CONFIG_VERSION
from node.config import ConfigError, NodeConfig, config_from_toml, load_config
from node.datadir import DataDir
from node.raftstore import SCHEMA_VERSION as RAFT_VERSION
from node.raftstore import RaftStore
from node.schema import MAX_VERSION, VERSION_FILE, SchemaError, read_version, write_version
from node.shards.service import sealing_secret_from_identity
from node.shards.store import SCHEMA_VERSION as SHARD_VERSION
from node.shards.store import ShardStore
from node.upgrade import check_data_dir, schema_versions
from tests.fixtures.datadirs import copy_fixture, fixture_object, raft_log, tree_state

GARBLED = [b"", b"abc\n", b"-1\n", b"0\n", b"1.5\n", b"\xff\xfe\x00", b"1 2\n", b"99999999\n",
           b"1" * 40]


# ----------------------------------------------------------------------------- the rule


def test_absent_is_one_written_round_trips_and_newer_is_refused(tmp_path: Path) -> None:
    assert read_version(tmp_path, what="x store", supported=1) == 1
    write_version(tmp_path, 3)
    assert (tmp_path / VERSION_FILE).read_bytes() == b"3\n"
    assert read_version(tmp_path, what="x store", supported=3) == 3
    with pytest.raises(SchemaError) as err:
        read_version(tmp_path, what="x store", supported=2)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / VERSION_FILE) in msg
    assert "x store schema version 3 is newer than this release reads (up to 2)" in msg
    assert msg.endswith("nothing was changed")


@pytest.mark.parametrize("raw", GARBLED)
def test_a_garbled_version_file_is_refused_not_guessed(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / VERSION_FILE).write_bytes(raw)
    with pytest.raises(SchemaError, match="unreadable x store schema version"):
        read_version(tmp_path, what="x store", supported=MAX_VERSION)


@given(st.binary(max_size=64))
def test_any_bytes_give_a_version_or_a_refusal(raw: bytes) -> None:
    """The decoder's one invariant: garbage in gives a SchemaError, never anything else."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / VERSION_FILE).write_bytes(raw)
        try:
            v = read_version(Path(tmp), what="x", supported=5)
        except SchemaError as exc:
            assert "\n" not in str(exc)
        else:
            assert 1 <= v <= 5 and int(raw) == v


# ----------------------------------------------------------------------------- config


def test_the_previous_release_config_reads_and_ours_says_its_version() -> None:
    fixture = Path(__file__).parents[1] / "fixtures" / "datadir-v1" / "node0" / "config.toml"
    assert "schema_version" not in fixture.read_text()
    cfg = load_config(fixture)
    assert cfg.profile == "local_test" and cfg.attestation.tee == "sim"
    text = NodeConfig.local_test().to_toml()
    assert f"\nschema_version = {CONFIG_VERSION}\n" in text
    assert config_from_toml(text) == NodeConfig.local_test()


@pytest.mark.parametrize("value, why", [
    (str(CONFIG_VERSION + 1), f"config schema version {CONFIG_VERSION + 1} is newer than this release"),
    ('"1"', "unreadable config schema version '1'"),
    ("1.5", "unreadable config schema version 1.5"),
    ("true", "unreadable config schema version True"),
    ("0", "unreadable config schema version 0"),
    ("[1]", "unreadable config schema version [1]"),
])
def test_a_newer_or_garbled_config_version_is_refused_before_its_keys(value: str, why: str) -> None:
    # the unknown key would be the reason given if the version were not checked first
    text = f"schema_version = {value}\nprofile = \"local_test\"\nnew_in_a_later_release = 1\n"
    with pytest.raises(ConfigError) as err:
        config_from_toml(text, where="config.toml")
    assert why in str(err.value) and "new_in_a_later_release" not in str(err.value)


# ----------------------------------------------------------------------------- Raft store


def test_the_previous_release_raft_stores_read(tmp_path: Path) -> None:
    dirs = copy_fixture(tmp_path / "v1")
    for i in range(3):
        raft = dirs / f"node{i}" / "raft"
        assert not (raft / VERSION_FILE).exists()
        p = raft_log(raft)
        assert p.hard_state.commit >= 10 and len(p.entries) >= p.hard_state.commit
        assert decode_state(p.snapshot.data) is not None
        # only read: an old store is not stamped (the previous release can still use it)
        assert not (raft / VERSION_FILE).exists()
    assert schema_versions(dirs / "node0") == {"raft": 1, "shards": 1}


def test_a_new_raft_store_records_its_version(tmp_path: Path) -> None:
    from consensus.raft import Persisted

    RaftStore(tmp_path / "raft", Persisted.initial([1], b"")).close()
    assert (tmp_path / "raft" / VERSION_FILE).read_bytes() == f"{RAFT_VERSION}\n".encode()
    assert read_version(tmp_path / "raft", what="Raft store", supported=RAFT_VERSION) == RAFT_VERSION


@pytest.mark.parametrize("raw", [f"{RAFT_VERSION + 1}\n".encode(), b"two\n"])
def test_a_newer_or_garbled_raft_store_is_refused_untouched(tmp_path: Path, raw: bytes) -> None:
    dirs = copy_fixture(tmp_path / "v1")
    raft = dirs / "node1" / "raft"
    (raft / VERSION_FILE).write_bytes(raw)
    (raft / "snapshot.tmp").write_bytes(b"debris an open would remove")
    before = tree_state(raft)
    with pytest.raises(SchemaError, match="Raft store schema version"):
        raft_log(raft)
    assert tree_state(raft) == before


# ----------------------------------------------------------------------------- shard store


def _shard_store(data_dir: Path) -> ShardStore:
    key = DataDir(data_dir).load_identity()
    return ShardStore(data_dir / "shards", sealing_secret_from_identity(key), quota_bytes=1 << 30,
                      receipt_key=key, holder_peer_id="holder")


def test_the_previous_release_shard_stores_read(tmp_path: Path) -> None:
    dirs = copy_fixture(tmp_path / "v1")
    oid = bytes.fromhex(fixture_object()["object_id"])
    for i in (0, 1):  # the two holders (node2 owns the object)
        store = _shard_store(dirs / f"node{i}")
        [info] = store.list_shards()
        assert info.object_id == oid
        store.verify(oid, info.index)  # every chunk authenticates, the hash matches the manifest
        assert store.read_share(oid, info.index) is not None
        assert store.schema_version == 1
        assert not (dirs / f"node{i}" / "shards" / VERSION_FILE).exists()


def test_a_new_shard_store_records_its_version(tmp_path: Path) -> None:
    d = tmp_path / "n"
    DataDir(d).init(NodeConfig.local_test())
    store = _shard_store(d)
    assert store.schema_version == SHARD_VERSION
    assert (d / "shards" / VERSION_FILE).read_bytes() == f"{SHARD_VERSION}\n".encode()


@pytest.mark.parametrize("raw", [f"{SHARD_VERSION + 1}\n".encode(), b"\x00\x01"])
def test_a_newer_or_garbled_shard_store_is_refused_untouched(tmp_path: Path, raw: bytes) -> None:
    dirs = copy_fixture(tmp_path / "v1")
    root = dirs / "node0" / "shards"
    (root / VERSION_FILE).write_bytes(raw)
    (root / "tmp" / "debris").mkdir(parents=True)  # an open would remove it
    before = tree_state(dirs / "node0")
    with pytest.raises(SchemaError, match="shard store schema version"):
        _shard_store(dirs / "node0")
    with pytest.raises(SchemaError, match="shard store schema version"):
        check_data_dir(dirs / "node0")
    assert tree_state(dirs / "node0") == before


def test_status_reports_each_store_version_against_what_this_release_reads(tmp_path: Path) -> None:
    from node.cli import status_summary
    from node.upgrade import schema_status

    dirs = copy_fixture(tmp_path / "v1")
    st = schema_status(dirs / "node0", 1)
    assert st == {"config": 1, "raft": 1, "shards": 1,
                  "supported": {"config": CONFIG_VERSION, "raft": RAFT_VERSION, "shards": SHARD_VERSION}}
    (dirs / "node0" / "raft" / VERSION_FILE).write_text("junk")  # damaged while running
    assert schema_status(dirs / "node0", 1)["raft"] == "unreadable"
    [line] = status_summary({"schema": st})
    assert line.startswith("schema config 1/1  raft 1/1  shards 1/1")
