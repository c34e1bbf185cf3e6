"""Event order versions (issue 17): order 1 replays the digests recorded with the engine before
the change; order 2 (the default) skips deliveries of pushes that would change nothing, and the
report's figures agree with order 1's over a corpus of seeds."""

from __future__ import annotations

import math
import statistics

import pytest

from sim.runs import t975
from sim.world import SimConfig, World

# Recorded with the engine before event order 2 existed (commit 85c271d, compiled and
# interpreted alike): 60 nodes, 15 s + 20 s of liveness.
ORDER_1_DIGESTS = {
    ("steady", 1): "a37f733215c224b922263aba7433f953",
    ("churn", 1): "c1137005032ee68d709077668c33eede",
    ("churn", 2): "a9d3538c9f4bd607ef6970268e4726fd",
}


@pytest.mark.parametrize(("scenario", "seed"), sorted(ORDER_1_DIGESTS))
def test_order_1_replays_the_recorded_digests(scenario: str, seed: int) -> None:
    r = World(SimConfig(nodes=60, seed=seed, scenario=scenario, duration_s=15.0,
                        liveness_deadline_s=20.0, event_order=1)).run()
    assert r["event_order"] == 1 and r["elided_deliveries"] == 0
    assert r["trace_digest"] == ORDER_1_DIGESTS[(scenario, seed)]


def test_order_2_skips_duplicate_deliveries_but_sends_the_same_load() -> None:
    kw = dict(nodes=80, seed=5, duration_s=8.0, liveness_deadline_s=10.0)
    one = World(SimConfig(event_order=1, **kw)).run()
    two = World(SimConfig(event_order=2, **kw)).run()
    assert two["elided_deliveries"] > 0
    assert two["events"] < one["events"]
    assert two["trace_digest"] != one["trace_digest"]
    # A skipped delivery is still a message on the wire: the load is counted at send.
    assert two["events_by_kind"]["GossipPush"] + two["elided_deliveries"] >= \
        one["events_by_kind"]["GossipPush"] * 0.9


def test_unknown_event_order_is_refused() -> None:
    with pytest.raises(ValueError, match="event_order"):
        World(SimConfig(nodes=5, event_order=3))


FIGURES = (("dissemination", "p50_s"), ("dissemination", "p99_s"), ("dissemination", "p999_s"),
           ("dissemination", "coverage"), ("detection", "first_detection_mean_s"),
           ("", "messages_per_node_per_s"), ("", "bytes_per_node_per_s"))


def _figures(scenario: str, order: int, seeds: range) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {f"{s}.{k}": [] for s, k in FIGURES}
    out["converged"] = []
    for seed in seeds:
        r = World(SimConfig(nodes=40, seed=seed, scenario=scenario, duration_s=12.0,
                            liveness_deadline_s=30.0, churn_per_s=0.5,
                            event_order=order)).run()
        # (lossy seed 111 does not converge in order 1 either: a suspicion left standing 30 s
        # after the heal, reported in issue 17's notes; safety invariants hold everywhere)
        assert all(v.split(" ", 1)[1].startswith("liveness")
                   for v in r["invariants"]["violations"]), r["invariants"]["violations"]
        out["converged"].append(float(r["liveness"]["converged"]))
        for s, k in FIGURES:
            v = r[s][k] if s else r[k]
            if v is not None:
                out[f"{s}.{k}"].append(float(v))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["steady", "churn", "lossy", "partition-heal"])
def test_order_2_figures_agree_with_order_1_over_a_corpus_of_seeds(scenario: str) -> None:
    seeds = range(100, 112)
    a, b = _figures(scenario, 1, seeds), _figures(scenario, 2, seeds)
    assert abs(sum(a["converged"]) - sum(b["converged"])) <= 1
    for name, xs in a.items():
        ys = b[name]
        if name == "converged":
            continue
        if len(xs) < 3 or len(ys) < 3:
            continue
        # Welch: the difference of the means within its 95 % interval (plus 1 % of the mean,
        # for figures that barely vary between seeds).
        se = math.sqrt(statistics.variance(xs) / len(xs) + statistics.variance(ys) / len(ys))
        diff = abs(statistics.fmean(xs) - statistics.fmean(ys))
        slack = t975(min(len(xs), len(ys)) - 1) * se + 0.01 * abs(statistics.fmean(xs))
        assert diff <= slack, (name, statistics.fmean(xs), statistics.fmean(ys), se)


def test_order_2_figures_agree_with_order_1_fast_twin() -> None:
    a, b = _figures("churn", 1, range(100, 104)), _figures("churn", 2, range(100, 104))
    for name in ("dissemination.p999_s", "dissemination.coverage",
                 ".messages_per_node_per_s"):
        ma, mb = statistics.fmean(a[name]), statistics.fmean(b[name])
        assert abs(ma - mb) <= 0.1 * ma, (name, ma, mb)
