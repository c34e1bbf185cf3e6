"""Invariants of the tasks world, checked after every step (one event).

Three families:

1. the state machine's own: :func:`consensus.tasks.check_invariants` on the state after the
   step and :func:`consensus.tasks.check_transition` on every entry the step committed;
2. this checker's, written independently of the state machine's ``qualifies`` (so a bug there
   does not blind it):

   - **none assigned to a node that did not qualify at that commit**: every replica that gained
     a node at entry ``i`` is re-qualified against ``states[i - 1]`` (admitted, TEE kind,
     score, region, provider, not tried before, no other live replica of its fragment on that
     node or provider) and against the offers (accelerators, price, free capacity at that
     state, summed over the batch);
   - every committed decision equals the scheduler's re-run on the same inputs
     (:func:`consensus.scheduler.check_decision` against ``states[i - 1]``, seed ``i``);
   - **no fragment lost**: no replica of a live job stays on a node that crashed more than
     ``detect_s`` ago or that the state revoked (held or computed), and at the end every job
     is done or failed with a reason;
   - **none counted twice**: at most one accepted result per assignment of a replica, and a
     done job holds ``fragments x redundancy`` accepted results (a quorum job: at least
     ``fragments x quorum``);
   - **no wrong result while an honest quorum exists**: at every committed ``JobDone``, each
     fragment whose honest replicas (nodes that are not liars, not revoked) outputting the
     truth number at least the job's quorum has the true output as its agreed one, and the
     committed result is the digest of the agreed outputs;
3. the manager's proposals: a command the manager had every reason to expect accepted and the
   state machine refused is a driver bug (the world reports it through :meth:`violation`).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from consensus.scheduler import check_decision
from consensus.state import ADMITTED, REVOKED, SwarmState
from consensus.tasks import (
    ASSIGNED,
    DONE,
    FAILED,
    LIVE_JOB,
    R_DONE,
    AssignFragments,
    FragmentResult,
    JobDone,
    ReassignFragment,
    check_invariants,
    check_transition,
    fragment_verdict,
    used_capacity,
)

if TYPE_CHECKING:
    from sim.tasks.world import TasksWorld

MAX_KEPT = 200
EPS_S = 1e-9


def _jobs(s: SwarmState) -> dict[str, Any]:
    sec = s.ext.get("tasks")
    return dict(sec["jobs"]) if sec else {}


class TaskInvariants:
    """Checks a :class:`TasksWorld` incrementally: each step looks at the new log entries."""

    def __init__(self, world: TasksWorld) -> None:
        self.w = world
        self.checked = 0
        self.violations: list[str] = []
        self.violation_count = 0
        self._entry = 0  # log entries checked so far
        self._decision = 0
        self.results_per_assignment: dict[tuple[str, int, int, int], int] = {}
        self.duplicated = 0
        self.lost_replicas: set[tuple[str, int, int]] = set()

    def violation(self, what: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_KEPT:
            self.violations.append(f"t={self.w.now:.3f}s {what}")

    def _check(self, ok: bool, what: str) -> None:
        self.checked += 1
        if not ok:
            self.violation(what)

    # ----------------------------------------------------------------- per step

    def check_step(self) -> None:
        m = self.w.manager
        for what in check_invariants(m.state):
            self._check(False, f"state: {what}")
        self.checked += 1
        while self._entry < len(m.log):
            e = m.log[self._entry]
            self._entry += 1
            before, after = m.states[e.index - 1], m.states[e.index]
            for what in check_transition(before, after):
                self._check(False, f"entry {e.index}: {what}")
            self.checked += 1
            if e.ok and isinstance(e.command, (AssignFragments, ReassignFragment)):
                self._qualified(e.index, e.command.job_id, before, after)
            if e.ok and isinstance(e.command, FragmentResult):
                self._counted_once(e.command, before)
            if e.ok and isinstance(e.command, JobDone):
                self._honest_quorum_wins(e.index, e.command, before)
                self._done_counts(e.command.job_id, after)
        while self._decision < len(m.decisions):
            d = m.decisions[self._decision]
            self._decision += 1
            if d.committed:
                self._decision_replays(d)
        self._nothing_lost()

    def _qualified(self, index: int, job_id: str, before: SwarmState, after: SwarmState) -> None:
        """Every replica that gained a node at ``index`` went to a node that qualified in
        ``before`` (this module's own reading of the rules, not ``consensus.tasks.qualifies``)."""
        old, new = _jobs(before)[job_id], _jobs(after)[job_id]
        req = new["req"]
        offers = self.w.manager.offers
        used = used_capacity(before)
        batch: dict[str, int] = {}
        for f, frag in enumerate(new["frags"]):
            for r, rep in enumerate(frag):
                prev = old["frags"][f][r]
                if rep["st"] != ASSIGNED or (prev["st"] == ASSIGNED and prev["node"] == rep["node"]
                                             and prev["attempts"] == rep["attempts"]):
                    continue
                node = rep["node"]
                where = f"entry {index}: {job_id}/{f}/{r} on {node}"
                mem = before.members.get(node)
                self._check(mem is not None and mem.status == ADMITTED,
                            f"{where}: assigned to a node that was {mem.status if mem else 'unknown'} "
                            f"at that commit")
                if mem is None:
                    continue
                self._check(not req["tee_kinds"] or mem.tee_kind in req["tee_kinds"], f"{where}: TEE kind")
                self._check(mem.score >= req["min_score"], f"{where}: score {mem.score}")
                self._check(not req["regions"] or mem.region in req["regions"], f"{where}: region")
                self._check(not req["providers"] or mem.provider in req["providers"], f"{where}: provider")
                self._check(node not in prev["tried"], f"{where}: had already tried this replica")
                for k, other in enumerate(frag):
                    if k != r and other["st"] in (ASSIGNED, R_DONE):
                        om = before.members.get(other["node"])
                        self._check(other["node"] != node and (om is None or om.provider != mem.provider),
                                    f"{where}: shares node or provider with replica {k}")
                o = offers.get(node)
                self._check(o is not None, f"{where}: no capability offer")
                if o is None:
                    continue
                self._check(set(req["accelerators"]) <= set(o.accelerators), f"{where}: accelerators")
                cap = req["max_price_core_s"]
                self._check(cap is None or o.price_core_s <= cap, f"{where}: price {o.price_core_s} > {cap}")
                batch[node] = batch.get(node, 0) + 1
        for node, k in sorted(batch.items()):
            o = offers[node]
            c, mib = used.get(node, (0, 0))
            self._check(c + k * req["cores"] <= o.cores and mib + k * req["memory_mib"] <= o.memory_mib,
                        f"entry {index}: {job_id}: {k} replicas overfill {node}")

    def _decision_replays(self, d: Any) -> None:
        m = self.w.manager
        state = m.states[d.index - 1]
        ok, why = check_decision(d.decision, state, m.offers, d.request, m.free(state), m.measurements)
        self._check(ok and d.decision.seed == d.index,
                    f"entry {d.index}: decision for {d.request.job_id} does not replay: {why}")

    def _honest_quorum_wins(self, index: int, c: JobDone, before: SwarmState) -> None:
        """No wrong result is delivered while an honest quorum exists (see the docstring)."""
        w = self.w
        j = _jobs(before)[c.job_id]
        outs = []
        for f, frag in enumerate(j["frags"]):
            agreed = fragment_verdict(before, j, f).output
            outs.append(agreed or b"")
            truth = w.honest_output(c.job_id, f)
            honest = 0
            for rep in frag:
                m = before.members.get(rep["node"])
                if (rep["st"] == R_DONE and rep["out"] == truth and rep["node"] not in w.liars
                        and m is not None and m.status != REVOKED):
                    honest += 1
            self._check(honest < j["q"] or agreed == truth,
                        f"entry {index}: {c.job_id} fragment {f}: a wrong output agreed while "
                        f"{honest} honest replicas (quorum {j['q']}) held the truth")
        self._check(c.result_hash == hashlib.sha256(b"".join(outs)).digest(),
                    f"entry {index}: {c.job_id}: the result is not the digest of the agreed outputs")

    def _done_counts(self, jid: str, after: SwarmState) -> None:
        """A job done holds every replica's result (a plain job), or at least a quorum of each
        fragment's (a quorum job), each accepted once."""
        j = _jobs(after)[jid]
        accepted = sum(1 for (k, *_), n in self.results_per_assignment.items() if k == jid and n)
        plain = j["q"] == j["r"] == j["rmax"]
        need = j["n"] * (j["r"] if plain else j["q"])
        self._check((j["done"] == need if plain else j["done"] >= need) and accepted >= need,
                    f"{jid}: done with {j['done']} of {need} results")

    def _counted_once(self, c: FragmentResult, before: SwarmState) -> None:
        attempt = _jobs(before)[c.job_id]["frags"][c.fragment][c.replica]["attempts"]
        key = (c.job_id, c.fragment, c.replica, attempt)
        n = self.results_per_assignment.get(key, 0) + 1
        self.results_per_assignment[key] = n
        if n > 1:
            self.duplicated += 1
        self._check(n == 1, f"{c.job_id}/{c.fragment}/{c.replica}: result counted twice for one assignment")

    def _nothing_lost(self) -> None:
        w = self.w
        s = w.manager.state
        for jid, j in sorted(_jobs(s).items()):
            if j["status"] not in LIVE_JOB:
                continue
            for f, frag in enumerate(j["frags"]):
                for r, rep in enumerate(frag):
                    node = rep["node"]
                    crashed = w.crashed.get(node)
                    m = s.members.get(node)
                    dead = (rep["st"] == ASSIGNED and crashed is not None
                            and w.now > crashed + w.cfg.detect_s + EPS_S)
                    revoked = rep["st"] in (ASSIGNED, R_DONE) and m is not None and m.status == REVOKED
                    self.checked += 1
                    if (dead or revoked) and (jid, f, r) not in self.lost_replicas:
                        self.lost_replicas.add((jid, f, r))
                        self.violation(f"{jid}/{f}/{r} lost on {'crashed' if dead else 'revoked'} {node}")

    # ----------------------------------------------------------------- at the end

    def check_end(self) -> None:
        s = self.w.manager.state
        for jid, j in sorted(_jobs(s).items()):
            self._check(j["status"] in (DONE, FAILED), f"{jid}: still {j['status']} at the end (lost)")
            if j["status"] == FAILED:
                self._check(bool(j["reason"]), f"{jid}: failed without a reason")
        missing = sorted(set(self.w.job_specs) - set(self.w.submitted))
        self._check(not missing, f"jobs never committed: {missing[:5]}")
        # a job dropped from the state ended first (done or failed)
        gone = sorted(set(self.w.submitted) - set(_jobs(s)) - set(self.w.finished))
        self._check(not gone, f"jobs dropped before they ended: {gone[:5]}")

    def lost_fragments(self) -> int:
        """Fragments of jobs neither done nor failed at the end, plus replicas left on a dead
        or revoked node (each counted once)."""
        s = self.w.manager.state
        open_frags = {(jid, f) for jid, j in _jobs(s).items() if j["status"] in LIVE_JOB
                      for f in range(j["n"])}
        return len(open_frags | {(jid, f) for jid, f, _ in self.lost_replicas})
