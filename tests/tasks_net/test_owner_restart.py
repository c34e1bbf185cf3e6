"""A job's result survives its owner's restart (found by `make chaos`, scenario
links-clock-disk, seed 9: the owner restarted by a clock-skew fault answered "job … is done, it
has no result" for a job it had been delivered before; docs/reliability.md). The owner keeps
its jobs in memory and the delivered result on disk; after a restart it must hand out the file,
checked against the committed digest."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from node.control import request
from node.demo import NodeProcess, start_nodes
from node.tasks.testing import write_job
from tests.tasks_net.test_processes import _ready, wait_for

pytestmark = [pytest.mark.process, pytest.mark.slow]


def ctl(p: NodeProcess, cmd: dict, timeout_s: float = 10) -> dict:
    return request(p.data_dir / "control.sock", cmd, timeout_s=timeout_s)


def test_a_done_jobs_result_survives_the_owner_restarting(tmp_path: Path, procs):
    procs += start_nodes([tmp_path / f"node{i}" for i in range(4)])
    boot = procs[0].addrs[0]
    wait_for(lambda: _ready(procs), 120, 0.3)
    owner = procs[3]
    data = b"".join(b"record %d\n" % i for i in range(300))
    (tmp_path / "input.txt").write_bytes(data)
    spec = write_job(tmp_path, "slowcat", fragments=3, split="records", input_path=tmp_path / "input.txt")
    job_id = ctl(owner, {"cmd": "task-submit", "spec": str(spec), "input": None, "object": None},
                 60)["job_id"]
    wait_for(lambda: (ctl(owner, {"cmd": "task-describe", "job_id": job_id}).get("job") or {})
             .get("status") == "done", 120, 0.3)
    before = tmp_path / "before.bin"
    assert ctl(owner, {"cmd": "task-result", "job_id": job_id, "out": str(before)}, 90)["ok"]
    assert before.read_bytes() == data
    # SIGKILL the owner and start it again with its data dir
    owner.signal(signal.SIGKILL)
    owner.wait(10)
    again = NodeProcess(owner.data_dir, bootstrap=[boot], log_path=owner.log_path.with_suffix(".2.log"))
    procs[3] = again
    again.wait_listening(60)
    wait_for(lambda: (again.status() or {}).get("manager") is not None, 120, 0.3)
    after = tmp_path / "after.bin"
    reply = ctl(again, {"cmd": "task-result", "job_id": job_id, "out": str(after)}, 90)
    assert reply["ok"], reply
    assert after.read_bytes() == data
    # a kept file that no longer hashes to the committed digest is refused, not handed out
    kept = owner.data_dir / "tasks" / f"{job_id}.result"
    kept.write_bytes(b"tampered")
    bad = ctl(again, {"cmd": "task-result", "job_id": job_id, "out": str(tmp_path / "bad.bin")}, 90)
    assert not bad["ok"] and "committed digest" in bad["error"]
