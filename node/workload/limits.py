"""What a fragment may use: its limits, the capabilities a job grants, and how a run ends.

Pure: no wasmtime, no trio, no clock. The engine (``engine.py``) and its worker (``worker.py``)
share these definitions; the task driver builds ``Limits`` and ``Grants`` from the job spec.

Rules:

* Every limit is finite and validated (``Limits.validate``): a fragment without a bound on fuel,
  memory, wall time, output or stderr cannot be run.
* Capabilities are deny-by-default. wasmtime-py's ``WasiConfig`` has no switch to withhold the
  WASI clocks or ``random_get`` (only preopens, env, argv and stdio are configurable), so the
  engine refuses, before instantiation, any module that *imports* a function of a capability
  the job did not grant (``refused_imports``). The filesystem and the network are never granted
  in this version: no directory is preopened and no socket handed over, and modules importing
  ``path_*`` or ``sock_*`` are refused too, so that the refusal is explicit rather than an
  ENOTCAPABLE at run time.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

WASI_MODULE = "wasi_snapshot_preview1"

# Ceilings no job can raise: they bound what a worker process holds per fragment.
MAX_FUEL = 10**13
MAX_MEMORY_BYTES = 4 * 1024**3  # wasm32's whole address space
MAX_WALL_TIME_S = 3600.0
MAX_OUTPUT_BYTES = 256 * 1024**2
MAX_STDERR_BYTES = 1024**2


class ErrorKind(enum.StrEnum):
    """Why a fragment produced no result. The value is stable (logs, wire, CLI)."""

    HASH_MISMATCH = "hash_mismatch"  # module bytes differ from the committed sha256 (not compiled)
    BAD_MODULE = "bad_module"  # does not compile, is too large, lacks _start, imports non-WASI
    DENIED_CAPABILITY = "denied_capability"  # imports a WASI function the job did not grant
    INPUT_TOO_LARGE = "input_too_large"  # the fragment exceeds the engine's input bound
    OUT_OF_FUEL = "out_of_fuel"
    MEMORY_LIMIT = "memory_limit"
    DEADLINE = "deadline"  # wall-clock deadline (epoch interrupt, or the worker was killed)
    OUTPUT_TOO_LARGE = "output_too_large"
    TRAP = "trap"  # any other wasm trap; the message carries wasmtime's text
    EXIT_CODE = "exit_code"  # the module called proc_exit with a nonzero code
    BUSY = "busy"  # no slot freed up within the engine's slot wait
    WORKER_FAILED = "worker_failed"  # the worker process died or broke its protocol


class Capability(enum.StrEnum):
    CLOCK = "clock"
    RANDOM = "random"
    FILESYSTEM = "filesystem"
    NETWORK = "network"


def capability_of(wasi_function: str) -> Capability | None:
    """The capability a WASI preview 1 function needs, or None for the always-allowed set
    (stdio fds, args, environ, proc_exit, sched_yield, ...)."""
    if wasi_function in ("clock_time_get", "clock_res_get", "poll_oneoff"):
        # poll_oneoff is how WASI sleeps (clock subscriptions): a timing source.
        return Capability.CLOCK
    if wasi_function == "random_get":
        return Capability.RANDOM
    if wasi_function.startswith("path_"):
        return Capability.FILESYSTEM
    if wasi_function.startswith("sock_"):
        return Capability.NETWORK
    return None


@dataclass(frozen=True)
class Grants:
    """Capabilities a job grants its module. Filesystem and network cannot be granted (yet)."""

    clock: bool = False
    random: bool = False

    def allowed(self) -> frozenset[Capability]:
        out = set()
        if self.clock:
            out.add(Capability.CLOCK)
        if self.random:
            out.add(Capability.RANDOM)
        return frozenset(out)


def refused_imports(imports: Iterable[tuple[str, str]], grants: Grants) -> tuple[str | None, str]:
    """Check a module's (module, name) imports against ``grants``.

    Returns ``(None, "")`` when the module may run, else ``(kind, reason)`` with kind an
    ``ErrorKind`` value: ``bad_module`` for an import outside WASI preview 1 (nothing else is
    linked), ``denied_capability`` for a WASI function of a capability not granted.
    """
    allowed = grants.allowed()
    for module, name in imports:
        if module != WASI_MODULE:
            return ErrorKind.BAD_MODULE.value, f"imports {module}.{name}: only {WASI_MODULE} is linked"
        cap = capability_of(name)
        if cap is not None and cap not in allowed:
            return (ErrorKind.DENIED_CAPABILITY.value,
                    f"imports {module}.{name}, which needs the {cap.value} capability; not granted")
    return None, ""


@dataclass(frozen=True)
class Limits:
    """Per-fragment limits; every one is finite.

    ``fuel``: wasmtime fuel units (about one per wasm instruction). ``memory_bytes``: the cap on
    the store's linear memory (a grow beyond it fails; instantiation fails if the module's minimum
    exceeds it). ``wall_time_s``: the epoch deadline; the worker is killed (SIGKILL) if it has not
    answered ``kill_grace_s`` (engine config) later. ``max_output_bytes``: stdout beyond this
    fails the fragment. ``max_stderr_bytes``: stderr beyond this is dropped (counted, not fatal).
    """

    fuel: int = 10_000_000_000
    memory_bytes: int = 256 * 1024**2
    wall_time_s: float = 30.0
    max_output_bytes: int = 16 * 1024**2
    max_stderr_bytes: int = 64 * 1024

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        if not 0 < self.fuel <= MAX_FUEL:
            raise ValueError(f"fuel must be in 1..{MAX_FUEL}, got {self.fuel}")
        if not 65536 <= self.memory_bytes <= MAX_MEMORY_BYTES:
            raise ValueError(f"memory_bytes must be in 65536..{MAX_MEMORY_BYTES}, got {self.memory_bytes}")
        if not 0 < self.wall_time_s <= MAX_WALL_TIME_S:
            raise ValueError(f"wall_time_s must be in (0, {MAX_WALL_TIME_S}], got {self.wall_time_s}")
        if not 0 <= self.max_output_bytes <= MAX_OUTPUT_BYTES:
            raise ValueError(f"max_output_bytes must be in 0..{MAX_OUTPUT_BYTES}, "
                             f"got {self.max_output_bytes}")
        if not 0 <= self.max_stderr_bytes <= MAX_STDERR_BYTES:
            raise ValueError(f"max_stderr_bytes must be in 0..{MAX_STDERR_BYTES}, "
                             f"got {self.max_stderr_bytes}")
