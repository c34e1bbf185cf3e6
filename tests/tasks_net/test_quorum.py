"""Redundant execution with a quorum on real in-process nodes: a compromised agent that returns
wrong (but well-signed) outputs is outvoted, recorded as an integrity finding, and never
changes the result the owner receives."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

from consensus import tasks as ct
from node.tasks.testing import committed, task_federation, write_job
from node.testing import wait_until


class LyingEngine:
    """A compromised node's engine: runs the module, then reports another output (a flipped
    count), with the hash of what it reports, as such a node would sign it."""

    def __init__(self, real) -> None:
        self.real, self.lies = real, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    async def run(self, module, module_hash, data, limits, grants):
        outcome = await self.real.run(module, module_hash, data, limits, grants)
        if not outcome.ok:
            return outcome
        self.lies += 1
        forged = outcome.output + b' {"the": 1000000}'
        profile = dataclasses.replace(outcome.profile, output_sha256=hashlib.sha256(forged).digest())
        return dataclasses.replace(outcome, output=forged, profile=profile)


def _words(text: bytes) -> dict[str, int]:
    return dict(Counter(text.decode().split()))


async def test_a_lying_agent_is_outvoted_and_recorded_and_the_result_is_right(tmp_path):
    text = b"".join(b"the quick brown fox %d\n" % (i % 5) for i in range(300))
    (tmp_path / "input").write_bytes(text)
    # two replicas must agree; a fragment whose two disagree gets a third, elsewhere
    spec = write_job(tmp_path, "wordcount", fragments=4, split="records", aggregation="merge-counts",
                     redundancy=2, top="quorum = 2\nmax_replicas = 3\n")
    async with task_federation(tmp_path, 4) as fed:
        lead = fed.leader()
        owner = next(n for n in fed.nodes if n is not lead)
        liar = next(n for n in fed.nodes if n is not lead and n is not owner)
        liar.tasks.engine = LyingEngine(liar.tasks.engine)
        job_id = await owner.tasks.owner.submit(str(spec))
        await wait_until(lambda: owner.tasks.owner.jobs[job_id].status in ct.TERMINAL_JOB, 120)
        own = owner.tasks.owner.jobs[job_id]
        assert own.status == ct.DONE, own.reason
        assert json.loads(own.result_path.read_bytes()) == _words(text)  # the lie never counted
        j = committed(fed, job_id)
        ran_by_liar = {f for f, frag in enumerate(j["frags"]) for rep in frag
                       if rep["node"] == liar.peer_id and rep["st"] == ct.R_DONE}
        assert liar.tasks.engine.lies >= 1 and ran_by_liar, "the scenario did not arise"
        # every replica the liar finished is a finding against it, and only those
        assert sorted((f, node) for f, _, node, _ in j["findings"]) == sorted(
            (f, liar.peer_id) for f in ran_by_liar)
        # each of its fragments got a third replica, elsewhere, that broke the tie
        for f in ran_by_liar:
            frag = j["frags"][f]
            assert len(frag) == 3 and frag[2]["node"] != liar.peer_id
        assert fed.leader().tasks.duty.stats["replicas_added"] >= len(ran_by_liar)
        assert ct.check_invariants(fed.leader().role.state) == []
        d = owner.tasks.owner.describe(job_id)
        assert {(x["fragment"], x["node"]) for x in d["findings"]} == {
            (f, liar.peer_id) for f in ran_by_liar}
        assert d["quorum"] == 2 and d["max_replicas"] == 3
        # every node's status counts the liar's findings from the committed state
        await wait_until(lambda: all(n.tasks.status()["findings"] == {liar.peer_id: len(ran_by_liar)}
                                     for n in fed.nodes), 30)
