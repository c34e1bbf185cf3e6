"""overlay/wire.py decodes with no tag semantics: a CBOR tag anywhere in a frame is a
RemoteProtocolError with reason ``tag``, raised before cbor2 builds any object."""

from __future__ import annotations

import re
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import overlay.messages as m
from overlay.errors import RemoteProtocolError
from overlay.wire import decode, encode
from tests.consensus.test_cbor_strict import ALL_TAGS, _tagged_payload

NONCE = bytes(range(32))
EVIDENCE = m.AttestEvidence("sim", b"blob" * 10, (b"cert1", b"cert2"), bytes(32))


def _places(tagged: Any) -> list[Any]:
    """An AttestEvidence envelope with ``tagged`` in each place a value can sit."""
    body = cbor2.loads(encode(EVIDENCE))[2]
    return [
        tagged,                                                   # the whole frame
        [tagged, 1, body],                                        # the name
        ["attest-evidence", tagged, body],                        # the version
        ["attest-evidence", 1, tagged],                           # the body
        ["attest-evidence", 1, {**body, "blob": tagged}],         # a field
        ["attest-evidence", 1, {**body, "certs": [b"c", tagged]}],  # inside a tuple
        ["attest-evidence", 1, {**body, "extra": [[{"x": tagged}]]}],  # deep in an extra field
    ]


@pytest.mark.parametrize("tag", ALL_TAGS)
def test_every_tag_anywhere_in_a_frame_is_refused(tag):
    for frame in _places(cbor2.CBORTag(tag, _tagged_payload(tag))):
        for expected in (m.AttestEvidence, None):
            with pytest.raises(RemoteProtocolError) as e:
                decode(cbor2.dumps(frame), expected)
            assert e.value.reason == "tag"


def test_tag_35_never_reaches_re_compile(monkeypatch):
    calls: list[Any] = []

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        raise AssertionError("re.compile reached from the wire")

    frames = [cbor2.dumps(f) for f in _places(cbor2.CBORTag(35, "(a+)+$"))]
    reasons = []
    monkeypatch.setattr(re, "compile", spy)
    for data in frames:
        try:
            decode(data, m.AttestChallenge)
        except RemoteProtocolError as exc:
            reasons.append(exc.reason)
    monkeypatch.undo()  # pytest itself uses re.compile
    assert calls == []
    assert reasons == ["tag"] * len(frames)


def test_many_tiny_items_refused_before_cbor2(monkeypatch):
    # A frame within the byte bound of its type but with far more items than its schema
    # allows: refused by the scan, so cbor2 never builds the list.
    data = cbor2.dumps(["attest-evidence", 1, {"blob": [0] * 50_000}])
    assert len(data) < 140 * 1024

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("cbor2 reached")

    monkeypatch.setattr(cbor2, "loads", boom)
    with pytest.raises(RemoteProtocolError) as e:
        decode(data, m.AttestEvidence)
    monkeypatch.undo()
    assert e.value.reason == "cbor"
    assert "items" in e.value.detail


def test_deep_nesting_is_a_remote_error():
    with pytest.raises(RemoteProtocolError) as e:
        decode(b"\x81" * 60_000 + b"\x00")
    assert e.value.reason == "cbor"


def test_valid_messages_still_decode():
    assert decode(encode(EVIDENCE), m.AttestEvidence) == EVIDENCE
    assert decode(encode(m.AttestChallenge(NONCE))) == m.AttestChallenge(NONCE)


# Garbage in gives a message or RemoteProtocolError, never anything else.
valid = st.sampled_from([encode(EVIDENCE), encode(m.AttestChallenge(NONCE)),
                         encode(m.PeersRequest(10)), encode(m.Goodbye("bye"))])


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 2))
        i = draw(st.integers(0, len(data)))
        if op == 0 and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            # 0xc0..0xdb: a tag header, the mutation most likely to hit a tag decoder.
            data[i:i] = bytes([draw(st.integers(0xC0, 0xDB))]) + draw(st.binary(max_size=9))
        elif i < len(data):
            del data[i]
    return bytes(data)


@given(st.one_of(st.binary(max_size=300), mutated()))
@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
def test_garbage_is_a_remote_protocol_error_or_a_message(data):
    for expected in (None, m.AttestEvidence, (m.AttestChallenge, m.PeersRequest)):
        try:
            decode(data, expected)
        except RemoteProtocolError as exc:
            assert exc.reason in {"size", "tag", "cbor", "envelope", "unexpected", "version",
                                  "schema", "bounds", "invalid"}
