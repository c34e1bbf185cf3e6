"""Job specs: a versioned TOML (or JSON) file, validated with every error named, and the split
of a job's input into fragments.

Rules
-----
- Validation collects *every* error, each with the dotted path of the field and why
  (:class:`SpecError`), never only the first: a user fixes a spec in one pass.
- Unknown keys are errors (a typo must not silently fall back to a default).
- Relative paths are relative to the spec file's directory. With ``check_files`` (the default
  when loading a file) the module's bytes must hash to the declared sha256, the input file or
  directory must exist, and a directory split must hold 1..MAX_FRAGMENTS files.
- Prices are integers in micro-units; ``min_score`` is on the 0..100 scale nodes publish (the
  scheduler compares it, times 10, with the committed permille score).
- :func:`split_input` is pure and deterministic: byte splits concatenate back to the input,
  record splits never cut a line, and there are never more fragments than asked.

The format (docs/tasks.md, "Job spec")::

    version = 1
    redundancy = 2                 # each fragment on r distinct nodes of distinct providers
    quorum = 2                     # agreeing replicas that accept a fragment (> r/2; default r)
    max_replicas = 4               # replicas a fragment may reach when they disagree (default r)
    adaptive = true                # trusted nodes run fragments alone (BOINC's adaptive replication)
    spot_check = 0.1               # with adaptive: share of a trusted node's fragments replicated anyway
    queue_timeout_s = 300          # how long the job may wait for nodes
    [module]   path = "wc.wasm"   sha256 = "<64 hex>"
    [input]    path = "book.txt"  # or object = "<32 hex>" (a stored object), or a directory
    [split]    mode = "records"   fragments = 8     # bytes | records | files
    [requirements] tee_kinds = ["sev-snp"]  min_score = 60  cores = 1  memory_mib = 256 ...
    [limits]   fuel = 10_000_000_000  memory_mib = 256  wall_time_s = 60  max_output_bytes = 16777216
    [aggregation] kind = "merge-counts"   # or kind = "wasm", module = "r.wasm", sha256 = "..."
    [weights]  score = 400 ...          # optional overrides of the scheduler's weights
    [privacy]  dataset = "census"  kind = "mean"  epsilon = 0.5  lower = 0  upper = 120
               # optional: the result is then this differentially private statistic over the
               # records (lines) the fragments output, charged to the data set's budget
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2

from consensus import budgets, trust
from consensus.scheduler import MAX_FRAGMENTS, MAX_REDUNDANCY, WEIGHT_NAMES, Requirements, Weights
from consensus.tasks import (
    MAX_ATTEMPTS,
    MAX_FUEL,
    MAX_LIMIT_MEMORY_MIB,
    MAX_OUTPUT_BYTES,
    MAX_REPLICAS_PER_JOB,
    MAX_WALL_TIME_MS,
    JobLimits,
    Privacy,
    SubmitJob,
)
from node.tasks.private_query import PrivateQuery, encode_query

SPEC_VERSION = 1
MAX_SPEC_BYTES = 256 * 1024
MAX_MODULE_BYTES = 64 * 1024 * 1024
OBJECT_ID_HEX_CHARS = 32  # node/shards/crypto.py OBJECT_ID_BYTES = 16, as hex
SPLIT_MODES = ("bytes", "records", "files")
BUILTIN_AGGREGATIONS = ("concat", "sum", "count", "mean", "min", "max", "histogram", "merge-counts")
AGGREGATIONS = (*BUILTIN_AGGREGATIONS, "wasm")
MAX_WALL_TIME_S = MAX_WALL_TIME_MS // 1000
MAX_QUEUE_TIMEOUT_S = 7 * 24 * 3600
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


class SpecError(ValueError):
    """A job spec is invalid. ``errors`` lists every problem as (path, why)."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid job spec:\n" + "\n".join(f"  {p}: {w}" for p, w in self.errors))


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    path: str
    sha256: str  # lowercase hex


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Exactly one of ``path`` (a file, or a directory for split mode ``files``) and
    ``object_id`` (hex of a stored object's id: the owner's node fetches it as ``get`` does)."""

    path: str = ""
    object_id: str = ""


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    mode: str = "bytes"
    fragments: int = 1  # for ``files``: the number of files, set when the directory was read


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per fragment: WASM fuel, linear memory, wall-clock time and output size."""

    fuel: int = 10_000_000_000
    memory_mib: int = 256
    wall_time_ms: int = 60_000
    max_output_bytes: int = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class AggregationSpec:
    kind: str = "concat"
    module: ModuleSpec | None = None  # the reducer, for kind "wasm"
    bin_width: str = ""  # histogram of numbers: decimal bin width ("" = count lines as keys)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    version: int
    module: ModuleSpec
    input: InputSpec
    split: SplitSpec
    requirements: Requirements
    limits: Limits
    redundancy: int
    aggregation: AggregationSpec
    queue_timeout_s: int
    weights: Weights
    max_attempts: int = 3
    name: str = ""
    privacy: PrivateQuery | None = None  # the result is this query's noisy answer
    quorum: int = 0          # agreeing replicas that accept a fragment (0: all of redundancy)
    max_replicas: int = 0    # replicas a fragment may reach on disagreement (0: redundancy)
    adaptive: bool = False   # adaptive replication (consensus/trust.py)
    spot_check_ppm: int = 0  # with adaptive: the spot-check rate, parts per million

    def digest(self) -> bytes:
        """SHA-256 of the canonical CBOR of every field: the spec digest committed with the job."""
        return hashlib.sha256(cbor2.dumps(dataclasses.asdict(self), canonical=True)).digest()

    @property
    def module_hash(self) -> bytes:
        return bytes.fromhex(self.module.sha256)


class _Errors:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, why: str) -> None:
        self.items.append((path, why))


def _table(raw: Mapping[str, Any], key: str, errs: _Errors, allowed: Sequence[str],
           required: bool = False) -> Mapping[str, Any]:
    v = raw.get(key)
    if v is None:
        if required:
            errs.add(key, "missing table")
        return {}
    if not isinstance(v, Mapping):
        errs.add(key, f"expected a table, got {type(v).__name__}")
        return {}
    for k in v:
        if k not in allowed:
            errs.add(f"{key}.{k}", f"unknown key (expected one of {', '.join(allowed)})")
    return v


def _int(t: Mapping[str, Any], path: str, key: str, errs: _Errors, lo: int, hi: int,
         default: int | None = None) -> int:
    v = t.get(key, default)
    where = f"{path}.{key}" if path else key
    if v is None:
        errs.add(where, "missing")
        return lo
    if type(v) is not int:
        errs.add(where, f"expected an integer, got {type(v).__name__}")
        return lo
    if not lo <= v <= hi:
        errs.add(where, f"{v} outside {lo}..{hi}")
        return lo
    return v


def _str(t: Mapping[str, Any], path: str, key: str, errs: _Errors, default: str | None = None,
         max_len: int = 4096) -> str:
    v = t.get(key, default)
    where = f"{path}.{key}" if path else key
    if v is None:
        errs.add(where, "missing")
        return ""
    if not isinstance(v, str):
        errs.add(where, f"expected a string, got {type(v).__name__}")
        return ""
    if len(v) > max_len:
        errs.add(where, f"longer than {max_len} characters")
        return ""
    return v


def _names(t: Mapping[str, Any], path: str, key: str, errs: _Errors,
           choices: Sequence[str] | None = None) -> tuple[str, ...]:
    v = t.get(key, [])
    where = f"{path}.{key}"
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        errs.add(where, "expected a list of strings")
        return ()
    if len(v) > 64 or any(not x or len(x) > 64 for x in v):
        errs.add(where, "at most 64 names of 1..64 characters")
        return ()
    if len(set(v)) != len(v):
        errs.add(where, "duplicate names")
    if choices is not None:
        for x in v:
            if x not in choices:
                errs.add(where, f"{x!r} is not one of {', '.join(choices)}")
    return tuple(v)


def _resolve(base: Path | None, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _module(t: Mapping[str, Any], path: str, errs: _Errors, base: Path | None, check_files: bool,
            path_key: str = "path") -> ModuleSpec:
    p = _str(t, path, path_key, errs)
    digest = _str(t, path, "sha256", errs).lower()
    if p and not p.endswith(".wasm"):
        errs.add(f"{path}.{path_key}", f"{p!r} is not a .wasm file")
    if digest and not _HEX64.match(digest):
        errs.add(f"{path}.sha256", "expected 64 hex digits (the module's SHA-256)")
        digest = ""
    if p and check_files:
        f = _resolve(base, p)
        try:
            size = f.stat().st_size
            if size > MAX_MODULE_BYTES:
                errs.add(f"{path}.{path_key}", f"{size} bytes > {MAX_MODULE_BYTES}")
            elif digest:
                actual = hashlib.sha256(f.read_bytes()).hexdigest()
                if actual != digest:
                    errs.add(f"{path}.sha256", f"does not match {p}: the file hashes to {actual}")
        except OSError as exc:
            errs.add(f"{path}.{path_key}", f"cannot read {p}: {exc.strerror or exc}")
    resolved = str(_resolve(base, p)) if p else ""
    return ModuleSpec(resolved, digest)


def parse_spec(text: str | bytes, *, fmt: str = "toml", base_dir: Path | str | None = None,
               check_files: bool = True) -> JobSpec:
    """Parse and validate a job spec.

    Args:
        text: the spec (TOML or JSON), at most MAX_SPEC_BYTES.
        fmt: "toml" or "json".
        base_dir: what relative paths are relative to.
        check_files: read the module (hash must match) and the input (must exist).

    Raises:
        SpecError: listing every problem, each with its field path.
    """
    raw_bytes = text.encode() if isinstance(text, str) else text
    if len(raw_bytes) > MAX_SPEC_BYTES:
        raise SpecError([("", f"spec of {len(raw_bytes)} bytes > {MAX_SPEC_BYTES}")])
    try:
        decoded = raw_bytes.decode()
        raw: Any = json.loads(decoded) if fmt == "json" else tomllib.loads(decoded)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise SpecError([("", f"not valid {fmt.upper()}: {exc}")]) from None
    if not isinstance(raw, dict):
        raise SpecError([("", "expected a table at the top level")])
    base = Path(base_dir) if base_dir is not None else None
    errs = _Errors()
    top = ("version", "name", "redundancy", "quorum", "max_replicas", "adaptive", "spot_check",
           "queue_timeout_s",
           "max_attempts", "module", "input",
           "split", "requirements", "limits", "aggregation", "weights", "privacy")
    for k in raw:
        if k not in top:
            errs.add(k, f"unknown key (expected one of {', '.join(top)})")
    version = raw.get("version")
    if version is None:
        errs.add("version", f"missing (this is version {SPEC_VERSION})")
    elif version != SPEC_VERSION or type(version) is not int:
        errs.add("version", f"{version!r} is not a known version (expected {SPEC_VERSION})")
    name = _str(raw, "", "name", errs, default="", max_len=128)

    mod = _module(_table(raw, "module", errs, ("path", "sha256"), required=True), "module", errs,
                  base, check_files)

    it = _table(raw, "input", errs, ("path", "object"), required=True)
    ipath, obj = _str(it, "input", "path", errs, default=""), _str(it, "input", "object", errs, default="")
    if bool(ipath) == bool(obj) and "input" in raw:
        errs.add("input", "give exactly one of path (a local file or directory) and object (a stored id)")
    if obj and not re.fullmatch(f"[0-9a-f]{{{OBJECT_ID_HEX_CHARS}}}", obj.lower()):
        errs.add("input.object", f"expected {OBJECT_ID_HEX_CHARS} hex digits (an object id from `put`)")

    sp = _table(raw, "split", errs, ("mode", "fragments"))
    mode = _str(sp, "split", "mode", errs, default="bytes")
    if mode and mode not in SPLIT_MODES:
        errs.add("split.mode", f"{mode!r} is not one of {', '.join(SPLIT_MODES)}")
    fragments = 1
    if mode == "files":
        if "fragments" in sp:
            errs.add("split.fragments", "not with mode files (one fragment per file)")
        if obj:
            errs.add("split.mode", "files needs input.path to be a directory, not a stored object")
    else:
        fragments = _int(sp, "split", "fragments", errs, 1, MAX_FRAGMENTS, default=1)

    resolved_input = ""
    if ipath:
        ip = _resolve(base, ipath)
        resolved_input = str(ip)
        if check_files:
            if mode == "files":
                if not ip.is_dir():
                    errs.add("input.path", f"{ipath} is not a directory (split mode files)")
                else:
                    n = len(directory_files(ip))
                    if not 1 <= n <= MAX_FRAGMENTS:
                        errs.add("input.path", f"{n} files, need 1..{MAX_FRAGMENTS}")
                    fragments = max(1, min(n, MAX_FRAGMENTS))
            elif not ip.is_file():
                errs.add("input.path", f"{ipath} is not a readable file")

    rq = _table(raw, "requirements", errs, ("tee_kinds", "min_score", "cores", "memory_mib",
                                            "accelerators", "regions", "providers",
                                            "max_price_core_s", "max_price_gib"))
    prices = {}
    for key in ("max_price_core_s", "max_price_gib"):
        prices[key] = _int(rq, "requirements", key, errs, 0, 2**40) if key in rq else None
    req = Requirements(
        tee_kinds=_names(rq, "requirements", "tee_kinds", errs, ("sev-snp", "tdx", "sgx", "sim")),
        min_score=10 * _int(rq, "requirements", "min_score", errs, 0, 100, default=0),
        cores=_int(rq, "requirements", "cores", errs, 1, 1024, default=1),
        memory_mib=_int(rq, "requirements", "memory_mib", errs, 1, 16 * 1024 * 1024, default=256),
        accelerators=_names(rq, "requirements", "accelerators", errs),
        regions=_names(rq, "requirements", "regions", errs),
        providers=_names(rq, "requirements", "providers", errs),
        max_price_core_s=prices["max_price_core_s"], max_price_gib=prices["max_price_gib"])

    lt = _table(raw, "limits", errs, ("fuel", "memory_mib", "wall_time_s", "max_output_bytes"))
    d = Limits()
    wall = lt.get("wall_time_s", d.wall_time_ms / 1000)
    wall_ms = d.wall_time_ms
    if type(wall) not in (int, float) or not 0 < wall <= MAX_WALL_TIME_S:
        errs.add("limits.wall_time_s", f"expected a number of seconds in (0, {MAX_WALL_TIME_S}]")
    else:
        wall_ms = max(1, round(wall * 1000))
    limits = Limits(
        fuel=_int(lt, "limits", "fuel", errs, 1, MAX_FUEL, default=d.fuel),
        memory_mib=_int(lt, "limits", "memory_mib", errs, 1, MAX_LIMIT_MEMORY_MIB, default=d.memory_mib),
        wall_time_ms=wall_ms,
        max_output_bytes=_int(lt, "limits", "max_output_bytes", errs, 1, MAX_OUTPUT_BYTES,
                              default=d.max_output_bytes))

    redundancy = _int(raw, "", "redundancy", errs, 1, MAX_REDUNDANCY, default=1)
    if fragments * redundancy > MAX_REPLICAS_PER_JOB:
        errs.add("redundancy", f"{fragments} fragments x {redundancy} > {MAX_REPLICAS_PER_JOB} replicas")
    quorum = _int(raw, "", "quorum", errs, 1, MAX_REDUNDANCY, default=redundancy)
    if "quorum" in raw and not redundancy < 2 * quorum <= 2 * redundancy:
        errs.add("quorum", f"more than half of redundancy ({redundancy}) and at most all of it")
    max_replicas = _int(raw, "", "max_replicas", errs, 1, MAX_REDUNDANCY, default=redundancy)
    if max_replicas < redundancy:
        errs.add("max_replicas", f"at least redundancy ({redundancy})")
    elif fragments * max_replicas > MAX_REPLICAS_PER_JOB:
        errs.add("max_replicas", f"{fragments} fragments x {max_replicas} > {MAX_REPLICAS_PER_JOB} replicas")
    adaptive, spot_ppm = _adaptive(raw, errs, redundancy)
    queue_timeout = _int(raw, "", "queue_timeout_s", errs, 1, MAX_QUEUE_TIMEOUT_S, default=300)
    max_attempts = _int(raw, "", "max_attempts", errs, 1, MAX_ATTEMPTS, default=3)

    ag = _table(raw, "aggregation", errs, ("kind", "module", "sha256", "bin_width"))
    kind = _str(ag, "aggregation", "kind", errs, default="concat")
    reducer = None
    bin_width = ""
    if kind and kind not in AGGREGATIONS:
        errs.add("aggregation.kind", f"{kind!r} is not one of {', '.join(AGGREGATIONS)}")
    if kind == "wasm":
        reducer = _module(ag, "aggregation", errs, base, check_files, path_key="module")
    elif "module" in ag or "sha256" in ag:
        errs.add("aggregation.module", f"only with kind wasm, not {kind}")
    if "bin_width" in ag:
        bw = ag["bin_width"]
        text_bw = str(bw) if type(bw) is int else bw if isinstance(bw, str) else ""
        if kind != "histogram":
            errs.add("aggregation.bin_width", "only with kind histogram")
        elif (not _DECIMAL.match(text_bw) or text_bw.startswith("-")
              or not any(c not in "0." for c in text_bw)):
            errs.add("aggregation.bin_width",
                     'expected a positive decimal (a string such as "0.5", or an integer)')
        else:
            bin_width = text_bw

    wt = _table(raw, "weights", errs, WEIGHT_NAMES)
    dw = Weights()
    weights = Weights(**{n: _int(wt, "weights", n, errs, 0, 1000, default=getattr(dw, n))
                         for n in WEIGHT_NAMES})
    if not any(dataclasses.astuple(weights)):
        errs.add("weights", "at least one weight must be positive")

    privacy = _privacy(raw, errs, kind if "aggregation" in raw else None)

    if errs.items:
        raise SpecError(errs.items)
    return JobSpec(SPEC_VERSION, mod, InputSpec(resolved_input, obj.lower()), SplitSpec(mode, fragments),
                   req, limits, redundancy, AggregationSpec(kind, reducer, bin_width), queue_timeout,
                   weights, max_attempts, name, privacy,
                   quorum if quorum != redundancy else 0, max_replicas if max_replicas != redundancy else 0,
                   adaptive, spot_ppm)


DEFAULT_SPOT_CHECK = "0.1"  # BOINC's adaptive replication measured 5-10 % overhead; see docs


def _adaptive(raw: Mapping[str, Any], errs: _Errors, redundancy: int) -> tuple[bool, int]:
    """``adaptive`` (a boolean) and ``spot_check`` (a number in [0, 1], at most six decimal
    places; default 0.1, only with ``adaptive = true``): (adaptive, rate in ppm)."""
    adaptive = raw.get("adaptive", False)
    if type(adaptive) is not bool:
        errs.add("adaptive", "expected true or false")
        adaptive = False
    elif adaptive and redundancy < 2:
        errs.add("adaptive", f"needs redundancy 2 or more (the replicas of a fragment that is "
                             f"checked), not {redundancy}")
    if "spot_check" not in raw:
        return adaptive, trust.rate_ppm(DEFAULT_SPOT_CHECK) if adaptive else 0
    v = raw["spot_check"]
    if type(v) not in (int, float):
        errs.add("spot_check", "expected a number in 0..1 (a share of fragments, e.g. 0.1)")
        return adaptive, 0
    try:
        ppm = trust.rate_ppm(v)
    except ValueError as exc:
        errs.add("spot_check", f"{exc} (a share of fragments, e.g. 0.1)")
        return adaptive, 0
    if raw.get("adaptive") is not True:
        errs.add("spot_check", "only with adaptive = true")
    return adaptive, ppm


def _privacy(raw: Mapping[str, Any], errs: _Errors, aggregation: str | None) -> PrivateQuery | None:
    """The optional ``[privacy]`` table: the job's result is then a differentially private
    release over the records (lines) its fragments output, in place of an aggregation."""
    if "privacy" not in raw:
        return None
    pt = _table(raw, "privacy", errs, ("dataset", "kind", "epsilon", "lower", "upper",
                                       "categories", "contributions"))
    if aggregation is not None and aggregation != "concat":
        errs.add("aggregation.kind", "not with [privacy]: the release over the fragments' records "
                                     "is the result (leave out [aggregation])")

    def number(key: str) -> float | None:
        v = pt.get(key)
        if v is None:
            return None
        if type(v) not in (int, float):
            errs.add(f"privacy.{key}", "expected a number")
            return None
        return float(v)

    cats = pt.get("categories", [])
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        errs.add("privacy.categories", "expected a list of strings")
        cats = []
    contributions = pt.get("contributions", 1)
    if type(contributions) is not int:
        errs.add("privacy.contributions", "expected an integer")
        contributions = 1
    eps = number("epsilon")
    if "epsilon" not in pt:
        errs.add("privacy.epsilon", "missing: the privacy loss this query may spend")
    q = PrivateQuery(_str(pt, "privacy", "dataset", errs, default=""),
                     _str(pt, "privacy", "kind", errs, default=""),
                     eps if eps is not None else 0.0, number("lower"), number("upper"),
                     tuple(cats), contributions)
    for problem in q.problems():
        field, _, why = problem.partition(": ")
        if not any(path == field for path, _ in errs.items):
            errs.add(field, why)
    return q


def submit_command(spec: JobSpec, *, job_id: str, owner: str, fragments: Sequence[bytes],
                   now_ms: int) -> SubmitJob:
    """The command that commits ``spec`` as job ``job_id`` of client node ``owner``, once its
    input was split into ``fragments`` (maybe fewer than asked), queued until the manager's clock
    ``now_ms`` plus the spec's queue timeout. Each fragment's SHA-256 is committed with it."""
    if not fragments:
        raise ValueError("a job has at least one fragment")
    lim = spec.limits
    return SubmitJob(job_id, owner, spec.digest(), spec.module_hash, len(fragments), spec.redundancy,
                     spec.requirements, spec.weights, now_ms + 1000 * spec.queue_timeout_s,
                     spec.max_attempts, spec.input.object_id, max(len(f) for f in fragments),
                     input_hashes=tuple(hashlib.sha256(f).digest() for f in fragments),
                     limits=JobLimits(lim.fuel, lim.memory_mib, lim.wall_time_ms, lim.max_output_bytes),
                     aggregation=spec.aggregation.kind, bin_width=spec.aggregation.bin_width,
                     name=spec.name,
                     reducer_hash=(bytes.fromhex(spec.aggregation.module.sha256)
                                   if spec.aggregation.module is not None else b""),
                     privacy=private_job(spec.privacy) if spec.privacy is not None else None,
                     quorum=spec.quorum, max_replicas=spec.max_replicas,
                     adaptive=spec.adaptive, spot_check_ppm=spec.spot_check_ppm)


def private_job(q: PrivateQuery) -> Privacy:
    """The ``privacy`` of the submit command for ``q``: its charge is the loss OpenDP's map
    reports, rounded up to the ledger's unit (the manager recomputes it before charging)."""
    from node.tasks.privacy import loss  # OpenDP loads only for a private job

    eps_units, _ = budgets.to_units(loss(q))
    return Privacy(q.dataset, q.kind, eps_units, encode_query(q))


def load_spec(path: Path | str, *, check_files: bool = True) -> JobSpec:
    """Read and validate a spec file (JSON when it ends in ``.json``, TOML otherwise)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([("", f"cannot read {p}: {exc.strerror or exc}")]) from None
    fmt = "json" if p.suffix.lower() == ".json" else "toml"
    return parse_spec(data, fmt=fmt, base_dir=p.parent, check_files=check_files)


def render_spec(module: Path, input_path: Path, *, fragments: int | None, split: str = "bytes",
                aggregation: str = "concat", name: str | None = None, top: str = "",
                reducer: Path | None = None, extra: str = "") -> str:
    """A TOML spec over ``input_path`` that runs ``module`` (its SHA-256 read from the file):
    what the demo, the chaos clients and the tests submit. ``fragments`` None (split mode
    ``files``) leaves the count out; ``top`` adds top-level lines (``redundancy = 2``, say);
    ``reducer`` is the module of ``aggregation = "wasm"``; ``extra`` is appended (more tables)."""

    def pinned(key: str, path: Path) -> str:
        return f'{key} = "{path}"\nsha256 = "{hashlib.sha256(path.read_bytes()).hexdigest()}"\n'

    return ("version = 1\n" + (f"name = {json.dumps(name, ensure_ascii=False)}\n" if name else "") + top
            + f"[module]\n{pinned('path', module)}"
            + f'[input]\npath = "{input_path}"\n'
            + f'[split]\nmode = "{split}"\n' + (f"fragments = {fragments}\n" if fragments is not None else "")
            + f'[aggregation]\nkind = "{aggregation}"\n'
            + (pinned("module", reducer) if reducer else "") + extra)


# --------------------------------------------------------------------------- splitting


def split_input(data: bytes, split: SplitSpec) -> list[bytes]:
    """Cut ``data`` into at most ``split.fragments`` fragments, deterministically.

    ``bytes``: sizes differ by at most one byte, the first ones larger; concatenation restores
    the input; fewer fragments when the input has fewer bytes than asked (never an empty one,
    except a single empty fragment for an empty input). ``records``: cut only just after a
    newline, aiming at equal sizes; a line (even the last, unterminated) is never cut, so a
    long line makes fewer, unequal fragments.
    """
    n = split.fragments
    if n < 1:
        raise ValueError("need at least one fragment")
    if not data:
        return [b""]
    if split.mode == "bytes":
        n = min(n, len(data))
        q, rem = divmod(len(data), n)
        out, pos = [], 0
        for i in range(n):
            size = q + (1 if i < rem else 0)
            out.append(data[pos:pos + size])
            pos += size
        return out
    if split.mode == "records":
        out, pos = [], 0
        for i in range(1, n):
            target = len(data) * i // n
            if target <= pos:
                continue
            nl = data.find(b"\n", target - 1)
            if nl < 0:
                break
            cut = nl + 1
            if cut >= len(data):
                break
            if cut > pos:
                out.append(data[pos:cut])
                pos = cut
        out.append(data[pos:])
        return out
    raise ValueError(f"split mode {split.mode!r} does not split bytes (files: one fragment per file)")


def directory_files(path: Path) -> list[Path]:
    """The regular files directly in ``path``, in name order: the fragments of a ``files``
    split (hidden files and subdirectories are skipped)."""
    return sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.name)
