"""Runtime integrity monitoring in the replicated state: robust statistics, findings, penalties.

Theory of operation
-------------------
Every committed job-done (consensus/tasks.py ``_done``) hands this module the job and, per
fragment, the agreed output (None when the fragment has none). :func:`observe_job` is a pure
function of the state and that job, replayed by every member, so a successor manager holds the
same statistics, findings and penalties as its predecessor. It:

1. **Judges** every replica of an agreed fragment against the statistics held *before* the job
   (a job never masks its own outliers):

   - a done replica whose output is not the agreed one: a ``minority`` finding;
   - a failed replica whose error is a deterministic limit (fuel, memory, output size) while the
     quorum finished: a ``limit`` finding; a trap or a non-zero exit: a ``trap`` finding
     (a wall-clock deadline is not one: a slow node is slow, not lying; nor is a busy engine
     or a worker that died);
   - an agreeing replica whose profile is an outlier (below): an ``outlier`` finding. At most
     one finding per replica, the strongest first (minority, then the metric with the highest
     robust z-score);
   - an agreeing replica without a finding is a *good result*: it decays its node's penalty.

2. **Learns**: the profiles of the agreeing replicas join their statistics window.

A result whose signature does not verify never reaches the state as a result; the manager
commits :class:`ReportBadSignature` instead (the replica stays assigned until the manager moves
it), a ``bad-signature`` finding on the manager's word alone (only it saw the bytes).

**Statistics.** Per module (hash) and input-size bucket (the bit length of the job's largest
fragment in bytes: powers of two), four metrics: fuel used, peak memory, wall time and output
size, each a window of the last :data:`WINDOW` samples (integers). With ``m`` the window's
median and ``MAD`` its median absolute deviation, a sample ``x`` is an outlier when

    |x − m| / (1.4826 · max(MAD, floor)) > :data:`Z_MAX` (= 6)

and the window holds at least :data:`MIN_SAMPLES` samples. ``floor`` =
max(absolute floor, median × relative floor) of the metric (:data:`FLOORS`): identical samples
give MAD = 0, and without a floor any jitter would be infinitely far out. Only fuel, memory
and output size are judged (:data:`JUDGED`); wall time is kept, with a wide floor (25 % of the
median, 20 ms) for its z-score in the status, but never makes a finding: it measures the host
(its speed and load) as much as the workload, and extra work shows in the fuel, counted
instruction by instruction. Fuel, memory and output size
are deterministic for one module and one input, but a key holds every input whose size falls
in one power-of-two bucket, and these metrics grow with the input: two honest jobs of a module
can differ by 2x (and a few percent of content) inside one bucket, and the window is mostly the
last job or two. Their floor is therefore 15 % of the median: a full bucket's 2.2x then scores
1.2 / (1.4826 · 0.15) = 5.4 < 6, so a size difference alone is never an outlier, while 2.4x and
beyond still is. (With 1-2 % floors the simulator's tasks scenario measured ~6,000 false
findings per 10,000 fragments, docs/simulator.md.) The z-score is computed in
integers (thousandths), so every replica agrees to the bit. At most :data:`MAX_KEYS` keys are
kept; the least recently updated is forgotten first.

**Penalties** (the score's integrity input, node/attestation/score.py). Per node an integer
penalty in thousandths of a score point: a finding adds its kind's weight (:data:`WEIGHTS`,
points), a good result multiplies it by 2^(−1/:data:`HALF_LIFE_RESULTS`) (integer arithmetic,
rounded down; capped at :data:`MAX_PENALTY`). Decay counts the node's own good results, not
seconds: the state reads no clock, and a node that does no work does not earn forgiveness.

**Findings** are kept in a bounded log (:data:`MAX_LOG`, oldest dropped), each with a
monotonically increasing id, the subject node, the kind, job, fragment, replica, its evidence,
and the manager term and manager id that committed it: what a gossiped finding is checked
against (node/tasks/findings.py).

Rules
-----
- Pure and deterministic: no clock, no randomness, integers only, plain CBOR values in
  ``SwarmState.ext["integrity"]``.
- Bounded: :data:`MAX_KEYS` statistics keys × 4 metrics × :data:`WINDOW` samples,
  :data:`MAX_LOG` findings, :data:`MAX_NODES` nodes with a standing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from consensus.state import (
    ADMITTED,
    MAX_ID_LEN,
    REVOKED,
    SUSPECT,
    CommandRegistry,
    RecordScore,
    Rejected,
    Revoke,
    SwarmState,
)

SECTION = "integrity"

MINORITY, OUTLIER, LIMIT, TRAP, BAD_SIGNATURE = "minority", "outlier", "limit", "trap", "bad-signature"
KINDS = (MINORITY, OUTLIER, LIMIT, TRAP, BAD_SIGNATURE)

# Weights in score points (0..100 scale). Why each:
# - minority: the node signed an output that an honest quorum contradicts: the strongest
#   evidence of lying (or broken hardware). Three in a row take any node from 100 below 60.
# - bad-signature: a result that does not verify under the node's own key; on the manager's
#   word alone (nobody else saw it), so a little below a minority.
# - limit, trap: the same deterministic module and input ran within its limits elsewhere.
# - outlier: statistical; honest nodes produce some, so it weighs little and decays.
WEIGHTS: Mapping[str, int] = {
    MINORITY: 20,
    BAD_SIGNATURE: 15,
    LIMIT: 10,
    TRAP: 10,
    OUTLIER: 5,
}
HALF_LIFE_RESULTS = 50           # good results that halve a node's penalty
# 2^(-1/50) = 0.986232...; in 1e-6 units, rounded down (the decay is at least that fast).
DECAY_PPM = 986_232
MILLI = 1000                     # penalties are kept in thousandths of a point
MAX_PENALTY = 100 * MILLI        # a penalty beyond 100 points says nothing more

WINDOW = 32                      # samples kept per metric and key
MIN_SAMPLES = 8                  # no outlier is flagged before the window holds this many
Z_MAX_MILLI = 6000               # robust z-score threshold (6.0), in thousandths
MAD_SCALE_E4 = 14826             # 1.4826 (MAD -> standard deviation of a normal), x 10^4
METRICS = ("fuel", "memory", "wall_ms", "output_bytes")
# The metrics an outlier is a finding on: those the module and its input decide. Wall time is
# kept (and shown) but never judged: it measures the host -- its speed, its load -- as much as
# the workload, and a workload doing more than it should shows in its fuel, which is counted
# instruction by instruction. With wall time judged (floor 25 %), honest nodes with noisy
# timing drew 10 findings per 10,000 fragments in the simulator (docs/benchmarks.md), and a
# slow but honest node a finding on most of its fragments, which would in time revoke it.
JUDGED = frozenset({"fuel", "memory", "output_bytes"})
# (absolute floor, relative floor in permille of the median) for each metric's MAD
FLOORS: Mapping[str, tuple[int, int]] = {
    "fuel": (1000, 150),
    "memory": (65536, 150),
    "wall_ms": (20, 250),
    "output_bytes": (16, 150),
}
MAX_KEYS = 256
MAX_LOG = 512
MAX_NODES = 4096
MAX_ERR = 200
MAX_SIG = 64

LIMIT_ERRORS = ("out_of_fuel", "memory_limit", "output_too_large")
TRAP_ERRORS = ("trap", "exit_code")


# --------------------------------------------------------------------------- robust statistics


def median(xs: Sequence[int]) -> int:
    """The median of integers, rounded down for an even count (integer, deterministic)."""
    if not xs:
        raise ValueError("median of nothing")
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def mad(xs: Sequence[int], med: int | None = None) -> int:
    """Median absolute deviation from the median."""
    m = median(xs) if med is None else med
    return median([abs(x - m) for x in xs])


def mad_floor(metric: str, med: int) -> int:
    absolute, permille = FLOORS[metric]
    return max(absolute, abs(med) * permille // 1000, 1)


def robust_z_milli(x: int, window: Sequence[int], metric: str) -> int:
    """|x − median| / (1.4826 · max(MAD, floor)) in thousandths, rounded down."""
    med = median(window)
    spread = max(mad(window, med), mad_floor(metric, med))
    return abs(x - med) * 10_000_000 // (MAD_SCALE_E4 * spread)


def outlier(x: int, window: Sequence[int], metric: str) -> int:
    """The robust z-score (thousandths) of ``x`` when it is an outlier against ``window``, else
    0: never before :data:`MIN_SAMPLES` samples."""
    if len(window) < MIN_SAMPLES:
        return 0
    z = robust_z_milli(x, window, metric)
    return z if z > Z_MAX_MILLI else 0


# --------------------------------------------------------------------------- penalties


def step_penalty(pen: int, event: str) -> int:
    """The penalty (thousandths of a point) after one event: a finding kind adds its weight, the
    event ``good`` (a good result) decays it. The one rule the state and the score share."""
    if event == "good":
        return pen * DECAY_PPM // 1_000_000
    return min(MAX_PENALTY, pen + WEIGHTS[event] * MILLI)


def penalty_points(pen_milli: int) -> int:
    """A penalty in score points, rounded up (a finding is never forgiven by rounding)."""
    return -(-max(0, pen_milli) // MILLI)


# --------------------------------------------------------------------------- state helpers


def _section(s: SwarmState) -> Mapping[str, Any]:
    sec = s.ext.get(SECTION)
    return sec if isinstance(sec, Mapping) else {}


def _with(s: SwarmState, sec: dict[str, Any]) -> SwarmState:
    ext = dict(s.ext)
    ext[SECTION] = sec
    return dataclasses.replace(s, ext=ext)


def stats_key(module_hash: bytes, fragment_bytes: int) -> str:
    """The statistics key: the module's hash and the input-size bucket (bit length)."""
    return f"{module_hash.hex()}:{max(0, fragment_bytes).bit_length()}"


def standing(s: SwarmState, node_id: str) -> Mapping[str, Any]:
    """``{"pen": thousandths, "n": {kind: count}, "good": good results}`` of a node (zeros
    when it has none)."""
    got = _section(s).get("nodes", {}).get(node_id)
    return got if isinstance(got, Mapping) else {"pen": 0, "n": {}, "good": 0}


def penalty(s: SwarmState, node_id: str) -> int:
    """The node's integrity penalty in score points (what node/attestation/score.py takes)."""
    return penalty_points(int(standing(s, node_id)["pen"]))


def standings(s: SwarmState) -> Mapping[str, Mapping[str, Any]]:
    got = _section(s).get("nodes")
    return got if isinstance(got, Mapping) else {}


def findings_log(s: SwarmState) -> Sequence[Mapping[str, Any]]:
    """The newest findings (at most :data:`MAX_LOG`), oldest first."""
    got = _section(s).get("log")
    return got if isinstance(got, list) else []


def finding(s: SwarmState, finding_id: int) -> Mapping[str, Any] | None:
    """The committed finding with this id, if still in the log."""
    log = findings_log(s)
    if not log:
        return None
    first = int(log[0]["id"])
    i = finding_id - first
    if 0 <= i < len(log) and log[i]["id"] == finding_id:
        return log[i]
    return None


def last_id(s: SwarmState) -> int:
    """Findings committed so far (the id of the newest one)."""
    return int(_section(s).get("seq", 0))


def window(s: SwarmState, key: str, metric: str) -> list[int]:
    entry = _section(s).get("stats", {}).get(key)
    return list(entry["s"][METRICS.index(metric)]) if isinstance(entry, Mapping) else []


def summary(s: SwarmState, node_id: str) -> str:
    """One line for a revocation reason or a log: the penalty and the findings by kind."""
    st = standing(s, node_id)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(st["n"].items()))
    return f"penalty {penalty_points(int(st['pen']))} ({kinds or 'no findings'})"


# --------------------------------------------------------------------------- the manager's rule


def federation_score(attestation_score: int, penalty_pts: int) -> int:
    """The federation's score of a member in points (0..100): its attestation score (points)
    less its committed integrity penalty (points, :func:`penalty`), clamped."""
    return max(0, min(100, attestation_score - max(0, penalty_pts)))


def member_score(s: SwarmState, node_id: str, attestation_score: int) -> int:
    """The score the manager commits for ``node_id`` (permille, as ``Member.score``): the
    federation score of its attestation score (points) under its committed penalty."""
    return min(1000, federation_score(attestation_score, penalty(s, node_id)) * 10)


def review_member(s: SwarmState, node_id: str, attestation_score: int,
                  min_score: int) -> Revoke | RecordScore | None:
    """The manager's one rule for an admitted or suspect member whose attestation score
    (points, 0..100) it holds, against the policy's ``min_score`` (permille, as
    ``consensus.manager.ManagerPolicy``): below it, :class:`Revoke` naming the score and the
    integrity standing; else :class:`RecordScore` when the committed score differs; else None
    (also for a node that is not an admitted or suspect member). The real manager's reconcile
    (node/manager.py) and the simulator's (sim/tasks) both call this very function."""
    m = s.members.get(node_id)
    if m is None or m.status not in (ADMITTED, SUSPECT):
        return None
    score = member_score(s, node_id, attestation_score)
    if score < min_score:
        why = f"score {score} below policy {min_score}"
        if penalty(s, node_id):
            why += f"; integrity: {summary(s, node_id)}"
        return Revoke(node_id, why[:200])
    if score != m.score:
        return RecordScore(node_id, score, m.score_epoch + 1)
    return None


# --------------------------------------------------------------------------- the update


class _Book:
    """A mutable working copy of the section during one update (copied on write)."""

    def __init__(self, s: SwarmState) -> None:
        sec = _section(s)
        self.s = s
        self.stats = dict(sec.get("stats", {}))
        self.nodes = dict(sec.get("nodes", {}))
        self.log = list(sec.get("log", []))
        self.seq = int(sec.get("seq", 0))
        self.tick = int(sec.get("tick", 0))

    def event(self, node: str, event: str) -> None:
        st = self.nodes.get(node)
        if st is None:
            if len(self.nodes) >= MAX_NODES or event == "good":
                return  # a node with no standing has nothing to decay; full: no room for more
            st = {"pen": 0, "n": {}, "good": 0}
        st = {"pen": step_penalty(int(st["pen"]), event), "n": dict(st["n"]), "good": st["good"]}
        if event == "good":
            st["good"] += 1
        else:
            st["n"][event] = st["n"].get(event, 0) + 1
        self.nodes[node] = st

    def find(self, node: str, kind: str, job: str, frag: int, rep: int, ev: dict[str, Any]) -> None:
        self.seq += 1
        self.log.append({"id": self.seq, "node": node, "kind": kind, "job": job, "frag": frag,
                         "rep": rep, "ev": ev, "term": self.s.manager_term, "by": self.s.manager_id})
        if len(self.log) > MAX_LOG:
            del self.log[:len(self.log) - MAX_LOG]
        self.event(node, kind)

    def learn(self, key: str, samples: list[list[int]]) -> None:
        if not samples:
            return
        self.tick += 1
        entry = self.stats.get(key)
        wins = [list(w) for w in entry["s"]] if isinstance(entry, Mapping) else [[] for _ in METRICS]
        for prof in samples:
            for i, x in enumerate(prof):
                wins[i].append(x)
        self.stats[key] = {"t": self.tick, "s": [w[-WINDOW:] for w in wins]}
        if len(self.stats) > MAX_KEYS:
            oldest = min(self.stats, key=lambda k: (self.stats[k]["t"], k))
            del self.stats[oldest]

    def windows(self, key: str) -> list[list[int]]:
        entry = self.stats.get(key)
        return [list(w) for w in entry["s"]] if isinstance(entry, Mapping) else [[] for _ in METRICS]

    def state(self) -> SwarmState:
        return _with(self.s, {"stats": self.stats, "nodes": self.nodes, "log": self.log,
                              "seq": self.seq, "tick": self.tick})


def profile_of(rep: Mapping[str, Any]) -> list[int]:
    """(fuel, memory, wall_ms, output_bytes) of a replica record."""
    fuel, mem, wall = rep["prof"]
    return [int(fuel), int(mem), int(wall), int(rep["size"])]


def error_kind(err: str) -> str:
    """The finding kind of a failed replica's error ("" when it is none: see the docstring)."""
    head = err.split(":", 1)[0].strip()
    if head in LIMIT_ERRORS:
        return LIMIT
    if head in TRAP_ERRORS:
        return TRAP
    return ""


def observe_job(s: SwarmState, job_id: str, job: Mapping[str, Any],
                agreed: Sequence[bytes | None]) -> SwarmState:
    """The state after judging and learning from a completed job (see the module docstring).
    ``agreed[f]`` is fragment ``f``'s agreed output, None when it has none."""
    book = _Book(s)
    key = stats_key(job["module"], int(job.get("frag_bytes", 0)))
    before = book.windows(key)
    learned: list[list[int]] = []
    for f, frag in enumerate(job["frags"]):
        out = agreed[f] if f < len(agreed) else None
        if out is None:
            continue
        for r, rep in enumerate(frag):
            node = rep["node"]
            m = s.members.get(node)
            if not node or m is None or m.status == REVOKED:
                continue  # a void vote: its node is already cut off
            if rep["st"] == "failed":
                kind = error_kind(str(rep["err"]))
                if kind:
                    book.find(node, kind, job_id, f, r, {"err": str(rep["err"])[:MAX_ERR]})
                continue
            if rep["st"] != "done":
                continue
            if rep["out"] != out:
                book.find(node, MINORITY, job_id, f, r, {"out": rep["out"], "agreed": out})
                continue
            prof = profile_of(rep)
            learned.append(prof)
            worst = max(((outlier(x, before[i], METRICS[i]), i) for i, x in enumerate(prof)
                         if METRICS[i] in JUDGED), default=(0, 0))
            if worst[0]:
                i = worst[1]
                med = median(before[i])
                book.find(node, OUTLIER, job_id, f, r, {
                    "metric": METRICS[i], "x": prof[i], "median": med,
                    "mad": mad(before[i], med), "z_milli": worst[0], "key": key})
            else:
                book.event(node, "good")
    book.learn(key, learned)
    return book.state()


# --------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class ReportBadSignature:
    """The manager received a result for ``fragment``/``replica`` of ``job_id`` from ``node_id``
    (the node the state assigns it to) whose signature does not verify under that node's key:
    ``digest`` is the SHA-256 of the payload it should have signed, ``signature`` what came."""

    job_id: str
    fragment: int
    replica: int
    node_id: str
    digest: bytes
    signature: bytes


def _report_bad_signature(s: SwarmState, c: ReportBadSignature) -> SwarmState:
    sec = s.ext.get("tasks")
    job = sec["jobs"].get(c.job_id) if isinstance(sec, Mapping) else None
    if job is None:
        raise Rejected(f"unknown job {c.job_id[:64]}")
    if job["status"] != "running":
        raise Rejected(f"job {c.job_id[:64]} is {job['status']}")
    if not 0 <= c.fragment < len(job["frags"]) or not 0 <= c.replica < len(job["frags"][c.fragment]):
        raise Rejected(f"no fragment {c.fragment} replica {c.replica}")
    rep = job["frags"][c.fragment][c.replica]
    if rep["st"] != "assigned" or rep["node"] != c.node_id:
        raise Rejected(f"fragment {c.fragment} replica {c.replica} is not assigned to {c.node_id[:64]}")
    m = s.members.get(c.node_id)
    if m is None or m.status != ADMITTED:
        raise Rejected(f"{c.node_id[:64]} is not admitted")
    if len(c.digest) != 32 or len(c.signature) > MAX_SIG or len(c.node_id) > MAX_ID_LEN:
        raise Rejected("bad evidence")
    for f in reversed(findings_log(s)):  # once per replica assignment
        if (f["kind"], f["job"], f["frag"], f["rep"], f["node"]) == (
                BAD_SIGNATURE, c.job_id, c.fragment, c.replica, c.node_id):
            raise Rejected("already reported")
    book = _Book(s)
    book.find(c.node_id, BAD_SIGNATURE, c.job_id, c.fragment, c.replica,
              {"digest": c.digest, "sig": c.signature})
    return book.state()


INTEGRITY_COMMANDS: tuple[tuple[str, type, Any], ...] = (
    ("report-bad-signature", ReportBadSignature, _report_bad_signature),
)


def extend(registry: CommandRegistry) -> CommandRegistry:
    """``registry`` plus the integrity commands."""
    return registry.extended_all(INTEGRITY_COMMANDS)


def check_invariants(s: SwarmState) -> list[str]:
    """Violated invariants of the section (empty when all hold): bounds, ids increasing and
    contiguous, penalties within range, every window within its bound."""
    out: list[str] = []
    sec = _section(s)
    log = findings_log(s)
    if len(log) > MAX_LOG:
        out.append(f"{len(log)} findings in the log")
    ids = [int(f["id"]) for f in log]
    if ids and (ids != list(range(ids[0], ids[0] + len(ids))) or ids[-1] != last_id(s)):
        out.append("finding ids not contiguous up to the last")
    for f in log:
        if f["kind"] not in KINDS:
            out.append(f"finding {f['id']}: unknown kind {f['kind']}")
    for node, st in standings(s).items():
        if not 0 <= int(st["pen"]) <= MAX_PENALTY:
            out.append(f"{node}: penalty {st['pen']} out of range")
    stats = sec.get("stats", {})
    if len(stats) > MAX_KEYS:
        out.append(f"{len(stats)} statistics keys")
    for key, entry in stats.items():
        if len(entry["s"]) != len(METRICS) or any(len(w) > WINDOW for w in entry["s"]):
            out.append(f"{key}: window out of bounds")
    return out
