"""The replicated task state machine: jobs, their fragments' replicas, results.

Theory of operation
-------------------
Tasks extend the swarm state machine (consensus/state.py) the way its docstring prescribes:
command types registered through :meth:`CommandRegistry.extended` (:data:`TASK_REGISTRY` is the
core registry plus these), data kept in ``SwarmState.ext["tasks"]`` as plain CBOR values (maps
with text keys, arrays, integers, text, bytes, booleans, null), so snapshots and their digests
need nothing new.

A job is submitted (:class:`SubmitJob`, status ``queued``), its replicas are assigned from the
scheduler's decision (:class:`AssignFragments`, ``running``), each assigned node reports one
result per replica (:class:`FragmentResult`), a replica whose node died, was revoked, timed out
or refused is moved (:class:`ReassignFragment`, attempts counted and bounded), and the manager
closes the job (:class:`JobDone` only when every replica of every fragment has an accepted,
agreeing result; :class:`JobFailed`, :class:`CancelJob`). :class:`JobDelivered` records that the
owner took a finished job's end; :class:`DropJob` forgets a finished job.

Each replica is ``pending`` (no node), ``assigned`` (a node runs it), ``done`` (its node's result
accepted) or ``failed`` (its node reported an error: a trap, a limit). Times never enter: the
queue deadline is a number the manager supplies and compares with its own clock.

Rules
-----
- A replica is only ever assigned to a node that qualifies *in the committed state at that
  index* for what the state can see: admitted (not suspect, revoked or gone), TEE kind, score,
  region and provider allowed by the job, no other live replica of the same fragment on the
  same node or provider, not a node that already failed this replica. Capacity, price and
  accelerators are the scheduler's (verifiable with ``check_decision``), not the state's.
- A result is accepted only from the node the replica is assigned to, while that node is
  admitted, for a running job, once: anything else is rejected (deterministically).
- No job is completed from a failed replica, a disagreement between replicas, or a result of a
  node revoked since: :class:`JobDone` refuses; the manager reassigns or fails the job.
- Bounded: at most :data:`MAX_JOBS` jobs in the state, :data:`MAX_REPLICAS_PER_JOB` replicas a
  job, :data:`MAX_ATTEMPTS` assignments a replica.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from consensus import budgets, integrity, trust
from consensus.scheduler import (
    MAX_FRAGMENT_BYTES,
    MAX_FRAGMENTS,
    MAX_REDUNDANCY,
    JobRequest,
    Requirements,
    Want,
    Weights,
)
from consensus.state import (
    ADMITTED,
    CORE_REGISTRY,
    MAX_ID_LEN,
    REVOKED,
    CommandRegistry,
    Rejected,
    SwarmState,
)

SECTION = "tasks"
MAX_JOBS = 256
MAX_REPLICAS_PER_JOB = 4096
MAX_ATTEMPTS = 16
MAX_REASON = 500
HASH_BYTES = 32
KEEP_FINISHED = 32  # finished jobs kept in the state (oldest dropped by the manager beyond this)
MAX_NAME = 200
MAX_FUEL = 10**15
MAX_LIMIT_MEMORY_MIB = 64 * 1024
MAX_WALL_TIME_MS = 24 * 3600 * 1000
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
AGGREGATION_KINDS = ("concat", "sum", "count", "mean", "min", "max", "histogram", "merge-counts")
PRIVATE_KINDS = ("count", "sum", "mean", "histogram")  # node/tasks/privacy.py KINDS
MAX_QUERY_BYTES = 16 * 1024     # a private query's canonical encoding
MAX_RELEASE_BYTES = 64 * 1024   # a private job's released statistic, kept in the state
MAX_FINDINGS = 256              # minority replicas recorded with a done job
MAX_INTEGRITY_NODES = 4096      # nodes with a findings count in the state
REDUCER = "wasm"  # the aggregation by a reducer module (its hash committed with the job)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
LIVE_JOB = (QUEUED, RUNNING)
TERMINAL_JOB = (DONE, FAILED, CANCELLED)
PENDING, ASSIGNED, R_DONE, R_FAILED = "pending", "assigned", "done", "failed"


# --------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class JobLimits:
    """Per fragment: WASM fuel, linear memory, wall-clock time and output size (what every agent
    running one of the job's fragments enforces; node/tasks/spec.py ``Limits`` validated them)."""

    fuel: int = 10_000_000_000
    memory_mib: int = 256
    wall_time_ms: int = 60_000
    max_output_bytes: int = 16 * 1024 * 1024

    def problems(self) -> list[str]:
        out = []
        if not 1 <= self.fuel <= MAX_FUEL:
            out.append(f"fuel outside 1..{MAX_FUEL}")
        if not 1 <= self.memory_mib <= MAX_LIMIT_MEMORY_MIB:
            out.append(f"memory_mib outside 1..{MAX_LIMIT_MEMORY_MIB}")
        if not 1 <= self.wall_time_ms <= MAX_WALL_TIME_MS:
            out.append(f"wall_time_ms outside 1..{MAX_WALL_TIME_MS}")
        if not 0 <= self.max_output_bytes <= MAX_OUTPUT_BYTES:
            out.append(f"max_output_bytes outside 0..{MAX_OUTPUT_BYTES}")
        return out


@dataclasses.dataclass(frozen=True)
class Privacy:
    """What makes a job private: its result is ``kind`` over the records its fragments output
    (lines), released with differential privacy from ``dataset``'s budget. ``epsilon`` is the
    charge in ledger units (``budgets.EPS_UNIT``), committed by a ``charge-budget`` of this very
    job before the job itself; ``query`` is the query's canonical encoding
    (``node.tasks.privacy.encode_query``), from which every manager recomputes the release."""

    dataset: str
    kind: str
    epsilon: int
    query: bytes


@dataclasses.dataclass(frozen=True)
class SubmitJob:
    """Commit a job (status ``queued``). ``owner`` is the client's node, which receives the
    result and may cancel; ``spec_digest``/``module_hash`` are SHA-256 of the validated spec and
    of the module; ``queue_deadline_ms`` is the manager's clock value after which a job still
    waiting for nodes fails (the manager's duty: the state reads no clock).

    ``input_hashes`` (SHA-256 of each fragment, or empty) is what the agents check the fragment
    they fetch against and sign; ``limits`` what they enforce; ``aggregation`` (a built-in kind
    of node/tasks/aggregate.py, or ``wasm`` with ``reducer_hash``, the SHA-256 of a reducer
    module) and ``bin_width`` how the manager combines the outputs."""

    job_id: str
    owner: str
    spec_digest: bytes
    module_hash: bytes
    fragments: int
    redundancy: int
    requirements: Requirements
    weights: Weights
    queue_deadline_ms: int
    max_attempts: int = 3
    input_object: str = ""
    fragment_bytes: int = 0
    input_hashes: tuple[bytes, ...] = ()
    limits: JobLimits = JobLimits()
    aggregation: str = "concat"
    bin_width: str = ""
    name: str = ""
    reducer_hash: bytes = b""
    privacy: Privacy | None = None
    quorum: int = 0          # agreeing replicas that accept a fragment's output (0: all r)
    max_replicas: int = 0    # replicas a fragment may reach on disagreement (0: r, none added)
    # Adaptive replication (consensus/trust.py): each fragment is placed once; a trusted node
    # runs it alone unless spot-checked at this rate (parts per million); otherwise it is
    # replicated to r, decided by the quorum.
    adaptive: bool = False
    spot_check_ppm: int = 0


@dataclasses.dataclass(frozen=True)
class AddReplica:
    """Give ``fragment`` one more (pending) replica: its replicas disagree (or failed) so that
    no quorum can be reached with the ones it has, and it has fewer than the job's
    ``max_replicas``. The state checks both itself (:func:`fragment_verdict`)."""

    job_id: str
    fragment: int


@dataclasses.dataclass(frozen=True)
class Assignment:
    fragment: int
    replica: int
    node_id: str


@dataclasses.dataclass(frozen=True)
class AssignFragments:
    """Commit one scheduler decision (made at log index ``seed``): each listed replica, pending
    until now, goes to its node. All or nothing: one unqualified node rejects the whole batch.
    ``inputs_digest`` is ``consensus.scheduler.inputs_digest`` of the decision's inputs, so a
    node holding the same inputs can re-run it (it is checked for shape only, not stored)."""

    job_id: str
    seed: int
    assignments: tuple[Assignment, ...]
    inputs_digest: bytes = b""


@dataclasses.dataclass(frozen=True)
class FragmentResult:
    """The assigned node's (signature-checked) result for one replica: ``ok`` with the output's
    hash and size, or not ``ok`` with ``error`` (a trap, a limit hit). The resource profile is
    kept for ``jobs describe``."""

    job_id: str
    fragment: int
    replica: int
    node_id: str
    ok: bool
    output_hash: bytes
    output_bytes: int
    fuel_used: int
    peak_memory_bytes: int
    wall_ms: int
    error: str = ""
    # the spot-check draw of an adaptive fragment's solo result (consensus/trust.py): the
    # manager's signature over trust.spot_transcript; empty for every other result
    draw: bytes = b""


@dataclasses.dataclass(frozen=True)
class ReassignFragment:
    """Move a replica off ``old_node`` (dead, revoked, timed out, refused, failed) to
    ``new_node``, or back to pending with ``new_node == ""`` (nobody fits now). A replica already
    done moves only if its node was revoked, or with ``output_lost`` (its node, in good standing,
    can no longer hand its output over: it died or restarted before the manager had it)."""

    job_id: str
    fragment: int
    replica: int
    old_node: str
    new_node: str
    reason: str
    seed: int = 0
    inputs_digest: bytes = b""
    output_lost: bool = False


@dataclasses.dataclass(frozen=True)
class CancelJob:
    """The owner (or the manager) cancels a queued or running job."""

    job_id: str
    requester: str
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class JobDone:
    """Every replica has an accepted result and they agree: ``result_hash`` of the aggregate.
    A private job's ``release`` (its differentially private answer, which is safe to keep
    where every member reads it) is committed with it: a successor delivers those very bytes,
    since the noise cannot be drawn twice without spending the budget twice."""

    job_id: str
    result_hash: bytes
    result_bytes: int
    release: bytes = b""


@dataclasses.dataclass(frozen=True)
class JobFailed:
    job_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class JobDelivered:
    """The owner took the finished job's end (and result): a successor manager does not deliver
    it again, nor rebuild its result from outputs its holders may long have forgotten. Only
    the manager's word on the owner's acknowledgement; it moves nothing but the flag."""

    job_id: str


@dataclasses.dataclass(frozen=True)
class DropJob:
    """Forget a finished job (after its result was delivered), freeing its room in the state."""

    job_id: str


# --------------------------------------------------------------------------- plain-value helpers


def _jobs(s: SwarmState) -> Mapping[str, Any]:
    sec = s.ext.get(SECTION)
    return sec["jobs"] if isinstance(sec, Mapping) else {}


def _with_jobs(s: SwarmState, jobs: dict[str, Any], seq: int | None = None,
               integrity: Mapping[str, int] | None = None,
               trusts: Mapping[str, int] | None = None) -> SwarmState:
    ext = dict(s.ext)
    sec: dict[str, Any] = {"jobs": jobs, "seq": _seq(s) if seq is None else seq}
    held = integrity if integrity is not None else integrity_findings(s)
    if held:
        sec["integrity"] = dict(held)
    cvs = trusts if trusts is not None else trust_counters(s)
    if cvs:
        sec["trust"] = dict(cvs)
    ext[SECTION] = sec
    return dataclasses.replace(s, ext=ext)


def integrity_findings(s: SwarmState) -> Mapping[str, int]:
    """Outvoted replicas per node over every job ever completed (the jobs themselves are
    dropped after delivery; this count stays): the input the score will take (issue 13)."""
    sec = s.ext.get(SECTION)
    got = sec.get("integrity") if isinstance(sec, Mapping) else None
    return got if isinstance(got, Mapping) else {}


def trust_counters(s: SwarmState) -> Mapping[str, int]:
    """Each node's consecutive valid results (consensus/trust.py), for adaptive replication;
    a node absent has none."""
    sec = s.ext.get(SECTION)
    got = sec.get("trust") if isinstance(sec, Mapping) else None
    return got if isinstance(got, Mapping) else {}


def _seq(s: SwarmState) -> int:
    """Jobs submitted so far (each job's ``seq`` orders jobs by submission)."""
    sec = s.ext.get(SECTION)
    return int(sec.get("seq", 0)) if isinstance(sec, Mapping) else 0


def _job(s: SwarmState, job_id: str) -> dict[str, Any]:
    j = _jobs(s).get(job_id)
    if j is None:
        raise Rejected(f"unknown job {job_id[:64]}")
    return dict(j)


def _put(s: SwarmState, job_id: str, job: dict[str, Any]) -> SwarmState:
    jobs = dict(_jobs(s))
    jobs[job_id] = job
    return _with_jobs(s, jobs)


def _replica(job: Mapping[str, Any], f: int, r: int) -> dict[str, Any]:
    if not (0 <= f < job["n"] and 0 <= r < len(job["frags"][f])):
        raise Rejected(f"no fragment {f} replica {r}")
    return dict(job["frags"][f][r])


def _set_replica(job: dict[str, Any], f: int, r: int, rep: dict[str, Any]) -> None:
    """Copy on write: only the touched fragment's list is copied."""
    frags = list(job["frags"])
    frag = list(frags[f])
    frag[r] = rep
    frags[f] = frag
    job["frags"] = frags


def requirements_of(job: Mapping[str, Any]) -> Requirements:
    q = job["req"]
    return Requirements(tuple(q["tee_kinds"]), q["min_score"], q["cores"], q["memory_mib"],
                        tuple(q["accelerators"]), tuple(q["regions"]), tuple(q["providers"]),
                        q["max_price_core_s"], q["max_price_gib"])


def weights_of(job: Mapping[str, Any]) -> Weights:
    return Weights(**job["w"])


def limits_of(job: Mapping[str, Any]) -> JobLimits:
    return JobLimits(**job["limits"])


def _plain(obj: Any) -> Any:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def _text(value: str, what: str, limit: int = MAX_ID_LEN) -> None:
    if not value or len(value) > limit:
        raise Rejected(f"bad {what}")


def qualifies(s: SwarmState, job: Mapping[str, Any], f: int, r: int, node_id: str) -> str:
    """Why ``node_id`` may not take replica ``r`` of fragment ``f`` now ("" when it may): the
    filters the committed state can check. See the module's rules."""
    m = s.members.get(node_id)
    if m is None:
        return f"{node_id[:64]} is not a member"
    if m.status != ADMITTED:
        return f"{node_id} is {m.status}"
    q = job["req"]
    if q["tee_kinds"] and m.tee_kind not in q["tee_kinds"]:
        return f"{node_id}: tee {m.tee_kind} not allowed"
    if m.score < q["min_score"]:
        return f"{node_id}: score {m.score} < {q['min_score']}"
    if q["regions"] and m.region not in q["regions"]:
        return f"{node_id}: region {m.region} not allowed"
    if q["providers"] and m.provider not in q["providers"]:
        return f"{node_id}: provider {m.provider} not allowed"
    rep = job["frags"][f][r]
    if node_id in rep["tried"]:
        return f"{node_id} already ran fragment {f} replica {r}"
    for k, other in enumerate(job["frags"][f]):
        if k == r or other["st"] not in (ASSIGNED, R_DONE):
            continue
        if other["node"] == node_id:
            return f"{node_id} already holds fragment {f} replica {k}"
        om = s.members.get(other["node"])
        if om is not None and om.provider == m.provider:
            return f"{node_id}: provider {m.provider} already holds fragment {f} replica {k}"
    return ""


def _assign(s: SwarmState, job: dict[str, Any], f: int, r: int, node_id: str, seed: int) -> None:
    _text(node_id, "node id")
    rep = _replica(job, f, r)
    if rep["st"] != PENDING:
        raise Rejected(f"fragment {f} replica {r} is {rep['st']}, not pending")
    why = qualifies(s, job, f, r, node_id)
    if why:
        raise Rejected(f"fragment {f} replica {r}: {why}")
    if rep["attempts"] >= job["max_attempts"]:
        raise Rejected(f"fragment {f} replica {r}: {rep['attempts']} attempts, the maximum")
    rep.update(st=ASSIGNED, node=node_id, attempts=rep["attempts"] + 1, seed=seed,
               tried=[*rep["tried"], node_id])
    _set_replica(job, f, r, rep)
    if job.get("adapt") is not None and len(job["frags"][f]) == 1:
        _adapt(s, job, f)


def _adapt(s: SwarmState, job: dict[str, Any], f: int) -> None:
    """An adaptive fragment's only replica (its primary) was just assigned: decide whether it
    runs alone (consensus/trust.py ``mode``, from committed data only), or widen it to ``r``
    pending replicas. A primary moved to another node before the fragment was widened is
    decided again, for that node and attempt."""
    rep = job["frags"][f][0]
    node = rep["node"]
    got = trust.mode(int(trust_counters(s).get(node, 0)), _job_id_of(job), job["seq"],
                     f, rep["attempts"], node)
    _set_mode(job, f, got)


def _set_mode(job: dict[str, Any], f: int, mode: str) -> None:
    """Set fragment ``f``'s adaptive mode; any mode but SOLO widens it to ``r`` replicas."""
    modes = list(job["modes"])
    modes[f] = mode
    job["modes"] = modes
    if mode != trust.SOLO:
        frags = list(job["frags"])
        frags[f] = [*frags[f], *(_new_replica() for _ in range(job["r"] - len(frags[f])))]
        job["frags"] = frags


def _new_replica() -> dict[str, Any]:
    return {"st": PENDING, "node": "", "attempts": 0, "tried": [], "seed": 0, "out": b"",
            "size": 0, "prof": [0, 0, 0], "err": ""}


def _job_id_of(job: Mapping[str, Any]) -> str:
    return str(job["id"])


# --------------------------------------------------------------------------- handlers


def _submit(s: SwarmState, c: SubmitJob) -> SwarmState:
    _text(c.job_id, "job id")
    _text(c.owner, "owner")
    if c.job_id in _jobs(s):
        raise Rejected(f"job {c.job_id} exists")
    if len(_jobs(s)) >= MAX_JOBS:
        raise Rejected(f"{MAX_JOBS} jobs in the state: drop finished ones first")
    if len(c.spec_digest) != HASH_BYTES or len(c.module_hash) != HASH_BYTES:
        raise Rejected("spec digest and module hash are SHA-256 (32 bytes)")
    if not 1 <= c.fragments <= MAX_FRAGMENTS or not 1 <= c.redundancy <= MAX_REDUNDANCY:
        raise Rejected("fragments or redundancy out of range")
    if c.fragments * c.redundancy > MAX_REPLICAS_PER_JOB:
        raise Rejected(f"{c.fragments} x {c.redundancy} replicas > {MAX_REPLICAS_PER_JOB}")
    if not 1 <= c.max_attempts <= MAX_ATTEMPTS:
        raise Rejected(f"max_attempts outside 1..{MAX_ATTEMPTS}")
    problems = c.requirements.problems() + c.weights.problems()
    if problems:
        raise Rejected("; ".join(problems))
    if c.queue_deadline_ms < 0 or len(c.input_object) > MAX_ID_LEN:
        raise Rejected("bad deadline or input object")
    if not 0 <= c.fragment_bytes <= MAX_FRAGMENT_BYTES:
        raise Rejected("fragment_bytes out of range")
    if c.input_hashes and (len(c.input_hashes) != c.fragments
                           or any(len(h) != HASH_BYTES for h in c.input_hashes)):
        raise Rejected("input hashes: one SHA-256 (32 bytes) per fragment")
    problems = c.limits.problems()
    if problems:
        raise Rejected("limits: " + "; ".join(problems))
    if c.aggregation not in (*AGGREGATION_KINDS, REDUCER):
        raise Rejected(f"unknown aggregation {c.aggregation[:64]!r}")
    if (c.aggregation == REDUCER) != (len(c.reducer_hash) == HASH_BYTES) or (
            c.reducer_hash and len(c.reducer_hash) != HASH_BYTES):
        raise Rejected("a reducer module's SHA-256 (32 bytes) comes with aggregation 'wasm' only")
    if len(c.bin_width) > 64 or len(c.name) > MAX_NAME:
        raise Rejected("bin width or name too long")
    dp = _private(s, c)
    quorum = c.quorum or c.redundancy
    most = c.max_replicas or c.redundancy
    if not 1 <= quorum <= c.redundancy or not c.redundancy <= most <= MAX_REDUNDANCY:
        raise Rejected(f"quorum outside 1..redundancy, or max_replicas outside "
                       f"redundancy..{MAX_REDUNDANCY}")
    if 2 * quorum <= c.redundancy:
        raise Rejected("a quorum is more than half of the replicas (two minorities could "
                       "otherwise both be accepted)")
    if c.fragments * most > MAX_REPLICAS_PER_JOB:
        raise Rejected(f"{c.fragments} x {most} replicas > {MAX_REPLICAS_PER_JOB}")
    if not 0 <= c.spot_check_ppm <= trust.PPM:
        raise Rejected(f"spot-check rate outside 0..{trust.PPM} ppm")
    if c.adaptive and c.redundancy < 2:
        raise Rejected("adaptive replication needs a redundancy of 2 or more for the fragments "
                       "it replicates")
    if c.spot_check_ppm and not c.adaptive:
        raise Rejected("a spot-check rate comes with adaptive replication only")
    replica = _new_replica()
    width = 1 if c.adaptive else c.redundancy  # an adaptive fragment starts with its primary
    job = {
        "owner": c.owner, "spec": c.spec_digest, "module": c.module_hash, "n": c.fragments,
        "r": c.redundancy, "req": _plain(c.requirements), "w": _plain(c.weights),
        "deadline": c.queue_deadline_ms, "max_attempts": c.max_attempts, "input": c.input_object,
        "frag_bytes": c.fragment_bytes, "status": QUEUED, "reason": "", "result": b"",
        "result_bytes": 0, "done": 0,
        "frags": [[dict(replica) for _ in range(width)] for _ in range(c.fragments)],
        "inputs": list(c.input_hashes), "limits": _plain(c.limits), "agg": c.aggregation,
        "bw": c.bin_width, "name": c.name, "seq": _seq(s) + 1, "reducer": c.reducer_hash,
        "dp": dp, "release": b"", "q": quorum, "rmax": most, "findings": [],
    }
    if c.adaptive:  # absent from other jobs' records, which keep their former encoding
        job.update(id=c.job_id, adapt=c.spot_check_ppm, modes=[""] * c.fragments)
    jobs = dict(_jobs(s))
    jobs[c.job_id] = job
    return _with_jobs(s, jobs, seq=_seq(s) + 1)


def _private(s: SwarmState, c: SubmitJob) -> dict[str, Any] | None:
    """The job record's ``dp`` entry: None for a job that is not private; for a private one,
    only once this job's charge is committed from the owner's data set (a query that would
    exceed the budget never becomes a job, so no fragment of it ever runs)."""
    p = c.privacy
    if p is None:
        return None
    _text(p.dataset, "data set")
    if p.kind not in PRIVATE_KINDS:
        raise Rejected(f"private kind {p.kind[:32]!r} is not one of {', '.join(PRIVATE_KINDS)}")
    if not p.query or len(p.query) > MAX_QUERY_BYTES:
        raise Rejected(f"a private query is 1..{MAX_QUERY_BYTES} bytes")
    if c.aggregation != "concat":
        raise Rejected("a private job releases its statistic over the records: aggregation concat")
    held = budgets.budget(s, p.dataset)
    if held is None:
        raise Rejected(f"data set {p.dataset} has no privacy budget")
    if held["owner"] != c.owner:
        raise Rejected(f"data set {p.dataset} belongs to another owner")
    charge = budgets.charge_of(s, p.dataset, c.job_id)
    if charge is None or charge != p.epsilon or p.epsilon <= 0:
        raise Rejected(f"job {c.job_id} is not charged {p.epsilon} units to {p.dataset}")
    return {"ds": p.dataset, "kind": p.kind, "eps": p.epsilon, "q": p.query}


def _assign_batch(s: SwarmState, c: AssignFragments) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] not in LIVE_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    if not c.assignments:
        raise Rejected("no assignments")
    if len(c.inputs_digest) not in (0, HASH_BYTES):
        raise Rejected("inputs digest is SHA-256 (32 bytes)")
    widths = [len(fr) for fr in job["frags"]]  # replicas an adaptive primary adds come later
    for a in c.assignments:
        if 0 <= a.fragment < len(widths) and a.replica >= widths[a.fragment]:
            raise Rejected(f"no fragment {a.fragment} replica {a.replica} before this decision")
        _assign(s, job, a.fragment, a.replica, a.node_id, c.seed)
    job["status"] = RUNNING
    return _put(s, c.job_id, job)


def _result(s: SwarmState, c: FragmentResult) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] != RUNNING:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    rep = _replica(job, c.fragment, c.replica)
    if rep["st"] in (R_DONE, R_FAILED):
        raise Rejected(f"fragment {c.fragment} replica {c.replica} already has a result")
    if rep["st"] != ASSIGNED or rep["node"] != c.node_id:
        raise Rejected(f"fragment {c.fragment} replica {c.replica} is not assigned to {c.node_id[:64]}")
    m = s.members.get(c.node_id)
    if m is None or m.status != ADMITTED:
        raise Rejected(f"{c.node_id} is not admitted")
    if c.ok and len(c.output_hash) != HASH_BYTES:
        raise Rejected("output hash is SHA-256 (32 bytes)")
    if not c.ok and (not c.error or c.output_hash):
        raise Rejected("a failed result carries an error and no output")
    if len(c.error) > MAX_REASON or min(c.output_bytes, c.fuel_used, c.peak_memory_bytes, c.wall_ms) < 0:
        raise Rejected("bad result fields")
    modes = job.get("modes")
    solo = modes is not None and modes[c.fragment] == trust.SOLO and c.ok
    if solo and len(c.draw) != trust.DRAW_BYTES:
        raise Rejected(f"a result run alone carries the manager's spot-check draw ({trust.DRAW_BYTES} bytes)")
    if not solo and c.draw:
        raise Rejected("only a result run alone carries a spot-check draw")
    rep.update(st=R_DONE if c.ok else R_FAILED, out=c.output_hash, size=c.output_bytes,
               prof=[c.fuel_used, c.peak_memory_bytes, c.wall_ms], err=c.error)
    _set_replica(job, c.fragment, c.replica, rep)
    if c.ok:
        job["done"] += 1
    if solo and trust.spot_checked(job["adapt"], c.draw):
        _set_mode(job, c.fragment, trust.SPOT)  # checked: its result is one vote of r
    return _put(s, c.job_id, job)


def _reassign(s: SwarmState, c: ReassignFragment) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] not in LIVE_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    _text(c.reason, "reason", MAX_REASON)
    if len(c.inputs_digest) not in (0, HASH_BYTES):
        raise Rejected("inputs digest is SHA-256 (32 bytes)")
    rep = _replica(job, c.fragment, c.replica)
    if rep["node"] != c.old_node or rep["st"] == PENDING:
        raise Rejected(f"fragment {c.fragment} replica {c.replica} is not on {c.old_node[:64]}")
    if rep["st"] == R_DONE:
        m = s.members.get(c.old_node)
        if m is not None and m.status != REVOKED and not c.output_lost:
            raise Rejected(f"fragment {c.fragment} replica {c.replica} is done on a node in good standing")
        job["done"] -= 1
    rep.update(st=PENDING, node="", out=b"", size=0, prof=[0, 0, 0], err="")
    _set_replica(job, c.fragment, c.replica, rep)
    if c.new_node:
        _assign(s, job, c.fragment, c.replica, c.new_node, c.seed)
    return _put(s, c.job_id, job)


def _cancel(s: SwarmState, c: CancelJob) -> SwarmState:
    job = _job(s, c.job_id)
    if c.requester not in (job["owner"], s.manager_id) or not c.requester:
        raise Rejected(f"{c.requester[:64]} may not cancel job {c.job_id}")
    if job["status"] not in LIVE_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    if len(c.reason) > MAX_REASON:
        raise Rejected("reason too long")
    job.update(status=CANCELLED, reason=c.reason or f"cancelled by {c.requester}")
    return _put(s, c.job_id, job)


AGREED, OPEN, NEEDS_REPLICA, NO_QUORUM = "agreed", "open", "needs-replica", "no-quorum"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One fragment's standing: ``state`` is AGREED (``output`` has ``quorum`` votes),
    OPEN (replicas still running could yet make a quorum), NEEDS_REPLICA (no quorum is
    reachable with the replicas it has, but it may have another) or NO_QUORUM (nor with
    another: the fragment fails). ``minority`` lists the (replica, node, output) of done
    replicas whose output is not the agreed one: integrity findings against their nodes."""

    state: str
    output: bytes = b""
    votes: int = 0
    minority: tuple[tuple[int, str, bytes], ...] = ()
    why: str = ""


def _quorum(job: Mapping[str, Any]) -> tuple[int, int]:
    return int(job.get("q", job["r"])), int(job.get("rmax", job["r"]))


def fragment_quorum(job: Mapping[str, Any], f: int) -> int:
    """The votes fragment ``f`` needs: the job's quorum, or 1 for an adaptive fragment that
    runs alone (or whose primary is not placed yet)."""
    modes = job.get("modes")
    if modes is not None and modes[f] in ("", trust.SOLO):
        return 1
    return _quorum(job)[0]


def fragment_verdict(s: SwarmState, job: Mapping[str, Any], f: int) -> Verdict:
    """The verdict on fragment ``f`` (pure; every replica computes the same). A vote is a done
    replica whose node is not revoked; a failed replica votes for nothing. An output is
    accepted with at least ``q`` votes and strictly more than any other output has (``q`` is
    more than half of ``r``, but replicas added on disagreement could otherwise let two
    outputs each reach it: a tie is decided by one more replica, never by a rule).

    An adaptive fragment that ran alone is agreed on its one result, unless its node was
    caught in this job (outvoted, or failed where others agreed, on another fragment): then it
    needs replicas (see :func:`verdicts`, which computes every fragment's at once)."""
    v = _verdict(s, job, f)
    modes = job.get("modes")
    if modes is None or modes[f] != trust.SOLO or v.state != AGREED:
        return v
    others = [_verdict(s, job, g) if modes[g] != trust.SOLO else None for g in range(len(modes))]
    return _solo_checked(job, f, v, caught(job, others))


def verdicts(s: SwarmState, job: Mapping[str, Any]) -> list[Verdict]:
    """Every fragment's :func:`fragment_verdict`, in one pass over the job."""
    out = [_verdict(s, job, f) for f in range(len(job["frags"]))]
    modes = job.get("modes")
    if modes is None:
        return out
    bad = caught(job, [v if modes[f] != trust.SOLO else None for f, v in enumerate(out)])
    return [_solo_checked(job, f, v, bad) if modes[f] == trust.SOLO else v for f, v in enumerate(out)]


def caught(job: Mapping[str, Any], checked: list[Verdict | None]) -> set[str]:
    """The nodes caught in ``job``: outvoted on a fragment whose output is agreed, or failed
    there. ``checked`` holds the verdicts of the replicated fragments (None elsewhere)."""
    out: set[str] = set()
    for f, v in enumerate(checked):
        if v is None or v.state != AGREED:
            continue
        out.update(node for _, node, _ in v.minority)
        out.update(rep["node"] for rep in job["frags"][f] if rep["st"] == R_FAILED)
    return out


def _solo_checked(job: Mapping[str, Any], f: int, v: Verdict, bad: set[str]) -> Verdict:
    node = job["frags"][f][0]["node"]
    if v.state != AGREED or node not in bad:
        return v
    # Its result was accepted alone from a node now known to lie or fail: check it after all
    # (the job is not done, so the result was never delivered).
    return Verdict(NEEDS_REPLICA, votes=v.votes, why=f"ran alone on {node}, caught in this job")


def _verdict(s: SwarmState, job: Mapping[str, Any], f: int) -> Verdict:
    frag = job["frags"][f]
    q, most = fragment_quorum(job, f), _quorum(job)[1]
    votes: dict[bytes, list[int]] = {}
    undecided = revoked = 0
    failed = []
    for r, rep in enumerate(frag):
        if rep["st"] in (PENDING, ASSIGNED):
            undecided += 1
        elif rep["st"] == R_FAILED:
            failed.append(f"replica {r} failed on {rep['node']}: {rep['err']}")
        else:
            m = s.members.get(rep["node"])
            if m is not None and m.status != REVOKED:
                votes.setdefault(rep["out"], []).append(r)
            else:
                revoked += 1  # its vote is void; the manager runs the replica again
    best = max(votes.items(), key=lambda kv: (len(kv[1]), kv[0]), default=(b"", []))
    if len(best[1]) >= q and all(len(rs) < len(best[1]) for o, rs in votes.items() if o != best[0]):
        minority = tuple((r, frag[r]["node"], out) for out, rs in sorted(votes.items())
                         if out != best[0] for r in rs)
        return Verdict(AGREED, best[0], len(best[1]), minority)
    if undecided + revoked and len(best[1]) + undecided + revoked >= q:
        return Verdict(OPEN, votes=len(best[1]))  # the replicas to come may decide it
    why = (f"{len(votes)} different outputs, at most {len(best[1])} agreeing of {q} needed"
           if votes else "no output")
    if failed:
        why += "; " + "; ".join(failed[:3])
    if len(frag) < most:
        return Verdict(NEEDS_REPLICA, votes=len(best[1]), why=why)
    return Verdict(NO_QUORUM, votes=len(best[1]), why=f"fragment {f}: no quorum: {why}")


def incomplete(s: SwarmState, job: Mapping[str, Any]) -> str:
    """Why ``job`` may not be completed now ("" when every fragment has a quorum of agreeing
    replicas from nodes not revoked since; with the default quorum, all ``r`` of them)."""
    for f, (frag, v) in enumerate(zip(job["frags"], verdicts(s, job), strict=True)):
        if v.state == AGREED:
            continue
        if v.state == NO_QUORUM:
            return f"the replicas of fragment {f} disagree: {v.why}"
        for r, rep in enumerate(frag):
            m = s.members.get(rep["node"])
            if rep["st"] == R_DONE and (m is None or m.status == REVOKED):
                return f"fragment {f} replica {r} was computed by {rep['node']}, revoked since"
        pending = [r for r, rep in enumerate(frag) if rep["st"] != R_DONE]
        return (f"fragment {f} replica {pending[0]} is {frag[pending[0]]['st']}" if pending
                else f"the replicas of fragment {f} disagree: {v.why}")
    return ""


def findings(s: SwarmState, job: Mapping[str, Any]) -> list[list[Any]]:
    """[fragment, replica, node, output hash] of every done replica outside its fragment's
    agreed output (in fragment order)."""
    out: list[list[Any]] = []
    for f, v in enumerate(verdicts(s, job)):
        if v.state == AGREED:
            out.extend([f, r, node, o] for r, node, o in v.minority)
    return out


def _add_replica(s: SwarmState, c: AddReplica) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] not in LIVE_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    if not 0 <= c.fragment < len(job["frags"]):
        raise Rejected(f"no fragment {c.fragment}")
    v = fragment_verdict(s, job, c.fragment)
    if v.state != NEEDS_REPLICA:
        raise Rejected(f"fragment {c.fragment} is {v.state}: no replica to add")
    frags = [list(fr) for fr in job["frags"]]
    frags[c.fragment].append(_new_replica())
    job["frags"] = frags
    modes = job.get("modes")
    if modes is not None and modes[c.fragment] == trust.SOLO:
        # A fragment run alone whose result failed, or whose node was caught: replicated now,
        # to r replicas, and decided by the job's quorum.
        _set_mode(job, c.fragment, trust.REPLICATED)
    return _put(s, c.job_id, job)


def _done(s: SwarmState, c: JobDone) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] != RUNNING:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    why = incomplete(s, job)
    if why:
        raise Rejected(why)
    if len(c.result_hash) != HASH_BYTES or c.result_bytes < 0:
        raise Rejected("result hash is SHA-256 (32 bytes)")
    if job.get("dp") is not None:
        if not 0 < len(c.release) <= MAX_RELEASE_BYTES:
            raise Rejected(f"a private job's release is 1..{MAX_RELEASE_BYTES} bytes")
        if c.result_bytes != len(c.release) or hashlib.sha256(c.release).digest() != c.result_hash:
            raise Rejected("the release does not match the result hash")
    elif c.release:
        raise Rejected("only a private job commits a release")
    found = findings(s, job)[:MAX_FINDINGS]
    cvs = _trust_after(s, job)
    job.update(status=DONE, result=c.result_hash, result_bytes=c.result_bytes, release=c.release,
               findings=found)
    counts = dict(integrity_findings(s))
    for _, _, node, _ in found:
        if node in counts or len(counts) < MAX_INTEGRITY_NODES:
            counts[node] = counts.get(node, 0) + 1
    jobs = dict(_jobs(s))
    jobs[c.job_id] = job
    # runtime integrity monitoring (consensus/integrity.py): statistics, findings, penalties
    agreed = [v.output for v in verdicts(s, job)]
    return integrity.observe_job(_with_jobs(s, jobs, integrity=counts, trusts=cvs), c.job_id, job, agreed)


def _trust_after(s: SwarmState, job: Mapping[str, Any]) -> dict[str, int]:
    """The trust counters once ``job``'s verdicts are committed (consensus/trust.py): valid,
    a done replica voting for an agreed output that at least two replicas gave (a result
    compared with another node's); invalid, a done replica outside an agreed output or a failed
    one beside it. A fragment run alone compares nothing and counts for nobody."""
    valid: list[str] = []
    invalid: list[str] = []
    for f, v in enumerate(verdicts(s, job)):
        if v.state != AGREED:
            continue
        invalid.extend(node for _, node, _ in v.minority)
        for rep in job["frags"][f]:
            if rep["st"] == R_FAILED:
                invalid.append(rep["node"])
            elif rep["st"] == R_DONE and rep["out"] == v.output and v.votes >= 2:
                m = s.members.get(rep["node"])
                if m is not None and m.status != REVOKED:
                    valid.append(rep["node"])
    return trust.update(trust_counters(s), valid, invalid)


def _failed(s: SwarmState, c: JobFailed) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] not in LIVE_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    _text(c.reason, "reason", MAX_REASON)
    job.update(status=FAILED, reason=c.reason)
    return _put(s, c.job_id, job)


def _delivered(s: SwarmState, c: JobDelivered) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] not in TERMINAL_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    if job.get("delivered"):
        raise Rejected(f"job {c.job_id} was delivered already")
    job["delivered"] = True  # absent until then: older records keep their encoding
    return _put(s, c.job_id, job)


def _drop(s: SwarmState, c: DropJob) -> SwarmState:
    job = _job(s, c.job_id)
    if job["status"] not in TERMINAL_JOB:
        raise Rejected(f"job {c.job_id} is {job['status']}")
    jobs = dict(_jobs(s))
    del jobs[c.job_id]
    return _with_jobs(s, jobs)


TASK_COMMANDS: tuple[tuple[str, type, Any], ...] = (
    ("submit-job", SubmitJob, _submit),
    ("add-replica", AddReplica, _add_replica),
    ("assign-fragments", AssignFragments, _assign_batch),
    ("fragment-result", FragmentResult, _result),
    ("reassign-fragment", ReassignFragment, _reassign),
    ("cancel-job", CancelJob, _cancel),
    ("job-done", JobDone, _done),
    ("job-failed", JobFailed, _failed),
    ("drop-job", DropJob, _drop),
    ("job-delivered", JobDelivered, _delivered),
)


def extend(registry: CommandRegistry) -> CommandRegistry:
    """``registry`` plus the task commands (to combine with other extensions)."""
    return registry.extended_all(TASK_COMMANDS)


# The manager's registry: the core commands, the task commands, the privacy-budget ledger's
# (consensus/budgets.py), which private jobs spend from, and the integrity monitor's
# (consensus/integrity.py).
TASK_REGISTRY = integrity.extend(budgets.extend(extend(CORE_REGISTRY)))


# --------------------------------------------------------------------------- readers for the driver


def jobs(s: SwarmState) -> Mapping[str, Mapping[str, Any]]:
    """Every job record, by id (read-only plain values; see the module docstring)."""
    return _jobs(s)


def job(s: SwarmState, job_id: str) -> Mapping[str, Any] | None:
    return _jobs(s).get(job_id)


def finished_to_drop(s: SwarmState, keep: int = KEEP_FINISHED) -> list[str]:
    """The finished jobs beyond the newest ``keep`` (by submission), oldest first: what the
    manager drops (their owners hold the results)."""
    done = sorted((j["seq"], jid) for jid, j in _jobs(s).items() if j["status"] in TERMINAL_JOB)
    return [jid for _, jid in done[:max(0, len(done) - keep)]]


def replicas(s: SwarmState, job_id: str) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
    """(fragment, replica, record) of a job, in order."""
    j = _jobs(s).get(job_id)
    for f, frag in enumerate(j["frags"] if j else ()):
        for r, rep in enumerate(frag):
            yield f, r, rep


def replicas_on(s: SwarmState, node_id: str) -> list[tuple[str, int, int]]:
    """(job, fragment, replica) assigned to ``node_id`` in live jobs: what to reassign when it
    dies or is revoked."""
    return [(jid, f, r) for jid, j in sorted(_jobs(s).items()) if j["status"] in LIVE_JOB
            for f, frag in enumerate(j["frags"]) for r, rep in enumerate(frag)
            if rep["st"] == ASSIGNED and rep["node"] == node_id]


def used_capacity(s: SwarmState) -> dict[str, tuple[int, int]]:
    """(cores, MiB) reserved on each node by the replicas it runs: the scheduler's free capacity
    is a node's offer minus this."""
    out: dict[str, tuple[int, int]] = {}
    for j in _jobs(s).values():
        if j["status"] not in LIVE_JOB:
            continue
        cores, mem = j["req"]["cores"], j["req"]["memory_mib"]
        for frag in j["frags"]:
            for rep in frag:
                if rep["st"] == ASSIGNED:
                    c, m = out.get(rep["node"], (0, 0))
                    out[rep["node"]] = (c + cores, m + mem)
    return out


def job_request(s: SwarmState, job_id: str, *, client: str = "", input_holders: tuple[str, ...] = (),
                pending_only: bool = True) -> JobRequest:
    """The scheduler's view of a committed job: its pending replicas as wants, each avoiding
    the nodes that already tried it and the nodes and providers of its fragment's live replicas."""
    j = _jobs(s)[job_id]
    wants = []
    for f, frag in enumerate(j["frags"]):
        live = [rep["node"] for rep in frag if rep["st"] in (ASSIGNED, R_DONE)]
        provs = sorted({s.members[n].provider for n in live if n in s.members})
        for r, rep in enumerate(frag):
            if rep["st"] == PENDING or not pending_only:
                wants.append(Want(f, r, tuple(sorted(set(live) | set(rep["tried"]))), tuple(provs)))
    # replicas added on disagreement (add-replica) widen the request beyond the job's r
    width = max((len(fr) for fr in j["frags"]), default=j["r"])
    return JobRequest(job_id, j["n"], width, requirements_of(j), weights_of(j),
                      client=client or j["owner"], input_holders=input_holders,
                      fragment_bytes=j["frag_bytes"], wants=tuple(wants))


# --------------------------------------------------------------------------- invariants


def check_invariants(s: SwarmState) -> list[str]:
    """Every violated invariant of the task section (empty when all hold). For the simulator and
    the tests: no fragment lost (every replica of a live job is pending, assigned, done or
    failed, with the node its state implies), none counted twice (the done count is the number
    of done replicas; no two live replicas of a fragment on one node), results only from the
    assigned node, attempts within bounds, a done job complete, a private job's result its
    committed release."""
    out: list[str] = []
    for jid, j in sorted(_jobs(s).items()):
        if j["status"] not in LIVE_JOB + TERMINAL_JOB:
            out.append(f"{jid}: unknown status {j['status']}")
        q, most = _quorum(j)
        least = 1 if j.get("adapt") is not None else j["r"]
        if len(j["frags"]) != j["n"] or any(not least <= len(fr) <= most for fr in j["frags"]):
            out.append(f"{jid}: fragments lost: {len(j['frags'])} of {j['n']}")
            continue
        done = 0
        for f, frag in enumerate(j["frags"]):
            live_nodes = []
            for r, rep in enumerate(frag):
                where = f"{jid} fragment {f} replica {r}"
                st = rep["st"]
                if st not in (PENDING, ASSIGNED, R_DONE, R_FAILED):
                    out.append(f"{where}: lost (state {st!r})")
                if (st == PENDING) != (rep["node"] == ""):
                    out.append(f"{where}: {st} with node {rep['node']!r}")
                if st in (ASSIGNED, R_DONE):
                    live_nodes.append(rep["node"])
                if st == R_DONE:
                    done += 1
                    if len(rep["out"]) != HASH_BYTES:
                        out.append(f"{where}: done without an output hash")
                if st != PENDING and (not rep["tried"] or rep["tried"][-1] != rep["node"]):
                    out.append(f"{where}: result or assignment from {rep['node']}, not the assigned node")
                if not rep["attempts"] == len(rep["tried"]) <= j["max_attempts"]:
                    out.append(f"{where}: {rep['attempts']} attempts, tried {len(rep['tried'])}")
            if len(set(live_nodes)) != len(live_nodes):
                out.append(f"{jid} fragment {f}: two live replicas on one node {live_nodes}")
        if done != j["done"]:
            out.append(f"{jid}: done count {j['done']} but {done} done replicas (counted twice?)")
        if j["status"] == DONE and (len(j["result"]) != HASH_BYTES or any(
                max(collections.Counter(rep["out"] for rep in fr if rep["st"] == R_DONE).values(),
                    default=0) < fragment_quorum(j, f) for f, fr in enumerate(j["frags"]))):
            out.append(f"{jid}: done without {q} agreeing replicas of every fragment")
        for f, m in enumerate(j.get("modes") or ()):
            width = len(j["frags"][f])
            if (m in ("", trust.SOLO)) != (width == 1) or (m == "" and j["frags"][f][0]["st"] != PENDING):
                out.append(f"{jid} fragment {f}: mode {m!r} with {width} replicas")
        if j["status"] == QUEUED and any(rep["st"] != PENDING for fr in j["frags"] for rep in fr):
            out.append(f"{jid}: queued with assigned replicas")
        release = j.get("release", b"")
        if j.get("dp") is None:
            if release:
                out.append(f"{jid}: a release without a private query")
        elif j["status"] == DONE and hashlib.sha256(release).digest() != j["result"]:
            out.append(f"{jid}: private and done, but its release is not the result")
    return out


def check_transition(before: SwarmState, after: SwarmState) -> list[str]:
    """Invariants of one applied command: every replica that gained a node got one that
    qualified in ``before`` (the committed state at that index); every accepted result came
    from the node assigned in ``before``, admitted then; a finished job never changes again,
    but for the flag that records its delivery."""
    out: list[str] = []
    old_jobs = _jobs(before)
    for jid, j in _jobs(after).items():
        old = old_jobs.get(jid)
        if old is None:
            continue
        if old["status"] in TERMINAL_JOB and {**j, "delivered": None} != {**old, "delivered": None}:
            out.append(f"{jid}: a {old['status']} job changed")
            continue
        # The probe job holds the other replicas as they were before, so a batch that placed two
        # replicas of a fragment on one node or provider shows up on the second.
        probe = {**old, "frags": [list(fr) for fr in old["frags"]]}
        for f, frag in enumerate(j["frags"]):
            for r, rep in enumerate(frag):
                if r >= len(old["frags"][f]):  # added by add-replica: pending, with no node
                    if rep["st"] != PENDING or rep["node"]:
                        out.append(f"{jid} fragment {f} replica {r}: added {rep['st']}")
                    continue
                prev = old["frags"][f][r]
                if rep["st"] == ASSIGNED and (prev["st"] != ASSIGNED or prev["node"] != rep["node"]):
                    cleared = dict(prev, st=PENDING, node="") if prev["st"] != PENDING else prev
                    probe["frags"][f][r] = cleared
                    why = qualifies(before, probe, f, r, rep["node"])
                    if why:
                        out.append(f"{jid} fragment {f} replica {r}: assigned to a node that did not "
                                   f"qualify: {why}")
                    probe["frags"][f][r] = rep
                if rep["st"] in (R_DONE, R_FAILED) and prev["st"] not in (R_DONE, R_FAILED):
                    m = before.members.get(rep["node"])
                    if prev["st"] != ASSIGNED or prev["node"] != rep["node"]:
                        out.append(f"{jid} fragment {f} replica {r}: result from unassigned {rep['node']}")
                    elif m is None or m.status != ADMITTED:
                        out.append(f"{jid} fragment {f} replica {r}: result from non-admitted {rep['node']}")
        if j["status"] == DONE and old["status"] != DONE and incomplete(before, old):
            out.append(f"{jid}: completed while {incomplete(before, old)}")
    return out
