"""Scheduler throughput: decisions per second at 5,000 candidates, numpy against pure Python.

    python -m bench scheduler
    python bench/bench_scheduler.py --candidates 5000 --decisions 2000 --seed 1

Setup: a swarm of N members (90 % admitted, the rest suspect, revoked or gone), 95 % of them with
a capability record (1–32 cores, 2–64 GiB, 10 % with a GPU, 20 providers, 5 regions, three
TEE kinds, prices 0–3,000 micro-units per core-second); 64 nodes hold input or act as clients,
each with RTTs measured to half the swarm and bandwidth observed from a fifth. A *decision* is
one job: 4 fragments x 2 replicas (8 placements), requirements drawn from 6 templates (TEE kinds,
minimum score, cores, memory, sometimes a GPU, a region or a price cap), a client and 1–3
input holders among the 64, the seed = its log index. Every decision runs all three phases
(filter with per-filter counts, integer scoring of all five components, spread and provider
anti-affine selection).

The numpy engine schedules against a :class:`CandidateTable` built once per committed state
(the build and the first use of each measurement target are timed separately: the manager
rebuilds the table when the state, the capability records or the measurements change). The
baseline is :func:`schedule_reference`, the same rules one node at a time in plain Python, on a
subset of the same decisions; both must agree decision for decision. Goal: >= 3,750 decisions/s
(Nomad's C1M placement rate).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consensus.scheduler import (
    CandidateTable,
    JobRequest,
    Measurements,
    Offer,
    Requirements,
    schedule_reference,
)
from consensus.state import ADMITTED, Member, SwarmState

GOAL_PER_S = 3750
TEMPLATES = (
    Requirements(tee_kinds=("sev-snp", "tdx"), min_score=600, cores=2, memory_mib=2048),
    Requirements(cores=1, memory_mib=512),
    Requirements(tee_kinds=("sev-snp",), min_score=800, cores=4, memory_mib=8192, max_price_core_s=2000),
    Requirements(accelerators=("gpu",), cores=2, memory_mib=4096),
    Requirements(regions=("r1", "r2"), cores=1, memory_mib=1024, max_price_gib=3000),
    Requirements(tee_kinds=("tdx", "sgx"), min_score=700, cores=8, memory_mib=16384),
)


def build_world(n: int, seed: int) -> tuple[SwarmState, dict[str, Offer], Measurements, list[str]]:
    rng = random.Random(seed)
    members, offers = {}, {}
    statuses = [ADMITTED] * 18 + ["suspect", "revoked"]
    ids = [f"12D3KooW{i:08d}" for i in range(n)]
    for i, nid in enumerate(ids):
        members[nid] = Member(nid, i + 1, rng.choice(statuses), f"p{rng.randrange(20)}",
                              f"r{rng.randrange(5)}", rng.choice(("sev-snp", "tdx", "sgx")),
                              rng.randrange(400, 1001), 0)
        if rng.random() < 0.95:
            offers[nid] = Offer(nid, rng.choice((1, 2, 4, 8, 16, 32)), rng.choice((2048, 8192, 16384, 65536)),
                                ("gpu",) if rng.random() < 0.1 else (), rng.randrange(0, 3001, 100),
                                rng.randrange(0, 5001, 100))
    targets = rng.sample(ids, 64)
    rtt = {t: {nid: rng.randrange(1, 300) for nid in ids if rng.random() < 0.5} for t in targets}
    bw = {t: {nid: rng.randrange(100, 100_000) for nid in ids if rng.random() < 0.2} for t in targets}
    return SwarmState(members=members), offers, Measurements(rtt, bw), targets


def jobs(count: int, targets: list[str], seed: int) -> list[JobRequest]:
    rng = random.Random(seed + 1)
    return [JobRequest(f"job-{k}", 4, 2, TEMPLATES[k % len(TEMPLATES)], client=rng.choice(targets),
                       input_holders=tuple(rng.sample(targets, rng.randrange(1, 4))),
                       fragment_bytes=rng.choice((1 << 20, 64 << 20, 1 << 30)))
            for k in range(count)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_scheduler")
    ap.add_argument("--candidates", type=int, default=5000)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--reference", type=int, default=20, help="decisions the pure-Python baseline runs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"SEED={args.seed} candidates={args.candidates} decisions={args.decisions} "
          f"(4 fragments x 2 replicas each) reference={args.reference}")
    state, offers, meas, targets = build_world(args.candidates, args.seed)
    todo = jobs(args.decisions, targets, args.seed)

    t0 = time.perf_counter()
    table = CandidateTable(state, offers, None, meas)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k, t in enumerate(targets):  # first use of each measurement target builds its columns
        table.schedule(JobRequest("warm", 1, 1, client=t), k)
    warm_s = time.perf_counter() - t0

    # Best of three passes: the machine is shared, and the best pass is the least disturbed.
    rates = []
    decisions = []
    for _ in range(3):
        t0 = time.perf_counter()
        decisions = [table.schedule(job, 1000 + k) for k, job in enumerate(todo)]
        rates.append(len(todo) / (time.perf_counter() - t0))
    rate = max(rates)
    placed = sum(len(d.placements) for d in decisions)
    ok = sum(d.ok for d in decisions)

    sub = todo[: args.reference]
    t0 = time.perf_counter()
    ref = [schedule_reference(state, offers, job, 1000 + k, None, meas) for k, job in enumerate(sub)]
    ref_rate = len(sub) / (time.perf_counter() - t0)
    agree = all(a == b for a, b in zip(ref, decisions, strict=False))

    print(f"table build {build_s * 1000:.1f} ms; first use of {len(targets)} measurement targets "
          f"{warm_s * 1000:.1f} ms")
    print(f"numpy:       {rate:,.0f} decisions/s (passes: {', '.join(f'{r:,.0f}' for r in rates)}), "
          f"{rate * placed / max(1, len(decisions)):,.0f} placements/s; {ok}/{len(decisions)} placed")
    print(f"pure Python: {ref_rate:,.1f} decisions/s on {len(sub)} of the same decisions")
    print(f"ratio numpy / pure Python: {rate / ref_rate:,.0f}x; decisions identical: {agree}")
    print(f"goal >= {GOAL_PER_S:,}/s (Nomad C1M) at {args.candidates:,} candidates: "
          f"{'met' if rate >= GOAL_PER_S else f'MISSED by {GOAL_PER_S / rate:.2f}x'}")
    if not ok:
        return 1
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
