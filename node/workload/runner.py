"""Runs one fragment in this process with wasmtime: the code the worker process executes.

Not for the agent's own process: a module that hangs the host side (or wasmtime itself) would
hang the caller, and only a process can be killed. ``engine.py`` runs this in
``worker.py``'s process; the benchmark and tests may call it directly.

Theory of operation, per fragment:

1. The module comes from a bounded cache keyed by its sha256 (compiling costs far more than
   running a small fragment); a miss compiles it and checks its imports against the grants
   (``limits.refused_imports``) and that it exports a ``_start`` function.
2. A fresh ``Store`` per fragment: fuel set, memory/instances/tables capped, an epoch deadline
   one tick ahead and a timer that ticks the engine's epoch when the wall time is up. WASI has
   argv = ["fragment"], no environment, no preopened directory; stdin is a file holding the
   fragment, stdout and stderr go to bounded in-memory sinks.
3. ``_start`` runs; how it ends is classified (``ErrorKind``), and the profile (fuel used, the
   memory's final size, which is its peak since wasm memories never shrink, wall time) is read.

The memory cap makes ``memory.grow`` fail; wasm code then sees -1 (malloc returns NULL) rather
than a trap, and wasmtime-py exposes no hook on the failed grow. So ``memory_limit`` is reported
when the run failed (trap or nonzero exit) and the memory ended within ``MEMORY_NEAR_CAP`` of the
cap; a module that fails after one huge grow far below the cap is reported with its own error,
its profile showing the memory it had.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from node.workload.limits import ErrorKind, Grants, Limits, refused_imports

MEMORY_NEAR_CAP = 2 * 1024**2
WASM_PAGE = 65536


def make_engine() -> wasmtime.Engine:
    """A wasmtime engine with fuel and epoch interruption, and no shared memories (threads):
    a shared memory would escape the per-store memory accounting."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    config.wasm_threads = False
    config.shared_memory = False
    return wasmtime.Engine(config)


@dataclass
class _Compiled:
    module: wasmtime.Module
    imports: tuple[tuple[str, str], ...]
    has_start: bool


@dataclass
class Runner:
    """One wasmtime engine and its compiled-module cache; runs one fragment at a time."""

    cache_entries: int = 16
    engine: wasmtime.Engine = field(default_factory=make_engine)
    _cache: OrderedDict[bytes, _Compiled] = field(default_factory=OrderedDict)
    _linker: wasmtime.Linker | None = None

    def linker(self) -> wasmtime.Linker:
        """WASI preview 1 defined once: a linker holds no store state, so every fragment's
        store shares it (defining WASI costs more than a small fragment's run)."""
        if self._linker is None:
            self._linker = wasmtime.Linker(self.engine)
            self._linker.define_wasi()
        return self._linker

    def has(self, module_sha256: bytes) -> bool:
        """Whether the module is compiled and cached."""
        return module_sha256 in self._cache

    def compile(self, module_sha256: bytes, module_bytes: bytes) -> tuple[_Compiled, float]:
        """The compiled module (cached by hash) and the seconds spent compiling (0 on a hit).
        Raises wasmtime.WasmtimeError for a bad module, ValueError if the bytes of a module
        not yet cached differ from ``module_sha256`` (checked again here, before compiling, so
        that the cache never holds a module under another's hash)."""
        hit = self._cache.get(module_sha256)
        if hit is not None:
            self._cache.move_to_end(module_sha256)
            return hit, 0.0
        if hashlib.sha256(module_bytes).digest() != module_sha256:
            raise ValueError("module bytes do not match their sha256")
        t0 = time.perf_counter()
        module = wasmtime.Module(self.engine, module_bytes)
        compiled = _Compiled(
            module=module,
            imports=tuple((imp.module, imp.name or "") for imp in module.imports),
            # WASI's entry point takes and returns nothing; anything else cannot be called.
            has_start=any(exp.name == "_start" and isinstance(exp.type, wasmtime.FuncType)
                          and not exp.type.params and not exp.type.results
                          for exp in module.exports),
        )
        took = time.perf_counter() - t0
        self._cache[module_sha256] = compiled
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
        return compiled, took

    def run(self, module_sha256: bytes, module_bytes: bytes, input_path: str, limits: Limits,
            grants: Grants) -> dict[str, Any]:
        """Run one fragment whose input is in ``input_path``; returns the worker's reply body
        (see worker.py). Never raises for anything the module does."""
        reply: dict[str, Any] = {"kind": None, "message": "", "exit_code": 0, "stdout": b"",
                                 "stderr": b"", "stderr_dropped": 0, "fuel_used": 0,
                                 "memory_bytes": 0, "wall_s": 0.0, "compile_s": 0.0}
        try:
            compiled, reply["compile_s"] = self.compile(module_sha256, module_bytes)
        except ValueError as e:
            reply.update(kind=ErrorKind.HASH_MISMATCH.value, message=str(e))
            return reply
        except wasmtime.WasmtimeError as e:
            reply.update(kind=ErrorKind.BAD_MODULE.value, message=f"does not compile: {_first_line(e)}")
            return reply
        kind, why = refused_imports(compiled.imports, grants)
        if kind is not None:
            reply.update(kind=kind, message=why)
            return reply
        if not compiled.has_start:
            reply.update(kind=ErrorKind.BAD_MODULE.value, message="exports no _start: [] -> []")
            return reply
        return self._run_compiled(compiled, input_path, limits, reply)

    def _run_compiled(self, compiled: _Compiled, input_path: str, limits: Limits,
                      reply: dict[str, Any]) -> dict[str, Any]:
        out = bytearray()
        err = bytearray()
        overflow = [False]
        dropped = [0]

        # Called by wasmtime on every stdout/stderr write; must never raise (wasmtime-py prints
        # the exception and returns EIO). A write past the bound fails with EFBIG, which stops a
        # well-behaved program; one that ignores it runs into its fuel or deadline, and the
        # fragment is reported as output_too_large either way.
        def on_stdout(data: bytes) -> int:
            if overflow[0] or len(out) + len(data) > limits.max_output_bytes:
                overflow[0] = True
                return -errno.EFBIG
            out.extend(data)
            return len(data)

        def on_stderr(data: bytes) -> int:
            room = limits.max_stderr_bytes - len(err)
            if room > 0:
                err.extend(data[:room])
            dropped[0] += max(0, len(data) - max(room, 0))
            return len(data)

        wasi = wasmtime.WasiConfig()
        wasi.argv = ["fragment"]
        wasi.stdin_file = input_path
        wasi.stdout_custom = on_stdout
        wasi.stderr_custom = on_stderr
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasi)
        store.set_fuel(limits.fuel)
        store.set_limits(memory_size=limits.memory_bytes, table_elements=1_000_000,
                         instances=1, tables=4, memories=1)
        store.set_epoch_deadline(1)
        # The ticker: one tick at the deadline. A tick that lands after this run ended is
        # harmless, since the next run's deadline is set relative to the epoch it starts at.
        timer = threading.Timer(limits.wall_time_s, self.engine.increment_epoch)
        timer.daemon = True
        linker = self.linker()
        memory: wasmtime.Memory | None = None
        t0 = time.perf_counter()
        timer.start()
        try:
            instance = linker.instantiate(store, compiled.module)
            exports = instance.exports(store)
            mem = exports.get("memory")
            memory = mem if isinstance(mem, wasmtime.Memory) else None
            start = exports["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except wasmtime.ExitTrap as e:
            reply["exit_code"] = e.code
            if e.code != 0:
                reply.update(kind=ErrorKind.EXIT_CODE.value, message=f"exited with code {e.code}")
        except wasmtime.Trap as e:
            code = e.trap_code
            if code == wasmtime.TrapCode.INTERRUPT:
                reply.update(kind=ErrorKind.DEADLINE.value,
                             message=f"wall-clock deadline of {limits.wall_time_s} s reached")
            elif code == wasmtime.TrapCode.OUT_OF_FUEL:
                reply.update(kind=ErrorKind.OUT_OF_FUEL.value, message=f"all {limits.fuel} fuel consumed")
            else:
                reply.update(kind=ErrorKind.TRAP.value, message=f"trap: {_trap_text(e)}")
        except wasmtime.WasmtimeError as e:
            text = _first_line(e)
            if "exceeds memory limits" in text:
                reply.update(kind=ErrorKind.MEMORY_LIMIT.value,
                             message=f"memory limit of {limits.memory_bytes} bytes: {text}")
            else:
                # An import of the wrong type, a table above its cap: the module, not its run.
                reply.update(kind=ErrorKind.BAD_MODULE.value, message=f"cannot instantiate: {text}")
        finally:
            timer.cancel()
            reply["wall_s"] = time.perf_counter() - t0
        try:
            reply["fuel_used"] = limits.fuel - store.get_fuel()
        except wasmtime.WasmtimeError:
            reply["fuel_used"] = limits.fuel
        if memory is not None:
            reply["memory_bytes"] = memory.data_len(store)
        if overflow[0]:
            reply.update(kind=ErrorKind.OUTPUT_TOO_LARGE.value,
                         message=f"wrote more than {limits.max_output_bytes} bytes to stdout")
        elif (reply["kind"] in (ErrorKind.TRAP.value, ErrorKind.EXIT_CODE.value)
              and reply["memory_bytes"] + MEMORY_NEAR_CAP > limits.memory_bytes):
            reply.update(kind=ErrorKind.MEMORY_LIMIT.value,
                         message=(f"memory limit of {limits.memory_bytes} bytes reached "
                                  f"(memory at {reply['memory_bytes']}); then {reply['message']}"))
        reply["stdout"] = bytes(out) if reply["kind"] is None else b""
        reply["stderr"] = bytes(err)
        reply["stderr_dropped"] = dropped[0]
        return reply


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:500]


def _trap_text(e: wasmtime.Trap) -> str:
    # wasmtime's message is "error while executing at wasm backtrace: ... Caused by: <reason>";
    # the reason is what names the trap, the backtrace follows it (bounded).
    text = e.message.strip()
    reason = text.rsplit("\n", 1)[-1].strip()
    return f"{reason} ({' '.join(text.split())[:400]})"


def write_input(path: str, data: bytes) -> None:
    """Write the fragment to the stdin file (0600, replaced atomically)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)
