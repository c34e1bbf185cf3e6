"""Many seeded runs of the membership world folded into one report (issue 17, "sweeps").

``enclave-swarm sim --scenario churn --runs 20 --jobs 2 --seed S`` runs the seeds
``S, S+1, …, S+N-1`` (any of them replays alone with ``--seed``) on ``J`` processes and folds
them, in seed order (so the report does not depend on ``J``), into one report: every figure of
the single-run report that is a number becomes ``{"mean", "stdev", "ci95", "min", "max", "n"}``
over the runs that have it, where ``ci95`` is the half-width of the 95 % confidence interval of
the mean (Student's t with n - 1 degrees of freedom: the runs are independent seeds). Counters
(invariant checks, events, messages) are summed; violations keep their seed; the trace digest
is a digest of the runs' digests in seed order.

A parameter choice is judged by whether the intervals of two sweeps overlap, not by one seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from sim.world import SimConfig, World

SWEEP_VERSION = 1
MAX_VIOLATIONS_KEPT = 100

#: The folded figures: (section, key) of the single-run report.
FIGURES: tuple[tuple[str, str], ...] = (
    ("dissemination", "p50_s"),
    ("dissemination", "p99_s"),
    ("dissemination", "p999_s"),
    ("dissemination", "p999_max_s"),
    ("dissemination", "p999_rounds"),
    ("dissemination", "coverage"),
    ("dissemination", "unreached_p999"),
    ("revocation", "p999_s"),
    ("revocation", "coverage"),
    ("detection", "crashes_detected"),
    ("detection", "first_detection_mean_s"),
    ("detection", "first_detection_p50_s"),
    ("detection", "first_detection_p99_s"),
    ("detection", "first_detection_mean_probe_periods"),
    ("detection", "first_detection_swim_periods"),
    ("detection", "false_positives"),
    ("detection", "false_suspicions"),
    ("liveness", "converged_after_s"),
    ("", "messages_per_node_per_s"),
    ("", "bytes_per_node_per_s"),
)

# Two-sided 95 % quantiles of Student's t, degrees of freedom 1..30; beyond, the normal's 1.96
# is within 2 % (120 df: 1.980).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    if df <= 60:
        return 2.042 - (df - 30) * (2.042 - 2.000) / 30  # linear between the table's ends
    if df <= 120:
        return 2.000 - (df - 60) * (2.000 - 1.980) / 60
    return 1.960


def fold(values: list[float]) -> dict[str, Any]:
    """Mean, spread and the 95 % confidence half-width of the mean of ``values``."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "stdev": None, "ci95": None, "min": None, "max": None}
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    ci = t975(n - 1) * sd / math.sqrt(n) if n > 1 else None
    return {"n": n, "mean": _r(mean), "stdev": _r(sd), "ci95": _r(ci), "min": _r(min(values)),
            "max": _r(max(values))}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def _figure(r: dict[str, Any], section: str, key: str) -> float | None:
    v = r.get(key) if not section else r.get(section, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def run_one(cfg: SimConfig) -> dict[str, Any]:
    """One seeded run (a top-level function, so worker processes can run it)."""
    return World(cfg).run()


def aggregate(cfg: SimConfig, reports: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Fold per-run reports (in seed order) into one sweep report."""
    figures: dict[str, dict[str, Any]] = {}
    for section, key in FIGURES:
        vals = [x for r in reports if (x := _figure(r, section, key)) is not None]
        figures.setdefault(section or "load", {})[key] = fold(vals)
    violations: list[str] = []
    for r in reports:
        for v in r["invariants"]["violations"]:
            if len(violations) < MAX_VIOLATIONS_KEPT:
                violations.append(f"SEED={r['seed']}: {v}")
    h = hashlib.sha256(b"sim sweep v1\0")
    for r in reports:
        h.update(bytes.fromhex(r["trace_digest"]))
    vt = sum(r["virtual_time_s"] for r in reports)
    first = reports[0]
    not_converged = [r["seed"] for r in reports if not r["liveness"]["converged"]]
    return {
        "report_version": first["report_version"],
        "sweep_version": SWEEP_VERSION,
        "kind": "membership-sweep",
        "seed": cfg.seed,
        "seeds": [cfg.seed, cfg.seed + len(reports) - 1],
        "runs": len(reports),
        **{k: first[k] for k in ("nodes", "scenario", "profile", "lifeguard", "loss",
                                 "duration_s", "engine")},
        "virtual_time_s": round(vt, 3),
        "wall_time_s": round(wall_s, 3),
        "speedup_x": round(vt / wall_s, 2) if wall_s > 0 else None,
        "cpu_time_s": round(sum(r["cpu_time_s"] or 0.0 for r in reports), 3),
        "events": sum(r["events"] for r in reports),
        "trace_digest": h.hexdigest()[:32],
        "figures": figures,
        "invariants": {"checked": sum(r["invariants"]["checked"] for r in reports),
                       "violation_count": sum(len(r["invariants"]["violations"]) for r in reports),
                       "violations": violations,
                       "failed_seeds": [r["seed"] for r in reports
                                        if r["invariants"]["violations"]][:100]},
        "liveness": {"converged": not not_converged,
                     "converged_runs": len(reports) - len(not_converged),
                     "failed_seeds": not_converged[:100]},
        "per_seed": [{"seed": r["seed"], "trace_digest": r["trace_digest"],
                      "p999_s": r["dissemination"]["p999_s"],
                      "detection_mean_s": r["detection"]["first_detection_mean_s"],
                      "violations": len(r["invariants"]["violations"]),
                      "converged": r["liveness"]["converged"]} for r in reports],
    }


def run_many(cfg: SimConfig, runs: int, *, jobs: int = 1,
             progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """``runs`` seeded runs (seeds ``cfg.seed + k``) on ``jobs`` processes, folded by
    :func:`aggregate` in seed order (the report does not depend on ``jobs``)."""
    if runs < 1 or jobs < 1:
        raise ValueError("runs and jobs must be >= 1")
    base = dataclasses.replace(cfg, progress=None)
    cfgs = [dataclasses.replace(base, seed=cfg.seed + k) for k in range(runs)]
    wall0 = time.perf_counter()
    reports: list[dict[str, Any]] = []
    if jobs == 1:
        for c in cfgs:
            reports.append(run_one(c))
            if progress is not None:
                progress(len(reports), runs)
    else:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(min(jobs, runs), mp_context=ctx) as pool:
            for r in pool.map(run_one, cfgs):
                reports.append(r)
                if progress is not None:
                    progress(len(reports), runs)
    return aggregate(cfg, reports, time.perf_counter() - wall0)


def summary(r: dict[str, Any]) -> str:
    """The lines printed after a sweep."""
    f = r["figures"]

    def ci(section: str, key: str, unit: str = "") -> str:
        x = f[section][key]
        if x["mean"] is None:
            return "-"
        half = "" if x["ci95"] is None else f" ± {x['ci95']:.4g}"
        return f"{x['mean']:.4g}{half}{unit} (n={x['n']})"

    inv, live = r["invariants"], r["liveness"]
    return "\n".join([
        f"scenario={r['scenario']} nodes={r['nodes']} runs={r['runs']} seeds={r['seeds'][0]}.."
        f"{r['seeds'][1]} virtual={r['virtual_time_s']}s wall={r['wall_time_s']}s "
        f"({r['speedup_x']}x) trace={r['trace_digest']}",
        f"spread p50={ci('dissemination', 'p50_s', 's')} p99.9={ci('dissemination', 'p999_s', 's')}"
        f" coverage={ci('dissemination', 'coverage')} | detection mean="
        f"{ci('detection', 'first_detection_mean_s', 's')} false_positives="
        f"{ci('detection', 'false_positives')} | msgs/node/s="
        f"{ci('load', 'messages_per_node_per_s')}   (mean ± 95% CI over seeds)",
        f"invariants checked={inv['checked']} violations={inv['violation_count']} "
        f"liveness converged={live['converged_runs']}/{r['runs']}",
    ])
