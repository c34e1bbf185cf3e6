"""Built-in aggregations: exact, associative where claimed, malformed outputs named by fragment."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tasks.aggregate import AggregationError, aggregate, render

decimals = st.builds(lambda n, p: render(Fraction(n, 10**p)), st.integers(-10**12, 10**12), st.integers(0, 6))
number_outputs = st.lists(st.lists(decimals, max_size=5).map(lambda xs: " ".join(xs).encode()),
                          min_size=1, max_size=6)
words = st.sampled_from(["a", "b", "the", "é", "zz", "0"])
count_maps = st.lists(st.dictionaries(words, st.integers(0, 1000), max_size=5)
                      .map(lambda d: json.dumps(d).encode()), min_size=1, max_size=6)


def split_point(data: st.DataObject, outs: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    k = data.draw(st.integers(0, len(outs)))
    return outs[:k], outs[k:]


@settings(max_examples=200, deadline=None)
@given(number_outputs, st.data())
def test_sum_min_max_are_exact_and_associative(outs: list[bytes], data: st.DataObject) -> None:
    values = [Fraction(t.decode()) for o in outs for t in o.split()]
    assert aggregate("sum", outs) == (render(sum(values, Fraction(0))) + "\n").encode()
    a, b = split_point(data, outs)
    assert aggregate("sum", [aggregate("sum", a), aggregate("sum", b)]) == aggregate("sum", outs)
    if values:
        for kind, fn in (("min", min), ("max", max)):
            assert aggregate(kind, outs) == (render(fn(values)) + "\n").encode()
            parts = [aggregate(kind, p) for p in (a, b) if any(o.split() for o in p)]
            assert aggregate(kind, parts) == aggregate(kind, outs)


@settings(max_examples=200, deadline=None)
@given(count_maps, st.data())
def test_merge_counts_equals_a_counter_over_all_input_and_is_associative(outs: list[bytes],
                                                                        data: st.DataObject) -> None:
    expected: Counter[str] = Counter()
    for o in outs:
        expected.update(json.loads(o))
    assert json.loads(aggregate("merge-counts", outs)) == dict(expected)
    a, b = split_point(data, outs)
    assert aggregate("merge-counts", [aggregate("merge-counts", a), aggregate("merge-counts", b)]) == \
        aggregate("merge-counts", outs)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(words, max_size=8), min_size=1, max_size=5))
def test_histogram_results_are_merge_counts_inputs(frags: list[list[str]]) -> None:
    outs = ["\n".join(ws).encode() for ws in frags]
    whole = aggregate("histogram", outs)
    assert json.loads(whole) == dict(Counter(w for ws in frags for w in ws))
    assert aggregate("merge-counts", [aggregate("histogram", [o]) for o in outs]) == whole


def test_histogram_with_bins() -> None:
    out = aggregate("histogram", [b"0.1\n0.6\n1.2\n", b"-0.2\n1.49\n"], bin_width="0.5")
    assert json.loads(out) == {"-0.5": 1, "0": 1, "0.5": 1, "1": 2}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-1000, 1000), min_size=1, max_size=20), min_size=1, max_size=6))
def test_mean_is_from_sums_and_counts_not_an_average_of_averages(frags: list[list[int]]) -> None:
    outs = [f"{sum(xs)} {len(xs)}\n".encode() for xs in frags]
    allv = [x for xs in frags for x in xs]
    assert aggregate("mean", outs) == (render(Fraction(sum(allv), len(allv)), 18) + "\n").encode()


def test_mean_differs_from_the_average_of_averages() -> None:
    # Fragment 0: one value 10; fragment 1: three values 0. Mean 2.5, average of averages 5.
    assert aggregate("mean", [b"10 1\n", b"0 3\n"]) == b"2.5\n"
    assert aggregate("mean", [b"1 3\n"]) == b"0.333333333333333333\n"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=6), st.data())
def test_concat_and_count(outs: list[bytes], data: st.DataObject) -> None:
    assert aggregate("concat", outs) == b"".join(outs)
    a, b = split_point(data, outs)
    assert aggregate("concat", [aggregate("concat", a), aggregate("concat", b)]) == aggregate("concat", outs)
    counts = [str(len(o)).encode() for o in outs]
    assert aggregate("count", counts) == f"{sum(map(len, outs))}\n".encode()


@pytest.mark.parametrize(("kind", "outs", "fragment"), [
    ("sum", [b"1", b"2 x"], 1),
    ("sum", [b"1e5"], 0),
    ("count", [b"3", b"-1"], 1),
    ("count", [b"1 2"], 0),
    ("mean", [b"1 2", b"3"], 1),
    ("min", [b"nan"], 0),
    ("merge-counts", [b"{}", b"[1]"], 1),
    ("merge-counts", [b'{"a": 1.5}'], 0),
    ("merge-counts", [b'{"a": -1}'], 0),
    ("merge-counts", [b'{"a": true}'], 0),
    ("merge-counts", [b'{"a": 1, "a": 2}'], 0),
    ("merge-counts", [b'{"a": NaN}'], 0),
    ("histogram", [b"ok", b"\xff"], 1),
])
def test_malformed_outputs_name_the_fragment(kind: str, outs: list[bytes], fragment: int) -> None:
    with pytest.raises(AggregationError) as exc:
        aggregate(kind, outs)
    assert exc.value.fragment == fragment and f"fragment {fragment}" in str(exc.value)


def test_unknown_kinds_and_empty_inputs() -> None:
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate("median", [b"1"])
    with pytest.raises(ValueError, match="min of no values"):
        aggregate("min", [b"", b"  "])
    with pytest.raises(ValueError, match="mean of no values"):
        aggregate("mean", [b""])
    assert aggregate("sum", []) == b"0\n" and aggregate("merge-counts", [b""]) == b"{}\n"


def test_render() -> None:
    assert [render(Fraction(x)) for x in ("0", "-0.50", "12.340", "100")] == ["0", "-0.5", "12.34", "100"]
    assert render(Fraction(2, 3), 3) == "0.667" and render(Fraction(-1, 8), 2) == "-0.12"
