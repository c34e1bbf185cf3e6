"""The owner's part of the task flow: submit, serve the input, receive the result (trio driver).

The owner is the client's node: ``enclave-swarm submit`` talks to it over the control socket.

- **Submit.** The spec is validated (node/tasks/spec.py), the module read and checked against
  its hash, the input read (a file, a directory for split mode ``files``, or a stored object
  rebuilt as ``get`` does) and split; each fragment must fit :data:`MAX_TASK_FRAGMENT_BYTES`.
  The manager commits the job (``submit-job``, with each fragment's SHA-256) and answers only
  once it is committed.
- **Serve.** The module and a fragment go only to the node that the committed state (as this
  node holds it) assigns the replica to; a view that lags the manager's is waited for, up to
  :data:`VIEW_WAIT_S`.
- **Receive.** The result comes from the manager (or a council member: our view may lag a
  term change) and is kept only if it hashes to what the manager says it committed; it is
  written to ``tasks/<job>.result`` in the data dir (0600). A failed or cancelled job is recorded
  with its reason: it is never reported as done.

What the owner holds (modules, fragments, results) is in memory and, for results, on disk: a
restarted owner loses the inputs of its unfinished jobs, whose replicas then fail to fetch them
(the job fails, naming it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from consensus import budgets
from consensus import tasks as ct
from node.tasks.findings import job_findings
from node.tasks.spec import JobSpec, SpecError, directory_files, load_spec, split_input, submit_command
from node.tasks.wire import (
    ALREADY_DELIVERED,
    MAX_MODULE_BYTES,
    MAX_TASK_FRAGMENT_BYTES,
    CancelRequest,
    DeliverRequest,
    FetchReply,
    FetchRequest,
    LogsReply,
    LogsRequest,
    SubmitRequest,
    TaskReply,
)
from overlay.errors import RemoteProtocolError

if TYPE_CHECKING:
    from node.tasks.service import TaskService

log = logging.getLogger("enclave_swarm.tasks")

VIEW_WAIT_S = 10.0
MANAGER_WAIT_S = 15.0
MAX_INPUT_BYTES = 4 * 1024 * 1024 * 1024
MAX_OWNED = 1024


class TaskError(Exception):
    """A request the owner refuses; ``errors`` lists spec problems as (path, why)."""

    def __init__(self, msg: str, errors: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(msg)
        self.errors = errors


@dataclasses.dataclass
class OwnedJob:
    job_id: str
    spec: JobSpec
    module: bytes
    fragments: list[bytes]
    submitted: float
    status: str = "submitting"
    reason: str = ""
    result_hash: bytes = b""
    result_path: Path | None = None
    result: bytes | None = None   # when there is no data dir
    served: int = 0
    reducer: bytes = b""


# Each node's owner side, by peer id, for the control commands below (they receive the agent).
_SIDES: dict[str, OwnerSide] = {}


class OwnerSide:
    def __init__(self, svc: TaskService) -> None:
        self.svc = svc
        self.agent = svc.agent
        self.jobs: dict[str, OwnedJob] = {}
        _SIDES[str(self.agent.peer_id)] = self

    # ------------------------------------------------------------------ submit
    async def submit(self, spec_path: str, input_path: str | None = None,
                     object_hex: str | None = None) -> str:
        """Validate, read, split and have the manager commit a job. Returns its id."""
        try:
            spec = load_spec(spec_path, check_files=False)
        except SpecError as exc:
            raise TaskError(str(exc), exc.errors) from None
        if input_path and object_hex:
            raise TaskError("give an input file or a stored object, not both")
        module = await trio.to_thread.run_sync(_read_module, spec.module.path, spec.module.sha256)
        reducer = b""
        if spec.aggregation.module is not None:
            m = spec.aggregation.module
            reducer = await trio.to_thread.run_sync(_read_module, m.path, m.sha256)
        fragments = await self._fragments(spec, input_path, object_hex)
        job_id = secrets.token_hex(8)
        cmd = submit_command(spec, job_id=job_id, owner=self.svc.me, fragments=fragments, now_ms=0)
        if len(self.jobs) >= MAX_OWNED:
            self._forget_finished()
        self.jobs[job_id] = OwnedJob(job_id, spec, module, fragments, time.time(), reducer=reducer)
        req = SubmitRequest(ct.TASK_REGISTRY.encode(cmd), spec.queue_timeout_s)
        try:
            reply = await self.ask_manager(req, TaskReply, timeout_s=30.0)
        except TaskError:
            if self._ended_meanwhile(job_id):
                return job_id
            self.jobs.pop(job_id, None)
            raise
        if not reply.ok:
            self.jobs.pop(job_id, None)
            raise TaskError(f"the manager refused the job: {reply.error}")
        log.info("job %s submitted: %d fragments x %d replicas", job_id, len(fragments),
                 spec.redundancy, extra={"job": job_id})
        job = self.jobs.get(job_id)
        if job is not None and job.status == "submitting":
            job.status = ct.QUEUED
        return job_id

    def _ended_meanwhile(self, job_id: str) -> bool:
        """Whether the job's end was delivered while its submission waited for the manager's
        answer: a slow manager's answer can come after the job ran (``make chaos``, seed 1 of
        slow-nodes: 3 s late, the manager held to 5 % of a CPU). A delivery is only taken for a
        job the committed state ended, so the job was committed, whatever the answer."""
        job = self.jobs.get(job_id)
        if job is None or job.status not in ct.TERMINAL_JOB:
            return False
        log.info("job %s ended before the manager's answer to its submission reached us",
                 job_id, extra={"job": job_id})
        return True

    async def _fragments(self, spec: JobSpec, input_path: str | None, object_hex: str | None) -> list[bytes]:
        if object_hex or (not input_path and spec.input.object_id):
            data = await self._object(object_hex or spec.input.object_id)
            if spec.split.mode == "files":
                raise TaskError("split mode 'files' needs a directory as input, not a stored object")
            frags = split_input(data, spec.split)
        else:
            path = Path(input_path or spec.input.path)
            if spec.split.mode == "files":
                if not path.is_dir():
                    raise TaskError(f"split mode 'files' needs a directory: {path} is not one")
                files = directory_files(path)
                if not files:
                    raise TaskError(f"{path} holds no files")
                frags = [await trio.to_thread.run_sync(_read_bounded, f, MAX_TASK_FRAGMENT_BYTES)
                         for f in files]
            else:
                data = await trio.to_thread.run_sync(_read_bounded, path, MAX_INPUT_BYTES)
                frags = split_input(data, spec.split)
        for i, f in enumerate(frags):
            if len(f) > MAX_TASK_FRAGMENT_BYTES:
                raise TaskError(f"fragment {i} has {len(f)} bytes, above the {MAX_TASK_FRAGMENT_BYTES} "
                                "a fragment may have: split into more fragments")
        if len(frags) > ct.MAX_REPLICAS_PER_JOB // max(1, spec.redundancy):
            raise TaskError(f"{len(frags)} fragments x {spec.redundancy} replicas is more than "
                            f"{ct.MAX_REPLICAS_PER_JOB}")
        return frags

    async def _object(self, object_hex: str) -> bytes:
        """A stored object, rebuilt from its holders as ``get`` does."""
        from node.shards.errors import ShardServiceError
        from node.shards.service import service_of

        try:
            oid = bytes.fromhex(object_hex)
            shards = service_of(self.agent)
        except (ValueError, KeyError):
            raise TaskError(f"cannot read object {object_hex!r}: bad id or no shard service") from None
        tmpdir = self.svc.data_path if self.svc.data_path is not None else Path(tempfile.gettempdir())
        fd, name = tempfile.mkstemp(prefix=".task-input-", dir=tmpdir)
        os.close(fd)
        try:
            await shards.get(oid, Path(name))
            return await trio.to_thread.run_sync(_read_bounded, Path(name), MAX_INPUT_BYTES)
        except ShardServiceError as exc:
            raise TaskError(str(exc)) from None
        finally:
            Path(name).unlink(missing_ok=True)

    async def ask_manager(self, msg: Any, reply_type: Any, *, timeout_s: float = 20.0) -> Any:
        """Send ``msg`` to the manager, following "not the manager" hints, for up to
        :data:`MANAGER_WAIT_S` while no manager is known."""
        deadline = time.monotonic() + MANAGER_WAIT_S
        hint: str | None = None
        last = "no manager known"
        while True:
            target = hint or self.svc.manager_peer()
            hint = None
            if target:
                try:
                    reply, _ = await self.svc.request(target, msg, reply_type, timeout_s=timeout_s)
                except RemoteProtocolError as exc:
                    last = f"manager {target} unreachable: {exc}"
                else:
                    if reply.ok or getattr(reply, "detail", "") != "not-manager":
                        return reply
                    last = f"{target} is not the manager"
                    named = reply.error.rpartition("manager is ")[2]
                    hint = named if named and named != "unknown" else None
            if time.monotonic() > deadline:
                raise TaskError(f"cannot reach the manager: {last}")
            await trio.sleep(0.2)

    # ------------------------------------------------------------------ serve
    async def on_fetch(self, pid: str, req: FetchRequest) -> tuple[FetchReply, bytes]:
        job = self.jobs.get(req.job_id)
        if job is None:
            self.agent.counters.inc("task_fetch_refused", "unknown-job")
            return FetchReply(False, f"no job {req.job_id} here"), b""
        if req.reducer:
            if not self.svc.may_direct(pid) or not job.reducer:
                self.agent.counters.inc("task_fetch_refused", "not-manager")
                return FetchReply(False, f"the reducer of job {req.job_id} goes to its manager only"), b""
            return FetchReply(True, "", len(job.reducer), 0), job.reducer
        if job.status in ct.TERMINAL_JOB:
            self.agent.counters.inc("task_fetch_refused", "ended")
            return FetchReply(False, f"{ALREADY_DELIVERED}: job {req.job_id} is {job.status} here"), b""
        if req.fragment >= len(job.fragments):
            self.agent.counters.inc("task_fetch_refused", "no-fragment")
            return FetchReply(False, f"job {req.job_id} has no fragment {req.fragment}"), b""
        why = await self._assigned(pid, req)
        if why:
            self.agent.counters.inc("task_fetch_refused", "not-assigned")
            log.warning("refused fragment %d of job %s to %s: %s", req.fragment, req.job_id, pid,
                        why, extra={"peer": pid, "job": req.job_id})
            return FetchReply(False, why), b""
        module = job.module if req.module else b""
        data = job.fragments[req.fragment]
        job.served += 1
        return FetchReply(True, "", len(module), len(data)), module + data

    async def _deliver_after_restart(self, pid: str, req: DeliverRequest, data: bytes) -> TaskReply:
        """The result of a job of ours that ended after this node restarted (a job's run lives
        in memory; found by ``make chaos``, links-clock-disk seed 9, docs/reliability.md: the
        manager retried the delivery for ever and ``task-result`` had nothing). Kept on disk
        under the same checks as any delivery: from the manager, committed as ended so, and
        hashing to the committed digest; ``task-result`` then finds it (:meth:`_kept_result`)."""
        j = ct.job(self.svc.view(), req.job_id)
        if j is None or j["owner"] != self.svc.me:
            return self.svc.refuse("task_deliver_refused", "unknown-job", pid, f"no job {req.job_id} here")
        if not self.svc.may_direct(pid):
            return self.svc.refuse("task_deliver_refused", "not-manager", pid,
                                   f"result of {req.job_id} from a node that is not the manager")
        if self._kept_result(req.job_id) is not None or req.status != ct.DONE:
            return TaskReply(True, "", "already delivered")
        why = await self._committed_end(req)
        if why:
            return self.svc.refuse("task_deliver_refused", "not-committed", pid, why)
        if hashlib.sha256(data).digest() != req.result_hash:
            return self.svc.refuse("task_deliver_refused", "bad-hash", pid,
                                   f"the result of {req.job_id} does not hash to the committed digest")
        if self.svc.data_path is None:
            return self.svc.refuse("task_deliver_refused", "unknown-job", pid, f"no job {req.job_id} here")
        await trio.to_thread.run_sync(_write_result, Path(self.svc.data_path), req.job_id, data)
        log.info("job %s done (delivered after this node restarted)", req.job_id, extra={"job": req.job_id})
        return TaskReply(True)

    async def _committed_end(self, req: DeliverRequest) -> str:
        """"" when our view of the committed state (waiting up to VIEW_WAIT_S for a lagging
        view) shows ``req.job_id`` ended with ``req.status`` and, for a done job, the result
        digest ``req.result_hash``; else why not."""
        deadline = time.monotonic() + VIEW_WAIT_S
        while True:
            j = ct.job(self.svc.view(), req.job_id)
            if j is not None and j["status"] in ct.TERMINAL_JOB:
                if j["status"] != req.status:
                    return f"job {req.job_id} is {j['status']} in the committed state, not {req.status}"
                if req.status == ct.DONE and not hmac.compare_digest(j["result"], req.result_hash):
                    return f"the result digest of {req.job_id} is not the committed one"
                return ""
            if time.monotonic() > deadline:
                return f"job {req.job_id} has not ended in the committed state"
            await trio.sleep(0.05)

    async def _assigned(self, pid: str, req: FetchRequest) -> str:
        """"" when our view of the committed state assigns the replica to ``pid``, or the job
        is done (not a private one) and ``pid`` is the committed manager, which runs a fragment
        whose agreed output was lost with its holder before the result reached us
        (node/tasks/duty.py, recompute); waiting up to VIEW_WAIT_S for a lagging view. Else why
        not."""
        deadline = time.monotonic() + VIEW_WAIT_S
        while True:
            view = self.svc.view()
            j = ct.job(view, req.job_id)
            if (j is not None and req.fragment < j["n"]
                    and req.replica < len(j["frags"][req.fragment])):
                rep = j["frags"][req.fragment][req.replica]
                if rep["st"] == ct.ASSIGNED and rep["node"] == pid:
                    return ""
                recovery = j["status"] == ct.DONE and j.get("dp") is None and rep["st"] == ct.R_DONE
                if recovery and pid == view.manager_id:
                    return ""
                # A council member asking for a done job's fragment may be the manager of a term
                # our view has not reached yet: wait for it.
                if j["status"] in ct.TERMINAL_JOB and not (recovery and pid in view.council):
                    return f"job {req.job_id} is {j['status']}"
            if time.monotonic() > deadline:
                return (f"fragment {req.fragment} replica {req.replica} of job {req.job_id} is not "
                        f"assigned to {pid} in the committed state")
            await trio.sleep(0.05)

    async def on_deliver(self, pid: str, req: DeliverRequest, data: bytes) -> TaskReply:
        job = self.jobs.get(req.job_id)
        if job is None:
            return await self._deliver_after_restart(pid, req, data)
        if not self.svc.may_direct(pid):
            return self.svc.refuse("task_deliver_refused", "not-manager", pid,
                                   f"result of {req.job_id} from a node that is not the manager")
        if job.status in ct.TERMINAL_JOB:
            return TaskReply(True, "", "already delivered")
        # Adopt nothing on the sender's word: the committed state must say the job ended so,
        # and a result must hash to the digest JobDone committed (a council member that is
        # not the manager, or a compromised manager, cannot hand us another result).
        why = await self._committed_end(req)
        if why:
            return self.svc.refuse("task_deliver_refused", "not-committed", pid, why)
        if req.status == ct.DONE:
            if hashlib.sha256(data).digest() != req.result_hash:
                return self.svc.refuse("task_deliver_refused", "bad-hash", pid,
                                       f"the result of {req.job_id} does not hash to the committed digest")
            job.result_hash = req.result_hash
            if self.svc.data_path is not None:
                job.result_path = _write_result(self.svc.data_path, req.job_id, data)
            else:
                job.result = data
        job.status, job.reason = req.status, req.reason
        job.fragments, job.module, job.reducer = [], b"", b""   # the input is no longer needed
        log.info("job %s %s%s", req.job_id, req.status, f": {req.reason}" if req.reason else "",
                 extra={"job": req.job_id})
        return TaskReply(True)

    def _forget_finished(self) -> None:
        done = sorted((j.submitted, k) for k, j in self.jobs.items() if j.status in ct.TERMINAL_JOB)
        for _, k in done[: max(1, len(done) // 2)]:
            del self.jobs[k]

    # ------------------------------------------------------------------ control
    def describe(self, job_id: str) -> dict[str, Any] | None:
        st = self.svc.view()
        j = ct.job(st, job_id)
        own = self.jobs.get(job_id)
        if j is None and own is None:
            return None
        status = own.status if own is not None and own.status in ct.TERMINAL_JOB else (
            j["status"] if j is not None else own.status if own is not None else "unknown")
        reason = (own.reason if own is not None and own.status in ct.TERMINAL_JOB else "") or (
            j["reason"] if j is not None else "")
        out: dict[str, Any] = {
            "job_id": job_id, "status": status, "reason": reason,
            "name": own.spec.name if own else (j["name"] if j else ""),
            "fragments": j["n"] if j else len(own.fragments) if own else 0,
            "redundancy": j["r"] if j else own.spec.redundancy if own else 1,
            "module": (j["module"].hex() if j else own.spec.module.sha256 if own else ""),
            "aggregation": j["agg"] if j else own.spec.aggregation.kind if own else "",
            "result_hash": (own.result_hash.hex() if own and own.result_hash
                            else j["result"].hex() if j else ""),
            "result_bytes": j["result_bytes"] if j else 0,
            "waiting": "", "replicas": [],
        }
        if j is not None:
            out["quorum"], out["max_replicas"] = j.get("q", j["r"]), j.get("rmax", j["r"])
            out["findings"] = [{"fragment": f, "replica": r, "node": node, "output_hash": o.hex()}
                               for f, r, node, o in j.get("findings", [])]
            if j.get("adapt") is not None:  # adaptive replication: how each fragment ran
                modes = list(j["modes"])
                out["adaptive"] = {"spot_check": j["adapt"] / 1_000_000,
                                   "modes": {m or "unplaced": modes.count(m) for m in sorted(set(modes))}}
        out["integrity"] = job_findings(st, job_id)  # every kind (docs/tasks.md)
        dp = j.get("dp") if j is not None else None
        if dp is not None:
            out["privacy"] = {"dataset": dp["ds"], "kind": dp["kind"],
                              "epsilon_charged": dp["eps"] * budgets.EPS_UNIT}
        elif own is not None and own.spec.privacy is not None:
            q = own.spec.privacy
            out["privacy"] = {"dataset": q.dataset, "kind": q.kind, "epsilon_charged": None}
        if j is not None:
            done = failed = 0
            for f, r, rep in ct.replicas(st, job_id):
                done += rep["st"] == ct.R_DONE
                failed += rep["st"] == ct.R_FAILED
                out["replicas"].append({
                    "fragment": f, "replica": r, "state": rep["st"], "node": rep["node"],
                    "attempts": rep["attempts"], "tried": list(rep["tried"]),
                    "profile": {"fuel": rep["prof"][0], "peak_memory_bytes": rep["prof"][1],
                                "wall_ms": rep["prof"][2]},
                    "error": rep["err"], "output_hash": rep["out"].hex()})
            out["done"], out["failed"] = done, failed
        else:
            out["done"] = out["fragments"] * out["redundancy"] if status == ct.DONE else 0
            out["failed"] = 0
        return out

    def list(self) -> list[dict[str, Any]]:
        st = self.svc.view()
        ids = set(self.jobs) | {jid for jid, j in ct.jobs(st).items() if j["owner"] == self.svc.me}
        rows = []
        for jid in ids:
            d = self.describe(jid)
            if d is not None:
                d.pop("replicas")
                rows.append(d)
        order = {k: j.submitted for k, j in self.jobs.items()}
        return sorted(rows, key=lambda d: (order.get(d["job_id"], 0.0), d["job_id"]))

    async def logs(self, job_id: str, *, entries: bool = True) -> dict[str, Any]:
        """The job's fragments' stderr, as the manager holds it, and why it waits (if it does).
        ``entries=False``: only why it waits."""
        got: list[dict[str, Any]] = []
        offset, waiting = (0 if entries else 2**31), ""
        while True:
            reply = await self.ask_manager(LogsRequest(job_id, offset), LogsReply)
            if not reply.ok:
                raise TaskError(reply.error)
            waiting = reply.waiting
            got += [{"fragment": e.fragment, "replica": e.replica, "node": e.node,
                         "stderr": e.stderr.decode(errors="replace")} for e in reply.entries]
            offset += len(reply.entries)
            if not reply.more or not reply.entries:
                break
        d = self.describe(job_id)
        return {"status": d["status"] if d else "unknown", "waiting": waiting, "logs": got}

    async def cancel(self, job_id: str, reason: str) -> None:
        reply = await self.ask_manager(CancelRequest(job_id, reason or "cancelled by its owner"), TaskReply)
        if not reply.ok:
            raise TaskError(reply.error)

    def result(self, job_id: str) -> tuple[str, bytes | Path | None]:
        """(status, the result's bytes or file) of one of our jobs."""
        own = self.jobs.get(job_id)
        if own is None:
            d = self.describe(job_id)
            status = d["status"] if d else "unknown"
            return status, (self._kept_result(job_id) if status == ct.DONE else None)
        return own.status, (own.result_path or own.result)

    def _kept_result(self, job_id: str) -> Path | None:
        """The file of a result delivered before this node restarted (the jobs of a run live
        in memory, their delivered results on disk: found by ``make chaos``, seed 9 of
        links-clock-disk, docs/reliability.md). The caller checks it against the committed
        digest (:meth:`committed_result_hash`) before handing it out."""
        if self.svc.data_path is None or not job_id or any(c not in "0123456789abcdef" for c in job_id):
            return None
        path = Path(self.svc.data_path) / "tasks" / f"{job_id}.result"
        return path if path.is_file() else None

    def committed_result_hash(self, job_id: str) -> bytes | None:
        """The result digest the committed ``JobDone`` holds (None if not done/unknown)."""
        j = ct.job(self.svc.view(), job_id)
        digest = j.get("result") if j is not None else None
        return bytes(digest) if digest else None

    def status(self) -> dict[str, Any]:
        by: dict[str, int] = {}
        for j in self.jobs.values():
            by[j.status] = by.get(j.status, 0) + 1
        return {"jobs": by}


def _read_module(path: str, sha256_hex: str) -> bytes:
    data = _read_bounded(Path(path), MAX_MODULE_BYTES)
    if hashlib.sha256(data).hexdigest() != sha256_hex:
        raise TaskError(f"module {path} does not match its sha256 in the spec")
    return data


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise TaskError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise TaskError(f"{path} is larger than {limit} bytes")
    return data


def _write_result(root: Path, job_id: str, data: bytes) -> Path:
    d = root / "tasks"
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{job_id}.result"
    tmp = d / f".{job_id}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- control commands


def _owner(agent: Any) -> OwnerSide:
    return _SIDES[str(agent.peer_id)]


def _fail(exc: Exception) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "error": str(exc)}
    if isinstance(exc, TaskError) and exc.errors:
        out["errors"] = [list(e) for e in exc.errors]
    return out


async def _cmd_submit(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    spec, inp, obj = req.get("spec"), req.get("input"), req.get("object")
    if not isinstance(spec, str) or not all(v is None or isinstance(v, str) for v in (inp, obj)):
        return {"ok": False, "error": "task-submit needs spec (a path), input or object"}
    try:
        return {"ok": True, "job_id": await _owner(agent).submit(spec, inp, obj)}
    except (TaskError, ValueError) as exc:
        return _fail(exc)


def _job_arg(req: dict[str, Any]) -> str:
    jid = req.get("job_id")
    if not isinstance(jid, str) or not jid or len(jid) > 64:
        raise TaskError("job_id: expected a job id")
    return jid


async def _cmd_list(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "jobs": _owner(agent).list()}


async def _cmd_describe(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        jid = _job_arg(req)
    except TaskError as exc:
        return _fail(exc)
    d = _owner(agent).describe(jid)
    if d is None:
        return {"ok": False, "error": f"no job {jid} known here"}
    if d["status"] in ct.LIVE_JOB:
        with trio.move_on_after(2.0):
            with contextlib.suppress(TaskError):
                d["waiting"] = (await _owner(agent).logs(jid, entries=False))["waiting"]
    return {"ok": True, "job": d}


async def _cmd_logs(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, **(await _owner(agent).logs(_job_arg(req)))}
    except TaskError as exc:
        return _fail(exc)


async def _cmd_cancel(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        reason = req.get("reason") or ""
        await _owner(agent).cancel(_job_arg(req), str(reason)[:400])
        return {"ok": True}
    except TaskError as exc:
        return _fail(exc)


async def _cmd_result(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        jid = _job_arg(req)
    except TaskError as exc:
        return _fail(exc)
    out = req.get("out")
    if not isinstance(out, str) or not os.path.isabs(out):
        return {"ok": False, "error": "out: expected an absolute path"}
    owner = _owner(agent)
    status, res = owner.result(jid)
    # The committed state may say done before the manager's delivery reaches us (``--wait``
    # follows the committed status): wait for it, bounded, rather than report no result.
    with trio.move_on_after(RESULT_DELIVERY_WAIT_S):
        while status not in ct.TERMINAL_JOB and (owner.describe(jid) or {}).get("status") == ct.DONE:
            await trio.sleep(0.1)
            status, res = owner.result(jid)
    if status != ct.DONE or res is None:
        return {"ok": False, "status": status, "error": f"job {jid} is {status}, it has no result"}
    data = res if isinstance(res, bytes) else await trio.to_thread.run_sync(Path(res).read_bytes)
    expected = owner.committed_result_hash(jid)
    if expected is not None and not hmac.compare_digest(hashlib.sha256(data).digest(), expected):
        return {"ok": False, "status": status,
                "error": f"the result kept for job {jid} does not hash to the committed digest"}
    target = Path(out)
    if not target.parent.is_dir():
        return {"ok": False, "error": f"directory {target.parent} does not exist"}
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    await trio.to_thread.run_sync(tmp.write_bytes, data)
    tmp.replace(target)
    return {"ok": True, "status": status, "bytes": len(data)}


RESULT_DELIVERY_WAIT_S = 60.0  # a done job's result on its way from the manager (retried there)


def register_control_commands() -> None:
    from node.control import register_command

    register_command("task-submit", _cmd_submit)
    register_command("task-list", _cmd_list)
    register_command("task-describe", _cmd_describe)
    register_command("task-logs", _cmd_logs)
    register_command("task-cancel", _cmd_cancel)
    register_command("task-result", _cmd_result)
    register_command("budget-show", _cmd_budget_show)
    register_command("budget-set", _cmd_budget_set)


async def _cmd_budget_show(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    from node.tasks import budget

    name = req.get("dataset")
    if name is not None and not isinstance(name, str):
        return {"ok": False, "error": "budget-show: dataset is a string"}
    rows = budget.show(_owner(agent).svc.view(), name)
    if name and not rows:
        return {"ok": False, "error": f"data set {name} has no privacy budget"}
    return {"ok": True, "budgets": rows}


async def _cmd_budget_set(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    from node.tasks import budget

    name, eps, delta = req.get("dataset"), req.get("epsilon"), req.get("delta", 0.0)
    if not (isinstance(name, str) and isinstance(eps, (int, float)) and isinstance(delta, (int, float))
            and not isinstance(eps, bool) and not isinstance(delta, bool)):
        return {"ok": False, "error": "budget-set needs dataset (a string), epsilon and delta (numbers)"}
    try:
        await budget.set_budget(_owner(agent).svc, name, float(eps), float(delta))
    except (TaskError, budget.BudgetError) as exc:
        return _fail(exc)
    return {"ok": True}
