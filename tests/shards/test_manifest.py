"""The signed manifest: round trip, verification before use, every flipped byte refused, fuzz."""

from __future__ import annotations

import dataclasses
import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards.manifest import (
    _SIGN_DOMAIN,
    Manifest,
    PlacementEntry,
    SignedManifest,
    build_manifest,
    open_manifest,
    raw_public_key,
    sign_manifest,
)
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.wire import decode, encode
from tests.strategies import cbor_values

from .helpers import flip, seal_bytes, signed_object


def test_round_trip_and_queries() -> None:
    owner, sealed, _, manifest, frame = signed_object()
    got = open_manifest(frame, owner=raw_public_key(owner))
    assert got == manifest
    assert got.params() == sealed.params
    assert got.holder_of(2) == "12D3KooWpeer2" and got.indices_held_by("12D3KooWpeer4") == [4]
    assert got.may_fetch(raw_public_key(owner)) and got.may_fetch(manifest.authorised[0])
    assert not got.may_fetch(os.urandom(32))
    assert decode(frame, SignedManifest).manifest == manifest
    # re-placement: new revision, needs a new signature
    moved = got.with_placement([(i, f"other{i}") for i in range(5)])
    assert moved.revision == 1 and open_manifest(sign_manifest(moved, owner)) == moved


def test_unexpected_owner_and_wrong_signer_are_refused() -> None:
    _, _, _, manifest, frame = signed_object()
    with pytest.raises(RemoteProtocolError):
        open_manifest(frame, owner=os.urandom(32))
    with pytest.raises(LocalProtocolError):
        sign_manifest(manifest, Ed25519PrivateKey.generate())


def test_every_flipped_byte_of_a_signed_manifest_is_refused() -> None:
    _, _, _, _, frame = signed_object()
    for pos in range(len(frame)):
        for mask in (0x01, 0x80):
            with pytest.raises(RemoteProtocolError):
                open_manifest(flip(frame, pos, mask))
    for cut in range(len(frame)):
        with pytest.raises(RemoteProtocolError):
            open_manifest(frame[:cut])


def sign_raw_body(owner: Ed25519PrivateKey, body: bytes) -> bytes:
    pub = raw_public_key(owner)
    return cbor2.dumps(
        [
            "shard-manifest",
            1,
            {"owner": pub, "body": body, "signature": owner.sign(_SIGN_DOMAIN + body)},
        ],
        canonical=True,
    )


def test_a_validly_signed_but_inconsistent_body_is_refused() -> None:
    owner, _, _, manifest, _ = signed_object()
    good_body = encode(manifest)
    plain = cbor2.loads(good_body)
    mutations = {
        "k > n": {"k": 6},
        "size mismatch": {"ciphertext_size": manifest.ciphertext_size + 1},
        "fragment size": {"fragment_size": manifest.fragment_size - 1},
        "hash count": {"fragment_hashes": list(manifest.fragment_hashes[:-1])},
        "algorithm": {"aead": "ROT13"},
        "dup holder": {"placement": [{"index": i, "peer_id": "same"} for i in range(5)]},
        "dup index": {"placement": [{"index": 0, "peer_id": f"p{i}"} for i in range(5)]},
        "other owner": {"owner": os.urandom(32)},
    }
    for name, change in mutations.items():
        body = cbor2.dumps([plain[0], plain[1], {**plain[2], **change}], canonical=True)
        with pytest.raises(RemoteProtocolError):
            open_manifest(sign_raw_body(owner, body))
        del name
    assert open_manifest(sign_raw_body(owner, good_body)) == manifest
    # a signed manifest whose body is some other message type
    entry = encode(PlacementEntry(0, "p"))
    with pytest.raises(RemoteProtocolError):
        open_manifest(sign_raw_body(owner, entry))


def test_inconsistent_manifests_cannot_be_built_or_encoded() -> None:
    owner, sealed, _, manifest, _ = signed_object()
    with pytest.raises(LocalProtocolError):
        build_manifest(sealed, owner, ["a", "b"])
    with pytest.raises(LocalProtocolError):
        encode(dataclasses.replace(manifest, plaintext_size=manifest.plaintext_size + 1))


def test_largest_manifest_fits_its_bound() -> None:
    owner = Ed25519PrivateKey.generate()
    sealed, _ = seal_bytes(b"x", 1, 255)
    m = build_manifest(
        sealed,
        owner,
        ["12D3KooW" + "x" * 117 + f"{i:03}" for i in range(255)],
        authorised=[os.urandom(32) for _ in range(64)],
    )
    assert open_manifest(sign_manifest(m, owner)) == m


@given(st.binary(max_size=2048))
@settings(deadline=None, max_examples=300)
def test_fuzz_garbage_gives_remote_protocol_error_only(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        open_manifest(data)




@given(
    body=st.dictionaries(st.sampled_from(["owner", "body", "signature", "x"]), cbor_values, max_size=4),
    version=st.integers(0, 2),
)
@settings(deadline=None, max_examples=300)
def test_fuzz_structured_envelopes(body: dict, version: int) -> None:
    data = cbor2.dumps(["shard-manifest", version, body])
    with pytest.raises(RemoteProtocolError):
        open_manifest(data)


@given(fields=st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(Manifest)]), cbor_values))
@settings(deadline=None, max_examples=200)
def test_fuzz_signed_garbage_bodies(fields: dict) -> None:
    """Even with a valid signature, a garbage body is only ever a RemoteProtocolError."""
    owner = _FUZZ_OWNER
    body = cbor2.dumps(["shard-manifest-body", 1, fields])
    with pytest.raises(RemoteProtocolError):
        open_manifest(sign_raw_body(owner, body))


_FUZZ_OWNER = Ed25519PrivateKey.generate()
