"""``enclave-swarm sim --scenario manager-crash|manager-partition|rotation|flaky-network``.

:func:`sim.cli.run` prints ``SEED=…`` and hands council scenarios here. ``--runs N`` runs the
seeds ``S, S+1, …, S+N-1`` (any of them replays alone with ``--seed``) and folds them into
one report; ``--jobs J`` spreads them over J processes without changing the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from sim.cliutil import given, write_json
from sim.council.runs import run_many
from sim.council.world import CouncilConfig

Progress = Callable[[float, float], None]


def config_from_args(args: argparse.Namespace, seed: int) -> CouncilConfig:
    """The run described by the ``sim`` options (unset options keep the scenario's defaults)."""
    return CouncilConfig(seed=seed, scenario=args.scenario, profile=args.profile,
                         **given(args, ("nodes", "duration_s", "liveness_deadline_s", "loss",
                                        "partition_shape", "term_limit_s")))


def run(args: argparse.Namespace, seed: int, progress: tuple[Any, Progress | None]) -> int:
    """Run the council scenario of ``args``; 0 if every run kept every invariant and found
    a manager after the heal, 1 otherwise, 2 on bad arguments."""
    try:
        cfg = config_from_args(args, seed)
        cfg.resolved().validate()
    except ValueError as exc:
        print(f"bad arguments: {exc}", file=sys.stderr)
        return 2
    if args.runs < 1 or args.jobs < 1:
        print("need --runs >= 1 and --jobs >= 1", file=sys.stderr)
        return 2
    prog, update = progress
    if args.runs == 1:
        cfg = dataclasses.replace(cfg, progress=update)
    if prog is not None:
        with prog:
            report = run_many(cfg, args.runs, jobs=args.jobs,
                              progress=update if args.runs > 1 else None)
    else:
        report = run_many(cfg, args.runs, jobs=args.jobs)
    write_json(report, args.json)
    print(summary(report))
    inv = report["invariants"]
    for v in inv["violations"][:10]:
        print(f"  VIOLATION {v}")
    ok = inv["violation_count"] == 0 and report["liveness"]["converged"]
    return 0 if ok else 1


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}ms"


def summary(r: dict[str, Any]) -> str:
    """The human-readable lines printed after a run."""
    e, rot, inv, live = r["election"], r["rotation"], r["invariants"], r["liveness"]
    conv = (f"{live['converged_runs']}/{e['runs']}" if "converged_runs" in live
            else str(live["converged"]))
    return "\n".join([
        f"scenario={r['scenario']} nodes={r['nodes']} runs={e['runs']} virtual={r['virtual_time_s']}s "
        f"wall={r['wall_time_s']}s ({r['speedup_x']}x) trace={r['trace_digest']}",
        f"failover p50={_ms(e['failover_p50_s'])} p99={_ms(e['failover_p99_s'])} "
        f"max={_ms(e['failover_max_s'])} ({e['failovers']} samples) | handover gap "
        f"p50={_ms(rot['handover_gap_p50_s'])} p99={_ms(rot['handover_gap_p99_s'])} "
        f"max={_ms(rot['handover_gap_max_s'])} ({rot['handovers']} samples) | "
        f"commits/s={r['commits_per_s']}",
        f"invariants checked={inv['checked']} violations={inv['violation_count']} "
        f"liveness converged={conv}",
    ])
