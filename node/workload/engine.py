"""The agent's workload engine: runs WASM fragments in killable worker processes (trio API).

Rules:

* The module's sha256 is checked against the expected (committed) hash *before* anything else:
  a mismatch never reaches a worker, let alone the compiler.
* At most ``EngineConfig.slots`` fragments run at once, each in its own worker process
  (``python -m node.workload.worker``). A thread cannot be stopped; a process can: a worker
  that has not answered ``wall_time_s + kill_grace_s`` after it got its fragment is killed with
  SIGKILL and replaced on demand. Inside the worker, fuel and the epoch deadline stop wasm code
  long before that; the kill covers whatever they cannot (host-side hangs, a compile that does
  not end, a wasmtime bug).
* Every wait has a bound: spawning (``spawn_timeout_s``), waiting for a slot (``slot_wait_s``),
  the exchange (deadline + grace), the kill (``kill_wait_s``). A caller's cancellation also kills
  the worker it was using: a worker is reused only after a complete, well-formed exchange.
* Idle workers are kept (up to ``slots``) with their compiled-module caches, so a job's later
  fragments skip compilation; a worker is retired after ``recycle_after`` fragments.

Signing is not done here: the driver signs ``result_digest_payload(...)`` with the agent's key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import cbor2
import trio

from node.workload.frames import DIR_ENV, LEN, MAX_FRAME, PARENT_ENV, TEST_HOOKS_ENV, encode_frame
from node.workload.limits import ErrorKind, Grants, Limits

RESULT_DOMAIN = b"enclave-swarm/task-result/v1\x00"
_REPLY_OVERHEAD = 64 * 1024  # CBOR keys, numbers and the message besides stdout/stderr


def result_digest_payload(job_id: str, fragment_index: int, module_sha256: bytes,
                          input_sha256: bytes, output_sha256: bytes) -> bytes:
    """The bytes an agent signs for a fragment result: a domain tag and canonical CBOR of
    (job id, fragment index, module hash, input hash, output hash). Pure.

    Raises ValueError if a hash is not 32 bytes or the index is negative.
    """
    for name, h in (("module", module_sha256), ("input", input_sha256), ("output", output_sha256)):
        if not isinstance(h, bytes) or len(h) != 32:
            raise ValueError(f"{name}_sha256 must be 32 bytes")
    if not isinstance(fragment_index, int) or fragment_index < 0:
        raise ValueError("fragment_index must be a non-negative int")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job_id must be a non-empty str")
    return RESULT_DOMAIN + cbor2.dumps(
        [job_id, fragment_index, module_sha256, input_sha256, output_sha256], canonical=True)


@dataclass(frozen=True)
class Profile:
    """What a fragment used. ``memory_bytes`` is the linear memory's final size, which is its
    peak (wasm memories never shrink). ``wall_s`` covers instantiation and the run, not the
    compile (``compile_s``, 0 on a cache hit) nor the process hop (``engine_s`` is the engine's
    own end-to-end time for the fragment, slot wait excluded)."""

    fuel_used: int = 0
    memory_bytes: int = 0
    wall_s: float = 0.0
    compile_s: float = 0.0
    engine_s: float = 0.0
    input_sha256: bytes = b""
    output_sha256: bytes = b""


@dataclass(frozen=True)
class Outcome:
    """The result of one fragment. ``ok`` iff ``error`` is None; ``output`` is empty unless ok
    (a failed fragment's partial output is never a result). ``stderr`` is bounded by the limits;
    ``stderr_dropped`` counts the bytes beyond."""

    error: ErrorKind | None
    message: str = ""
    output: bytes = b""
    stderr: bytes = b""
    stderr_dropped: int = 0
    exit_code: int = 0
    profile: Profile = field(default_factory=Profile)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class EngineConfig:
    """``slots``: fragments run at once (one worker process each). ``kill_grace_s``: how long
    past the wall-time limit a worker may take to answer before SIGKILL (it covers compiling a
    module not yet cached). ``max_module_bytes`` / ``max_input_bytes``: refused above."""

    slots: int = 2
    kill_grace_s: float = 5.0
    spawn_timeout_s: float = 30.0
    slot_wait_s: float = 600.0
    kill_wait_s: float = 5.0
    recycle_after: int = 1000
    max_module_bytes: int = 32 * 1024**2
    max_input_bytes: int = 256 * 1024**2
    test_hooks: bool = False  # lets requests carry test_hang_s (tests only)

    def validate(self) -> None:
        if not 1 <= self.slots <= 256:
            raise ValueError(f"slots must be in 1..256, got {self.slots}")
        for name in ("kill_grace_s", "spawn_timeout_s", "slot_wait_s", "kill_wait_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.recycle_after < 1:
            raise ValueError("recycle_after must be >= 1")
        if self.max_module_bytes + _REPLY_OVERHEAD > MAX_FRAME:
            raise ValueError(f"max_module_bytes must stay under {MAX_FRAME}")
        if self.max_input_bytes < 0:
            raise ValueError("max_input_bytes must be >= 0")


@dataclass(frozen=True)
class EngineStatistics:
    slots: int
    running: int
    waiting: int
    idle_workers: int
    workers_started: int
    workers_killed: int
    compiles: int
    fragments: int


class _Worker:
    def __init__(self, process: trio.Process, input_path: str) -> None:
        self.process = process
        self.input_path = input_path
        self.modules: set[bytes] = set()  # hashes sent to this worker (a hint: it may evict)
        self.fragments = 0
        self.buf = bytearray()

    async def read_frame(self, max_bytes: int) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            if len(self.buf) >= LEN.size:
                (n,) = LEN.unpack_from(self.buf)
                if n > max_bytes:
                    raise _WorkerBroken(f"reply of {n} bytes exceeds {max_bytes}")
                if len(self.buf) >= LEN.size + n:
                    data = bytes(self.buf[LEN.size:LEN.size + n])
                    del self.buf[:LEN.size + n]
                    try:
                        body = cbor2.loads(data)
                    except (cbor2.CBORDecodeError, ValueError) as e:
                        raise _WorkerBroken(f"undecodable reply: {e}") from e
                    if not isinstance(body, dict):
                        raise _WorkerBroken("reply is not a map")
                    return body
            chunk = await stdout.receive_some(1 << 20)
            if not chunk:
                raise _WorkerBroken("worker closed its pipe (exited or crashed)")
            self.buf += chunk


class _WorkerBroken(Exception):
    pass


# Inputs above these are written / hashed from a worker thread, not on the trio loop.
_WRITE_INLINE_BYTES = 1024 * 1024
_HASH_INLINE_BYTES = 64 * 1024


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _refused(data: bytes) -> Profile:
    return Profile(input_sha256=_sha256(data))


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class WorkloadEngine:
    """Runs fragments; use as ``async with WorkloadEngine(cfg) as engine: await engine.run(...)``.

    Holds no background task: each ``run`` drives its worker itself, so the engine can live in
    any nursery or none. ``aclose`` kills the idle workers (running ones are killed by their own
    ``run`` when cancelled).
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.config.validate()
        self._slots = trio.Semaphore(self.config.slots)
        self._idle: list[_Worker] = []
        self._running = 0
        self._waiting = 0
        self._started = 0
        self._killed = 0
        self._compiles = 0
        self._fragments = 0
        self._closed = False
        # Fragments reach workers as files in this private directory (0700), on tmpfs when the
        # host has /dev/shm: the worker's module reads it as stdin (wasmtime-py's WASI stdin is
        # a file), so the fragment crosses no pipe. Removed by aclose.
        shm = "/dev/shm"  # noqa: S108 - a private mkdtemp below it, not a fixed name
        self._dir = tempfile.mkdtemp(prefix="es-workload-",
                                     dir=shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None)

    async def __aenter__(self) -> WorkloadEngine:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(slots=self.config.slots, running=self._running, waiting=self._waiting,
                                idle_workers=len(self._idle), workers_started=self._started,
                                workers_killed=self._killed, compiles=self._compiles,
                                fragments=self._fragments)

    async def aclose(self) -> None:
        """Stop every idle worker (closing its pipe ends it; killed if it lingers)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for w in idle:
            await self._retire(w)
        if self._running == 0:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def run(self, module: bytes, module_sha256: bytes, data: bytes, limits: Limits,
                  grants: Grants | None = None, *, test_hang_s: float = 0.0) -> Outcome:
        """Run one fragment: ``module`` (WASI preview 1 bytes) with ``data`` on stdin.

        ``module_sha256`` is the committed hash: bytes that differ are refused (``hash_mismatch``)
        before compiling. Returns an ``Outcome`` for everything the module, the input or a
        worker does; raises ValueError only for invalid ``limits`` (a caller bug) and
        RuntimeError if the engine is closed. Cancellation kills the worker in use.
        """
        limits.validate()
        grants = grants or Grants()
        if self._closed:
            raise RuntimeError("engine is closed")
        if len(module) > self.config.max_module_bytes:
            return Outcome(ErrorKind.BAD_MODULE, f"module of {len(module)} bytes exceeds "
                           f"{self.config.max_module_bytes}", profile=_refused(data))
        if hashlib.sha256(module).digest() != module_sha256:
            return Outcome(ErrorKind.HASH_MISMATCH,
                           f"module sha256 {hashlib.sha256(module).hexdigest()} differs from the expected "
                           f"{module_sha256.hex()}; not compiled", profile=_refused(data))
        if len(data) > self.config.max_input_bytes:
            return Outcome(ErrorKind.INPUT_TOO_LARGE, f"input of {len(data)} bytes exceeds "
                           f"{self.config.max_input_bytes}", profile=_refused(data))
        self._waiting += 1
        acquired = False
        try:
            with trio.move_on_after(self.config.slot_wait_s):
                await self._slots.acquire()
                acquired = True
            if not acquired:
                return Outcome(ErrorKind.BUSY, f"no slot free within {self.config.slot_wait_s} s",
                               profile=_refused(data))
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            return await self._run_in_worker(module, module_sha256, data, limits, grants, test_hang_s)
        finally:
            self._running -= 1
            self._slots.release()
            if self._closed and self._running == 0:
                shutil.rmtree(self._dir, ignore_errors=True)

    async def _run_in_worker(self, module: bytes, module_sha256: bytes, data: bytes, limits: Limits,
                             grants: Grants, test_hang_s: float) -> Outcome:
        t0 = trio.current_time()
        try:
            worker = None
            while self._idle and worker is None:
                worker = self._idle.pop()
                if worker.process.poll() is not None:  # died while idle: drop it
                    await self._kill(worker)
                    worker = None
            if worker is None:
                worker = await self._spawn()
        except _WorkerBroken as e:
            return Outcome(ErrorKind.WORKER_FAILED, f"cannot start a worker: {e}", profile=_refused(data))
        # The module's bytes go only to a worker not known to hold it compiled; a worker that
        # evicted it asks again (need_module).
        request: dict[str, Any] = {"module_sha256": module_sha256,
                                   "module": None if module_sha256 in worker.modules else module,
                                   "input_path": worker.input_path,
                                   "limits": asdict(limits), "grants": asdict(grants)}
        if test_hang_s:
            request["test_hang_s"] = test_hang_s
        reply_max = limits.max_output_bytes + limits.max_stderr_bytes + _REPLY_OVERHEAD
        budget_s = limits.wall_time_s + self.config.kill_grace_s
        reply: dict[str, Any] | None = None
        input_sha256 = b""
        failure = ""
        try:
            with trio.move_on_after(budget_s):
                if len(data) > _WRITE_INLINE_BYTES:
                    await trio.to_thread.run_sync(_write_private, worker.input_path, data)
                else:
                    _write_private(worker.input_path, data)
                stdin = worker.process.stdin
                assert stdin is not None
                await stdin.send_all(encode_frame(request))
                # Hash the fragment while the worker runs it (hashlib releases the GIL).
                if len(data) > _HASH_INLINE_BYTES:
                    input_sha256 = await trio.to_thread.run_sync(_sha256, data)
                else:
                    input_sha256 = _sha256(data)
                reply = await worker.read_frame(reply_max)
                if reply.get("need_module") is True:
                    request["module"] = module
                    await stdin.send_all(encode_frame(request))
                    reply = await worker.read_frame(reply_max)
                worker.modules.add(module_sha256)
            if reply is None:
                failure = f"no answer within {limits.wall_time_s} s + {self.config.kill_grace_s} s grace"
        except (_WorkerBroken, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            failure = str(e) or type(e).__name__
        except OSError as e:
            failure = f"cannot write the fragment for the worker: {e}"
        finally:
            with contextlib.suppress(OSError):
                os.unlink(worker.input_path)  # the fragment does not outlive its run
            if reply is None:
                # A worker in an unknown state (timed out, broken, or our caller was cancelled
                # mid-exchange) is never reused.
                await self._kill(worker)
        engine_s = trio.current_time() - t0
        if reply is None:
            if failure.startswith("no answer"):
                kind, text = ErrorKind.DEADLINE, f"worker killed (SIGKILL): {failure}"
            else:
                kind, text = ErrorKind.WORKER_FAILED, f"worker failed (and was killed): {failure}"
            return Outcome(kind, text,
                           profile=Profile(wall_s=engine_s, engine_s=engine_s, input_sha256=_sha256(data)))
        try:
            outcome = self._outcome(reply, input_sha256, engine_s)
        except (KeyError, TypeError, ValueError) as e:
            await self._kill(worker)
            return Outcome(ErrorKind.WORKER_FAILED, f"malformed reply: {e}", profile=_refused(data))
        worker.fragments += 1
        self._fragments += 1
        self._compiles += bool(reply.get("compiled"))
        if worker.fragments >= self.config.recycle_after or self._closed:
            await self._retire(worker)
        else:
            self._idle.append(worker)
        return outcome

    @staticmethod
    def _outcome(reply: dict[str, Any], input_sha256: bytes, engine_s: float) -> Outcome:
        kind = reply["kind"]
        error = None if kind is None else ErrorKind(kind)
        output = bytes(reply["stdout"])
        profile = Profile(
            fuel_used=int(reply["fuel_used"]), memory_bytes=int(reply["memory_bytes"]),
            wall_s=float(reply["wall_s"]), compile_s=float(reply["compile_s"]), engine_s=engine_s,
            input_sha256=input_sha256, output_sha256=hashlib.sha256(output).digest())
        return Outcome(error, str(reply["message"]), output, bytes(reply["stderr"]),
                       int(reply["stderr_dropped"]), int(reply["exit_code"]), profile)

    async def _spawn(self) -> _Worker:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env[PARENT_ENV] = str(os.getpid())
        env[DIR_ENV] = self._dir
        if self.config.test_hooks:
            env[TEST_HOOKS_ENV] = "1"
        else:
            env.pop(TEST_HOOKS_ENV, None)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "node.workload.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as e:
            raise _WorkerBroken(f"cannot start {sys.executable}: {e}") from e
        self._started += 1
        worker = _Worker(process, os.path.join(self._dir, f"in-{self._started}"))
        ready: dict[str, Any] | None = None
        try:
            with trio.move_on_after(self.config.spawn_timeout_s):
                ready = await worker.read_frame(1024)
        finally:
            if ready is None:
                await self._kill(worker)
        if ready is None or ready.get("ready") is not True:
            raise _WorkerBroken(f"worker did not report ready within {self.config.spawn_timeout_s} s")
        return worker

    async def _kill(self, worker: _Worker) -> None:
        with trio.CancelScope(shield=True):
            if worker.process.returncode is None:
                worker.process.kill()
                self._killed += 1
            with trio.move_on_after(self.config.kill_wait_s):
                await worker.process.wait()
            for pipe in (worker.process.stdin, worker.process.stdout):
                if pipe is not None:
                    await pipe.aclose()

    async def _retire(self, worker: _Worker) -> None:
        with trio.CancelScope(shield=True):
            stdin = worker.process.stdin
            if stdin is not None:
                await stdin.aclose()
            with trio.move_on_after(self.config.kill_wait_s):
                await worker.process.wait()
        await self._kill(worker)
