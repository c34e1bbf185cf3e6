"""Spread and a verdict for an on/off cost ratio measured in one run (bench_metrics).

The arms' rounds are paired (round i ran both, in alternating order), so the bootstrap
resamples pairs: each resample draws ``len(off)`` round indices with replacement and takes
``median(on) / median(off)`` over them; the 2.5th and 97.5th percentiles of those ratios are
the 95 % interval. The verdict compares the whole interval with the goal: below it, met;
above it, not met; across it, the run cannot tell (more rounds, or a quieter machine).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) of ``xs`` (at least one value)."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def ratio_ci(off: Sequence[float], on: Sequence[float], *, resamples: int = 4000,
             seed: int = 1) -> tuple[float, float, float]:
    """``median(on) / median(off)`` and its 95 % bootstrap interval over paired rounds."""
    if len(off) != len(on) or not off:
        raise ValueError("paired rounds: off and on need the same, nonzero, length")
    ratio = statistics.median(on) / statistics.median(off)
    rng = random.Random(seed)
    n = len(off)
    ratios = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(on[i] for i in idx) / statistics.median(off[i] for i in idx))
    ratios.sort()
    return ratio, ratios[int(0.025 * (resamples - 1))], ratios[int(0.975 * (resamples - 1))]


def verdict(lo: float, hi: float, goal: float) -> str:
    if hi <= goal:
        return f"goal <= {goal:g}x MET (the whole 95% interval is below it)"
    if lo > goal:
        return f"goal <= {goal:g}x NOT met (the whole 95% interval is above it)"
    return (f"CANNOT TELL whether the goal <= {goal:g}x is met: the 95% interval spans it "
            "(more rounds or a quieter machine)")
