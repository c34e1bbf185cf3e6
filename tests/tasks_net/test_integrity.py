"""Runtime integrity monitoring on real in-process nodes (issue 13, items 2 and 3): a lying agent
is outvoted, its findings are committed, signed by the manager, gossiped and adopted by every
node, its score falls below the policy and it is revoked through consensus and cut off by every
peer, while the owner's results stay right; forged findings and findings by a node that ran no
replica beside the subject are refused and counted; an honest node with one outlier stays
admitted with its score lowered by the outlier's weight."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import pytest

from consensus import integrity as I
from consensus import tasks as ct
from consensus.state import ADMITTED, REVOKED
from node.attestation.score import INTEGRITY_WEIGHTS, with_integrity
from node.tasks.findings import sign_finding
from node.tasks.testing import task_federation, write_job
from node.testing import wait_until
from overlay.messages_gossip import FindingRecord
from overlay.records import KIND_FINDING
from overlay.wire import decode, encode
from tests.tasks_net.test_quorum import LyingEngine


class OneOutlierEngine:
    """An honest engine whose ``nth`` run reports 100 times the fuel it used (a measurement
    hiccup, say): the output is right, only the profile is off."""

    def __init__(self, real: Any, nth: int) -> None:
        self.real, self.nth, self.runs = real, nth, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def run(self, module, module_hash, data, limits, grants):
        outcome = await self.real.run(module, module_hash, data, limits, grants)
        self.runs += 1
        if self.runs != self.nth or not outcome.ok:
            return outcome
        profile = dataclasses.replace(outcome.profile, fuel_used=outcome.profile.fuel_used * 100)
        return dataclasses.replace(outcome, profile=profile)


def _words(text: bytes) -> dict[str, int]:
    return dict(Counter(text.decode().split()))


def _member(node: Any, pid: str) -> Any:
    return node.role.view()[0].member(pid)


async def _run_job(owner: Any, spec: Any, text: bytes) -> str:
    job_id = await owner.tasks.owner.submit(str(spec))
    await wait_until(lambda: owner.tasks.owner.jobs[job_id].status in ct.TERMINAL_JOB, 120)
    own = owner.tasks.owner.jobs[job_id]
    assert own.status == ct.DONE, own.reason
    assert json.loads(own.result_path.read_bytes()) == _words(text)  # no lie ever counted
    return job_id


@pytest.mark.slow  # ~30 s: five nodes, two to three jobs
async def test_a_liar_is_flagged_revoked_through_consensus_and_cut_off(tmp_path):
    text = b"".join(b"the quick brown fox %d\n" % (i % 5) for i in range(300))
    (tmp_path / "input").write_bytes(text)
    spec = write_job(tmp_path, "wordcount", fragments=6, split="records", aggregation="merge-counts",
                     redundancy=2, top="quorum = 2\nmax_replicas = 3\n")
    async with task_federation(tmp_path, 5) as fed:
        lead = fed.leader()
        owner = next(n for n in fed.nodes if n is not lead)
        liar = next(n for n in fed.nodes if n not in (lead, owner))
        honest = [n for n in fed.nodes if n is not liar]
        liar.tasks.engine = LyingEngine(liar.tasks.engine)
        base = lead.agent.peers.get(liar.peer_id).score
        jobs = []
        for _ in range(4):  # until its findings take it below the policy (2 minority ones do)
            jobs.append(await _run_job(owner, spec, text))
            if I.penalty(lead.role.state, liar.peer_id) > base - 60:
                break
        st = lead.role.state
        mine = [f for f in I.findings_log(st) if f["node"] == liar.peer_id]
        assert mine and all(f["kind"] == I.MINORITY for f in mine)
        assert all(f["by"] == lead.peer_id and f["term"] == st.manager_term for f in mine)
        assert I.penalty(st, liar.peer_id) == INTEGRITY_WEIGHTS[I.MINORITY] * len(mine)
        assert with_integrity(base, I.penalty(st, liar.peer_id)) < 60
        # no honest node was found lying (outliers of a loaded host are possible, nothing else)
        assert {f["kind"] for f in I.findings_log(st) if f["node"] != liar.peer_id} <= {I.OUTLIER}

        # revoked through consensus, with the integrity reason, in every node's committed view,
        # and cut off by every peer
        await wait_until(lambda: all(
            (m := _member(n, liar.peer_id)) is not None and m.status == REVOKED for n in honest), 60)
        assert "integrity" in _member(lead, liar.peer_id).reason
        await wait_until(lambda: all(n.agent.peers.is_revoked(liar.peer_id) for n in honest), 30)
        assert all(not n.agent.peers.is_attested(liar.peer_id) for n in honest)

        # the manager signed and gossiped the findings; every honest node adopted at least the
        # newest one against the liar, after checking it against its own committed state
        newest = max(f["id"] for f in mine)
        await wait_until(lambda: all(newest in n.tasks.findings.adopted for n in honest
                                     if n is not lead), 60)
        for n in honest:
            if n is not lead:
                assert n.tasks.findings.adopted[newest] == (liar.peer_id, I.MINORITY, lead.peer_id)
                assert n.agent.counters.get("finding_rejected") == 0
                assert n.tasks.status()["integrity"]["adopted"][liar.peer_id][I.MINORITY] >= 1
        assert lead.tasks.findings.stats["published"] >= 1

        # the job still runs right without it
        jobs.append(await _run_job(owner, spec, text))
        assert all(rep["node"] != liar.peer_id
                   for _, _, rep in ct.replicas(lead.role.state, jobs[-1]))

        # --- attack 1: a forged finding. An attested node takes the manager's signed finding
        # and turns it against an honest node (the manager's signature no longer holds), and
        # gossips it under its own name.
        attacker = next(n for n in honest if n not in (lead, owner))
        victim = owner
        rec = next(r for r in attacker.agent.gossip.dissemination.records()
                   if r.kind == KIND_FINDING and r.issuer == lead.peer_id)
        genuine = decode(rec.payload, FindingRecord)
        forged = dataclasses.replace(genuine, subject=victim.peer_id)
        before = {n.peer_id: n.agent.counters.get("finding_rejected", "bad-signature") for n in honest}
        assert attacker.agent.gossip.publish(KIND_FINDING, victim.peer_id, encode(forged))
        others = [n for n in honest if n is not attacker]
        await wait_until(lambda: all(n.agent.counters.get("finding_rejected", "bad-signature")
                                     > before[n.peer_id] for n in others), 60)

        # --- attack 2: a finding signed by a node that did not commit it: it cites a committed
        # finding exactly, but the issuer is the attacker. Refused as not-a-witness when the
        # attacker ran no replica of that fragment, as not-the-committer otherwise.
        f = I.finding(lead.role.state, newest)
        assert f is not None
        job = ct.job(lead.role.state, f["job"])
        ran = job is not None and any(attacker.peer_id in (r["node"], *r["tried"])
                                      for r in job["frags"][f["frag"]])
        reason = "not-the-committer" if ran else "not-a-witness"
        own = sign_finding(attacker.agent._identity, f, rec.issued_at)
        before = {n.peer_id: n.agent.counters.get("finding_rejected", reason) for n in honest}
        assert attacker.agent.gossip.publish(KIND_FINDING, f["node"], encode(own))
        await wait_until(lambda: all(n.agent.counters.get("finding_rejected", reason)
                                     > before[n.peer_id] for n in others), 60)
        # neither changed anyone's standing: the victim stays admitted everywhere
        assert all(_member(n, victim.peer_id).status == ADMITTED for n in honest)
        assert all(newest in n.tasks.findings.adopted for n in others if n is not lead)
        assert ct.check_invariants(lead.role.state) == [] and I.check_invariants(lead.role.state) == []


@pytest.mark.slow  # ~16 s: three jobs
async def test_an_honest_node_with_one_outlier_stays_admitted(tmp_path):
    text = b"".join(b"lorem ipsum dolor %d\n" % (i % 7) for i in range(400))
    (tmp_path / "input").write_bytes(text)
    spec = write_job(tmp_path, "wordcount", fragments=10, split="records", aggregation="merge-counts")
    async with task_federation(tmp_path, 3) as fed:
        lead = fed.leader()
        owner = next(n for n in fed.nodes if n is not lead)
        first = await _run_job(owner, spec, text)  # ten samples of this module and input size
        st = lead.role.state
        job = ct.job(st, first)
        key = I.stats_key(job["module"], job["frag_bytes"])
        assert len(I.window(st, key, "fuel")) == 10
        # the agent (not the manager) that ran the most fragments has a hiccup on its first run
        # of the next job
        ran = Counter(rep["node"] for _, _, rep in ct.replicas(st, first) if rep["node"] != lead.peer_id)
        node = fed.by_peer(ran.most_common(1)[0][0])
        node.tasks.engine = OneOutlierEngine(node.tasks.engine, nth=1)
        second = await _run_job(owner, spec, text)
        st = lead.role.state
        got = [f for f in I.findings_log(st) if f["node"] == node.peer_id and f["job"] == second]
        assert any(f["kind"] == I.OUTLIER and f["ev"]["metric"] == "fuel"
                   and f["ev"]["z_milli"] > I.Z_MAX_MILLI for f in got), got
        d = owner.tasks.owner.describe(second)
        assert any(x["kind"] == I.OUTLIER and x["node"] == node.peer_id and "fuel" in x["detail"]
                   for x in d["integrity"]), d["integrity"]
        pen = I.penalty(st, node.peer_id)
        assert 0 < pen < 60 and all(f["kind"] == I.OUTLIER for f in got)
        # the finding feeds the score the manager commits: attestation less the penalty...
        await wait_until(lambda: _member(lead, node.peer_id).score
                         == with_integrity(lead.agent.peers.get(node.peer_id).score,
                                           I.penalty(lead.role.state, node.peer_id)) * 10, 30)
        assert _member(lead, node.peer_id).score < lead.agent.peers.get(node.peer_id).score * 10
        # ...and it stays admitted everywhere; the next job runs right
        await _run_job(owner, spec, text)
        assert all(_member(n, node.peer_id).status == ADMITTED for n in fed.nodes)
        assert not any(n.agent.peers.is_revoked(node.peer_id) for n in fed.nodes)
        # the outlier was gossiped and adopted by the nodes that are not the manager
        oid = max(f["id"] for f in got)
        await wait_until(lambda: all(oid in n.tasks.findings.adopted for n in fed.nodes
                                     if n is not lead), 60)
