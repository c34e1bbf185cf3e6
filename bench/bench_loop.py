"""Loop time a large seal costs the node's event loop (node/loop_health.py's meter, and a finer
one beside it).

Seals 200 MiB (AES-256-GCM, zfec 3-of-5, to /dev/null) in a worker thread, as the shard
service does, while two meters run on the loop; the baseline is both meters over the same wall
time with the loop idle, in the same run.

- The node's meter (``LoopHealth``: wakes every 0.1 s) counts only the part of each wake-up's
  lateness above ``NOISE_S`` (10 ms): a stall shorter than that counts as nothing, so its
  "0.000 s lost" is a floor (no single stall of 10 ms or more), not a measurement of zero.
- A finer meter (this file): a task that sleeps 1 ms and records every wake-up's lateness, with
  no floor. Its total is the loop time the seal costs at sub-millisecond grain (the GIL the
  worker thread takes back between its C calls), its worst wake-up the longest single stall.

    python -m bench loop
    python -m bench.bench_loop --size-mib 20     # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

SIZE_MIB = 200
FINE_PERIOD_S = 0.001


class FineMeter:
    """Every wake-up's lateness after a ``FINE_PERIOD_S`` sleep, as (wall time, lateness)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            t = trio.current_time()
            await trio.sleep(FINE_PERIOD_S)
            self.samples.append((time.time(), trio.current_time() - t - FINE_PERIOD_S))

    def between(self, t0: float, t1: float) -> tuple[float, float, int]:
        """(total lateness, worst single lateness, wake-ups) of the wake-ups in [t0, t1)."""
        lags = [lag for at, lag in self.samples if t0 <= at < t1]
        return sum(lags), max(lags, default=0.0), len(lags)


async def _measure(src: Path) -> dict[str, float]:
    from node.loop_health import LoopHealth
    from node.shards.crypto import seal_and_split

    meter = LoopHealth(clock=time.time)
    fine = FineMeter()

    def seal() -> None:
        with contextlib.ExitStack() as stack, open(src, "rb") as plain:
            sinks = [stack.enter_context(open(os.devnull, "wb")) for _ in range(5)]
            seal_and_split(plain, sinks, k=3, n=5)

    async with trio.open_nursery() as nursery:
        await nursery.start(meter.run)
        await nursery.start(fine.run)
        await trio.sleep(0.5)
        t0 = time.time()
        await trio.to_thread.run_sync(seal)
        t1 = time.time()
        lost_seal = meter.stalled_s(t0)
        await trio.sleep(t1 - t0)  # baseline: the same wall time, loop idle
        t2 = time.time()
        lost_idle = meter.stalled_s(t1)
        nursery.cancel_scope.cancel()
    fs, fs_worst, fs_n = fine.between(t0, t1)
    fi, fi_worst, fi_n = fine.between(t1, t2)
    return {"wall": t1 - t0, "lost_seal": lost_seal, "lost_idle": lost_idle,
            "fine_seal": fs, "fine_seal_worst": fs_worst, "fine_seal_n": fs_n,
            "fine_idle": fi, "fine_idle_worst": fi_worst, "fine_idle_n": fi_n}


def _mean_ms(r: dict[str, float], arm: str) -> float:
    return 1000 * r[f"fine_{arm}"] / max(1, r[f"fine_{arm}_n"])


def main(argv: list[str]) -> int:
    from node.loop_health import NOISE_S

    ap = argparse.ArgumentParser(prog="bench_loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=SIZE_MIB)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "plain.bin"
        block = os.urandom(1 << 20)
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        r = trio.run(_measure, src)
    wall = r["wall"]
    print(f"seal of {args.size_mib} MiB in a worker thread: {wall:.2f} s wall "
          f"(load average {load:.1f})")
    print(f"node's meter (counts only lateness above {NOISE_S * 1000:.0f} ms per wake-up, so 0 is "
          f"a floor): lost during the seal {r['lost_seal']:.3f} s, "
          f"baseline with the loop idle {r['lost_idle']:.3f} s")
    print(f"fine meter ({FINE_PERIOD_S * 1000:.0f} ms sleeps, no floor): during the seal "
          f"{r['fine_seal']:.3f} s late in total ({100 * r['fine_seal'] / wall:.1f} % of the wall "
          f"time, {r['fine_seal_n']} wake-ups, mean {_mean_ms(r, 'seal'):.2f} ms, worst "
          f"{r['fine_seal_worst'] * 1000:.1f} ms); idle baseline {r['fine_idle']:.3f} s "
          f"({r['fine_idle_n']} wake-ups, mean {_mean_ms(r, 'idle'):.2f} ms, "
          f"worst {r['fine_idle_worst'] * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
