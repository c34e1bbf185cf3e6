"""mDNS discovery between two hosts in network namespaces this test creates (root only).

Two namespaces joined by a veth pair stand for two machines on one LAN. Each runs a node with
the LAN profile (simulated TEE by the loud option, behind a shared private-network key) and no
bootstrap address; they must find each other by mDNS and attest.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from node.control import NotRunning, request

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="needs root and iproute2 to create network namespaces"),
]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def lan():
    tag = uuid.uuid4().hex[:6]
    a, b = f"esa{tag}", f"esb{tag}"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        sh("ip", "link", "set", f"va{tag}", "netns", a)
        sh("ip", "link", "set", f"vb{tag}", "netns", b)
        for ns, dev, ip in ((a, f"va{tag}", "10.231.7.1/24"), (b, f"vb{tag}", "10.231.7.2/24")):
            sh("ip", "-n", ns, "addr", "add", ip, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up", "multicast", "on")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", b], capture_output=True)


def start(ns: str, data_dir, ip: str, log, psk) -> subprocess.Popen:
    # No TEE here: the lan profile admits the simulated TEE only with the loud option, and on a
    # network address only behind a private-network key.
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "node.cli", "run", "--data-dir", str(data_dir),
         "--profile", "lan", "--tee", "sim", "--insecure-simulated-tee", "--psk", str(psk),
         "--listen", f"/ip4/{ip}/tcp/4001", "--mdns"],
        stdout=subprocess.DEVNULL, stderr=log)


def attested(data_dir) -> int:
    try:
        reply = request(data_dir / "control.sock", {"cmd": "status"}, timeout_s=3)
    except (NotRunning, OSError):
        return 0
    return reply["status"]["attested_peers"] if reply.get("ok") else 0


def test_two_lan_hosts_find_each_other_by_mdns(lan, tmp_path):
    ns_a, ns_b = lan
    logs = [open(tmp_path / "a.log", "wb"), open(tmp_path / "b.log", "wb")]
    psk = tmp_path / "swarm.key"
    psk.write_text(os.urandom(32).hex() + "\n")
    psk.chmod(0o600)
    procs = [start(ns_a, tmp_path / "a", "10.231.7.1", logs[0], psk),
             start(ns_b, tmp_path / "b", "10.231.7.2", logs[1], psk)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if attested(tmp_path / "a") == 1 and attested(tmp_path / "b") == 1:
                break
            time.sleep(0.5)
        else:
            pytest.fail("no mDNS discovery:\n" + (tmp_path / "a.log").read_text()[-3000:])
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                assert p.wait(20) == 0
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
