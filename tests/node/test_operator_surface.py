"""The operator's surface through ``python -m node.cli``, on real node processes and their real
control sockets: ``reload-policy``, ``stop``, ``status`` against a socket nobody sensible
answers on, ``--log-format json``, ``demo``, ``sim`` and ``manager owner-key``.

The manager commands that need a council (``manager transfer``, ``leave``, ``dissolve``) are in
tests/manager/test_operator_fast.py, ``rm`` in tests/shards_net/test_cli_fast.py.
"""

from __future__ import annotations

import base64
import fcntl
import json
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from node.datadir import DataDir
from node.demo import NodeProcess, all_mutually_attested
from node.testing import poll_until as wait_for

pytestmark = pytest.mark.process


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
                          timeout=timeout)




def one_line_failure(r: subprocess.CompletedProcess[str]) -> str:
    """The single ``enclave-swarm: <reason>`` line of a failed command (and that it is one)."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("enclave-swarm: "), r.stderr
    return r.stderr.strip()


@pytest.fixture
def nodes(tmp_path):
    started: list[NodeProcess] = []

    def start(name: str, bootstrap: list[str] | None = None,
              extra: list[str] | None = None) -> NodeProcess:
        p = NodeProcess(tmp_path / name, bootstrap=bootstrap, extra=extra)
        started.append(p)
        p.wait_listening(60)
        return p

    yield start
    for p in started:
        p.signal(signal.SIGKILL)
        p.wait(10)


def status_json(p: NodeProcess) -> dict[str, Any]:
    r = cli("status", "--data-dir", str(p.data_dir), "--json")
    assert r.returncode == 0, r.stderr
    st: dict[str, Any] = json.loads(r.stdout)
    return st


# ---------------------------------------------------------------------------- reload-policy

OPEN_POLICY = 'allowed_kinds = ["sim"]\nallow_simulated = true\nmeasurements = ["self"]\nmin_score = 50\n'
# Pins a measurement no node has: every peer fails the measurement rule at its next attestation.
STRICT_POLICY = ('allowed_kinds = ["sim"]\nallow_simulated = true\nmeasurements = ["' + "ab" * 48
                 + '"]\nmin_score = 70\n')


def test_reload_policy_through_the_cli_applies_a_stricter_file_and_keeps_it_on_a_bad_one(nodes, tmp_path):
    """Two node processes, ``a`` with a policy file and ``--log-format json``: reloads through
    the CLI, then ``a``'s log (every line JSON, the reloads in it, no key material)."""
    policy = tmp_path / "policy.toml"
    policy.write_text(OPEN_POLICY)
    a = nodes("a", extra=["--policy", str(policy), "--log-format", "json", "--log-level", "debug"])
    b = nodes("b", [a.addrs[0]])
    wait_for(lambda: all_mutually_attested([a.status(), b.status()]))
    assert status_json(a)["policy"]["min_score"] == 50
    b_id = status_json(b)["peer_id"]

    policy.write_text(STRICT_POLICY)
    r = cli("reload-policy", "--data-dir", str(a.data_dir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "policy reloaded"
    assert status_json(a)["policy"]["min_score"] == 70  # the running engine holds the new file

    def b_quarantined() -> dict[str, Any] | None:
        peer = next((p for p in status_json(a)["peers"] if p["peer_id"] == b_id), None)
        return peer if peer and not peer["attested"] and "measurement" in (
            peer.get("quarantine_reason") or "") else None

    peer = wait_for(b_quarantined, 30)  # re-judged at its next re-attestation (2 s in local-test)
    assert "policy" in peer["verdict"] and "measurement" in peer["verdict"]

    # A file that does not parse: refused with the reason, and the node keeps the strict policy.
    policy.write_text("min_score = [\n")
    msg = one_line_failure(cli("reload-policy", "--data-dir", str(a.data_dir)))
    assert str(policy) in msg and "TOML" in msg.upper(), msg
    st = status_json(a)
    assert st["policy"]["min_score"] == 70
    assert not next(p for p in st["peers"] if p["peer_id"] == b_id)["attested"]
    # A file with an unknown rule (a typo must not weaken a policy) is refused the same way.
    policy.write_text(OPEN_POLICY + "min_scor = 10\n")
    msg = one_line_failure(cli("reload-policy", "--data-dir", str(a.data_dir)))
    assert "min_scor" in msg
    assert status_json(a)["policy"]["min_score"] == 70
    assert a.proc.poll() is None

    a.signal(signal.SIGTERM)  # the goodbye path logs too
    assert a.wait(30) == 0
    text = check_json_log(a)
    assert "policy reloaded" in text and text.count("policy reload refused") == 2
    assert "min_scor" in text


# ---------------------------------------------------------------------------- --log-format json


def check_json_log(p: NodeProcess) -> str:
    """Check that every line of the stopped node ``p``'s log (stderr) is a JSON record with
    the fields the format promises, the lines once printed around the logger included, and
    that no form of its identity key is in it; returns the messages, joined."""
    lines = [ln for ln in p.log_path.read_text().splitlines() if ln.strip()]
    assert len(lines) >= 3, lines
    records = []
    for ln in lines:
        rec = json.loads(ln)
        assert {"ts", "level", "logger", "msg"} <= set(rec), rec
        assert rec["level"] in {"debug", "info", "warning", "error", "critical"}, rec
        records.append(rec)
    text = " ".join(r["msg"] for r in records)
    assert "SIMULATED TEE" in text  # the start-up warning came through the JSON logger
    assert "initialised a new node" in text and "received SIGTERM" in text  # once bare prints
    assert any(r["logger"].startswith("enclave_swarm") for r in records)
    key = DataDir(p.data_dir).load_identity()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    log = p.log_path.read_text()
    b64 = base64.b64encode(raw).decode()
    for secret in (raw.hex(), raw.hex().upper(), b64, b64.rstrip("="),
                   (p.data_dir / "identity.key").read_bytes().hex()):
        assert secret not in log
    return text


def test_reload_policy_without_a_node_fails_cleanly(tmp_path):
    msg = one_line_failure(cli("reload-policy", "--data-dir", str(tmp_path / "none")))
    assert "no node is running" in msg


# ---------------------------------------------------------------------------- stop, socket


def _raw_request(path: Path, payload: bytes) -> dict[str, Any]:
    """One raw request line on the control socket and its JSON reply (what the CLI would never
    send, as any other program on the host could)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(path))
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


# Bad requests and the control_error reason each is counted under (node/control.py).
BAD_CONTROL_REQUESTS = [
    (b"{not json\n", "not-json"),
    (b"[" * 60000 + b"\n", "too-deep"),
    (b'{"cmd": "' + b"x" * (70 * 1024) + b'"}\n', "too-large"),
    (b'{"cmd": 7}\n', "bad-request"),
    (b'{"cmd": "no-such-command"}\n', "unknown-command"),
]


def test_stop_ends_the_node_releases_lock_and_socket_and_the_socket_was_0600(nodes):
    """One node process: its socket's mode, error replies to bad requests on that socket (the
    node counts each by reason and keeps serving), then ``stop``."""
    a = nodes("a")
    sock = a.data_dir / "control.sock"
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(a.data_dir.stat().st_mode) == 0o700

    for payload, _ in BAD_CONTROL_REQUESTS:
        reply = _raw_request(sock, payload)
        assert reply["ok"] is False and isinstance(reply["error"], str) and reply["error"], reply
    again = _raw_request(sock, b'{"cmd": "no-such-command"}\n')
    assert again["error"] == "unknown command 'no-such-command'", again
    counted = status_json(a)["counters"]["control_error"]
    assert counted == {"not-json": 1, "too-deep": 1, "too-large": 1, "bad-request": 1,
                       "unknown-command": 2}, counted
    log = a.log_path.read_text()
    assert all(f"control request refused ({reason})" in log for _, reason in BAD_CONTROL_REQUESTS)
    r = cli("stop", "--data-dir", str(a.data_dir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stopping"
    assert a.wait(30) == 0, a.tail_log()
    assert not sock.exists()
    with open(a.data_dir / "run.lock", "a+b") as f:  # the run lock is free again
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert "no node is running" in one_line_failure(cli("stop", "--data-dir", str(a.data_dir)))
    assert "no node is running" in one_line_failure(cli("status", "--data-dir", str(a.data_dir)))


def _serve_once(path: Path, reply: bytes) -> threading.Thread:
    """A Unix socket at ``path`` that answers one request with ``reply`` (not a node)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(60)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("reply", [b"<html>not json</html>\n", b"[1, 2]\n"])
def test_status_against_a_socket_that_is_not_a_node_fails_in_one_line(tmp_path, reply):
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    t = _serve_once(d / "control.sock", reply)
    msg = one_line_failure(cli("status", "--data-dir", str(d)))
    assert str(d) in msg and "not" in msg
    t.join(10)


def test_status_against_unusable_socket_paths_fails_in_one_line(tmp_path):
    # A socket path longer than AF_UNIX allows (108 bytes) used to end in a traceback.
    deep = tmp_path / ("x" * 120)
    deep.mkdir()
    msg = one_line_failure(cli("status", "--data-dir", str(deep)))
    assert "too long" in msg
    # A leftover regular file where the socket should be.
    d = tmp_path / "d"
    d.mkdir()
    (d / "control.sock").write_text("not a socket")
    assert "no node is running" in one_line_failure(cli("status", "--data-dir", str(d)))


# ---------------------------------------------------------------------------- demo, sim


def test_demo_through_the_cli_elects_kills_the_manager_and_exits_zero():
    r = cli("demo", "--nodes", "3", "--timeout-s", "90", timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    out = r.stdout
    steps = ["Starting 3 enclave-swarm nodes", "All 6 directed attestations passed",
             "signed score record about each of the 3 nodes", "council before the crash",
             "Successor: node", "skipping the data shards demo", "All nodes exited cleanly."]
    positions = [out.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), (positions, out[-3000:])


def test_demo_usage_errors_exit_2_before_any_node_starts():
    r = cli("demo", "--nodes", "1")
    assert r.returncode == 2 and "--nodes must be within 2..64" in r.stderr
    # a timeout that cannot be met used to start the nodes, then fail with 1
    for bad in ("0", "-1", "nan"):
        r = cli("demo", "--nodes", "3", "--timeout-s", bad)
        assert r.returncode == 2 and "--timeout-s must be positive" in r.stderr, (bad, r.stderr)
        assert "Starting" not in r.stdout, r.stdout


def test_sim_through_the_cli_is_deterministic_and_reports_no_violation(tmp_path):
    reports = []
    for name in ("one.json", "two.json"):
        out = tmp_path / name
        r = cli("sim", "--nodes", "50", "--scenario", "steady", "--seed", "1", "--duration-s", "10",
                "--json", str(out), "--no-progress", "--engine", "cpython")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "SEED=1"
        reports.append(json.loads(out.read_text()))
    first, second = reports
    assert first["nodes"] == 50 and first["scenario"] == "steady" and first["seed"] == 1
    assert first["invariants"]["checked"] > 0 and first["invariants"]["violations"] == []
    assert first["liveness"]["converged"] is True
    assert first["trace_digest"] == second["trace_digest"]


def test_sim_usage_errors_exit_2(tmp_path):
    r = cli("sim", "--nodes", "1", "--seed", "1", "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("sim", "--scenario", "no-such-scenario")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ---------------------------------------------------------------------------- manager owner-key


def test_manager_owner_key_writes_a_0600_key_pair_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "owner.pem"
    r = cli("manager", "owner-key", "--out", str(out))
    assert r.returncode == 0, r.stderr
    pub_path = tmp_path / "owner.pem.pub"
    assert str(pub_path) in r.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(out.read_bytes(), password=None)
    pub = serialization.load_pem_public_key(pub_path.read_bytes())
    assert pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert not stat.S_IMODE(pub_path.stat().st_mode) & 0o022
    before = out.read_bytes(), pub_path.read_bytes()
    msg = one_line_failure(cli("manager", "owner-key", "--out", str(out)))
    assert str(out) in msg
    assert (out.read_bytes(), pub_path.read_bytes()) == before
    # a missing private key but a present public key: refused too, nothing half-written
    other = tmp_path / "second.pem"
    (tmp_path / "second.pem.pub").write_text("kept")
    one_line_failure(cli("manager", "owner-key", "--out", str(other)))
    assert (tmp_path / "second.pem.pub").read_text() == "kept"
    assert not other.exists()  # no private key left without its public half
    # a directory that does not exist: one line, not a traceback, nothing written
    msg = one_line_failure(cli("manager", "owner-key", "--out", str(tmp_path / "no" / "k.pem")))
    assert str(tmp_path / "no" / "k.pem") in msg and "No such file" in msg, msg
    assert not (tmp_path / "no").exists()
