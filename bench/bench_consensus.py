"""Manager failover and hand-over figures, in virtual time, from the seeded cluster harness.

    python -m bench consensus                       # via the runner (1,000 runs)
    python bench/bench_consensus.py --runs 1000 --seed 1

Setup: 5 council members, tick = 10 ms, heartbeat = 5 ticks (50 ms), election timeout
randomized in [15, 30) ticks ([150, 300) ms), one-way message delay uniform in [1, 5] ms,
pre-vote and check-quorum on, no loss. Each run warms up, then at a random instant either

- crashes the manager (Raft leader): *failover* = time from the crash until a new leader is
  elected (detection by election timeout + pre-vote + vote rounds); or
- asks the manager to hand over (``transfer_leader`` to the best other member): *handover
  gap* = time from the request (when the old manager stops accepting proposals) until the
  new manager is elected.

All times are virtual: they measure the protocol, not this machine. The baseline printed
alongside is the configuration itself (heartbeat interval, base election timeout), so the
ratios say how many timeouts/heartbeats a failover costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.council.cluster import Cluster, SimConfig

TICK_MS = 10
HEARTBEAT_MS = 50
ELECTION_MS = 150
TARGET_FAILOVER_MEDIAN_MS = 300
TARGET_FAILOVER_MAX_MS = 550


def _config() -> SimConfig:
    return SimConfig(
        tick_ms=TICK_MS, election_tick=ELECTION_MS // TICK_MS, heartbeat_tick=HEARTBEAT_MS // TICK_MS,
        delay_ms=(1, 5), loss=0.0, dup=0.0, partition_every_ms=0, crash_every_ms=0, clients=0,
    )


def _warm(seed: int) -> Cluster:
    c = Cluster(seed, _config())
    c.run_until(1000)
    # A random instant relative to the heartbeat phase.
    c.run_until(1000 + c.rng.randrange(HEARTBEAT_MS * 4))
    return c


def _new_leader_committed(c: Cluster, old_term: int) -> bool:
    lead = c.leader()
    if lead is None:
        return False
    r = c.nodes[lead].rn.raft
    return r.term > old_term and r.log.term(r.log.committed) == r.term


def failover_ms(seed: int) -> tuple[int, int] | None:
    """(crash -> new leader elected, crash -> new leader committed its first entry)."""
    c = _warm(seed)
    old = c.leader()
    if old is None:
        return None
    old_term = c.nodes[old].rn.raft.term
    t0 = c.now
    c.crash(old)
    c.run_until(t0 + 5000, stop=lambda: _new_leader_committed(c, old_term))
    elected = [t for t, term, _ in c.elections if term > old_term]
    if not elected or not _new_leader_committed(c, old_term):
        return None
    return elected[0] - t0, c.now - t0


def handover_ms(seed: int) -> int | None:
    c = _warm(seed)
    old = c.leader()
    if old is None:
        return None
    r = c.nodes[old].rn.raft
    old_term = r.term
    target = max((v for v in r.voters if v != old), key=lambda v: (r.progress[v].match, -v))
    t0 = c.now
    c.nodes[old].rn.transfer_leader(target)
    c.process(c.nodes[old])
    c.run_until(t0 + 5000, stop=lambda: any(term > old_term for _, term, _ in c.elections))
    for t, term, _ in c.elections:
        if term > old_term:
            return t - t0
    return None


def _pct(xs: list[int], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_consensus")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"SEED={args.seed} runs={args.runs} tick={TICK_MS}ms heartbeat={HEARTBEAT_MS}ms "
          f"election=[{ELECTION_MS},{2 * ELECTION_MS})ms delay=1-5ms nodes=5")
    wall = time.perf_counter()
    fo = [failover_ms(args.seed * 1_000_003 + i) for i in range(args.runs)]
    ho = [handover_ms(args.seed * 2_000_003 + i) for i in range(args.runs)]
    wall = time.perf_counter() - wall
    fo_ok = [x[0] for x in fo if x is not None]
    fo_commit = [x[1] for x in fo if x is not None]
    ho_ok = [x for x in ho if x is not None]
    med, mx = statistics.median(fo_ok), max(fo_ok)
    print(f"failover (manager crash -> new leader), {len(fo_ok)}/{args.runs} runs:")
    print(f"  median {med:.0f} ms  p90 {_pct(fo_ok, 0.9):.0f} ms  p99 {_pct(fo_ok, 0.99):.0f} ms  "
          f"max {mx} ms   (= {med / ELECTION_MS:.2f} / {mx / ELECTION_MS:.2f} base election "
          f"timeouts)")
    print(f"  until the new leader commits its first entry: median "
          f"{statistics.median(fo_commit):.0f} ms  max {max(fo_commit)} ms")
    print(f"  target median <= {TARGET_FAILOVER_MEDIAN_MS} ms: "
          f"{'met' if med <= TARGET_FAILOVER_MEDIAN_MS else 'MISSED'};  "
          f"target max <= {TARGET_FAILOVER_MAX_MS} ms: "
          f"{'met' if mx <= TARGET_FAILOVER_MAX_MS else 'MISSED'}")
    hmed, hmx = statistics.median(ho_ok), max(ho_ok)
    print(f"handover gap (transfer request -> new leader), {len(ho_ok)}/{args.runs} runs:")
    print(f"  median {hmed:.0f} ms  p99 {_pct(ho_ok, 0.99):.0f} ms  max {hmx} ms   "
          f"(= {hmx / HEARTBEAT_MS:.2f} heartbeat intervals at worst)")
    print(f"  target <= one heartbeat ({HEARTBEAT_MS} ms): "
          f"{'met' if hmx <= HEARTBEAT_MS else 'MISSED'}")
    print(f"wall time {wall:.1f} s for {2 * args.runs} simulated runs")
    missing = (args.runs - len(fo_ok)) + (args.runs - len(ho_ok))
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
