"""Manager council figures from the deterministic simulator (``sim/council``), virtual time.

    python -m bench council                               # quick: 200 runs per figure
    python bench/bench_council.py --full --jobs 2         # the documented figures

Setup (``CouncilConfig`` defaults): 5 voters, tick 10 ms, heartbeat 50 ms, election timeout
randomized in [150, 300) ms, pre-vote and check-quorum on, LAN links (0.25 ms one way, 1% of
packets +Exp(2 ms)), clocks within ±100 ppm, 50 client proposals/s.

- *failover* (``manager-crash``, one crash per run at a random phase after a 1 s warm-up):
  crash of the serving manager -> the next manager has committed an entry of its own term.
  Target (Raft paper, 1,000 trials): median <= 300 ms, max <= 550 ms.
- *partition failover* (``manager-partition``, the manager isolated once per run): the same,
  from the cut.
- *handover gap* (``rotation``, 1 s term limit, ~9 hand-overs per run): the old manager
  starts the leadership transfer (stops accepting proposals) -> its successor serves.
  Target: <= one heartbeat interval (50 ms).
- *safety* (``flaky-network``): loss 5%, duplication 3%, reordering 10%, random partitions
  (minority/majority, isolated manager, random cut, bridge), crashes and restarts (30% torn
  mid-write), clocks within ±1%, term-limited rotation, one revocation per run; every
  invariant after every event, then a heal and a manager within 5 s. Target: zero violations
  over >= 10,000 runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.council import CouncilConfig, run_many

TARGET_FAILOVER_MEDIAN_S = 0.300
TARGET_FAILOVER_MAX_S = 0.550
HEARTBEAT_S = 0.050


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def _run(scenario: str, seed: int, runs: int, jobs: int) -> dict[str, Any]:
    r = run_many(CouncilConfig(seed=seed, scenario=scenario), runs, jobs=jobs)
    inv, live = r["invariants"], r["liveness"]
    print(f"  [{scenario}: seeds {seed}..{seed + runs - 1}, {r['virtual_time_s']:.0f} virtual s "
          f"in {r['wall_time_s']:.0f} wall s; invariants checked {inv['checked']:,}, "
          f"violations {inv['violation_count']}; manager after heal {live['converged_runs']}/{runs}]",
          flush=True)
    return r


def _ok(cond: bool) -> str:
    return "met" if cond else "MISSED"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_council")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200, help="runs per timing figure (default 200)")
    ap.add_argument("--safety-runs", type=int, default=200, help="flaky-network runs (default 200)")
    ap.add_argument("--full", action="store_true",
                    help="the documented figures: 1,000 runs per timing figure, 10,000 safety runs")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (same figures)")
    args = ap.parse_args(argv)
    runs = 1000 if args.full else args.runs
    safety = 10_000 if args.full else args.safety_runs
    rot_runs = max(1, runs // 5)  # ~9 hand-overs per run
    print(f"SEED={args.seed} nodes=5 tick=10ms heartbeat=50ms election=[150,300)ms lan "
          f"runs={runs} rotation_runs={rot_runs} safety_runs={safety} jobs={args.jobs}", flush=True)
    wall = time.perf_counter()
    bad = 0

    crash = _run("manager-crash", args.seed, runs, args.jobs)
    e = crash["election"]
    med, mx = e["failover_p50_s"], e["failover_max_s"]
    print(f"failover (manager crash -> new manager serving), {e['failovers']} samples over "
          f"{e['runs']} runs:")
    print(f"  p50 {_ms(med)}  p99 {_ms(e['failover_p99_s'])}  max {_ms(mx)}   "
          f"target median <= 300 ms: {_ok(med <= TARGET_FAILOVER_MEDIAN_S)}; "
          f"max <= 550 ms: {_ok(mx <= TARGET_FAILOVER_MAX_S)}")
    bad += med > TARGET_FAILOVER_MEDIAN_S or mx > TARGET_FAILOVER_MAX_S

    part = _run("manager-partition", args.seed, runs, args.jobs)
    e = part["election"]
    print(f"failover (manager isolated -> new manager serving), {e['failovers']} samples:")
    print(f"  p50 {_ms(e['failover_p50_s'])}  p99 {_ms(e['failover_p99_s'])}  "
          f"max {_ms(e['failover_max_s'])}")

    rot = _run("rotation", args.seed, rot_runs, args.jobs)
    g = rot["rotation"]
    print(f"handover gap (term limit -> transfer -> successor serving), {g['handovers']} "
          f"hand-overs over {rot_runs} runs, elections by timeout: "
          f"{rot['election']['elections_by_timeout']}:")
    print(f"  p50 {_ms(g['handover_gap_p50_s'])}  p99 {_ms(g['handover_gap_p99_s'])}  "
          f"max {_ms(g['handover_gap_max_s'])}   target p99 <= one heartbeat (50 ms): "
          f"{_ok(g['handover_gap_p99_s'] <= HEARTBEAT_S)}")
    bad += g["handover_gap_p99_s"] > HEARTBEAT_S
    print(f"  commits/s at {rot['load']['proposals_per_s']:.0f} proposals/s offered: "
          f"{rot['commits_per_s']}")

    flaky = _run("flaky-network", args.seed, safety, args.jobs)
    inv, f = flaky["invariants"], flaky["faults"]
    print(f"safety (flaky-network), {safety} runs: violations {inv['violation_count']}, "
          f"runs without a manager after the heal {safety - flaky['liveness']['converged_runs']}; "
          f"faults: {f['crashes']} crashes ({f['torn_crashes']} torn), {f['partitions']} "
          f"partitions, {f['removals_committed']} revoked votes removed")
    if inv["violation_count"]:
        print(f"  failing seeds: {inv['failed_seeds'][:20]}")
    bad += inv["violation_count"] > 0 or not flaky["liveness"]["converged"]
    for r in (crash, part, rot):
        bad += r["invariants"]["violation_count"] > 0 or not r["liveness"]["converged"]
    print(f"wall time {time.perf_counter() - wall:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
