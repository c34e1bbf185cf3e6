"""The manager's part of the task flow (trio driver; acts only on the node that leads).

Step by step, for every job in the committed state (consensus/tasks.py), each round:

1. **Select.** Pending replicas are placed by the scheduler (consensus/scheduler.py) over the
   committed state, the offers and measurements gossiped by the nodes, and the free capacity
   (offers minus what live replicas hold), seeded by the applied index; the decision is
   committed (``assign-fragments``, with the digest of its inputs). When nothing fits, why is
   kept for ``jobs describe``, and a job still waiting past its queue deadline fails, saying why.
2. **Dispatch and track.** Every assigned replica is sent to its agent (an
   :class:`~node.tasks.wire.AssignRequest`) and probed again every ``probe_s``. A replica is
   moved back to pending (``reassign-fragment``, attempts counted) when its node is no longer
   admitted or is quarantined here, refuses it, misses :data:`PROBE_FAILURES` probes in a row
   (it died), or runs past the job's wall time plus :data:`RUN_SLACK_S`.
3. **Collect.** A result is accepted only from the node the committed state assigns, for the
   committed module and input hashes, under a valid signature by that node, with an output that
   hashes to what it signed and fits the limit; then it is committed (``fragment-result``).
   Anything else is refused and counted (``task_result_refused{reason}``).
4. **Aggregate and close.** When every replica has a result: a failed replica fails the job
   (naming each failed fragment; the others ran to the end), replicas that disagree fail it, and
   otherwise the outputs are aggregated (node/tasks/aggregate.py) and ``job-done`` committed
   with the result's hash.
5. **Deliver.** A finished job's end (and the result's bytes) goes to its owner, retried until
   the owner takes it; beyond :data:`~consensus.tasks.KEEP_FINISHED` finished jobs, the oldest
   delivered ones are dropped from the state.

A new manager starts with nothing in memory: step 2 probes every assigned and done replica,
and agents report their kept results again, so no fragment is lost or counted twice (the state
machine refuses a second result for a replica). A done job's agreed output that no holder can
hand over any more is run again here, from the owner's fragment, and kept only if it hashes
to the agreed output (:meth:`ManagerDuty._recompute`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from consensus import tasks as ct
from consensus import trust
from consensus.scheduler import Measurements, inputs_digest, schedule
from consensus.state import ADMITTED, REVOKED
from node.tasks import budget
from node.tasks.aggregate import AggregationError, aggregate
from node.tasks.executor import Unavailable, limits_of
from node.tasks.private_query import PrivacyError
from node.tasks.verify import free_capacity
from node.tasks.wire import (
    AssignRequest,
    CancelRequest,
    DeliverRequest,
    FetchReply,
    FetchRequest,
    LogEntry,
    LogsReply,
    LogsRequest,
    ResultReport,
    SubmitRequest,
    TaskReply,
    failure_digest,
)
from node.workload import Grants, Limits, result_digest_payload
from node.workload.limits import MAX_MEMORY_BYTES, MAX_OUTPUT_BYTES
from overlay.errors import RemoteProtocolError

if TYPE_CHECKING:
    from node.tasks.service import TaskService

log = logging.getLogger("enclave_swarm.tasks")

PROBE_FAILURES = 3
RUN_SLACK_S = 90.0          # fetch, compile and report on top of the job's wall time
RESCHEDULE_S = 1.0          # retry an unplaceable job at most this often (or on a new index)
DELIVER_BACKOFF_S = (0.5, 30.0)
RECOMPUTE_RETRY_S = (10.0, 300.0)  # a lost output that could not be run here: tried again, backing off
MAX_QUEUE_TIMEOUT_S = 7 * 24 * 3600


def _slots(req: Any, free: Any) -> int:
    """Replicas of ``req``'s size the free capacity holds, over every offer."""
    q = req.requirements
    return sum(max(0, min(c // max(1, q.cores), m // max(1, q.memory_mib))) for c, m in free.values())


@dataclasses.dataclass
class _Track:
    node: str
    next_probe: float
    inflight: bool = False
    failures: int = 0
    accepted_at: float | None = None
    last_error: str = ""
    recomputes: int = 0     # failed runs here of a done job's lost output, in a row


class _CombineFailed(Exception):
    def __init__(self, msg: str, *, final: bool) -> None:
        super().__init__(msg)
        self.final = final


class ManagerDuty:
    def __init__(self, svc: TaskService) -> None:
        self.svc = svc
        self.agent = svc.agent
        self.nursery: trio.Nursery | None = None
        self.outputs: dict[tuple[str, int, int], bytes] = {}
        self.moving: set[tuple[str, int, int]] = set()   # replicas whose reassignment is in flight
        self.logs: dict[str, dict[tuple[int, int], LogEntry]] = {}
        self.track: dict[tuple[str, int, int], _Track] = {}
        self.waiting: dict[str, str] = {}
        self.results: dict[str, bytes] = {}
        self.reducers: dict[bytes, bytes] = {}
        self.delivered: set[str] = set()
        self.deliver_next: dict[str, tuple[float, float]] = {}
        self.busy: set[str] = set()
        self.tried_at: dict[str, tuple[int, float]] = {}
        self.stats = {"submitted": 0, "placed": 0, "reassigned": 0, "results": 0, "done": 0,
                      "replicas_added": 0, "recomputed": 0,
                      "failed": 0, "delivered": 0}
        self._leading = False
        self._wake = trio.Event()

    # ------------------------------------------------------------------ loop
    def wake(self) -> None:
        self._wake.set()

    def active(self) -> bool:
        role = self.svc.role
        return role is not None and role.is_leader()

    def _not_manager(self) -> TaskReply:
        lead = self.svc.manager_peer()
        return TaskReply(False, f"not the manager; manager is {lead or 'unknown'}", "not-manager")

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.svc.probe_s / 2):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self.active():
                if self._leading:
                    self._step_down()
                continue
            self._leading = True
            self._round()

    def _step_down(self) -> None:
        """No longer the manager: what we held is the successor's to collect again."""
        self._leading = False
        self.track.clear()
        self.waiting.clear()
        self.outputs.clear()
        self.results.clear()
        self.tried_at.clear()
        self.deliver_next.clear()

    def _round(self) -> None:
        role = self.svc.role
        st = role.state
        now = time.monotonic()
        live: set[tuple[str, int, int]] = set()
        for jid, j in sorted(ct.jobs(st).items(), key=lambda kv: kv[1]["seq"]):
            if jid in self.busy:
                live.update(k for k in self.track if k[0] == jid)
                continue
            states = [rep["st"] for frag in j["frags"] for rep in frag]
            if j["status"] in ct.LIVE_JOB:
                live |= self._track_replicas(st, jid, j, now)
                # A quorum below r, replicas added on disagreement, or adaptive replication
                # (a fragment that runs alone) may settle a fragment with replicas still to
                # run; a plain job never is, and does not pay the check.
                early = (j.get("q", j["r"]) != j["r"] or j.get("rmax", j["r"]) != j["r"]
                         or j.get("adapt") is not None) and not ct.incomplete(st, j)
                if ct.PENDING in states and not early:
                    self._start(jid, self._place, jid)
                elif ct.ASSIGNED not in states or early:
                    self._start(jid, self._finish, jid)
            elif jid not in self.delivered and not j.get("delivered"):
                if j["status"] == ct.DONE and jid not in self.results and j.get("dp") is None:
                    live |= self._track_replicas(st, jid, j, now)  # a private job's is committed
                nxt = self.deliver_next.get(jid, (0.0, 0.0))[0]
                if now >= nxt:
                    self._start(jid, self._deliver, jid)
        for key in [k for k in self.track if k not in live]:
            del self.track[key]
        for jid in ct.finished_to_drop(st):
            if (jid in self.delivered or ct.jobs(st)[jid].get("delivered")) and jid not in self.busy:
                self._start(jid, self._drop, jid)

    def _start(self, jid: str, fn: Any, *args: Any) -> None:
        assert self.nursery is not None
        self.busy.add(jid)

        async def go() -> None:
            try:
                await fn(*args)
            finally:
                self.busy.discard(jid)
                self.wake()

        self.nursery.start_soon(go)

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(fn, *args)

    async def _command(self, cmd: Any) -> tuple[bool, str]:
        ok, err = await self.svc.role.command(cmd, timeout_s=10.0)
        if not ok:
            log.info("%s for job %s not committed: %s", type(cmd).__name__,
                     getattr(cmd, "job_id", "?"), err)
        return ok, err

    # ------------------------------------------------------------------ 1. select
    async def _place(self, jid: str) -> None:
        role = self.svc.role
        st, idx = role.state, role.state_index
        j = ct.job(st, jid)
        if j is None or j["status"] not in ct.LIVE_JOB:
            return
        for f, r, rep in ct.replicas(st, jid):
            if rep["st"] == ct.PENDING and rep["attempts"] >= j["max_attempts"]:
                await self._fail(jid, f"fragment {f} replica {r}: no result after {rep['attempts']} "
                                      f"attempts (tried {', '.join(rep['tried'])})")
                return
        last = self.tried_at.get(jid)
        if last is not None and last[0] == idx and time.monotonic() - last[1] < RESCHEDULE_S:
            return
        decided_from = time.perf_counter()
        offers_src = getattr(self.agent, "offers", None)
        offers = offers_src.offers() if offers_src is not None else {}
        meas = offers_src.measurements() if offers_src is not None else Measurements()
        free = free_capacity(st, offers)
        req = ct.job_request(st, jid)
        slots = _slots(req, free)
        if slots == 0 and any(rep["st"] == ct.ASSIGNED for _, _, rep in ct.replicas(st, jid)):
            # Full, and this job runs: its next wave is placed when a result frees a slot.
            self.waiting[jid] = f"{len(req.wants or ())} replicas wait for free capacity"
            return
        wave = None
        if len(req.wants or ()) > slots:
            # More pending than the free capacity holds: the whole request cannot fit, so do
            # not pay for scheduling it (O(pending) at every round of a large job).
            wave = self._wave(st, offers, req, idx, free, meas)
        if wave is not None:
            req, decision = wave
        else:
            decision = schedule(st, offers, req, idx, free, meas)
            if not decision.ok:
                req, decision = self._wave(st, offers, req, idx, free, meas) or (req, decision)
        self.agent.timings.observe("scheduler_decision", "compute", time.perf_counter() - decided_from)
        if decision.ok:
            cmd = ct.AssignFragments(jid, idx, tuple(ct.Assignment(p.fragment, p.replica, p.node_id)
                                                     for p in decision.placements),
                                     inputs_digest(offers, req, free, meas))
            ok, _ = await self._command(cmd)
            if ok:
                self.waiting.pop(jid, None)
                self.tried_at.pop(jid, None)
                self.stats["placed"] += len(decision.placements)
            return
        self.tried_at[jid] = (idx, time.monotonic())
        self.waiting[jid] = decision.explain()[:2000]
        running = any(rep["st"] == ct.ASSIGNED for _, _, rep in ct.replicas(st, jid))
        if time.time() * 1000 > j["deadline"] and not running:
            await self._fail(jid, f"no placement within the queue timeout: {decision.explain()}")

    @staticmethod
    def _wave(st: Any, offers: Any, req: Any, idx: int, free: Any, meas: Any) -> Any:
        """More replicas pending than the free capacity holds: place the first ones that fit
        (in (fragment, replica) order; at most as many as there are free slots, halving until
        a decision succeeds), the rest once capacity frees up. The scheduler stays all or
        nothing per request, so each wave is one verifiable decision. None when not even one
        replica fits."""
        wants = list(req.wants or ())
        k = min(len(wants) - 1, _slots(req, free))
        while k >= 1:
            sub = dataclasses.replace(req, wants=tuple(wants[:k]))
            d = schedule(st, offers, sub, idx, free, meas)
            if d.ok:
                return sub, d
            k //= 2
        return None

    # ------------------------------------------------------------------ 2. dispatch and track
    def _track_replicas(self, st: Any, jid: str, j: Any, now: float) -> set[tuple[str, int, int]]:
        """Probe assigned replicas (and done ones whose output we lack); move those that are
        lost. Returns the keys tracked."""
        seen: set[tuple[str, int, int]] = set()
        have = {(f, r) for (k, f, r) in self.outputs if k == jid}
        for f, (frag, v) in enumerate(zip(j["frags"], ct.verdicts(st, j), strict=True)):
            fragment_output = v.state == ct.AGREED and any(
                (f, r) in have and rep["out"] == v.output for r, rep in enumerate(frag))
            for r, rep in enumerate(frag):
                key = (jid, f, r)
                node = rep["node"]
                if rep["st"] == ct.ASSIGNED:
                    pass
                elif rep["st"] == ct.R_DONE:
                    m = st.members.get(node)
                    if m is not None and m.status == REVOKED and j["status"] in ct.LIVE_JOB:
                        # Its output is void, held here or not: the replica runs again elsewhere
                        # (JobDone refuses a revoked node's replica).
                        self._spawn(self._reassign, key, node, f"{node} was revoked")
                        continue
                    if fragment_output:
                        continue
                else:
                    continue
                seen.add(key)
                t = self.track.get(key)
                if t is None or t.node != node:
                    t = self.track[key] = _Track(node, now)
                if j["status"] not in ct.LIVE_JOB:
                    # Done, its result not delivered, and this manager lacks the fragment's agreed
                    # output: collected from its holder, or run here when the holder cannot
                    # hand it over (revoked, gone, restarted).
                    why = self._lost(st, node)
                    if why and not t.inflight and now >= t.next_probe:
                        t.inflight = True
                        self._spawn(self._recompute, key, why)
                        continue
                if rep["st"] == ct.ASSIGNED:
                    why = self._lost(st, node)
                    budget = j["limits"]["wall_time_ms"] / 1000 + RUN_SLACK_S
                    if not why and t.accepted_at is not None and now - t.accepted_at > budget:
                        why = f"no result from {node} within {budget:g}s"
                    if why:
                        t.next_probe = float("inf")
                        self._spawn(self._reassign, key, node, why)
                        continue
                if not t.inflight and now >= t.next_probe:
                    t.inflight = True
                    self._spawn(self._probe, key, j, rep["st"])
        return seen

    def _lost(self, st: Any, node: str) -> str:
        m = st.members.get(node)
        if m is None or m.status != ADMITTED:
            return f"{node} is {m.status if m is not None else 'not a member'}"
        peers = self.agent.peers
        if node != self.svc.me and (peers.is_revoked(node) or not peers.is_attested(node)):
            return f"{node} is quarantined here"
        return ""

    def _assignment(self, key: tuple[str, int, int], j: Any) -> AssignRequest:
        """The assignment of replica ``key`` of job ``j`` as the committed state holds it (what
        a probe sends, and what a lost output is run again from)."""
        jid, f, r = key
        lim = j["limits"]
        return AssignRequest(jid, f, r, j["owner"], j["module"],
                             j["inputs"][f] if j["inputs"] else bytes(32), j["frag_bytes"],
                             lim["fuel"], lim["memory_mib"], lim["wall_time_ms"],
                             lim["max_output_bytes"], self.svc.role.status()["term"])

    async def _probe(self, key: tuple[str, int, int], j: Any, state: str) -> None:
        jid = key[0]
        t = self.track.get(key)
        if t is None:
            return
        req = self._assignment(key, j)
        reassign = ""
        try:
            reply, _ = await self.svc.request(t.node, req, TaskReply)
        except RemoteProtocolError as exc:
            t.failures += 1
            t.last_error = str(exc)
        else:
            if reply.ok:
                t.failures = 0
                if t.accepted_at is None:
                    t.accepted_at = time.monotonic()
            elif reply.detail == "not-manager":   # its view lags the term: transient
                t.failures += 1
                t.last_error = reply.error
            else:
                reassign = f"{t.node} refused: {reply.error}"
        if t.failures >= PROBE_FAILURES:
            reassign = f"{t.node} unreachable: {t.last_error}"
        t.inflight = False
        t.next_probe = time.monotonic() + self.svc.probe_s
        if reassign and self.track.get(key) is t and self.active():
            t.next_probe = float("inf")
            cur = ct.job(self.svc.role.state, jid)
            if cur is not None and cur["status"] not in ct.LIVE_JOB:
                t.inflight = True
                await self._recompute(key, reassign)  # an ended job's replicas stay where they are
            else:
                await self._reassign(key, t.node, reassign, output_lost=(state == ct.R_DONE))

    async def _reassign(self, key: tuple[str, int, int], node: str, why: str, *,
                        output_lost: bool = False) -> None:
        if key in self.moving:
            return  # already being moved (a round spawned it while the command was in flight)
        self.moving.add(key)
        try:
            jid, f, r = key
            ok, _ = await self._command(ct.ReassignFragment(jid, f, r, node, "", why[:500],
                                                            output_lost=output_lost))
        finally:
            self.moving.discard(key)
        self.track.pop(key, None)
        if ok:
            self.outputs.pop(key, None)  # the replica moved: what its old node sent is void
            self.stats["reassigned"] += 1
            self.agent.counters.inc("task_reassigned", "output-lost" if output_lost else "lost")
            log.warning("job %s fragment %d replica %d moved off %s: %s", jid, f, r, node, why,
                        extra={"job": jid, "peer": node})
        self.wake()

    async def _recompute(self, key: tuple[str, int, int], why: str) -> None:
        """A done job's fragment whose agreed output this manager lacks, and its holder cannot
        hand over (``why``): the holder was revoked, is gone, or restarted before the result
        reached the owner, and the manager that held the outputs is no longer the manager.
        Its replica cannot move (the job has ended), so the manager runs the fragment itself:
        the module and the fragment from the owner (which serves them to the committed manager
        of a done job), under the job's limits, and keeps the output only if it hashes to the
        agreed one. ``_deliver`` then rebuilds the result and checks it against the committed
        digest. Found by the seeded chaos test (a manager revoked between ``job-done`` and the
        delivery; docs/reliability.md). The track's ``inflight`` is set by the caller."""
        ok = False
        try:
            ok = await self._run_lost_output(key, why)
        finally:
            t = self.track.get(key)
            if t is not None:
                t.inflight, t.failures = False, 0
                t.recomputes = 0 if ok else t.recomputes + 1
                first, most = RECOMPUTE_RETRY_S
                t.next_probe = time.monotonic() + (
                    self.svc.probe_s if ok else min(most, first * 2 ** (t.recomputes - 1)))
        if ok:
            self.wake()

    async def _run_lost_output(self, key: tuple[str, int, int], why: str) -> bool:
        jid, f, r = key
        st = self.svc.role.state
        j = ct.job(st, jid)
        if j is None or j["status"] != ct.DONE or j.get("dp") is not None or key in self.outputs:
            return True  # nothing to rebuild (a private job's release is committed)
        verdict = ct.verdicts(st, j)[f]
        if verdict.state != ct.AGREED or j["frags"][f][r]["out"] != verdict.output:
            return True  # not a replica of the agreed output
        log.warning("job %s fragment %d: its agreed output is lost (%s); running it here",
                    jid, f, why, extra={"job": jid})
        req = self._assignment(key, j)
        try:
            module, data = await self.svc.executor.fetch(req)
        except Unavailable as exc:
            if exc.delivered:  # the owner has it: the ack was lost with the manager that had it
                log.info("job %s: the owner holds its end already", jid, extra={"job": jid})
                self._delivered(jid)
                await self._command(ct.JobDelivered(jid))
                return True
            self.agent.counters.inc("task_recompute_failed", "input")
            log.warning("job %s fragment %d: cannot run it here: %s", jid, f, exc, extra={"job": jid})
            return False
        outcome = await self.svc.engine.run(module, req.module_hash, data, limits_of(req), Grants())
        if not outcome.ok or hashlib.sha256(outcome.output).digest() != verdict.output:
            self.agent.counters.inc("task_recompute_failed", "run" if not outcome.ok else "mismatch")
            log.error("job %s fragment %d: run here, %s", jid, f,
                      f"it failed: {outcome.error}: {outcome.message}" if not outcome.ok
                      else "it gives another output than the agreed one", extra={"job": jid})
            return False
        self.outputs[key] = outcome.output
        self.stats["recomputed"] += 1
        self.agent.counters.inc("task_recomputed")
        return True

    # ------------------------------------------------------------------ requests
    async def on_submit(self, pid: str, req: SubmitRequest) -> TaskReply:
        if not self.active():
            return self._not_manager()
        try:
            cmd = ct.TASK_REGISTRY.decode(req.command)
        except Exception as exc:  # InvalidCommand: the decoder names the problem
            return self.svc.refuse("task_submit_refused", "invalid", pid, f"invalid command: {exc}")
        if not isinstance(cmd, ct.SubmitJob):
            return self.svc.refuse("task_submit_refused", "invalid", pid, "not a submit-job command")
        if cmd.owner != pid:
            return self.svc.refuse("task_submit_refused", "not-owner", pid,
                                   "a job's owner is the node that submits it")
        m = self.svc.role.state.members.get(pid)
        if m is None or m.status != ADMITTED:
            return self.svc.refuse("task_submit_refused", "not-admitted", pid,
                                   "only an admitted member may submit jobs")
        if self._submitted(cmd):
            return TaskReply(True, "", "already committed")
        if cmd.privacy is not None:  # charged before it is committed, or refused
            charged, refusal = await budget.charge(self, pid, cmd)
            if charged is None:
                assert refusal is not None
                return refusal
            cmd = charged
        timeout_s = min(req.queue_timeout_s, MAX_QUEUE_TIMEOUT_S)
        cmd = dataclasses.replace(cmd, queue_deadline_ms=int(time.time() * 1000) + 1000 * timeout_s)
        ok, err = await self._command(cmd)
        if not ok and self._submitted(cmd):
            return TaskReply(True, "", "already committed")
        if not ok:
            return TaskReply(False, err[:500], "rejected")
        self.stats["submitted"] += 1
        log.info("job %s committed: %d fragments x %d replicas, owner %s", cmd.job_id,
                 cmd.fragments, cmd.redundancy, pid, extra={"job": cmd.job_id, "peer": pid})
        self.wake()
        return TaskReply(True)

    def _submitted(self, cmd: ct.SubmitJob) -> bool:
        """Is ``cmd`` committed already, the same job by the same owner? The owner sends its
        submission again when the answer to the first was lost (the stream failed after the
        command committed, found by a fresh-clone ``make test`` run): that is success, not
        "job … exists"."""
        j = ct.job(self.svc.role.state, cmd.job_id)
        return (j is not None and j["owner"] == cmd.owner and j["spec"] == cmd.spec_digest
                and j["module"] == cmd.module_hash and list(j["inputs"]) == list(cmd.input_hashes))

    def _spot_draw(self, j: Any, rep: ResultReport, rec: Any) -> bytes:
        """For the result of an adaptive fragment run alone: this manager's signature over the
        result (consensus/trust.py ``spot_transcript``), from which the state machine draws
        whether it is spot-checked; the node could not know it when it answered. Else b""."""
        modes = j.get("modes")
        if modes is None or modes[rep.fragment] != trust.SOLO:
            return b""
        transcript = trust.spot_transcript(rep.job_id, j["seq"], rep.fragment, rec["attempts"],
                                           rec["node"], rep.output_hash)
        sig: bytes = self.svc.agent._identity.sign(transcript)
        return sig

    async def on_result(self, pid: str, rep: ResultReport, output: bytes) -> TaskReply:
        if not self.active():
            return self._not_manager()
        st = self.svc.role.state
        j = ct.job(st, rep.job_id)
        why = self._check_result(pid, rep, output, j)
        if why:
            if why[0] == "bad-signature":  # an integrity finding (node/tasks/findings.py)
                await self.svc.findings.report_bad_signature(
                    rep.job_id, rep.fragment, rep.replica, pid, result_digest_payload(
                        rep.job_id, rep.fragment, rep.module_hash, rep.input_hash,
                        rep.output_hash), rep.signature)
            return self.svc.refuse("task_result_refused", why[0], pid, why[1])
        assert j is not None
        rec = j["frags"][rep.fragment][rep.replica]
        if rec["st"] == ct.ASSIGNED and j["status"] == ct.RUNNING:
            ok, err = await self._command(ct.FragmentResult(
                rep.job_id, rep.fragment, rep.replica, pid, rep.ok,
                rep.output_hash if rep.ok else b"", len(output), rep.fuel_used,
                rep.peak_memory_bytes, rep.wall_ms,
                "" if rep.ok else f"{rep.error_kind}: {rep.error}"[:500],
                self._spot_draw(j, rep, rec) if rep.ok else b""))
            if not ok:
                return TaskReply(False, err[:500], "rejected")
            self.stats["results"] += 1
        elif rec["st"] == ct.R_DONE and rec["node"] == pid and rec["out"] == rep.output_hash:
            pass  # a result reported again (to a new manager): keep its bytes
        elif rec["st"] == ct.R_FAILED and rec["node"] == pid:
            return TaskReply(True, "", "known")
        else:
            return self.svc.refuse("task_result_refused", "not-assigned", pid,
                                   f"job {rep.job_id} fragment {rep.fragment} replica {rep.replica} "
                                   f"is {rec['st']} on {rec['node'] or 'no node'}")
        if rep.ok:
            self.outputs[(rep.job_id, rep.fragment, rep.replica)] = output
        entries = self.logs.setdefault(rep.job_id, {})
        entries[(rep.fragment, rep.replica)] = LogEntry(rep.fragment, rep.replica, pid, rep.stderr)
        self.wake()
        return TaskReply(True)

    def _check_result(self, pid: str, rep: ResultReport, output: bytes, j: Any) -> tuple[str, str] | None:
        from node.manager_checks import _peer_key, verify_ed25519

        where = f"job {rep.job_id} fragment {rep.fragment} replica {rep.replica}"
        if j is None:
            return "unknown-job", f"no job {rep.job_id}"
        if j["status"] == ct.CANCELLED:
            return "cancelled", f"{where}: the job was cancelled"
        if rep.fragment >= j["n"] or rep.replica >= len(j["frags"][rep.fragment]):
            return "no-replica", f"{where}: no such replica"
        rec = j["frags"][rep.fragment][rep.replica]
        if rec["node"] != pid:
            return "not-assigned", f"{where} is not assigned to the sender"
        if rep.module_hash != j["module"]:
            return "module-mismatch", f"{where}: not the committed module"
        if j["inputs"] and rep.input_hash != j["inputs"][rep.fragment]:
            return "input-mismatch", f"{where}: not the committed input"
        if not rep.ok and rep.output_hash != failure_digest(rep.error_kind, rep.error):
            return "bad-signature", f"{where}: the failure is not what was signed"
        key = _peer_key(pid)
        payload = result_digest_payload(rep.job_id, rep.fragment, rep.module_hash, rep.input_hash,
                                        rep.output_hash)
        if key is None or not verify_ed25519(key, payload, rep.signature):
            return "bad-signature", f"{where}: the signature does not verify"
        if rep.ok and hashlib.sha256(output).digest() != rep.output_hash:
            return "bad-output", f"{where}: the output does not hash to what was signed"
        if len(output) > j["limits"]["max_output_bytes"]:
            return "too-large", f"{where}: {len(output)} bytes of output, above the limit"
        return None

    async def on_cancel(self, pid: str, req: CancelRequest) -> TaskReply:
        if not self.active():
            return self._not_manager()
        st = self.svc.role.state
        j = ct.job(st, req.job_id)
        if j is None:
            return TaskReply(False, f"no job {req.job_id}", "unknown-job")
        if pid != j["owner"]:
            return self.svc.refuse("task_cancel_refused", "not-owner", pid,
                                   f"only the owner cancels job {req.job_id}")
        ok, err = await self._command(ct.CancelJob(req.job_id, pid, req.reason))
        if not ok:
            return TaskReply(False, err[:500], "rejected")
        nodes = {rep["node"] for _, _, rep in ct.replicas(st, req.job_id) if rep["st"] == ct.ASSIGNED}
        for node in sorted(nodes):
            self._spawn(self._tell_cancel, node, req.job_id)
        self.wake()
        return TaskReply(True)

    async def _tell_cancel(self, node: str, jid: str) -> None:
        try:
            await self.svc.request(node, CancelRequest(jid, "cancelled"), TaskReply)
        except RemoteProtocolError as exc:
            log.debug("cancel of %s not delivered to %s: %s", jid, node, exc, extra={"peer": node})

    def on_logs(self, pid: str, req: LogsRequest) -> LogsReply:
        if not self.active():
            lead = self.svc.manager_peer()
            return LogsReply(False, f"not the manager; manager is {lead or 'unknown'}")
        j = ct.job(self.svc.role.state, req.job_id)
        if j is None:
            return LogsReply(False, f"no job {req.job_id}")
        if pid != j["owner"] and pid != self.svc.me:
            return LogsReply(False, f"only the owner reads the logs of job {req.job_id}")
        entries = [e for _, e in sorted(self.logs.get(req.job_id, {}).items())]
        page = tuple(entries[req.offset:req.offset + 64])
        return LogsReply(True, "", page, req.offset + 64 < len(entries),
                         self.waiting.get(req.job_id, ""))

    # ------------------------------------------------------------------ 4. aggregate and close
    async def _finish(self, jid: str) -> None:
        st = self.svc.role.state
        j = ct.job(st, jid)
        if j is None or j["status"] != ct.RUNNING:
            return
        failed = [(f, r, rep) for f, r, rep in ct.replicas(st, jid) if rep["st"] == ct.R_FAILED]
        q, most = j.get("q", j["r"]), j.get("rmax", j["r"])
        if failed and q == j["r"] == most:  # unanimity and no spare replica: nothing can save it
            parts = [f"fragment {f} replica {r} on {rep['node']}: {rep['err']}" for f, r, rep in failed[:3]]
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            await self._fail(jid, f"{len(failed)} of {j['n'] * j['r']} replicas failed: "
                                  + "; ".join(parts) + more)
            return
        verdicts = ct.verdicts(st, j)
        lost = next((v for v in verdicts if v.state == ct.NO_QUORUM), None)
        if lost is not None:
            await self._fail(jid, lost.why)
            return
        short = [f for f, v in enumerate(verdicts) if v.state == ct.NEEDS_REPLICA]
        for f in short:  # outvoted or failed replicas, nothing left to run: one more, elsewhere
            ok, _ = await self._command(ct.AddReplica(jid, f))
            if ok:
                self.stats["replicas_added"] += 1
                log.info("job %s fragment %d: %s; one more replica", jid, f, verdicts[f].why,
                         extra={"job": jid})
        if short:
            self.wake()  # the next round places them
            return
        if ct.incomplete(st, j):
            return  # a revoked node's result (step 2 moves it), or replicas still to run
        outputs = self._outputs(jid, j, verdicts)
        if outputs is None:
            return  # step 2 collects the missing ones
        release = b""
        try:
            if j.get("dp") is not None:
                result = release = await trio.to_thread.run_sync(budget.release, j, outputs)
            else:
                result = await self._combine(jid, j, outputs)
        except PrivacyError as exc:
            await self._fail(jid, f"private release refused: {exc}")
            return
        except _CombineFailed as exc:
            if exc.final:
                await self._fail(jid, f"aggregation ({j['agg']}) failed: {exc}")
            return
        ok, _ = await self._command(ct.JobDone(jid, hashlib.sha256(result).digest(), len(result),
                                               release))
        if ok:
            self.results[jid] = result
            self.stats["done"] += 1

    async def _combine(self, jid: str, j: Any, outputs: list[bytes]) -> bytes:
        """The job's aggregation of ``outputs`` (fragment order): built in, or its reducer module
        run here in the workload engine under the job's limits, on the outputs framed as
        (4-byte little-endian length, bytes) records. Raises _CombineFailed (``final`` when
        the job must fail; not when the reducer could not be had from the owner yet)."""
        if j["agg"] != ct.REDUCER:
            try:
                return await trio.to_thread.run_sync(
                    functools.partial(aggregate, j["agg"], outputs, bin_width=j["bw"]))
            except (AggregationError, ValueError) as exc:
                raise _CombineFailed(str(exc), final=True) from None
        reducer = await self._reducer(jid, j)
        framed = b"".join(len(o).to_bytes(4, "little") + o for o in outputs)
        lim = j["limits"]
        # The fragment limits, but room for the whole result (the engine's largest output).
        limits = Limits(fuel=lim["fuel"], memory_bytes=min(MAX_MEMORY_BYTES, lim["memory_mib"] << 20),
                        wall_time_s=lim["wall_time_ms"] / 1000, max_output_bytes=MAX_OUTPUT_BYTES)
        outcome = await self.svc.engine.run(reducer, j["reducer"], framed, limits, Grants())
        if not outcome.ok:
            raise _CombineFailed(f"the reducer failed: {outcome.error}: {outcome.message}", final=True)
        return outcome.output

    async def _reducer(self, jid: str, j: Any) -> bytes:
        got = self.reducers.get(j["reducer"])
        if got is not None:
            return got
        try:
            reply, blob = await self.svc.request(j["owner"], FetchRequest(jid, 0, 0, False, True),
                                                 FetchReply, timeout_s=max(self.svc.timeout(), 30.0))
        except RemoteProtocolError as exc:
            raise _CombineFailed(f"the owner did not serve the reducer: {exc}", final=False) from None
        if not reply.ok:
            raise _CombineFailed(f"the owner refused the reducer: {reply.error}", final=False)
        if hashlib.sha256(blob).digest() != j["reducer"]:
            raise _CombineFailed("the owner's reducer does not match the committed hash", final=True)
        self.reducers[j["reducer"]] = blob
        while len(self.reducers) > 16:
            del self.reducers[next(iter(self.reducers))]
        return blob

    def _outputs(self, jid: str, j: Any, verdicts: list[Any] | None = None) -> list[bytes] | None:
        """Each fragment's agreed output, if held here (from a replica that voted for it)."""
        if verdicts is None:
            verdicts = ct.verdicts(self.svc.role.state, j)
        out = []
        for f, frag in enumerate(j["frags"]):
            if verdicts[f].state != ct.AGREED:
                return None
            got = next((self.outputs[(jid, f, r)] for r, rep in enumerate(frag)
                        if (jid, f, r) in self.outputs and rep["out"] == verdicts[f].output), None)
            if got is None:
                return None
            out.append(got)
        return out

    async def _fail(self, jid: str, reason: str) -> None:
        ok, _ = await self._command(ct.JobFailed(jid, reason[:500]))
        if ok:
            self.stats["failed"] += 1
            log.warning("job %s failed: %s", jid, reason, extra={"job": jid})

    # ------------------------------------------------------------------ 5. deliver
    async def _deliver(self, jid: str) -> None:
        st = self.svc.role.state
        j = ct.job(st, jid)
        if j is None or j["status"] not in ct.TERMINAL_JOB:
            return
        data = b""
        if j["status"] == ct.DONE:
            got = self.results.get(jid)
            if got is None and j.get("dp") is not None:
                got = j["release"]  # drawn once, committed: never drawn again
            if got is None:  # a new manager: rebuild it from the outputs collected again
                outputs = self._outputs(jid, j)
                if outputs is None:
                    return
                try:
                    got = await self._combine(jid, j, outputs)
                except _CombineFailed as exc:
                    log.error("job %s: the outputs no longer aggregate: %s", jid, exc)
                    return
                if hashlib.sha256(got).digest() != j["result"]:
                    log.error("job %s: the rebuilt result differs from the committed one", jid)
                    return
                self.results[jid] = got
            data = got
        try:
            reply, _ = await self.svc.request(
                j["owner"], DeliverRequest(jid, j["status"], j["reason"][:500], j["result"], len(data)),
                TaskReply, blob=data, timeout_s=max(self.svc.timeout(), 60.0))
            ok, err = reply.ok, reply.error
        except RemoteProtocolError as exc:
            ok, err = False, str(exc)
        if ok:
            self._delivered(jid)
            self.stats["delivered"] += 1
            await self._command(ct.JobDelivered(jid))  # a successor need not deliver it again
            return
        _, delay = self.deliver_next.get(jid, (0.0, DELIVER_BACKOFF_S[0]))
        self.deliver_next[jid] = (time.monotonic() + delay, min(DELIVER_BACKOFF_S[1], delay * 2))
        log.info("job %s not delivered to %s yet: %s", jid, j["owner"], err, extra={"job": jid})

    def _delivered(self, jid: str) -> None:
        self.delivered.add(jid)
        self.results.pop(jid, None)
        for key in [k for k in self.outputs if k[0] == jid]:
            del self.outputs[key]

    async def _drop(self, jid: str) -> None:
        ok, _ = await self._command(ct.DropJob(jid))
        if ok:
            self.delivered.discard(jid)
            self.logs.pop(jid, None)
            self.deliver_next.pop(jid, None)

    def status(self) -> dict[str, Any]:
        return {**self.stats, "active": self.active(), "tracked": len(self.track),
                "waiting": len(self.waiting)}
