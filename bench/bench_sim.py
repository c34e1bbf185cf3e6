"""Simulator benchmarks: spread, scaling, revocation, detection, Lifeguard, simulator speed.

    python -m bench sim                       # quick: up to 1,000 nodes (a few minutes)
    python -m bench.bench_sim --full          # the figures in docs/simulator.md (10,000 nodes)
    python -m bench.bench_sim --full --out DIR  # also the scaling PNG and a JSON of everything
    python -m bench.bench_sim --only speed --speed-sizes 1000,10000,100000 --speed-engines mypyc
                                              # speed per CPU second, ceiling, RSS per node
    python -m bench.bench_sim --only fidelity # the simulator against real node processes in
                                              # network namespaces (root; bench/bench_fidelity.py)

Every figure is virtual time from the deterministic simulator (seeded, replayable); only the
"speed" lines measure this machine (virtual seconds per wall second, peak RSS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from overlay.dissemination import DisseminationConfig
from sim.world import SimConfig, World

SEED = 20261124
PARTS = ("spread", "revocation", "detection", "lifeguard", "speed", "integrity", "fidelity")
# Parts a plain run leaves out: fidelity starts real node processes as root for minutes
# (``--only fidelity``, or ``--full``).
ASKED_ONLY = ("fidelity",)


def _run(**kw: Any) -> dict[str, Any]:
    kw.setdefault("seed", SEED)
    kw.setdefault("liveness_deadline_s", 10.0)
    return World(SimConfig(**kw)).run()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def spread(sizes: list[int], duration_s: float) -> list[dict[str, Any]]:
    """One score update per second; push+pull (default) and push-only (no piggyback, no pull)."""
    rows = []
    push_only = dataclasses.replace(DisseminationConfig.lan(), push_pull_interval_s=0.0)
    # Pittel's bound is for fanout-1 push: every informed node pushes to one random node
    # per round (here for retransmit_mult × ceil(log10(n + 1)) rounds, then it stops).
    pittel = dataclasses.replace(push_only, gossip_fanout=1)
    for n in sizes:
        for mode in ("push-pull", "push-only", "push-only-fanout-1"):
            extra: dict[str, Any] = {}
            if mode == "push-only":
                extra = {"dissemination": push_only, "piggyback_records": False}
            elif mode == "push-only-fanout-1":
                if n > 1000:
                    continue
                extra = {"dissemination": pittel, "piggyback_records": False}
            r = _run(nodes=n, scenario="steady", duration_s=duration_s, **extra)
            d = r["dissemination"]
            rows.append({
                "nodes": n, "mode": mode, "p50_s": d["p50_s"], "p99_s": d["p99_s"],
                "p999_s": d["p999_s"], "p999_max_s": d["p999_max_s"],
                "p999_rounds": d.get("p999_rounds"), "pittel_bound_rounds":
                    d["pittel_push_rounds_bound"], "coverage": d["coverage"],
                "msgs_per_node_s": r["messages_per_node_per_s"],
                "bytes_per_node_s": r["bytes_per_node_per_s"],
                "speedup_x": r["speedup_x"], "wall_s": r["wall_time_s"],
                "violations": len(r["invariants"]["violations"]),
            })
            _print_row(rows[-1])
    return rows


def _print_row(row: dict[str, Any]) -> None:
    print("  " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def revocation(n: int, duration_s: float) -> dict[str, Any]:
    r = _run(nodes=n, scenario="revocation", duration_s=duration_s)
    rev = r["revocation"]
    row = {"nodes": n, "p50_s": rev["p50_s"], "p99_s": rev["p99_s"], "p999_s": rev["p999_s"],
           "coverage": rev["coverage"], "refused_bad_signature": rev["bad_signature"],
           "refused_untrusted": rev["untrusted"],
           "violations": len(r["invariants"]["violations"]), "wall_s": r["wall_time_s"]}
    _print_row(row)
    return row


def detection(scenario: str, n: int, duration_s: float, rate: float) -> dict[str, Any]:
    """First detection of crashes: under ``churn`` (overlapping faults) or ``crash`` (one at
    a time, SWIM's model); SWIM's count with its standard error."""
    r = _run(nodes=n, scenario=scenario, duration_s=duration_s, churn_per_s=rate,
             liveness_deadline_s=60.0)
    det = r["detection"]
    row = {"scenario": scenario, "nodes": n, "duration_s": duration_s, "rate_per_s": rate,
           "crashes": det["crashes_detected"],
           "mean_s": det["first_detection_mean_s"],
           "mean_probe_periods": det["first_detection_mean_probe_periods"],
           "first_probe_mean_periods": det["first_probe_mean_probe_periods"],
           "swim_periods": det["first_detection_swim_periods"],
           "swim_periods_stderr": det["first_detection_swim_periods_stderr"],
           "p50_s": det["first_detection_p50_s"], "p99_s": det["first_detection_p99_s"],
           "swim_bound_periods": round(math.e / (math.e - 1), 3),
           "violations": len(r["invariants"]["violations"])}
    _print_row(row)
    return row


def lifeguard(n: int, duration_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": n, "duration_s": duration_s}
    for on in (True, False):
        r = _run(nodes=n, scenario="slow-node", duration_s=duration_s, lifeguard=on,
                 slow_nodes=2, liveness_deadline_s=60.0)
        det = r["detection"]
        key = "on" if on else "off"
        out[f"false_suspicions_{key}"] = det["false_suspicions"]
        out[f"false_suspicions_raised_{key}"] = det["false_suspicions_raised"]
        out[f"false_deaths_{key}"] = det["false_positives"]
    out["ratio_off_over_on"] = round(out["false_suspicions_off"] /
                                     max(1, out["false_suspicions_on"]), 1)
    _print_row(out)
    return out


def speed(n: int, duration_s: float, engines: tuple[str, ...] = ("cpython", "mypyc"),
          event_order: int | None = None) -> dict[str, Any]:
    """The steady scenario in each engine, each in its own process, in the same run: the
    compiled snapshot must give the same trace digest. Speeds are virtual seconds per CPU
    second of the simulating process (``speedup_cpu_x``; the wall-clock figure beside it counts
    other processes' turns on a shared machine), and the ceiling is the empty event loop's
    events per CPU second over the protocol's events per virtual second, in the same run."""
    from sim import accel

    if "mypyc" in engines:
        try:
            accel.build()
        except accel.AccelError as exc:
            print(f"(no compiled engine: {exc})")
            engines = tuple(e for e in engines if e != "mypyc")
    row: dict[str, Any] = {"nodes": n}
    reports = {}
    for engine in engines:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            cmd = [sys.executable, "-P", "-m", "sim", "--engine", engine, "--nodes", str(n),
                   "--scenario", "steady", "--seed", str(SEED), "--duration-s", str(duration_s),
                   "--liveness-deadline-s", "2", "--no-progress", "--json", out]
            if event_order is not None:
                cmd += ["--event-order", str(event_order)]
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
            with open(out, encoding="utf-8") as f:
                r = json.load(f)
        reports[engine] = r
        row[f"{engine}_speedup_cpu_x"] = r["speedup_cpu_x"]
        row[f"{engine}_speedup_wall_x"] = r["speedup_x"]
        row[f"{engine}_events_per_cpu_s"] = round(r["events"] / r["cpu_time_s"])
        row[f"{engine}_setup_s"] = r["setup_s"]
        row[f"{engine}_peak_rss_mib"] = r["peak_rss_mib"]
        row[f"{engine}_rss_kib_per_node"] = round(r["peak_rss_mib"] * 1024 / n, 2)
    first = reports[engines[0]]
    row["event_order"] = first["event_order"]
    row["virtual_s"] = first["virtual_time_s"]
    row["events"] = first["events"]
    row["elided_deliveries"] = first["elided_deliveries"]
    row["violations"] = len(first["invariants"]["violations"])
    # The ceiling: the same event loop doing no protocol work, same queue size, same engines.
    per_virtual_s = first["events"] / first["virtual_time_s"]
    row["events_per_virtual_s"] = round(per_virtual_s)
    for engine in engines:
        ceil = _ceiling(engine, pending=n)
        rate = int(ceil["events_per_s"])
        row[f"{engine}_empty_loop_events_per_cpu_s"] = rate
        row[f"{engine}_ceiling_x"] = round(rate / per_virtual_s, 2)
        row[f"{engine}_core_event_costs_us"] = ceil["core_event_costs_us"]
    if len(reports) == 2:
        row["compiled_vs_interpreted"] = round(reports["mypyc"]["speedup_cpu_x"]
                                               / reports["cpython"]["speedup_cpu_x"], 2)
        row["same_trace"] = reports["mypyc"]["trace_digest"] == reports["cpython"]["trace_digest"]
    _print_row(row)
    return row


def _ceiling(engine: str, pending: int, events: int = 2_000_000) -> dict[str, Any]:
    """:mod:`sim.ceiling` in ``engine``'s child: the empty loop's events per wall second and
    the cheapest events' cost on the cores."""
    from sim import accel

    env = dict(os.environ)
    if engine == "mypyc":
        snap = accel.snapshot_dir()
        if snap is None:
            raise RuntimeError("no fresh compiled snapshot")
        env = accel.snapshot_env(snap)
    # -c, not -m: a compiled module has no code object for runpy.
    code = "import sys, sim.ceiling; sys.exit(sim.ceiling.main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-P", "-c", code, "--pending", str(pending),
                          "--events", str(events)], check=True, capture_output=True, text=True,
                         env=env)
    r: dict[str, Any] = json.loads(out.stdout)
    if r["engine"] != engine:
        raise RuntimeError(f"sim.ceiling ran as {r['engine']}, wanted {engine}")
    return r


def plot_scaling(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pp = [r for r in rows if r["mode"] == "push-pull"]
    ns = [r["nodes"] for r in pp]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(ns, [r["msgs_per_node_s"] for r in pp], "o-", label="messages/node/s")
    a1b = a1.twinx()
    a1b.plot(ns, [r["bytes_per_node_s"] for r in pp], "s--", color="tab:orange",
             label="bytes/node/s")
    a1.set_xscale("log")
    a1.set_xlabel("nodes (log)")
    a1.set_ylabel("messages per node per second")
    a1b.set_ylabel("bytes per node per second")
    a1.set_ylim(bottom=0)
    a1b.set_ylim(bottom=0)
    a1.set_title("load per node vs cluster size (1 update/s)")
    for mode, style in (("push-pull", "o-"), ("push-only", "x--"), ("push-only-fanout-1", "^:")):
        sel = [r for r in rows if r["mode"] == mode and r["p999_s"] is not None]
        a2.plot([r["nodes"] for r in sel], [r["p999_s"] for r in sel], style, label=mode)
    a2.set_xscale("log")
    a2.set_xlabel("nodes (log)")
    a2.set_ylabel("time to 99.9% coverage (s)")
    a2.set_title("spread of one score update (200 ms rounds)")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def integrity_bench(nodes: int, jobs: int, liars: float, seed: int = SEED) -> dict[str, Any]:
    """The tasks scenario with r = 3, q = 2 (issue 13's benchmarks): ``liars`` of the nodes
    lying on 10 % of their runs, honest nodes with noisy timing (lognormal sigma 0.1, 1 % of
    runs x1.5-3 from host contention), 10 % slow nodes (8x); no injected crashes or
    revocations, so every revocation is the score rule's."""
    from sim.tasks import TasksConfig, TasksWorld

    cfg = TasksConfig(seed=seed, nodes=nodes, jobs=jobs, redundancy=3, quorum=2,
                      liar_fraction=liars, lie_rate=0.1, crashes=0, revocations=0,
                      submit_window_s=jobs * 6.0, duration_s=jobs * 6.0 + 3600)
    t0 = time.perf_counter()
    r = TasksWorld(cfg).run()
    g = r["integrity"]
    row = {"seed": seed, "nodes": nodes, "jobs": jobs, "fragments": jobs * cfg.fragments,
           "liar_fraction": liars, "wall_s": round(time.perf_counter() - t0, 1),
           "violations": r["invariants"]["violation_count"], **g}
    ttr = g["time_to_revoke_s"]
    if liars:
        print(f"  detection: {nodes} nodes, {g['liars']} liars x 10 % of runs, r=3 q=2, seed {seed}: "
              f"wrong results delivered {g['wrong_results_delivered']}/{g['jobs_delivered']} jobs "
              f"(goal 0); liars revoked {g['detected_liars']}/{g['liars']} "
              f"({g['liars_lying']} lied at least once; {g['lies_accepted']} lies committed as "
              f"results, each outvoted); "
              f"time to revoke median {ttr['median']} s max {ttr['max']} s; false findings "
              f"{g['false_findings']}, honest revoked {g['honest_revoked']}, "
              f"violations {row['violations']} [{row['wall_s']} s]")
    else:
        print(f"  false findings: {nodes} honest nodes (10 % slow), noisy timing, seed {seed}: "
              f"{g['false_findings']} on {g['fragments_agreed']} fragments = "
              f"{g['false_findings_per_10k_fragments']} per 10,000 (goal <= 1); slow-node "
              f"findings {g['slow_findings']}, honest revoked {g['honest_revoked']}, "
              f"violations {row['violations']} [{row['wall_s']} s]")
    return row


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_sim")
    p.add_argument("--full", action="store_true", help="include 3,000 and 10,000 nodes")
    p.add_argument("--out", default=None, help="directory for bench_sim.json and the PNG")
    p.add_argument("--only", choices=PARTS, action="append",
                   help="run only these parts (repeatable; default: all)")
    p.add_argument("--speed-sizes", default=None, metavar="N,N,...",
                   help="speed part: these node counts (e.g. 1000,10000,100000) instead of the "
                        "default 1,000 (and 10,000 with --full)")
    p.add_argument("--speed-engines", default="cpython,mypyc",
                   help="speed part with --speed-sizes: engines, comma-separated")
    p.add_argument("--speed-duration-s", type=float, default=5.0,
                   help="speed part with --speed-sizes: virtual seconds of the safety phase")
    p.add_argument("--event-order", type=int, choices=(1, 2), default=None,
                   help="speed part: the world's event order (default: the world's default)")
    args = p.parse_args(argv)
    full = args.full
    parts = args.only or [p for p in PARTS if full or p not in ASKED_ONLY]
    print(f"SEED={SEED}")
    results: dict[str, Any] = {}
    if "spread" in parts:
        print("spread + load (push-pull vs push-only):")
        sizes = [100, 300, 1000, 3000, 10000] if full else [100, 300, 1000]
        results["spread"] = spread(sizes, duration_s=8.0)
    if "revocation" in parts:
        print("revocation:")
        results["revocation"] = revocation(10000 if full else 1000, duration_s=6.0)
    if "detection" in parts:
        print("first failure detection (churn at 0.5/s; one crash at a time):")
        results["detection"] = [
            detection("churn", 200, 2400.0 if full else 120.0, 0.5),
            detection("crash", 100, 4000.0 if full else 300.0, 0.25),
        ]
    if "lifeguard" in parts:
        print("Lifeguard on/off under 2 slow nodes:")
        results["lifeguard"] = lifeguard(100, duration_s=600.0 if full else 180.0)
    if "speed" in parts:
        print("simulator speed (steady, 1 update/s) and the empty-loop ceiling, per CPU second:")
        if args.speed_sizes:
            engines = tuple(args.speed_engines.split(","))
            results["speed"] = [speed(int(x), args.speed_duration_s, engines, args.event_order)
                                for x in args.speed_sizes.split(",")]
        else:
            results["speed"] = [speed(1000, 20.0)] + ([speed(10000, 10.0)] if full else [])
    if "integrity" in parts:
        print("integrity (tasks scenario, r = 3, q = 2):")
        jobs = 1250 if full else 250
        results["integrity"] = [integrity_bench(100, jobs, 0.05), integrity_bench(100, jobs, 0.0)]
    if "fidelity" in parts:
        from bench import bench_fidelity

        print("fidelity: the simulator against real node processes (5 nodes, network namespaces):")
        fid_out = tempfile.mkdtemp(prefix="bench_fidelity_")
        rc = bench_fidelity.main(["--out", fid_out] + ([] if full else ["--loss", "0", "--window-s", "60",
                                                                         "--pauses", "15"]))
        fid_json = os.path.join(fid_out, "fidelity.json")
        if rc == 0 and os.path.exists(fid_json):
            with open(fid_json, encoding="utf-8") as f:
                results["fidelity"] = json.load(f)
        else:
            print(f"fidelity: not measured (bench_fidelity exited {rc})", file=sys.stderr)
    out = args.out or tempfile.mkdtemp(prefix="bench_sim_")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench_sim.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    if "spread" in results:
        try:
            plot_scaling(results["spread"], os.path.join(out, "sim_scaling.png"))
        except ImportError:
            print("matplotlib missing: no PNG", file=sys.stderr)
    print(f"results in {out}")
    bad = sum(r.get("violations", 0) for r in results.get("spread", []) + results.get("integrity", []))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
