"""shard-* wire messages: round trips, transcripts, redaction and decoder fuzzing."""

from __future__ import annotations

import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards import messages as m
from node.shards.manifest import SignedManifest, raw_public_key, verify_ed25519
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.wire import decode, encode, registered, spec_of
from tests.strategies import cbor_values

from .helpers import signed_object

SHARD_TYPES = sorted((name, cls) for name, cls in registered().items() if name.startswith("shard-"))
TID = os.urandom(16)


def examples() -> list[object]:
    _, sealed, _, manifest, frame = signed_object()
    signed = decode(frame, SignedManifest)
    oid = manifest.object_id
    sig = os.urandom(64)
    return [
        m.ShardOffer(TID, signed, 3),
        m.ShardOfferReply(TID, True, "", 0),
        m.ShardChunk(TID, 0, os.urandom(m.MAX_CHUNK_DATA_BYTES), True),
        m.ShardKeyShare(TID, oid, 0, sealed.shares[0].value),
        m.ShardAck(TID, False, "quota", 10),
        m.ShardRequest(TID, oid, 1, os.urandom(32), True),
        m.ShardChallenge(TID, os.urandom(32)),
        m.ShardChallengeResponse(TID, sig),
        m.ShardErase(oid, 2, "peer", os.urandom(32), sig),
        m.ShardEraseReceipt(oid, 2, "peer", os.urandom(32), True, os.urandom(32), sig),
        m.ReshareInvite(TID, oid, 3, (1, 2, 4), "peer", sig),
        m.ReshareMaskSeed(TID, 1, 2, os.urandom(32)),
        m.ReshareContribution(TID, oid, 1, 3, os.urandom(32)),
        m.RefreshDelta(TID, oid, 1, 3, os.urandom(32)),
        m.ShardPlace(TID, signed, 4),
        m.ShardDrop(TID, oid),
        m.ShardRepairDone(TID, oid, 2),
        m.ShardManagerReply(TID, False, m.NOT_MANAGER),
        m.ShardManifestGet(TID, oid),
        m.RepairInvite(TID, oid, 3, (1, 2, 4), "peer"),
    ]


def test_every_message_round_trips_within_its_bound() -> None:
    seen = set()
    for msg in examples():
        data = encode(msg)
        name, _, bound = spec_of(type(msg))
        assert len(data) <= bound and name.startswith("shard-")
        assert decode(data, type(msg)) == msg
        seen.add(name)
    assert seen >= {n for n, _ in SHARD_TYPES} - {
        "shard-manifest",
        "shard-manifest-body",
        "shard-placement",
    }


def test_semantic_validation() -> None:
    _, _, _, _, frame = signed_object(n=5)
    signed = decode(frame, SignedManifest)
    with pytest.raises(LocalProtocolError):
        encode(m.ShardOffer(TID, signed, 7))  # index >= n
    with pytest.raises(LocalProtocolError):
        encode(m.ReshareInvite(TID, os.urandom(16), 3, (1, 3), "p", os.urandom(64)))
    with pytest.raises(LocalProtocolError):
        encode(m.ReshareMaskSeed(TID, 2, 1, os.urandom(32)))
    with pytest.raises(LocalProtocolError):
        encode(m.RepairInvite(TID, os.urandom(16), 3, (1, 3), "p"))  # target among the helpers


def test_secrets_are_redacted() -> None:
    secret = os.urandom(32)
    for msg in (
        m.ShardKeyShare(TID, os.urandom(16), 0, secret),
        m.ReshareMaskSeed(TID, 1, 2, secret),
        m.ReshareContribution(TID, os.urandom(16), 1, 2, secret),
        m.RefreshDelta(TID, os.urandom(16), 1, 2, secret),
    ):
        assert secret.hex() not in repr(msg) and repr(secret)[2:-1] not in repr(msg)


def test_fetch_transcript_binds_request_nonce_and_holder() -> None:
    key = Ed25519PrivateKey.generate()
    req = m.ShardRequest(TID, os.urandom(16), 1, raw_public_key(key), True)
    nonce = os.urandom(32)
    sig = key.sign(m.fetch_transcript(req, nonce, "holderA"))
    assert verify_ed25519(req.requester, sig, m.fetch_transcript(req, nonce, "holderA"))
    assert not verify_ed25519(req.requester, sig, m.fetch_transcript(req, os.urandom(32), "holderA"))
    assert not verify_ed25519(req.requester, sig, m.fetch_transcript(req, nonce, "holderB"))
    other = m.ShardRequest(TID, req.object_id, 2, req.requester, True)
    assert not verify_ed25519(req.requester, sig, m.fetch_transcript(other, nonce, "holderA"))


@pytest.mark.parametrize("cls", [c for _, c in SHARD_TYPES], ids=[n for n, _ in SHARD_TYPES])
@given(data=st.binary(max_size=600))
@settings(deadline=None, max_examples=150)
def test_fuzz_garbage_frames(cls: type, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data, cls)




@pytest.mark.parametrize("cls", [c for _, c in SHARD_TYPES], ids=[n for n, _ in SHARD_TYPES])
@given(draw=st.data())
@settings(deadline=None, max_examples=100)
def test_fuzz_structured_bodies(cls: type, draw: st.DataObject) -> None:
    """Right name and version, field names drawn from the schema, values arbitrary: the decoder
    either returns a valid message of the type or raises RemoteProtocolError."""
    import dataclasses

    name, version, _ = spec_of(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    body = draw.draw(
        st.fixed_dictionaries({n: cbor_values for n in names})
        | st.dictionaries(st.sampled_from([*names, "extra"]), cbor_values)
    )
    data = cbor2.dumps([name, version, body])
    try:
        msg = decode(data, cls)
    except RemoteProtocolError:
        return
    assert type(msg) is cls
    assert decode(encode(msg), cls) == msg
