"""The simulator against real node processes (issue 17, item 4): the same small federation run
both ways, the same two figures from each, side by side.

    python -m bench.bench_fidelity                          # 5 nodes; clean links, then 5 % loss
    python -m bench.bench_fidelity --nodes 7 --window-s 90 --pauses 40 --loss 0,2 --out DIR

*Real*: ``--nodes`` ``enclave-swarm run`` processes in network namespaces on a bridge
(node/chaos/netns.py, root), the chaos federation's settings (profile local-test: SWIM probes
every 1 s with a 0.2 s timeout, gossip rounds of 0.1 s; re-attestation every 4 s), JSON logs at
debug level. Loss, where asked, is nftables' per-packet drop on every namespace's input and
output (this kernel has no sch_netem: no added latency; veth's own is ~0.05 ms).
*Simulated*: the same cores with the same configs (``MembershipConfig.local_test()``,
``DisseminationConfig.local_test()``), the LAN link model (0.25 ms one way), the loss a packet
meets on its path through two namespaces (1 − (1 − p)²), several seeds.

1. *Dissemination of a score update*: for each score record issued in the measuring window,
   seconds from its issue to the moment every live node holds it (and half of them, the issuer
   counted at 0). Real: the issuer's ``issued_at`` (all processes share one clock) against each
   receiver's ``accepted a score record`` debug line. Simulated: the world's per-record track.
   The records are the nodes' own score records, each node about each peer at every
   re-attestation; the simulator's ``reattest`` workload publishes the same (real-sized
   records, a full mesh every 4 s) with the timing measured from the real run's logs (how
   long a node's burst lasts, how close together the nodes' rounds fall:
   :func:`real_schedule`). The steady scenario's default ``uniform`` workload at the same
   rate is printed beside it: it was the simulator's figure before this bench, and it
   put the spread at 0.43-0.47 of the real one (docs/simulator.md, "Fidelity").
2. *Detection of a silent node*: a node stops answering (real: SIGSTOP, so its connections
   stay open and nothing tells its peers but their probes; simulated: the ``crash``
   scenario), seconds until any member first suspects it. Real: the ``member <id> is
   suspect`` line of any other node's log; then SIGCONT and a random gap.

Medians with their 95 % bootstrap intervals, and simulated/real ratios; the issue's goal is
agreement within 25 % on the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.spread import quartiles

ACCEPT = re.compile(r"accepted a (?P<kind>[a-z0-9-]+) record by (?P<issuer>\S+) about (?P<subject>\S+) "
                    r"\(version (?P<version>\d+), issued at (?P<issued>[0-9.]+)\)")
SUSPECT = re.compile(r"member (?P<node>\S+) is suspect ")
RUN_ARGS = ["--log-format", "json", "--log-level", "debug"]


# ---------------------------------------------------------------------- pure figures

def parse_ts(ts: str) -> float:
    """The JSON log's ``2026-12-04T17:40:02.123Z`` as Unix seconds."""
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC).timestamp()


Accept = tuple[float, str, str, int, float]  # (at, issuer, subject, version, issued_at)


def read_log(lines: Iterable[str]) -> tuple[list[Accept], list[tuple[float, str]]]:
    """From one node's JSON log: the score records it accepted, ``(at, issuer, subject,
    version, issued_at)``, and its suspicions, ``(at, suspected node)``. Lines that are not
    JSON (libp2p's start-up noise) or not these are skipped."""
    accepts: list[Accept] = []
    suspects: list[tuple[float, str]] = []
    for line in lines:
        try:
            rec = json.loads(line)
            msg, at = rec["msg"], parse_ts(rec["ts"])
        except (ValueError, KeyError, TypeError):
            continue
        if (m := ACCEPT.match(msg)) is not None:
            if m["kind"] == "score":
                accepts.append((at, m["issuer"], m["subject"], int(m["version"]), float(m["issued"])))
        elif (m := SUSPECT.match(msg)) is not None:
            suspects.append((at, m["node"]))
    return accepts, suspects


def record_spreads(accepts_by_node: dict[str, list[Accept]],
                   nodes: Sequence[str], since: float, until: float) -> list[list[float]]:
    """Per score record issued in [since, until): the delays (seconds after issue) at which
    each node held it, the issuer's 0 first; a node that never accepted it is missing."""
    got: dict[tuple[str, str, int], dict[str, float]] = {}
    issued: dict[tuple[str, str, int], float] = {}
    for node in nodes:
        for at, issuer, subject, version, issued_at in accepts_by_node.get(node, ()):
            if not since <= issued_at < until or issuer not in nodes:
                continue
            key = (issuer, subject, version)
            issued[key] = issued_at
            got.setdefault(key, {}).setdefault(node, at)
    out = []
    for key, by_node in got.items():
        delays = sorted(max(0.0, at - issued[key]) for node, at in by_node.items() if node != key[0])
        out.append([0.0, *delays])
    return out


def real_schedule(accepts_by_node: dict[str, list[Accept]],
                  interval_s: float, *, gap_s: float = 0.5) -> dict[str, float]:
    """How the real nodes published, to give the simulator's reattest workload the same
    timing: ``burst_s``, the 90th percentile of a record's delay after the first of its
    burst (an issuer's records less than ``gap_s`` apart); ``phase_s``, the shortest arc of
    the re-attestation cycle that holds every issuer's typical phase (its bursts' median start
    modulo ``interval_s``)."""
    issued: dict[str, set[float]] = {}
    for accepts in accepts_by_node.values():
        for _at, issuer, _subject, _version, issued_at in accepts:
            issued.setdefault(issuer, set()).add(issued_at)
    offsets: list[float] = []
    phases: list[float] = []
    for times in issued.values():
        starts: list[float] = []
        last = -math.inf
        for t in sorted(times):
            if t - last >= gap_s:
                starts.append(t)
            offsets.append(t - starts[-1])
            last = t
        phases.append(statistics.median(x % interval_s for x in starts))
    if not phases:
        return {"burst_s": 0.0, "phase_s": interval_s}
    phases.sort()
    # The widest empty gap between neighbouring phases on the circle; the rest is the arc.
    gaps = [b - a for a, b in itertools.pairwise(phases)] + [phases[0] + interval_s - phases[-1]]
    offsets.sort()
    return {"burst_s": round(offsets[min(len(offsets) - 1, int(0.9 * len(offsets)))], 4),
            "phase_s": round(interval_s - max(gaps), 4)}


def t_q(delays: Sequence[float], live: int, q: float) -> float | None:
    """Seconds until a fraction ``q`` of ``live`` nodes held the record (the simulator's
    definition, sim/report.py); None if it never did."""
    need = max(1, math.ceil(q * live - 1e-9))
    return sorted(delays)[need - 1] if len(delays) >= need else None


def summary(xs: Sequence[float], *, resamples: int = 2000, seed: int = 7) -> dict[str, Any]:
    """Count, median with a 95 % bootstrap interval, quartiles, p90 and max (milliseconds)."""
    if not xs:
        return {"n": 0}
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    q1, med, q3 = quartiles(xs)
    s = sorted(xs)
    return {"n": len(xs), "median_ms": round(med * 1000, 1),
            "median_ci_ms": [round(meds[int(0.025 * resamples)] * 1000, 1),
                             round(meds[int(0.975 * resamples) - 1] * 1000, 1)],
            "q1_ms": round(q1 * 1000, 1), "q3_ms": round(q3 * 1000, 1),
            "p90_ms": round(s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)] * 1000, 1),
            "max_ms": round(s[-1] * 1000, 1)}


def path_loss(per_hop: float) -> float:
    """A packet between two namespaces meets the drop rule twice (sender's output, receiver's
    input)."""
    return 1.0 - (1.0 - per_hop) ** 2


# ---------------------------------------------------------------------- the simulator

def simulated(nodes: int, loss: float, *, seeds: int, duration_s: float, reattest_s: float,
              crashes_per_seed: int, schedule: dict[str, float] | None = None) -> dict[str, Any]:
    """The simulator's figures over ``seeds`` seeds. Dissemination under the ``reattest``
    workload (every node, every ``reattest_s``, a real-sized record about each peer, as the
    real nodes publish), and under the steady scenario's default ``uniform`` workload at the
    same rate (small records, evenly spread) for comparison: the first finding of this bench.
    ``schedule`` (:func:`real_schedule`) gives the reattest rounds the real nodes' timing."""
    from overlay.dissemination import DisseminationConfig
    from overlay.membership import MembershipConfig
    from sim.world import SimConfig, World

    common = {"nodes": nodes, "loss": loss, "profile": "lan", "liveness_deadline_s": 10.0,
              "membership": MembershipConfig.local_test(),
              "dissemination": DisseminationConfig.local_test()}
    spread: dict[str, tuple[list[float], list[float], list[int]]] = {}
    det: list[float] = []
    for seed in range(1, seeds + 1):
        for workload in ("reattest", "uniform"):
            all_s, half_s, unreached = spread.setdefault(workload, ([], [], [0]))
            timing = {"reattest_phase_s": schedule["phase_s"],
                      "reattest_burst_s": schedule["burst_s"]} if schedule else {}
            w = World(SimConfig(seed=seed, scenario="steady", duration_s=duration_s, workload=workload,
                                reattest_interval_s=reattest_s, **timing,
                                updates_per_s=nodes * (nodes - 1) / reattest_s, **common))
            w.run()
            for tr in w.tracks.values():
                if tr.t0 < 5.0 or tr.t0 > duration_s - 5.0:
                    continue
                full = t_q(tr.times, tr.live, 1.0)
                unreached[0] += full is None
                all_s += [full] if full is not None else []
                if (h := t_q(tr.times, tr.live, 0.5)) is not None:
                    half_s.append(h)
        # crash: ~5 s per crash at churn 0.5/s (detection, 2 s settle, a 1-3 s gap)
        w = World(SimConfig(seed=seed, scenario="crash", churn_per_s=0.5, updates_per_s=0.0,
                            duration_s=5.5 * crashes_per_seed, **common))
        w.run()
        det += w.detections
    a, h, u = spread["reattest"]
    ua, uh, _ = spread["uniform"]
    return {"to_all": summary(a), "to_half": summary(h), "unreached": u[0],
            "uniform_to_all": summary(ua), "uniform_to_half": summary(uh), "detection": summary(det)}


# ---------------------------------------------------------------------- real processes

def real(nodes: int, loss_pct: float, *, window_s: float, pauses: int, out: Path,
         seed: int) -> dict[str, Any]:
    from node.chaos.cluster import REATTEST_S, Cluster
    from node.chaos.netns import TestNet

    rng = random.Random(seed)
    with TestNet(nodes) as net:
        c = Cluster(out, net, run_args=RUN_ARGS)
        try:
            c.prepare()
            c.start_all()
            ids = [n.peer_id for n in c.nodes]
            _wait(lambda: all((s := c.status(i)) and s["attested_peers"] == nodes - 1
                              for i in range(nodes)), 180, "every node attested by every other")
            effect = net.shape(range(nodes), {"loss_pct": loss_pct}) if loss_pct else {}
            time.sleep(10.0)  # settle: re-attestations under the new loss, a manager
            since = time.time()
            time.sleep(window_s)
            until = time.time() - 3.0  # records issued at the very end may still be spreading
            # What could slow the real side down: dropped or refused gossip, a lagging loop.
            health = {i: {"loop": st.get("loop"),
                          "counters": {k: v for k, v in st.get("counters", {}).items()
                                       if k.startswith(("gossip", "record", "swim"))}}
                      for i in range(nodes) if (st := c.status(i))}
            detections: list[float] = []
            missed = 0
            for _ in range(pauses):
                mgr = (c.status(0) or {}).get("manager")
                victim = rng.choice([i for i in range(nodes) if ids[i] != mgr])
                time.sleep(rng.uniform(0.0, 1.0))  # a random phase against the probe period
                t0 = time.time()
                c.pause(victim)
                first = _first_suspicion(c, victim, t0, timeout_s=30.0)
                c.resume(victim)
                if first is None:
                    missed += 1
                else:
                    detections.append(first - t0)
                _wait(lambda v=victim: all(_sees_alive(c.status(i), ids[v])
                                           for i in range(nodes) if i != v), 60,
                      f"node {victim} alive again in every view")
                time.sleep(1.0)
            logs = {ids[i]: read_log(c.nodes[i].log_path.read_text(errors="replace").splitlines())
                    for i in range(nodes)}
        finally:
            c.stop_all()
            with contextlib.suppress(OSError):
                c.keep_logs(out / "logs")
            c.unmount()
    accepts = {k: v[0] for k, v in logs.items()}
    spreads = record_spreads(accepts, ids, since, until)
    all_s = [x for d in spreads if (x := t_q(d, nodes, 1.0)) is not None]
    half_s = [x for d in spreads if (x := t_q(d, nodes, 0.5)) is not None]
    return {"to_all": summary(all_s), "to_half": summary(half_s),
            "unreached": len(spreads) - len(all_s), "records_per_s": round(len(spreads) / (until - since), 2),
            "expected_records_per_s": round(nodes * (nodes - 1) / REATTEST_S, 2),
            "detection": summary(detections), "pauses_not_suspected": missed, "link": effect,
            "health": health, "schedule": real_schedule(accepts, REATTEST_S)}


def _wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"not reached in {timeout_s:.0f} s: {what}")


def _sees_alive(status: dict[str, Any] | None, peer_id: str) -> bool:
    if not status:
        return False
    return any(p["peer_id"] == peer_id and p["attested"] and p.get("membership", "alive") == "alive"
               for p in status["peers"])


def _first_suspicion(c: Any, victim: int, t0: float, timeout_s: float) -> float | None:
    """The earliest ``member <victim> is suspect`` line after ``t0`` in another node's log."""
    vid = c.nodes[victim].peer_id
    deadline = time.monotonic() + timeout_s
    offsets = {n.index: n.log_path.stat().st_size for n in c.nodes if n.index != victim}
    while time.monotonic() < deadline:
        time.sleep(0.1)
        seen = []
        for i, off in offsets.items():
            with open(c.nodes[i].log_path, encoding="utf-8", errors="replace") as f:
                f.seek(off)
                seen += [at for at, node in read_log(f.read().splitlines())[1] if node == vid and at >= t0]
        if seen:
            return min(seen)
    return None


# ---------------------------------------------------------------------- report

def ratio(sim: dict[str, Any], real_: dict[str, Any]) -> float | None:
    if not sim.get("n") or not real_.get("n") or not real_["median_ms"]:
        return None
    return round(sim["median_ms"] / real_["median_ms"], 2)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_fidelity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--loss", default="0,5", help="per-hop loss in percent, comma-separated runs")
    ap.add_argument("--window-s", type=float, default=60.0, help="real: seconds of records measured")
    ap.add_argument("--pauses", type=int, default=25, help="real: silent-node faults per run")
    ap.add_argument("--sim-seeds", type=int, default=10)
    ap.add_argument("--sim-crashes", type=int, default=40, help="simulated crashes per seed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs' logs and the JSON here")
    args = ap.parse_args(argv)
    from node.chaos.netns import unavailable_reason

    if (why := unavailable_reason()) is not None:
        print(f"bench_fidelity: {why}", file=sys.stderr)
        return 1
    from node.chaos.cluster import REATTEST_S

    rows = []
    with contextlib.ExitStack() as stack:
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fidelity-")))
        for pct in (float(x) for x in args.loss.split(",")):
            t0 = time.monotonic()
            r = real(args.nodes, pct, window_s=args.window_s, pauses=args.pauses,
                     out=out / f"loss{pct:g}", seed=args.seed)
            real_s = time.monotonic() - t0
            s = simulated(args.nodes, path_loss(pct / 100), seeds=args.sim_seeds, duration_s=60.0,
                          reattest_s=REATTEST_S, crashes_per_seed=args.sim_crashes,
                          schedule=r["schedule"])
            row = {"nodes": args.nodes, "loss_per_hop_pct": pct,
                   "sim_path_loss": round(path_loss(pct / 100), 4), "real": r, "sim": s,
                   "ratio_to_all": ratio(s["to_all"], r["to_all"]),
                   "ratio_to_half": ratio(s["to_half"], r["to_half"]),
                   "ratio_uniform_to_all": ratio(s["uniform_to_all"], r["to_all"]),
                   "ratio_detection": ratio(s["detection"], r["detection"]), "real_run_s": round(real_s)}
            rows.append(row)
            _print(row)
        (out / "fidelity.json").write_text(json.dumps(rows, indent=1))
        if args.out:
            print(f"logs and fidelity.json in {out}")
    return 0


def _print(row: dict[str, Any]) -> None:
    print(f"\n{row['nodes']} nodes, {row['loss_per_hop_pct']:g} % loss per hop "
          f"(simulated path loss {row['sim_path_loss']}); real run {row['real_run_s']} s")
    r, s = row["real"], row["sim"]
    for name, key, rkey in (("score record to every node", "to_all", "to_all"),
                            ("score record to half", "to_half", "to_half"),
                            ("  (sim uniform workload)", "uniform_to_all", "to_all"),
                            ("silent node, first suspicion", "detection", "detection")):
        a, b = r[rkey], s[key]
        if not a.get("n") or not b.get("n"):
            print(f"  {name}: no samples (real {a.get('n', 0)}, simulated {b.get('n', 0)})")
            continue
        print(f"  {name:30s} real median {a['median_ms']:7.1f} ms {a['median_ci_ms']} (n={a['n']}, "
              f"p90 {a['p90_ms']})  sim {b['median_ms']:7.1f} ms {b['median_ci_ms']} (n={b['n']}, "
              f"p90 {b['p90_ms']})  sim/real {ratio(b, a)}")
    print(f"  real publication (given to the simulator): bursts {r['schedule']['burst_s'] * 1000:.0f} ms, "
          f"the nodes' rounds within {r['schedule']['phase_s'] * 1000:.0f} ms of each other")
    print(f"  unreached records: real {r['unreached']}, sim {s['unreached']}; real records/s "
          f"{r['records_per_s']} (expected {r['expected_records_per_s']}); pauses never suspected "
          f"{r['pauses_not_suspected']}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
