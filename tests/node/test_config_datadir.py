"""Config profiles and TOML, the data dir: identity 0600, refusals, lock."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from node.config import ConfigError, NodeConfig, config_from_toml
from node.datadir import AlreadyRunning, DataDir, DataDirError


@pytest.mark.parametrize("name", ["lan", "wan", "local_test"])
def test_profiles_validate_and_round_trip_through_toml(name):
    cfg = NodeConfig.for_profile(name)
    cfg.validate()
    text = cfg.to_toml()
    assert config_from_toml(text) == cfg
    # Every field is written with a comment above it.
    assert "# Re-challenge every connected peer" in text


def test_wan_is_production():
    cfg = NodeConfig.wan()
    assert not cfg.network.mdns and not cfg.attestation.allow_simulated_fallback
    assert NodeConfig.lan().network.mdns


@pytest.mark.parametrize("text,match", [
    ("[network]\nlisen = []\n", "unknown key"),
    ("[network]\ndial_timeout_s = 'x'\n", "must be a number"),
    ("[network]\nsecurity = 'plaintext'\n", "network.security"),
    ("profile = 'moon'\n", "unknown profile"),
    ("[attestation\n", "invalid TOML"),
    ("[network]\nping_interval_s = -1\n", "must be positive"),
])
def test_bad_config_is_refused_with_the_reason(text, match):
    with pytest.raises(ConfigError, match=match):
        config_from_toml(text, where="x.toml")


def test_init_creates_private_identity_and_refuses_to_overwrite(tmp_path):
    dd = DataDir(tmp_path / "d")
    key = dd.init(NodeConfig.local_test())
    assert stat.S_IMODE(dd.identity_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(dd.path.stat().st_mode) == 0o700
    assert dd.load_identity().private_bytes_raw() == key.private_bytes_raw()
    before = dd.identity_path.read_bytes()
    with pytest.raises(DataDirError, match="refusing to overwrite"):
        dd.init(NodeConfig.local_test())
    assert dd.identity_path.read_bytes() == before


def test_corrupted_identity_refused_and_left_untouched(tmp_path):
    dd = DataDir(tmp_path / "d")
    dd.init(NodeConfig.local_test())
    dd.identity_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    os.chmod(dd.identity_path, 0o600)
    with pytest.raises(DataDirError, match="corrupted identity"):
        dd.load_identity()
    assert b"garbage" in dd.identity_path.read_bytes()


def test_identity_with_open_permissions_refused(tmp_path):
    dd = DataDir(tmp_path / "d")
    dd.init(NodeConfig.local_test())
    os.chmod(dd.identity_path, 0o644)
    with pytest.raises(DataDirError, match="too open"):
        dd.load_identity()


def test_corrupted_config_refused_and_left_untouched(tmp_path):
    dd = DataDir(tmp_path / "d")
    dd.init(NodeConfig.local_test())
    dd.config_path.write_text("[network\nbroken")
    with pytest.raises(DataDirError, match=r"config\.toml: invalid TOML"):
        dd.load_config()
    assert dd.config_path.read_text() == "[network\nbroken"


def test_lock_refuses_a_second_holder(tmp_path):
    dd = DataDir(tmp_path / "d")
    dd.init(NodeConfig.local_test())
    dd.lock()
    try:
        with pytest.raises(AlreadyRunning):
            DataDir(dd.path).lock()
        assert DataDir(dd.path).is_locked()
    finally:
        dd.unlock()
    assert not dd.is_locked()


def test_peer_cache_is_only_a_cache(tmp_path):
    dd = DataDir(tmp_path / "d")
    dd.init(NodeConfig.local_test())
    dd.save_peers({"p": ["/ip4/127.0.0.1/tcp/1"]})
    assert dd.load_peers() == {"p": ["/ip4/127.0.0.1/tcp/1"]}
    dd.peers_path.write_text("{not json")
    assert dd.load_peers() == {}


def test_replace_keeps_config_frozen():
    cfg = NodeConfig.lan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.profile = "wan"  # type: ignore[misc]
