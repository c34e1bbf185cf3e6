"""Wire messages of the task flow, on ``/enclave-swarm/task/1.0.0`` (registered at import).

Every exchange is one request on a fresh stream and one reply; bulk bytes (a module, a
fragment, an output, an aggregated result) follow their header as :class:`TaskChunk` frames of
at most :data:`CHUNK_BYTES`, whose total the header declares and the reader bounds before it
reads a byte (:func:`read_blob`). docs/protocols.md ("Tasks") describes each message.

==========================  ===============  =====================================================
message                     direction        purpose
==========================  ===============  =====================================================
:class:`SubmitRequest`      owner -> manager  commit a job (a ``submit-job`` command, owner = sender)
:class:`AssignRequest`      manager -> agent  run one replica (also the manager's liveness probe)
:class:`FetchRequest`       agent -> owner    the module and the fragment of an assigned replica
:class:`ResultReport`       agent -> manager  a signed result, then the output's bytes
:class:`DeliverRequest`     manager -> owner  the job's end, then the aggregated result's bytes
:class:`CancelRequest`      owner -> manager, manager -> agent
:class:`LogsRequest`        owner -> manager  the fragments' stderr and why the job waits
==========================  ===============  =====================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import field
from typing import Any

from overlay import wire
from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, read_message, write_message
from overlay.messages import MAX_PEER_ID_CHARS, protocol_id

TASK_PROTOCOL = protocol_id("task")

CHUNK_BYTES = 1024 * 1024
MAX_MODULE_BYTES = 32 * 1024 * 1024  # the workload engine's bound
MAX_TASK_FRAGMENT_BYTES = 64 * 1024 * 1024
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024 * 1024
MAX_STDERR_BYTES = 16 * 1024
MAX_COMMAND_BYTES = 1024 * 1024
MAX_JOB_ID = 64
MAX_REASON = 500
MAX_LOG_ENTRIES = 128
ED25519_SIGNATURE_BYTES = 64

_NAT = {"min": 0}
_PEER = {"max_len": MAX_PEER_ID_CHARS}
_JOB = {"max_len": MAX_JOB_ID}
_HASH = {"len": 32}
_REASON = {"max_len": MAX_REASON}


def _job_id_ok(job_id: str) -> None:
    if not job_id or not all(c.isalnum() or c in "-_" for c in job_id):
        raise RemoteProtocolError("invalid", "a job id is 1..64 letters, digits, '-' or '_'")


@wire.message("task-reply", version=1, max_bytes=2048)
@dataclasses.dataclass(frozen=True)
class TaskReply:
    """Every request's answer: ``ok``, or not with ``error``; ``detail`` is a hint (for an
    assignment: ``accepted``, ``running`` or ``finished``; for a refusal by a non-manager: the
    manager it knows)."""

    ok: bool
    error: str = field(default="", metadata=_REASON)
    detail: str = field(default="", metadata={"max_len": 200})


@wire.message("task-chunk", version=1, max_bytes=CHUNK_BYTES + 64)
@dataclasses.dataclass(frozen=True)
class TaskChunk:
    data: bytes = field(metadata={"max_len": CHUNK_BYTES})

    def validate(self) -> None:
        if not self.data:
            raise RemoteProtocolError("invalid", "empty chunk")


@wire.message("task-submit", version=1, max_bytes=MAX_COMMAND_BYTES + 256)
@dataclasses.dataclass(frozen=True)
class SubmitRequest:
    """Owner -> manager: ``command`` is a ``submit-job`` command encoded with
    ``consensus.tasks.TASK_REGISTRY`` naming the sender as its owner; the manager sets the queue
    deadline from its own clock plus ``queue_timeout_s``."""

    command: bytes = field(metadata={"max_len": MAX_COMMAND_BYTES})
    queue_timeout_s: int = field(metadata=_NAT)


@wire.message("task-assign", version=1, max_bytes=2048)
@dataclasses.dataclass(frozen=True)
class AssignRequest:
    """Manager -> agent: run replica ``replica`` of fragment ``fragment`` of ``job_id``: fetch
    the module and the fragment from ``owner``, check them against the committed hashes, run
    under the limits, sign and report. Sent again as a probe while the replica is assigned: the
    agent answers ``running``, or ``finished`` and reports its kept result again."""

    job_id: str = field(metadata=_JOB)
    fragment: int = field(metadata=_NAT)
    replica: int = field(metadata=_NAT)
    owner: str = field(metadata=_PEER)
    module_hash: bytes = field(metadata=_HASH)
    input_hash: bytes = field(metadata=_HASH)
    input_bytes: int = field(metadata=_NAT)
    fuel: int = field(metadata={"min": 1})
    memory_mib: int = field(metadata={"min": 1})
    wall_time_ms: int = field(metadata={"min": 1})
    max_output_bytes: int = field(metadata=_NAT)
    term: int = field(metadata=_NAT)

    def validate(self) -> None:
        _job_id_ok(self.job_id)
        if self.input_bytes > MAX_TASK_FRAGMENT_BYTES or self.max_output_bytes > MAX_OUTPUT_BYTES:
            raise RemoteProtocolError("invalid", "fragment or output bound beyond the protocol's")


# The start of a FetchReply's error when the owner holds the job's end already (a manager that
# would run a done job's fragment again learns that the delivery it lacks the record of arrived).
ALREADY_DELIVERED = "already delivered"


@wire.message("task-fetch", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class FetchRequest:
    """Agent -> owner: the module (when ``module``) and fragment ``fragment`` of ``job_id``, for
    replica ``replica`` assigned to the sender; manager -> owner, the same for a done job's
    fragment whose agreed output was lost (node/tasks/duty.py, recompute). Manager -> owner,
    with ``reducer``: the job's reducer module (as the reply's module; no fragment). Answered by
    a :class:`FetchReply`."""

    job_id: str = field(metadata=_JOB)
    fragment: int = field(metadata=_NAT)
    replica: int = field(metadata=_NAT)
    module: bool = True
    reducer: bool = False

    def validate(self) -> None:
        _job_id_ok(self.job_id)


@wire.message("task-fetch-reply", version=1, max_bytes=1024)
@dataclasses.dataclass(frozen=True)
class FetchReply:
    """Owner -> agent: refused (``error``), or the sizes of the module and the fragment whose
    bytes follow, in that order, as chunks."""

    ok: bool
    error: str = field(default="", metadata=_REASON)
    module_bytes: int = field(default=0, metadata=_NAT)
    data_bytes: int = field(default=0, metadata=_NAT)

    def validate(self) -> None:
        if self.module_bytes > MAX_MODULE_BYTES or self.data_bytes > MAX_TASK_FRAGMENT_BYTES:
            raise RemoteProtocolError("too-large", "module or fragment beyond the protocol's bound")


@wire.message("task-result", version=1, max_bytes=MAX_STDERR_BYTES + 4096)
@dataclasses.dataclass(frozen=True)
class ResultReport:
    """Agent -> manager: the result of one replica, signed by the agent over
    ``node.workload.result_digest_payload(job, fragment, module, input, output)``; for a failed
    run the "output" hash is :func:`failure_digest` of the error. ``output_bytes`` of output follow
    as chunks (none for a failure)."""

    job_id: str = field(metadata=_JOB)
    fragment: int = field(metadata=_NAT)
    replica: int = field(metadata=_NAT)
    ok: bool
    error_kind: str = field(metadata={"max_len": 32})
    error: str = field(metadata=_REASON)
    module_hash: bytes = field(metadata=_HASH)
    input_hash: bytes = field(metadata=_HASH)
    output_hash: bytes = field(metadata=_HASH)
    output_bytes: int = field(metadata=_NAT)
    fuel_used: int = field(metadata=_NAT)
    peak_memory_bytes: int = field(metadata=_NAT)
    wall_ms: int = field(metadata=_NAT)
    stderr: bytes = field(metadata={"max_len": MAX_STDERR_BYTES})
    signature: bytes = field(metadata={"len": ED25519_SIGNATURE_BYTES})

    def validate(self) -> None:
        _job_id_ok(self.job_id)
        if self.output_bytes > MAX_OUTPUT_BYTES:
            raise RemoteProtocolError("too-large", "output beyond the protocol's bound")
        if not self.ok and (self.output_bytes or not self.error):
            raise RemoteProtocolError("invalid", "a failed result carries an error and no output")


@wire.message("task-deliver", version=1, max_bytes=2048)
@dataclasses.dataclass(frozen=True)
class DeliverRequest:
    """Manager -> owner: job ``job_id`` ended with ``status`` (done, failed, cancelled) and
    ``reason``; for ``done``, ``result_bytes`` of the aggregated result (SHA-256
    ``result_hash``, as committed) follow as chunks."""

    job_id: str = field(metadata=_JOB)
    status: str = field(metadata={"max_len": 16})
    reason: str = field(metadata=_REASON)
    result_hash: bytes = field(metadata={"max_len": 32})
    result_bytes: int = field(metadata=_NAT)

    def validate(self) -> None:
        _job_id_ok(self.job_id)
        if self.status not in ("done", "failed", "cancelled"):
            raise RemoteProtocolError("invalid", f"unknown job status {self.status!r}")
        if self.result_bytes > MAX_RESULT_BYTES:
            raise RemoteProtocolError("too-large", "result beyond the protocol's bound")
        if self.status == "done" and len(self.result_hash) != 32:
            raise RemoteProtocolError("invalid", "a done job carries its result's SHA-256")
        if self.status != "done" and self.result_bytes:
            raise RemoteProtocolError("invalid", "only a done job carries a result")


@wire.message("task-cancel", version=1, max_bytes=1024)
@dataclasses.dataclass(frozen=True)
class CancelRequest:
    job_id: str = field(metadata=_JOB)
    reason: str = field(default="", metadata=_REASON)

    def validate(self) -> None:
        _job_id_ok(self.job_id)


@wire.message("task-logs", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class LogsRequest:
    """Owner -> manager: the job's fragments' stderr from entry ``offset`` on."""

    job_id: str = field(metadata=_JOB)
    offset: int = field(default=0, metadata=_NAT)

    def validate(self) -> None:
        _job_id_ok(self.job_id)


@wire.message("task-log-entry", version=1, max_bytes=MAX_STDERR_BYTES + 512)
@dataclasses.dataclass(frozen=True)
class LogEntry:
    fragment: int = field(metadata=_NAT)
    replica: int = field(metadata=_NAT)
    node: str = field(metadata=_PEER)
    stderr: bytes = field(metadata={"max_len": MAX_STDERR_BYTES})


@wire.message("task-logs-reply", version=1, max_bytes=(MAX_STDERR_BYTES + 512) * 64 + 4096)
@dataclasses.dataclass(frozen=True)
class LogsReply:
    """Manager -> owner: up to 64 entries from ``offset``; ``more`` when others follow;
    ``waiting``: why the job's pending replicas are not placed ("" when they are)."""

    ok: bool
    error: str = field(default="", metadata=_REASON)
    entries: tuple[LogEntry, ...] = field(default=(), metadata={"max_items": 64})
    more: bool = False
    waiting: str = field(default="", metadata={"max_len": 2000})


@wire.message("task-budget", version=1, max_bytes=4096)
@dataclasses.dataclass(frozen=True)
class BudgetRequest:
    """Owner -> manager: ``command`` is a ``set-budget`` command (consensus/budgets.py) naming
    the sender as the data set's owner and carrying its signature; answered by a TaskReply."""

    command: bytes = field(metadata={"max_len": 3072})


TASK_REQUESTS = (SubmitRequest, AssignRequest, FetchRequest, ResultReport, DeliverRequest,
                 CancelRequest, LogsRequest, BudgetRequest)


def failure_digest(error_kind: str, error: str) -> bytes:
    """What a failed result's signature covers in place of an output hash."""
    return hashlib.sha256(b"enclave-swarm/task-failure/v1\x00" + error_kind.encode()
                          + b"\x00" + error.encode()).digest()


# --------------------------------------------------------------------------- bulk bytes


async def write_blob(stream: Any, data: bytes, *, timeout_s: float) -> None:
    """Write ``data`` as chunks (the header that declared its length was sent before)."""
    view = memoryview(data)
    for at in range(0, len(data), CHUNK_BYTES):
        await write_message(stream, TaskChunk(bytes(view[at:at + CHUNK_BYTES])), timeout_s=timeout_s)


async def read_blob(reader: FrameReader, size: int, limit: int, *, timeout_s: float) -> bytes:
    """Read exactly ``size`` bytes of chunks (``size`` was declared by a header and is checked
    against ``limit`` before anything is read). Raises RemoteProtocolError."""
    if size > limit:
        raise RemoteProtocolError("too-large", f"{size} bytes declared, at most {limit}")
    buf = bytearray()
    while len(buf) < size:
        chunk = await read_message(reader, TaskChunk, timeout_s=timeout_s)
        if len(buf) + len(chunk.data) > size:
            raise RemoteProtocolError("invalid", "more bytes than declared")
        buf += chunk.data
    return bytes(buf)
