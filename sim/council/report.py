"""The council run report, and many seeded runs folded into one.

A single run's report is :func:`build`; :func:`run_many` runs ``runs`` seeds (run ``k`` uses
seed ``master + k``, so any run replays alone with ``--seed master+k``) and
:func:`aggregate` pools their samples: failover and handover percentiles are over every
sample of every run, ``runs`` counts the seeded runs.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sim.report import percentile

if TYPE_CHECKING:
    from sim.council.world import CouncilConfig, CouncilWorld

REPORT_VERSION = 1
MAX_VIOLATIONS_KEPT = 100


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def _election(failovers: list[float], runs: int, by_transfer: int, by_timeout: int) -> dict[str, Any]:
    return {
        "failover_p50_s": _r(percentile(failovers, 0.5)),
        "failover_p99_s": _r(percentile(failovers, 0.99)),
        "failover_max_s": _r(max(failovers)) if failovers else None,
        "runs": runs,
        "failovers": len(failovers),
        "elections_by_transfer": by_transfer,
        "elections_by_timeout": by_timeout,
    }


def _rotation(gaps: list[float], started: int) -> dict[str, Any]:
    return {
        "handover_gap_p50_s": _r(percentile(gaps, 0.5)),
        "handover_gap_p99_s": _r(percentile(gaps, 0.99)),
        "handover_gap_max_s": _r(max(gaps)) if gaps else None,
        "handovers": len(gaps),
        "handovers_started": started,
    }


def build(w: CouncilWorld, wall_s: float) -> dict[str, Any]:
    """The report of one run (JSON-serialisable)."""
    cfg = w.cfg
    vt = w.now
    inv = w.inv
    return {
        "report_version": REPORT_VERSION,
        "kind": "council",
        "seed": cfg.seed,
        "nodes": cfg.nodes,
        "scenario": cfg.scenario,
        "profile": cfg.profile,
        "duration_s": cfg.duration_s,
        "virtual_time_s": _r(vt),
        "wall_time_s": round(wall_s, 3),
        "speedup_x": round(vt / wall_s, 1) if wall_s > 0 else None,
        "events": w.events,
        "trace_digest": w.trace_digest(),
        "invariants": {"checked": inv.checked, "violation_count": inv.count,
                       "violations": list(inv.violations)},
        "liveness": dict(w.liveness),
        "election": _election(w.failovers, 1, w.elections_by_transfer, w.elections_by_timeout),
        "rotation": _rotation(w.handover_gaps, w.handovers_started),
        "commits_per_s": _r(inv.commands_committed / vt, 2) if vt > 0 else None,
        "raft": {
            "tick_s": cfg.tick_s, "heartbeat_s": _r(cfg.tick_s * cfg.heartbeat_tick),
            "election_timeout_s": [_r(cfg.tick_s * cfg.election_tick),
                                   _r(cfg.tick_s * 2 * cfg.election_tick)],
            "pre_vote": cfg.pre_vote, "check_quorum": cfg.check_quorum,
            "terms": max(inv.leaders, default=0), "committed_index": inv.commit_max,
        },
        "load": {"proposals_per_s": cfg.proposals_per_s, "proposals": w.proposals,
                 "proposals_dropped": w.proposals_dropped,
                 "commands_committed": inv.commands_committed},
        "faults": {"loss": cfg.loss, "duplicate": cfg.duplicate, "reorder": cfg.reorder,
                   "clock_drift_ppm": cfg.clock_drift_ppm, "crashes": w.crashes,
                   "torn_crashes": w.torn_crashes, "restarts": w.restarts,
                   "partitions": w.partitions, "revoked": list(w.revoked),
                   "removals_committed": len(inv.removed_committed)},
        "messages_sent": w.sent,
        # Samples, for aggregation over runs (not needed by readers of one run).
        "_samples": {"failovers": list(w.failovers), "handover_gaps": list(w.handover_gaps)},
    }


def aggregate(cfg: CouncilConfig, reports: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Fold per-run reports (in seed order) into one report of the same schema."""
    if len(reports) == 1:
        out = {k: v for k, v in reports[0].items() if k != "_samples"}
        out["wall_time_s"] = round(wall_s, 3)
        return out
    failovers = [x for r in reports for x in r["_samples"]["failovers"]]
    gaps = [x for r in reports for x in r["_samples"]["handover_gaps"]]
    vt = sum(r["virtual_time_s"] for r in reports)
    commands = sum(r["load"]["commands_committed"] for r in reports)
    violations: list[str] = []
    for r in reports:
        for v in r["invariants"]["violations"]:
            if len(violations) < MAX_VIOLATIONS_KEPT:
                violations.append(f"SEED={r['seed']}: {v}")
    not_converged = [r["seed"] for r in reports if not r["liveness"]["converged"]]
    after = [r["liveness"]["converged_after_s"] for r in reports if r["liveness"]["converged"]]
    h = hashlib.sha256()
    for r in reports:
        h.update(bytes.fromhex(r["trace_digest"]))
    first = reports[0]
    return {
        "report_version": REPORT_VERSION,
        "kind": "council",
        "seed": cfg.seed,
        "seeds": [cfg.seed, cfg.seed + len(reports) - 1],
        "nodes": first["nodes"],
        "scenario": first["scenario"],
        "profile": first["profile"],
        "duration_s": first["duration_s"],
        "virtual_time_s": _r(vt),
        "wall_time_s": round(wall_s, 3),
        "speedup_x": round(vt / wall_s, 1) if wall_s > 0 else None,
        "events": sum(r["events"] for r in reports),
        "trace_digest": h.hexdigest()[:32],
        "invariants": {"checked": sum(r["invariants"]["checked"] for r in reports),
                       "violation_count": sum(r["invariants"]["violation_count"] for r in reports),
                       "violations": violations,
                       "failed_seeds": [r["seed"] for r in reports
                                        if r["invariants"]["violation_count"]][:100]},
        "liveness": {"converged": not not_converged,
                     "converged_runs": len(reports) - len(not_converged),
                     "failed_seeds": not_converged[:100],
                     "converged_after_p99_s": _r(percentile(after, 0.99)),
                     "converged_after_max_s": _r(max(after)) if after else None,
                     "deadline_s": first["liveness"]["deadline_s"]},
        "election": _election(failovers, len(reports),
                              sum(r["election"]["elections_by_transfer"] for r in reports),
                              sum(r["election"]["elections_by_timeout"] for r in reports)),
        "rotation": _rotation(gaps, sum(r["rotation"]["handovers_started"] for r in reports)),
        "commits_per_s": _r(commands / vt, 2) if vt > 0 else None,
        "raft": {k: v for k, v in first["raft"].items() if k not in ("terms", "committed_index")},
        "load": {"proposals_per_s": first["load"]["proposals_per_s"],
                 **{k: sum(r["load"][k] for r in reports)
                    for k in ("proposals", "proposals_dropped", "commands_committed")}},
        "faults": {**{k: first["faults"][k] for k in ("loss", "duplicate", "reorder",
                                                      "clock_drift_ppm")},
                   **{k: sum(r["faults"][k] for r in reports)
                      for k in ("crashes", "torn_crashes", "restarts", "partitions",
                                "removals_committed")}},
        "messages_sent": sum(r["messages_sent"] for r in reports),
    }
