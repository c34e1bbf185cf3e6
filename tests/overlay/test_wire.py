"""The wire codec: round trips, schema enforcement, and garbage only ever a RemoteProtocolError."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import node.attestation.simulated  # noqa: F401  (registers sim-report, sim-host-cert)
from overlay import messages as m
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.wire import decode, encode, message, registered
from tests.strategies import cbor_values

NONCE = bytes(range(32))
REC = m.ScoreRecord(bytes(32), "12D3KooWpeer", 90, "sim", "ok", bytes(32), 1.0, 2.0, bytes(64))
SAMPLES = [
    m.AttestChallenge(NONCE),
    m.AttestEvidence("sim", b"blob", (b"c1", b"c2"), bytes(32)),
    m.AttestResult(True, "ok", REC),
    m.AttestResult(False, "no", None),
    REC,
    m.PeersRequest(5),
    m.PeersResponse((m.PeerEntry("12D3KooWx", ("/ip4/127.0.0.1/tcp/1",)),)),
    m.Goodbye("bye"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(msg):
    assert decode(encode(msg), type(msg)) == msg


def test_unexpected_type_is_refused():
    with pytest.raises(RemoteProtocolError) as e:
        decode(encode(m.Goodbye("x")), m.AttestChallenge)
    assert e.value.reason == "unexpected"


def test_oversized_frame_refused_before_parsing():
    with pytest.raises(RemoteProtocolError) as e:
        decode(b"\x00" * 300, m.AttestChallenge)
    assert e.value.reason == "size"


@pytest.mark.parametrize("body,reason", [
    ({"nonce": b"short"}, "bounds"),
    ({"nonce": "text" * 8}, "schema"),
    ({}, "schema"),
    ({"nonce": NONCE, "extra": 1}, "schema"),
])
def test_schema_violations(body, reason):
    data = cbor2.dumps(["attest-challenge", 1, body])
    with pytest.raises(RemoteProtocolError) as e:
        decode(data, m.AttestChallenge)
    assert e.value.reason == reason


def test_wrong_version_and_unknown_name():
    with pytest.raises(RemoteProtocolError) as e:
        decode(cbor2.dumps(["attest-challenge", 2, {"nonce": NONCE}]))
    assert e.value.reason == "version"
    with pytest.raises(RemoteProtocolError) as e:
        decode(cbor2.dumps(["no-such-thing", 1, {}]))
    assert e.value.reason == "unexpected"


def test_tags_are_refused():
    data = cbor2.dumps(["attest-challenge", 1, {"nonce": cbor2.CBORTag(1234, NONCE)}])
    with pytest.raises(RemoteProtocolError):
        decode(data)


def test_semantic_validation_runs():
    bad = dataclasses.replace(REC, expires_at=0.5)  # expires before issued
    with pytest.raises(LocalProtocolError):
        encode(bad)
    raw = cbor2.dumps(["score-record", 1, {**{f.name: getattr(REC, f.name) for f in dataclasses.fields(REC)},
                                           "expires_at": 0.5}])
    with pytest.raises(RemoteProtocolError) as e:
        decode(raw, m.ScoreRecord)
    assert e.value.reason == "invalid"


def test_encode_refuses_schema_violations():
    with pytest.raises(LocalProtocolError):
        encode(m.AttestChallenge(b"short"))
    with pytest.raises(LocalProtocolError):
        encode(m.PeersRequest(0))


def test_registration_rules():
    with pytest.raises(LocalProtocolError):
        @message("attest-challenge")
        @dataclasses.dataclass(frozen=True)
        class Dup:
            x: int

    with pytest.raises(LocalProtocolError):
        @message("not-frozen-thing")
        @dataclasses.dataclass
        class NotFrozen:
            x: int


def test_every_registered_type_has_a_bound_within_the_frame_limit():
    from overlay.wire import MAX_FRAME_BYTES, spec_of

    for name, cls in registered().items():
        wire_name, version, max_bytes = spec_of(cls)
        assert wire_name == name and version >= 1
        assert 0 < max_bytes <= MAX_FRAME_BYTES


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_garbage_bytes(data):
    with contextlib.suppress(RemoteProtocolError):
        decode(data)




@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(registered())), st.integers(0, 3), cbor_values)
def test_fuzz_structured_envelopes(name, version, body):
    """Well-formed CBOR with a known name but an arbitrary body: only ever a clean refusal."""
    data = cbor2.dumps([name, version, body])
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_valid_messages(msg, data):
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        out = decode(bytes(raw))
    except RemoteProtocolError:
        return
    # Whatever decodes must satisfy its own schema again.
    assert decode(encode(out), type(out)) == out


def test_trailing_bytes_are_refused():
    with pytest.raises(RemoteProtocolError) as e:
        decode(encode(m.Goodbye("x")) + b"\x00", m.Goodbye)
    assert e.value.reason == "cbor" and "trailing" in e.value.detail
