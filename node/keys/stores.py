"""Sealing keys of a node's stores, all derived from its one storage secret.

The storage secret (32 bytes) is sealed at rest in the order of preference of docs/keys.md:
by the TEE's sealing key, else by the key token's AES-256 key, else (file keys without a TEE
key) derived from the identity key. Each store gets its own key from it by HKDF-SHA256 with its
own label, so one store's key never opens another's.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RAFT_INFO = b"enclave-swarm raft store seal v1"
_IDENTITY_INFO = b"enclave-swarm identity-derived storage secret v1"


def storage_secret_of(agent: Any) -> bytes | None:
    """The node's storage secret: from its data dir (sealed by the TEE or the token), else
    derived from an exportable identity key; None for a token identity without a data dir.

    Raises:
        DataDirError: storage.key does not open (another token or enclave, or damage).
    """
    dd = getattr(agent, "data_dir", None)
    if dd is not None:
        secret: bytes | None = dd.storage_secret(getattr(agent, "keys", None))
        if secret is not None:
            return secret
    key = agent._identity
    if not callable(getattr(key, "private_bytes", None)):
        return None
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_IDENTITY_INFO).derive(raw)


def store_key(secret: bytes, info: bytes) -> bytes:
    """The 32-byte key of one store (``info`` names it) from the storage secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def raft_seal_key(agent: Any) -> bytes | None:
    secret = storage_secret_of(agent)
    return None if secret is None else store_key(secret, RAFT_INFO)


def raft_seal_key_offline(data_dir: Any) -> bytes | None:
    """The Raft store's sealing key of a stopped node with file keys, read from its data dir
    (tools that read a store offline: the chaos checkers, tests of the stores). None when the
    node's identity is in a token and the store cannot be opened without it.

    Raises:
        DataDirError: the identity or storage.key does not open here (sealed to another enclave).
    """
    from types import SimpleNamespace

    from node.datadir import DataDir

    dd = DataDir(data_dir)
    if not dd.identity_path.exists():
        return None
    return raft_seal_key(SimpleNamespace(data_dir=dd, keys=None, _identity=dd.load_identity()))
