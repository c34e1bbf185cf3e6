"""Chaos figures on real node processes in network namespaces (root), against the simulator.

    python -m bench.bench_chaos                     # 5 nodes, 2 rounds of each manager fault
    python -m bench.bench_chaos --rounds 3 --nodes 7

1. *Time to a new manager* after the manager is isolated (nft drops), SIGKILLed or paused
   (SIGSTOP): from the fault to the first status sample on another node naming a new manager
   in a later term; median and max per fault. Baseline in the same run: the simulator
   (``sim/council``) with the same Raft timing as the chaos federation (tick 50 ms, election
   40 ticks, heartbeat 4 ticks), scenarios ``manager-partition`` (isolation; a pause looks the
   same to the others) and ``manager-crash``; the ratio real/simulated is printed.
2. *Availability during a minority partition*: of the ``get`` and ``status`` calls made on the
   majority side while a minority is cut off, the fraction that succeeded; baseline: the same
   fraction over the calm stretches of the same run. A run of its own: three clients that
   mostly get (60 % gets, 20 % puts, 20 % status), 25 s of calm to store objects first, then
   ``--partitions`` minority partitions of 12 s, 12 s apart.
3. *Repair after a holder loss* under 5 % packet loss and 100 ms latency on every link (the
   latency only where the kernel has sch_netem; the output says which applied): SIGKILL a
   holder of a stored object and time until the committed placement names a replacement for
   it with nothing pending; baseline: the same on clean links in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.chaos.cluster import Cluster
from node.chaos.netns import TestNet, unavailable_reason
from node.chaos.run import ChaosRun, RunConfig
from node.chaos.schedule import Fault

PARTS = ("managers", "availability", "repair")


def _sim(scenario: str, runs: int) -> dict[str, Any]:
    """The simulator's failover with the chaos federation's Raft timing (2-4 s election
    timeouts): a 10 s warm-up (the first election), one fault per run, a 12 s cut as the
    chaos windows'."""
    from sim.council import CouncilConfig, run_many

    cfg = CouncilConfig(seed=1, scenario=scenario, tick_s=0.05, election_tick=40, heartbeat_tick=4,
                        warmup_s=10.0, duration_s=30.0, crash_every_s=20.0, partition_every_s=20.0,
                        partition_s=12.0)
    r = run_many(cfg, runs)
    e = r["election"]
    return {"median_s": e["failover_p50_s"], "max_s": e["failover_max_s"], "samples": e["failovers"]}


def manager_faults(nodes: int, rounds: int, out: Path) -> dict[str, Any]:
    faults: list[Fault] = []
    t = 10.0
    majority = [list(range(nodes // 2, nodes)), list(range(nodes // 2))]
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("partition", {"shape": "isolate-manager", "groups": [], "target": "manager"}),
        ("kill", {"target": "manager"}), ("pause", {"target": "manager"}),
        ("partition", {"shape": "majority", "groups": majority})]
    for _ in range(rounds):
        for kind, params in kinds:
            faults.append(Fault(kind, t, t + 12.0, params))
            t += 24.0
    cfg = RunConfig(nodes=nodes, seed=1, duration_s=t + 15.0, faults=("partition", "kill", "pause"),
                    faults_override=tuple(faults), plot=False, clients=2)
    return ChaosRun(cfg, out).run()


def availability_run(nodes: int, partitions: int, out: Path) -> dict[str, Any]:
    minority = [list(range(nodes // 2, nodes)), list(range(nodes // 2))]
    faults = tuple(Fault("partition", 25.0 + 24.0 * k, 37.0 + 24.0 * k,
                         {"shape": "majority", "groups": minority}) for k in range(partitions))
    cfg = RunConfig(nodes=nodes, seed=2, duration_s=faults[-1].end_s + 20.0, faults=("partition",),
                    faults_override=faults, plot=False, clients=3,
                    mix=(("put", 0.2), ("get", 0.6), ("status", 0.2)))
    return ChaosRun(cfg, out).run()


def availability(verdict: dict[str, Any], history: Path) -> dict[str, dict[str, Any]]:
    """The verdict's majority-side figures during the partitions, and the same fractions over
    the calm stretches (10 s after each fault's end excluded) as the baseline."""
    from node.chaos.history import pair, parse_lines

    calm = {"get": [0, 0], "status": [0, 0]}
    with open(history) as f:
        ops = pair(parse_lines(f).events)
    windows = [(float(x["start_s"]), float(x["end_s"]) + 10.0) for x in verdict["schedule"]]
    for op in ops:
        if op.f in calm and op.process != "final" and op.invoke_s > 10.0 \
                and not any(a <= op.invoke_s < b for a, b in windows):
            calm[op.f][1] += 1
            calm[op.f][0] += op.type == "ok"
    av = verdict["figures"]["majority_availability"]
    return {fn: {**av[fn], "calm_ok": calm[fn][0], "calm_total": calm[fn][1]} for fn in calm}


def repair(nodes: int, out: Path, *, degraded: bool) -> dict[str, Any]:
    """Seconds until a killed holder's shard is committed elsewhere (nothing pending)."""
    with TestNet(nodes) as net:
        c = Cluster(out, net)
        try:
            c.prepare()
            c.start_all()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                sts = [c.status(i) for i in range(nodes)]
                if all(s and s["attested_peers"] == nodes - 1 and s["manager"] for s in sts):
                    break
                time.sleep(1)
            owner = nodes - 1
            src = out / "obj.bin"
            src.write_bytes(os.urandom(256 * 1024))
            job = c.ctl(owner, {"cmd": "shard-put", "path": str(src), "n": 3, "k": 2})["job"]
            while (st := c.ctl(owner, {"cmd": "shard-job", "job": job}))["state"] == "running":
                time.sleep(0.3)
            assert st["state"] == "done", st
            manager = c.status(owner)["manager"]  # type: ignore[index]
            placed: list[str] = []
            while time.monotonic() < deadline and not placed:
                pls = c.ctl(0, {"cmd": "shard-placements"})["placements"]
                placed = [h["peer_id"] for p in pls for h in p["holders"] if not h["pending"]]
                time.sleep(0.5)
            victim_id = next(p for p in placed if p != manager)
            victim = next(n.index for n in c.nodes if n.peer_id == victim_id)
            watcher = next(i for i in range(nodes) if i not in (victim, owner))
            effect: dict[str, Any] = {}
            if degraded:
                effect = net.shape(range(nodes), {"qdisc": "netem", "delay_ms": 100, "loss_pct": 5.0})
            t0 = time.monotonic()
            c.kill(victim)
            took = None
            while time.monotonic() - t0 < 300:
                pls = c.ctl(watcher, {"cmd": "shard-placements"}, timeout_s=10)["placements"]
                hs = [h for p in pls for h in p["holders"]]
                if hs and all(not h["pending"] and h["peer_id"] != victim_id for h in hs):
                    took = time.monotonic() - t0
                    break
                time.sleep(0.5)
            return {"repair_s": took, "effect": effect}
        finally:
            c.stop_all()
            c.unmount()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_chaos")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sim-runs", type=int, default=200)
    ap.add_argument("--partitions", type=int, default=3, help="minority partitions of the availability run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the fault run already in --out (faults/verdict.json): only the "
                         "simulator and repair parts run again")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        ap.error(f"unknown part(s): {', '.join(sorted(parts - set(PARTS)))}")
    why = unavailable_reason()
    if why:
        print(f"bench_chaos: {why}", file=sys.stderr)
        return 1
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    print(f"SEED=1 nodes={args.nodes} rounds={args.rounds} sim_runs={args.sim_runs} out={out}", flush=True)
    if "managers" in parts:
        if args.reuse and (out / "faults" / "verdict.json").exists():
            import json

            verdict = json.loads((out / "faults" / "verdict.json").read_text())
        else:
            verdict = manager_faults(args.nodes, args.rounds, out / "faults")
        gaps: dict[str, list[float]] = {}
        missed: dict[str, int] = {}
        for g in verdict["figures"]["manager_gaps"]:
            if g["new_manager_after_s"] is None:
                missed[g["fault"]] = missed.get(g["fault"], 0) + 1
            else:
                gaps.setdefault(g["fault"], []).append(g["new_manager_after_s"])
        sim = {"isolate": _sim("manager-partition", args.sim_runs),
               "kill": _sim("manager-crash", args.sim_runs)}
        sim["pause"] = sim["isolate"]
        print("time to a new manager (real processes vs simulator, same Raft timing):")
        for fault in ("isolate", "kill", "pause"):
            xs = gaps.get(fault, [])
            s = sim[fault]
            if xs and s["median_s"]:
                med = statistics.median(xs)
                print(f"  {fault:8s} real median {med:.2f} s, max {max(xs):.2f} s over {len(xs)} "
                      f"(no new manager within the window+60 s: {missed.get(fault, 0)}); simulator median "
                      f"{s['median_s']:.2f} s, max {s['max_s']:.2f} s over {s['samples']}; "
                      f"ratio median {med / s['median_s']:.1f}x")
            else:
                print(f"  {fault:8s} real {xs} (missed {missed.get(fault, 0)}); simulator {s}")
        bad_checks = [c["name"] for c in verdict["checks"] if not c["ok"]]
        print(f"  checkers: {'FINDINGS: ' + ', '.join(bad_checks) if bad_checks else 'all passed'}")
    if "availability" in parts:
        av_verdict = availability_run(args.nodes, args.partitions, out / "availability")
        print(f"availability on the majority side during {args.partitions} minority partitions of 12 s "
              "(baseline: the calm stretches of the same run):")
        for fn, a in availability(av_verdict, out / "availability" / "history.jsonl").items():
            base = a["calm_ok"] / a["calm_total"] if a["calm_total"] else None
            print(f"  {fn:6s} {a['ok']}/{a['total']} = {a['fraction']}  "
                  f"baseline {a['calm_ok']}/{a['calm_total']} = {None if base is None else round(base, 4)}")
        bad_checks = [c["name"] for c in av_verdict["checks"] if not c["ok"]]
        print(f"  checkers: {'FINDINGS: ' + ', '.join(bad_checks) if bad_checks else 'all passed'}")
    if "repair" in parts:
        clean = repair(args.nodes, out / "repair-clean", degraded=False)
        bad = repair(args.nodes, out / "repair-degraded", degraded=True)
        print("repair after a holder loss (SIGKILL -> committed replacement, nothing pending):")
        print(f"  clean links {clean['repair_s'] and round(clean['repair_s'], 1)} s; "
              "5 % loss + 100 ms latency "
              f"{bad['repair_s'] and round(bad['repair_s'], 1)} s (applied {bad['effect'].get('applied')}, "
              f"skipped {bad['effect'].get('skipped')} {bad['effect'].get('why_skipped')})"
              + (f"; ratio {bad['repair_s'] / clean['repair_s']:.1f}x"
                 if bad["repair_s"] and clean["repair_s"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
