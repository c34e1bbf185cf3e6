"""The test hosts of node/chaos/netns.py on this machine (root): namespaces on a bridge, the
partitions and link faults, and that nothing is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from node.chaos.netns import TestNet, unavailable_reason

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.skipif(shutil.which("ping") is None or shutil.which("nft") is None,
                       reason="needs ping and nft (`make chaos-deps` installs them)"),
]


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_hosts_partitions_link_faults_and_cleanup():
    net = TestNet(4)
    with net:
        assert all(ns in namespaces() for ns in [net.bridge_ns, *net.namespaces])
        assert net.ping(0, 3) and net.ping(2, 1)
        # a bridge node (3) in no group keeps both sides; the groups lose each other
        net.partition([[0, 1], [2]])
        assert net.ping(0, 1) and net.ping(3, 0) and net.ping(3, 2)
        assert not net.ping(0, 2) and not net.ping(2, 1)
        net.heal()
        assert net.ping(0, 2) and net.ping(2, 1)
        # the whole subnet lives only inside the namespaces
        root = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout
        assert "10.241.0." not in root
        total = net.shape([0], {"qdisc": "netem", "loss_pct": 100.0, "delay_ms": 50})
        assert total["applied"]["loss_pct"] == 100.0
        if not net.has_netem():
            assert total["skipped"] == ["delay_ms"] and total["why_skipped"]
        assert not net.ping(0, 1)
        net.heal_links()
        assert net.ping(0, 1)
        capped = net.shape([1], {"qdisc": "tbf", "rate_kbit": 256})
        assert capped["applied"] == {"rate_kbit": 256}
        qdisc = subprocess.run(["tc", "-n", net.namespaces[1], "qdisc", "show", "dev", "eth0"],
                               capture_output=True, text=True, check=True).stdout
        assert "tbf" in qdisc and "256Kbit" in qdisc
        net.heal()
    assert net.tag not in namespaces()


def test_namespaces_are_removed_when_creation_fails(monkeypatch):
    net = TestNet(2)
    import node.chaos.netns as netns

    real = netns._run
    calls = {"n": 0}

    def failing(*cmd, **kw):
        calls["n"] += 1
        if calls["n"] == 8:  # part-way through the second node
            raise netns.NetError("injected")
        return real(*cmd, **kw)

    monkeypatch.setattr(netns, "_run", failing)
    with pytest.raises(netns.NetError, match="injected"):
        net.create()
    assert net.tag not in namespaces()
    assert os.geteuid() == 0
