"""Re-running the manager's scheduling decisions (the verifiable-decision rule).

Every ``assign-fragments`` entry carries the seed (the applied index the manager decided at) and
the digest of the decision's other inputs (``consensus.scheduler.inputs_digest``: the offers, the
free capacity, the measurements toward the job's targets, the request). A council member applies
the entry, takes the committed state at the seed from its own history, builds the same request
(the replicas pending then, the first as many as the decision placed: a wave places a prefix),
and, when its own offers and measurements give the same digest, re-runs the scheduler
(``check_decision``). Outcomes are counted, ``task_decision{verified|mismatch|unverifiable}``: a
mismatch (a manager that placed replicas other than the scheduler chooses) is logged as an error
with what differs. ``unverifiable`` means this node's inputs differ (gossip has not converged)
or the seed's state is older than the history it keeps.

The spot-check draw of an adaptive fragment's solo result (``fragment-result`` with a ``draw``,
consensus/trust.py) is checked the same way: it must be the committing manager's Ed25519
signature over the result's ``spot_transcript``; otherwise the manager chose which solo results
go unchecked, and it is counted as a ``mismatch``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from consensus import tasks as ct
from consensus import trust
from consensus.scheduler import Decision, Measurements, Placement, check_decision, inputs_digest
from consensus.state import InvalidCommand, SwarmState

log = logging.getLogger("enclave_swarm.tasks")


def free_capacity(st: SwarmState, offers: Any) -> dict[str, tuple[int, int]]:
    """Each offering node's free (cores, MiB) in ``st``: its offer minus its live replicas."""
    used = ct.used_capacity(st)
    return {n: (o.cores - used.get(n, (0, 0))[0], o.memory_mib - used.get(n, (0, 0))[1])
            for n, o in offers.items()}


def check_assignment(cmd: ct.AssignFragments, at_seed: SwarmState, offers: Any,
                     meas: Measurements) -> tuple[str, str]:
    """("verified" | "mismatch" | "unverifiable", detail) for one committed decision, given the
    committed state at its seed and this node's offers and measurements. Pure."""
    if ct.job(at_seed, cmd.job_id) is None:
        return "unverifiable", "the job is not in the state at the seed"
    req = ct.job_request(at_seed, cmd.job_id)
    wants = tuple(req.wants or ())[:len(cmd.assignments)]
    req = dataclasses.replace(req, wants=wants)
    free = free_capacity(at_seed, offers)
    if inputs_digest(offers, req, free, meas) != cmd.inputs_digest:
        return "unverifiable", "this node's offers or measurements differ from the manager's"
    placements = tuple(Placement(a.fragment, a.replica, a.node_id) for a in cmd.assignments)
    decision = Decision(cmd.job_id, cmd.seed, True, placements, 0, 0, ())
    ok, why = check_decision(decision, at_seed, offers, req, free, meas)
    return ("verified", "") if ok else ("mismatch", why)


def check_draw(cmd: ct.FragmentResult, st: SwarmState) -> tuple[str, str]:
    """("verified" | "mismatch" | "unverifiable", detail) for a committed solo result's draw,
    against the state it was applied to (the manager that committed it, the replica's attempt)."""
    from node.manager_checks import _peer_key, verify_ed25519

    j = ct.job(st, cmd.job_id)
    if j is None or not 0 <= cmd.fragment < len(j["frags"]):
        return "unverifiable", "the job is no longer in the state"
    rec = j["frags"][cmd.fragment][cmd.replica]
    key = _peer_key(st.manager_id)
    if key is None:
        return "unverifiable", "no manager key"
    transcript = trust.spot_transcript(cmd.job_id, j["seq"], cmd.fragment, rec["attempts"],
                                       cmd.node_id, cmd.output_hash)
    if verify_ed25519(key, transcript, cmd.draw):
        return "verified", ""
    return "mismatch", f"the spot-check draw of fragment {cmd.fragment} is not {st.manager_id}'s signature"


class DecisionCheck:
    """Installed on a node's manager role: checks every applied ``assign-fragments``."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.stats = {"verified": 0, "mismatch": 0, "unverifiable": 0}

    def on_entry(self, index: int, data: bytes, ok: bool) -> None:
        role = self.svc.role
        if not ok or not data or role is None or role.is_leader():
            return
        try:
            cmd = ct.TASK_REGISTRY.decode(data)
        except InvalidCommand:
            return
        if isinstance(cmd, ct.FragmentResult) and cmd.draw:
            self._count(*check_draw(cmd, role.state), cmd.job_id, index)
            return
        if not isinstance(cmd, ct.AssignFragments) or not cmd.inputs_digest:
            return
        at_seed = role.cert.history.get(cmd.seed)
        offers_src = getattr(self.svc.agent, "offers", None)
        if at_seed is None or offers_src is None:
            verdict, why = "unverifiable", "no state at the seed here"
        else:
            verdict, why = check_assignment(cmd, at_seed, offers_src.offers(),
                                            offers_src.measurements())
        self._count(verdict, why, cmd.job_id, index)

    def _count(self, verdict: str, why: str, job_id: str, index: int) -> None:
        self.stats[verdict] += 1
        self.svc.agent.counters.inc("task_decision", verdict)
        if verdict == "mismatch":
            log.error("the manager's decision on job %s at index %d does not check out: %s",
                      job_id, index, why, extra={"job": job_id})
        elif verdict == "unverifiable":
            log.debug("decision on job %s at index %d not checked: %s", job_id, index, why)
