"""The consensus messages go through the project wire codec (registered at the edge)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import messages as cm
from node.manager_wire import register_consensus_messages
from overlay import wire
from overlay.errors import RemoteProtocolError

# The node registers the consensus messages with the codec at the edge; use the same function.
register_consensus_messages()

ids = st.integers(min_value=1, max_value=2**63)
nat = st.integers(min_value=0, max_value=2**63)
entries = st.builds(cm.Entry, term=nat, index=ids, kind=st.sampled_from(cm.ENTRY_KINDS),
                    data=st.binary(max_size=64))
confs = st.builds(
    lambda v, r: cm.ConfState(voters=tuple(sorted(v)), removed=tuple(sorted(r - v))),
    st.sets(ids, max_size=7), st.sets(ids, max_size=5))
snapshots = st.builds(cm.Snapshot, meta=st.builds(cm.SnapshotMeta, index=nat, term=nat, conf=confs),
                      data=st.binary(max_size=256))


@st.composite
def appends(draw: st.DrawFn) -> cm.AppendEntries:
    prev = draw(st.integers(0, 2**40))
    es = tuple(dataclasses.replace(e, index=prev + 1 + i)
               for i, e in enumerate(draw(st.lists(entries, max_size=5))))
    return cm.AppendEntries(sender=draw(ids), to=draw(ids), term=draw(nat), prev_index=prev,
                            prev_term=draw(nat), entries=es, commit=draw(nat))


messages = st.one_of(
    st.builds(cm.VoteRequest, sender=ids, to=ids, term=nat, last_log_index=nat,
              last_log_term=nat, pre=st.booleans(), transfer=st.booleans()),
    st.builds(cm.VoteResponse, sender=ids, to=ids, term=nat, reject=st.booleans(),
              pre=st.booleans()),
    appends(),
    st.builds(cm.AppendResponse, sender=ids, to=ids, term=nat, index=nat, reject=st.booleans(),
              reject_hint=nat, hint_term=nat),
    st.builds(cm.Heartbeat, sender=ids, to=ids, term=nat, commit=nat),
    st.builds(cm.HeartbeatResponse, sender=ids, to=ids, term=nat),
    st.builds(cm.InstallSnapshot, sender=ids, to=ids, term=nat, snapshot=snapshots),
    st.builds(cm.TimeoutNow, sender=ids, to=ids, term=nat),
    st.builds(cm.HardState, term=nat, vote=st.none() | ids, commit=nat),
)


def test_every_class_has_a_wire_name() -> None:
    assert set(cm.WIRE_NAMES) == set(cm.ALL_MESSAGES) == set(cm.WIRE_MAX_BYTES)
    assert all(n.startswith("raft-") for n in cm.WIRE_NAMES.values())
    assert len(set(cm.WIRE_NAMES.values())) == len(cm.WIRE_NAMES)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(m: Any) -> None:
    assert wire.decode(wire.encode(m)) == m


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_fuzz_mutations_never_crash(m: Any, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(m))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        out = wire.decode(bytes(raw), (*cm.MESSAGE_TYPES, cm.HardState))
    except RemoteProtocolError:
        return
    assert type(out) in cm.ALL_MESSAGES


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_garbage(raw: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        wire.decode(raw, cm.MESSAGE_TYPES)


def test_schema_violations_are_remote_errors() -> None:
    import cbor2

    bad = [
        ["raft-append", 1, {"sender": 1, "to": 2, "term": 1, "prev_index": 5, "prev_term": 1,
                             "entries": [{"term": 1, "index": 9, "kind": "normal", "data": b""}],
                             "commit": 0}],  # non-contiguous entries
        ["raft-vote", 1, {"sender": 0, "to": 2, "term": 1, "last_log_index": 0,
                           "last_log_term": 0, "pre": False, "transfer": False}],  # id 0
        ["raft-entry", 1, {"term": 1, "index": 1, "kind": "weird", "data": b""}],
    ]
    for body in bad:
        with pytest.raises(RemoteProtocolError):
            wire.decode(cbor2.dumps(body))


def test_conf_change_encoding_is_strict() -> None:
    cc = cm.ConfChange(cm.CONF_ADD, 7)
    assert cm.ConfChange.decode(cc.encode()) == cc
    for raw in (b"add 07", b"add  7", b"drop 7", b"add 0", b"add -1", b"\xff", b"add"):
        with pytest.raises(ValueError):
            cm.ConfChange.decode(raw)
