"""The deterministic discrete-event world that drives the real membership and dissemination cores.

Rules
-----
1. One master seed. :func:`derive_seed` turns ``(seed, name)`` into every sub-seed (network,
   faults, workload, one per node core), so adding a consumer never shifts another's stream.
2. One event queue: a heap of ``(time, seq, kind, a, b, c)`` tuples. ``seq`` is a global counter,
   so ties resolve in insertion order and nothing depends on hash order or wall time.
3. The cores are the production objects (:class:`overlay.membership.Membership`,
   :class:`overlay.dissemination.Dissemination`); the world only feeds them ``step``/``tick``
   at their local (drifting) time and carries what ``ready()`` returns over the simulated
   :class:`sim.net.Network`.
4. Invariants (:mod:`sim.invariants`) are checked on every event's outputs; the run is
   reported, never aborted, so a failing seed still gives its whole report.

Hot-path notes (10,000 nodes): node ids are strings for the cores but ints (list indices)
inside the world; events are plain tuples, not objects or closures; message sizes come from
:mod:`sim.sizes` caches instead of encoding; the trace digest is an integer FNV-style fold.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import heapq
import math
import random
import time
from collections.abc import Callable
from typing import Any

from overlay import wire
from overlay.dissemination import Dissemination, DisseminationConfig, record_size
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.membership import Membership, MembershipConfig, Snapshot
from overlay.messages import ScoreRecord
from overlay.messages_gossip import (
    ALL_MESSAGES,
    DEAD,
    SUSPECT,
    SWIM_MESSAGES,
    GossipPush,
    SwimPing,
)
from overlay.records import KIND_REVOCATION, KIND_SCORE, Record, SimSigner, SimVerifier
from sim import report, scenarios
from sim.events import (
    A_CHURN,
    A_CRASH,
    A_HEAL,
    A_INJECT,
    A_LEAVE,
    A_PARTITION,
    A_PAUSE,
    A_PUBLISH,
    A_REATTEST,
    A_RESTART,
    A_SAMPLE,
    A_SCORE,
    A_SLOW,
    A_WORKLOAD,
    EV_ACTION,
    EV_DELIVER,
    EV_TICK,
)
from sim.invariants import Invariants
from sim.net import LinkProfile, Network
from sim.sizes import wire_size

_MASK = (1 << 64) - 1
_FNV = 0x100000001B3
_INF = math.inf
_SWIM = frozenset(SWIM_MESSAGES)
_TYPE_CODE = {t: i + 1 for i, t in enumerate(ALL_MESSAGES)}
_MAX_BYTES = {t: wire.spec_of(t)[2] for t in ALL_MESSAGES}

RECORD_TTL_S = 3600.0
WORKLOADS = ("uniform", "reattest")


def _real_score_record_bytes() -> int:
    """:func:`~overlay.dissemination.record_size` of a real score record: a signed
    :class:`~overlay.messages.ScoreRecord` as node/attestation/engine.py issues it (verdict
    "ok"), carried in a record between two 52-character peer ids, signed with Ed25519."""
    peer = "12D3KooW" + "x" * 44
    payload = wire.encode(ScoreRecord(issuer=bytes(32), subject=peer, score=100, kind="sev-snp",
                                      verdict="ok", evidence_hash=bytes(32),
                                      issued_at=1.7e9 + 0.123456, expires_at=1.7e9 + 12.123456,
                                      signature=bytes(64)))
    return record_size(Record(KIND_SCORE, peer, peer, 1, 1.7e9, 1.7e9 + 3600.0, payload, bytes(64)))


#: What the reattest workload's records weigh in a push (the simulator's ids and MACs are
#: shorter than real peer ids and signatures: its payloads make up the difference).
REAL_SCORE_RECORD_BYTES = _real_score_record_bytes()
#: The event orders this world can run (SimConfig.event_order); the trace digest of a seed is
#: stable within one order.
EVENT_ORDERS = (1, 2)


def derive_seed(seed: int, name: str) -> int:
    """A sub-seed for ``name``: independent streams that never shift each other."""
    h = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(h[:8], "big")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """One simulated run. Defaults are the steady LAN scenario at 100 nodes."""

    nodes: int = 100
    seed: int = 1
    scenario: str = "steady"
    # Safety phase (faults, workload), then liveness phase (faults healed, no new updates)
    # that must converge within liveness_deadline_s.
    duration_s: float = 30.0
    liveness_deadline_s: float = 60.0
    profile: str = "lan"  # lan | wan
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    updates_per_s: float = 1.0
    # The score workload. "uniform": ``updates_per_s`` records, each by a random live node about
    # a random other, with a 2-byte payload. "reattest": what a real node does (node/agent.py
    # re-attests every peer each reattest_interval_s and publishes a score record per outcome):
    # each live node, in rounds at its own phase, publishes one record about every other live
    # node, each as large as a real score record, so pushes carry as few records as real ones
    # do (found by bench/bench_fidelity.py, docs/simulator.md "Fidelity"). A full mesh: for
    # small worlds; ``updates_per_s`` is then unused.
    workload: str = "uniform"
    reattest_interval_s: float = 4.0
    # The reattest workload's timing: each node's first round falls uniformly in
    # [1, 1 + reattest_phase_s) (None: one interval, phases spread evenly; real nodes started
    # together re-attest together), and each record of a round follows it by up to
    # reattest_burst_s (its attestation's round trip).
    reattest_phase_s: float | None = None
    reattest_burst_s: float = 0.05
    lifeguard: bool = True
    # Per-node clock: rate error uniform in ±clock_drift_ppm, offset uniform in ±clock_offset_s.
    clock_drift_ppm: float = 100.0
    clock_offset_s: float = 0.5
    # Encode and decode every message through overlay.wire (exact bytes, slow): small N only.
    wire: bool = False
    check_invariants: bool = True
    # Overrides of the profile's core configs (None = profile default).
    membership: MembershipConfig | None = None
    dissemination: DisseminationConfig | None = None
    # Records also ride on SWIM probes (off: dedicated push rounds only, for the push-only
    # comparison with Pittel's bound).
    piggyback_records: bool = True
    # Scenario knobs.
    churn_per_s: float = 0.2
    slow_nodes: int = 1
    slow_delay_s: float = 3.0
    partition_shape: str = "halves"  # halves | isolate | random-cut | bridge
    # The event order (docs/simulator.md, "Event order versions"). 2 (default): a push whose
    # every record the receiver already holds (up, not paused, not slow) is sent and counted
    # but never delivered, since its delivery would change nothing; the receiving core is not
    # called (issue 17). 1: every push is delivered (the order of the engine before; replays
    # the digests recorded with it).
    event_order: int = 2
    # Progress callback: (virtual_time_s, total_s) -> None, called about once per virtual second.
    progress: Callable[[float, float], None] | None = None

    def membership_config(self) -> MembershipConfig:
        base = self.membership or (MembershipConfig.wan() if self.profile == "wan"
                                   else MembershipConfig.lan())
        if base.lifeguard != self.lifeguard:
            base = dataclasses.replace(base, lifeguard=self.lifeguard)
        return base

    def dissemination_config(self) -> DisseminationConfig:
        return self.dissemination or (DisseminationConfig.wan() if self.profile == "wan"
                                      else DisseminationConfig.lan())


class SimNode:
    """World-side bookkeeping of one node; the protocol state lives in ``m`` and ``d``."""

    __slots__ = ("d", "epoch", "faulted", "id", "idx", "m", "m_deadline", "offset",
                 "pause_until", "rate", "restarts", "signer", "slow_s", "tick_at", "up",
                 "version")

    def __init__(self, idx: int, node_id: str, rate: float, offset: float,
                 signer: SimSigner) -> None:
        self.idx = idx
        self.id = node_id
        self.rate = rate
        self.offset = offset
        self.signer = signer
        self.up = True
        self.slow_s = 0.0
        self.pause_until = 0.0
        self.tick_at = _INF
        self.m_deadline = _INF  # membership's last next_deadline() (local time), see _after
        self.epoch = 0
        self.faulted = False
        self.restarts = 0
        self.version = 0
        self.m: Membership = None  # type: ignore[assignment]
        self.d: Dissemination = None  # type: ignore[assignment]

    def local(self, t: float) -> float:
        return self.offset + t * self.rate


class Track:
    """Spread of one published record: who had it and when (seconds after publish)."""

    __slots__ = ("kind", "live", "t0", "times")

    def __init__(self, kind: str, t0: float, live: int) -> None:
        self.kind = kind
        self.t0 = t0
        self.live = live
        self.times: list[float] = []


class World:
    """Build with a :class:`SimConfig`, then :meth:`run` returns the report dict."""

    def __init__(self, cfg: SimConfig) -> None:
        if cfg.nodes < 2:
            raise ValueError("need at least 2 nodes")
        setup0 = time.perf_counter()
        self.cfg = cfg
        self.mcfg = cfg.membership_config()
        self.dcfg = cfg.dissemination_config()
        self.mcfg.validate()
        self.dcfg.validate()
        self.now = 0.0
        self._seq = 0
        self._heap: list[tuple[float, int, int, Any, Any, Any]] = []
        self.trace = 0xCBF29CE484222325
        self.events = 0
        # Events handled, by kind: [0] ticks, [code] deliveries of message type code
        # (_TYPE_CODE), [-1] actions. The report's events_by_kind.
        self.kind_counts = [0] * (len(ALL_MESSAGES) + 2)
        if cfg.event_order not in EVENT_ORDERS:
            raise ValueError(f"event_order must be one of {EVENT_ORDERS}")
        if cfg.workload not in WORKLOADS or not cfg.reattest_interval_s > 0 \
                or not cfg.reattest_burst_s >= 0 or not (cfg.reattest_phase_s or 0.0) >= 0:
            raise ValueError(f"workload must be one of {WORKLOADS}, reattest_interval_s > 0, "
                             "reattest_burst_s and reattest_phase_s >= 0")
        self._elide = cfg.event_order >= 2 and not cfg.wire
        self.elided = 0  # pushes not delivered because they would change nothing
        self.net_rng = random.Random(derive_seed(cfg.seed, "net"))
        self.fault_rng = random.Random(derive_seed(cfg.seed, "faults"))
        self.work_rng = random.Random(derive_seed(cfg.seed, "workload"))
        profile = LinkProfile.wan() if cfg.profile == "wan" else LinkProfile.lan()
        self.link_profile = profile
        self.net = Network(cfg.nodes, profile, self.net_rng, loss=cfg.loss,
                           duplicate=cfg.duplicate, reorder=cfg.reorder)
        n = cfg.nodes
        width = max(5, len(str(n)))
        self.ids = [f"n{i:0{width}d}" for i in range(n)]
        self.index = {nid: i for i, nid in enumerate(self.ids)}
        # Ground truth: who is attested (never changes) and who was revoked (the nodes learn
        # it from the manager's revocation hints, see _after); every issuer's secret.
        self.attested: frozenset[str] = frozenset(self.ids)
        self.revoked_truth: dict[str, float] = {}
        secrets = {nid: derive_seed(cfg.seed, "key/" + nid).to_bytes(8, "big") * 2
                   for nid in self.ids}
        # An outsider with a valid key pair that never passed attestation.
        self.intruder = "intruder"
        secrets[self.intruder] = derive_seed(cfg.seed, "key/intruder").to_bytes(8, "big") * 2
        self.secrets = secrets
        self.verifier = SimVerifier(secrets)
        self.manager = 0  # the node that issues revocations (the "manager")
        self.snapshot = Snapshot(self.ids)
        self.nodes: list[SimNode] = []
        drift_rng = random.Random(derive_seed(cfg.seed, "clocks"))
        # Building n nodes allocates millions of objects and no garbage cycles: the cyclic
        # collector would walk the growing heap again and again (see run()).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for i, nid in enumerate(self.ids):
                rate = 1.0 + (drift_rng.random() * 2 - 1) * cfg.clock_drift_ppm * 1e-6
                offset = 1000.0 + (drift_rng.random() * 2 - 1) * cfg.clock_offset_s
                node = SimNode(i, nid, rate, offset, SimSigner(nid, secrets[nid]))
                self.nodes.append(node)
                self._boot(node, 0.0, join=False)
        finally:
            if gc_was_on:
                gc.enable()
        # Metrics.
        self.sent_msgs = 0
        self.sent_bytes = 0
        self.load_msgs: list[int] = []
        self.load_bytes: list[int] = []
        self.tracks: dict[Record, Track] = {}
        self.crash_at: dict[int, float] = {}
        self.first_probed: dict[int, float] = {}
        self.first_probe_times: list[float] = []
        self.detections: list[float] = []
        self.fp_suspect = 0
        self.fp_dead = 0
        self.fp_raised = 0
        self.decode_errors = 0
        self.dropped = {"unknown-destination": 0, "oversize": 0}
        self.invariants = Invariants(self)
        self.phase = "safety"
        self.fault_free = True
        self.workload_on = True
        self.liveness: dict[str, Any] = {}
        self.key_versions: dict[str, int] = {}
        # Scenario state (sim.scenarios).
        self.churn_on = True
        self.inject_on = True
        self.revocation_victim: int | None = None
        self.injected_after_revocation = 0
        self.setup_s = time.perf_counter() - setup0  # building the nodes (wall), before run()

    # ------------------------------------------------------------------ nodes

    def _trusted(self, issuer: str) -> bool:
        return issuer in self.attested

    def _is_manager(self, issuer: str) -> bool:
        return issuer == self.ids[self.manager]

    def _boot(self, node: SimNode, t: float, *, join: bool) -> None:
        rng = random.Random(derive_seed(self.cfg.seed, f"node/{node.id}/{node.restarts}"))
        local = node.local(t)
        if join:
            m = Membership(node.id, self.mcfg, rng, local)
        else:
            m = Membership(node.id, self.mcfg, rng, local, initial_members=self.snapshot)
        d = Dissemination(node.id, self.dcfg, rng, local, verify=self.verifier,
                          issuer_trusted=self._trusted, peers=m, is_manager=self._is_manager)
        if self.cfg.piggyback_records:
            m.delegate = d
        node.m, node.d = m, d
        node.up = True
        node.epoch += 1
        node.tick_at = _INF
        if join:
            seeds = self._live_sample(3, exclude=node.idx)
            m.join([self.ids[s] for s in seeds], local)
        self._after(node, t)

    def _live_sample(self, k: int, exclude: int = -1) -> list[int]:
        rng = self.fault_rng
        out: list[int] = []
        n = len(self.nodes)
        for _ in range(20 * k + 20):
            i = rng.randrange(n)
            if i != exclude and self.nodes[i].up and i not in out:
                out.append(i)
                if len(out) == k:
                    break
        return out

    def live_nodes(self) -> list[SimNode]:
        return [nd for nd in self.nodes if nd.up]

    # ------------------------------------------------------------------ events

    def push(self, t: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b, c))

    def _after(self, node: SimNode, t: float) -> None:
        """Drain a node's outputs, then make sure its next deadline has a tick scheduled."""
        m = node.m
        if m.has_output():
            r = m.ready()
            for dst, msg in r.messages:
                self._send(node, dst, msg, t)
            if r.events:
                inv = self.invariants
                for ev in r.events:
                    self._on_member_event(node, ev, t)
                    inv.on_member_event(node, ev, t)
        # Membership's deadline changes only when membership is called (step, tick, join,
        # leave), and every such call ends here: cache it for the events that touch only the
        # dissemination core (_after_d).
        node.m_deadline = m.next_deadline()
        self._after_d(node, t)

    def _after_d(self, node: SimNode, t: float) -> None:
        """:meth:`_after` for an event that called only the dissemination core."""
        d = node.d
        if d.has_output():
            r2 = d.ready()
            for dst, msg in r2.messages:
                self._send(node, dst, msg, t)
            if r2.accepted:
                inv = self.invariants
                tracks = self.tracks
                revoked: list[str] = []
                for rec in r2.accepted:
                    tr = tracks.get(rec)
                    if tr is not None:
                        tr.times.append(t - tr.t0)
                    inv.on_accept(node, rec, t)
                    if rec.kind == KIND_REVOCATION:
                        revoked.append(rec.subject)
                # A revocation hint (the core takes it only from the manager) stands for the
                # node fetching the committed state and applying the revocation at once, as a
                # real node does (node/gossip.py): the revoked node's records go.
                for subject in revoked:
                    d.revoke(subject)
        dl = node.m_deadline
        dl2 = d.next_deadline()
        if dl2 < dl:
            dl = dl2
        if dl < _INF:
            g = (dl - node.offset) / node.rate
            # Round up so that the node's local clock at g is not below its deadline (a
            # float round trip could land just short and spin on the same instant).
            while node.offset + g * node.rate < dl:
                g = math.nextafter(g, _INF)
        else:
            g = _INF
        if g < t:
            g = t
        if g < node.tick_at:
            node.tick_at = g
            self._seq += 1
            heapq.heappush(self._heap, (g, self._seq, EV_TICK, node.idx, node.epoch, None))

    def _send(self, src: SimNode, dst_id: str, msg: Any, t: float) -> None:
        """The transport's send: best effort, never raises, never blocks (datagram semantics,
        as the libp2p driver in node/gossip.py; tests/conformance holds both to one contract)."""
        di = self.index.get(dst_id)
        if di is None:
            self.dropped["unknown-destination"] += 1
            return
        data = b""
        if self.cfg.wire:
            try:
                data = wire.encode(msg)
            except LocalProtocolError:
                self.dropped["oversize"] += 1
                return
            size = len(data)
        else:
            size = wire_size(msg)
            if size > _MAX_BYTES[type(msg)]:
                self.dropped["oversize"] += 1
                return
        self.sent_msgs += 1
        self.sent_bytes += size
        b = int(t)
        lm = self.load_msgs
        if b >= len(lm):
            grow = b + 1 - len(lm)
            lm.extend([0] * grow)
            self.load_bytes.extend([0] * grow)
        lm[b] += 1
        self.load_bytes[b] += size
        dst = self.nodes[di]
        if self._elide and type(msg) is GossipPush and not msg.user and dst.up \
                and not dst.slow_s and dst.pause_until <= t and dst.d.holds_all(msg.records):
            self.elided += 1  # event order 2: a delivery that would change nothing
            return
        if not dst.up and type(msg) is SwimPing:
            ca = self.crash_at.get(di)
            if ca is not None and di not in self.first_probed:
                self.first_probed[di] = t - ca  # SWIM's "first probe of a failed member"
        self._carry(src.idx, di, msg, data, size, t)

    def _carry(self, si: int, di: int, msg: Any, data: bytes, size: int, t: float) -> None:
        """Put one message (or its bytes, in wire mode) on the simulated link si -> di."""
        delays = self.net.delays(si, di, size)
        if not delays:
            return
        dst = self.nodes[di]
        for dly in delays:
            if dst.slow_s:
                dly += self.net_rng.random() * dst.slow_s
            payload = msg
            if self.cfg.wire:
                try:
                    payload = wire.decode(data, ALL_MESSAGES)
                except RemoteProtocolError:
                    self.decode_errors += 1
                    continue
            self._seq += 1
            heapq.heappush(self._heap, (t + dly, self._seq, EV_DELIVER, di, si, payload))

    def send_bytes(self, src_idx: int, dst_idx: int, data: bytes, t: float) -> None:
        """Raw bytes from ``src_idx`` to ``dst_idx`` (wire mode): what a hostile or broken peer
        can put on a link. The receiving side decodes them like any frame; garbage is counted
        in ``decode_errors`` and dropped."""
        if not self.cfg.wire:
            raise ValueError("send_bytes needs SimConfig(wire=True)")
        self._carry(src_idx, dst_idx, None, data, len(data), t)

    def _on_member_event(self, observer: SimNode, ev: Any, t: float) -> None:
        st = ev.state
        if st != SUSPECT and st != DEAD:
            return
        si = self.index.get(ev.node)
        if si is None:
            return
        subj = self.nodes[si]
        ca = self.crash_at.get(si)
        if ca is not None:
            self.detections.append(t - ca)
            del self.crash_at[si]
            fp = self.first_probed.pop(si, None)
            if fp is not None:
                self.first_probe_times.append(fp)
        if subj.up and not subj.faulted:
            if st == SUSPECT:
                self.fp_suspect += 1
                if ev.origin == observer.id:
                    self.fp_raised += 1
            else:
                self.fp_dead += 1

    def run_until(self, until: float) -> None:
        heap = self._heap
        nodes = self.nodes
        ids = self.ids
        pop = heapq.heappop
        trace = self.trace
        events = self.events
        swim = _SWIM
        codes = _TYPE_CODE
        kc = self.kind_counts
        while heap and heap[0][0] <= until:
            t, _, kind, a, b, c = pop(heap)
            self.now = t
            if kind == EV_DELIVER:
                node = nodes[a]
                if not node.up:
                    continue
                if node.pause_until > t:
                    self.push(node.pause_until, EV_DELIVER, a, b, c)
                    continue
                local = node.offset + t * node.rate
                code = codes[type(c)]
                kc[code] += 1
                trace = ((trace ^ (a * 131 + b * 7 + code + int(t * 1e6))) * _FNV) & _MASK
                if type(c) in swim:
                    node.m.step(ids[b], c, local)
                    self._after(node, t)
                else:
                    # A push or digest touches the dissemination core only: membership has
                    # no output and the same deadline as after its last event (cached).
                    node.d.step(ids[b], c, local)
                    self._after_d(node, t)
            elif kind == EV_TICK:
                node = nodes[a]
                if not node.up or b != node.epoch or node.tick_at != t:
                    continue
                if node.pause_until > t:
                    node.tick_at = node.pause_until
                    self.push(node.pause_until, EV_TICK, a, b)
                    continue
                node.tick_at = _INF
                local = node.offset + t * node.rate
                node.m.tick(local)
                node.d.tick(local)
                kc[0] += 1
                trace = ((trace ^ (a * 131 + 1 + int(t * 1e6))) * _FNV) & _MASK
                self._after(node, t)
            else:
                kc[-1] += 1
                trace = ((trace ^ (a * 977 + 2 + int(t * 1e6))) * _FNV) & _MASK
                self._action(a, b, c, t)
            events += 1
        self.trace = trace
        self.events = events
        if self.now < until:
            self.now = until

    # ------------------------------------------------------------------ actions

    def _action(self, a: int, b: Any, c: Any, t: float) -> None:

        if a == A_WORKLOAD:
            if self.workload_on and self.cfg.updates_per_s > 0:
                self.publish_score(t)
                self.push(t + 1.0 / self.cfg.updates_per_s, EV_ACTION, A_WORKLOAD)
        elif a == A_REATTEST:
            if self.workload_on:
                self.reattest_round(b, t)
        elif a == A_SCORE:
            if self.workload_on:
                self.publish_real_score(b, c, t)
        elif a == A_PUBLISH:
            if b == 1:
                self.publish_revocation(t, c)
            else:
                self.publish_score(t)
        elif a == A_CRASH:
            self.crash(b, t, note=c or "")
        elif a == A_RESTART:
            self.restart(b, t)
        elif a == A_PAUSE:
            nd = self.nodes[b]
            nd.faulted = True
            nd.pause_until = t + c
        elif a == A_LEAVE:
            nd = self.nodes[b]
            if nd.up:
                nd.faulted = True
                nd.m.leave(nd.local(t))
                self._after(nd, t)
                # The process exits shortly after announcing.
                self.push(t + 2 * self.mcfg.probe_interval_s, EV_ACTION, A_CRASH, b, "left")
        elif a == A_PARTITION:
            scenarios.partition(self, b)
        elif a == A_HEAL:
            self.net.heal()
        elif a == A_SLOW:
            nd = self.nodes[b]
            nd.slow_s = c
            nd.faulted = c > 0
        elif a == A_INJECT:
            scenarios.inject(self, b, t)
        elif a == A_CHURN:
            scenarios.churn_step(self, t, b)
        elif a == A_SAMPLE:
            if self.cfg.progress is not None:
                self.cfg.progress(t, self.cfg.duration_s + self.cfg.liveness_deadline_s)
            self.push(t + 1.0, EV_ACTION, A_SAMPLE)

    def crash(self, i: int, t: float, *, note: str = "") -> None:
        nd = self.nodes[i]
        if not nd.up:
            return
        nd.up = False
        nd.faulted = True
        nd.tick_at = _INF
        if note != "left":  # a graceful leave is announced, not detected
            self.crash_at.setdefault(i, t)

    def restart(self, i: int, t: float) -> None:
        nd = self.nodes[i]
        if nd.up:
            return
        nd.restarts += 1
        nd.pause_until = 0.0
        self.crash_at.pop(i, None)
        self.first_probed.pop(i, None)
        self._boot(nd, t, join=True)

    def publish_score(self, t: float) -> Record | None:
        rng = self.work_rng
        live = self._live_sample(2)
        if len(live) < 2:
            return None
        issuer = self.nodes[live[0]]
        if issuer.id in self.revoked_truth:
            return None
        return self._publish_score(issuer, self.ids[live[1]], rng.randrange(0, 1001).to_bytes(2, "big"), t)

    def reattest_round(self, i: int, t: float) -> None:
        """The reattest workload's round of node ``i``: a record about every other live node,
        each after its own attestation's round trip (up to ``reattest_burst_s``), then the
        next round one interval later, give or take ``reattest_burst_s`` (the round trips move
        a real node's rounds about that much, so their phase against the gossip rounds
        wanders, as here)."""
        rng = self.work_rng
        burst = self.cfg.reattest_burst_s
        if self.nodes[i].up:
            for nd in self.nodes:
                if nd.up and nd.idx != i:
                    self.push(t + rng.random() * burst, EV_ACTION, A_SCORE, i, nd.idx)
        self.push(t + self.cfg.reattest_interval_s + (rng.random() - 0.5) * burst, EV_ACTION,
                  A_REATTEST, i)

    def publish_real_score(self, i: int, j: int, t: float) -> Record | None:
        """Node ``i``'s record about node ``j``, padded to a real score record's size."""
        issuer = self.nodes[i]
        if not issuer.up or not self.nodes[j].up or issuer.id in self.revoked_truth:
            return None
        subject = self.ids[j]
        head = self.work_rng.randrange(0, 1001).to_bytes(2, "big")
        # record_size of this record with the bare 2-byte payload: the padding makes up the rest
        bare = record_size(Record(KIND_SCORE, issuer.id, subject, 0, 0.0, 0.0, head,
                                  bytes(SimSigner.SIGNATURE_BYTES)))
        payload = head + bytes(max(0, REAL_SCORE_RECORD_BYTES - bare))
        return self._publish_score(issuer, subject, payload, t)

    def _publish_score(self, issuer: SimNode, subject: str, payload: bytes, t: float) -> Record:
        key = f"{KIND_SCORE}/{subject}"
        v = self.key_versions.get(key, 0) + 1
        self.key_versions[key] = v
        local = issuer.local(t)
        rec = issuer.signer.sign(KIND_SCORE, subject, v, local, local + RECORD_TTL_S, payload)
        return self._originate(issuer, rec, t)

    def publish_revocation(self, t: float, subject_idx: int) -> Record | None:
        mgr = self.nodes[self.manager]
        if not mgr.up:
            return None
        subject = self.ids[subject_idx]
        key = f"{KIND_REVOCATION}/{subject}"
        v = self.key_versions.get(key, 0) + 1
        self.key_versions[key] = v
        local = mgr.local(t)
        rec = mgr.signer.sign(KIND_REVOCATION, subject, v, local, local + RECORD_TTL_S, b"")
        self.revoked_truth.setdefault(subject, t)
        return self._originate(mgr, rec, t)

    def _originate(self, node: SimNode, rec: Record, t: float) -> Record:
        live = sum(1 for nd in self.nodes if nd.up)
        self.tracks[rec] = Track(rec.kind, t, live)
        node.d.publish(rec, node.local(t))
        self._after(node, t)
        return rec

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        """Run the safety phase, heal, run the liveness phase; the report.

        The cyclic garbage collector is off for the run (back as it was after): the world
        makes no reference cycles per event, but a 10,000-node world holds millions of
        objects that every full collection walks, about a quarter of a compiled run's time
        (perf, issue 17). Reference counting still frees everything as before."""
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if gc_was_on:
                gc.enable()

    def _run(self) -> dict[str, Any]:
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        cfg = self.cfg
        scenarios.setup(self)
        self.push(0.0, EV_ACTION, A_SAMPLE)
        if cfg.workload == "reattest":
            phase = cfg.reattest_interval_s if cfg.reattest_phase_s is None else cfg.reattest_phase_s
            for i in range(cfg.nodes):
                self.push(1.0 + self.work_rng.random() * phase, EV_ACTION, A_REATTEST, i)
        elif cfg.updates_per_s > 0:
            self.push(1.0, EV_ACTION, A_WORKLOAD)
        self.run_until(cfg.duration_s)
        # Liveness: heal everything, stop the workload, require convergence by the deadline.
        self.phase = "liveness"
        self.workload_on = False
        scenarios.heal(self)
        deadline = cfg.duration_s + cfg.liveness_deadline_s
        t = cfg.duration_s
        converged_at = None
        why: list[str] = []
        while t < deadline:
            t = min(deadline, t + 1.0)
            self.run_until(t)
            why = self.invariants.convergence_problems()
            if not why:
                converged_at = t
                break
        self.liveness = {
            "converged": converged_at is not None,
            "converged_after_s": None if converged_at is None else converged_at - cfg.duration_s,
            "deadline_s": cfg.liveness_deadline_s,
            "why_not": why[:10],
        }
        if converged_at is None:
            self.invariants.violation(f"liveness: no convergence within {cfg.liveness_deadline_s}s: "
                                      + "; ".join(why[:3]))
        wall = time.perf_counter() - wall0
        return report.build(self, wall, time.process_time() - cpu0)

    def trace_digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.trace.to_bytes(8, "big"))
        h.update(f"{self.events}/{self.sent_msgs}/{self.sent_bytes}".encode())
        if self.cfg.event_order >= 2:
            h.update(f"/order{self.cfg.event_order}/{self.elided}".encode())
        return h.hexdigest()[:32]
