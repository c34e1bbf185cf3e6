"""The task scheduler: a pure, deterministic choice of enclaves for a job's fragments.

Theory of operation
-------------------
A decision is a function of its inputs only: the committed swarm state (members' status,
attestation score, TEE kind, provider, region), the nodes' capability records (:class:`Offer`),
their published measurements (:class:`Measurements`: ping RTTs, observed bandwidth), the free
capacity per node, the job (:class:`JobRequest`: requirements, weights, client, input holders)
and a seed, the log index the decision is committed at. Any node holding the same inputs
re-runs it with :func:`check_decision` and gets the same placement, bit for bit.

Three phases, as in the Kubernetes and Nomad schedulers:

1. **filter** (feasibility), in a fixed order, each filter counting the nodes it removed and
   naming the first few with their reason (:class:`FilterStat`): the answer to "why did nothing
   fit" is never a bare "suitable: 0";
2. **score**: five components, each an integer in permille (0..1000), summed with integer
   weights (:class:`Weights`, overridable per job); see ``score_components`` for the formulas;
3. **select**: fragments are spread (each pick takes the eligible node with the fewest
   fragments of this decision so far, then the best rank), the ``r`` replicas of a fragment land
   on distinct nodes of distinct providers (strict anti-affinity: no provider, compromised or
   failing, ever holds two copies of a fragment), and a node takes another fragment only while
   its free capacity allows. The rank is (score descending, then a multiplicative hash of the
   node id's hash XOR a mix of the seed): equal scores break differently at each log index, yet
   identically everywhere.

Rules
-----
- Integers only (scores, prices in micro-units, milliseconds, KiB/s): no float ever decides,
  so numpy and the pure-Python reference agree exactly, on every machine.
- No clock, no randomness, no I/O: the seed is an argument.
- The numpy engine (:class:`CandidateTable`) and the pure-Python reference
  (:func:`schedule_reference`) implement the same rules; tests hold them equal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cbor2
import numpy as np

from consensus.state import ADMITTED, MAX_SCORE, SwarmState

# Prices are integers in micro-units of the federation's currency (1 unit = 1_000_000).
PRICE_UNIT = 1_000_000
MAX_FRAGMENTS = 4096
MAX_REDUNDANCY = 8
# Bounds that keep every product in 64-bit integers: prices (micro-units), bytes per fragment.
MAX_PRICE = 2**40
MAX_FRAGMENT_BYTES = 2**40
# When a measurement is missing: a pessimistic RTT, and no bandwidth known.
UNKNOWN_RTT_MS = 1000
UNKNOWN_BANDWIDTH_KIB_S = 0
# Reference points of the score curves (see score_components).
RTT_REF_MS = 50
BANDWIDTH_REF_KIB_S = 10 * 1024
PRICE_REF_MICRO = 1000
# How many nodes a failed filter names.
MAX_EXAMPLES = 3
_MASK64 = (1 << 64) - 1
_TIE_BITS = 40
_MAX_TOTAL = 5 * 1000 * 1000  # five components of at most 1000, weights at most 1000
_NEVER = np.uint64(_MASK64)
_SAMPLE_STRIDE = 16
# Tie-break: (node hash XOR mixed seed) times this odd constant, top bits (multiplicative hashing).
_TIE_MUL = 0x9E3779B97F4A7C15


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What every node running one of the job's fragments must offer.

    Empty tuples mean "any"; ``None`` prices mean "no maximum". Prices in micro-units.
    """

    tee_kinds: tuple[str, ...] = ()
    min_score: int = 0
    cores: int = 1
    memory_mib: int = 64
    accelerators: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    max_price_core_s: int | None = None
    max_price_gib: int | None = None

    def problems(self) -> list[str]:
        """Every reason this is not a valid requirement set (empty when valid)."""
        out = []
        if not 0 <= self.min_score <= MAX_SCORE:
            out.append(f"min_score {self.min_score} outside 0..{MAX_SCORE}")
        if not 1 <= self.cores <= 1024:
            out.append(f"cores {self.cores} outside 1..1024")
        if not 1 <= self.memory_mib <= 16 * 1024 * 1024:
            out.append(f"memory_mib {self.memory_mib} outside 1..16777216")
        for name in ("tee_kinds", "accelerators", "regions", "providers"):
            items = getattr(self, name)
            if len(items) > 64 or any(not s or len(s) > 64 for s in items):
                out.append(f"{name}: at most 64 names of 1..64 characters")
        for name in ("max_price_core_s", "max_price_gib"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= MAX_PRICE:
                out.append(f"{name} {v} outside 0..{MAX_PRICE}")
        return out


@dataclasses.dataclass(frozen=True)
class Weights:
    """Integer weights of the score components (0..1000 each, not all zero).

    Defaults: attestation score first (trust is the point of the federation), then proximity to
    the data and the client, then price, then capability fit.
    """

    score: int = 400
    latency: int = 200
    bandwidth: int = 150
    price: int = 150
    fit: int = 100

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        """In the order of :func:`score_components`."""
        return (self.score, self.latency, self.bandwidth, self.price, self.fit)

    def problems(self) -> list[str]:
        vals = self.as_tuple()
        out = [f"{name} {v} outside 0..1000" for name, v in zip(WEIGHT_ORDER, vals, strict=True)
               if not 0 <= v <= 1000]
        if not out and not any(vals):
            out.append("at least one weight must be positive")
        return out


WEIGHT_ORDER = ("score", "latency", "bandwidth", "price", "fit")
DEFAULT_WEIGHTS = Weights()
WEIGHT_NAMES = tuple(f.name for f in dataclasses.fields(Weights))


@dataclasses.dataclass(frozen=True)
class Offer:
    """What a node offers, from its capability record (node/tasks/capability.py). The TEE kind,
    provider and region come from the committed member record, not from here: they were
    attested."""

    node_id: str
    cores: int
    memory_mib: int
    accelerators: tuple[str, ...] = ()
    price_core_s: int = 0
    price_gib: int = 0


@dataclasses.dataclass(frozen=True)
class Measurements:
    """Published measurements: ``rtt_ms[a][b]`` is a's ping RTT to b, ``bandwidth_kib_s[a][b]``
    the transfer rate a observed from b. Either direction is used when one is missing."""

    rtt_ms: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    bandwidth_kib_s: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Want:
    """One replica to place: fragment ``fragment``, replica ``replica``, never on a node of
    ``avoid_nodes`` nor of a provider in ``avoid_providers`` (a reassignment passes the other
    live replicas and the nodes that already failed this fragment)."""

    fragment: int
    replica: int
    avoid_nodes: tuple[str, ...] = ()
    avoid_providers: tuple[str, ...] = ()


_WantT = tuple[int, int, tuple[str, ...], tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """The job as the scheduler sees it."""

    job_id: str
    fragments: int
    redundancy: int = 1
    requirements: Requirements = Requirements()
    weights: Weights = DEFAULT_WEIGHTS
    client: str = ""
    input_holders: tuple[str, ...] = ()
    fragment_bytes: int = 0
    # None: place every replica of every fragment. Otherwise only these (reassignments).
    wants: tuple[Want, ...] | None = None

    def _want_tuples(self) -> list[_WantT]:
        """The wants as plain tuples (fragment, replica, avoid nodes, avoid providers), in
        (fragment, replica) order: what the selection iterates over (cheaper than objects)."""
        if self.wants is not None:
            return sorted((w.fragment, w.replica, w.avoid_nodes, w.avoid_providers) for w in self.wants)
        return [(f, r, (), ()) for f in range(self.fragments) for r in range(self.redundancy)]

    def all_wants(self) -> tuple[Want, ...]:
        if self.wants is not None:
            return self.wants
        return tuple(Want(f, r) for f in range(self.fragments) for r in range(self.redundancy))


@dataclasses.dataclass(frozen=True)
class FilterStat:
    """One feasibility filter: how many nodes it removed, and the first few with the reason."""

    name: str
    removed: int
    examples: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Placement:
    fragment: int
    replica: int
    node_id: str


@dataclasses.dataclass(frozen=True)
class Decision:
    """The scheduler's answer. ``ok`` is False when not every wanted replica could be placed;
    then ``placements`` is empty and ``reason`` plus ``filters`` say why."""

    job_id: str
    seed: int
    ok: bool
    placements: tuple[Placement, ...]
    candidates: int
    feasible: int
    filters: tuple[FilterStat, ...]
    reason: str = ""

    def explain(self) -> str:
        """A human answer: the funnel of filters, then the reason."""
        parts = [f"{self.candidates} candidates"]
        for f in self.filters:
            if f.removed:
                ex = "; ".join(f.examples)
                parts.append(f"{f.name} removed {f.removed}" + (f" (e.g. {ex})" if ex else ""))
        parts.append(f"{self.feasible} feasible")
        if self.reason:
            parts.append(self.reason)
        return ", ".join(parts)


FILTERS = ("status", "capability", "tee_kind", "score", "region", "provider", "accelerators",
           "price", "capacity")


def validate_request(job: JobRequest, wants: Sequence[_WantT] | None = None) -> list[str]:
    """Every reason ``job`` cannot be scheduled at all, whatever the nodes (empty when fine)."""
    out = list(job.requirements.problems()) + [f"weights: {p}" for p in job.weights.problems()]
    if not 1 <= job.fragments <= MAX_FRAGMENTS:
        out.append(f"fragments {job.fragments} outside 1..{MAX_FRAGMENTS}")
    if not 1 <= job.redundancy <= MAX_REDUNDANCY:
        out.append(f"redundancy {job.redundancy} outside 1..{MAX_REDUNDANCY}")
    if not 0 <= job.fragment_bytes <= MAX_FRAGMENT_BYTES:
        out.append(f"fragment_bytes outside 0..{MAX_FRAGMENT_BYTES}")
    if job.wants is not None:
        if len(job.wants) > MAX_FRAGMENTS * MAX_REDUNDANCY:
            out.append("too many wants")
        for f, r, _, _ in job._want_tuples() if wants is None else wants:
            if not (0 <= f < job.fragments and 0 <= r < job.redundancy):
                out.append(f"want ({f}, {r}) outside the job")
                break
    return out


# --------------------------------------------------------------------------- shared arithmetic


def node_hash(node_id: str) -> int:
    """A stable 64-bit hash of a node id (the tie-break's per-node part)."""
    return int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big")


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap bijective scrambler of 64-bit integers."""
    x &= _MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return x


def _seed64(seed: int) -> int:
    return _mix64(seed ^ 0x9E3779B97F4A7C15)


def score_components(score: int, rtt_ms: int, bandwidth_kib_s: int, price_micro: int,
                     fit_permille: int) -> tuple[int, int, int, int, int]:
    """The five components in permille, as the reference computes them for one node:

    - ``score``: the member's committed attestation score (already permille);
    - ``latency``: ``1000 * 50 / (50 + rtt)``, rtt the worst RTT to the input holders and the
      client (1000 ms when unmeasured): 1000 at 0 ms, 500 at 50 ms;
    - ``bandwidth``: ``1000 * bw / (bw + 10 MiB/s)``, bw the slowest observed rate from them;
    - ``price``: ``1000 * 1000 / (1000 + cost)``, cost = price per core-second x cores + price
      per GiB x fragment bytes / GiB, in micro-units: free is 1000;
    - ``fit``: best fit, the mean share of the node's free cores and memory one fragment uses
      (Nomad's bin packing: a fragment goes where it wastes least).
    """
    return (score,
            1000 * RTT_REF_MS // (RTT_REF_MS + rtt_ms),
            1000 * bandwidth_kib_s // (bandwidth_kib_s + BANDWIDTH_REF_KIB_S),
            1000 * PRICE_REF_MICRO // (PRICE_REF_MICRO + price_micro),
            fit_permille)


def _fit(req_cores: int, req_mem: int, free_cores: int, free_mem: int) -> int:
    return (1000 * req_cores // max(free_cores, 1) + 1000 * req_mem // max(free_mem, 1)) // 2


def _cost(req: Requirements, price_core_s: int, price_gib: int, fragment_bytes: int) -> int:
    return price_core_s * req.cores + price_gib * (fragment_bytes >> 20) // 1024


def _price(v: int) -> int:
    return max(0, min(v, MAX_PRICE))


def _rtt(m: Measurements, a: str, b: str) -> int:
    v = m.rtt_ms.get(a, {}).get(b)
    if v is None:
        v = m.rtt_ms.get(b, {}).get(a)
    return UNKNOWN_RTT_MS if v is None else max(0, min(int(v), 10 * UNKNOWN_RTT_MS))


def _bw(m: Measurements, a: str, b: str) -> int:
    v = m.bandwidth_kib_s.get(a, {}).get(b)
    if v is None:
        v = m.bandwidth_kib_s.get(b, {}).get(a)
    return UNKNOWN_BANDWIDTH_KIB_S if v is None else max(0, min(int(v), 2**40))


def _lat_comp(rtt: Any) -> Any:
    return 1000 * RTT_REF_MS // (RTT_REF_MS + rtt)


def _bw_comp(bw: Any) -> Any:
    return 1000 * bw // (bw + BANDWIDTH_REF_KIB_S)


def _targets(job: JobRequest) -> tuple[str, ...]:
    return tuple(sorted(set(job.input_holders) | ({job.client} if job.client else set())))


def _price_ok(req: Requirements, price_core_s: int, price_gib: int) -> bool:
    return ((req.max_price_core_s is None or price_core_s <= req.max_price_core_s)
            and (req.max_price_gib is None or price_gib <= req.max_price_gib))


# --------------------------------------------------------------------------- selection


# A ranked candidate: (node id, provider, slots = how many fragments of this job its free capacity
# holds). Plain tuples: building one per candidate is on the hot path.
_Cand = tuple[str, str, int]


def _select(ranked: Sequence[_Cand], wants: Sequence[_WantT],
            prefix_only: bool) -> tuple[list[Placement] | None, str, bool]:
    """Place ``wants`` on ``ranked`` (best first). Returns (placements or None, reason, exact).

    ``exact`` is False when ``ranked`` is a prefix of the full ranking and a node beyond it might
    have been chosen (a pick had to take a loaded node, or none fitted): the caller then reruns
    on the full ranking. Every pick takes the eligible node of least load, then best rank.
    """
    heap = [(0, i) for i in range(len(ranked))]
    load = [0] * len(ranked)
    by_frag: dict[int, list[int]] = {}
    out: list[Placement] = []
    for frag, rep, avoid_nodes, avoid_providers in wants:
        taken = by_frag.setdefault(frag, [])
        providers = {ranked[i][1] for i in taken}.union(avoid_providers)
        nodes = {ranked[i][0] for i in taken}.union(avoid_nodes)
        skipped = []
        pick = None
        while heap:
            ld, i = heapq.heappop(heap)
            c = ranked[i]
            if c[0] in nodes or c[1] in providers:
                skipped.append((ld, i))
                continue
            pick = i
            break
        for s in skipped:
            heapq.heappush(heap, s)
        if pick is None:
            if prefix_only:
                return None, "", False
            return None, (f"fragment {frag} replica {rep}: no feasible node left "
                          f"outside providers {sorted(providers)} and nodes already used"), True
        if prefix_only and load[pick] > 0:
            return None, "", False
        load[pick] += 1
        if load[pick] < ranked[pick][2]:
            heapq.heappush(heap, (load[pick], pick))
        taken.append(pick)
        out.append(Placement(frag, rep, ranked[pick][0]))
    return out, "", True


def _shortfall(wants: Sequence[_WantT], redundancy: int, feasible: int, providers: int) -> str:
    if feasible == 0:
        return "no node passed every filter"
    need = min(redundancy, max((w[1] + 1 for w in wants), default=1))
    if providers < need:
        return (f"replicas need {need} distinct providers (anti-affinity); the feasible nodes "
                f"span {providers}")
    return ""


# --------------------------------------------------------------------------- numpy engine


class CandidateTable:
    """The candidates of one committed state, as columns: build once per (state, offers, free
    capacity, measurements), then :meth:`schedule` many jobs against it.

    Rows are the state's members in node-id order. Per-target RTT and bandwidth columns are
    built on first use and cached (deterministically: they only read the measurements).
    """

    def __init__(self, state: SwarmState, offers: Mapping[str, Offer],
                 free: Mapping[str, tuple[int, int]] | None = None,
                 measurements: Measurements | None = None) -> None:
        self.measurements = measurements or Measurements()
        ids = sorted(state.members)
        self.node_ids = ids
        self.index = {n: i for i, n in enumerate(ids)}
        n = len(ids)
        members = [state.members[i] for i in ids]
        self.members = members
        self.offers = offers
        self.status_ok = np.array([m.status == ADMITTED for m in members], dtype=bool)
        self.has_offer = np.array([i in offers for i in ids], dtype=bool)
        self.score = np.array([m.score for m in members], dtype=np.int64)
        self._codes: dict[str, dict[str, int]] = {}
        self.tee = self._encode("tee", [m.tee_kind for m in members])
        self.region = self._encode("region", [m.region for m in members])
        self.provider = self._encode("provider", [m.provider for m in members])
        accel_names = sorted({a for o in offers.values() for a in o.accelerators})
        self._accel_bit = {a: 1 << k for k, a in enumerate(accel_names[:63])}
        cores, mem, pc, pg, acc = (np.zeros(n, dtype=np.int64) for _ in range(5))
        for k, nid in enumerate(ids):
            o = offers.get(nid)
            if o is None:
                continue
            fc, fm = (free or {}).get(nid, (o.cores, o.memory_mib))
            cores[k], mem[k] = max(0, min(fc, o.cores)), max(0, min(fm, o.memory_mib))
            pc[k], pg[k] = _price(o.price_core_s), _price(o.price_gib)
            acc[k] = sum(self._accel_bit.get(a, 0) for a in set(o.accelerators))
        self.free_cores, self.free_mem, self.accel = cores, mem, acc
        self.price_core_s, self.price_gib = pc, pg
        self.hash = np.array([node_hash(i) for i in ids], dtype=np.uint64)
        self._lat_cols: dict[str, np.ndarray] = {}
        self._bw_cols: dict[str, np.ndarray] = {}
        self._shape_cols: dict[tuple[Any, ...], np.ndarray] = {}
        self._free_cores1 = np.maximum(cores, 1)
        self._free_mem1 = np.maximum(mem, 1)
        self._provider_names = {v: k for k, v in self._codes["provider"].items()}
        self._base = self.status_ok & self.has_offer
        self._base_left = int(np.count_nonzero(self._base))
        with_status = int(np.count_nonzero(self.status_ok))
        self._base_removed = (n - with_status, with_status - self._base_left)

    def _encode(self, name: str, values: list[str]) -> np.ndarray:
        codes: dict[str, int] = {}
        for v in sorted(set(values)):
            codes[v] = len(codes)
        self._codes[name] = codes
        return np.array([codes[v] for v in values], dtype=np.int64)

    def _allowed(self, name: str, col: np.ndarray, allowed: tuple[str, ...]) -> np.ndarray:
        table = np.zeros(len(self._codes[name]) + 1, dtype=bool)
        for a in allowed:
            code = self._codes[name].get(a)
            if code is not None:
                table[code] = True
        out: np.ndarray = table[col]
        return out

    def schedule(self, job: JobRequest, seed: int) -> Decision:
        """Filter, score and select for ``job`` at log index ``seed``."""
        wants = job._want_tuples()
        problems = validate_request(job, wants)
        if problems:
            return Decision(job.job_id, seed, False, (), len(self.node_ids), 0, (),
                            "invalid request: " + "; ".join(problems))
        req = job.requirements
        n = len(self.node_ids)
        # Every column is computed over all rows (fancy indexing by the feasible rows costs
        # more than the arithmetic it saves at these sizes).
        tests: list[tuple[str, np.ndarray | None]] = [
            ("status", self.status_ok),
            ("capability", self.has_offer),
            ("tee_kind", self._allowed("tee", self.tee, req.tee_kinds) if req.tee_kinds else None),
            ("score", self.score >= req.min_score if req.min_score else None),
            ("region", self._allowed("region", self.region, req.regions) if req.regions else None),
            ("provider", self._allowed("provider", self.provider, req.providers) if req.providers else None),
            ("accelerators", self._accel_ok(req) if req.accelerators else None),
            ("price", self._price_mask(req)),
            ("capacity", (self.free_cores >= req.cores) & (self.free_mem >= req.memory_mib)),
        ]
        # status and capability do not depend on the job: counted once, when the table was built.
        alive = self._base.copy()
        left = self._base_left
        counts: list[int] = list(self._base_removed)
        for _, mask in tests[2:]:
            if mask is not None:
                alive &= mask
                now = int(np.count_nonzero(alive))
                counts.append(left - now)
                left = now
            else:
                counts.append(0)
        feasible = left
        filters = tuple(FilterStat(name, c) for (name, _), c in zip(tests, counts, strict=True))
        if feasible == 0:
            return self._failed(job, seed, tests, feasible, _shortfall(wants, job.redundancy, 0, 0))
        total = self._scores(job)
        tie = ((self.hash ^ np.uint64(_seed64(seed))) * np.uint64(_TIE_MUL)) >> np.uint64(64 - _TIE_BITS)
        key = np.where(alive, (np.int64(_MAX_TOTAL) - total).astype(np.uint64) << np.uint64(_TIE_BITS) | tie,
                       _NEVER)
        k = min(feasible, 2 * len(wants) + 16)
        if k < feasible:
            placed, reason, exact = _select(self._cands(self._top(key, k), req), wants, True)
            if exact:
                return Decision(job.job_id, seed, True, tuple(placed or ()), n, feasible, filters)
        order = np.argsort(key, kind="stable")[:feasible]
        placed, reason, _ = _select(self._cands(order, req), wants, False)
        if placed is None:
            provs = int(np.unique(self.provider[alive]).size)
            why = _shortfall(wants, job.redundancy, feasible, provs) or reason
            return self._failed(job, seed, tests, feasible, why)
        return Decision(job.job_id, seed, True, tuple(placed), n, feasible, filters)

    def _top(self, key: np.ndarray, k: int) -> np.ndarray:
        """Rows of a prefix of the ranking holding at least the ``k`` best keys, in rank order.

        Every row left out has a key strictly greater than every row kept, so the prefix is the
        top of the full ranking whatever the ties. A threshold from a strided sample usually
        finds it at a fraction of the cost of partitioning every key (the dominant cost at 5,000
        candidates); when the sample misses, partition them all.
        """
        sample = key[::_SAMPLE_STRIDE]
        r = min(sample.size - 1, 2 * (k // _SAMPLE_STRIDE + 1))
        v = np.partition(sample, r)[r]
        sel = None
        if v != _NEVER:
            sel = np.flatnonzero(key <= v)
            if sel.size < k:
                sel = None
        if sel is None:
            kth = np.partition(key, k - 1)[k - 1]
            sel = np.flatnonzero(key <= kth)
        out: np.ndarray = sel[np.argsort(key[sel], kind="stable")]
        return out

    def _cands(self, rows: np.ndarray, req: Requirements) -> list[_Cand]:
        slots = np.minimum(self.free_cores[rows] // req.cores, self.free_mem[rows] // req.memory_mib)
        names = self._provider_names
        return [(self.node_ids[r], names[p], s)
                for r, p, s in zip(rows.tolist(), self.provider[rows].tolist(), slots.tolist(), strict=True)]

    def _accel_ok(self, req: Requirements) -> np.ndarray:
        if any(a not in self._accel_bit for a in req.accelerators):
            return np.zeros(len(self.node_ids), dtype=bool)
        want = sum(self._accel_bit[a] for a in set(req.accelerators))
        out: np.ndarray = (self.accel & want) == want
        return out

    def _price_mask(self, req: Requirements) -> np.ndarray | None:
        if req.max_price_core_s is None and req.max_price_gib is None:
            return None
        ok = np.ones(len(self.node_ids), dtype=bool)
        if req.max_price_core_s is not None:
            ok &= self.price_core_s <= req.max_price_core_s
        if req.max_price_gib is not None:
            ok &= self.price_gib <= req.max_price_gib
        return ok

    def _scores(self, job: JobRequest) -> np.ndarray:
        req, w = job.requirements, job.weights
        total = w.score * self.score
        targets = _targets(job)
        if w.latency:
            # The latency component falls as the RTT grows: the worst target is the minimum.
            if targets:
                total = total + w.latency * self._component(self._lat_cols, targets, _rtt, _lat_comp)
            else:  # nothing to be near: every node is as good (RTT 0)
                total = total + w.latency * 1000
        if w.bandwidth and targets:
            total = total + w.bandwidth * self._component(self._bw_cols, targets, _bw, _bw_comp)
        if w.price:
            total = total + w.price * self._memo(("price", req.cores, job.fragment_bytes >> 20), lambda: (
                1000 * PRICE_REF_MICRO // (PRICE_REF_MICRO + self.price_core_s * req.cores
                                           + self.price_gib * (job.fragment_bytes >> 20) // 1024)))
        if w.fit:
            total = total + w.fit * self._memo(("fit", req.cores, req.memory_mib), lambda: (
                1000 * req.cores // self._free_cores1 + 1000 * req.memory_mib // self._free_mem1) // 2)
        return total

    def _memo(self, key: tuple[Any, ...], make: Any) -> np.ndarray:
        """Columns that depend on a job's shape only (cores, memory, fragment size), kept for the
        next job of the same shape: jobs from one template share them. Bounded."""
        col = self._shape_cols.get(key)
        if col is None:
            if len(self._shape_cols) >= 256:
                self._shape_cols.clear()
            col = make()
            self._shape_cols[key] = col
        return col

    def _component(self, cache: dict[str, np.ndarray], targets: tuple[str, ...], measure: Any,
                   comp: Any) -> np.ndarray:
        out: np.ndarray | None = None
        for t in targets:
            col = cache.get(t)
            if col is None:
                col = comp(np.array([measure(self.measurements, nid, t) for nid in self.node_ids],
                                    dtype=np.int64))
                cache[t] = col
            out = col if out is None else np.minimum(out, col)
        assert out is not None
        return out

    def _failed(self, job: JobRequest, seed: int, tests: Sequence[tuple[str, np.ndarray | None]],
                feasible: int, reason: str) -> Decision:
        req = job.requirements
        out = []
        alive = np.ones(len(self.node_ids), dtype=bool)
        for name, mask in tests:
            if mask is None:
                out.append(FilterStat(name, 0))
                continue
            rows = np.flatnonzero(alive & ~mask)
            alive &= mask
            ex = tuple(_why(name, self.members[r], self.offers.get(self.node_ids[r]),
                            (int(self.free_cores[r]), int(self.free_mem[r])), req)
                       for r in rows[:MAX_EXAMPLES].tolist())
            out.append(FilterStat(name, int(rows.size), ex))
        return Decision(job.job_id, seed, False, (), len(self.node_ids), feasible, tuple(out), reason)


def _why(name: str, m: Any, o: Offer | None, free: tuple[int, int], req: Requirements) -> str:
    """The reason filter ``name`` removed member ``m`` (for the first few examples only)."""
    nid = m.node_id
    if name == "status":
        return f"{nid}: {m.status}" + (f" ({m.reason})" if m.reason else "")
    if name == "capability":
        return f"{nid}: no capability record"
    if name == "tee_kind":
        return f"{nid}: tee {m.tee_kind} not in {list(req.tee_kinds)}"
    if name == "score":
        return f"{nid}: score {m.score} < {req.min_score}"
    if name == "region":
        return f"{nid}: region {m.region} not in {list(req.regions)}"
    if name == "provider":
        return f"{nid}: provider {m.provider} not in {list(req.providers)}"
    assert o is not None
    if name == "accelerators":
        return f"{nid}: lacks {sorted(set(req.accelerators) - set(o.accelerators))}"
    if name == "price":
        return (f"{nid}: price {o.price_core_s}/core-s, {o.price_gib}/GiB above "
                f"{req.max_price_core_s}, {req.max_price_gib}")
    return f"{nid}: free {free[0]} cores, {free[1]} MiB < {req.cores} cores, {req.memory_mib} MiB"


def schedule(state: SwarmState, offers: Mapping[str, Offer], job: JobRequest, seed: int,
             free: Mapping[str, tuple[int, int]] | None = None,
             measurements: Measurements | None = None) -> Decision:
    """One decision with the numpy engine (builds a :class:`CandidateTable`; to decide many
    jobs against one state, build the table once and call its ``schedule``)."""
    return CandidateTable(state, offers, free, measurements).schedule(job, seed)


# --------------------------------------------------------------------------- pure-Python reference


def schedule_reference(state: SwarmState, offers: Mapping[str, Offer], job: JobRequest, seed: int,
                       free: Mapping[str, tuple[int, int]] | None = None,
                       measurements: Measurements | None = None) -> Decision:
    """The same decision as :func:`schedule`, one node at a time in plain Python: the naive
    reference the tests compare the numpy engine with, and the benchmark's baseline."""
    meas = measurements or Measurements()
    problems = validate_request(job)
    ids = sorted(state.members)
    if problems:
        return Decision(job.job_id, seed, False, (), len(ids), 0, (),
                        "invalid request: " + "; ".join(problems))
    req, w = job.requirements, job.weights
    targets = _targets(job)
    removed: dict[str, list[str]] = {f: [] for f in FILTERS}
    known_accels = _accel_names(offers)
    feasible: list[tuple[Any, Offer, int, int]] = []
    for nid in ids:
        m = state.members[nid]
        o = offers.get(nid)
        fc, fm = (0, 0)
        if o is not None:
            fc, fm = (free or {}).get(nid, (o.cores, o.memory_mib))
            fc, fm = max(0, min(fc, o.cores)), max(0, min(fm, o.memory_mib))
        if m.status != ADMITTED:
            name = "status"
        elif o is None:
            name = "capability"
        elif req.tee_kinds and m.tee_kind not in req.tee_kinds:
            name = "tee_kind"
        elif m.score < req.min_score:
            name = "score"
        elif req.regions and m.region not in req.regions:
            name = "region"
        elif req.providers and m.provider not in req.providers:
            name = "provider"
        elif req.accelerators and not set(req.accelerators) <= (set(o.accelerators) & known_accels):
            name = "accelerators"
        elif not _price_ok(req, _price(o.price_core_s), _price(o.price_gib)):
            name = "price"
        elif fc < req.cores or fm < req.memory_mib:
            name = "capacity"
        else:
            feasible.append((m, o, fc, fm))
            continue
        removed[name].append(_why(name, m, o, (fc, fm), req) if len(removed[name]) < MAX_EXAMPLES else "")
    wants = job._want_tuples()
    counted = tuple(FilterStat(f, len(removed[f])) for f in FILTERS)
    detailed = tuple(FilterStat(f, len(removed[f]), tuple(x for x in removed[f] if x)) for f in FILTERS)
    if not feasible:
        return Decision(job.job_id, seed, False, (), len(ids), 0, detailed,
                        _shortfall(wants, job.redundancy, 0, 0))
    s64 = _seed64(seed)
    keyed = []
    for m, o, fc, fm in feasible:
        rtt = max((_rtt(meas, m.node_id, t) for t in targets), default=0)
        bw = min((_bw(meas, m.node_id, t) for t in targets), default=0)
        comps = score_components(m.score, rtt, bw,
                                 _cost(req, _price(o.price_core_s), _price(o.price_gib), job.fragment_bytes),
                                 _fit(req.cores, req.memory_mib, fc, fm))
        total = sum(wt * c for wt, c in zip(w.as_tuple(), comps, strict=True))
        tie = (((node_hash(m.node_id) ^ s64) * _TIE_MUL) & _MASK64) >> (64 - _TIE_BITS)
        key = ((_MAX_TOTAL - total) << _TIE_BITS) | tie
        slots = min(fc // req.cores, fm // req.memory_mib)
        keyed.append((key, m.node_id, (m.node_id, m.provider, slots)))
    keyed.sort(key=lambda t: (t[0], t[1]))
    placed, reason, _ = _select([c for _, _, c in keyed], wants, False)
    if placed is None:
        provs = len({m.provider for m, _, _, _ in feasible})
        return Decision(job.job_id, seed, False, (), len(ids), len(feasible), detailed,
                        _shortfall(wants, job.redundancy, len(feasible), provs) or reason)
    return Decision(job.job_id, seed, True, tuple(placed), len(ids), len(feasible), counted)


def _accel_names(offers: Mapping[str, Offer]) -> set[str]:
    return set(sorted({a for o in offers.values() for a in o.accelerators})[:63])


def check_decision(decision: Decision, state: SwarmState, offers: Mapping[str, Offer], job: JobRequest,
                   free: Mapping[str, tuple[int, int]] | None = None,
                   measurements: Measurements | None = None) -> tuple[bool, str]:
    """Re-run the scheduler on the same inputs at ``decision.seed`` and compare.

    Returns (True, "") when the committed decision is exactly what the scheduler decides, else
    (False, what differs): a node that holds the inputs verifies a manager's decision this way.
    """
    again = schedule(state, offers, job, decision.seed, free, measurements)
    if again.job_id != decision.job_id:
        return False, f"job {decision.job_id} is not {again.job_id}"
    if again.ok != decision.ok:
        return False, f"decision ok={decision.ok}, re-run ok={again.ok} ({again.reason})"
    if again.placements != decision.placements:
        diff = [f"{a.fragment}/{a.replica}: {a.node_id} vs {b.node_id}"
                for a, b in zip(decision.placements, again.placements, strict=False) if a != b]
        if len(again.placements) != len(decision.placements):
            diff.append(f"{len(decision.placements)} placements vs {len(again.placements)}")
        return False, "placements differ: " + "; ".join(diff[:MAX_EXAMPLES])
    return True, ""


def inputs_digest(offers: Mapping[str, Offer], job: JobRequest,
                  free: Mapping[str, tuple[int, int]] | None = None,
                  measurements: Measurements | None = None) -> bytes:
    """SHA-256 of everything a decision reads besides the committed state and the seed: the
    offers, the free capacity, the measurements between any node and the job's targets, and the
    job. The manager commits it with the decision; a node that holds inputs with the same digest
    can re-run the decision with :func:`check_decision` (one that does not knows it cannot)."""
    meas = measurements or Measurements()
    targets = _targets(job)

    def toward(table: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
        # Only what _rtt/_bw can read for this job: each target's row, and every node's entry
        # for each target.
        return {t: [dict(table.get(t, {})),
                    {a: row[t] for a, row in table.items() if t in row}] for t in targets}

    body = {
        "offers": [dataclasses.astuple(offers[k]) for k in sorted(offers)],
        "free": sorted((k, list(v)) for k, v in (free or {}).items()),
        "rtt": toward(meas.rtt_ms),
        "bw": toward(meas.bandwidth_kib_s),
        "job": dataclasses.asdict(job),
    }
    return hashlib.sha256(cbor2.dumps(body, canonical=True)).digest()


def offers_by_node(offers: Iterable[Offer]) -> dict[str, Offer]:
    """Index offers by node id (the last one per node wins)."""
    return {o.node_id: o for o in offers}
