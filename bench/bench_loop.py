"""Loop time a large seal costs the node's event loop (node/loop_health.py's meter).

Seals 200 MiB (AES-256-GCM, zfec 3-of-5, to /dev/null) in a worker thread, as the shard
service does, while the loop meter runs; the baseline is the meter over the same wall time with
the loop idle. Prints both figures and the seal's wall time.

    python -m bench loop
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import trio

SIZE = 200 * 1024 * 1024


async def _measure(src: Path) -> tuple[float, float, float]:
    from node.loop_health import LoopHealth
    from node.shards.crypto import seal_and_split

    meter = LoopHealth(clock=time.time)

    def seal() -> None:
        with contextlib.ExitStack() as stack, open(src, "rb") as plain:
            sinks = [stack.enter_context(open(os.devnull, "wb")) for _ in range(5)]
            seal_and_split(plain, sinks, k=3, n=5)

    async with trio.open_nursery() as nursery:
        await nursery.start(meter.run)
        await trio.sleep(0.5)
        t0 = time.time()
        await trio.to_thread.run_sync(seal)
        wall = time.time() - t0
        lost_seal = meter.stalled_s(t0)
        t1 = time.time()
        await trio.sleep(wall)  # baseline: the same wall time, loop idle
        lost_idle = meter.stalled_s(t1)
        nursery.cancel_scope.cancel()
    return wall, lost_seal, lost_idle


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "plain.bin"
        block = os.urandom(1 << 20)
        with open(src, "wb") as f:
            for _ in range(SIZE >> 20):
                f.write(block)
        wall, lost_seal, lost_idle = trio.run(_measure, src)
    print(f"seal of {SIZE >> 20} MiB in a worker thread: {wall:.2f} s wall")
    print(f"loop time lost during the seal: {lost_seal:.3f} s "
          f"({100 * lost_seal / wall:.1f} % of the seal's wall time)")
    print(f"baseline, loop idle for the same time: {lost_idle:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
