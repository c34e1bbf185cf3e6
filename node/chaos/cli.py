"""``enclave-swarm chaos``: one seeded chaos run over real node processes (root only)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: Any) -> dict[str, Any]:
    from node.chaos.schedule import DEFAULT_FAULTS, FAULT_KINDS

    p = sub.add_parser("chaos", help="run a seeded chaos test on node processes in network namespaces (root)",
                       description="Start --nodes node processes, each in its own network namespace, "
                                   "play a nemesis schedule drawn from --seed against them while clients "
                                   "put, get, submit and poll status, then check the history. Writes "
                                   "history.jsonl, schedule.json, verdict.json, timeline.png and the node "
                                   "logs into --out. Exit 0: every checker passed; 1: a finding or a "
                                   "failed run; 2: usage.")
    p.add_argument("--nodes", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration-s", type=float, default=300.0)
    p.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                   help=f"comma-separated fault kinds ({', '.join(FAULT_KINDS)})")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--recovery-bound-s", type=float, default=60.0)
    p.add_argument("--out", type=Path, required=True)
    return {"chaos": cmd_chaos}


def cmd_chaos(args: argparse.Namespace) -> int:
    from node.chaos.run import ChaosError, ChaosRun, RunConfig
    from node.chaos.schedule import ScheduleError

    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    if not 3 <= args.nodes <= 50 or args.clients < 0 or args.duration_s <= 0:
        print("enclave-swarm: need 3 <= --nodes <= 50, --clients >= 0, --duration-s > 0", file=sys.stderr)
        return EXIT_USAGE
    cfg = RunConfig(nodes=args.nodes, seed=args.seed, duration_s=args.duration_s, faults=faults,
                    clients=args.clients, recovery_bound_s=args.recovery_bound_s)
    try:
        run = ChaosRun(cfg, args.out)
    except ScheduleError as exc:
        print(f"enclave-swarm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"SEED={args.seed} nodes={args.nodes} duration={args.duration_s:g}s faults={','.join(faults)}",
          flush=True)
    for f in run.schedule:
        print(f"  {f.start_s:7.1f}-{f.end_s:7.1f}s {f.kind} {json.dumps(f.params)}", flush=True)
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through run()'s finally: namespaces, mounts, processes

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        verdict = run.run()
    except ChaosError as exc:
        print(f"enclave-swarm: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        signal.signal(signal.SIGTERM, previous)
    for ch in verdict["checks"]:
        print(f"  {'ok  ' if ch['ok'] else 'FAIL'} {ch['name']}: {json.dumps(ch['figures'])}")
        for v in ch["violations"][:10]:
            print(f"       {v}")
    print(f"verdict: {'ok' if verdict['ok'] else 'FINDINGS'} ({args.out / 'verdict.json'})")
    return EXIT_OK if verdict["ok"] else EXIT_FAIL
