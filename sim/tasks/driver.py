"""The task manager's driver in the simulator: one replicated log over the real state machine.

The manager proposes every command through :data:`consensus.tasks.TASK_REGISTRY` (the same
``apply`` a council member runs) and decides placements with the real scheduler
(:class:`consensus.scheduler.CandidateTable`) seeded with the log index the decision is
committed at. The log is a single replicated log: the council's Raft is simulated elsewhere
(:mod:`sim.council`), so here a proposal commits at once, in order; what matters is that every
state, decision and command is the one production code computes.

Rules
-----
- Every committed state is kept by index (``states[i]`` is the state after entry ``i``;
  ``states[0]`` the initial one): the invariants re-check each assignment against the state
  at its commit index, and each decision with ``check_decision`` against the same inputs.
- A decision made for entry ``i`` reads ``states[i - 1]`` and uses ``seed = i``.
- Pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from consensus.scheduler import (
    CandidateTable,
    Decision,
    JobRequest,
    Measurements,
    Offer,
    Want,
    inputs_digest,
)
from consensus.state import Result, SwarmState
from consensus.tasks import (
    ASSIGNED,
    R_DONE,
    TASK_REGISTRY,
    AssignFragments,
    Assignment,
    ReassignFragment,
    job_request,
    used_capacity,
)

PLACED, UNPLACEABLE, REFUSED = "placed", "unplaceable", "refused"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One committed log entry and what the state machine answered."""

    index: int
    time_s: float
    command: Any
    ok: bool
    error: str = ""


@dataclasses.dataclass(frozen=True)
class DecisionRecord:
    """A scheduler decision and every input it read: what ``check_decision`` re-runs."""

    index: int  # the entry the decision was committed at (or would have been: its seed)
    decision: Decision
    request: JobRequest
    free: Mapping[str, tuple[int, int]]
    committed: bool


class Manager:
    """Applies commands to the replicated state and makes the scheduler's decisions."""

    def __init__(self, initial: SwarmState, offers: Mapping[str, Offer],
                 measurements: Measurements) -> None:
        self.states: list[SwarmState] = [initial]
        self.log: list[Entry] = []
        self.offers = dict(offers)
        self.measurements = measurements
        self.decisions: list[DecisionRecord] = []
        # A planted bug for the tests: schedule on the initial state (blind to suspicions and
        # revocations since). The invariants must catch what it commits.
        self.stale_view = False

    @property
    def state(self) -> SwarmState:
        return self.states[-1]

    @property
    def next_index(self) -> int:
        return len(self.states)

    def propose(self, command: Any, now_s: float) -> Result:
        """Commit ``command`` at the next index and apply it (a rejection commits too: every
        replica rejects it the same way, and the state is unchanged)."""
        after, res = TASK_REGISTRY.apply(self.state, command)
        self.states.append(after)
        self.log.append(Entry(len(self.states) - 1, now_s, command, res.ok, res.error))
        return res

    def free(self, state: SwarmState) -> dict[str, tuple[int, int]]:
        """Each offering node's free (cores, MiB): its offer minus the replicas it runs."""
        used = used_capacity(state)
        out = {}
        for nid in sorted(self.offers):
            o = self.offers[nid]
            c, m = used.get(nid, (0, 0))
            out[nid] = (max(0, o.cores - c), max(0, o.memory_mib - m))
        return out

    def decide(self, request: JobRequest) -> tuple[Decision, dict[str, tuple[int, int]]]:
        """The scheduler's decision for the next entry, on the committed state."""
        view = self.states[0] if self.stale_view else self.state
        free = self.free(self.state)
        table = CandidateTable(view, self.offers, free, self.measurements)
        return table.schedule(request, self.next_index), free

    def assign(self, job_id: str, now_s: float) -> tuple[str, str]:
        """Place every pending replica of ``job_id`` in one decision and commit it. Returns
        (``placed``, "") or (``unplaceable`` / ``refused``, why): ``unplaceable`` is the
        scheduler finding no placement (nothing committed), ``refused`` the state machine
        rejecting a committed decision (a driver bug)."""
        request = job_request(self.state, job_id)
        if not request.wants:
            return PLACED, ""
        d, free = self.decide(request)
        if not d.ok:
            self.decisions.append(DecisionRecord(self.next_index, d, request, free, False))
            return UNPLACEABLE, d.explain()
        cmd = AssignFragments(job_id, d.seed,
                              tuple(Assignment(p.fragment, p.replica, p.node_id) for p in d.placements),
                              inputs_digest(self.offers, request, free, self.measurements))
        self.decisions.append(DecisionRecord(self.next_index, d, request, free, True))
        res = self.propose(cmd, now_s)
        return (PLACED, "") if res.ok else (REFUSED, res.error)

    def reassign(self, job_id: str, f: int, r: int, old_node: str, reason: str,
                 now_s: float) -> tuple[str, Result]:
        """Move replica (f, r) off ``old_node``: to the scheduler's choice, or back to pending
        when nothing fits now. Returns (the new node or "", the state machine's answer)."""
        request = self.want_one(job_id, f, r)
        d, free = self.decide(request)
        new = d.placements[0].node_id if d.ok else ""
        self.decisions.append(DecisionRecord(self.next_index, d, request, free, d.ok))
        digest = inputs_digest(self.offers, request, free, self.measurements) if d.ok else b""
        res = self.propose(ReassignFragment(job_id, f, r, old_node, new, reason,
                                            d.seed if d.ok else 0, digest), now_s)
        return new, res

    def want_one(self, job_id: str, f: int, r: int) -> JobRequest:
        """The request for one replica about to move: avoid its fragment's other live replicas
        (their nodes and providers) and every node that already tried it (its current node
        included)."""
        s = self.state
        full = job_request(s, job_id, pending_only=False)
        frag = s.ext["tasks"]["jobs"][job_id]["frags"][f]
        others = [rep["node"] for k, rep in enumerate(frag) if k != r and rep["st"] in (ASSIGNED, R_DONE)]
        provs = sorted({s.members[n].provider for n in others if n in s.members})
        avoid = sorted(set(others) | set(frag[r]["tried"]) | {frag[r]["node"]} - {""})
        return dataclasses.replace(full, wants=(Want(f, r, tuple(avoid), tuple(provs)),))
