"""Engine overhead: a fragment run by the workload engine against wasmtime run directly.

The same module (the word count example), the same 1 MiB of text, in the same run. Baselines,
in this process: wasmtime with a default config (no fuel, no epochs), and wasmtime with the
engine's config (fuel and epoch interruption on, so the compiled code is the same); both write
the fragment to a stdin file and collect stdout in memory, as the worker does, with the module
compiled and WASI linked once. The engine: ``WorkloadEngine(slots=1)`` with a warm worker
(spawned and its module cached by one untimed run). The three run in interleaved rounds so that
load from other work on the machine hits them alike. Prints fragments per second for each, the
ratios, and where the engine's extra time goes (the in-worker run against the engine's
end-to-end time per fragment).

    python -m bench engine
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.text import words

FRAGMENT_BYTES = 1024 * 1024
RUNS = 30


def _text(n: int) -> bytes:
    return words(n, vocabulary=5000)


class _Direct:
    """wasmtime in this process, module compiled and WASI linked once; ``run`` writes the stdin
    file and runs a fresh store and instance (as the worker does per fragment)."""

    def __init__(self, module_bytes: bytes, path: str, limited: bool) -> None:
        import wasmtime

        from node.workload.runner import make_engine

        self.wasmtime = wasmtime
        self.limited = limited
        self.path = path
        self.engine = make_engine() if limited else wasmtime.Engine()
        self.module = wasmtime.Module(self.engine, module_bytes)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()

    def run(self, data: bytes) -> bytes:
        from node.workload.runner import write_input

        wasmtime = self.wasmtime
        write_input(self.path, data)
        out = bytearray()

        def sink(b: bytes) -> int:
            out.extend(b)
            return len(b)

        wasi = wasmtime.WasiConfig()
        wasi.argv = ["fragment"]
        wasi.stdin_file = self.path
        wasi.stdout_custom = sink
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasi)
        if self.limited:
            store.set_fuel(10**12)
            store.set_epoch_deadline(1)
            store.set_limits(memory_size=256 * 1024**2)
        instance = self.linker.instantiate(store, self.module)
        start = instance.exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as e:
            assert e.code == 0
        return bytes(out)


async def _measure(module: bytes, sha: bytes, data: bytes, runs: int,
                   tmp: str) -> tuple[dict[str, list[float]], list[float]]:
    """Rounds of (direct default, direct limited, engine), interleaved so that the load other
    work puts on the machine hits all three alike. The first round warms up, untimed."""
    from node.workload import EngineConfig, Limits, WorkloadEngine

    plain = _Direct(module, os.path.join(tmp, "plain"), limited=False)
    limited = _Direct(module, os.path.join(tmp, "limited"), limited=True)
    limits = Limits(fuel=10**12, wall_time_s=60)
    times: dict[str, list[float]] = {"plain": [], "limited": [], "engine": []}
    inner: list[float] = []
    async with WorkloadEngine(EngineConfig(slots=1)) as engine:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            out_plain = plain.run(data)
            t1 = time.perf_counter()
            out_limited = limited.run(data)
            t2 = time.perf_counter()
            out = await engine.run(module, sha, data, limits)
            t3 = time.perf_counter()
            assert out.ok, out.message
            if not out_plain == out_limited == out.output:
                raise AssertionError("outputs differ between the engine and wasmtime run directly")
            if i:
                times["plain"].append(t1 - t0)
                times["limited"].append(t2 - t1)
                times["engine"].append(t3 - t2)
                inner.append(out.profile.wall_s)
    return times, inner


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from node.workload import examples

    module, sha = examples.load("wordcount")
    data = _text(FRAGMENT_BYTES)
    # The baselines' stdin files sit where the engine puts its fragments (tmpfs when present).
    shm = "/dev/shm"
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        times, inner = trio.run(_measure, module, sha, data, RUNS, tmp)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["inner"] = statistics.median(inner)
    mib = FRAGMENT_BYTES / 1024**2
    print(f"word count over {mib:.0f} MiB of text, median of {RUNS} fragments, one at a time")
    print(f"wasmtime direct, default config       : {1 / med['plain']:7.2f} fragments/s "
          f"({mib / med['plain']:.1f} MiB/s)")
    print(f"wasmtime direct, fuel + epochs + caps : {1 / med['limited']:7.2f} fragments/s "
          f"({mib / med['limited']:.1f} MiB/s)")
    print(f"workload engine (worker process)      : {1 / med['engine']:7.2f} fragments/s "
          f"({mib / med['engine']:.1f} MiB/s)")
    print(f"ratio engine / direct with the same limits: {med['limited'] / med['engine']:.2f}x (goal >= 0.9x)")
    print(f"ratio engine / direct default config      : {med['plain'] / med['engine']:.2f}x")
    print(f"per fragment: in-worker instantiate + run {1000 * med['inner']:.1f} ms, engine end to end "
          f"{1000 * med['engine']:.1f} ms: the hop (fragment written to the worker's stdin file, "
          f"request/reply frames over the pipe, the module hash check, the worker's wake-up) costs "
          f"{1000 * (med['engine'] - med['inner']):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
