"""The owner-signed shard manifest: what an object is, how to rebuild it, who holds what.

Theory of operation
-------------------
A :class:`Manifest` (wire name ``shard-manifest-body``) lists the object's sizes, the AEAD,
erasure and sharing parameters, the SHA-256 of every fragment and every key share, the owner's
Ed25519 key, the principals the owner authorises to fetch it and the placement (fragment index
→ holder peer id). It is encoded with the project codec, which is canonical CBOR.

On the wire it always travels wrapped in a :class:`SignedManifest` (``shard-manifest``):
``owner`` key, the exact ``body`` bytes, and the owner's Ed25519 ``signature`` over
``domain ‖ body``. Decoding a ``SignedManifest`` *is* verifying it: its ``validate()`` checks
the signature over the raw body bytes first (verify-then-parse), then decodes and validates the
body and requires ``body.owner == owner``. So :func:`open_manifest` / ``wire.decode`` never
hand out an unverified manifest, and any flipped bit ends in ``RemoteProtocolError``.

A manifest is self-certifying for its owner only: callers must still check that ``owner`` is
the key they expect (``open_manifest(data, owner=...)``) or that the object id is the one they
asked for. Repair or re-placement produces a new manifest with a higher ``revision``.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.keys.base import IdentityKey
from node.shards.crypto import (
    AEAD_NAME,
    ERASURE_NAME,
    HASH_BYTES,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    NONCE_PREFIX_BYTES,
    OBJECT_ID_BYTES,
    SHARING_NAME,
    Layout,
    ObjectParams,
    SealedObject,
)
from node.shards.gf256 import MAX_SHARES
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.wire import decode, encode, message

ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
MAX_PEER_ID_CHARS = 128
MAX_AUTHORISED = 64
MAX_PLAINTEXT_BYTES = 2**50  # 1 PiB: far beyond any single object we expect
MAX_MANIFEST_BODY_BYTES = 128 * 1024
MAX_MANIFEST_BYTES = MAX_MANIFEST_BODY_BYTES + 1024
_SIGN_DOMAIN = b"enclave-swarm/shard-manifest/v1\x00"


def raw_public_key(key: IdentityKey | Ed25519PublicKey) -> bytes:
    pub = key if isinstance(key, Ed25519PublicKey) else key.public_key()
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_ed25519(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` is ``public_key``'s signature over ``data``; never raises."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@message("shard-placement", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class PlacementEntry:
    """Fragment ``index`` (0-based; key share x = index + 1) is held by ``peer_id``."""

    index: int = dataclasses.field(metadata={"min": 0, "max": MAX_SHARES - 1})
    peer_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})

    def validate(self) -> None:
        if not self.peer_id:
            raise RemoteProtocolError("invalid", "empty peer id")


@message("shard-manifest-body", version=1, max_bytes=MAX_MANIFEST_BODY_BYTES)
@dataclasses.dataclass(frozen=True)
class Manifest:
    """The signed description of one stored object (see module docstring)."""

    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    revision: int = dataclasses.field(metadata={"min": 0, "max": 2**32})
    owner: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})
    plaintext_size: int = dataclasses.field(metadata={"min": 0, "max": MAX_PLAINTEXT_BYTES})
    ciphertext_size: int = dataclasses.field(metadata={"min": 0, "max": 2 * MAX_PLAINTEXT_BYTES})
    chunk_size: int = dataclasses.field(metadata={"min": MIN_CHUNK_BYTES, "max": MAX_CHUNK_BYTES})
    k: int = dataclasses.field(metadata={"min": 1, "max": MAX_SHARES})
    n: int = dataclasses.field(metadata={"min": 1, "max": MAX_SHARES})
    aead: str = dataclasses.field(metadata={"max_len": 32})
    nonce_prefix: bytes = dataclasses.field(metadata={"len": NONCE_PREFIX_BYTES})
    erasure: str = dataclasses.field(metadata={"max_len": 32})
    fragment_size: int = dataclasses.field(metadata={"min": 0, "max": 2 * MAX_PLAINTEXT_BYTES})
    fragment_hashes: tuple[bytes, ...] = dataclasses.field(
        metadata={"max_items": MAX_SHARES, "len": HASH_BYTES}
    )
    sharing: str = dataclasses.field(metadata={"max_len": 32})
    share_hashes: tuple[bytes, ...] = dataclasses.field(metadata={"max_items": MAX_SHARES, "len": HASH_BYTES})
    authorised: tuple[bytes, ...] = dataclasses.field(
        metadata={"max_items": MAX_AUTHORISED, "len": ED25519_PUBLIC_KEY_BYTES}
    )
    placement: tuple[PlacementEntry, ...] = dataclasses.field(metadata={"max_items": MAX_SHARES})

    def validate(self) -> None:
        bad = self._problem()
        if bad:
            raise RemoteProtocolError("invalid", f"manifest: {bad}")

    def _problem(self) -> str | None:
        if self.aead != AEAD_NAME or self.erasure != ERASURE_NAME or self.sharing != SHARING_NAME:
            return "unknown algorithm"
        if self.k > self.n:
            return "k > n"
        try:
            layout = Layout(self.plaintext_size, self.chunk_size, self.k, self.n)
        except ValueError as exc:
            return str(exc)
        if self.ciphertext_size != layout.ciphertext_size:
            return "ciphertext_size inconsistent with the layout"
        if self.fragment_size != layout.fragment_size:
            return "fragment_size inconsistent with the layout"
        if len(self.fragment_hashes) != self.n or len(self.share_hashes) != self.n:
            return "need one fragment hash and one share hash per index"
        if len(set(self.authorised)) != len(self.authorised):
            return "duplicate authorised key"
        if len(self.placement) != self.n:
            return "placement must name a holder for every index"
        if sorted(p.index for p in self.placement) != list(range(self.n)):
            return "placement indices must be 0..n-1, once each"
        if len({p.peer_id for p in self.placement}) != self.n:
            return "placement holders must be distinct"
        return None

    # ----------------------------------------------------------------- queries

    def params(self) -> ObjectParams:
        """The parameters :func:`node.shards.crypto.combine_and_open` needs."""
        return ObjectParams(
            object_id=self.object_id,
            plaintext_size=self.plaintext_size,
            chunk_size=self.chunk_size,
            k=self.k,
            n=self.n,
            nonce_prefix=self.nonce_prefix,
            fragment_hashes=self.fragment_hashes,
            share_hashes=self.share_hashes,
        )

    def holder_of(self, index: int) -> str:
        for p in self.placement:
            if p.index == index:
                return p.peer_id
        raise KeyError(index)

    def indices_held_by(self, peer_id: str) -> list[int]:
        return sorted(p.index for p in self.placement if p.peer_id == peer_id)

    def may_fetch(self, principal: bytes) -> bool:
        """Is ``principal`` (a raw Ed25519 key) the owner or one the owner authorised?"""
        ok = hmac.compare_digest(principal, self.owner)
        for a in self.authorised:
            ok |= hmac.compare_digest(principal, a)
        return ok

    def with_placement(self, placement: Sequence[tuple[int, str]]) -> Manifest:
        """A copy with a new placement and ``revision + 1`` (sign it again)."""
        entries = tuple(PlacementEntry(i, p) for i, p in sorted(placement))
        return dataclasses.replace(self, placement=entries, revision=self.revision + 1)


@message("shard-manifest", version=1, max_bytes=MAX_MANIFEST_BYTES)
@dataclasses.dataclass(frozen=True)
class SignedManifest:
    """A manifest body and its owner's signature; decoding verifies it (see module doc)."""

    owner: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})
    body: bytes = dataclasses.field(metadata={"max_len": MAX_MANIFEST_BODY_BYTES})
    signature: bytes = dataclasses.field(metadata={"len": ED25519_SIGNATURE_BYTES})

    def validate(self) -> None:
        if not verify_ed25519(self.owner, self.signature, _SIGN_DOMAIN + self.body):
            raise RemoteProtocolError("invalid", "manifest signature")
        manifest = decode(self.body, Manifest)
        if encode(manifest) != self.body:  # one canonical encoding: no trailing or odd bytes
            raise RemoteProtocolError("invalid", "manifest body is not canonical")
        if not hmac.compare_digest(manifest.owner, self.owner):
            raise RemoteProtocolError("invalid", "manifest owner mismatch")
        object.__setattr__(self, "_manifest", manifest)

    @property
    def manifest(self) -> Manifest:
        """The verified body."""
        cached: Manifest | None = getattr(self, "_manifest", None)
        if cached is None:
            self.validate()
            cached = self.__dict__["_manifest"]
        return cached


def build_manifest(
    sealed: SealedObject,
    owner: IdentityKey | Ed25519PublicKey | bytes,
    placement: Sequence[str],
    authorised: Iterable[bytes] = (),
    revision: int = 0,
) -> Manifest:
    """The manifest of a freshly sealed object; ``placement[i]`` holds fragment i.

    Raises:
        LocalProtocolError: inconsistent arguments (wrong placement length, duplicates...).
    """
    p = sealed.params
    owner_raw = owner if isinstance(owner, bytes) else raw_public_key(owner)
    layout = p.layout
    manifest = Manifest(
        object_id=p.object_id,
        revision=revision,
        owner=owner_raw,
        plaintext_size=p.plaintext_size,
        ciphertext_size=layout.ciphertext_size,
        chunk_size=p.chunk_size,
        k=p.k,
        n=p.n,
        aead=AEAD_NAME,
        nonce_prefix=p.nonce_prefix,
        erasure=ERASURE_NAME,
        fragment_size=layout.fragment_size,
        fragment_hashes=p.fragment_hashes,
        sharing=SHARING_NAME,
        share_hashes=p.share_hashes,
        authorised=tuple(authorised),
        placement=tuple(PlacementEntry(i, peer) for i, peer in enumerate(placement)),
    )
    problem = manifest._problem()
    if problem:
        raise LocalProtocolError(f"manifest: {problem}")
    return manifest


def sign_manifest(manifest: Manifest, owner_key: IdentityKey) -> bytes:
    """Sign ``manifest`` with the owner's key; returns the encoded ``shard-manifest`` frame.

    Raises:
        LocalProtocolError: the key is not the manifest's owner, or the manifest is invalid.
    """
    if not hmac.compare_digest(raw_public_key(owner_key), manifest.owner):
        raise LocalProtocolError("signing key is not the manifest owner")
    body = encode(manifest)
    signed = SignedManifest(manifest.owner, body, owner_key.sign(_SIGN_DOMAIN + body))
    return encode(signed)


def open_manifest(data: bytes, *, owner: bytes | None = None) -> Manifest:
    """Decode and verify a ``shard-manifest`` frame; the only way to read a manifest.

    Args:
        data: the frame.
        owner: when given, the raw Ed25519 key the manifest must be signed by.

    Raises:
        RemoteProtocolError: malformed, out of bounds, badly signed or by another owner.
    """
    signed = decode(data, SignedManifest)
    # The codec tolerates bytes after the CBOR item; a manifest is stored and hashed as a whole,
    # so insist on its one canonical encoding.
    if encode(signed) != bytes(data):
        raise RemoteProtocolError("invalid", "manifest frame is not canonical")
    if owner is not None and not hmac.compare_digest(signed.owner, owner):
        raise RemoteProtocolError("invalid", "manifest signed by an unexpected owner")
    return signed.manifest
