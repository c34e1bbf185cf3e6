"""task-* wire messages (node/tasks/wire.py) and the capability record: every message round
trips within its bound, semantic checks refuse what they promise to, and every decoder meets
garbage, mutated encodings and schema-shaped bodies of arbitrary values with either a valid
message or RemoteProtocolError, never another exception."""

from __future__ import annotations

import dataclasses
import os

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks import capability
from node.tasks import wire as w
from overlay.errors import RemoteProtocolError
from overlay.wire import decode, encode, registered, spec_of
from tests.strategies import cbor_values

TYPES = sorted((n, c) for n, c in registered().items()
               if n.startswith("task-") or n.startswith("capability-"))
H = os.urandom(32)
SIG = os.urandom(64)
PEER = "12D3KooW" + "a" * 44


def examples() -> list[object]:
    return [
        w.TaskReply(True, "", "accepted"),
        w.TaskChunk(os.urandom(1000)),
        w.SubmitRequest(os.urandom(500), 60),
        w.AssignRequest("job-1", 3, 1, PEER, H, H, 10_000, 10**9, 64, 5000, 1 << 20, 7),
        w.FetchRequest("job-1", 3, 1, True, False),
        w.FetchReply(True, "", 1000, 2000),
        w.ResultReport("job-1", 3, 1, True, "", "", H, H, H, 10, 5, 1 << 20, 12, b"warn", SIG),
        w.ResultReport("job-1", 3, 1, False, "trap", "unreachable", H, H,
                       w.failure_digest("trap", "unreachable"), 0, 5, 0, 1, b"", SIG),
        w.DeliverRequest("job-1", "done", "", H, 100),
        w.DeliverRequest("job-1", "failed", "fragment 2: out of fuel", b"", 0),
        w.CancelRequest("job-1", "changed my mind"),
        w.LogsRequest("job-1", 4),
        w.LogEntry(1, 0, PEER, b"stderr"),
        w.LogsReply(True, "", (w.LogEntry(1, 0, PEER, b"x"),), True, "waiting for capacity"),
        capability.Link(PEER, 3, 1024),
        w.BudgetRequest(os.urandom(300)),
    ]


def test_every_message_round_trips_within_its_bound():
    seen = set()
    for msg in examples():
        data = encode(msg)
        name, _, bound = spec_of(type(msg))
        assert len(data) <= bound
        assert decode(data, type(msg)) == msg
        seen.add(name)
    assert seen >= {n for n, _ in TYPES} - {"capability-record"}  # its own test file


@pytest.mark.parametrize(("msg", "why"), [
    (w.AssignRequest("bad id!", 0, 0, PEER, H, H, 1, 1, 1, 1, 1, 0), "invalid"),
    (w.AssignRequest("j", 0, 0, PEER, H, H, w.MAX_TASK_FRAGMENT_BYTES + 1, 1, 1, 1, 1, 0), "invalid"),
    (w.FetchReply(True, "", w.MAX_MODULE_BYTES + 1, 0), "too-large"),
    (w.ResultReport("j", 0, 0, False, "trap", "", H, H, H, 0, 0, 0, 0, b"", SIG), "invalid"),
    (w.ResultReport("j", 0, 0, False, "trap", "x", H, H, H, 5, 0, 0, 0, b"", SIG), "invalid"),
    (w.ResultReport("j", 0, 0, True, "", "", H, H, H, w.MAX_OUTPUT_BYTES + 1, 0, 0, 0, b"", SIG),
     "too-large"),
    (w.DeliverRequest("j", "exploded", "", H, 0), "invalid"),
    (w.DeliverRequest("j", "done", "", b"", 10), "invalid"),
    (w.DeliverRequest("j", "failed", "x", b"", 10), "invalid"),
    (w.DeliverRequest("j", "done", "", H, w.MAX_RESULT_BYTES + 1), "too-large"),
    (w.TaskChunk(b""), "invalid"),
    (w.CancelRequest("", ""), "invalid"),
])
def test_semantic_checks_refuse_on_decode(msg, why):
    """Encoded by hand (our encoder refuses them too), decoded as a peer's frame would be."""
    name, version, _ = spec_of(type(msg))

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return [plain(x) for x in v] if isinstance(v, tuple) else v

    with pytest.raises(RemoteProtocolError) as exc:
        decode(cbor2.dumps([name, version, plain(msg)]), type(msg))
    assert exc.value.reason == why


@pytest.mark.parametrize("cls", [c for _, c in TYPES], ids=[n for n, _ in TYPES])
@given(data=st.binary(max_size=600))
@settings(deadline=None, max_examples=150)
def test_fuzz_garbage_frames(cls, data):
    with pytest.raises(RemoteProtocolError):
        decode(data, cls)


@pytest.mark.parametrize("cls", [c for _, c in TYPES], ids=[n for n, _ in TYPES])
@given(draw=st.data())
@settings(deadline=None, max_examples=120)
def test_fuzz_structured_bodies(cls, draw):
    """Right name and version, the schema's field names, values arbitrary: a valid message of
    the type or RemoteProtocolError."""
    name, version, _ = spec_of(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    body = draw.draw(st.fixed_dictionaries({n: cbor_values for n in names})
                     | st.dictionaries(st.sampled_from([*names, "extra"]), cbor_values))
    try:
        msg = decode(cbor2.dumps([name, version, body]), cls)
    except RemoteProtocolError:
        return
    assert type(msg) is cls
    assert decode(encode(msg), cls) == msg


@given(st.sampled_from(range(16)), st.data())
@settings(deadline=None, max_examples=300)
def test_fuzz_mutated_encodings(which, draw):
    """A valid encoding with bytes flipped, inserted or cut: decoded or refused, never a crash."""
    msg = examples()[which % len(examples())]
    data = bytearray(encode(msg))
    for _ in range(draw.draw(st.integers(1, 6))):
        op = draw.draw(st.sampled_from(["flip", "insert", "cut"]))
        at = draw.draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw.draw(st.integers(1, 255))
        elif op == "insert":
            data.insert(at, draw.draw(st.integers(0, 255)))
        elif data:
            del data[at:]
    try:
        out = decode(bytes(data), type(msg))
    except RemoteProtocolError:
        return
    assert type(out) is type(msg)


# --------------------------------------------------------------------------- private queries


def test_a_private_query_round_trips_and_refuses_what_is_not_one():
    from node.tasks.private_query import PrivacyError, PrivateQuery, decode_query, encode_query

    q = PrivateQuery("census/2026", "histogram", 0.25, categories=("a", "b"), contributions=3)
    assert decode_query(encode_query(q)) == q
    for bad in (b"", cbor2.dumps([1, "d", "count"]), cbor2.dumps([2, "d", "count", 1.0, None, None, [], 1]),
                cbor2.dumps([1, "d", "count", "1.0", None, None, [], 1]),
                cbor2.dumps([1, "d", "count", -1.0, None, None, [], 1]),
                cbor2.dumps([1, "d", "sum", 1.0, None, None, [], 1]),
                cbor2.dumps([1, "d", "count", 1.0, None, None, [], 0]),
                cbor2.dumps([1, "d", "count", 1.0, None, None, [], True]),
                b"\xff" * 20000):
        with pytest.raises(PrivacyError):
            decode_query(bad)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), cbor_values.map(lambda v: cbor2.dumps(v)),
                 st.lists(cbor_values, min_size=8, max_size=8).map(
                     lambda v: cbor2.dumps([1, *v[1:]]))))
def test_fuzz_private_queries(data):
    """A committed query is decoded by every manager: garbage is a PrivacyError, never a crash."""
    from node.tasks.private_query import PrivacyError, PrivateQuery, decode_query

    try:
        q = decode_query(data)
    except PrivacyError:
        return
    assert isinstance(q, PrivateQuery) and q.problems() == []
