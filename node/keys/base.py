"""The key-provider interface: where a node's private keys live and how they are used.

Theory of operation
-------------------
Every private-key operation of a node goes through one :class:`KeyProvider`:

- ``identity`` is the node's Ed25519 libp2p identity as an object with the surface our code
  and libp2p use (``sign(data) -> bytes``, ``public_key()``); with the file backend it *is* a
  ``cryptography`` key, with the PKCS#11 backend it is a handle whose ``sign`` runs inside the
  token (node/keys/pkcs11.py), so the private key never enters this process.
- ``seal(purpose, data)`` / ``unseal(purpose, blob)`` protect a small secret (the shard
  storage secret) with a key the provider holds: AES-256-GCM inside the token for PKCS#11.
  ``purpose`` is bound as additional data: a blob sealed for one purpose never opens as
  another.
- ``status()`` says where the keys are and whether they are usable right now. A token can go
  away while the node runs: ``sign`` then raises :class:`KeyUnavailable` (the node stops
  signing, withholds its evidence and says so in ``status``) until the provider reconnects.

Two error families, as everywhere: :class:`KeyProviderError` is a start-up/configuration
failure with a one-line reason (``init`` and ``run`` exit 1 on it), :class:`KeyUnavailable`
a run-time loss of the token that callers survive.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from overlay.errors import SignerUnavailable


class KeyProviderError(Exception):
    """The keys cannot be used as configured (one line: which and why). Nothing was changed."""


class KeyUnavailable(SignerUnavailable):
    """The key's token went away (or its session failed) at run time; retry later."""


@runtime_checkable
class IdentityKey(Protocol):
    """What our code needs of a node's Ed25519 private key (cryptography's surface)."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


class KeyProvider(Protocol):
    """One backend of a node's keys (files, PKCS#11)."""

    backend: str

    @property
    def identity(self) -> IdentityKey: ...

    def seal(self, purpose: str, data: bytes) -> bytes: ...

    def unseal(self, purpose: str, blob: bytes) -> bytes: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def exports_private_key(key: object) -> bool:
    """True when ``key`` is an in-process key whose bytes can be read (the file backend)."""
    return callable(getattr(key, "private_bytes_raw", None))
