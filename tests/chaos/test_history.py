"""node/chaos/history.py: the history's lines round-trip; hostile lines are refused and counted."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from node.chaos.history import MAX_LINE_BYTES, Recorder, pair, parse_lines

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=12)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "get", "status", "submit"]),
                              st.sampled_from(["ok", "fail", "info", None]), json_values, json_values),
                    max_size=20))
def test_round_trip_and_pairing(ops):
    rec = Recorder()
    lines, expected = [], []
    t = 0.0
    for f, typ, arg, res in ops:
        inv = rec.invoke("c0", f, t, 1, arg)
        lines.append(inv.to_line())
        t += 0.5
        if typ is not None:
            lines.append(Recorder.complete(inv, typ, t, res).to_line())
        expected.append((f, typ or "info", arg, res if typ else None))
    parsed = parse_lines(lines)
    assert parsed.refused == {}
    got = [(o.f, o.type, o.arg, o.result) for o in pair(parsed.events)]
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_garbage_is_refused_never_a_crash(raw):
    parsed = parse_lines([raw])
    assert len(parsed.events) + sum(parsed.refused.values()) <= 1


def test_schema_violations_are_counted_by_reason():
    good = {"index": 0, "process": "c", "type": "ok", "f": "put", "time_s": 1.0, "node": 0, "value": None}
    bad = [
        {**good, "type": "maybe"},
        {**good, "f": "rm -rf"},
        {**good, "index": -1},
        {**good, "node": True},
        {**good, "time_s": "soon"},
        {k: v for k, v in good.items() if k != "value"},
        [1, 2],
    ]
    lines = [json.dumps(b) for b in bad] + ["{", "x" * (MAX_LINE_BYTES + 1), json.dumps(good)]
    parsed = parse_lines(lines)
    assert len(parsed.events) == 1
    assert sum(parsed.refused.values()) == len(bad) + 2
    assert parsed.refused["too-long"] == 1 and parsed.refused["not-json"] == 1


def test_a_completion_without_invocation_is_dropped_and_an_open_invocation_is_info():
    rec = Recorder()
    a = rec.invoke("c", "put", 0.0, 0, {"sha256": "x"})
    b = rec.invoke("c", "get", 1.0, 0, None)
    stray = Recorder.complete(b, "ok", 2.0, None)
    stray = type(stray)(99, *list(stray.__dict__.values())[1:])
    ops = pair(parse_lines([a.to_line(), b.to_line(), Recorder.complete(b, "ok", 2.0, 1).to_line(),
                            stray.to_line()]).events)
    assert [(o.f, o.type, o.complete_s) for o in ops] == [("put", "info", None), ("get", "ok", 2.0)]
    assert ops[1].latency_s == 1.0
