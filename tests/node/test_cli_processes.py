"""The CLI driving real node processes on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from node.demo import NodeProcess, all_mutually_attested
from node.testing import poll_until as wait_for

pytestmark = pytest.mark.process


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
                          timeout=timeout)




@pytest.fixture
def nodes(tmp_path):
    started: list[NodeProcess] = []

    def start(name: str, bootstrap: list[str] | None = None) -> NodeProcess:
        p = NodeProcess(tmp_path / name, bootstrap=bootstrap)
        started.append(p)
        p.wait_listening(30)
        return p

    yield start
    for p in started:
        p.signal(signal.SIGKILL)
        p.wait(10)


def status_json(p: NodeProcess) -> dict:
    r = cli("status", "--data-dir", str(p.data_dir), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_three_nodes_join_attest_and_show_in_status(nodes):
    a = nodes("a")
    b = nodes("b", [a.addrs[0]])
    c = nodes("c", [a.addrs[0]])
    wait_for(lambda: all_mutually_attested([a.status(), b.status(), c.status()]))
    st = status_json(c)
    assert st["addrs"][0].endswith("/p2p/" + st["peer_id"])
    assert st["tee"] == "sim" and st["uptime_s"] > 0
    assert {p["peer_id"] for p in st["peers"] if p["attested"]} == {status_json(a)["peer_id"],
                                                                      status_json(b)["peer_id"]}
    for p in st["peers"]:
        assert set(p) >= {"peer_id", "addrs", "attested", "tee", "score", "rtt_ms"}
        assert p["score"] == 90
    human = cli("status", "--data-dir", str(a.data_dir))
    assert human.returncode == 0 and "attested peers=2/2" in human.stdout
    # the summary of what the JSON has beyond the peer table: role, manager and term; shards; jobs
    st_a = status_json(a)
    assert f"role {st_a['role']}" in human.stdout and f"term {st_a['term']}" in human.stdout
    assert "shards held 0" in human.stdout and "jobs owned: none" in human.stdout


def test_sigkilled_node_restarts_with_same_identity_and_is_reattested(nodes, tmp_path):
    a = nodes("a")
    b = nodes("b", [a.addrs[0]])
    wait_for(lambda: all_mutually_attested([a.status(), b.status()]))
    pid_before = status_json(b)["peer_id"]
    b.signal(signal.SIGKILL)
    assert b.wait(10) == -signal.SIGKILL
    wait_for(lambda: not any(p["attested"] for p in status_json(a)["peers"]), 30)
    b2 = nodes("b", [a.addrs[0]])  # same data dir: stale lock and socket are recovered
    wait_for(lambda: all_mutually_attested([a.status(), b2.status()]))
    assert status_json(b2)["peer_id"] == pid_before


def test_sigterm_says_goodbye_and_exits_zero(nodes):
    a = nodes("a")
    b = nodes("b", [a.addrs[0]])
    wait_for(lambda: all_mutually_attested([a.status(), b.status()]))
    b.signal(signal.SIGTERM)
    assert b.wait(15) == 0
    peers = status_json(a)["peers"]
    assert peers and peers[0]["state"] == "left" and not peers[0]["attested"]
    assert (b.data_dir / "peers.json").exists()
    assert not (b.data_dir / "control.sock").exists()


def test_second_run_on_same_data_dir_is_refused(nodes):
    a = nodes("a")
    r = cli("run", "--data-dir", str(a.data_dir), "--listen", "/ip4/127.0.0.1/tcp/0")
    assert r.returncode == 1
    assert "already running" in r.stderr and r.stderr.count("\n") == 1


def test_status_without_a_node_says_so(tmp_path):
    r = cli("status", "--data-dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no node is running" in r.stderr


def test_corrupted_identity_refuses_to_start_and_is_kept(tmp_path):
    d = tmp_path / "d"
    assert cli("init", "--data-dir", str(d), "--profile", "local-test").returncode == 0
    key = d / "identity.key"
    key.write_bytes(b"\x00not a key")
    key.chmod(0o600)
    r = cli("run", "--data-dir", str(d))
    assert r.returncode == 1 and "identity.key: corrupted identity" in r.stderr
    assert key.read_bytes() == b"\x00not a key"


def test_corrupted_config_refuses_to_start_and_is_kept(tmp_path):
    d = tmp_path / "d"
    cli("init", "--data-dir", str(d), "--profile", "local-test")
    (d / "config.toml").write_text("profile = [")
    r = cli("run", "--data-dir", str(d))
    assert r.returncode == 1 and "config.toml: invalid TOML" in r.stderr
    assert (d / "config.toml").read_text() == "profile = ["


def test_init_refuses_to_overwrite(tmp_path):
    d = tmp_path / "d"
    assert cli("init", "--data-dir", str(d)).returncode == 0
    r = cli("init", "--data-dir", str(d))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr


def test_usage_errors_exit_2(tmp_path):
    r = cli("run", "--data-dir", str(tmp_path / "d"), "--profile", "local-test",
            "--bootstrap", "/ip4/127.0.0.1/tcp/1")
    assert r.returncode == 2 and "no /p2p/" in r.stderr
    assert cli("frobnicate").returncode == 2
    assert cli().returncode == 2


def test_attest_evidence_then_verify_round_trip(tmp_path):
    d = tmp_path / "d"
    assert cli("init", "--data-dir", str(d), "--profile", "local-test").returncode == 0
    bundle = tmp_path / "ev.json"
    r = cli("attest", "evidence", "--data-dir", str(d), "--nonce", "00ff" * 16, "-o", str(bundle))
    assert r.returncode == 0, r.stderr
    ok = cli("attest", "verify", str(bundle), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = json.loads(ok.stdout)
    assert out["verdict"] == "accept" and out["kind"] == "sim" and out["report_data"]
    # Production policy: simulated evidence is authentic but refused.
    pol = tmp_path / "prod.toml"
    pol.write_text('allowed_kinds = ["sev-snp", "tdx", "sgx"]\nallow_simulated = false\n')
    refused = cli("attest", "verify", str(bundle), "--json", "--policy", str(pol))
    assert refused.returncode == 1
    assert "simulated" in " ".join(json.loads(refused.stdout)["policy"]["failed_rules"])
    # Another nonce in the bundle: the binding no longer holds.
    doc = json.loads(bundle.read_text())
    doc["nonce"] = "11" * 32
    bundle.write_text(json.dumps(doc))
    bad = cli("attest", "verify", str(bundle), "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["reason"].startswith("binding")
    assert cli("attest", "verify", str(tmp_path / "missing.bin")).returncode == 1


def test_tee_selection_without_hardware(tmp_path):
    # This machine has no SEV-SNP, TDX or SGX: asking for one fails clearly ...
    r = cli("run", "--data-dir", str(tmp_path / "hw"), "--profile", "local-test", "--tee", "sev-snp")
    assert r.returncode == 1 and "sev-snp" in r.stderr.lower()
    # ... and the production profile refuses to fall back to the simulated TEE.
    r = cli("run", "--data-dir", str(tmp_path / "prod"), "--profile", "wan", "--tee", "auto",
            "--listen", "/ip4/127.0.0.1/tcp/0")
    assert r.returncode == 1 and "no hardware TEE found" in r.stderr
