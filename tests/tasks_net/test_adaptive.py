"""Adaptive replication on real in-process nodes: nodes earn trust with checked results, then
run fragments alone; a spot-check catches a trusted node that lies, resets its trust, and the
owner's result is right."""

from __future__ import annotations

import json

import pytest

from consensus import tasks as ct
from consensus import trust
from node.tasks.testing import committed, task_federation, write_job
from node.testing import wait_until
from tests.tasks_net.test_quorum import LyingEngine, _words

pytestmark = pytest.mark.slow


async def _run(owner, spec) -> str:
    job_id = await owner.tasks.owner.submit(str(spec))
    await wait_until(lambda: owner.tasks.owner.jobs[job_id].status in ct.TERMINAL_JOB, 180)
    own = owner.tasks.owner.jobs[job_id]
    assert own.status == ct.DONE, own.reason
    return job_id


def _spec(tmp_path, fragments: int, spot_check: str):
    spec = write_job(tmp_path, "wordcount", fragments=fragments, split="records",
                     aggregation="merge-counts", redundancy=2)
    spec.write_text(spec.read_text().replace(
        "redundancy = 2\n", f"redundancy = 2\nquorum = 2\nmax_replicas = 3\nadaptive = true\n"
                            f"spot_check = {spot_check}\n"))
    return spec


async def test_trusted_nodes_run_alone_and_a_spot_check_catches_a_trusted_liar(tmp_path):
    text = b"".join(b"the quick brown fox %d jumps\n" % (i % 7) for i in range(600))
    (tmp_path / "input").write_bytes(text)
    async with task_federation(tmp_path, 4) as fed:
        lead = fed.leader()
        owner = next(n for n in fed.nodes if n is not lead)
        ids = {n.peer_id for n in fed.nodes}

        def cvs():
            return ct.trust_counters(fed.leader().role.state)

        # 1. warm-up: nobody is trusted, so every fragment is replicated and checked; each
        # agreeing pair earns its two nodes one consecutive valid result
        warm = 0
        while min(cvs().get(n, 0) for n in ids) < trust.CV_MIN:
            assert warm < 5, f"no trust after {warm} jobs: {cvs()}"
            job_id = await _run(owner, _spec(tmp_path, 24, "0.1"))
            j = committed(fed, job_id)
            if warm == 0:
                assert set(j["modes"]) == {trust.REPLICATED}
                assert all(len(fr) == 2 for fr in j["frags"])
            warm += 1
        assert json.loads(owner.tasks.owner.jobs[job_id].result_path.read_bytes()) == _words(text)

        # 2. trusted, no spot-check: most fragments run once (each node trusted with
        # probability 1 - 1/CV >= 0.9); a solo result moves no counter
        before = dict(cvs())
        job_id = await _run(owner, _spec(tmp_path, 16, "0"))
        j = committed(fed, job_id)
        solo = [f for f, m in enumerate(j["modes"]) if m == trust.SOLO]
        assert len(solo) >= 8, j["modes"]
        assert all(len(j["frags"][f]) == 1 for f in solo)
        assert sum(len(fr) for fr in j["frags"]) < 2 * 16
        assert json.loads(owner.tasks.owner.jobs[job_id].result_path.read_bytes()) == _words(text)
        solo_nodes = {j["frags"][f][0]["node"] for f in solo}
        assert all(cvs()[n] >= before[n] for n in solo_nodes)
        d = owner.tasks.owner.describe(job_id)
        assert d["adaptive"]["spot_check"] == 0 and d["adaptive"]["modes"][trust.SOLO] == len(solo)
        # every solo result carried the manager's spot-check draw, which the members checked
        assert all(n.tasks.status()["decisions"]["mismatch"] == 0 for n in fed.nodes)
        assert sum(n.tasks.status()["decisions"]["verified"] for n in fed.nodes) >= len(solo)

        # 3. a trusted node turns liar; every trusted fragment is spot-checked: outvoted,
        # recorded, its trust reset, and the result is still right
        liar = next(n for n in fed.nodes if n is not fed.leader() and n is not owner)
        assert cvs()[liar.peer_id] >= trust.CV_MIN
        liar.tasks.engine = LyingEngine(liar.tasks.engine)
        job_id = await _run(owner, _spec(tmp_path, 16, "1"))
        j = committed(fed, job_id)
        assert trust.SOLO not in j["modes"]
        assert json.loads(owner.tasks.owner.jobs[job_id].result_path.read_bytes()) == _words(text)
        ran_by_liar = {f for f, frag in enumerate(j["frags"]) for rep in frag
                       if rep["node"] == liar.peer_id and rep["st"] == ct.R_DONE}
        assert liar.tasks.engine.lies >= 1 and ran_by_liar, "the scenario did not arise"
        spotted = [f for f in ran_by_liar if j["modes"][f] == trust.SPOT
                   and j["frags"][f][0]["node"] == liar.peer_id]
        assert spotted, "no spot-checked fragment of the liar's"
        assert {(f, node) for f, _, node, _ in j["findings"]} == {(f, liar.peer_id) for f in ran_by_liar}
        assert liar.peer_id not in cvs()
        assert all(cvs().get(n, 0) >= trust.CV_MIN for n in ids - {liar.peer_id})
        assert ct.check_invariants(fed.leader().role.state) == []
        # every node's status shows the counters from the committed state
        await wait_until(lambda: all(liar.peer_id not in n.tasks.status()["trust"]
                                     and n.tasks.status()["trust"] == dict(cvs()) for n in fed.nodes), 30)
