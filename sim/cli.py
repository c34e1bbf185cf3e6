"""``enclave-swarm sim``: run one deterministic simulation and report it.

The lead wires :func:`add_arguments` and :func:`run` into the main CLI; ``python -m sim`` runs
the same thing standalone. The first line of output is always ``SEED=<seed>``, so any run can
be replayed with ``--seed``. The manager-council scenarios (``manager-crash``,
``manager-partition``, ``rotation``, ``flaky-network``) run :mod:`sim.council` instead of the
membership world. Membership and council scenarios take ``--runs``/``--jobs`` for many seeded
runs in one report (membership: :mod:`sim.runs`, every figure with its 95 % confidence
interval over the seeds). The ``tasks`` scenario (jobs, fragments, crashes and revocations
mid-job) runs :mod:`sim.tasks`.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

from sim import accel, needs
from sim.cliutil import given, write_json
from sim.council.world import SCENARIOS as COUNCIL_SCENARIOS
from sim.scenarios import PARTITION_SHAPES, SCENARIOS
from sim.tasks.world import SCENARIOS as TASK_SCENARIOS

# given/write_json live in sim.cliutil (the scenario families' cli modules import them from
# there, never from this dispatcher); re-exported for existing callers.
__all__ = ["add_arguments", "given", "main", "run", "write_json"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sim`` options to ``parser``."""
    parser.add_argument("--nodes", type=int, default=None,
                        help="number of nodes (default 100; council scenarios: 5 voters)")
    parser.add_argument("--seed", type=int, default=None,
                        help="master seed (default: random, printed first as SEED=...)")
    parser.add_argument("--duration-s", type=float, default=None,
                        help="virtual seconds of the safety phase (default 30; council "
                             "scenarios: 4, rotation 10, flaky-network 5)")
    parser.add_argument("--liveness-deadline-s", type=float, default=None,
                        help="virtual seconds allowed to converge after the heal (default 60; "
                             "council scenarios: 5)")
    parser.add_argument("--scenario", choices=SCENARIOS + COUNCIL_SCENARIOS + TASK_SCENARIOS,
                        default="steady",
                        help="membership: " + ", ".join(SCENARIOS) + "; manager council: "
                             + ", ".join(COUNCIL_SCENARIOS) + "; task flow: "
                             + ", ".join(TASK_SCENARIOS))
    parser.add_argument("--partition-shape", choices=PARTITION_SHAPES, default=None,
                        help="default halves (manager-partition: isolate the manager)")
    parser.add_argument("--profile", choices=("lan", "wan"), default="lan")
    parser.add_argument("--loss", type=float, default=None,
                        help="packet loss probability (default 0; flaky-network: 0.05)")
    parser.add_argument("--updates-per-s", type=float, default=1.0,
                        help="score updates published per virtual second (default 1)")
    parser.add_argument("--workload", choices=("uniform", "reattest"), default="uniform",
                        help="score records: uniform (--updates-per-s small records from random "
                             "nodes) or reattest (each node about every peer each "
                             "--reattest-interval-s, real-sized, as real nodes publish; small "
                             "worlds: a full mesh)")
    parser.add_argument("--reattest-interval-s", type=float, default=4.0,
                        help="reattest workload: seconds between a node's rounds (default 4)")
    parser.add_argument("--churn-per-s", type=float, default=0.2,
                        help="churn: crash/leave/pause events per second; crash: one crash per 1/RATE s "
                             "(default 0.2)")
    parser.add_argument("--slow-nodes", type=int, default=1,
                        help="slow-node scenario: how many slow nodes (default 1)")
    parser.add_argument("--no-lifeguard", action="store_true",
                        help="plain SWIM (no local health, nacks, dynamic suspicion)")
    parser.add_argument("--wire", action="store_true",
                        help="encode/decode every message with the wire codec (slow)")
    parser.add_argument("--event-order", type=int, choices=(1, 2), default=None,
                        help="membership scenarios: 2 (default) skips deliveries of pushes whose "
                             "records the receiver holds; 1 replays digests recorded before")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON ('-': stdout)")
    parser.add_argument("--plot", metavar="FILE.png", help="write coverage/load plot (matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--runs", type=int, default=1,
                        help="membership and council scenarios: seeded runs SEED..SEED+N-1, "
                             "one report (membership: mean and 95%% CI of every figure)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for --runs (the same report for any J)")
    parser.add_argument("--term-limit-s", type=float, default=None,
                        help="council scenarios: hand the manager role over after this long")
    parser.add_argument("--task-jobs", type=int, default=None,
                        help="tasks scenario: jobs submitted (default 20)")
    parser.add_argument("--fragments", type=int, default=None,
                        help="tasks scenario: fragments per job (default 8)")
    parser.add_argument("--redundancy", type=int, default=None,
                        help="tasks scenario: replicas per fragment (default 2)")
    parser.add_argument("--quorum", type=int, default=None,
                        help="tasks scenario: agreeing replicas that accept a fragment (default r)")
    parser.add_argument("--max-replicas", type=int, default=None,
                        help="tasks scenario: replicas a fragment may reach on disagreement")
    parser.add_argument("--liars", type=float, default=None, dest="liar_fraction",
                        help="tasks scenario: fraction of nodes that lie (default 0)")
    parser.add_argument("--lie-rate", type=float, default=None,
                        help="tasks scenario: fraction of a liar's runs answered wrong (default 0.1)")
    parser.add_argument("--wall-noise", type=float, default=None,
                        help="tasks scenario: sigma of each run's lognormal wall-time noise (0.1)")
    parser.add_argument("--slow-fraction", type=float, default=None,
                        help="tasks scenario: fraction of slow nodes (default 0.1)")
    parser.add_argument("--slow-factor", type=float, default=None,
                        help="tasks scenario: how much longer a slow node takes (default 8)")
    parser.add_argument("--min-score", type=int, default=None,
                        help="tasks scenario: the policy's minimum score, points (default 60)")
    parser.add_argument("--submit-window-s", type=float, default=None,
                        help="tasks scenario: jobs arrive uniformly over this window (default 120)")
    parser.add_argument("--task-crashes", type=int, default=None, dest="crashes",
                        help="tasks scenario: nodes crashed mid-job (default 3)")
    parser.add_argument("--task-revocations", type=int, default=None, dest="revocations",
                        help="tasks scenario: nodes revoked mid-job (default 2)")
    accel.add_engine_argument(parser)


def _progress(enabled: bool, unit: str = "virtual s") -> tuple[Any, Any]:
    """A rich progress bar on stderr, or (None, None) when not wanted or not a TTY."""
    if not enabled or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("[bold]sim"), BarColumn(),
                    TextColumn("{task.completed:.0f}/{task.total:.0f} " + unit),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    task = prog.add_task("sim", total=1.0)

    def update(t: float, total: float) -> None:
        prog.update(task, completed=t, total=total)

    return prog, update


def run(args: argparse.Namespace) -> int:
    """Run the simulation described by ``args``. Returns 0 if no invariant was violated and
    the liveness phase converged, 1 otherwise, 2 on bad arguments (refused before the run
    starts: :mod:`sim.needs` checks every option's needs first)."""
    family = ("council" if args.scenario in COUNCIL_SCENARIOS
              else "tasks" if args.scenario in TASK_SCENARIOS else "membership")
    why = needs.problems(args, family=family)
    if why:
        for line in why:
            print(f"error: {line}", file=sys.stderr)
        return 2
    delegated = accel.delegate(args)
    if delegated is not None:
        return delegated
    from sim.world import SimConfig, World

    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    print(f"SEED={seed}", flush=True)
    if args.scenario in COUNCIL_SCENARIOS:
        from sim.council import cli as council_cli

        unit = "runs" if args.runs > 1 else "virtual s"
        return council_cli.run(args, seed, _progress(not args.no_progress, unit))
    if args.scenario in TASK_SCENARIOS:
        from sim.tasks import cli as tasks_cli

        return tasks_cli.run(args, seed, _progress(not args.no_progress))
    prog, update = _progress(not args.no_progress, "runs" if args.runs > 1 else "virtual s")
    # Options left unset keep SimConfig's defaults (the council world has its own).
    cfg = SimConfig(
        seed=seed, scenario=args.scenario, profile=args.profile,
        updates_per_s=args.updates_per_s, lifeguard=not args.no_lifeguard, wire=args.wire,
        workload=args.workload, reattest_interval_s=args.reattest_interval_s, progress=update,
        churn_per_s=args.churn_per_s, slow_nodes=args.slow_nodes,
        **given(args, ("nodes", "duration_s", "liveness_deadline_s", "loss", "partition_shape",
                       "event_order")),
    )
    if cfg.nodes < 2 or cfg.duration_s <= 0 or not 0 <= cfg.loss < 1 or cfg.slow_nodes < 0 \
            or not cfg.reattest_interval_s > 0:
        print("need --nodes >= 2, --duration-s > 0, 0 <= --loss < 1, --slow-nodes >= 0, "
              "--reattest-interval-s > 0", file=sys.stderr)
        return 2
    if args.runs > 1:
        return _sweep(args, cfg, prog, update)
    world = World(cfg)
    if prog is not None:
        with prog:
            report = world.run()
    else:
        report = world.run()
    write_json(report, args.json)
    if args.plot:
        from sim.report import plot

        plot(world, args.plot)
    d = report["dissemination"]
    det = report["detection"]
    print(f"scenario={cfg.scenario} nodes={cfg.nodes} virtual={report['virtual_time_s']}s "
          f"wall={report['wall_time_s']}s ({report['speedup_x']}x) "
          f"trace={report['trace_digest']}")
    print(f"spread p50={d['p50_s']}s p99={d['p99_s']}s p99.9={d['p999_s']}s "
          f"coverage={d['coverage']} | detection mean={det['first_detection_mean_s']} s "
          f"false_positives={det['false_positives']} | "
          f"msgs/node/s={report['messages_per_node_per_s']} "
          f"bytes/node/s={report['bytes_per_node_per_s']}")
    inv = report["invariants"]
    live = report["liveness"]
    print(f"invariants checked={inv['checked']} violations={len(inv['violations'])} "
          f"liveness converged={live['converged']} after={live['converged_after_s']}s")
    for v in inv["violations"][:10]:
        print(f"  VIOLATION {v}")
    ok = not inv["violations"] and live["converged"]
    return 0 if ok else 1


def _sweep(args: argparse.Namespace, cfg: Any, prog: Any, update: Any) -> int:
    """``--runs N`` of a membership scenario: N seeds folded into one report (sim.runs)."""
    from sim.runs import run_many, summary

    if prog is not None:  # the bar counts runs here
        with prog:
            report = run_many(cfg, args.runs, jobs=args.jobs, progress=update)
    else:
        report = run_many(cfg, args.runs, jobs=args.jobs)
    write_json(report, args.json)
    print(summary(report))
    for v in report["invariants"]["violations"][:10]:
        print(f"  VIOLATION {v}")
    ok = report["invariants"]["violation_count"] == 0 and report["liveness"]["converged"]
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enclave-swarm sim", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
