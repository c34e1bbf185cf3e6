"""The compiled simulator engine: the same sources, compiled ahead of time with mypyc.

The simulator spends its time in the membership and dissemination cores and in the world's
event loop. mypyc compiles those very modules (type-annotated Python) to C extensions; the
result runs the identical code -- the same trace digest for the same seed, which
``tests/sim/test_accel.py`` checks -- about 2-3x faster.

Compiled modules would shadow their ``.py`` files if they sat beside them, and a developer
editing ``overlay/membership.py`` would then silently run stale code (in the real node too).
So the compiled engine is a *snapshot*: a copy of the ``overlay`` and ``sim`` packages plus
their extensions, in a cache directory named by a digest of the sources, the Python version
and the mypy version::

    ~/.cache/enclave-swarm/sim-accel/<digest>/{overlay,sim}/...   (ENCLAVE_SWARM_CACHE overrides)

A snapshot is used only when its digest matches the sources being run, so it can never be
stale. ``enclave-swarm sim --engine mypyc`` (or ``auto`` when a fresh snapshot exists) runs
the simulation in a child interpreter with the snapshot first on ``PYTHONPATH``.

Build: ``python -m sim.accel`` (``make sim-accel``), about a minute of gcc. It needs mypy
(the ``dev`` extra) and a C compiler; without them the CPython engine runs as before.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: Packages copied into the snapshot (everything the simulator imports from this project).
PACKAGES = ("overlay", "sim")
#: The hot modules compiled with mypyc; the rest of the snapshot stays interpreted. The wire
#: message modules (``overlay.wire``, ``overlay.messages_gossip``) use a class decorator that
#: mypyc's native classes do not support, so they stay Python.
COMPILED = (
    "overlay/membership.py",
    "overlay/dissemination.py",
    "overlay/records.py",
    "sim/world.py",
    "sim/events.py",
    "sim/net.py",
    "sim/sizes.py",
    "sim/invariants.py",
    "sim/scenarios.py",
    "sim/report.py",
    "sim/ceiling.py",
)
ENGINES = ("auto", "cpython", "mypyc")
_MARKER = "DIGEST"
_CHILD_ENV = "ENCLAVE_SWARM_SIM_SNAPSHOT"


class AccelError(Exception):
    """The compiled engine cannot be built or used; the message says why."""


def _package_root(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise AccelError(f"package {pkg!r} not found")
    return Path(spec.origin).parent


def _sources() -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for pkg in PACKAGES:
        root = _package_root(pkg)
        for path in sorted(root.rglob("*.py")):
            out.append((f"{pkg}/{path.relative_to(root).as_posix()}", path))
    return out


def _mypy_version() -> str:
    try:
        from mypy.version import __version__
    except ImportError:
        return "none"
    return str(__version__)


def digest() -> str:
    """The snapshot name for the sources as they are now."""
    h = hashlib.sha256(b"enclave-swarm sim-accel v1\0")
    h.update(f"{sys.version}\0{_mypy_version()}\0{','.join(COMPILED)}\0".encode())
    for rel, path in _sources():
        data = path.read_bytes()
        h.update(len(rel).to_bytes(4, "big") + rel.encode() + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:24]


def cache_root() -> Path:
    base = os.environ.get("ENCLAVE_SWARM_CACHE")
    if base:
        return Path(base) / "sim-accel"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "enclave-swarm" / "sim-accel"


def snapshot_dir() -> Path | None:
    """The fresh compiled snapshot for the current sources, or None if there is none."""
    d = cache_root() / digest()
    try:
        if (d / _MARKER).read_text().strip() == d.name:
            return d
    except OSError:
        return None
    return None


def running_compiled() -> bool:
    """Whether this interpreter runs the compiled world (i.e. inside a snapshot)."""
    import importlib.util

    spec = importlib.util.find_spec("sim.world")  # where it loads from, without importing it
    return spec is not None and not (spec.origin or "").endswith(".py")


def build(*, quiet: bool = False) -> Path:
    """Compile a snapshot of the current sources (idempotent); returns its directory."""
    existing = snapshot_dir()
    if existing is not None:
        return existing
    if importlib.util.find_spec("mypyc") is None:
        raise AccelError("mypyc is not installed (pip install -e '.[dev]')")
    name = digest()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for rel, path in _sources():
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)
        if not quiet:
            print(f"compiling the simulator engine with mypyc ({len(COMPILED)} modules, "
                  "about a minute)...", file=sys.stderr, flush=True)
        # The project's mypy settings do not matter to mypyc's output; an empty config keeps
        # the build independent of whatever config file the caller's directory holds.
        (work / "mypy.ini").write_text("[mypy]\nignore_missing_imports = True\n")
        proc = subprocess.run(
            [sys.executable, "-m", "mypyc", "--config-file", "mypy.ini", *COMPILED],
            cwd=work, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise AccelError("mypyc failed:\n" + "\n".join(tail))
        shutil.rmtree(work / "build", ignore_errors=True)
        (work / "mypy.ini").unlink()
        # Sources that were compiled must not be importable as .py next to their extension
        # (the extension wins anyway; removing them makes the snapshot unambiguous).
        for rel in COMPILED:
            (work / rel).unlink()
        (work / _MARKER).write_text(name + "\n")
        final = root / name
        try:
            work.rename(final)
        except OSError:  # another build finished first: keep theirs
            shutil.rmtree(work, ignore_errors=True)
        _prune(root, keep=name)
        return final
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _prune(root: Path, keep: str, max_old: int = 3) -> None:
    """Keep the newest few snapshots; older ones belong to sources that no longer exist."""
    old = sorted((p for p in root.iterdir() if p.is_dir() and p.name != keep
                  and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for p in old[:-max_old] if max_old else old:
        shutil.rmtree(p, ignore_errors=True)


def snapshot_env(snapshot: Path) -> dict[str, str]:
    """The environment of a child interpreter that imports from ``snapshot`` first. Run it
    with ``-P``: otherwise the current directory comes before PYTHONPATH and puts the
    uncompiled sources of a checkout back in front of the snapshot."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(snapshot), *filter(None, [env.get("PYTHONPATH")])])
    env[_CHILD_ENV] = str(snapshot)
    return env


def run_in_snapshot(snapshot: Path, argv: Sequence[str]) -> int:
    """Run ``python -m sim ARGV`` with the snapshot first on the import path."""
    return subprocess.call([sys.executable, "-P", "-m", "sim", *argv], env=snapshot_env(snapshot))


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto",
        help="cpython: interpret; mypyc: the compiled snapshot of the same code (built on first "
             "use, about a minute); auto (default): mypyc if a fresh snapshot exists")
    parser.set_defaults(_sim_parser=parser)


def _argv_of(args: argparse.Namespace) -> list[str]:
    """The command line that parses back to ``args`` (for the child interpreter)."""
    parser: argparse.ArgumentParser = args._sim_parser
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "engine"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            out.append(flag)
        else:
            out += [flag, str(value)]
    return out


def delegate(args: argparse.Namespace) -> int | None:
    """Run the whole ``sim`` command in the compiled engine when ``--engine`` asks for it.

    Returns the child's exit code, or None when this interpreter should run it itself
    (``cpython``; ``auto`` without a fresh snapshot; already inside the snapshot)."""
    engine = getattr(args, "engine", "cpython")
    if os.environ.get(_CHILD_ENV):
        if not running_compiled():  # never recurse: say what went wrong instead
            print(f"error: the compiled snapshot {os.environ[_CHILD_ENV]} did not load; "
                  "run with --engine cpython", file=sys.stderr)
            return 1  # a failure of the build, not of the command line
        return None
    if engine == "cpython":
        return None
    snap = snapshot_dir()
    if snap is None:
        if engine == "auto":
            return None
        try:
            snap = build()
        except AccelError as exc:
            print(f"error: --engine mypyc: {exc}", file=sys.stderr)
            return 1  # the build failed: not a usage error
    return run_in_snapshot(snap, _argv_of(args))


def engine_name() -> str:
    return "mypyc" if running_compiled() else "cpython"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.accel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="only say whether a fresh snapshot exists (exit 1 if not)")
    args = parser.parse_args(argv)
    if args.check:
        d = snapshot_dir()
        print(d if d is not None else f"no compiled snapshot for {digest()}")
        return 0 if d is not None else 1
    try:
        print(build())
    except AccelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
