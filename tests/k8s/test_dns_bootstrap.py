"""A node joins through a bootstrap address that names its host (``/dns4/<name>/tcp/<port>/p2p/
<id>``), as the Kubernetes manifests' bootstrap ConfigMap does with the pods' StatefulSet DNS
names: the agent resolves the name with the system resolver before each attempt
(overlay/discovery.py, ``dns_name``). Here the name is ``localhost`` (from /etc/hosts, which
py-libp2p's own DNS-only resolver cannot resolve); a private-network key, because a node that
admits the simulated TEE refuses a bootstrap address that is not a loopback IP literal without
one."""

from __future__ import annotations

import re
import secrets
import signal
import time

import pytest

from node.demo import NodeProcess, all_mutually_attested

pytestmark = pytest.mark.process


def test_a_node_joins_through_a_dns_bootstrap_address(tmp_path):
    psk = tmp_path / "swarm.key"
    psk.write_text(secrets.token_hex(32) + "\n")
    psk.chmod(0o600)
    extra = ["--psk", str(psk)]
    first = NodeProcess(tmp_path / "node0", extra=extra)
    procs = [first]
    try:
        m = re.match(r"/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/(\w+)$", first.wait_listening(60)[0])
        assert m, first.addrs
        by_name = f"/dns4/localhost/tcp/{m.group(1)}/p2p/{m.group(2)}"
        second = NodeProcess(tmp_path / "node1", bootstrap=[by_name], extra=extra)
        procs.append(second)
        second.wait_listening(60)
        deadline = time.monotonic() + 60
        while not all_mutually_attested([first.status(), second.status()]):
            assert time.monotonic() < deadline, second.tail_log()
            time.sleep(0.2)
        st = second.status()
        assert st is not None and st["counters"].get("dial_failed", {}).get("dns", 0) == 0
    finally:
        for p in procs:
            p.signal(signal.SIGKILL)
            p.wait(10)
