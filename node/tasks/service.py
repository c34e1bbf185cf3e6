"""The task flow on a real node: one protocol, three duties (trio driver).

Theory of operation
-------------------
Every node plays up to three parts in a job, each in its own module:

- **owner** (node/tasks/owner.py): the client's node. It validates the spec, reads and splits
  the input, keeps the module and the fragments, asks the manager to commit the job, serves
  each fragment to the agent the committed state assigns it to, and receives the result;
- **manager** (node/tasks/duty.py): whichever node leads the council. It commits the job,
  schedules its replicas (consensus/scheduler.py over the committed state, the gossiped offers
  and measurements), dispatches them, probes the agents, reassigns replicas whose agent died,
  was revoked, timed out or refused, checks and commits results, aggregates and delivers;
- **agent** (node/tasks/executor.py): every node. It runs the replicas it is assigned in the
  workload engine (node/workload/), signs each result and reports it.

Jobs and their assignments live in the replicated state (consensus/tasks.py), so a new manager
carries on from the committed state: it probes every assigned replica again, and agents hand
their kept results over again. Bytes (modules, fragments, outputs, results) never enter the
state: the owner keeps the input, agents keep their outputs for ``executor.KEEP_RESULTS_S``, and the
manager keeps what it collected.

All of it rides on ``/enclave-swarm/task/1.0.0`` (node/tasks/wire.py): one request and one reply
per stream, bulk bytes as bounded chunks. A request to ourselves (the owner may be the manager,
the manager an agent) is served in-process by the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from consensus import tasks as ct
from consensus.state import SwarmState
from node.tasks import budget
from node.tasks.wire import (
    MAX_OUTPUT_BYTES,
    MAX_RESULT_BYTES,
    TASK_PROTOCOL,
    TASK_REQUESTS,
    AssignRequest,
    BudgetRequest,
    CancelRequest,
    DeliverRequest,
    FetchReply,
    FetchRequest,
    LogsRequest,
    ResultReport,
    SubmitRequest,
    TaskReply,
    read_blob,
    write_blob,
)
from node.workload import EngineConfig, WorkloadEngine
from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, close_stream, read_message, reset_stream, write_message

log = logging.getLogger("enclave_swarm.tasks")



class TaskService:
    """The task flow of one node (see the module docstring). ``attach`` builds and installs it."""

    def __init__(self, agent: Any, data_path: Path | None, *, slots: int | None = None,
                 probe_s: float | None = None) -> None:
        from node.tasks.duty import ManagerDuty
        from node.tasks.executor import Executor
        from node.tasks.findings import FindingsService
        from node.tasks.owner import OwnerSide
        from node.tasks.verify import DecisionCheck

        self.agent = agent
        self.data_path = Path(data_path) if data_path is not None else None
        profile = getattr(agent.config, "profile", "lan")
        self.probe_s = probe_s if probe_s is not None else (0.5 if profile == "local_test" else 2.0)
        self.engine = WorkloadEngine(EngineConfig(slots=slots or _slots(agent)))
        self.owner = OwnerSide(self)
        self.executor = Executor(self)
        self.duty = ManagerDuty(self)
        self.check = DecisionCheck(self)
        self.findings = FindingsService(self)

    # ------------------------------------------------------------------ views
    @property
    def me(self) -> str:
        return str(self.agent.peer_id)

    @property
    def role(self) -> Any:
        from node.manager import role_of

        try:
            return role_of(self.agent)
        except LookupError:
            return None

    def view(self) -> SwarmState:
        """The freshest committed state known here."""
        role = self.role
        return role.view()[0] if role is not None else SwarmState()

    def manager_peer(self) -> str | None:
        role = self.role
        if role is None:
            return None
        if role.is_leader():
            return self.me
        return role.leader_peer() or (self.view().manager_id or None)

    def may_direct(self, pid: str) -> bool:
        """May ``pid`` direct task work here (assign, cancel, deliver)? The manager we know, or a
        council member of the state we hold (our view may lag a term change)."""
        st = self.view()
        return pid == self.manager_peer() or pid == st.manager_id or pid in st.council

    def timeout(self) -> float:
        return float(self.agent.config.network.request_timeout_s)

    # ------------------------------------------------------------------ transport
    async def request(self, pid: str, msg: Any, reply_type: Any, *, blob: bytes = b"",
                      timeout_s: float | None = None) -> tuple[Any, bytes]:
        """Send ``msg`` (and ``blob`` after it) to ``pid`` and read its reply (and the reply's
        bytes, for a fetch). Served in-process when ``pid`` is this node. Raises
        RemoteProtocolError (reason ``timeout`` when the exchange ran out of time)."""
        timeout = timeout_s or self.timeout()
        if pid == self.me:
            with trio.fail_after(timeout):
                return await self.serve(pid, msg, blob)
        try:
            with trio.fail_after(timeout):
                stream = await self.agent._open_stream(ID.from_base58(pid), TASK_PROTOCOL)
                try:
                    await write_message(stream, msg, timeout_s=timeout)
                    if blob:
                        await write_blob(stream, blob, timeout_s=timeout)
                    reader = FrameReader(stream)
                    reply = await read_message(reader, reply_type, timeout_s=timeout)
                    data = b""
                    if isinstance(reply, FetchReply) and reply.ok:
                        began = trio.current_time()
                        data = await read_blob(reader, reply.module_bytes + reply.data_bytes,
                                               reply.module_bytes + reply.data_bytes,
                                               timeout_s=timeout)
                        self.agent.peers.on_transfer(pid, len(data), trio.current_time() - began)
                    return reply, data
                finally:
                    await reset_stream(stream)
        except trio.TooSlowError:
            raise RemoteProtocolError("timeout", f"no answer from {pid} in {timeout:g}s") from None

    async def handle(self, stream: Any, pid: str) -> None:
        """Serve one request on ``/enclave-swarm/task/1.0.0`` (behind the attestation gate)."""
        timeout = self.timeout()
        reader = FrameReader(stream)
        msg = await read_message(reader, TASK_REQUESTS, timeout_s=timeout)
        blob = b""
        began = trio.current_time()
        if isinstance(msg, ResultReport):
            blob = await read_blob(reader, msg.output_bytes, MAX_OUTPUT_BYTES, timeout_s=timeout)
        elif isinstance(msg, DeliverRequest):
            blob = await read_blob(reader, msg.result_bytes, MAX_RESULT_BYTES, timeout_s=timeout)
        if blob:  # a rate observed: the bytes came in after their header
            self.agent.peers.on_transfer(pid, len(blob), trio.current_time() - began)
        reply, data = await self.serve(pid, msg, blob)
        await write_message(stream, reply, timeout_s=timeout)
        if data:
            await write_blob(stream, data, timeout_s=timeout)
        await close_stream(stream)

    async def serve(self, pid: str, msg: Any, blob: bytes) -> tuple[Any, bytes]:
        """The answer to one request from ``pid`` (remote or ourselves)."""
        if isinstance(msg, SubmitRequest):
            return await self.duty.on_submit(pid, msg), b""
        if isinstance(msg, AssignRequest):
            return self.executor.on_assign(pid, msg), b""
        if isinstance(msg, FetchRequest):
            return await self.owner.on_fetch(pid, msg)
        if isinstance(msg, ResultReport):
            return await self.duty.on_result(pid, msg, blob), b""
        if isinstance(msg, DeliverRequest):
            return await self.owner.on_deliver(pid, msg, blob), b""
        if isinstance(msg, CancelRequest):
            # From the job's owner to the manager, or from the manager to an agent.
            reply = await self.duty.on_cancel(pid, msg)
            if self.executor.on_cancel(pid, msg):
                reply = TaskReply(True)
            return reply, b""
        if isinstance(msg, LogsRequest):
            return self.duty.on_logs(pid, msg), b""
        if isinstance(msg, BudgetRequest):
            return await budget.on_budget(self.duty, pid, msg), b""
        raise RemoteProtocolError("invalid", f"unexpected {type(msg).__name__}")

    def refuse(self, counter: str, reason: str, pid: str, detail: str) -> TaskReply:
        """Count, log and answer a refusal."""
        self.agent.counters.inc(counter, reason)
        log.warning("%s from %s: %s (%s)", counter.replace("_", " "), pid, reason, detail,
                    extra={"peer": pid, "reason": reason})
        return TaskReply(False, detail[:500], reason)

    # ------------------------------------------------------------------ service
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with self.engine, trio.open_nursery() as nursery:
            self.executor.nursery = nursery
            self.duty.nursery = nursery
            nursery.start_soon(self.duty.run)
            nursery.start_soon(self.executor.run)
            nursery.start_soon(self.findings.run)
            task_status.started()

    def status(self) -> dict[str, Any]:
        return {"owner": self.owner.status(), "agent": self.executor.status(),
                "manager": self.duty.status(), "decisions": dict(self.check.stats),
                "findings": dict(ct.integrity_findings(self.view())),
                "integrity": self.findings.status(),
                "trust": dict(ct.trust_counters(self.view()))}


def _slots(agent: Any) -> int:
    """Fragments run at once: the cores this node offers to tasks (1..16)."""
    offers = getattr(agent, "offers", None)
    try:
        cores = offers.own_record().cores if offers is not None else 1
    except Exception:  # no capability (no config): one slot
        cores = 1
    return max(1, min(16, cores))


_SERVICES: dict[str, TaskService] = {}


def service_of(agent: Any) -> TaskService:
    return _SERVICES[str(agent.peer_id)]


def attach(agent: Any, data_dir: Any = None) -> TaskService:
    """node.runtime extension (after node.manager and node.tasks.offers): the task flow."""
    path = getattr(data_dir, "path", data_dir)
    svc = TaskService(agent, Path(path) if path is not None else None)
    _SERVICES[str(agent.peer_id)] = svc
    agent.set_handler(TASK_PROTOCOL, svc.handle, gated=True)
    agent.add_service(svc.run)
    agent.add_status("tasks", svc.status)
    agent.tasks = svc
    role = svc.role
    if role is not None:  # council members re-run the manager's placements (node/tasks/verify.py)
        role.entry_hooks.append(svc.check.on_entry)
    from node.tasks.owner import register_control_commands

    register_control_commands()
    return svc
