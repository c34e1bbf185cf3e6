"""``run --metrics`` on the command line: a malformed address is a usage error (2), a
non-loopback one a refusal (1) unless --metrics-allow-remote, both before anything starts; a
taken address is logged while the node process keeps running, and its metrics come up once the
address is free."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from node.demo import NodeProcess


def run(tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", "run", "--data-dir", str(tmp / "d"),
                           "--profile", "local-test", "--listen", "/ip4/127.0.0.1/tcp/0", *flags],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.process
@pytest.mark.parametrize("value", ["9464", "host:9464", "127.0.0.1:99999", "127.0.0.1:"])
def test_a_malformed_address_is_a_usage_error(tmp_path: Path, value: str) -> None:
    r = run(tmp_path, "--metrics", value)
    assert r.returncode == 2 and "--metrics" in r.stderr
    assert not (tmp_path / "d").exists()  # refused before the data dir is touched


@pytest.mark.process
def test_a_non_loopback_address_is_refused_without_the_flag(tmp_path: Path) -> None:
    r = run(tmp_path, "--metrics", "0.0.0.0:9464")
    assert r.returncode == 1 and "--metrics-allow-remote" in r.stderr
    assert r.stderr.startswith("enclave-swarm: --metrics 0.0.0.0:9464:") and r.stderr.count("\n") == 1
    r = run(tmp_path, "--metrics-allow-remote")
    assert r.returncode == 2 and "needs --metrics" in r.stderr


@pytest.mark.process
def test_a_taken_address_is_logged_and_the_node_keeps_running(tmp_path: Path) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    p = NodeProcess(tmp_path / "n0", extra=["--metrics", f"127.0.0.1:{port}"])
    try:
        p.wait_listening(60)  # it started all the same
        st = p.status()
        assert st is not None and st["metrics"]["serving"] is False
        assert "Address already in use" in st["metrics"]["error"]
        assert st["counters"]["metrics_bind_failed"]["EADDRINUSE"] >= 1
        log = p.log_path.read_text()
        assert f"metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in log
        held.close()  # freed: the node binds it at its next retry (every 10 s)
        deadline = time.monotonic() + 40
        while not (p.status() or {}).get("metrics", {}).get("serving"):
            assert time.monotonic() < deadline, "the endpoint never came up"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"enclave_swarm_uptime_seconds" in r.read()
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        held.close()
        p.signal(signal.SIGKILL)
        p.wait(10)
