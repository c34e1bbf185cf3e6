"""Issue 13's "real node processes" test: one node process whose engine lies is outvoted, flagged
and revoked through consensus, cut off by every other node, and the owner's results (through
the real ``submit --wait`` CLI) are right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from node.demo import NodeProcess, start_nodes
from node.tasks.testing import write_job
from tests.tasks_net.test_processes import _ready, ctl, wait_for

pytestmark = [pytest.mark.process, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class LyingProcess(NodeProcess):
    """A node process run through tests/tasks_net/lying_node.py (its engine lies)."""

    def __init__(self, data_dir: Path, *, bootstrap: list[str]) -> None:
        self.data_dir = data_dir
        cmd = [sys.executable, "-m", "tests.tasks_net.lying_node", "run", "--data-dir", str(data_dir),
               "--profile", "local-test", "--listen", "/ip4/127.0.0.1/tcp/0", "--tee", "sim"]
        for b in bootstrap:
            cmd += ["--bootstrap", b]
        self.log_path = data_dir.with_suffix(".log")
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=ROOT)
        self.addrs = []


def _submit(owner: NodeProcess, spec: Path, out: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "node.cli", "submit", str(spec), "--wait", "-o", str(out),
                        "--data-dir", str(owner.data_dir)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[0].strip()


def test_a_lying_node_process_is_outvoted_flagged_and_revoked(tmp_path, procs):
    procs += start_nodes([tmp_path / f"node{i}" for i in range(4)])
    liar = LyingProcess(tmp_path / "liar", bootstrap=procs[0].addrs[:1])
    procs.append(liar)
    liar.wait_listening(60)
    wait_for(lambda: _ready(procs), 120, 0.3)
    by_peer = {p.status()["peer_id"]: p for p in procs}
    liar_id = next(pid for pid, p in by_peer.items() if p is liar)
    manager = procs[0].status()["manager"]
    owner = next(p for pid, p in by_peer.items() if pid not in (manager, liar_id))
    honest = [p for p in procs if p is not liar]

    text = b"".join(b"the quick brown fox %d\n" % (i % 5) for i in range(300))
    (tmp_path / "input").write_bytes(text)
    spec = write_job(tmp_path, "wordcount", fragments=8, split="records", aggregation="merge-counts",
                     redundancy=2, top="quorum = 2\nmax_replicas = 3\n")
    truth = dict(Counter(text.decode().split()))

    def revoked_everywhere() -> bool:
        sts = [p.status() for p in honest]
        return all(s is not None and s["consensus"]["members"]["revoked"] == 1 for s in sts)

    findings = 0
    for k in range(4):  # until its findings take it below the policy (two minority ones do)
        out = tmp_path / f"result{k}.json"
        job_id = _submit(owner, spec, out)
        assert json.loads(out.read_bytes()) == truth  # the lie never counted
        job = ctl(owner, {"cmd": "task-describe", "job_id": job_id})["job"]
        findings += sum(1 for x in job["integrity"] if x["node"] == liar_id and x["kind"] == "minority")
        if findings >= 2:
            break
    assert findings >= 2, "the liar ran too few replicas"
    wait_for(revoked_everywhere, 60, 0.3)
    for p in honest:
        s = p.status()
        assert liar_id not in {x["peer_id"] for x in s["peers"] if x["attested"]}
        assert s["tasks"]["integrity"]["committed"][liar_id]["findings"]["minority"] >= 2
        # every node cut it off on the committed revocation, whose reason names the findings
        wait_for(lambda p=p: any(f"peer {liar_id} revoked: " in ln and "integrity: penalty" in ln
                                 for ln in p.log_path.read_text(errors="replace").splitlines()), 30)
    # the honest nodes that are not the manager adopted the manager's signed findings
    wait_for(lambda: all(liar_id in (p.status() or {}).get("tasks", {}).get("integrity", {})
                         .get("adopted", {}) for p in honest
                         if (p.status() or {}).get("role") != "manager"), 60, 0.3)
    # and a job runs right without it
    out = tmp_path / "after.json"
    job_id = _submit(owner, spec, out)
    assert json.loads(out.read_bytes()) == truth
    job = ctl(owner, {"cmd": "task-describe", "job_id": job_id})["job"]
    assert all(r["node"] != liar_id for r in job["replicas"])
    liar.signal(signal.SIGTERM)
