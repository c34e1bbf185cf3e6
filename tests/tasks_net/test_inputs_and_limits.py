"""Job inputs and failures on real in-process nodes: a stored object as input (the owner
rebuilds it as ``get`` does), one fragment per file of a directory, a fragment that runs out of
fuel (the job fails naming the fragment and the limit), and a job whose only qualified node dies
(it fails with the scheduler's reason once its queue timeout has passed)."""

from __future__ import annotations

import json
from collections import Counter

from consensus import tasks as ct
from node.shards.service import service_of
from node.tasks.testing import committed, task_federation, write_job
from node.testing import wait_until


async def _finished(owner, job_id: str, timeout_s: float = 60):
    await wait_until(lambda: owner.tasks.owner.jobs[job_id].status in ct.TERMINAL_JOB, timeout_s)
    return owner.tasks.owner.jobs[job_id]


async def test_stored_object_input_and_a_directory_of_files(tmp_path):
    text = b"".join(b"object %d stored sealed\n" % (i % 5) for i in range(300))
    (tmp_path / "stored.txt").write_bytes(text)
    files = tmp_path / "input"
    files.mkdir()
    for i, body in enumerate((b"one two", b"two three three", b"", b"four")):
        (files / f"part{i}.txt").write_bytes(body)
    async with task_federation(tmp_path, 4) as fed:
        owner = fed.nodes[0]
        put = await service_of(owner.agent).put(tmp_path / "stored.txt", n=3, k=2)
        spec = write_job(tmp_path, "wordcount", fragments=4, split="records", aggregation="merge-counts")
        job_id = await owner.tasks.owner.submit(str(spec), object_hex=put["object_id"])
        own = await _finished(owner, job_id)
        assert own.status == ct.DONE, own.reason
        assert json.loads(own.result_path.read_bytes()) == dict(Counter(text.decode().split()))

        spec = write_job(tmp_path, "wordcount", fragments=1, split="files", aggregation="merge-counts")
        job_id = await owner.tasks.owner.submit(str(spec))
        own = await _finished(owner, job_id)
        assert own.status == ct.DONE, own.reason
        assert committed(fed, job_id)["n"] == 4  # one fragment per file
        assert json.loads(own.result_path.read_bytes()) == {"one": 1, "two": 2, "three": 2, "four": 1}


async def test_a_fragment_out_of_fuel_fails_the_job_naming_fragment_and_limit(tmp_path):
    (tmp_path / "input").write_bytes(b"x" * 3000)
    spec = write_job(tmp_path, "slowcat", fragments=3, extra="")
    text = spec.read_text()
    # fragment sizes 1000 bytes: ~65M iterations each; fuel 10M stops every one of them
    spec.write_text(text + "[limits]\nfuel = 10000000\n")
    async with task_federation(tmp_path, 3) as fed:
        owner = fed.nodes[1]
        job_id = await owner.tasks.owner.submit(str(spec))
        own = await _finished(owner, job_id)
        assert own.status == ct.FAILED
        assert "3 of 3 replicas failed" in own.reason and "fragment 0" in own.reason
        assert "fuel" in own.reason
        j = committed(fed, job_id)
        assert all(frag[0]["st"] == ct.R_FAILED for frag in j["frags"])


async def test_a_job_whose_only_qualified_node_dies_fails_saying_why(tmp_path):
    (tmp_path / "input").write_bytes(bytes(range(256)) * 160)  # 40 KiB: ~0.6 s a fragment
    async with task_federation(tmp_path, 3) as fed:
        owner, only = fed.nodes[0], fed.nodes[2]
        # providers as the nodes declare them ([tasks] provider = "p<i>"), committed as labels
        spec = write_job(tmp_path, "slowcat", fragments=4)
        spec.write_text(spec.read_text().replace("redundancy = 1\n", "redundancy = 1\nqueue_timeout_s = 1\n")
                        + '[requirements]\nproviders = ["p2"]\n')
        job_id = await owner.tasks.owner.submit(str(spec))
        await wait_until(lambda: any(r.req.job_id == job_id for r in only.tasks.executor.runs.values()), 30)
        await fed.crash(only)
        own = await _finished(owner, job_id, 90)
        assert own.status == ct.FAILED
        assert "no placement within the queue timeout" in own.reason and "provider" in own.reason
        j = committed(fed, job_id)
        assert all(rep["node"] != only.peer_id for frag in j["frags"] for rep in frag
                   if rep["st"] == ct.ASSIGNED)
