"""Sealed stores under a token's key: written, read back after a restart, refused with another
token; init and the data dir with a token."""

from __future__ import annotations

import io
import os
import stat

import pytest

from node.config import NodeConfig
from node.datadir import DataDir, DataDirError
from node.keys.pkcs11 import SEAL_MAGIC
from node.shards.store import ShardStore, StoredShardCorrupt
from tests.shards.helpers import signed_object


def _store(root, keys, secret):
    return ShardStore(root, secret, quota_bytes=10**7, receipt_key=keys.identity,
                      holder_peer_id="12D3KooWholder", chunk_bytes=1024)


def _put(st, obj):
    _, sealed, fragments, _, frame = obj
    for i in range(4):
        st.put(frame, i, io.BytesIO(fragments[i]), sealed.shares[i])


def test_init_with_a_token_writes_no_private_key_and_a_token_sealed_storage_secret(tmp_path, hsm):
    t = hsm.init_token("node")
    dd = DataDir(tmp_path / "dd")
    keys = dd.init_token(NodeConfig.local_test(), t, sealing=None)
    keys.close()
    names = sorted(p.name for p in dd.path.iterdir())
    assert names == ["config.toml", "keys.toml", "storage.key"]
    for p in dd.path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert dd.storage_key_path.read_bytes().startswith(SEAL_MAGIC)
    assert "1234" not in dd.keys_path.read_text()  # the PIN is never written
    assert dd.exists() and "never leave it" in dd.identity_note("sim")
    with pytest.raises(DataDirError, match="already has keys"):
        dd.init_token(NodeConfig.local_test(), t, sealing=None)


def test_sealed_store_written_with_a_token_key_is_read_after_a_restart_and_refused_with_another(
        tmp_path, hsm, opened):
    t = hsm.init_token("node")
    other_t = hsm.init_token("other")
    dd = DataDir(tmp_path / "dd")
    dd.init_token(NodeConfig.local_test(), t, sealing=None).close()
    obj = signed_object(os.urandom(5000), k=2, n=4, chunk_size=512)
    _, sealed, fragments, manifest, _ = obj

    keys = dd.key_provider()
    opened.append(keys)
    secret = dd.storage_secret(keys)
    assert secret is not None and len(secret) == 32
    _put(_store(tmp_path / "shards", keys, secret), obj)
    keys.close()

    # restart: a new provider, the same token: the secret and the shards come back
    keys = dd.key_provider()
    opened.append(keys)
    again = dd.storage_secret(keys)
    assert again == secret
    st = _store(tmp_path / "shards", keys, again)
    for i in range(4):
        assert b"".join(st.read_fragment(manifest.object_id, i)) == fragments[i]
        assert st.read_share(manifest.object_id, i).matches(sealed.shares[i])
    keys.close()

    # another token: the storage secret does not open, and nothing is changed
    from node.keys.pkcs11 import Pkcs11Keys

    other = Pkcs11Keys(other_t, create=True)
    opened.append(other)
    before = dd.storage_key_path.read_bytes()
    with pytest.raises(DataDirError, match="does not open"):
        dd.storage_secret(other)
    assert dd.storage_key_path.read_bytes() == before
    # and a store opened with any other secret refuses the shards
    wrong = _store(tmp_path / "shards", other, b"t" * 32)
    with pytest.raises(StoredShardCorrupt):
        wrong.read_share(manifest.object_id, 0)


def test_a_token_sealed_secret_is_refused_to_file_keys(tmp_path, hsm):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from node.keys.files import FileKeys

    dd = DataDir(tmp_path / "dd")
    dd.init_token(NodeConfig.local_test(), hsm.init_token("node"), sealing=None).close()
    with pytest.raises(DataDirError, match="not in one"):
        dd.storage_secret(FileKeys(Ed25519PrivateKey.generate()))


def test_init_refused_by_the_token_writes_nothing(tmp_path, hsm):
    import dataclasses

    t = hsm.init_token("node", pin="1234")
    bad = tmp_path / "bad.pin"
    bad.write_text("0000\n")
    dd = DataDir(tmp_path / "dd")
    with pytest.raises(DataDirError, match="wrong PIN"):
        dd.init_token(NodeConfig.local_test(), dataclasses.replace(t, pin_file=str(bad)), sealing=None)
    assert not dd.path.exists()


def test_file_backend_data_dir_is_unchanged(tmp_path):
    dd = DataDir(tmp_path / "dd")
    key = dd.init(NodeConfig.local_test(), sealing=None)
    keys = dd.key_provider()
    assert keys.backend == "file" and keys.identity.public_key().public_bytes_raw() == \
        key.public_key().public_bytes_raw()
    assert dd.storage_secret(keys) is None  # derived from the identity, as before
    assert not dd.keys_path.exists()
