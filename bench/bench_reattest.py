"""Dynamic attestation: how long until every peer cuts off a node whose evidence stops verifying.

Three in-process nodes (real libp2p on loopback, simulated TEE) with a 1 s re-attestation
interval; one node's TEE starts reporting debug mode, which the policy forbids. Measured: the
time until both other nodes have quarantined it, against the interval (the baseline: the bound
is one interval plus one attestation exchange).

    python -m bench reattest
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

RUNS = 10


async def _one(tmp: Path) -> tuple[float, float]:
    from tests.netutil import federation, fully_attested, wait_until

    async with federation(tmp, 3) as agents:
        await wait_until(lambda: fully_attested(agents), 60)
        interval = agents[0].config.attestation.reattest_interval_s
        bad = agents[2]
        t = time.monotonic()
        bad.provider.debug = True
        await wait_until(lambda: all(not a.peers.is_attested(bad.peer_id) for a in agents[:2]), 30, 0.005)
        return time.monotonic() - t, interval


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    tmp = Path(tempfile.mkdtemp(prefix="bench-reattest-"))
    results = [trio.run(_one, tmp / str(i)) for i in range(RUNS)]
    times = [r[0] for r in results]
    interval = results[0][1]
    print(f"quarantine by every peer after evidence stops verifying, {RUNS} runs: "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s; "
          f"re-attestation interval {interval:.2f} s; max/interval {max(times) / interval:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
