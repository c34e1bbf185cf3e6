"""An interrupted chaos run leaves nothing behind: SIGTERM unwinds through its clean-up
(node processes, tmpfs mounts, network namespaces)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from node.chaos.netns import PREFIX, unavailable_reason

# Slow suite (one worker): it inspects machine-wide state (namespaces, mounts, processes) and
# cannot tell its run from a chaos test running at once on the other pytest worker of make test
# (seen: a 4-node harness's namespaces counted as its own).
pytestmark = [
    pytest.mark.process,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


def ours(before: set[str]) -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)} - before


def _chaos_mounts() -> set[str]:
    out = subprocess.run(["mount"], capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if "/esc-1-" in line}


def test_sigterm_mid_run_cleans_up(tmp_path):
    before = ours(set())
    mounts_before = _chaos_mounts()  # a run killed by SIGKILL elsewhere may have left its own
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "chaos", "--nodes", "3", "--seed", "1",
                             "--duration-s", "60", "--faults", "kill", "--clients", "0",
                             "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while time.monotonic() < deadline and len(seen) < 4:  # three nodes and the bridge
            seen = ours(before)
            time.sleep(0.2)
        assert len(seen) == 4, "the run never built its namespaces"
        time.sleep(2)  # into the node start-up
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)  # reaped and its pipes closed, even on failure
    assert proc.returncode == 1 and "interrupted" in err
    assert not (ours(before) & seen)
    assert not (_chaos_mounts() - mounts_before)
    nodes = subprocess.run(["pgrep", "-f", "node.cli run --data-dir /tmp/esc-1-"], capture_output=True)
    assert nodes.returncode == 1  # no node process left
