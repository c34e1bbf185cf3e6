"""Fuzz every swim-/gossip- message decoder: garbage in gives RemoteProtocolError, never
anything else; valid messages round-trip exactly."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.errors import RemoteProtocolError
from overlay.messages_gossip import (
    ALL_MESSAGES,
    GossipDigest,
    GossipDigestEntry,
    GossipPush,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
    SwimSync,
    SwimUpdate,
)
from overlay.records import Record
from overlay.wire import decode, encode, registered
from tests.strategies import cbor_values

ids = st.text(min_size=1, max_size=20)
ints = st.integers(0, 2**40)
times = st.floats(0, 1e9, allow_nan=False, allow_infinity=False)
updates = st.builds(SwimUpdate, ids, st.sampled_from([0, 1, 2]), ints, ids)
records = st.builds(
    lambda k, i, s, v, t, d, p, g: Record(k, i, s, v, t, t + d, p, g),
    st.sampled_from(["score", "revocation", "membership", "manager"]), ids, ids, ints, times,
    st.floats(0, 1e6), st.binary(max_size=64), st.binary(max_size=64),
)
entries = st.builds(GossipDigestEntry, st.sampled_from(["score", "revocation"]), ids, ints,
                    times, st.binary(max_size=8), ids)
small = {"max_size": 4}
messages = st.one_of(
    st.builds(SwimPing, ints, ids, st.tuples(*[updates] * 2), st.tuples(records)),
    st.builds(SwimPingReq, ints, ids, st.booleans(), st.lists(updates, **small).map(tuple)),
    st.builds(SwimAck, ints, st.lists(updates, **small).map(tuple),
              st.lists(records, **small).map(tuple)),
    st.builds(SwimNack, ints),
    st.builds(SwimGossip, st.lists(updates, **small).map(tuple)),
    st.builds(SwimSync, st.lists(updates, **small).map(tuple), st.booleans(), st.booleans()),
    st.builds(GossipPush, st.lists(records, **small).map(tuple),
              st.lists(st.binary(max_size=32), **small).map(tuple)),
    st.builds(GossipDigest, st.lists(entries, **small).map(tuple), st.booleans(), st.booleans()),
)


def test_wire_names_are_prefixed():
    for name in registered():
        if name.startswith(("swim-", "gossip-")):
            continue
        assert not name.startswith(("swim", "gossip"))
    for cls in ALL_MESSAGES:
        assert any(v is cls for v in registered().values())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_valid_messages_round_trip(msg):
    assert decode(encode(msg), ALL_MESSAGES) == msg


def _decode_or_remote_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data, ALL_MESSAGES)


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_garbage_bytes_give_remote_protocol_error_only(data):
    _decode_or_remote_error(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_mutated_frames_give_remote_protocol_error_only(msg, data):
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _decode_or_remote_error(bytes(raw))


@settings(max_examples=300)
@given(st.sampled_from([c for c in ALL_MESSAGES]), cbor_values)
def test_wrong_bodies_in_a_valid_envelope_give_remote_protocol_error_only(cls, body):
    from overlay.wire import spec_of

    name, version, _ = spec_of(cls)
    _decode_or_remote_error(cbor2.dumps([name, version, body]))


@pytest.mark.parametrize("bad", [
    SwimUpdate("", 0, 0, "x"),
    SwimUpdate("a", 3, 0, "b"),  # only a node itself can announce it left
])
def test_semantic_validation(bad):
    from overlay.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        encode(bad)
    body = {"node": bad.node, "state": bad.state, "incarnation": 0, "origin": bad.origin}
    with pytest.raises(RemoteProtocolError):
        decode(cbor2.dumps(["swim-gossip", 1, {"updates": [body]}]), ALL_MESSAGES)


def test_record_expiring_before_issue_is_refused():
    body = {"kind": "score", "issuer": "a", "subject": "b", "version": 1, "issued_at": 5.0,
            "expires_at": 1.0, "payload": b"", "signature": b""}
    with pytest.raises(RemoteProtocolError):
        decode(cbor2.dumps(["gossip-push", 1, {"records": [body], "user": []}]), ALL_MESSAGES)


def test_oversized_lists_are_refused():
    u = {"node": "a", "state": 0, "incarnation": 0, "origin": "a"}
    with pytest.raises(RemoteProtocolError):
        decode(cbor2.dumps(["swim-gossip", 1, {"updates": [u] * 65}]), ALL_MESSAGES)
