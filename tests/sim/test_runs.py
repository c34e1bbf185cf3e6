"""``--runs N --jobs J`` for the membership scenarios (issue 17, "sweeps"): seeds folded into
one report with confidence intervals, the same report for any J."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import cli, runs
from sim.world import SimConfig, World

CFG = SimConfig(nodes=20, seed=40, scenario="churn", duration_s=6.0, liveness_deadline_s=20.0,
                churn_per_s=0.5)


def _strip(r: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in r.items() if k not in ("wall_time_s", "speedup_x", "cpu_time_s",
                                                    "speedup_cpu_x", "setup_s", "peak_rss_mib")}


def test_a_sweep_folds_the_single_runs_it_replays() -> None:
    sweep = runs.run_many(CFG, 3)
    singles = [World(SimConfig(**{**CFG.__dict__, "seed": 40 + k})).run() for k in range(3)]
    assert sweep["runs"] == 3 and sweep["seeds"] == [40, 42]
    assert [p["trace_digest"] for p in sweep["per_seed"]] == [r["trace_digest"] for r in singles]
    p999 = [r["dissemination"]["p999_s"] for r in singles]
    f = sweep["figures"]["dissemination"]["p999_s"]
    assert f["n"] == 3 and f["mean"] == pytest.approx(statistics.fmean(p999), abs=1e-5)
    half = runs.t975(2) * statistics.stdev(p999) / math.sqrt(3)
    assert f["ci95"] == pytest.approx(half, abs=1e-5)
    assert f["min"] <= f["mean"] <= f["max"]
    assert sweep["invariants"]["checked"] == sum(r["invariants"]["checked"] for r in singles)
    assert sweep["liveness"]["converged_runs"] == sum(r["liveness"]["converged"] for r in singles)


@pytest.mark.process
def test_the_sweep_report_does_not_depend_on_jobs() -> None:
    assert _strip(runs.run_many(CFG, 3, jobs=1)) == _strip(runs.run_many(CFG, 3, jobs=2))


def test_the_command_runs_a_membership_sweep(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    out = tmp_path / "s.json"
    args = p.parse_args(["--engine", "cpython", "--nodes", "15", "--seed", "9", "--duration-s",
                         "3", "--runs", "2", "--json", str(out), "--no-progress"])
    assert cli.run(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("SEED=9") and "runs=2" in text and "95% CI" in text
    r = json.loads(out.read_text())
    assert r["kind"] == "membership-sweep" and r["seeds"] == [9, 10]
    assert r["figures"]["dissemination"]["coverage"]["n"] == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=0,
                max_size=40))
def test_fold_brackets_the_mean(values: list[float]) -> None:
    f = runs.fold(values)
    assert f["n"] == len(values)
    if not values:
        assert f["mean"] is None
        return
    assert f["min"] <= f["mean"] + 1e-4 and f["mean"] <= f["max"] + 1e-4
    assert (f["ci95"] is None) == (len(values) == 1)
    if f["ci95"] is not None:
        assert f["ci95"] >= 0


def test_t_quantiles_fall_towards_the_normal() -> None:
    qs = [runs.t975(df) for df in range(1, 200)]
    assert all(a >= b for a, b in itertools.pairwise(qs))
    assert qs[0] == pytest.approx(12.706) and qs[-1] == pytest.approx(1.96)
    with pytest.raises(ValueError):
        runs.t975(0)
