"""A node process whose token goes away and comes back (SoftHSM2's token directory moved away
and restored), beside a node process with file keys. The in-process twin is
tests/keys/test_nodes.py::test_token_removed_at_run_time_quarantines_the_node_and_it_recovers."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from node.cli import main
from node.demo import NodeProcess, all_mutually_attested
from node.testing import poll_until as wait_for

# ~50 s on a busy 2-core machine: slow, with its in-process fast twin named above.
pytestmark = [pytest.mark.process, pytest.mark.slow]




def _attested(st, pid) -> bool:
    return bool(st) and any(p["peer_id"] == pid and p["attested"] for p in st["peers"])


def test_token_moved_away_then_restored_under_a_running_node(tmp_path, hsm):
    pin = "pin-7f3c9e21d0b84a56"  # distinctive, so that the grep below means something
    t = hsm.init_token("node-b", pin=pin)
    assert main(["init", "--data-dir", str(tmp_path / "b"), "--profile", "local-test", "--keys", "pkcs11",
                 "--token", "node-b", "--pkcs11-module", hsm.module, "--pin-file", t.pin_file]) == 0
    started: list[NodeProcess] = []
    try:
        a = NodeProcess(tmp_path / "a")
        started.append(a)
        a.wait_listening(30)
        b = NodeProcess(tmp_path / "b", bootstrap=[a.addrs[0]], env=hsm.env())
        started.append(b)
        b.wait_listening(30)
        wait_for(lambda: all_mutually_attested([a.status(), b.status()]))
        b_id = b.status()["peer_id"]
        assert b.status()["keys"]["backend"] == "pkcs11"

        away = hsm.tokens.with_name("tokens.away")
        hsm.tokens.rename(away)
        wait_for(lambda: (b.status() or {}).get("keys", {}).get("available") is False, 30)
        human = subprocess.run([sys.executable, "-m", "node.cli", "status", "--data-dir", str(b.data_dir)],
                               capture_output=True, text=True, timeout=30)
        assert human.returncode == 0 and "keys in PKCS#11 token 'node-b': UNAVAILABLE" in human.stdout
        # a quarantines b: b cannot attest while its key is unreachable
        wait_for(lambda: not _attested(a.status(), b_id), 60)

        away.rename(hsm.tokens)
        wait_for(lambda: (b.status() or {}).get("keys", {}).get("available") is True, 30)
        wait_for(lambda: all_mutually_attested([a.status(), b.status()]), 60)
        st = b.status()
        assert st["peer_id"] == b_id
        assert st["keys"]["losses"] == 1 and st["keys"]["recoveries"] == 1
        assert "internal_error" not in st["counters"]
        log = b.log_path.read_text()
        assert "identity key unavailable" in log and "identity key available again" in log
        assert pin not in log and pin not in human.stdout + human.stderr  # the PIN is never logged
        b.signal(signal.SIGTERM)
        assert b.wait(20) == 0
    finally:
        for p in started:
            p.signal(signal.SIGKILL)
            p.wait(10)
