"""Shared builders for the shard tests."""

from __future__ import annotations

import io
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.shards.crypto import SealedObject, seal_and_split
from node.shards.manifest import Manifest, build_manifest, sign_manifest


def seal_bytes(data: bytes, k: int, n: int, chunk_size: int = 64) -> tuple[SealedObject, list[bytes]]:
    sinks = [io.BytesIO() for _ in range(n)]
    sealed = seal_and_split(io.BytesIO(data), sinks, k=k, n=n, chunk_size=chunk_size)
    return sealed, [s.getvalue() for s in sinks]


def signed_object(
    data: bytes | None = None, k: int = 3, n: int = 5, chunk_size: int = 64
) -> tuple[Ed25519PrivateKey, SealedObject, list[bytes], Manifest, bytes]:
    owner = Ed25519PrivateKey.generate()
    sealed, fragments = seal_bytes(os.urandom(500) if data is None else data, k, n, chunk_size)
    manifest = build_manifest(
        sealed, owner, [f"12D3KooWpeer{i}" for i in range(n)], authorised=[os.urandom(32)]
    )
    return owner, sealed, fragments, manifest, sign_manifest(manifest, owner)


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[pos] ^= mask
    return bytes(b)


class Trickle(io.RawIOBase):
    """A reader that returns at most ``step`` bytes per read: short reads must be handled."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        take = self._step if size < 0 else min(size, self._step)
        out, self._data = bytes(self._data[:take]), self._data[take:]
        return out
