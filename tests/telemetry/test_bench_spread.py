"""bench/spread.py: the ratio's interval and the verdict the metrics benchmark prints."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.spread import quartiles, ratio_ci, verdict


def test_identical_arms_give_ratio_one_with_a_point_interval() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ratio_ci(xs, xs) == (1.0, 1.0, 1.0)


def test_a_constant_factor_is_recovered_exactly() -> None:
    off = [10.0, 11.0, 9.0, 12.0, 10.5, 9.5]
    ratio, lo, hi = ratio_ci(off, [1.5 * x for x in off])
    assert abs(ratio - 1.5) < 1e-9 and abs(lo - 1.5) < 1e-9 and abs(hi - 1.5) < 1e-9


@given(st.lists(st.floats(0.1, 100.0), min_size=2, max_size=30),
       st.lists(st.floats(0.1, 100.0), min_size=2, max_size=30))
def test_the_interval_holds_the_point_ratio(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    ratio, lo, hi = ratio_ci(a[:n], b[:n], resamples=200)
    assert 0 < lo <= hi
    # every resampled median lies within the arm's range, so every ratio does too
    bound_lo, bound_hi = min(b[:n]) / max(a[:n]), max(b[:n]) / min(a[:n])
    for r in (ratio, lo, hi):
        assert bound_lo * (1 - 1e-9) <= r <= bound_hi * (1 + 1e-9)
    q1, q2, q3 = quartiles(a)
    eps = 1e-9 * max(a)  # interpolation rounds
    assert min(a) - eps <= q1 <= q2 + eps and q2 <= q3 + eps and q3 <= max(a) + eps


def test_verdicts() -> None:
    assert "MET" in verdict(0.98, 1.02, 1.03)
    assert "NOT met" in verdict(1.05, 1.2, 1.03)
    assert "CANNOT TELL" in verdict(0.99, 1.08, 1.03)
