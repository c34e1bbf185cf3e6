"""The file key backend (today's behaviour): the identity is ``identity.key`` in the data dir.

The key is a ``cryptography`` Ed25519 key in this process (sealed to the TEE at rest where it
offers a sealing key, node/attestation/sealing.py). :meth:`FileKeys.seal` uses AES-256-GCM
under a key derived (HKDF-SHA256) from the identity, so the interface is the same as the
token's; the data dir's own storage secret keeps its established derivation
(node/shards/service.py) so existing stores stay readable.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.keys.base import KeyProviderError

SEAL_MAGIC = b"ESFK1"
_NONCE_BYTES = 12
_INFO = b"enclave-swarm file seal v1"


class FileKeys:
    """Keys held in files; ``identity`` is the in-process Ed25519 key."""

    backend = "file"

    def __init__(self, identity: Ed25519PrivateKey, *, path: str = "") -> None:
        self._identity = identity
        self.path = path
        self.available = True
        self._aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
                            .derive(identity.private_bytes_raw()))

    @property
    def identity(self) -> Ed25519PrivateKey:
        return self._identity

    def sign(self, data: bytes) -> bytes:
        return self._identity.sign(data)

    def seal(self, purpose: str, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return SEAL_MAGIC + nonce + self._aead.encrypt(nonce, data, purpose.encode())

    def unseal(self, purpose: str, blob: bytes) -> bytes:
        head = len(SEAL_MAGIC) + _NONCE_BYTES
        if not blob.startswith(SEAL_MAGIC) or len(blob) < head + 16:
            raise KeyProviderError("not a secret sealed by a file key")
        try:
            return self._aead.decrypt(blob[len(SEAL_MAGIC):head], blob[head:], purpose.encode())
        except InvalidTag:
            raise KeyProviderError("this identity's sealing key does not open this secret "
                                   "(sealed by another key, or damaged)") from None

    def check(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend, "path": self.path, "available": True}

    def close(self) -> None:
        pass
