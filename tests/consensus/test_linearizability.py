"""The checker itself: it must accept linearizable histories and catch classic anomalies."""

from __future__ import annotations

import math
import random

from tests.consensus.linearizability import HistOp, check


def put(v: int, call: float, ret: float = math.inf, key: str = "k") -> HistOp:
    return HistOp("put", key, v, call, ret)


def get(v: int | None, call: float, ret: float, key: str = "k") -> HistOp:
    return HistOp("get", key, v, call, ret)


def test_sequential_history() -> None:
    assert check([get(None, 0, 1), put(1, 2, 3), get(1, 4, 5), put(2, 6, 7), get(2, 8, 9)]).ok


def test_stale_read_is_caught() -> None:
    # put(2) completed before the read started, yet the read saw 1.
    assert not check([put(1, 0, 1), put(2, 2, 3), get(1, 4, 5)]).ok


def test_concurrent_write_may_go_either_way() -> None:
    assert check([put(1, 0, 10), get(None, 1, 2), get(1, 3, 4)]).ok
    assert check([put(1, 0, 10), put(2, 0, 10), get(2, 11, 12)]).ok
    assert check([put(1, 0, 10), put(2, 0, 10), get(1, 11, 12)]).ok


def test_read_cannot_flip_back() -> None:
    # Two sequential reads during a concurrent write: new value then old value is illegal.
    assert not check([put(1, 0, 1), put(2, 2, 20), get(2, 3, 4), get(1, 5, 6)]).ok


def test_unknown_outcome_write() -> None:
    # A timed-out write may have taken effect ...
    assert check([put(1, 0, 1), put(2, 2), get(2, 5, 6)]).ok
    # ... or not,
    assert check([put(1, 0, 1), put(2, 2), get(1, 5, 6)]).ok
    # but never a value nobody wrote.
    assert not check([put(1, 0, 1), put(2, 2), get(3, 5, 6)]).ok


def test_keys_are_independent() -> None:
    assert check([put(1, 0, 1, "a"), put(2, 0, 1, "b"), get(1, 2, 3, "a"), get(2, 2, 3, "b")]).ok
    assert not check([put(1, 0, 1, "a"), get(1, 2, 3, "b")]).ok


def test_random_sequential_histories_pass_and_mutations_fail() -> None:
    rng = random.Random(5)
    for _ in range(200):
        t, value, hist = 0.0, None, []
        for i in range(12):
            if rng.random() < 0.5:
                value = i
                hist.append(put(i, t, t + 1))
            else:
                hist.append(get(value, t, t + 1))
            t += 2
        assert check(hist).ok
        reads = [i for i, op in enumerate(hist) if op.kind == "get"]
        if reads:
            j = rng.choice(reads)
            bad = HistOp("get", "k", 999, hist[j].call, hist[j].ret)
            assert not check([*hist[:j], bad, *hist[j + 1:]]).ok
