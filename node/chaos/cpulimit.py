"""A CPU quota on one process: the chaos ``slow`` fault. The node stays alive, connected and
attested, and every timer of it fires late: an overloaded host, a noisy neighbour, a VM whose
credits ran out. Unlike ``pause`` (SIGSTOP), it still answers, slowly.

The process is moved into a cgroup of its own, ``esc-slow-<run tag>-<pid>``, whose CPU bandwidth is
``pct`` percent of one CPU per 100 ms period:

* cgroup v2 (the unified hierarchy at ``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on a
  hybrid machine) when its ``cpu`` controller is available: ``cpu.max`` = ``"<quota> <period>"``;
* else cgroup v1's ``cpu`` controller (``/sys/fs/cgroup/cpu``): ``cpu.cfs_quota_us`` and
  ``cpu.cfs_period_us``. (This project's CI VM mounts cgroup v1 controllers with an empty v2
  hierarchy beside them; a fresh Debian has v2 alone.)

Writing the pid to ``cgroup.procs`` moves every thread of the process; children it starts while
limited (workload workers) are limited with it. :meth:`CpuLimit.lift` moves the process back to
the cgroup it came from and removes ours. Everything here needs root.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PERIOD_US = 100_000
PREFIX = "esc-slow-"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuLimitError(RuntimeError):
    """No cgroup CPU controller can limit a process here (the message says why)."""


def _v2_root() -> Path | None:
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        controllers = root / "cgroup.controllers"
        with contextlib.suppress(OSError):
            if "cpu" in controllers.read_text().split():
                return root
    return None


def _v1_root() -> Path | None:
    root = CGROUP_ROOT / "cpu"
    return root if (root / "cpu.cfs_quota_us").exists() else None


def unavailable_reason() -> str | None:
    """Why no process can be CPU-limited here, or None when one can."""
    if os.geteuid() != 0:
        return "CPU limits need root (cgroups)"
    if _v2_root() is None and _v1_root() is None:
        return ("no cgroup CPU controller: neither cgroup v2 with the cpu controller nor "
                "cgroup v1's cpu hierarchy at /sys/fs/cgroup/cpu")
    return None


def _current(pid: int, v2: bool) -> str:
    """The cgroup path of ``pid`` in the hierarchy used (``/`` when not found)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (v2 and controllers == "") or (not v2 and "cpu" in controllers.split(",")):
            return path or "/"
    return "/"


class CpuLimit:
    """``pct`` percent of one CPU for process ``pid`` until :meth:`lift`."""

    def __init__(self, pid: int, pct: float, *, tag: str = "") -> None:
        if not 0 < pct <= 100:
            raise ValueError(f"a CPU limit is a percentage of one CPU in (0, 100], not {pct}")
        why = unavailable_reason()
        if why is not None:
            raise CpuLimitError(why)
        self.pid, self.pct = pid, pct
        v2 = _v2_root()
        self.v2 = v2 is not None
        root = v2 if v2 is not None else _v1_root()
        assert root is not None  # unavailable_reason() said one is there
        self.root: Path = root
        self.home = self.root / _current(pid, self.v2).lstrip("/")
        self.group = self.root / f"{PREFIX}{tag}{'-' if tag else ''}{pid}"
        quota = max(1000, int(PERIOD_US * pct / 100))
        if self.v2:
            _enable_cpu(self.root)
        self.group.mkdir(exist_ok=True)
        try:
            if self.v2:
                (self.group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.group / "cpu.cfs_quota_us").write_text(str(quota))
            (self.group / "cgroup.procs").write_text(str(pid))
        except OSError:
            self._remove()
            raise

    def lift(self) -> None:
        """Move the process (and anything it started meanwhile) back; remove the cgroup.
        Idempotent; a process that is gone meanwhile is no error."""
        _empty_into(self.group, self.home if self.home.exists() else self.root)
        self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.group.rmdir()


def _enable_cpu(root: Path) -> None:
    """cgroup v2: children of ``root`` get the cpu controller (no-op when they have it)."""
    control = root / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def _empty_into(group: Path, dest: Path) -> None:
    try:
        pids = (group / "cgroup.procs").read_text().split()
    except FileNotFoundError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, OSError):  # it may have exited meanwhile
            (dest / "cgroup.procs").write_text(pid)
