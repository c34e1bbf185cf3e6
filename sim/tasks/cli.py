"""``enclave-swarm sim --scenario tasks``: :func:`sim.cli.run` prints ``SEED=…`` and hands
the tasks scenario here. Uses :mod:`sim.cliutil`, never :mod:`sim.cli` (no import cycle)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from sim.cliutil import given, write_json
from sim.tasks.report import plot, summary
from sim.tasks.world import TasksConfig, TasksWorld

Progress = Callable[[float, float], None]


def config_from_args(args: argparse.Namespace, seed: int) -> TasksConfig:
    """The run described by the ``sim`` options (unset options keep TasksConfig's defaults)."""
    kw = given(args, ("nodes", "duration_s", "fragments", "redundancy"))
    if getattr(args, "task_jobs", None) is not None:
        kw["jobs"] = args.task_jobs
    kw.update(given(args, ("quorum", "max_replicas", "liar_fraction", "lie_rate", "wall_noise",
                           "slow_fraction", "slow_factor", "min_score", "submit_window_s",
                           "crashes", "revocations")))
    return TasksConfig(seed=seed, scenario=args.scenario, **kw)


def run(args: argparse.Namespace, seed: int, progress: tuple[Any, Progress | None]) -> int:
    """Run the tasks scenario of ``args``: 0 if no invariant was violated and every job ended
    (done or failed), 1 otherwise, 2 on bad arguments."""
    try:
        cfg = config_from_args(args, seed)
        cfg.validate()
    except ValueError as exc:
        print(f"bad arguments: {exc}", file=sys.stderr)
        return 2
    prog, update = progress
    world = TasksWorld(dataclasses.replace(cfg, progress=update))
    if prog is not None:
        with prog:
            report = world.run()
    else:
        report = world.run()
    write_json(report, args.json)
    if args.plot:
        plot(world, args.plot)
    print(summary(report))
    inv = report["invariants"]
    for v in inv["violations"][:10]:
        print(f"  VIOLATION {v}")
    ok = inv["violation_count"] == 0 and report["liveness"]["converged"]
    return 0 if ok else 1
