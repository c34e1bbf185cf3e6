"""The ``slow`` fault's CPU quota (node/chaos/cpulimit.py) on a real process: held to its share
of one CPU while limited, back to full speed and to its own cgroup after, nothing left behind.
The share is a count of CPU clock ticks the kernel charged the process (/proc/<pid>/stat)
against the wall time, with wide margins: the quota is the behaviour, not a speed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.chaos import cpulimit
from node.chaos.cpulimit import CpuLimit, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def share(pid: int, window_s: float) -> float:
    c, t = cpu_s(pid), time.monotonic()
    time.sleep(window_s)
    return (cpu_s(pid) - c) / (time.monotonic() - t)


def test_a_busy_process_is_held_to_its_quota_and_released():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        before = Path(f"/proc/{busy.pid}/cgroup").read_text()
        limit = CpuLimit(busy.pid, 10, tag="test")
        assert limit.group.is_dir() and str(busy.pid) in (limit.group / "cgroup.procs").read_text()
        assert share(busy.pid, 2.0) < 0.3  # 10 % of a CPU (a busy loop alone would take ~100 %)
        limit.lift()
        limit.lift()  # idempotent
        assert not limit.group.exists()
        assert Path(f"/proc/{busy.pid}/cgroup").read_text() == before
        # Free again: well above the quota (another process may share the core).
        assert share(busy.pid, 1.0) > 0.3
    finally:
        busy.kill()
        busy.wait()


def test_a_process_that_exits_while_limited_is_no_error_at_lift():
    short = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    limit = CpuLimit(short.pid, 25, tag="test")
    short.wait()
    limit.lift()
    assert not limit.group.exists()


@pytest.mark.parametrize("pct", [0, -5, 100.5])
def test_a_share_outside_one_cpu_is_refused(pct):
    with pytest.raises(ValueError, match="percentage of one CPU"):
        CpuLimit(os.getpid(), pct)


def test_no_cpu_controller_is_a_clear_refusal(monkeypatch):
    monkeypatch.setattr(cpulimit, "CGROUP_ROOT", Path("/nonexistent"))
    assert "no cgroup CPU controller" in str(unavailable_reason())
    with pytest.raises(cpulimit.CpuLimitError, match="no cgroup CPU controller"):
        CpuLimit(os.getpid(), 10)
