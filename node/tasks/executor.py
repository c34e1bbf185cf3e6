"""The agent's part of the task flow: run assigned replicas, sign, report (trio driver).

Rules
-----
- An assignment is taken only from the manager this node knows, or a council member of the
  state it holds (its view may lag a term change): anyone else is refused and counted
  (``task_refused{not-manager}``). The same assignment again is a probe: the answer says
  ``running`` or ``finished`` (and the kept result is reported again, to whoever asks now).
  A probe for a replica of a job that has ended, whose output is not kept here (this node
  restarted), is refused (``task_refused{ended}``): the manager then runs that fragment itself.
- The module and the fragment come from the job's owner, which serves them only to the node
  the committed state assigns. Both are checked against the hashes in the assignment (the
  committed ones) before a byte runs: a mismatch is a failed result naming it.
- The workload engine enforces the limits and can always stop a runaway (a worker process is
  killed). Each result, success or failure, is signed with the node's identity key over
  ``result_digest_payload(job, fragment, module, input, output)`` (a failure's "output" is
  ``failure_digest`` of its error) and reported to the manager with its resource profile and
  bounded stderr; the output follows as chunks.
- Finished results are kept :data:`KEEP_RESULTS_S` (at most
  :data:`MAX_KEPT_BYTES` of outputs), so that a new manager can collect them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from consensus import tasks as ct
from node.tasks.wire import (
    ALREADY_DELIVERED,
    MAX_STDERR_BYTES,
    AssignRequest,
    CancelRequest,
    FetchReply,
    FetchRequest,
    ResultReport,
    TaskReply,
    failure_digest,
)
from node.workload import Grants, Limits, result_digest_payload
from overlay.errors import RemoteProtocolError

if TYPE_CHECKING:
    from node.tasks.service import TaskService

log = logging.getLogger("enclave_swarm.tasks")

KEEP_RESULTS_S = 600.0     # a finished result is kept this long for a manager to collect
MAX_KEPT_BYTES = 1024 * 1024 * 1024
MAX_RUNS = 4096
FETCH_ATTEMPTS = 5
REPORT_FOR_S = 120.0


@dataclasses.dataclass
class _Run:
    """One replica on this node. The times are ``time.monotonic()``: accepted (``started``),
    module and fragment in hand and checked (``fetched``), run and signed (``finished``), and
    first taken by a manager (``reported``); ``python -m bench tasks`` reads them to say where
    a job's time goes."""

    req: AssignRequest
    scope: trio.CancelScope
    started: float
    report: ResultReport | None = None
    output: bytes = b""
    fetched: float | None = None
    finished: float | None = None
    reported_to: str = ""
    reported: float | None = None


class Executor:
    def __init__(self, svc: TaskService) -> None:
        self.svc = svc
        self.agent = svc.agent
        self.nursery: trio.Nursery | None = None
        self.runs: dict[tuple[str, int, int], _Run] = {}
        self.stats = {"accepted": 0, "succeeded": 0, "failed": 0, "cancelled": 0}

    # ------------------------------------------------------------------ requests
    def on_assign(self, pid: str, req: AssignRequest) -> TaskReply:
        if not self.svc.may_direct(pid):
            return self.svc.refuse("task_refused", "not-manager", pid,
                                   f"assignment of {req.job_id} from a node that is not the manager")
        key = (req.job_id, req.fragment, req.replica)
        run = self.runs.get(key)
        ended = self._ended(req.job_id)
        if run is not None and (run.req.module_hash, run.req.input_hash) == (req.module_hash, req.input_hash):
            if run.finished is None:
                return TaskReply(True, "", "running")
            if not ended or (run.report is not None and run.report.ok):
                self._spawn(self._report, key, pid)
                return TaskReply(True, "", "finished")
            del self.runs[key]  # a run of an ended job's fragment that failed: nothing to report
        if ended:
            # A probe for the output of an ended job that this node no longer holds (it
            # restarted, or forgot it): running it again is not ours to do, the owner serves
            # an ended job's fragments to its manager alone (node/tasks/duty.py, recompute).
            return self.svc.refuse("task_refused", "ended", pid,
                                   f"job {req.job_id} has ended and its output is not kept here")
        running = sum(1 for r in self.runs.values() if r.finished is None)
        if running >= 4 * self.svc.engine.config.slots or len(self.runs) >= MAX_RUNS:
            return self.svc.refuse("task_refused", "busy", pid,
                                   f"{running} fragments running or queued here")
        if req.memory_mib * 1024 * 1024 < 65536:
            return self.svc.refuse("task_refused", "limits", pid, "memory limit below one wasm page")
        if self.nursery is None:
            return TaskReply(False, "the task service is not running", "")
        self.runs[key] = _Run(req, trio.CancelScope(), time.monotonic())
        self.stats["accepted"] += 1
        self._spawn(self._execute, key)
        return TaskReply(True, "", "accepted")

    def _ended(self, job_id: str) -> bool:
        j = ct.job(self.svc.view(), job_id)
        return j is not None and j["status"] in ct.TERMINAL_JOB

    def on_cancel(self, pid: str, req: CancelRequest) -> bool:
        """The manager cancels a job: stop and forget its replicas here. True if it directs us:
        the manager we know, or a council member once our committed view has the job ended (a
        council member that is not the manager cannot stop a running job)."""
        if not self.svc.may_direct(pid):
            return False
        if pid != self.svc.manager_peer() and pid != self.svc.view().manager_id:
            j = ct.job(self.svc.view(), req.job_id)
            if j is not None and j["status"] not in ct.TERMINAL_JOB:
                self.svc.refuse("task_refused", "not-manager", pid,
                                f"cancel of running job {req.job_id} from a council member")
                return False
        for key in [k for k in self.runs if k[0] == req.job_id]:
            run = self.runs.pop(key)
            if run.finished is None:
                run.scope.cancel()
                self.stats["cancelled"] += 1
        return True

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(fn, *args)

    # ------------------------------------------------------------------ running
    async def _execute(self, key: tuple[str, int, int]) -> None:
        run = self.runs.get(key)
        if run is None:
            return
        req = run.req
        with run.scope:
            try:
                module, data = await self.fetch(req)
            except Unavailable as exc:
                self._finish(key, run, _failure(req, "input", str(exc), self.agent), b"")
            else:
                run.fetched = time.monotonic()
                outcome = await self.svc.engine.run(module, req.module_hash, data, limits_of(req), Grants())
                if outcome.ok:
                    report = _signed(self.agent, req, ok=True, error_kind="", error="",
                                     output_hash=outcome.profile.output_sha256,
                                     output=outcome.output, outcome=outcome)
                    self._finish(key, run, report, outcome.output)
                else:
                    kind = str(outcome.error)
                    msg = outcome.message or kind
                    self._finish(key, run, _signed(self.agent, req, ok=False, error_kind=kind,
                                                   error=msg[:500], output_hash=b"", output=b"",
                                                   outcome=outcome), b"")
        if run.scope.cancelled_caught or self.runs.get(key) is not run:
            return
        await self._report(key, "")

    def _finish(self, key: tuple[str, int, int], run: _Run, report: ResultReport, output: bytes) -> None:
        run.report, run.output, run.finished = report, output, time.monotonic()
        self.stats["succeeded" if report.ok else "failed"] += 1
        if run.fetched is not None:  # it ran (a fragment whose inputs never came did not)
            self.agent.timings.observe("fragment_run", "run", run.finished - run.fetched,
                                       "succeeded" if report.ok else "failed")
        log.info("job %s fragment %d replica %d: %s", key[0], key[1], key[2],
                 "ok" if report.ok else f"{report.error_kind}: {report.error}",
                 extra={"job": key[0]})

    async def fetch(self, req: AssignRequest) -> tuple[bytes, bytes]:
        """The module and the fragment from the owner, checked against the assignment's hashes.
        The owner answers only once its view shows us assigned (or, for a done job whose output
        is lost, us as the manager: node/tasks/duty.py): retried a few times. Raises
        :class:`Unavailable`."""
        last = ""
        for attempt in range(FETCH_ATTEMPTS):
            t0 = time.monotonic()
            try:
                reply, blob = await self.svc.request(
                    req.owner, FetchRequest(req.job_id, req.fragment, req.replica, True), FetchReply,
                    timeout_s=max(self.svc.timeout(), 30.0))
            except RemoteProtocolError as exc:
                last = f"owner {req.owner} unreachable: {exc}"
            else:
                if reply.ok:
                    module, data = blob[:reply.module_bytes], blob[reply.module_bytes:]
                    meter = getattr(self.agent, "transfer_meter", None)
                    if meter is not None and req.owner != self.svc.me:
                        meter.observe(req.owner, len(blob), time.monotonic() - t0)
                    if hashlib.sha256(module).digest() != req.module_hash:
                        raise Unavailable("the owner's module does not match the committed hash")
                    if hashlib.sha256(data).digest() != req.input_hash:
                        raise Unavailable("the owner's fragment does not match the committed hash")
                    return module, data
                last = f"owner {req.owner} refused: {reply.error}"
                if reply.error.startswith(ALREADY_DELIVERED):
                    raise Unavailable(last, delivered=True)
            await trio.sleep(min(8.0, 0.25 * 2 ** attempt))
        raise Unavailable(last)

    async def _report(self, key: tuple[str, int, int], to: str) -> None:
        """Report a kept result to ``to`` (or the manager we know), retrying while no manager
        takes it, for at most :data:`REPORT_FOR_S` (the manager's probes ask again later)."""
        run = self.runs.get(key)
        if run is None or run.report is None:
            return
        deadline = time.monotonic() + REPORT_FOR_S
        delay = 0.1
        while time.monotonic() < deadline:
            target = to or self.svc.manager_peer()
            to = ""
            if target:
                try:
                    reply, _ = await self.svc.request(target, run.report, TaskReply, blob=run.output,
                                                      timeout_s=max(self.svc.timeout(), 30.0))
                except RemoteProtocolError as exc:
                    log.debug("result of %s not reported to %s: %s", key, target, exc, extra={"peer": target})
                else:
                    if reply.ok:
                        run.reported_to = target
                        if run.reported is None:
                            run.reported = time.monotonic()
                        return
                    if reply.detail not in ("not-manager", "busy"):
                        log.warning("result of job %s fragment %d refused by %s: %s", key[0],
                                    key[1], target, reply.error, extra={"job": key[0], "peer": target})
                        return
            await trio.sleep(delay)
            delay = min(2.0, delay * 2)

    async def run(self) -> None:
        """Forget finished results after KEEP_RESULTS_S, and beyond MAX_KEPT_BYTES (oldest first)."""

        while True:
            await trio.sleep(5.0)
            now = time.monotonic()
            done = sorted((r.finished, k) for k, r in self.runs.items() if r.finished is not None)
            kept = sum(len(self.runs[k].output) for _, k in done)
            for finished, k in done:
                if now - finished > KEEP_RESULTS_S or kept > MAX_KEPT_BYTES:
                    kept -= len(self.runs[k].output)
                    del self.runs[k]

    def status(self) -> dict[str, Any]:
        return {**self.stats, "running": sum(1 for r in self.runs.values() if r.finished is None),
                "kept": sum(1 for r in self.runs.values() if r.finished is not None),
                "engine": dataclasses.asdict(self.svc.engine.statistics())}


class Unavailable(Exception):
    """The module or the fragment could not be had from the owner, or did not match;
    ``delivered``: the owner holds the job's end already."""

    def __init__(self, msg: str, *, delivered: bool = False) -> None:
        super().__init__(msg)
        self.delivered = delivered


def limits_of(req: AssignRequest) -> Limits:
    """The workload engine's limits for an assignment (the job's committed limits)."""
    return Limits(fuel=req.fuel, memory_bytes=req.memory_mib * 1024 * 1024,
                  wall_time_s=req.wall_time_ms / 1000.0, max_output_bytes=req.max_output_bytes,
                  max_stderr_bytes=MAX_STDERR_BYTES)


def _signed(agent: Any, req: AssignRequest, *, ok: bool, error_kind: str, error: str,
            output_hash: bytes, output: bytes, outcome: Any) -> ResultReport:
    digest = output_hash if ok else failure_digest(error_kind, error)
    payload = result_digest_payload(req.job_id, req.fragment, req.module_hash, req.input_hash, digest)
    p = outcome.profile if outcome is not None else None
    return ResultReport(
        job_id=req.job_id, fragment=req.fragment, replica=req.replica, ok=ok,
        error_kind=error_kind[:32], error=error[:500], module_hash=req.module_hash,
        input_hash=req.input_hash, output_hash=digest, output_bytes=len(output),
        fuel_used=p.fuel_used if p else 0, peak_memory_bytes=p.memory_bytes if p else 0,
        wall_ms=round(p.wall_s * 1000) if p else 0,
        stderr=(outcome.stderr[:MAX_STDERR_BYTES] if outcome is not None else b""),
        signature=agent._identity.sign(payload))


def _failure(req: AssignRequest, kind: str, error: str, agent: Any) -> ResultReport:
    return _signed(agent, req, ok=False, error_kind=kind, error=error[:500] or kind,
                   output_hash=b"", output=b"", outcome=None)

