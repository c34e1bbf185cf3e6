"""Safe defaults (issue 19, item 4): forgeable simulated-TEE evidence is never admitted by the
default profile, the loud option that admits it warns and keeps to loopback or a PSK, and
``init`` says which profile it chose and why.

Nothing here binds a non-loopback address: exposure is checked as a pure function.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from node.attestation.base import TeeKind
from node.attestation.policy import evaluate
from node.attestation.simulated import SimulatedProvider, SimulatedVerifier
from node.config import (
    ConfigError,
    NodeConfig,
    choose_profile,
    config_from_toml,
    exposure_error,
    is_loopback_addr,
)
from node.datadir import DataDir
from node.measure import agent_measurement
from node.runtime import SetupError, load_node_policy, profile_policy, select_provider
from tests.netutil import local_config, make_agent, wait_until


def _lan_on_loopback(**attestation: object) -> NodeConfig:
    """The lan profile's policy and attestation settings, on loopback without mDNS (tests
    never bind a network address), with the fast timings of the test config."""
    fast = local_config()
    att = dataclasses.replace(fast.attestation, tee="auto", **attestation)  # type: ignore[arg-type]
    return dataclasses.replace(NodeConfig.lan(), network=fast.network, attestation=att)


def _sim_verdict(tmp_path):
    m = agent_measurement("")
    ev = SimulatedProvider(tmp_path / "sim", m).get_evidence(bytes(64))
    return SimulatedVerifier().verify(ev, at=datetime.now(UTC)), m


# ---------------------------------------------------------------- which profile admits what


def test_only_local_test_or_the_loud_option_allows_the_simulated_tee():
    assert not NodeConfig.lan().simulated_allowed
    assert not NodeConfig.wan().simulated_allowed
    assert NodeConfig.local_test().simulated_allowed
    lan = NodeConfig.lan()
    loud = dataclasses.replace(lan, attestation=dataclasses.replace(lan.attestation,
                                                                    insecure_accept_simulated=True))
    assert loud.simulated_allowed
    loud.validate()


def test_default_policy_refuses_simulated_evidence_with_named_rules(tmp_path):
    verdict, m = _sim_verdict(tmp_path)
    assert verdict.accepted  # authentic: anyone holding the in-source root key makes these
    d = evaluate(profile_policy(NodeConfig.lan()), verdict, at=datetime.now(UTC), self_measurement=m)
    assert not d.allowed
    assert any(r.startswith("simulated:") for r in d.failed_rules)
    assert any(r.startswith("kind: sim") for r in d.failed_rules)
    loud = _lan_on_loopback(insecure_accept_simulated=True)
    assert evaluate(profile_policy(loud), verdict, at=datetime.now(UTC), self_measurement=m).allowed


@pytest.mark.parametrize("toml,match", [
    ("profile = 'lan'\n[attestation]\ntee = 'sim'\n", "insecure_accept_simulated"),
    ("profile = 'wan'\n[attestation]\ninsecure_accept_simulated = true\n", "wan"),
])
def test_config_refuses_the_simulated_tee_where_it_is_not_allowed(toml, match):
    with pytest.raises(ConfigError, match=match):
        config_from_toml(toml, where="c.toml")


def test_a_policy_file_cannot_reopen_the_simulated_tee(tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text('allowed_kinds = ["sim", "sev-snp"]\nallow_simulated = true\n')
    cfg = dataclasses.replace(NodeConfig.lan(), attestation=dataclasses.replace(
        NodeConfig.lan().attestation, policy_file=str(pol)))
    with pytest.raises(SetupError, match="insecure-simulated-tee"):
        load_node_policy(cfg)
    loud = dataclasses.replace(cfg, attestation=dataclasses.replace(
        cfg.attestation, insecure_accept_simulated=True))
    assert load_node_policy(loud).allow_simulated


def test_lan_without_hardware_does_not_fall_back_to_the_simulated_tee(tmp_path, monkeypatch):
    import node.attestation.providers as providers

    monkeypatch.setattr(providers, "detect_tee", lambda **kw: None)
    dd = DataDir(tmp_path / "d")
    with pytest.raises(SetupError, match="does not allow the simulated TEE"):
        select_provider(NodeConfig.lan(), dd)
    loud = _lan_on_loopback(insecure_accept_simulated=True)
    assert select_provider(loud, dd).kind is TeeKind.SIM


# ---------------------------------------------------------------- exposure (pure)


@pytest.mark.parametrize("addr,loop", [
    ("/ip4/127.0.0.1/tcp/0", True), ("/ip4/127.8.9.1/tcp/4001", True), ("/ip6/::1/tcp/1", True),
    ("/ip4/0.0.0.0/tcp/4001", False), ("/ip4/192.168.1.5/tcp/1", False), ("/ip6/::/tcp/1", False),
    ("/dns4/localhost/tcp/1", False), ("/ip4/not-an-ip/tcp/1", False), ("", False),
    ("ip4/127.0.0.1/tcp/1", False),
])
def test_loopback_addresses(addr, loop):
    assert is_loopback_addr(addr) is loop


def _with_net(cfg: NodeConfig, **net: object) -> NodeConfig:
    return dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, **net))  # type: ignore[arg-type]


def test_simulated_tee_on_a_network_address_without_psk_is_refused():
    local = NodeConfig.local_test()
    assert exposure_error(local) is None  # loopback, no mDNS
    wide = _with_net(local, listen=("/ip4/0.0.0.0/tcp/4001",))
    msg = exposure_error(wide)
    assert msg is not None and "\n" not in msg
    assert "/ip4/0.0.0.0/tcp/4001" in msg and "profile local_test" in msg and "--psk" in msg
    assert exposure_error(_with_net(wide, psk_file="/k")) is None
    assert exposure_error(wide, has_psk=True) is None
    # Outbound exposure counts too: a remote bootstrap node or peers found by mDNS.
    assert "bootstrap" in (exposure_error(_with_net(
        local, bootstrap=("/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWabc",))) or "")
    assert "mDNS" in (exposure_error(_with_net(local, mdns=True)) or "")
    # The loud option on lan (listen 0.0.0.0, mDNS on by default) needs a PSK.
    loud = _with_net(_lan_on_loopback(insecure_accept_simulated=True), listen=("/ip4/0.0.0.0/tcp/4001",))
    assert "insecure_accept_simulated" in (exposure_error(loud) or "")
    # Hardware-only profiles admit no forgeable evidence: no PSK needed.
    assert exposure_error(NodeConfig.lan()) is None and exposure_error(NodeConfig.wan()) is None


@given(st.ip_addresses(v=4))
def test_any_non_loopback_ipv4_listen_needs_a_psk(ip):
    cfg = _with_net(NodeConfig.local_test(), listen=(f"/ip4/{ip}/tcp/4001",))
    assert (exposure_error(cfg) is None) == ip.is_loopback


# ---------------------------------------------------------------- init's choice


def test_choose_profile_says_why():
    name, why = choose_profile(None, None)
    assert name == "local_test" and "no hardware TEE" in why and "loopback" in why
    name, why = choose_profile(None, "sev-snp")
    assert name == "lan" and "sev-snp" in why
    name, why = choose_profile("local-test", "tdx")
    assert name == "local_test" and "--profile" in why
    with pytest.raises(ConfigError):
        choose_profile("moon", None)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.process
def test_init_prints_the_profile_and_why(tmp_path):
    r = _cli("init", "--data-dir", str(tmp_path / "auto"))
    assert r.returncode == 0, r.stderr
    # This machine has no TEE: the default is the loopback-only simulated profile.
    assert "profile local_test: no hardware TEE" in r.stdout
    assert "profile = \"local_test\"" in (tmp_path / "auto" / "config.toml").read_text()
    r = _cli("init", "--data-dir", str(tmp_path / "lan"), "--profile", "lan")
    assert r.returncode == 0 and "profile lan: chosen with --profile" in r.stdout
    # ... and a lan node on a host without a TEE refuses to start, saying why, in one line.
    r = _cli("run", "--data-dir", str(tmp_path / "lan"), "--listen", "/ip4/127.0.0.1/tcp/0",
             "--no-mdns")
    assert r.returncode == 1 and "no hardware TEE found" in r.stderr
    r = _cli("run", "--data-dir", str(tmp_path / "lan"), "--listen", "/ip4/127.0.0.1/tcp/0",
             "--no-mdns", "--tee", "sim")
    assert r.returncode == 1 and "insecure_accept_simulated" in r.stderr
    assert r.stderr.count("\n") == 1


# ---------------------------------------------------------------- real nodes


async def test_default_profile_node_quarantines_a_simulated_tee_peer(tmp_path):
    """The attack: a peer with forged (simulated) evidence joins a default-profile node."""
    cfg = _lan_on_loopback()
    assert not cfg.simulated_allowed
    refused: list[tuple[str, tuple[str, ...]]] = []
    async with trio.open_nursery() as n:
        honest = make_agent(tmp_path, "lan", config=cfg, policy=load_node_policy(cfg))
        honest.on_outcome(lambda pid, o: refused.append(
            (pid, o.decision.failed_rules if o.decision else ())) if not o.accepted else None)
        await n.start(honest.run)
        forger = make_agent(tmp_path, "sim", bootstrap=(honest.full_addrs()[0],))
        await n.start(forger.run)
        await wait_until(lambda: honest.counters.get("attest_rejected", "policy") >= 1, 20)
        p = honest.peers.get(forger.peer_id)
        assert p is not None and not honest.peers.is_attested(forger.peer_id)
        assert "simulated" in p.quarantine_reason
        # Every failed rule is named: the kind and the simulated TEE.
        rules = [r for pid, rs in refused if pid == forger.peer_id for r in rs]
        assert any(r.startswith("simulated:") for r in rules)
        assert any(r.startswith("kind: sim") for r in rules)
        honest.stop()
        forger.stop()


async def test_loud_option_admits_a_simulated_tee_peer(tmp_path):
    cfg = _lan_on_loopback(insecure_accept_simulated=True)
    async with trio.open_nursery() as n:
        node = make_agent(tmp_path, "lan", config=cfg, policy=load_node_policy(cfg))
        await n.start(node.run)
        peer = make_agent(tmp_path, "sim", bootstrap=(node.full_addrs()[0],))
        await n.start(peer.run)
        await wait_until(lambda: node.peers.is_attested(peer.peer_id), 20)
        node.stop()
        peer.stop()


@pytest.mark.process
def test_loud_option_warns_at_start_and_admits_a_simulated_peer(tmp_path):
    """Real processes: a lan node run with --insecure-simulated-tee on loopback, and a
    local-test node joining it. Both attest; the lan node's log carries the WARNING."""
    from node.demo import NodeProcess, all_mutually_attested

    assert _cli("init", "--data-dir", str(tmp_path / "lan"), "--profile", "lan").returncode == 0
    started: list[NodeProcess] = []
    try:
        loud = NodeProcess(tmp_path / "lan", extra=["--insecure-simulated-tee", "--no-mdns"])
        started.append(loud)
        boot = loud.wait_listening(30)[0]
        sim = NodeProcess(tmp_path / "sim", bootstrap=[boot])
        started.append(sim)
        sim.wait_listening(30)
        import time

        deadline = time.monotonic() + 60
        while not all_mutually_attested([loud.status(), sim.status()]):
            assert time.monotonic() < deadline, loud.tail_log()
            time.sleep(0.2)
        st = loud.status()
        assert st is not None and st["profile"] == "lan"
        log = loud.log_path.read_text()
        assert "WARNING" in log and "INSECURE" in log and "insecure_accept_simulated" in log
    finally:
        for p in started:
            p.signal(15)
            p.wait(15)
