"""The workload engine end to end: worker processes, every limit hit, every capability denied
or granted, the hash check before compiling, a runaway worker killed, bounded concurrency."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio
import wasmtime

from node.workload import EngineConfig, ErrorKind, Grants, Limits, WorkloadEngine, examples
from tests.netutil import wait_until

pytestmark = pytest.mark.process

QUICK = Limits(wall_time_s=20)


def wat(text: str) -> tuple[bytes, bytes]:
    module = wasmtime.wat2wasm(text)
    return module, hashlib.sha256(module).digest()


async def test_wordcount_result_and_profile() -> None:
    data = b"The cat and the hat.\nA CAT, a bat; 42 cats\n" * 50
    module, sha = examples.load("wordcount")
    async with WorkloadEngine(EngineConfig(slots=1)) as engine:
        out = await engine.run(module, sha, data, QUICK)
        again = await engine.run(module, sha, data, QUICK)
        stats = engine.statistics()
    assert out.ok, out.message
    expected = Counter(w.lower().decode() for w in re.findall(rb"[A-Za-z0-9]+", data))
    assert json.loads(out.output) == dict(expected)
    p = out.profile
    assert p.input_sha256 == hashlib.sha256(data).digest()
    assert p.output_sha256 == hashlib.sha256(out.output).digest()
    assert 0 < p.fuel_used < QUICK.fuel
    assert 0 < p.memory_bytes <= QUICK.memory_bytes
    assert p.wall_s > 0 and p.compile_s > 0
    # The second fragment reuses the worker and its compiled module.
    assert again.output == out.output and again.profile.compile_s == 0
    assert (stats.workers_started, stats.compiles, stats.fragments) == (1, 1, 2)


async def test_sum() -> None:
    module, sha = examples.load("sum")
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"1\n2.5\n\n-4\n", QUICK)
    assert out.ok, out.message
    assert json.loads(out.output) == {"sum": -0.5, "count": 3}


async def test_noop_reads_all_its_input_and_writes_nothing() -> None:
    module, sha = examples.load("noop")
    async with WorkloadEngine() as engine:
        small = await engine.run(module, sha, b"", QUICK)
        big = await engine.run(module, sha, os.urandom(100_000), QUICK)  # 25 reads of 4 KiB
    assert small.ok and big.ok, (small.message, big.message)
    assert small.output == big.output == b""
    assert big.profile.fuel_used > small.profile.fuel_used  # it did read the whole input


async def test_fuel_limit_stops_the_endless_loop() -> None:
    module, sha = examples.load("forever")
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", Limits(fuel=2_000_000, wall_time_s=20))
        stats = engine.statistics()
    assert out.error == ErrorKind.OUT_OF_FUEL, out.message
    assert out.profile.fuel_used == 2_000_000
    assert stats.workers_killed == 0


async def test_deadline_interrupts_the_endless_loop_in_wasm() -> None:
    module, sha = examples.load("forever")
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", Limits(fuel=10**13, wall_time_s=0.3))
        stats = engine.statistics()
    assert out.error == ErrorKind.DEADLINE, out.message
    assert "0.3 s" in out.message
    # The epoch interrupt stopped it inside the worker: no kill was needed, the worker is kept.
    assert stats.workers_killed == 0 and stats.idle_workers == 1


async def test_memory_limit() -> None:
    module, sha = examples.load("hog")
    cap = 16 * 1024**2
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", Limits(memory_bytes=cap, wall_time_s=20))
    assert out.error == ErrorKind.MEMORY_LIMIT, out.message
    assert str(cap) in out.message
    assert cap - 2 * 1024**2 < out.profile.memory_bytes <= cap


async def test_memory_minimum_above_the_cap_is_refused_at_instantiation() -> None:
    module, sha = wat('(module (memory (export "memory") 100) (func (export "_start")))')
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", Limits(memory_bytes=1024**2, wall_time_s=20))
    assert out.error == ErrorKind.MEMORY_LIMIT, out.message


async def test_output_limit() -> None:
    module, sha = examples.load("flood")
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", Limits(max_output_bytes=100_000, wall_time_s=20))
    assert out.error == ErrorKind.OUTPUT_TOO_LARGE, out.message
    assert out.output == b""  # partial output is never a result


async def test_stderr_is_bounded_and_the_rest_counted() -> None:
    module, sha = examples.load("noisy")
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", Limits(max_stderr_bytes=4096, wall_time_s=20))
    assert out.ok, out.message
    assert out.output == b"done\n"
    assert out.stderr == (b"e" * 1023 + b"\n") * 4
    assert out.stderr_dropped == 1024 * 1024 - 4096


async def test_trap_is_reported_with_its_message() -> None:
    module, sha = examples.load("trap")
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", QUICK)
    assert out.error == ErrorKind.TRAP
    assert "unreachable" in out.message


async def test_nonzero_exit_code() -> None:
    module, sha = wat('''(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $exit (i32.const 3))))''')
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", QUICK)
    assert out.error == ErrorKind.EXIT_CODE
    assert out.exit_code == 3


@pytest.mark.parametrize(("name", "capability"), [
    ("clock", "clock"), ("random", "random"), ("open", "filesystem")])
async def test_capability_not_granted_is_refused_before_running(name: str, capability: str) -> None:
    module, sha = examples.load(name)
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", QUICK, Grants())
    assert out.error == ErrorKind.DENIED_CAPABILITY
    assert capability in out.message
    assert out.profile.fuel_used == 0


@pytest.mark.parametrize(("name", "grants"), [
    ("clock", Grants(clock=True)), ("random", Grants(random=True))])
async def test_granted_capability_runs(name: str, grants: Grants) -> None:
    module, sha = examples.load(name)
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", QUICK, grants)
    assert out.ok, out.message


async def test_filesystem_is_closed_even_when_path_open_is_not_imported_directly() -> None:
    # A module can still hand fd 3 (the first preopen, if any) to fd_* calls: there is none.
    module, sha = wat('''(module
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $pre (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (if (i32.eqz (call $pre (i32.const 3) (i32.const 0))) (then unreachable))))''')
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", QUICK)
    assert out.ok, out.message  # fd_prestat_get(3) failed: no directory is preopened


@pytest.mark.parametrize(("text", "why"), [
    ('(module (import "env" "f" (func)) (func (export "_start")))', "env.f"),
    ('(module (func (export "main")))', "_start"),
    ('(module (func (export "_start") (param i32)))', "_start"),
    ('(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64))) (func (export "_start")))',
     "instantiate"),
])
async def test_bad_modules(text: str, why: str) -> None:
    module, sha = wat(text)
    async with WorkloadEngine() as engine:
        out = await engine.run(module, sha, b"", QUICK)
    assert out.error == ErrorKind.BAD_MODULE
    assert why in out.message


async def test_garbage_module_does_not_compile() -> None:
    module = b"\0asm\x01\0\0\0garbage"
    async with WorkloadEngine() as engine:
        out = await engine.run(module, hashlib.sha256(module).digest(), b"", QUICK)
    assert out.error == ErrorKind.BAD_MODULE
    assert "compile" in out.message


async def test_hash_mismatch_is_refused_before_any_worker_or_compile() -> None:
    module, sha = examples.load("wordcount")
    tampered = module[:-1] + bytes([module[-1] ^ 1])
    async with WorkloadEngine() as engine:
        out = await engine.run(tampered, sha, b"text", QUICK)
        stats = engine.statistics()
    assert out.error == ErrorKind.HASH_MISMATCH
    assert sha.hex() in out.message
    assert (stats.workers_started, stats.compiles) == (0, 0)


async def test_runaway_worker_outside_wasm_is_killed_and_replaced() -> None:
    # The test hook makes the worker sleep in Python, where neither fuel nor epochs reach it:
    # only the engine's SIGKILL after deadline + grace can stop it.
    module, sha = examples.load("sum")
    config = EngineConfig(slots=1, kill_grace_s=0.5, test_hooks=True)
    async with WorkloadEngine(config) as engine:
        assert (await engine.run(module, sha, b"1\n", QUICK)).ok
        process = engine._idle[0].process
        out = await engine.run(module, sha, b"1\n", Limits(wall_time_s=0.2), test_hang_s=3600)
        assert out.error == ErrorKind.DEADLINE
        assert "SIGKILL" in out.message
        assert process.returncode == -signal.SIGKILL
        assert engine.statistics().workers_killed == 1
        after = await engine.run(module, sha, b"1\n2\n", QUICK)
        stats = engine.statistics()
    assert after.ok and json.loads(after.output) == {"sum": 3, "count": 2}
    assert stats.workers_started == 2


async def test_test_hook_is_ignored_unless_enabled() -> None:
    module, sha = examples.load("sum")
    async with WorkloadEngine(EngineConfig(kill_grace_s=0.5)) as engine:
        out = await engine.run(module, sha, b"1\n", Limits(wall_time_s=0.2), test_hang_s=3600)
    assert out.ok, out.message


async def test_cancelled_caller_kills_the_worker() -> None:
    module, sha = examples.load("forever")
    async with WorkloadEngine() as engine:
        with trio.move_on_after(1.0) as scope:
            await engine.run(module, sha, b"", Limits(fuel=10**13, wall_time_s=60))
        assert scope.cancelled_caught
        stats = engine.statistics()
    assert stats.workers_killed == 1 and stats.running == 0 and stats.idle_workers == 0


async def test_bounded_concurrency_one_fragment_waits() -> None:
    module, sha = examples.load("forever")
    limits = Limits(fuel=10**13, wall_time_s=1.5)
    outcomes = []
    async with WorkloadEngine(EngineConfig(slots=2)) as engine:
        async def one() -> None:
            outcomes.append(await engine.run(module, sha, b"", limits))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
            await wait_until(lambda: engine.statistics().waiting == 1 and engine.statistics().running == 2)
            peak = 0
            while len(outcomes) < 3:
                peak = max(peak, engine.statistics().running)
                await trio.sleep(0.01)
        stats = engine.statistics()
    assert peak <= 2
    assert [o.error for o in outcomes] == [ErrorKind.DEADLINE] * 3
    assert stats.workers_started == 2  # the third fragment ran on a freed worker


async def test_no_slot_within_the_wait_is_busy() -> None:
    module, sha = examples.load("forever")
    results = []
    async with WorkloadEngine(EngineConfig(slots=1, slot_wait_s=0.2)) as engine:
        async def hold() -> None:
            await engine.run(module, sha, b"", Limits(fuel=10**13, wall_time_s=2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await wait_until(lambda: engine.statistics().running == 1)
            results.append(await engine.run(module, sha, b"", QUICK))
    assert results[0].error == ErrorKind.BUSY


async def test_input_too_large() -> None:
    module, sha = examples.load("wordcount")
    async with WorkloadEngine(EngineConfig(max_input_bytes=1000)) as engine:
        out = await engine.run(module, sha, b"x" * 1001, QUICK)
    assert out.error == ErrorKind.INPUT_TOO_LARGE


async def test_worker_that_lacks_the_module_asks_for_it() -> None:
    # The engine sends a module's bytes only to a worker not known to hold it; a worker that
    # does not (evicted, or the engine's hint is wrong) answers need_module and gets them.
    wc, wc_sha = examples.load("wordcount")
    total, total_sha = examples.load("sum")
    async with WorkloadEngine(EngineConfig(slots=1)) as engine:
        assert (await engine.run(wc, wc_sha, b"a b a", QUICK)).ok
        engine._idle[0].modules.add(total_sha)  # a wrong hint
        out = await engine.run(total, total_sha, b"2\n3\n", QUICK)
        stats = engine.statistics()
    assert out.ok, out.message
    assert json.loads(out.output) == {"sum": 5, "count": 2}
    assert (stats.workers_started, stats.compiles) == (1, 2)


async def test_fragment_files_do_not_outlive_their_run() -> None:
    module, sha = examples.load("wordcount")
    engine = WorkloadEngine()
    directory = engine._dir
    out = await engine.run(module, sha, b"secret fragment", QUICK)
    assert out.ok
    assert os.listdir(directory) == []
    await engine.aclose()
    assert not os.path.exists(directory)


async def test_a_worker_that_died_while_idle_is_replaced() -> None:
    module, sha = examples.load("sum")
    async with WorkloadEngine(EngineConfig(slots=1)) as engine:
        assert (await engine.run(module, sha, b"1\n", QUICK)).ok
        process = engine._idle[0].process
        process.kill()
        await process.wait()
        out = await engine.run(module, sha, b"2\n", QUICK)
        stats = engine.statistics()
    assert out.ok, out.message
    assert stats.workers_started == 2


_ORPHAN_SCRIPT = """
import functools, sys, trio
from node.workload import EngineConfig, Limits, WorkloadEngine, examples

async def main():
    module, sha = examples.load("sum")
    async with WorkloadEngine(EngineConfig(slots=1, test_hooks=True)) as engine:
        assert (await engine.run(module, sha, b"1", Limits())).ok  # a started, idle worker
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(
                engine.run, module, sha, b"1", Limits(wall_time_s=600), test_hang_s=3600))
            while engine.statistics().running == 0:
                await trio.sleep(0.01)
            await trio.sleep(0.3)  # the request is with the worker, which now hangs outside wasm
            print("hanging", engine._dir, flush=True)
            await trio.sleep_forever()

trio.run(main)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_worker_dies_with_a_killed_agent() -> None:
    # The agent's process is SIGKILLed while its worker hangs outside wasm: nobody is left to
    # kill the worker nor to remove the fragment files, so the worker does both.
    import subprocess

    agent = await trio.lowlevel.open_process(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[2]))
    workers: list[int] = []
    try:
        assert agent.stdout is not None
        with trio.fail_after(30):
            seen = b""
            while b"\n" not in seen:
                chunk = await agent.stdout.receive_some(100)
                assert chunk, "the agent script ended early"
                seen += chunk
        workers += [int(p) for task in Path(f"/proc/{agent.pid}/task").iterdir()
                   for p in (task / "children").read_text().split()]
        assert len(workers) == 1
        fragments = Path(seen.split()[1].decode())
        assert fragments.is_dir() and list(fragments.iterdir())  # the hung fragment's file
        agent.kill()
        await agent.wait()

        def gone() -> bool:
            try:
                state = Path(f"/proc/{workers[0]}/stat").read_text().split(")")[-1].split()[0]
            except FileNotFoundError:
                return True
            return state == "Z"  # dead, waiting for init to reap it

        await wait_until(gone, timeout_s=10)
        assert not fragments.exists()  # the worker removed the dead agent's fragments
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
        for pid in workers:  # leave no orphan behind when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await agent.stdout.aclose()  # type: ignore[union-attr]


async def test_worker_crash_mid_fragment_is_worker_failed() -> None:
    # A worker that dies under a fragment (a wasmtime crash, the OOM killer): reported as such,
    # not as the module's fault, and the next fragment gets a new worker.
    forever, forever_sha = examples.load("forever")
    total, total_sha = examples.load("sum")
    outcomes = []
    async with WorkloadEngine(EngineConfig(slots=1)) as engine:
        assert (await engine.run(total, total_sha, b"1\n", QUICK)).ok
        process = engine._idle[0].process

        async def endless() -> None:
            outcomes.append(await engine.run(forever, forever_sha, b"", Limits(fuel=10**13, wall_time_s=60)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(endless)
            await wait_until(lambda: engine.statistics().running == 1)
            process.kill()
        after = await engine.run(total, total_sha, b"2\n", QUICK)
    assert outcomes[0].error == ErrorKind.WORKER_FAILED
    assert outcomes[0].message.startswith("worker failed")
    assert after.ok
