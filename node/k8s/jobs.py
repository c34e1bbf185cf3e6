"""``EnclaveJob``: a job spec as a Kubernetes resource, submitted through a node's control API
and mirrored back from ``jobs describe``. Pure functions, no kopf and no I/O.

Theory of operation
-------------------
A resource's ``spec.job`` is the job spec of docs/tasks.md ("Job spec") as a YAML object: the
same keys, checked by the same parser (:func:`node.tasks.spec.parse_spec`) with every problem
named. Two additions fit a cluster, where the operator and the person writing the resource do
not share a file system:

- a relative ``module.path`` (and aggregation ``module``) names a module shipped with the node
  (``node/workload/examples``, e.g. ``wordcount.wasm``), not a file beside a spec file;
- ``spec.inputText`` (at most :data:`MAX_INLINE_INPUT_BYTES` of UTF-8) is the input when
  ``job.input`` is absent; the operator writes it next to the spec it hands the node.

:func:`plan` maps (spec, status) to one action: ``invalid`` (status says why; nothing is sent),
``submit``, ``poll`` (a submitted, live job), ``export`` (done: write its result out) or
``none`` (ended). :func:`status_from_describe` turns ``task-describe``'s answer into the
resource's status. A resource whose spec is invalid gets phase ``Invalid`` and its reasons; the
operator goes on with every other resource.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.tasks.spec import MAX_SPEC_BYTES, SpecError, parse_spec

MAX_INLINE_INPUT_BYTES = 256 * 1024  # a Kubernetes object is stored in etcd (≤ 1.5 MiB)
MAX_REASONS = 16         # reasons kept in a status (a spec with 200 errors shows the first 16)
MAX_REASON_CHARS = 400
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "workload" / "examples"

# Phases of the resource. The job's own statuses (consensus/tasks.py) map onto them.
INVALID, PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "Invalid", "Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled")
PHASE_OF_STATUS = {"queued": QUEUED, "running": RUNNING, "done": SUCCEEDED, "failed": FAILED,
                   "cancelled": CANCELLED}
TERMINAL_PHASES = (INVALID, SUCCEEDED, FAILED, CANCELLED)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A valid job: the JSON spec to write for the node, and the inline input if any."""

    spec_json: str
    input_bytes: bytes | None


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str  # "invalid" | "submit" | "poll" | "export" | "none"
    reasons: tuple[str, ...] = ()
    prepared: Prepared | None = None
    job_id: str = ""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _reasons(errors: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    out = [_clip(f"{path or 'spec'}: {why}") for path, why in errors[:MAX_REASONS]]
    if len(errors) > MAX_REASONS:
        out.append(f"... and {len(errors) - MAX_REASONS} more")
    return tuple(out)


def prepare(spec: Mapping[str, Any], *, workdir: Path, examples_dir: Path = EXAMPLES_DIR,
            check_files: bool = True) -> Prepared:
    """Check an ``EnclaveJob`` spec and build what the node is handed.

    Args:
        spec: the resource's ``spec``: ``job`` (the job spec object) and optional ``inputText``.
        workdir: where the operator will write the spec and input (paths in the JSON point there).
        examples_dir: what relative module paths are relative to.
        check_files: read modules (their sha256 must match) and check input paths exist.

    Raises:
        SpecError: every problem, each with its field path (``job.module.sha256``, ...).
    """
    errs: list[tuple[str, str]] = []
    unknown = sorted(set(spec) - {"job", "inputText"})
    errs += [(k, "unknown key (expected job, inputText)") for k in unknown]
    job = spec.get("job")
    if not isinstance(job, Mapping):
        raise SpecError([*errs, ("job", "missing: the job spec (docs/tasks.md, 'Job spec')")])
    doc: dict[str, Any] = json.loads(json.dumps(dict(job)))  # a deep, JSON-only copy
    text = spec.get("inputText")
    data: bytes | None = None
    if text is not None:
        if not isinstance(text, str):
            errs.append(("inputText", "expected a string"))
        elif "input" in doc:
            errs.append(("inputText", "give the input either here or as job.input, not both"))
        else:
            data = text.encode()
            if len(data) > MAX_INLINE_INPUT_BYTES:
                errs.append(("inputText", f"{len(data)} bytes > {MAX_INLINE_INPUT_BYTES}; "
                             "store big inputs with `enclave-swarm put` and name the object"))
                data = None
            else:
                doc["input"] = {"path": str(workdir / "input")}
    elif "input" not in doc:
        errs.append(("job.input", "missing (or give spec.inputText)"))
    _module_paths(doc, examples_dir)
    spec_json = json.dumps(doc, sort_keys=True)
    if len(spec_json.encode()) > MAX_SPEC_BYTES:
        errs.append(("job", f"larger than {MAX_SPEC_BYTES} bytes"))
    # the input file is written only after this check: its path cannot be checked yet
    check_input = check_files and data is None
    found: list[tuple[str, str]] = []
    try:
        parse_spec(spec_json, fmt="json", base_dir=workdir, check_files=False)
    except SpecError as exc:
        found += exc.errors
    if check_files:  # the files' checks too, whatever else is wrong: every problem in one pass
        try:
            _check_files(doc, workdir, check_input)
        except SpecError as exc:
            found += [e for e in exc.errors if e not in found]
    errs += [(f"job.{p}" if p else "job", w) for p, w in found]
    if errs:
        raise SpecError(errs)
    return Prepared(spec_json, data)


def _module_paths(doc: dict[str, Any], examples_dir: Path) -> None:
    """Relative module paths name the node's shipped examples (resolved in place)."""
    for table, key in ((doc.get("module"), "path"), (doc.get("aggregation"), "module")):
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key] \
                and not Path(table[key]).is_absolute():
            if "/" in table[key] or table[key].startswith("."):
                continue  # parse_spec names it (not a plain example name): keep it as written
            table[key] = str(examples_dir / table[key])


def _check_files(doc: dict[str, Any], workdir: Path, check_input: bool) -> None:
    """The file checks of parse_spec, with the input's left out when the operator writes it."""
    if check_input:
        parse_spec(json.dumps(doc), fmt="json", base_dir=workdir, check_files=True)
        return
    probe = {**doc, "input": {"object": "0" * 32}}  # stands for the input not written yet
    parse_spec(json.dumps(probe), fmt="json", base_dir=workdir, check_files=True)


def plan(spec: Mapping[str, Any], status: Mapping[str, Any], *, workdir: Path,
         examples_dir: Path = EXAMPLES_DIR) -> Action:
    """What to do next for one resource, from its spec and its current status."""
    phase = status.get("phase")
    job_id = status.get("jobId") or ""
    if phase == INVALID:
        return Action("none")
    if job_id:
        if phase == SUCCEEDED:
            return Action("none" if status.get("result") else "export", job_id=job_id)
        if phase in TERMINAL_PHASES:
            return Action("none", job_id=job_id)
        return Action("poll", job_id=job_id)
    try:
        prepared = prepare(spec, workdir=workdir, examples_dir=examples_dir)
    except SpecError as exc:
        return Action("invalid", reasons=_reasons(exc.errors))
    return Action("submit", prepared=prepared)


def invalid_status(reasons: Sequence[str]) -> dict[str, Any]:
    return {"phase": INVALID, "reasons": list(reasons)[:MAX_REASONS + 1],
            "message": "the job spec is invalid; fix it in a new resource (the spec is immutable)"}


def submit_failed_status(error: str, errors: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """The node refused the job: a spec problem it found (input unreadable, ...) is final."""
    reasons = [_clip(f"{e[0]}: {e[1]}") for e in errors[:MAX_REASONS] if len(e) == 2] or [_clip(error)]
    return {"phase": INVALID, "reasons": reasons, "message": "the node refused the job"}


def submitted_status(job_id: str, pod: str, peer_id: str) -> dict[str, Any]:
    return {"phase": QUEUED, "jobId": job_id, "node": {"pod": pod, "peerId": peer_id},
            "reasons": []}


def status_from_describe(job: Mapping[str, Any]) -> dict[str, Any]:
    """The status fields mirrored from ``task-describe`` (``jobs describe --json``)."""
    total = int(job.get("fragments", 0)) * int(job.get("redundancy", 1))
    phase = PHASE_OF_STATUS.get(str(job.get("status")), PENDING)
    reasons: list[str] = []
    if job.get("reason"):
        reasons.append(_clip(str(job["reason"])))
    if job.get("waiting") and phase == QUEUED:
        reasons.append(_clip(f"waiting: {job['waiting']}"))
    for r in job.get("replicas", []):
        if r.get("state") == "failed" and r.get("error") and len(reasons) < MAX_REASONS:
            reasons.append(_clip(f"fragment {r['fragment']} replica {r['replica']} on "
                                 f"{r['node']}: {r['error']}"))
    for x in job.get("integrity", []):
        if len(reasons) < MAX_REASONS:
            reasons.append(_clip(f"integrity: fragment {x.get('fragment')} on {x.get('node')}: "
                                 f"{x.get('kind')}"))
    out: dict[str, Any] = {
        "phase": phase, "jobStatus": str(job.get("status", "unknown")),
        "fragments": {"total": total, "done": int(job.get("done", 0)),
                      "failed": int(job.get("failed", 0))},
        "reasons": reasons,
    }
    if job.get("result_hash"):
        out["resultSha256"] = str(job["result_hash"])
        out["resultBytes"] = int(job.get("result_bytes", 0))
    return out


def result_status(pod: str, path: str, n_bytes: int, sha256: str) -> dict[str, Any]:
    """Where the exported result is: ``kubectl cp <namespace>/<pod>:<path> ./result``."""
    return {"result": {"pod": pod, "path": path, "bytes": n_bytes, "sha256": sha256}}


def result_path(results_dir: Path, namespace: str, name: str, job_id: str) -> Path:
    """The exported result's file: one per resource and job, in the results directory."""
    return results_dir / f"{_safe(namespace)}.{_safe(name)}.{_safe(job_id)}.result"


def job_workdir(root: Path, namespace: str, name: str, uid: str) -> Path:
    return root / f"{_safe(namespace)}.{_safe(name)}.{_safe(uid)[:12]}"


def _safe(s: str) -> str:
    """Kubernetes names are DNS labels already; anything else is reduced to be sure."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)[:80] or "_"
