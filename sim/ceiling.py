"""The speed ceiling of this simulator's design: an event loop that does no protocol work.

The world (:mod:`sim.world`) pops ``(time, seq, kind, a, b, c)`` tuples off a binary heap and
each event schedules what it causes. This module runs that loop alone: every event pops one
tuple, draws a destination and a delay, and pushes one successor, so the heap keeps the size a
real run keeps (about one pending tick per node plus messages in flight). Nothing can run the
protocol faster than this loop runs nothing, so

    ceiling speed-up (× real time) = empty-loop events per wall second
                                     / protocol events per virtual second

bounds every optimisation of the cores short of leaving Python. ``sim.accel`` compiles this
module with the others, so ``python -m bench sim`` measures the ceiling in both engines.

:func:`core_event_costs_us` prices the cheapest real events on the production cores alone (a
duplicate push, an idle tick, a ping answered): what each event costs even with a free queue.

    python -m sim.ceiling --pending 10000 --events 2000000   # interpreted
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time

from overlay.dissemination import Dissemination, DisseminationConfig
from overlay.membership import Membership, MembershipConfig, Snapshot
from overlay.messages_gossip import GossipPush, SwimPing
from overlay.records import KIND_SCORE, SimSigner, SimVerifier


def empty_loop_events_per_s(pending: int, events: int, seed: int = 1) -> float:
    """Events per CPU second of the bare loop with ``pending`` events always queued."""
    if pending < 1 or events < 1:
        raise ValueError("pending and events must be >= 1")
    rng = random.Random(seed)
    heap: list[tuple[float, int, int, int, int, object]] = []
    seq = 0
    for i in range(pending):
        seq += 1
        heapq.heappush(heap, (rng.random(), seq, 0, i, 0, None))
    pop = heapq.heappop
    push = heapq.heappush
    rnd = rng.random
    rr = rng.randrange
    done = 0
    # CPU time of this process, as the world's speedup_cpu_x: on a shared machine the wall
    # clock also counts other processes' turns, and the ratio of the two would mean nothing.
    t0 = time.process_time()
    while done < events:
        t, _, kind, a, _b, c = pop(heap)
        seq += 1
        push(heap, (t + 0.001 + rnd() * 0.004, seq, kind, rr(pending), a, c))
        done += 1
    return events / max(time.process_time() - t0, 1e-9)


def core_event_costs_us(nodes: int = 10_000, rounds: int = 100_000) -> dict[str, float]:
    """Microseconds (of CPU time) per call of the cheapest events, on one node's production cores in a
    ``nodes``-member view: a push of a record it already holds, an idle tick of both cores
    with both deadline queries, and a ping answered (the ack drained with ``ready``)."""
    if nodes < 4 or rounds < 1:
        raise ValueError("nodes >= 4 and rounds >= 1")
    ids = [f"n{i:05d}" for i in range(nodes)]
    secrets = {i: i.encode().ljust(16, b"k") for i in ids[:4]}
    rng = random.Random(1)
    now = 1000.0
    m = Membership(ids[0], MembershipConfig.lan(), rng, now, initial_members=Snapshot(ids))
    d = Dissemination(ids[0], DisseminationConfig.lan(), rng, now, verify=SimVerifier(secrets),
                      issuer_trusted=lambda issuer: True, peers=m)
    m.delegate = d
    rec = SimSigner(ids[1], secrets[ids[1]]).sign(KIND_SCORE, ids[2], 1, now, now + 3600.0,
                                                   b"\x00\x01")
    push = GossipPush((rec,))
    d.step(ids[1], push, now)
    d.ready()
    out: dict[str, float] = {}
    t0 = time.process_time()
    for _ in range(rounds):
        d.step(ids[3], push, now)
    out["duplicate_push"] = (time.process_time() - t0) / rounds * 1e6
    later = now + 0.01  # nothing is due yet: no probe, no gossip round, no sync
    t0 = time.process_time()
    for _ in range(rounds):
        m.tick(later)
        d.tick(later)
        m.next_deadline()
        d.next_deadline()
    out["idle_tick"] = (time.process_time() - t0) / rounds * 1e6
    t0 = time.process_time()
    for i in range(rounds):
        m.step(ids[3], SwimPing(i, ids[0]), later)
        m.ready()
    out["ping_answered"] = (time.process_time() - t0) / rounds * 1e6
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    # (a literal, not __doc__: a mypyc-compiled module has no docstring at run time)
    p = argparse.ArgumentParser(prog="python -m sim.ceiling",
                                description="the empty event loop: the simulator's speed ceiling")
    p.add_argument("--pending", type=int, default=10_000, help="events kept in the queue")
    p.add_argument("--events", type=int, default=2_000_000, help="events to run")
    args = p.parse_args(argv)
    rate = empty_loop_events_per_s(args.pending, args.events)
    costs = core_event_costs_us(max(4, args.pending))
    compiled = not (__file__ or "").endswith(".py")
    json.dump({"pending": args.pending, "events": args.events, "events_per_s": round(rate),
               "core_event_costs_us": costs, "engine": "mypyc" if compiled else "cpython"},
              sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
