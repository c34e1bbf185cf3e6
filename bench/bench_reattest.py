"""Dynamic attestation: how long until every peer cuts off a node whose evidence stops verifying,
against two baselines measured in the same run.

Three in-process nodes (real libp2p on loopback, simulated TEE, ``node.testing.local_config``:
re-attestation every 1 s), fully attested; then node 2 goes bad in one of three ways, one arm
after the other in every round (a fresh federation each time):

- **re-attestation** (what is measured): node 2's TEE starts reporting debug mode, which the
  policy forbids; nothing else happens, so the others find out at their next periodic
  re-attestation (due once per interval, checked by the maintenance loop 4 times per interval);
- **challenge now** (baseline: the verdict's own cost): the same debug switch, and both others
  challenge node 2 at once (``Agent.attest_peer``): one attestation exchange, no waiting for the
  interval;
- **crash** (baseline: a fault the transport shows): node 2 is killed in-process
  (``node.testing.crash_in_process``: its connections close as a killed process's would).

Each figure is the time until both other nodes no longer hold node 2 as attested. The ratio of
re-attestation to challenge-now is the price of periodic checking: at most one interval plus
one maintenance tick plus one exchange.

    python -m bench reattest
    python -m bench.bench_reattest --rounds 3     # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ARMS = ("reattest", "challenge", "crash")


async def _one(tmp: Path, arm: str) -> tuple[float, float]:
    from libp2p.peer.id import ID

    from node.agent import Agent
    from node.testing import crash_in_process, fully_attested, make_agent, run_in_process, wait_until

    async with trio.open_nursery() as nursery:
        agents: list[Agent] = []
        scopes: list[trio.CancelScope] = []
        for i in range(3):
            boot = (agents[0].full_addrs()[0],) if agents else ()
            a = make_agent(tmp, f"n{i}", bootstrap=boot)
            scopes.append(await run_in_process(nursery, a))
            agents.append(a)
        await wait_until(lambda: fully_attested(agents), 60)
        interval = agents[0].config.attestation.reattest_interval_s
        bad, others = agents[2], agents[:2]
        t = time.monotonic()
        if arm == "crash":  # timed from the kill, not from the end of the clean-up
            nursery.start_soon(crash_in_process, bad, scopes[2])
        else:
            bad.provider.debug = True  # type: ignore[attr-defined]
            if arm == "challenge":
                for a in others:
                    nursery.start_soon(a.attest_peer, ID.from_base58(bad.peer_id))
        await wait_until(lambda: all(not a.peers.is_attested(bad.peer_id) for a in others), 30, 0.002)
        dt = time.monotonic() - t
        for a in agents:
            a.stop()
        nursery.cancel_scope.cancel()
    return dt, interval


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_reattest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the three arms (default 10)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reattest-"))
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    interval = 0.0
    for r in range(args.rounds):
        for arm in ARMS:  # interleaved: a load change hits every arm alike
            dt, interval = trio.run(_one, tmp / f"{r}-{arm}", arm)
            times[arm].append(dt)
    print(f"time until both peers stop holding the node as attested, {args.rounds} rounds, "
          f"re-attestation interval {interval:.2f} s, load average {os.getloadavg()[0]:.1f}:")
    for arm, label in (("reattest", "evidence turns bad, found by periodic re-attestation"),
                       ("challenge", "evidence turns bad, challenged at once (baseline)"),
                       ("crash", "node crashes, connections close (baseline)")):
        ts = times[arm]
        print(f"  {label}: median {statistics.median(ts):.3f} s, min {min(ts):.3f} s, "
              f"max {max(ts):.3f} s")
    re_med, ch_med = statistics.median(times["reattest"]), statistics.median(times["challenge"])
    print(f"re-attestation / challenge-now: median {re_med / ch_med:.1f}x; "
          f"re-attestation minus challenge-now: median {re_med - ch_med:.3f} s, "
          f"max {max(times['reattest']) - ch_med:.3f} s "
          f"(bound: one interval + one maintenance tick = {interval * 1.25:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
