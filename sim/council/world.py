"""A deterministic world that runs the manager council: production Raft, state machine, policy.

Theory of operation
-------------------
The council (default 5 voters) is ``nodes`` real :class:`consensus.raft.RawNode` objects,
each driven exactly as the caller's duties in ``consensus/raft.py`` say -- persist to its
simulated :class:`~sim.council.driver.Disk`, send over :class:`sim.net.Network`, apply to a
real :class:`consensus.state.SwarmState`, advance -- and each with the manager's duties of
``node/manager.py``: announce itself (``AnnounceManager``), hand over at the term limit or
when revoked (:func:`consensus.manager.decide` executed as ``transfer_leader``), remove the
votes of revoked members, snapshot every ``snapshot_every`` applied entries.

Rules (the same as :mod:`sim.world`):

1. One master seed; :func:`sim.world.derive_seed` gives every stream its own generator:
   ``net``, ``faults``, ``workload``, ``clocks`` and one per Raft node and life
   (``raft/<id>/<restart#>``, the election jitter).
2. One event queue, a heap of ``(time, seq, kind, a, b)`` tuples; ``seq`` breaks ties in
   insertion order. Nothing reads a clock, a global generator or hash order.
3. Clocks drift: node ``i`` ticks every ``tick_s / rate_i`` seconds of virtual time, with
   ``rate_i`` within ``±clock_drift_ppm``; Raft only ever sees ticks.
4. Crashes lose everything but the disk. A *torn* crash happens in the middle of a Ready's
   write: a prefix of its records survives, nothing is sent. A restart rebuilds the node
   from its disk (``raft/<id>/<restart#>`` jitter, state machine from the snapshot, the
   committed tail re-applied).
5. :class:`~sim.council.invariants.RaftInvariants` checks every output of every event.
   A run is reported, never aborted.

Measurements (virtual time): a *manager* is a leader that is **serving**, i.e. it has
committed an entry of its own term (its no-op). *Failover* is the time from the loss of the
serving manager (crash, or a partition that leaves it without a majority) to the next serving
manager of a later term. *Handover gap* is the time from the moment a manager starts a
term-limit transfer (it stops accepting proposals) to its successor serving: the span in
which nobody can commit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import time
from collections.abc import Callable
from typing import Any

from consensus.messages import (
    ALL_MESSAGES,
    ENTRY_NORMAL,
    AppendEntries,
    InstallSnapshot,
    Message,
    VoteRequest,
)
from consensus.raft import LEADER, Config, Persisted, ProposalDropped, RawNode
from consensus.state import (
    CORE_REGISTRY,
    AnnounceManager,
    RecordScore,
    Revoke,
    SwarmState,
    apply_entry,
    decode_state,
    encode_state,
)
from sim.council.driver import (
    Disk,
    handover_target,
    initial_state,
    node_name,
    revoked_voter,
)
from sim.council.invariants import RaftInvariants
from sim.council.report import build
from sim.net import LinkProfile, Network
from sim.world import derive_seed

SCENARIOS = ("manager-crash", "manager-partition", "rotation", "flaky-network")
PARTITION_SHAPES = ("isolate", "halves", "random-cut", "bridge")

EV_DELIVER = 0
EV_TICK = 1
EV_ACTION = 2

# Actions (EV_ACTION's ``a``; the argument rides in ``b``).
A_PROPOSE = 0  # one client proposal
A_CRASH_MANAGER = 1  # crash the serving manager
A_ISOLATE_MANAGER = 2  # b: partition shape; cut the manager from a majority
A_HEAL = 3  # remove the partition
A_RESTART = 4  # b: (raft id, epoch it crashed in)
A_CHAOS_CRASH = 5  # flaky-network: crash a random node (maybe torn)
A_CHAOS_PARTITION = 6  # flaky-network: a random partition (or heal)
A_REVOKE = 7  # revoke a random council member through consensus
A_TORN_DEADLINE = 8  # b: (raft id, epoch): a torn crash that found no write crashes plainly

_MASK = (1 << 64) - 1
_FNV = 0x100000001B3
_TYPE_CODE = {t: i + 1 for i, t in enumerate(ALL_MESSAGES)}


@dataclasses.dataclass(frozen=True)
class CouncilConfig:
    """One council run. Times are virtual seconds; ``None`` means "the scenario's default"
    (:data:`SCENARIO_DEFAULTS`, then :data:`BASE_DEFAULTS`).

    Attributes:
        nodes: council voters.
        duration_s: the safety phase (faults on); then the liveness phase heals everything
            and needs a serving manager, caught up on every live voter, within
            ``liveness_deadline_s``.
        warmup_s: fault-free start of the fault-targeted scenarios (first election).
        tick_s / election_tick / heartbeat_tick: Raft timing; the election timeout is
            drawn from ``[election_tick, 2 * election_tick)`` ticks.
        proposals_per_s: open-loop client load (score records), offered to the manager.
        loss / duplicate / reorder: per-packet fault probabilities.
        clock_drift_ppm: tick-rate error bound per node.
        crash_every_s: manager-crash: period between manager crashes; flaky-network: mean
            interval between random crashes.
        downtime_s: a crashed node restarts after a uniform draw from this range.
        partition_every_s / partition_s: manager-partition: period and length of a cut;
            flaky-network: mean interval between partition changes.
        partition_shape: manager-partition: isolate (the manager alone), halves (the
            manager in the minority half), random-cut, bridge (halves plus a node that
            reaches both).
        term_limit_s: hand the manager role over after this long (None: never).
        revoke: revoke one council member through consensus during the safety phase.
        torn_crash_p: fraction of crashes that cut a Ready's write in the middle.
        snapshot_every: applied entries between snapshots (log compaction).
    """

    nodes: int = 5
    seed: int = 1
    scenario: str = "manager-crash"
    duration_s: float | None = None
    liveness_deadline_s: float = 5.0
    warmup_s: float = 1.0
    profile: str = "lan"
    tick_s: float = 0.010
    election_tick: int = 15
    heartbeat_tick: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 64
    max_inflight_msgs: int = 16
    snapshot_every: int = 64
    proposals_per_s: float = 50.0
    loss: float | None = None
    duplicate: float | None = None
    reorder: float | None = None
    clock_drift_ppm: float | None = None
    crash_every_s: float | None = None
    downtime_s: tuple[float, float] = (0.3, 1.5)
    partition_every_s: float | None = None
    partition_s: float = 1.5
    partition_shape: str = "isolate"
    term_limit_s: float | None = None
    revoke: bool | None = None
    torn_crash_p: float | None = None
    progress: Callable[[float, float], None] | None = dataclasses.field(
        default=None, compare=False, repr=False)

    def resolved(self) -> CouncilConfig:
        """This config with every ``None`` replaced by the scenario's default."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown council scenario {self.scenario!r}; have {', '.join(SCENARIOS)}")
        fill = {**BASE_DEFAULTS, **SCENARIO_DEFAULTS[self.scenario]}
        changes = {k: v for k, v in fill.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        if self.nodes < 1:
            raise ValueError("need at least one council member")
        if self.duration_s is None or self.duration_s <= 0 or self.liveness_deadline_s <= 0 or \
                self.tick_s <= 0:
            raise ValueError("durations must be positive")
        if self.partition_shape not in PARTITION_SHAPES:
            raise ValueError(f"unknown partition shape {self.partition_shape!r}; have "
                             f"{', '.join(PARTITION_SHAPES)}")
        for name in ("loss", "duplicate", "reorder", "torn_crash_p"):
            p = getattr(self, name)
            if p is not None and not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.profile not in ("lan", "wan"):
            raise ValueError("profile is lan or wan")


# Every knob a scenario may leave unset.
BASE_DEFAULTS: dict[str, Any] = {
    "loss": 0.0, "duplicate": 0.0, "reorder": 0.0, "clock_drift_ppm": 100.0,
    "crash_every_s": None, "partition_every_s": None, "term_limit_s": None, "revoke": False,
    "torn_crash_p": 0.0,
}

SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    # One manager crash every 3 s (at a random phase in the first 0.6 s of the period),
    # restarted from its disk later: the default 4 s run is one crash, one failover sample.
    "manager-crash": {"duration_s": 4.0, "crash_every_s": 3.0},
    # The manager is cut from a majority every 3 s for partition_s (one cut by default).
    "manager-partition": {"duration_s": 4.0, "partition_every_s": 3.0},
    # Term-limited managers hand over by leadership transfer: 9 hand-overs by default.
    "rotation": {"duration_s": 10.0, "term_limit_s": 1.0},
    # Everything at once, in short runs (many seeds beat long runs at finding bugs). Clock
    # rates off by up to 1% (real oscillators: ~100 ppm) so that timeouts really disagree.
    "flaky-network": {"duration_s": 5.0, "loss": 0.05, "duplicate": 0.03, "reorder": 0.10,
                      "clock_drift_ppm": 10_000.0, "crash_every_s": 0.9, "partition_every_s": 0.7,
                      "term_limit_s": 0.8, "revoke": True, "torn_crash_p": 0.3},
}


class CouncilNode:
    """World-side bookkeeping of one council member; the protocol state lives in ``rn``."""

    __slots__ = ("announced_term", "applied", "disk", "epoch", "id", "idx", "lead_tick", "rate",
                 "restarts", "rn", "serving_term", "state", "ticks", "torn", "transfer_term", "up")

    def __init__(self, raft_id: int, rate: float, disk: Disk) -> None:
        self.id = raft_id
        self.idx = raft_id - 1
        self.rate = rate
        self.disk = disk
        self.up = True
        self.epoch = 0
        self.restarts = 0
        self.ticks = 0
        self.lead_tick = 0
        self.serving_term = -1
        self.announced_term = -1
        self.transfer_term = -1
        self.torn = False
        self.applied = 0
        self.state = SwarmState()
        self.rn: RawNode = None  # type: ignore[assignment]


def _size(m: Message) -> int:
    """Approximate wire size: enough for the bandwidth term of the link model."""
    if type(m) is AppendEntries:
        return 64 + sum(24 + len(e.data) for e in m.entries)
    if type(m) is InstallSnapshot:
        return 96 + len(m.snapshot.data)
    return 48


class CouncilWorld:
    """Build with a :class:`CouncilConfig`, then :meth:`run` returns the report dict."""

    def __init__(self, cfg: CouncilConfig) -> None:
        cfg = cfg.resolved()
        cfg.validate()
        assert cfg.duration_s is not None
        self.cfg = cfg
        self.duration_s: float = cfg.duration_s
        self.now = 0.0
        self._seq = 0
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self.trace = 0xCBF29CE484222325
        self.events = 0
        self.net_rng = random.Random(derive_seed(cfg.seed, "net"))
        self.fault_rng = random.Random(derive_seed(cfg.seed, "faults"))
        self.work_rng = random.Random(derive_seed(cfg.seed, "workload"))
        clock_rng = random.Random(derive_seed(cfg.seed, "clocks"))
        profile = LinkProfile.wan() if cfg.profile == "wan" else LinkProfile.lan()
        self.net = Network(cfg.nodes, profile, self.net_rng, loss=cfg.loss or 0.0,
                           duplicate=cfg.duplicate or 0.0, reorder=cfg.reorder or 0.0)
        self.ids = list(range(1, cfg.nodes + 1))
        self.initial = Persisted.initial(self.ids, encode_state(initial_state(cfg.nodes)))
        self.inv = RaftInvariants()
        ppm = cfg.clock_drift_ppm or 0.0
        self.nodes: list[CouncilNode] = []
        for i in self.ids:
            rate = 1.0 + (clock_rng.random() * 2 - 1) * ppm * 1e-6
            node = CouncilNode(i, rate, Disk(self.initial))
            self.nodes.append(node)
            self._boot(node, clock_rng.random() * cfg.tick_s)
        self.phase = "safety"
        self.faults_on = True
        self.workload_on = True
        # Metrics.
        self.sent = 0
        self.crashes = 0
        self.torn_crashes = 0
        self.restarts = 0
        self.partitions = 0
        self.proposals = 0
        self.proposals_dropped = 0
        self.failover_pending: tuple[float, int] | None = None  # (loss time, manager's term)
        self.failovers: list[float] = []
        self.handover_pending: tuple[float, int] | None = None  # (transfer start, term)
        self.handover_gaps: list[float] = []
        self.handovers_started = 0
        self.elections_by_transfer = 0
        self.elections_by_timeout = 0
        self.score_epochs: dict[str, int] = {}
        self.revoked: list[str] = []
        self.liveness: dict[str, Any] = {}

    # ------------------------------------------------------------------ nodes

    def _boot(self, node: CouncilNode, first_tick: float) -> None:
        cfg = self.cfg
        rcfg = Config(id=node.id, election_tick=cfg.election_tick, heartbeat_tick=cfg.heartbeat_tick,
                      max_entries_per_msg=cfg.max_entries_per_msg,
                      max_inflight_msgs=cfg.max_inflight_msgs, pre_vote=cfg.pre_vote,
                      check_quorum=cfg.check_quorum)
        persisted = node.disk.load()
        rng = random.Random(derive_seed(cfg.seed, f"raft/{node.id}/{node.restarts}"))
        node.rn = RawNode(rcfg, rng, persisted, logger=_quiet)
        node.state = decode_state(persisted.snapshot.data)
        node.applied = persisted.snapshot.meta.index
        node.up = True
        node.torn = False
        node.epoch += 1
        node.ticks = 0
        node.serving_term = node.announced_term = node.transfer_term = -1
        self.push(first_tick, EV_TICK, node.idx, node.epoch)

    def crash(self, node: CouncilNode, t: float) -> None:
        """Kill ``node`` now: only its disk survives; restart it later from the disk."""
        if not node.up:
            return
        if self.failover_pending is None and self._serving(node):
            self.failover_pending = (t, node.rn.raft.term)
        node.up = False
        node.torn = False
        node.epoch += 1
        self.crashes += 1
        lo, hi = self.cfg.downtime_s
        self.push(t + lo + (hi - lo) * self.fault_rng.random(), EV_ACTION, A_RESTART,
                  (node.id, node.epoch))

    def restart(self, node: CouncilNode, t: float) -> None:
        if node.up:
            return
        node.restarts += 1
        self.restarts += 1
        self._boot(node, t + self.fault_rng.random() * self.cfg.tick_s)
        self.process(node, t)

    def _serving(self, node: CouncilNode) -> bool:
        r = node.rn.raft
        return node.up and r.role == LEADER and node.serving_term == r.term

    def manager(self) -> CouncilNode | None:
        """The serving manager of the highest term, if any."""
        best: CouncilNode | None = None
        for nd in self.nodes:
            if self._serving(nd) and (best is None or nd.rn.raft.term > best.rn.raft.term):
                best = nd
        return best

    # ------------------------------------------------------------------ events

    def push(self, t: float, kind: int, a: Any, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b))

    def _send(self, node: CouncilNode, m: Message, t: float) -> None:
        self.sent += 1
        if type(m) is VoteRequest and m.transfer and not m.pre:
            node.transfer_term = m.term
        dst = m.to - 1
        if not 0 <= dst < len(self.nodes):
            return
        for d in self.net.delays(node.idx, dst, _size(m)):
            self._seq += 1
            heapq.heappush(self._heap, (t + d, self._seq, EV_DELIVER, dst, m))

    def run_until(self, until: float) -> None:
        heap = self._heap
        nodes = self.nodes
        net = self.net
        pop = heapq.heappop
        trace = self.trace
        events = 0
        codes = _TYPE_CODE
        tick_s = self.cfg.tick_s
        while heap and heap[0][0] <= until:
            t, _, kind, a, b = pop(heap)
            self.now = t
            if kind == EV_DELIVER:
                node = nodes[a]
                src = b.sender - 1
                # A partition also cuts what is in flight across it.
                if not node.up or not net.connected(src, a):
                    continue
                trace = ((trace ^ (a * 131 + src * 7 + codes[type(b)] + int(t * 1e6))) * _FNV) & _MASK
                node.rn.step(b)
                self.process(node, t)
            elif kind == EV_TICK:
                node = nodes[a]
                if not node.up or b != node.epoch:
                    continue
                trace = ((trace ^ (a * 131 + 1 + int(t * 1e6))) * _FNV) & _MASK
                node.ticks += 1
                r = node.rn.raft
                role = r.role
                node.rn.tick()
                # Fast path: the last event drained every Ready, and a tick that sends
                # nothing and changes no role makes none (it only counts elapsed ticks).
                if r.msgs or r.role != role:
                    self.process(node, t)
                if node.up and r.role == LEADER:
                    self._duties(node, t)
                if node.up and node.epoch == b:
                    self.push(t + tick_s / node.rate, EV_TICK, a, b)
            else:
                trace = ((trace ^ (a * 977 + 2 + int(t * 1e6))) * _FNV) & _MASK
                self._action(a, b, t)
            events += 1
        self.trace = trace
        self.events += events
        if self.now < until:
            self.now = until

    # ------------------------------------------------------------------ the Ready cycle

    def process(self, node: CouncilNode, t: float) -> None:
        """Handle every pending Ready of ``node``: persist, send, apply, advance."""
        if not node.up:
            return  # crashed (maybe inside a Ready's write): its memory is gone
        rn = node.rn
        inv = self.inv
        nid = node.id
        while rn.has_ready():
            rd = rn.ready()
            if node.torn and (rd.entries or rd.hard_state is not None or rd.snapshot is not None):
                # Power cut in the middle of this write: nothing sent, a prefix on disk.
                k = self.fault_rng.randrange(node.disk.records(rd) + 1)
                node.disk.persist_prefix(rd, k)
                self.torn_crashes += 1
                self.crash(node, t)
                return
            if rd.entries:
                inv.persisted(nid, rd.entries, node.disk.entries)
            node.disk.persist(rd)                               # 1. persist
            raft = rn.raft
            for m in rd.messages:                               # 2. send
                inv.sent(nid, raft, m)
                self._send(node, m, t)
            if rd.snapshot is not None:                         # 3. apply
                node.state = decode_state(rd.snapshot.data)
                node.applied = rd.snapshot.meta.index
                inv.restored(nid, node.applied, node.state)
            for e in rd.committed_entries:
                prev = node.applied
                if e.data and e.kind == ENTRY_NORMAL:
                    node.state, _ = apply_entry(node.state, e.data, CORE_REGISTRY)
                node.applied = e.index
                inv.applied(nid, prev, e, node.state, t)
            rn.advance(rd)                                      # 4. advance
            if inv.after_ready(nid, raft, t):
                self._elected(node, t)
            if raft.role == LEADER and node.serving_term != raft.term and \
                    raft.log.term(raft.log.committed) == raft.term:
                node.serving_term = raft.term
                self._now_serving(node, t)
        if node.applied - rn.raft.log.offset >= self.cfg.snapshot_every:
            node.disk.compact(rn.compact(node.applied, encode_state(node.state)))

    def _elected(self, node: CouncilNode, t: float) -> None:
        node.lead_tick = node.ticks
        if len(self.inv.elections) == 1:
            return  # the first election of the run is no change of manager
        if node.transfer_term == node.rn.raft.term:
            self.elections_by_transfer += 1
        else:
            self.elections_by_timeout += 1

    def _now_serving(self, node: CouncilNode, t: float) -> None:
        term = node.rn.raft.term
        fp = self.failover_pending
        if fp is not None and term > fp[1]:
            self.failovers.append(t - fp[0])
            self.failover_pending = None
        hp = self.handover_pending
        if hp is not None and term > hp[1]:
            self.handover_gaps.append(t - hp[0])
            self.handover_pending = None

    def _duties(self, node: CouncilNode, t: float) -> None:
        """The manager's duties on each of its ticks (``node/manager.py``'s reconcile)."""
        cfg = self.cfg
        rn = node.rn
        r = rn.raft
        st = node.state
        if r.lead_transferee is None:
            limit = (max(1, round(cfg.term_limit_s / cfg.tick_s)) if cfg.term_limit_s is not None
                     else 1 << 62)
            got = handover_target(st, r, now_tick=node.ticks, term_start_tick=node.lead_tick,
                                  term_limit_ticks=limit)
            if got is not None:
                if self.handover_pending is None and self._serving(node):
                    self.handover_pending = (t, r.term)
                    self.handovers_started += 1
                rn.transfer_leader(got[1])
                self.process(node, t)
                return
        if node.serving_term != r.term or r.lead_transferee is not None:
            return
        if node.announced_term != r.term:
            node.announced_term = r.term
            self._propose(node, CORE_REGISTRY.encode(AnnounceManager(r.term, node_name(node.id))), t)
        if not node.up or r.role != LEADER:
            return  # it crashed writing the announcement, or stepped down
        if r.pending_conf_index <= r.log.committed:
            victim = revoked_voter(st, r)
            if victim is not None:
                try:
                    rn.propose_conf_change("remove", victim)
                except ProposalDropped:
                    return
                self.process(node, t)

    def _propose(self, node: CouncilNode, data: bytes, t: float) -> bool:
        try:
            node.rn.propose(data)
        except ProposalDropped:
            return False
        self.process(node, t)
        return True

    # ------------------------------------------------------------------ actions

    def _action(self, a: int, b: Any, t: float) -> None:
        if a == A_PROPOSE:
            if self.workload_on:
                self._client_proposal(t)
                self.push(t + 1.0 / self.cfg.proposals_per_s, EV_ACTION, A_PROPOSE)
        elif a == A_RESTART:
            node = self.nodes[b[0] - 1]
            if node.epoch == b[1]:
                self.restart(node, t)
        elif a == A_CRASH_MANAGER:
            mgr = self.manager()
            if mgr is not None:
                self.crash(mgr, t)
        elif a == A_ISOLATE_MANAGER:
            self._isolate_manager(b, t)
        elif a == A_HEAL:
            self.net.heal()
        elif a == A_CHAOS_CRASH:
            self._chaos_crash(t)
        elif a == A_CHAOS_PARTITION:
            self._chaos_partition(t)
        elif a == A_REVOKE:
            self._revoke(t)
        elif a == A_TORN_DEADLINE:
            node = self.nodes[b[0] - 1]
            if node.up and node.epoch == b[1] and node.torn:
                self.crash(node, t)

    def _client_proposal(self, t: float) -> None:
        """A client asks a random live member, which redirects to the leader it knows."""
        rng = self.work_rng
        self.proposals += 1
        node = self.nodes[rng.randrange(len(self.nodes))]
        if node.up and node.rn.raft.role != LEADER:
            lead = node.rn.raft.lead
            node = self.nodes[lead - 1] if lead is not None and 0 < lead <= len(self.nodes) else node
        if not node.up or node.rn.raft.role != LEADER:
            self.proposals_dropped += 1
            return
        subject = node_name(1 + rng.randrange(len(self.nodes)))
        epoch = self.score_epochs.get(subject, 0) + 1
        self.score_epochs[subject] = epoch
        cmd = RecordScore(subject, 600 + rng.randrange(400), epoch)
        if not self._propose(node, CORE_REGISTRY.encode(cmd), t):
            self.proposals_dropped += 1

    def _majority(self) -> int:
        return len(self.nodes) // 2 + 1

    def _isolate_manager(self, shape: str, t: float) -> None:
        mgr = self.manager()
        if mgr is None:
            return
        rng = self.fault_rng
        n = len(self.nodes)
        others = [i for i in range(n) if i != mgr.idx]
        rng.shuffle(others)
        bridges: tuple[int, ...] = ()
        if shape == "isolate":
            side = {mgr.idx}
        elif shape == "halves":  # the manager in the minority half
            side = {mgr.idx, *others[: n // 2 - 1]}
        elif shape == "random-cut":
            side = {mgr.idx, *(i for i in others if rng.random() < 0.5)}
        else:  # bridge: the manager's minority half, and one node of the other half that
            # reaches both (Raft's classic flapping case)
            side = {mgr.idx, *others[: n // 2 - 1]}
            bridges = (others[-1],)
        self._split(side, bridges)
        reach = sum(1 for i in range(n) if self.net.connected(mgr.idx, i))
        if reach < self._majority() and self.failover_pending is None:
            self.failover_pending = (t, mgr.rn.raft.term)
        self.push(t + self.cfg.partition_s, EV_ACTION, A_HEAL)

    def _split(self, side: set[int], bridges: tuple[int, ...] = ()) -> None:
        self.partitions += 1
        self.net.heal()
        self.net.split([1 if i in side else 0 for i in range(len(self.nodes))], bridges)

    def _chaos_crash(self, t: float) -> None:
        if not self.faults_on:
            return
        cfg = self.cfg
        rng = self.fault_rng
        up = [nd for nd in self.nodes if nd.up and not nd.torn]
        # Keep a majority up most of the time, but sometimes take it down too.
        keep = self._majority() - (1 if rng.random() < 0.2 else 0)
        if len(up) > keep:
            victim = up[rng.randrange(len(up))]
            if rng.random() < (cfg.torn_crash_p or 0.0):
                victim.torn = True  # crashes inside its next write
                self.push(t + 0.1, EV_ACTION, A_TORN_DEADLINE, (victim.id, victim.epoch))
            else:
                self.crash(victim, t)
        assert cfg.crash_every_s is not None
        self.push(t + rng.expovariate(1.0 / cfg.crash_every_s), EV_ACTION, A_CHAOS_CRASH)

    def _chaos_partition(self, t: float) -> None:
        if not self.faults_on:
            return
        cfg = self.cfg
        rng = self.fault_rng
        n = len(self.nodes)
        order = list(range(n))
        rng.shuffle(order)
        shape = rng.random()
        mgr = self.manager()
        if shape < 0.3:
            self.net.heal()
        elif shape < 0.5:  # minority / majority
            self._split(set(order[: rng.randint(1, max(1, n // 2))]))
        elif shape < 0.7 and mgr is not None:  # isolate the manager
            self._split({mgr.idx})
        elif shape < 0.85:  # random cut
            self._split({i for i in order if rng.random() < 0.2 + 0.6 * rng.random()})
        else:  # bridge
            self._split(set(order[1: 1 + (n - 1) // 2]), (order[0],))
        if mgr is not None and self.failover_pending is None and \
                sum(1 for i in range(n) if self.net.connected(mgr.idx, i)) < self._majority():
            self.failover_pending = (t, mgr.rn.raft.term)
        assert cfg.partition_every_s is not None
        self.push(t + rng.expovariate(1.0 / cfg.partition_every_s), EV_ACTION, A_CHAOS_PARTITION)

    def _revoke(self, t: float) -> None:
        mgr = self.manager()
        if mgr is None or mgr.rn.raft.lead_transferee is not None:
            self.push(t + 0.05, EV_ACTION, A_REVOKE)
            return
        council = sorted(mgr.state.council)
        victim = council[self.fault_rng.randrange(len(council))]
        if not self._propose(mgr, CORE_REGISTRY.encode(Revoke(victim, "integrity alarm")), t):
            self.push(t + 0.05, EV_ACTION, A_REVOKE)
            return
        self.revoked.append(victim)

    # ------------------------------------------------------------------ run

    def setup(self) -> None:
        """Schedule the scenario's faults and the client load."""
        cfg = self.cfg
        rng = self.fault_rng
        if cfg.proposals_per_s > 0:
            self.push(cfg.warmup_s * rng.random(), EV_ACTION, A_PROPOSE)
        name = cfg.scenario
        if name == "manager-crash":
            self._periodic(A_CRASH_MANAGER, cfg.crash_every_s)
        elif name == "manager-partition":
            self._periodic(A_ISOLATE_MANAGER, cfg.partition_every_s, cfg.partition_shape)
        elif name == "flaky-network":
            assert cfg.crash_every_s is not None and cfg.partition_every_s is not None
            self.push(rng.expovariate(1.0 / cfg.crash_every_s), EV_ACTION, A_CHAOS_CRASH)
            self.push(rng.expovariate(1.0 / cfg.partition_every_s), EV_ACTION, A_CHAOS_PARTITION)
        if cfg.revoke:
            self.push(self.duration_s * (0.2 + 0.4 * rng.random()), EV_ACTION, A_REVOKE)

    def _periodic(self, action: int, period_s: float | None, arg: Any = None) -> None:
        """``action`` once per ``period_s`` after the warm-up, at a random phase within the
        first fifth of each period (relative to heartbeats and ticks)."""
        assert period_s is not None and period_s > 0
        k = 0
        while True:
            t = self.cfg.warmup_s + k * period_s + 0.2 * period_s * self.fault_rng.random()
            if t >= self.duration_s:
                break
            self.push(t, EV_ACTION, action, arg)
            k += 1

    def heal(self, t: float) -> None:
        """End of the safety phase: no more faults or load, every crashed node restarts."""
        self.phase = "liveness"
        self.faults_on = False
        self.workload_on = False
        self.net.heal()
        self.net.loss = self.net.duplicate = self.net.reorder = 0.0
        for nd in self.nodes:
            nd.torn = False
            if not nd.up:
                self.restart(nd, t)

    def convergence_problem(self) -> str | None:
        """None when a serving manager exists and every live voter applied its commit."""
        mgr = self.manager()
        if mgr is None:
            return "no serving manager: " + self.describe()
        r = mgr.rn.raft
        commit = r.log.committed
        behind = [nd.id for nd in self.nodes if nd.id in r.voters and nd.up and nd.applied < commit]
        if behind:
            return f"manager {mgr.id} (term {r.term}) committed {commit}; voters {behind} behind"
        return None

    def describe(self) -> str:
        return "; ".join(
            f"{nd.id}:{'up' if nd.up else 'down'} {nd.rn.raft.role} t{nd.rn.raft.term} "
            f"c{nd.rn.raft.log.committed} a{nd.applied} v{list(nd.rn.raft.voters)}"
            for nd in self.nodes)

    def run(self) -> dict[str, Any]:
        """Safety phase with the scenario's faults, then heal and require a manager."""
        wall0 = time.perf_counter()
        cfg = self.cfg
        total = self.duration_s + cfg.liveness_deadline_s
        converged_at: float | None = None
        why: str | None = None
        stopped = False
        try:
            self.setup()
            t = 0.0
            while t < self.duration_s:
                t = min(self.duration_s, t + 1.0)
                self.run_until(t)
                if cfg.progress is not None:
                    cfg.progress(t, total)
            self.heal(t)
            deadline = self.duration_s + cfg.liveness_deadline_s
            why = self.convergence_problem()
            converged_at = t if why is None else None
            while converged_at is None and t < deadline:
                t = min(deadline, t + cfg.tick_s)
                self.run_until(t)
                why = self.convergence_problem()
                if why is None:
                    converged_at = t
        except Exception as exc:  # a bug in the code under test (or the driver): report it
            self.inv.violation(f"exception at t={self.now:.6f}s: {type(exc).__name__}: {exc}")
            converged_at, why, stopped = None, "the run stopped on an exception", True
        self.liveness = {
            "converged": converged_at is not None,
            "converged_after_s": None if converged_at is None else round(converged_at - self.duration_s, 6),
            "deadline_s": cfg.liveness_deadline_s,
            "why_not": why,
        }
        if converged_at is None and not stopped:
            self.inv.violation(f"liveness: no converged manager within {cfg.liveness_deadline_s}s "
                               f"of the heal: {why}")
        if cfg.progress is not None:
            cfg.progress(total, total)
        return build(self, time.perf_counter() - wall0)

    def trace_digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.trace.to_bytes(8, "big"))
        h.update(f"{self.events}/{self.sent}/{self.inv.commit_max}".encode())
        return h.hexdigest()[:32]


def _quiet(level: str, text: str) -> None:
    """Raft's log lines are not wanted in a simulation of thousands of runs."""
