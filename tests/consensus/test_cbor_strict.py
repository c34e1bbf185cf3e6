"""consensus/cbor_strict.py: no CBOR tag ever reaches cbor2's object builders.

The scanner is checked against cbor2 itself: what it accepts cbor2 decodes to the same value,
garbage gives a value or CborRefused and nothing else, and a tag anywhere is refused.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consensus import cbor_strict as cs
from consensus.state import (
    CORE_REGISTRY,
    InvalidCommand,
    SwarmState,
    decode_state,
    encode_state,
)

# Every tag cbor2 6.x gives a meaning to, one it does not know, and a huge one.
KNOWN_TAGS = (0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
              1004, 55799)
ALL_TAGS = (*KNOWN_TAGS, 1234, 2 ** 40, 2 ** 64 - 1)


def _tagged_payload(tag: int) -> Any:
    # Content that cbor2 would happily turn into an object for this tag.
    return {0: "2020-01-01T00:00:00Z", 1: 0, 2: b"\x01", 3: b"\x01", 4: [1, 5], 5: [1, 5],
            24: b"\x01", 25: 0, 28: [1], 29: 0, 30: [1, 2], 35: "a+", 36: "text/plain",
            37: bytes(16), 52: bytes(4), 54: bytes(16), 100: 0, 256: ["x"], 258: [1, 2],
            260: bytes(4), 261: {bytes(4): 24}, 1004: "2020-01-01", 55799: 0}.get(tag, 0)


def _nestings(inner: Any) -> list[Any]:
    """``inner`` at the top, in an array, as a map value, deep inside a message body."""
    return [inner, [inner], {"k": inner}, ["name", 1, {"a": [1, {"b": (inner,)}], "c": 2}]]


@pytest.mark.parametrize("tag", ALL_TAGS)
def test_every_tag_anywhere_is_refused_with_reason_tag(tag):
    for value in _nestings(cbor2.CBORTag(tag, _tagged_payload(tag))):
        data = cbor2.dumps(value)
        with pytest.raises(cs.CborRefused) as e:
            cs.scan(data)
        assert e.value.reason == "tag"
        with pytest.raises(cs.CborRefused) as e:
            cs.loads(data)
        assert e.value.reason == "tag"


def test_tag_as_map_key_and_in_tag_content_refused():
    for value in ({cbor2.CBORTag(2, b"\x01"): 1}, cbor2.CBORTag(55799, cbor2.CBORTag(35, "x"))):
        with pytest.raises(cs.CborRefused) as e:
            cs.loads(cbor2.dumps(value))
        assert e.value.reason == "tag"


def test_tag_35_never_compiles_a_regular_expression(monkeypatch):
    calls: list[Any] = []

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        raise AssertionError("re.compile reached from CBOR")

    data = cbor2.dumps(["x", 1, {"a": cbor2.CBORTag(35, "(a+)+$")}])
    # cbor2 looks re.compile up at call time: without the scan the spy records the call.
    monkeypatch.setattr(re, "compile", spy)
    errors: list[Exception] = []
    for decoder in (cs.loads, CORE_REGISTRY.decode, decode_state):
        try:
            decoder(data)
        except (cs.CborRefused, InvalidCommand) as exc:
            errors.append(exc)
    monkeypatch.undo()  # pytest itself uses re.compile
    assert calls == []
    assert [str(e).split(":")[0] for e in errors] == ["tag", "cbor", "state tag"]
    assert str(errors[1]).startswith("cbor: tag")


def test_decode_state_refuses_tags():
    body = cbor2.loads(encode_state(SwarmState()))
    body["ext"] = {"x": cbor2.CBORTag(258, [1, 2])}
    with pytest.raises(InvalidCommand, match="state tag"):
        decode_state(cbor2.dumps(body, canonical=True))
    # The same state without the tag decodes.
    body["ext"] = {"x": [1, 2]}
    assert decode_state(cbor2.dumps(body, canonical=True)).ext == {"x": [1, 2]}


@pytest.mark.parametrize("data,detail", [
    (b"", "truncated"),
    (b"\x82\x01", "past the end"),
    (b"\x82\x41\x00", "truncated"),
    (b"\x01\x02", "trailing"),
    (b"\x9f\x01\xff", "indefinite"),
    (b"\x5f\x41\x00\xff", "indefinite"),
    (b"\xff", "simple value 31"),
    (b"\xf7", "simple value 23"),  # undefined
    (b"\xf8\x20", "simple value 24"),
    (b"\xe0", "simple value 0"),
    (b"\x1c", "reserved"),
    (b"\x5a\xff\xff\xff\xff", "past the end"),
    (b"\x9b" + b"\xff" * 8, "past the end"),
    (b"\xbb" + b"\x7f" + b"\xff" * 7, "past the end"),
    (b"\x62\xc3\x28", "UTF-8"),
    (b"\x19\x01", "truncated argument"),
    (b"\xfb\x00", "truncated float"),
])
def test_malformed_items_refused(data, detail):
    with pytest.raises(cs.CborRefused) as e:
        cs.scan(data)
    assert e.value.reason == "cbor"
    assert detail in e.value.detail


def test_depth_and_item_bounds():
    deep: Any = 0
    for _ in range(cs.MAX_DEPTH):
        deep = [deep]
    assert cs.loads(cbor2.dumps(deep)) == deep
    with pytest.raises(cs.CborRefused, match="nesting deeper"):
        cs.loads(cbor2.dumps([deep]))
    # The reported attack: very deep nesting raises nothing but CborRefused, with no recursion.
    with pytest.raises(cs.CborRefused, match="nesting deeper"):
        cs.loads(b"\x81" * 100_000 + b"\x00")
    with pytest.raises(cs.CborRefused, match="more than 10 items"):
        cs.scan(cbor2.dumps(list(range(10))), max_items=10)
    cs.scan(cbor2.dumps(list(range(9))), max_items=10)


def test_duplicate_map_keys_refused():
    with pytest.raises(cs.CborRefused) as e:
        cs.loads(b"\xa2\x61a\x01\x61a\x02")
    assert e.value.reason == "cbor"


# ------------------------------------------------------------------ property tests


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.binary(max_size=40),
    st.text(max_size=20), st.floats(allow_nan=False),
)
plain = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30,
)


@given(plain)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_tag_free_values_round_trip(value):
    data = cbor2.dumps(value, canonical=True)
    cs.scan(data)
    assert cs.loads(data) == value


@given(plain, st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_tag_inserted_anywhere_is_refused(value, data):
    tag = data.draw(st.sampled_from(ALL_TAGS))

    def insert(v: Any) -> Any:
        # Walk down a random path and wrap what is there in the tag.
        if isinstance(v, list) and v and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(v) - 1))
            return [*v[:i], insert(v[i]), *v[i + 1:]]
        if isinstance(v, dict) and v and data.draw(st.booleans()):
            k = data.draw(st.sampled_from(sorted(v)))
            return {**v, k: insert(v[k])}
        return cbor2.CBORTag(tag, v)

    encoded = cbor2.dumps(insert(value))
    with pytest.raises(cs.CborRefused) as e:
        cs.loads(encoded)
    assert e.value.reason == "tag"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _mutated(draw: Any) -> bytes:
    base = bytearray(cbor2.dumps(draw(plain), canonical=True))
    for _ in range(draw(st.integers(0, 4))):
        if base and draw(st.booleans()):
            base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
        else:
            base.insert(draw(st.integers(0, len(base))), draw(st.integers(0, 255)))
    return bytes(base)


garbage = st.one_of(st.binary(max_size=200), st.composite(_mutated)())


@given(garbage)
@example(bytes.fromhex("a181a1000000"))  # {[{0: 0}]: 0}: cbor2 freezes the key's inner map
@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
def test_garbage_gives_a_value_or_cbor_refused_and_agrees_with_cbor2(data):
    try:
        value = cs.loads(data)
    except cs.CborRefused as exc:
        assert exc.reason in ("tag", "cbor")
        return
    # Whatever the scan lets through, plain cbor2 reads the same way, and it is plain data.
    assert _same(cbor2.loads(data), value)

    def plain_only(v: Any) -> bool:
        if isinstance(v, list):
            return all(plain_only(x) for x in v)
        if isinstance(v, (dict, cbor2.frozendict)):  # cbor2 freezes a map inside a map key
            return all(plain_only(k) and plain_only(x) for k, x in v.items())
        return v is None or (type(v) in (bool, int, float, bytes, str, tuple, frozenset) and (
            not isinstance(v, (tuple, frozenset)) or all(plain_only(x) for x in v)))

    assert plain_only(value)


@given(garbage)
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_state_and_command_decoders_on_garbage(data):
    for decoder in (decode_state, CORE_REGISTRY.decode):
        with contextlib.suppress(InvalidCommand):
            decoder(data)
