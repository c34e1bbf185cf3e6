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
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from consensus import tasks as ct
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
        if not isinstance(cmd, ct.AssignFragments) or not cmd.inputs_digest:
            return
        at_seed = role.cert.history.get(cmd.seed)
        offers_src = getattr(self.svc.agent, "offers", None)
        if at_seed is None or offers_src is None:
            verdict, why = "unverifiable", "no state at the seed here"
        else:
            verdict, why = check_assignment(cmd, at_seed, offers_src.offers(),
                                            offers_src.measurements())
        self.stats[verdict] += 1
        self.svc.agent.counters.inc("task_decision", verdict)
        if verdict == "mismatch":
            log.error("the manager's placement of job %s at index %d is not the scheduler's: %s",
                      cmd.job_id, index, why, extra={"job": cmd.job_id})
        elif verdict == "unverifiable":
            log.debug("placement of job %s at index %d not checked: %s", cmd.job_id, index, why)
