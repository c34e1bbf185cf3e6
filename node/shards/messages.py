"""Wire messages of the shard protocols (names ``shard-*``), and their signed transcripts.

Theory of operation
-------------------
These are the frames the node's libp2p stream protocols will carry (one CBOR envelope per
length-prefixed frame, ``overlay/framing.py``). All of them travel only on attested channels:
the overlay has already proved that the remote peer id's key lives in an attested enclave.
Secrets (key shares) appear only in :class:`ShardKeyShare` and :class:`ReshareContribution`
/ :class:`ReshareMaskSeed`, whose ``repr`` is redacted.

Store (owner → holder, ``/enclave-swarm/shard-store/1.0.0``)::

    owner  ShardOffer(transfer_id, manifest, index)           → holder
    holder ShardOfferReply(accepted, reason, resume_offset)   → owner   (quota, placement check)
    owner  ShardChunk(offset, data, last) ...                 → holder  (≤ 256 KiB each)
    owner  ShardKeyShare(object_id, index, share)             → holder  (after the last chunk)
    holder ShardAck(ok, reason, received_bytes)               → owner   (verified, sealed, durable)

Fetch (requester → holder, ``/enclave-swarm/shard-fetch/1.0.0``): a challenge/response proves
the requester holds a key the manifest authorises, fresh, and addressed to this holder::

    requester ShardRequest(request_id, object_id, index, requester, want_share) → holder
    holder    ShardChallenge(request_id, nonce)                                 → requester
    requester ShardChallengeResponse(request_id, signature over fetch_transcript) → holder
    holder    ShardKeyShare (if want_share), ShardChunk ..., ShardAck(ok) | ShardAck(ok=False, reason)
    requester ShardAck(received_bytes) every half window, cumulative

Holders also refuse requesters whose attestation is not current. Repairing holders fetch
fragments with ``want_share=False`` (fragments are ciphertext), authorised by the owner's
:class:`ReshareInvite`.

Erase (owner → holder, ``/enclave-swarm/shard-erase/1.0.0``)::

    owner  ShardErase(object_id, index, nonce, signature over erase_transcript) → holder
    holder ShardEraseReceipt(..., signature by the holder's receipt key)         → owner

Reshare (share regeneration without reconstruction, docs/shards.md)::

    coordinator ReshareInvite(session, object_id, target_x, helpers, new_holder, sig) → each helper
    helper a    ReshareMaskSeed(session, from_x=a, to_x=b, seed)                      → helper b>a
    helper i    ReshareContribution(session, object_id, helper_x=i, target_x, value)  → new holder

Placement in the swarm state and manager-scheduled repair (node/shards/managed.py)::

    owner      ShardPlace(manifest, base_epoch) | ShardDrop(object_id)  → manager
    new holder ShardRepairDone(object_id, index)                         → manager
    manager    ShardManagerReply(ok, reason)
    new holder ShardManifestGet(object_id)   → holder: the shard-manifest frame | ShardAck refusal
    new holder RepairInvite(session, object_id, target_x, helpers_x, new_holder) → each helper

Refresh (proactive: re-randomise all shares, same key; then a new manifest revision)::

    participant p  RefreshDelta(session, object_id, from_x=p, to_x=i, delta)  → holder i
"""

from __future__ import annotations

import dataclasses
import hmac

import cbor2

from node.shards.crypto import HASH_BYTES, KEY_BYTES, OBJECT_ID_BYTES
from node.shards.gf256 import MAX_SHARES
from node.shards.manifest import (
    ED25519_PUBLIC_KEY_BYTES,
    ED25519_SIGNATURE_BYTES,
    MAX_PEER_ID_CHARS,
    SignedManifest,
    verify_ed25519,
)
from overlay.errors import RemoteProtocolError
from overlay.wire import message

SHARD_STORE_PROTOCOL = "/enclave-swarm/shard-store/1.0.0"
SHARD_FETCH_PROTOCOL = "/enclave-swarm/shard-fetch/1.0.0"
SHARD_ERASE_PROTOCOL = "/enclave-swarm/shard-erase/1.0.0"
SHARD_RESHARE_PROTOCOL = "/enclave-swarm/shard-reshare/1.0.0"

ID_BYTES = 16
NONCE_BYTES = 32
MAX_CHUNK_DATA_BYTES = 256 * 1024
MAX_REASON_CHARS = 200
_FETCH_DOMAIN = b"enclave-swarm/shard-fetch/v1\x00"
_ERASE_DOMAIN = b"enclave-swarm/shard-erase/v1\x00"
_RECEIPT_DOMAIN = b"enclave-swarm/shard-erase-receipt/v1\x00"
_INVITE_DOMAIN = b"enclave-swarm/shard-reshare-invite/v1\x00"

_INDEX = {"min": 0, "max": MAX_SHARES - 1}
_X = {"min": 1, "max": MAX_SHARES}


def _transcript(domain: bytes, *fields: object) -> bytes:
    """Unambiguous bytes to sign: a domain tag then canonical CBOR of the fields."""
    return domain + cbor2.dumps(list(fields), canonical=True)


# ----------------------------------------------------------------------------- store


@message("shard-offer", version=1, max_bytes=140 * 1024)
@dataclasses.dataclass(frozen=True)
class ShardOffer:
    """Owner → holder: will you store fragment ``index`` of this (signed) manifest?

    The holder checks the signature (decoding did), that the placement names it for ``index``,
    and its quota for ``manifest.fragment_size``, then answers :class:`ShardOfferReply`.
    """

    transfer_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    manifest: SignedManifest
    index: int = dataclasses.field(metadata=_INDEX)

    def validate(self) -> None:
        if self.index >= self.manifest.manifest.n:
            raise RemoteProtocolError("invalid", "index beyond n")


@message("shard-offer-reply", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ShardOfferReply:
    """Holder → owner. ``resume_offset`` > 0 resumes an interrupted transfer."""

    transfer_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    accepted: bool
    reason: str = dataclasses.field(metadata={"max_len": MAX_REASON_CHARS})
    resume_offset: int = dataclasses.field(metadata={"min": 0})


@message("shard-chunk", version=1, max_bytes=MAX_CHUNK_DATA_BYTES + 256)
@dataclasses.dataclass(frozen=True)
class ShardChunk:
    """A slice of a fragment at ``offset``; ``last`` marks the end. Receivers hash as they go
    and check the manifest's fragment hash when ``last`` arrives."""

    transfer_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    offset: int = dataclasses.field(metadata={"min": 0})
    data: bytes = dataclasses.field(metadata={"max_len": MAX_CHUNK_DATA_BYTES})
    last: bool


@message("shard-key-share", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ShardKeyShare:
    """The key share of fragment ``index`` (x = index + 1). Secret: never logged."""

    transfer_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    index: int = dataclasses.field(metadata=_INDEX)
    share: bytes = dataclasses.field(metadata={"len": KEY_BYTES})

    def __repr__(self) -> str:
        return f"ShardKeyShare(object_id={self.object_id.hex()}, index={self.index}, share=<redacted>)"


@message("shard-ack", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ShardAck:
    """Outcome of a transfer: ``ok`` only once the shard is verified, sealed and durable."""

    transfer_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    ok: bool
    reason: str = dataclasses.field(metadata={"max_len": MAX_REASON_CHARS})
    received_bytes: int = dataclasses.field(metadata={"min": 0})


# ----------------------------------------------------------------------------- fetch


@message("shard-request", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ShardRequest:
    """Requester → holder: send me fragment ``index`` (and its key share if ``want_share``)."""

    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    index: int = dataclasses.field(metadata=_INDEX)
    requester: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})
    want_share: bool


@message("shard-challenge", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ShardChallenge:
    """Holder → requester: sign :func:`fetch_transcript` with this fresh nonce."""

    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    nonce: bytes = dataclasses.field(metadata={"len": NONCE_BYTES})


@message("shard-challenge-response", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ShardChallengeResponse:
    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    signature: bytes = dataclasses.field(metadata={"len": ED25519_SIGNATURE_BYTES})


def fetch_transcript(request: ShardRequest, nonce: bytes, holder_peer_id: str) -> bytes:
    """What the requester signs: bound to the request, the holder's nonce and the holder, so a
    response can be neither replayed nor relayed to another holder."""
    return _transcript(
        _FETCH_DOMAIN,
        request.request_id,
        request.object_id,
        request.index,
        request.requester,
        request.want_share,
        nonce,
        holder_peer_id,
    )


# ----------------------------------------------------------------------------- erase


@message("shard-erase", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ShardErase:
    """Owner → holder: crypto-shred fragment ``index``. Signed by the manifest's owner."""

    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    index: int = dataclasses.field(metadata=_INDEX)
    holder_peer_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    nonce: bytes = dataclasses.field(metadata={"len": NONCE_BYTES})
    signature: bytes = dataclasses.field(metadata={"len": ED25519_SIGNATURE_BYTES})


def erase_transcript(object_id: bytes, index: int, holder_peer_id: str, nonce: bytes) -> bytes:
    return _transcript(_ERASE_DOMAIN, object_id, index, holder_peer_id, nonce)


@message("shard-erase-receipt", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ShardEraseReceipt:
    """Holder → owner: the shard's wrapped key and data are gone (``existed`` says whether
    there was anything to erase). ``signature`` by the holder's receipt key over
    :func:`receipt_transcript`; ``nonce`` echoes the request so receipts cannot be replayed."""

    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    index: int = dataclasses.field(metadata=_INDEX)
    holder_peer_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    nonce: bytes = dataclasses.field(metadata={"len": NONCE_BYTES})
    existed: bool
    holder_key: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})
    signature: bytes = dataclasses.field(metadata={"len": ED25519_SIGNATURE_BYTES})


def receipt_transcript(
    object_id: bytes,
    index: int,
    holder_peer_id: str,
    nonce: bytes,
    existed: bool,
    holder_key: bytes,
) -> bytes:
    return _transcript(_RECEIPT_DOMAIN, object_id, index, holder_peer_id, nonce, existed, holder_key)


def verify_receipt(receipt: ShardEraseReceipt, holder_key: bytes) -> bool:
    """True iff ``receipt`` is signed by ``holder_key`` (the key the caller expects)."""
    if not hmac.compare_digest(receipt.holder_key, holder_key):
        return False
    data = receipt_transcript(
        receipt.object_id,
        receipt.index,
        receipt.holder_peer_id,
        receipt.nonce,
        receipt.existed,
        receipt.holder_key,
    )
    return verify_ed25519(holder_key, receipt.signature, data)


# ----------------------------------------------------------------------------- reshare


@message("shard-reshare-invite", version=1, max_bytes=4096)
@dataclasses.dataclass(frozen=True)
class ReshareInvite:
    """Coordinator (owner, or the manager on the owner's standing authorisation) → each helper:
    help give ``new_holder`` the share at ``target_x`` using the helpers at ``helpers_x``
    (exactly k distinct points). Signed by the manifest owner over :func:`invite_transcript`."""

    session_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    target_x: int = dataclasses.field(metadata=_X)
    helpers_x: tuple[int, ...] = dataclasses.field(metadata={"max_items": MAX_SHARES, **_X})
    new_holder_peer_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    signature: bytes = dataclasses.field(metadata={"len": ED25519_SIGNATURE_BYTES})

    def validate(self) -> None:
        if len(set(self.helpers_x)) != len(self.helpers_x) or not self.helpers_x:
            raise RemoteProtocolError("invalid", "helpers must be distinct and non-empty")
        if self.target_x in self.helpers_x:
            raise RemoteProtocolError("invalid", "target cannot be a helper")


def invite_transcript(
    session_id: bytes,
    object_id: bytes,
    target_x: int,
    helpers_x: tuple[int, ...],
    new_holder_peer_id: str,
) -> bytes:
    return _transcript(_INVITE_DOMAIN, session_id, object_id, target_x, list(helpers_x), new_holder_peer_id)


@message("shard-reshare-mask-seed", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ReshareMaskSeed:
    """Helper ``from_x`` → helper ``to_x`` (from_x < to_x): the pair's mask seed. Secret."""

    session_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    from_x: int = dataclasses.field(metadata=_X)
    to_x: int = dataclasses.field(metadata=_X)
    seed: bytes = dataclasses.field(metadata={"len": HASH_BYTES})

    def validate(self) -> None:
        if self.from_x >= self.to_x:
            raise RemoteProtocolError("invalid", "seed must go from the lower to the higher x")

    def __repr__(self) -> str:
        return f"ReshareMaskSeed(from_x={self.from_x}, to_x={self.to_x}, seed=<redacted>)"


@message("shard-reshare-contribution", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ReshareContribution:
    """Helper → new holder: λ_i(target)·s_i ⊕ mask_i. Looks uniform on its own."""

    session_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    helper_x: int = dataclasses.field(metadata=_X)
    target_x: int = dataclasses.field(metadata=_X)
    value: bytes = dataclasses.field(metadata={"len": KEY_BYTES})

    def __repr__(self) -> str:
        return (
            f"ReshareContribution(object_id={self.object_id.hex()}, helper_x={self.helper_x}, "
            f"target_x={self.target_x}, value=<redacted>)"
        )


@message("shard-refresh-delta", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class RefreshDelta:
    """Participant ``from_x`` → holder ``to_x``: δ_p(x_i) of a zero-constant polynomial. Secret."""

    session_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    from_x: int = dataclasses.field(metadata=_X)
    to_x: int = dataclasses.field(metadata=_X)
    delta: bytes = dataclasses.field(metadata={"len": KEY_BYTES})

    def __repr__(self) -> str:
        return (
            f"RefreshDelta(object_id={self.object_id.hex()}, from_x={self.from_x}, "
            f"to_x={self.to_x}, delta=<redacted>)"
        )


# ----------------------------------------------------------------------------- manager

# Placement in the replicated swarm state and manager-scheduled repair (docs/shards.md,
# "Placement in the swarm state" and "Manager repair"). Requests to the manager are answered
# with a ShardManagerReply; a node that is not the manager answers ok=False, NOT_MANAGER.

NOT_MANAGER = "not the manager"


@message("shard-place", version=1, max_bytes=140 * 1024)
@dataclasses.dataclass(frozen=True)
class ShardPlace:
    """Owner → manager: commit the placement this owner-signed manifest names. ``base_epoch``
    is the committed placement's epoch the owner saw (0 for a new object)."""

    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    manifest: SignedManifest
    base_epoch: int = dataclasses.field(metadata={"min": 0, "max": 2**62})


@message("shard-drop", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ShardDrop:
    """Owner → manager: the object was erased everywhere; drop its committed placement."""

    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})


@message("shard-repair-done", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ShardRepairDone:
    """New holder → manager: shard ``index`` is regenerated, verified and durable here."""

    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    index: int = dataclasses.field(metadata=_INDEX)


@message("shard-manager-reply", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ShardManagerReply:
    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    ok: bool
    reason: str = dataclasses.field(metadata={"max_len": MAX_REASON_CHARS})


@message("shard-manifest-get", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class ShardManifestGet:
    """New holder → holder: send me the owner-signed manifest you store for this object.
    Answered with the ``shard-manifest`` frame or a refusing ShardAck."""

    request_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})


@message("shard-repair-invite", version=1, max_bytes=4096)
@dataclasses.dataclass(frozen=True)
class RepairInvite:
    """New holder → each helper: regenerate my key share at ``target_x`` with the helpers at
    ``helpers_x``. Unsigned: the authority is the committed placement, which must name the
    sender as the pending holder of ``target_x - 1`` and every helper as a settled holder."""

    session_id: bytes = dataclasses.field(metadata={"len": ID_BYTES})
    object_id: bytes = dataclasses.field(metadata={"len": OBJECT_ID_BYTES})
    target_x: int = dataclasses.field(metadata=_X)
    helpers_x: tuple[int, ...] = dataclasses.field(metadata={"max_items": MAX_SHARES, **_X})
    new_holder_peer_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})

    def validate(self) -> None:
        if len(set(self.helpers_x)) != len(self.helpers_x) or not self.helpers_x:
            raise RemoteProtocolError("invalid", "helpers must be distinct and non-empty")
        if self.target_x in self.helpers_x:
            raise RemoteProtocolError("invalid", "target cannot be a helper")
