"""SWIM membership with the Lifeguard refinements, as a sans-IO state machine.

Rules
-----
1. No I/O, no clock, no global randomness: time is the ``now`` float (seconds) handed to every
   call, randomness is the injected ``random.Random``. The object never blocks.
2. Inputs: :meth:`Membership.step` (one decoded message from an authenticated peer) and
   :meth:`Membership.tick` (time passed). Call ``tick`` no later than :meth:`next_deadline`.
3. Outputs: :meth:`Membership.ready` drains ``(destination, message)`` pairs to send and
   :class:`MemberEvent` state changes. The caller sends the messages in order, best effort
   (datagram semantics: loss is normal and tolerated).
4. Node ids are opaque strings (libp2p peer ids on a real node). A node never appears in its
   own probe ring.
5. ``from_id`` is authenticated by the caller (the attested channel), nothing in a message is:
   one member may lie. What it can claim is checked against what it can know (below,
   *Hostile members*); a refused input is reported in :attr:`Ready.refused` and changes nothing.

Theory of operation
-------------------
*Failure detection (SWIM).* Every ``probe_interval_s`` the node probes the next member of a
randomly permuted ring (round-robin, so every member is probed within one pass): a direct
``SwimPing``; if no ``SwimAck`` arrives within ``probe_timeout_s``, ``indirect_checks`` other
members are asked (``SwimPingReq``) to probe it for us and forward the ack. No ack by the end of
the probe interval makes the target *suspect*.

*Suspicion (SWIM + Lifeguard).* A suspect update ``(node, incarnation, origin)`` spreads by
piggybacking. The suspect refutes it by raising its own incarnation and spreading *alive*; an
update only wins over the current view if its incarnation is higher, or equal with a stronger
state (suspect beats alive, dead beats suspect). If the suspicion is not refuted in time the
member is declared *dead*. Lifeguard makes the timeout dynamic: it starts at ``max`` and decays
towards ``min`` as independent confirmations (suspect updates from other origins) arrive::

    min = suspicion_mult × max(1, log10(n)) × probe_interval_s
    max = suspicion_max_timeout_mult × min
    k   = suspicion_mult − 2   (expected confirmations, capped at n − 2)
    timeout(c) = max(min, max − (max − min) × log(c + 1) / log(k + 1))

*Local health (Lifeguard LHM).* A counter ``0 ≤ h < awareness_max_multiplier`` measures how
much this node suspects *itself* of being slow: a probe answered in time −1, a failed probe +1,
missed ``SwimNack``\\s from ping-req helpers +1 each, having to refute a suspicion about us +1.
The probe interval and the probe timeout are multiplied by ``h + 1``, so a node that cannot keep
up stops accusing healthy members. Helpers that got no answer from the target send a nack after
``nack_ratio × probe_timeout_s``, which tells the requester the *network path* is fine.

*Membership changes.* Join: a ``SwimSync(join=True)`` to seed nodes, answered with the full
state. Periodic push-pull (``push_pull_interval_s``, scaled up with log2 n above 32 members)
repairs views that gossip missed. Leave: the node spreads ``left`` at its current incarnation
and stops probing. A restarted node begins at incarnation 0, learns it was dead or left, and
refutes with a higher incarnation: that is the rejoin.

*Reconnect.* Every ``reconnect_interval_s`` the node pings one member it believes dead (or
left, when it heard so second-hand), with that news attached. A live one refutes (the answer
carries its current incarnation) and the
two swap full states, so a healed partition converges without waiting for push-pull.

*Hostile members.* Updates are unsigned and relayed, so an update's ``origin`` (who made the
claim) may legitimately differ from the peer that delivered it; everything that can be tied to
the sender is:

* an *alive* (or *left*) claim is the node's own word: its origin must be the node itself;
  an accusation (*suspect*, *dead*) is never made by the accused (origin ≠ node), and what a
  peer says about *itself* can only be alive or left. A sync is the sender's own view: its
  accusations carry the sender as origin.
* acks count only from whom we asked: the probe's target, or a helper we sent a ping-req to
  (an indirect ack comes from the helper, not the target); nacks only from those helpers, once
  each; a reconnect answer only from the node we pinged; a forwarded ack only from the target
  the requester named. A ping-req asks us to probe a member other than the requester,
  at most ``MAX_FORWARDS_PER_PEER`` at a time per requester.
* Lifeguard confirmations: a suspicion is confirmed once per origin, and a peer relaying
  others' accusations adds at most one confirmation per suspicion, so one member inventing
  origins shortens no timeout below what it alone could.
* Incarnations. Only the node itself raises its incarnation (+1 per refutation), so a claim
  by anyone else about node X may raise X's incarnation by at most ``incarnation_window``
  over what we hold (over 0 for a member we do not know); X's own word (``from_id`` = X) is
  taken as it is. An accusation at ``INCARNATION_MAX`` by anyone but the node is refused: the
  top value is reserved for refutations, so a victim can always outbid an accusation; and at
  the top a node's own alive, heard from it, beats an accusation at the same incarnation.
  A node refuting a claim about itself raises its incarnation by at most the window too (a
  restarted node that lived long climbs in window-sized steps). Pushing anyone to the cap
  would take 2^63 / window accepted updates (2^53 with the default): out of reach.
* New members. A member enters only if ``admit(node)`` holds (the driver: an attested peer),
  and one peer may introduce at most ``max_introduced_per_peer`` members we have not yet
  heard from ourselves (the first message from a member releases its slot), except in the
  full state a seed sends back to our own join. A member ``admit`` refuses is reported in
  :attr:`Ready.unadmitted` under the peer that named it, so the driver can go and meet it
  (and admit it once it is an attested peer): this is how a joining node learns the
  federation from its seed's full state at once.

*Dissemination.* Updates ride on probe messages and on ``swim-gossip`` rounds (``gossip_nodes``
members every ``gossip_interval_s``, only while something is pending) through a
transmit-limited queue: each is sent ``retransmit_mult × ceil(log10(n + 1))`` times,
fewest-sent first. A :class:`PiggybackDelegate` (the dissemination core) can add signed records
to probes under a byte budget.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from overlay.dissemination import TransmitLimitedQueue, retransmit_limit
from overlay.errors import LocalProtocolError
from overlay.messages_gossip import (
    ALIVE,
    DEAD,
    INCARNATION_MAX,
    LEFT,
    MAX_SYNC_MEMBERS,
    MAX_UPDATES,
    STATE_NAMES,
    SUSPECT,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
    SwimSync,
    SwimUpdate,
)
from overlay.records import Record

NodeId = str
MAX_FORWARDS_PER_PEER = 4  # ping-reqs one requester may have us serve at once (SWIM asks k)


@dataclasses.dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Membership tuning. Start from :meth:`lan`, :meth:`wan` or :meth:`local_test`."""

    # Time between two probes (SWIM's protocol period T). Failure is first detected after
    # about e/(e−1) ≈ 1.58 periods on average; bandwidth is O(1) per node per period.
    probe_interval_s: float = 1.0
    # How long a direct ping waits for its ack before asking helpers; must exceed the 99th
    # percentile round trip, and be below probe_interval_s so the indirect probe has time.
    probe_timeout_s: float = 0.5
    # Helpers asked to probe an unresponsive member (SWIM's k).
    indirect_checks: int = 3
    # min suspicion timeout = suspicion_mult × max(1, log10(n)) × probe_interval_s; it also
    # sets the expected confirmations k = suspicion_mult − 2.
    suspicion_mult: int = 4
    # max suspicion timeout = suspicion_max_timeout_mult × min (Lifeguard's starting point).
    suspicion_max_timeout_mult: int = 6
    # Each membership update is piggybacked retransmit_mult × ceil(log10(n + 1)) times.
    retransmit_mult: int = 4
    # LHM saturates here: timeouts scale by at most this factor.
    awareness_max_multiplier: int = 8
    # Helpers send a nack after nack_ratio × probe_timeout_s without an answer from the target.
    nack_ratio: float = 0.8
    # Full-state push-pull with one random member, every push_pull_interval_s ×
    # max(1, ceil(log2(n) − log2(32)) + 1) (memberlist's pushPullScale) ×
    # max(1, n / push_pull_linear_above): a full state is O(n) bytes, so past that size the
    # period grows linearly too and sync bytes per node per second stop growing (at 10,000
    # nodes memberlist's log scaling alone spends ~2.6 kB/node/s on syncs). 0 disables it.
    push_pull_interval_s: float = 30.0
    push_pull_linear_above: int = 1024
    # Every reconnect_interval_s, ping one random member we believe dead (not left) with the
    # news of its death: if it is in fact alive (a healed partition, a false positive) it
    # refutes, and the refutation rides back on the ack. 0 disables (Serf's reconnect loop).
    reconnect_interval_s: float = 10.0
    # Pending membership updates are also pushed to gossip_nodes random members every
    # gossip_interval_s (memberlist's gossip loop): piggybacking alone carries only ~2
    # messages per probe period, too few after a partition heals and dozens of refutations
    # queue up at once. Idle nodes send nothing.
    gossip_interval_s: float = 0.2
    gossip_nodes: int = 3
    # Byte budget of the piggybacked updates and records on one probe message (fits one
    # 1,400-byte datagram with the envelope).
    max_piggyback_bytes: int = 1200
    # Refuse to track more members than this (bounds memory and the sync message).
    max_members: int = MAX_SYNC_MEMBERS
    # A claim by anyone but X may raise X's incarnation by at most this over our view (honest
    # incarnations grow by 1 per refutation; X's own word is not bounded). See "Hostile members".
    incarnation_window: int = 1024
    # Members one peer may introduce that we have not heard from ourselves yet.
    max_introduced_per_peer: int = 256
    # Lifeguard switch: LHM, nacks, dynamic suspicion and the buddy system. Off = plain SWIM
    # with a fixed suspicion timeout of `min`. Kept as a switch to measure what it buys.
    lifeguard: bool = True

    @classmethod
    def lan(cls) -> MembershipConfig:
        """A LAN / single-datacentre cluster (memberlist DefaultLANConfig)."""
        return cls()

    @classmethod
    def wan(cls) -> MembershipConfig:
        """Nodes across regions: slower probes, longer suspicion (memberlist DefaultWANConfig)."""
        return cls(probe_interval_s=5.0, probe_timeout_s=3.0, suspicion_mult=6,
                   push_pull_interval_s=60.0)

    @classmethod
    def local_test(cls) -> MembershipConfig:
        """Loopback tests: fast probes, short suspicion (memberlist DefaultLocalConfig)."""
        return cls(probe_interval_s=1.0, probe_timeout_s=0.2, suspicion_mult=3,
                   push_pull_interval_s=15.0)

    def validate(self) -> None:
        """Raise LocalProtocolError if the settings are inconsistent."""
        if not 0 < self.probe_timeout_s < self.probe_interval_s:
            raise LocalProtocolError("need 0 < probe_timeout_s < probe_interval_s")
        if self.indirect_checks < 0 or self.suspicion_mult < 1 or self.retransmit_mult < 1:
            raise LocalProtocolError("indirect_checks >= 0, suspicion_mult and retransmit_mult >= 1")
        if self.suspicion_max_timeout_mult < 1 or self.awareness_max_multiplier < 1:
            raise LocalProtocolError("timeout multipliers must be >= 1")
        if not 0 < self.nack_ratio < 1:
            raise LocalProtocolError("nack_ratio must be in (0, 1)")
        if self.gossip_interval_s <= 0 or self.gossip_nodes < 0:
            raise LocalProtocolError("gossip_interval_s > 0 and gossip_nodes >= 0")
        if self.reconnect_interval_s < 0:
            raise LocalProtocolError("reconnect_interval_s must be >= 0")
        if self.push_pull_linear_above < 32:
            raise LocalProtocolError("push_pull_linear_above must be >= 32")
        if self.push_pull_interval_s < 0 or self.max_piggyback_bytes < 256:
            raise LocalProtocolError("push_pull_interval_s >= 0, max_piggyback_bytes >= 256")
        if not 2 <= self.max_members <= MAX_SYNC_MEMBERS:
            raise LocalProtocolError(f"max_members must be in [2, {MAX_SYNC_MEMBERS}]")
        if not 1 <= self.incarnation_window <= 2**32 or self.max_introduced_per_peer < 1:
            raise LocalProtocolError("incarnation_window in [1, 2^32], max_introduced_per_peer >= 1")


# ----------------------------------------------------------------------------- pure formulas


def suspicion_bounds(cfg: MembershipConfig, n: int) -> tuple[float, float, int]:
    """``(min_s, max_s, k)`` of a suspicion started in a cluster of ``n`` members."""
    min_s = cfg.suspicion_mult * max(1.0, math.log10(max(1, n))) * cfg.probe_interval_s
    max_s = cfg.suspicion_max_timeout_mult * min_s
    k = max(0, min(cfg.suspicion_mult - 2, n - 2))
    return min_s, max_s, k


def suspicion_timeout(min_s: float, max_s: float, k: int, confirmations: int) -> float:
    """Lifeguard's decaying timeout after ``confirmations`` independent suspicions."""
    if k < 1:
        return min_s
    frac = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_s, max_s - (max_s - min_s) * frac)


def push_pull_scale(interval_s: float, n: int, linear_above: int = 1024) -> float:
    """memberlist's pushPullScale (above 32 members, slow down with log2 n), and linearly
    above ``linear_above`` members so full-state bytes per node per second stay flat."""
    if n <= 32:
        return interval_s
    scaled = interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)
    return scaled * max(1.0, n / linear_above)


# ----------------------------------------------------------------------------- API types


@dataclasses.dataclass(frozen=True, slots=True)
class MemberEvent:
    """``node`` changed to ``state`` (one of ALIVE/SUSPECT/DEAD/LEFT) at local time ``at``."""

    node: NodeId
    state: int
    incarnation: int
    at: float
    origin: NodeId

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]


#: Members ``admit`` refused that :attr:`Ready.unadmitted` names per sender and batch.
UNADMITTED_SAMPLE = 64


@dataclasses.dataclass(slots=True)
class Ready:
    """What the caller must do now: send ``messages`` (in order); observe ``events``; count
    ``refused`` inputs, ``(peer that sent it, reason)`` (rule 5). ``unadmitted`` maps each
    peer that named alive members ``admit`` refused (members it holds that we cannot admit
    yet) to the first :data:`UNADMITTED_SAMPLE` of them: the driver may ask that peer how to
    reach those it does not know (the join path: a seed's full state names the whole
    federation). Bounded by the peers we hear from times the sample, whatever they name."""

    messages: list[tuple[NodeId, Any]]
    events: list[MemberEvent]
    refused: list[tuple[NodeId, str]] = dataclasses.field(default_factory=list)
    unadmitted: dict[NodeId, list[NodeId]] = dataclasses.field(default_factory=dict)


class PiggybackDelegate(Protocol):
    """Lets another core (dissemination) ride on probe traffic."""

    def get_piggyback(self, limit_bytes: int) -> tuple[Record, ...]: ...

    def notify_piggyback(self, from_id: NodeId, records: tuple[Record, ...], now: float) -> None: ...


class Snapshot:
    """A read-only bootstrap view (ids all alive at incarnation 0) that many
    :class:`Membership` objects may share without copying (the simulator's 10,000 nodes)."""

    __slots__ = ("ids", "index")

    def __init__(self, ids: Iterable[NodeId]) -> None:
        self.ids: tuple[NodeId, ...] = tuple(dict.fromkeys(ids))
        self.index: frozenset[NodeId] = frozenset(self.ids)


class _Member:
    __slots__ = ("incarnation", "since", "state")

    def __init__(self, state: int, incarnation: int, since: float) -> None:
        self.state = state
        self.incarnation = incarnation
        self.since = since


# Shared read-only view of an implicit "alive at incarnation 0" base member (never mutated:
# writes always materialise a private _Member first).
_BASE_ALIVE = _Member(ALIVE, 0, 0.0)


class _Suspicion:
    __slots__ = ("confirmers", "deadline", "k", "max_s", "min_s", "relays", "start")

    def __init__(self, start: float, min_s: float, max_s: float, k: int, origin: NodeId,
                 sender: NodeId) -> None:
        self.start = start
        self.min_s = min_s
        self.max_s = max_s
        self.k = k
        self.confirmers = {origin}
        # Peers that relayed someone else's accusation: one confirmation each at most.
        self.relays = {sender} if sender != origin else set()
        self.deadline = start + (max_s if k >= 1 else min_s)


class _Probe:
    __slots__ = ("acked", "deadline", "expected_nacks", "helpers", "indirect_at", "indirect_sent",
                 "nacked", "nacks", "seq", "target")

    def __init__(self, seq: int, target: NodeId, indirect_at: float, deadline: float) -> None:
        self.seq = seq
        self.target = target
        self.indirect_at = indirect_at
        self.deadline = deadline
        self.indirect_sent = False
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0
        self.helpers: frozenset[NodeId] = frozenset()  # asked to probe target (ack or nack)
        self.nacked: set[NodeId] = set()  # helpers that nacked (once each)


class _Forward:
    """A ping-req we are serving: ack from the target goes back to the requester."""

    __slots__ = ("expires", "nack_at", "requester", "requester_seq", "target")

    def __init__(self, requester: NodeId, requester_seq: int, nack_at: float | None,
                 expires: float, target: NodeId) -> None:
        self.target = target
        self.requester = requester
        self.requester_seq = requester_seq
        self.nack_at = nack_at
        self.expires = expires


_INF = math.inf


class Membership:
    """One node's SWIM/Lifeguard membership state machine.

    Args:
        self_id: this node's id.
        config: validated on construction.
        rng: the only source of randomness.
        now: current local time, seconds.
        initial_members: ids known alive at incarnation 0 when starting (a bootstrap snapshot).
            Pass a :class:`Snapshot` to share one large view between many objects: it is never
            copied or mutated, and only members whose state later differs get a private entry.
        incarnation: starting incarnation (a restarted node that persisted it may pass it).
        delegate: optional piggyback delegate (the dissemination core).
        admit: optional predicate a node must pass to become a member (the driver's: it is an
            attested peer); None admits any (the simulator, whose nodes are all attested).

    Raises:
        LocalProtocolError: invalid config or arguments.
    """

    def __init__(
        self,
        self_id: NodeId,
        config: MembershipConfig,
        rng: random.Random,
        now: float,
        *,
        initial_members: Sequence[NodeId] | Snapshot = (),
        incarnation: int = 0,
        delegate: PiggybackDelegate | None = None,
        admit: Callable[[NodeId], bool] | None = None,
    ) -> None:
        config.validate()
        if not self_id:
            raise LocalProtocolError("self_id must be non-empty")
        self.self_id = self_id
        self.config = config
        self._rng = rng
        self._now = now
        self.incarnation = incarnation
        self.delegate = delegate
        self.admit = admit
        # Ring = base (shared, read-only) + extras (learned later). Dead members stay in the
        # ring and are skipped; the ring only grows, bounded by max_members.
        snap = initial_members if isinstance(initial_members, Snapshot) else Snapshot(
            initial_members)
        self._base: tuple[NodeId, ...] = snap.ids
        self._base_set: frozenset[NodeId] = snap.index
        self._extra: list[NodeId] = []
        self._local: dict[NodeId, _Member] = {}
        # Live (alive or suspect) members, self included: the n of every formula.
        self._n_live = len(self._base_set) - (self_id in self._base_set) + 1
        self._local[self_id] = _Member(ALIVE, incarnation, now)
        self._updates = TransmitLimitedQueue()
        self._messages: list[tuple[NodeId, Any]] = []
        self._events: list[MemberEvent] = []
        self._seq = 0
        self._probe: _Probe | None = None
        self._forwards: dict[int, _Forward] = {}
        self._suspicions: dict[NodeId, _Suspicion] = {}
        # Earliest suspicion deadline, recomputed lazily after a removal (a healed partition
        # can leave hundreds of suspicions, and next_deadline runs after every input).
        self._susp_min = _INF
        self._susp_dirty = False
        self._dead: dict[NodeId, None] = {}  # insertion-ordered set: deterministic iteration
        self._reconnect_seq = -1
        self._reconnect_target: NodeId | None = None
        self._refused: list[tuple[NodeId, str]] = []
        self._unadmitted: dict[NodeId, list[NodeId]] = {}
        # Members a peer introduced that have not spoken to us yet, and how many per peer.
        self._introduced: dict[NodeId, NodeId] = {}
        self._intro_count: dict[NodeId, int] = {}
        self._join_seeds: set[NodeId] = set()  # may answer our join with their full state
        self._health = 0
        self._ring_pos = 0
        self._ring_len = 0
        self._ring_off = 0
        self._ring_stride = 1
        self._left = False
        # Random phase so that a fleet started together does not probe in lock-step.
        self._next_probe_at = now + rng.random() * config.probe_interval_s
        pp = push_pull_scale(config.push_pull_interval_s, self._n_live,
                             config.push_pull_linear_above)
        self._next_push_pull_at = now + rng.random() * pp if pp > 0 else _INF
        self._next_gossip_at = now + rng.random() * config.gossip_interval_s
        rc = config.reconnect_interval_s
        self._next_reconnect_at = now + rng.random() * rc if rc > 0 else _INF
        self.stats = {"probes": 0, "probe_failures": 0, "suspicions_raised": 0,
                      "refutations": 0, "nacks_sent": 0}

    # ------------------------------------------------------------------ public API

    @property
    def health(self) -> int:
        """Lifeguard local-health score: 0 is healthy."""
        return self._health

    @property
    def left(self) -> bool:
        return self._left

    def num_members(self) -> int:
        """Members believed alive or suspect, self included (the n of every formula)."""
        return self._n_live

    def state_of(self, node: NodeId) -> tuple[int, int] | None:
        """``(state, incarnation)`` of ``node`` in our view, or None if unknown."""
        m = self._lookup(node)
        return None if m is None else (m.state, m.incarnation)

    def members(self) -> Iterable[tuple[NodeId, int, int]]:
        """Every known member as ``(id, state, incarnation)`` (O(n): not for hot paths)."""
        for node in self._ring():
            m = self._lookup(node)
            if m is not None:
                yield node, m.state, m.incarnation
        if self.self_id not in self._base_set and self.self_id not in self._extra:
            yield self.self_id, ALIVE, self.incarnation

    def sample(self, k: int, *, include_suspect: bool = True,
               exclude: NodeId | None = None) -> list[NodeId]:
        """Up to ``k`` distinct random live members other than ourselves (for gossip fanout)."""
        return self._sample(k, include_suspect, exclude)

    def join(self, seeds: Iterable[NodeId], now: float) -> None:
        """Announce ourselves to ``seeds`` with our state; they answer with theirs."""
        self._now = now
        me = SwimUpdate(self.self_id, ALIVE, self.incarnation, self.self_id)
        self._enqueue(me)
        for seed in seeds:
            if seed != self.self_id:
                self._join_seeds.add(seed)
                self._messages.append((seed, SwimSync(members=(me,), join=True, reply=True)))

    def leave(self, now: float) -> None:
        """Graceful leave: spread ``left`` and stop probing. Keep driving the object for a few
        probe intervals so the update gets out (the piggyback queue drains on acks)."""
        self._now = now
        self._left = True
        self._probe = None
        upd = SwimUpdate(self.self_id, LEFT, self.incarnation, self.self_id)
        self._enqueue(upd)
        # Tell a few members directly: we no longer probe, so piggybacking alone is too slow.
        for peer in self._sample(max(3, self.config.indirect_checks), True, None):
            self._messages.append((peer, SwimPing(self._next_seq(), peer, updates=(upd,))))

    def ready(self) -> Ready:
        """Drain pending outputs."""
        out = Ready(self._messages, self._events, self._refused, self._unadmitted)
        self._messages = []
        self._events = []
        self._refused = []
        self._unadmitted = {}
        return out

    def has_output(self) -> bool:
        return bool(self._messages or self._events or self._refused or self._unadmitted)

    def next_deadline(self) -> float:
        """The latest local time by which :meth:`tick` must be called."""
        left = self._left
        t = self._next_probe_at if not left else _INF
        p = self._probe
        if p is not None:
            t = min(t, p.deadline if p.indirect_sent or p.acked else p.indirect_at)
        if self._suspicions:
            sd = self._suspicion_deadline()
            if sd < t:
                t = sd
        for f in self._forwards.values():
            e = f.nack_at if f.nack_at is not None else f.expires
            if e < t:
                t = e
        if self._updates and self.config.gossip_nodes:
            g = self._next_gossip_at
            if g < self._now:  # keep the round phase while idle
                step = self.config.gossip_interval_s
                g += math.ceil((self._now - g) / step) * step
                self._next_gossip_at = g
            if g < t:
                t = g
        if left:
            return t
        if self._next_push_pull_at < t:
            t = self._next_push_pull_at
        if self._dead and self._next_reconnect_at < t:
            t = self._next_reconnect_at
        return t

    def tick(self, now: float) -> None:
        """Advance timers to local time ``now``."""
        self._now = now
        if self._suspicions and self._suspicion_deadline() <= now:
            expired = [n for n, s in self._suspicions.items() if s.deadline <= now]
            self._susp_dirty = True
            for node in expired:
                del self._suspicions[node]
                m = self._lookup(node)
                if m is not None and m.state == SUSPECT:
                    self._apply(SwimUpdate(node, DEAD, m.incarnation, self.self_id), now)
        if self._forwards:
            for seq in [s for s, f in self._forwards.items()
                        if (f.nack_at is not None and f.nack_at <= now) or f.expires <= now]:
                f = self._forwards[seq]
                if f.nack_at is not None and f.nack_at <= now:
                    f.nack_at = None
                    self._messages.append((f.requester, SwimNack(f.requester_seq)))
                    self.stats["nacks_sent"] += 1
                if f.expires <= now:
                    del self._forwards[seq]
        if now >= self._next_gossip_at:
            step = self.config.gossip_interval_s
            self._next_gossip_at += (math.floor((now - self._next_gossip_at) / step) + 1) * step
            if self._updates:
                self._gossip()
        if self._left:
            return
        if now >= self._next_reconnect_at:
            self._reconnect(now)
        p = self._probe
        if p is not None:
            if not p.acked and not p.indirect_sent and now >= p.indirect_at:
                self._send_indirect(p)
            if now >= p.deadline:
                self._finish_probe(p, now)
        if self._probe is None and now >= self._next_probe_at:
            self._start_probe(now)
        if now >= self._next_push_pull_at:
            self._push_pull(now)

    def _gossip(self) -> None:
        limit = retransmit_limit(self.config.retransmit_mult, self._n_live)
        for peer in self._sample(self.config.gossip_nodes, True, None):
            if not self._updates:
                break
            batch = self._updates.take(self.config.max_piggyback_bytes, MAX_UPDATES, limit)
            if batch:
                self._messages.append((peer, SwimGossip(tuple(batch))))

    def _reconnect(self, now: float) -> None:
        self._next_reconnect_at = now + self.config.reconnect_interval_s
        if self._dead:
            dead = list(self._dead)
            node = dead[self._rng.randrange(len(dead))]
            m = self._lookup(node)
            if m is not None:
                news = (SwimUpdate(node, LEFT, m.incarnation, node) if m.state == LEFT
                        else SwimUpdate(node, DEAD, m.incarnation, self.self_id))
                self._reconnect_seq = self._next_seq()
                self._reconnect_target = node
                self._messages.append((node, SwimPing(self._reconnect_seq, node, (news,))))

    def step(self, from_id: NodeId, msg: Any, now: float) -> None:
        """Handle one decoded message from ``from_id`` (an authenticated peer).

        Messages of types this core does not handle raise LocalProtocolError: routing is the
        caller's job. Malformed content has already been refused by the wire codec.
        """
        self._now = now
        t = type(msg)
        if from_id in self._introduced:  # it spoke to us itself: no longer its introducer's
            intro = self._introduced.pop(from_id)
            left = self._intro_count[intro] - 1
            if left:
                self._intro_count[intro] = left
            else:
                del self._intro_count[intro]
        if t is SwimPing:
            if msg.target != self.self_id:
                return  # meant for a previous incarnation of this address
            self._merge(msg.updates, now, from_id)
            if msg.records and self.delegate is not None:
                self.delegate.notify_piggyback(from_id, msg.records, now)
            updates = self._piggy_updates()
            if any(u.node == self.self_id and u.state != ALIVE for u in msg.updates):
                # The prober has a stale bad opinion of us (e.g. a reconnect probe after a
                # healed partition): answer with our current incarnation, even if the
                # refutation already left our queue.
                me = SwimUpdate(self.self_id, ALIVE, self.incarnation, self.self_id)
                updates = (me, *updates[: MAX_UPDATES - 1])
            self._messages.append((from_id, SwimAck(msg.seq, updates, self._piggy_records())))
        elif t is SwimAck:
            self._merge(msg.updates, now, from_id)
            if msg.records and self.delegate is not None:
                self.delegate.notify_piggyback(from_id, msg.records, now)
            p = self._probe
            f = self._forwards.get(msg.seq)
            if p is not None and p.seq == msg.seq:
                # Direct from the target, or forwarded by a helper we asked (indirect probe).
                if from_id != p.target and not (p.indirect_sent and from_id in p.helpers):
                    self._refuse(from_id, "ack-sender")
                    return
                p.acked = True
                self._finish_probe(p, now)
            elif msg.seq == self._reconnect_seq:
                if from_id != self._reconnect_target:
                    self._refuse(from_id, "ack-sender")
                    return
                # A member we believed dead answered: we were probably partitioned. Swap full
                # states so both sides learn (and refute) every stale death at once.
                self._reconnect_seq = -1
                self._messages.append((from_id, SwimSync(members=self._full_state(), reply=True)))
            elif f is not None:
                if from_id != f.target:
                    self._refuse(from_id, "ack-sender")
                    return
                del self._forwards[msg.seq]
                self._messages.append((f.requester, SwimAck(f.requester_seq)))
        elif t is SwimPingReq:
            self._merge(msg.updates, now, from_id)
            target = msg.target
            if target == self.self_id or target == from_id or self._lookup(target) is None:
                self._refuse(from_id, "ping-req-target")  # only members: no probes for hire
                return
            if sum(f.requester == from_id for f in self._forwards.values()) >= MAX_FORWARDS_PER_PEER:
                self._refuse(from_id, "ping-req-limit")
                return
            seq = self._next_seq()
            cfg = self.config
            nack_at = now + cfg.nack_ratio * cfg.probe_timeout_s if msg.nack else None
            self._forwards[seq] = _Forward(from_id, msg.seq, nack_at, now + cfg.probe_interval_s,
                                           target)
            self._messages.append((target, SwimPing(seq, target, self._piggy_updates())))
        elif t is SwimGossip:
            self._merge(msg.updates, now, from_id)
        elif t is SwimNack:
            p = self._probe
            if p is not None and p.seq == msg.seq:
                if from_id not in p.helpers:
                    self._refuse(from_id, "nack-sender")
                    return
                if from_id not in p.nacked:  # a duplicate counts once
                    p.nacked.add(from_id)
                    p.nacks += 1
        elif t is SwimSync:
            # The full state a seed sends back to our join may introduce everyone it knows.
            seeded = not msg.reply and from_id in self._join_seeds
            self._join_seeds.discard(from_id)
            self._merge(msg.members, now, from_id, sync=True, seeded=seeded)
            if msg.reply:
                self._messages.append((from_id, SwimSync(members=self._full_state(), reply=False)))
        else:
            raise LocalProtocolError(f"membership cannot handle {t.__name__}")

    # ------------------------------------------------------------------ probing

    def _scale(self, d: float) -> float:
        return d * (self._health + 1)

    def _adjust_health(self, delta: int) -> None:
        if self.config.lifeguard:
            self._health = max(0, min(self.config.awareness_max_multiplier - 1,
                                      self._health + delta))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _start_probe(self, now: float) -> None:
        cfg = self.config
        interval = self._scale(cfg.probe_interval_s)
        self._next_probe_at = now + interval
        target = self._next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        p = _Probe(seq, target, now + self._scale(cfg.probe_timeout_s), now + interval)
        self._probe = p
        self.stats["probes"] += 1
        updates = self._piggy_updates()
        m = self._lookup(target)
        if cfg.lifeguard and m is not None and m.state == SUSPECT:
            # Buddy system: tell the suspect directly so it can refute at once.
            buddy = SwimUpdate(target, SUSPECT, m.incarnation, self.self_id)
            updates = (buddy, *updates[: MAX_UPDATES - 1])
        self._messages.append((target, SwimPing(seq, target, updates, self._piggy_records())))

    def _send_indirect(self, p: _Probe) -> None:
        p.indirect_sent = True
        helpers = self._sample(self.config.indirect_checks, False, p.target)
        nack = self.config.lifeguard
        p.expected_nacks = len(helpers) if nack else 0
        p.helpers = frozenset(helpers)
        for h in helpers:
            self._messages.append((h, SwimPingReq(p.seq, p.target, nack)))

    def _finish_probe(self, p: _Probe, now: float) -> None:
        self._probe = None
        if p.acked:
            self._adjust_health(-1)
            return
        self.stats["probe_failures"] += 1
        if p.expected_nacks > 0:
            missed = p.expected_nacks - p.nacks
            if missed > 0:
                self._adjust_health(missed)
        else:
            self._adjust_health(1)
        m = self._lookup(p.target)
        if m is not None and m.state == ALIVE:
            self.stats["suspicions_raised"] += 1
            self._apply(SwimUpdate(p.target, SUSPECT, m.incarnation, self.self_id), now)

    def _ring(self) -> Iterable[NodeId]:
        yield from self._base
        yield from self._extra

    def _ring_at(self, i: int) -> NodeId:
        nb = len(self._base)
        return self._base[i] if i < nb else self._extra[i - nb]

    def _next_probe_target(self) -> NodeId | None:
        total = len(self._base) + len(self._extra)
        for _ in range(total + 1):
            if self._ring_pos >= self._ring_len:
                # New pass over a fresh random permutation (affine map i -> off + i·stride
                # mod L with gcd(stride, L) = 1): O(1) memory, every member once per pass.
                self._ring_len = total
                if total == 0:
                    return None
                self._ring_pos = 0
                self._ring_off = self._rng.randrange(total)
                stride = self._rng.randrange(1, total + 1)
                while math.gcd(stride, total) != 1:
                    stride += 1
                self._ring_stride = stride
            i = (self._ring_off + self._ring_pos * self._ring_stride) % self._ring_len
            self._ring_pos += 1
            node = self._ring_at(i)
            if node == self.self_id:
                continue
            m = self._lookup(node)
            if m is not None and m.state <= SUSPECT:
                return node
        return None

    def _sample(self, k: int, include_suspect: bool, exclude: NodeId | None) -> list[NodeId]:
        total = len(self._base) + len(self._extra)
        if k <= 0 or total == 0:
            return []
        limit = SUSPECT if include_suspect else ALIVE
        out: list[NodeId] = []
        if total <= 64:
            cands = [n for n in self._ring() if n != self.self_id and n != exclude
                     and (m := self._lookup(n)) is not None and m.state <= limit]
            return self._rng.sample(cands, min(k, len(cands)))
        rr = self._rng.randrange
        for _ in range(8 * k + 16):
            node = self._ring_at(rr(total))
            if node == self.self_id or node == exclude or node in out:
                continue
            m = self._lookup(node)
            if m is not None and m.state <= limit:
                out.append(node)
                if len(out) == k:
                    break
        return out

    def _push_pull(self, now: float) -> None:
        interval = push_pull_scale(self.config.push_pull_interval_s, self._n_live,
                                   self.config.push_pull_linear_above)
        self._next_push_pull_at = now + interval if interval > 0 else _INF
        peers = self._sample(1, False, None)
        if peers:
            self._messages.append((peers[0], SwimSync(members=self._full_state(), reply=True)))

    def _full_state(self) -> tuple[SwimUpdate, ...]:
        me = self.self_id
        # Alive and left are the node's own word (their origin is the node); accusations are
        # ours as far as the receiver can tell (it checks that their origin is the sender).
        out = [SwimUpdate(node, state, inc, me) if state in (SUSPECT, DEAD) else
               SwimUpdate(node, state, inc, node)
               for node, state, inc in self.members()]
        return tuple(out[:MAX_SYNC_MEMBERS])

    # ------------------------------------------------------------------ state changes

    def _lookup(self, node: NodeId) -> _Member | None:
        m = self._local.get(node)
        if m is None and node in self._base_set:
            return _BASE_ALIVE
        return m

    def _materialize(self, node: NodeId) -> _Member:
        m = self._local.get(node)
        if m is None:
            m = _Member(ALIVE, 0, 0.0)  # only called for base members
            self._local[node] = m
        return m

    def _merge(self, updates: tuple[SwimUpdate, ...], now: float, sender: NodeId, *,
               sync: bool = False, seeded: bool = False) -> None:
        for u in updates:
            why = self._implausible(u, sender, sync)
            if why is not None:
                self._refuse(sender, why)
                continue
            self._apply(u, now, sender, seeded)

    def _refuse(self, sender: NodeId, reason: str) -> None:
        self._refused.append((sender, reason))

    @staticmethod
    def _implausible(u: SwimUpdate, sender: NodeId, sync: bool) -> str | None:
        """Why ``sender`` cannot truthfully have sent ``u`` (see "Hostile members"), or None."""
        accusation = u.state in (SUSPECT, DEAD)
        if accusation == (u.origin == u.node):
            return "origin"  # alive/left are the node's own word; nobody accuses itself
        if u.node == sender and accusation:
            return "origin"  # a peer speaks of itself only first-hand
        if sync and accusation and u.origin != sender:
            return "origin"  # a sync is the sender's own view
        return None

    def _apply(self, u: SwimUpdate, now: float, sender: NodeId | None = None,
               seeded: bool = False) -> None:
        """Apply one membership update with SWIM's precedence rules. ``sender``: the peer it
        came from (None: our own conclusion), whose claims about others are bounded."""
        node = u.node
        if node == self.self_id:
            self._about_self(u)
            return
        m = self._lookup(node)
        st = u.state
        if sender is not None and sender != node:
            limit = (0 if m is None else m.incarnation) + self.config.incarnation_window
            if u.incarnation > limit:
                self._refuse(sender, "incarnation-jump")
                return
            if st != ALIVE and u.incarnation >= INCARNATION_MAX:
                self._refuse(sender, "incarnation-cap")  # the top is for refutations
                return
        if m is None:
            if st != ALIVE:
                return  # news about strangers' deaths is not our business
            if len(self._local) + len(self._base_set) >= self.config.max_members:
                return
            if self.admit is not None and not self.admit(node):
                if sender is not None:
                    self._refuse(sender, "not-admitted")
                    named = self._unadmitted.setdefault(sender, [])
                    if len(named) < UNADMITTED_SAMPLE:
                        named.append(node)
                return
            if sender is not None and sender != node and not seeded:
                if self._intro_count.get(sender, 0) >= self.config.max_introduced_per_peer:
                    self._refuse(sender, "introduce-limit")
                    return
                self._introduced[node] = sender
                self._intro_count[sender] = self._intro_count.get(sender, 0) + 1
            m = _Member(ALIVE, u.incarnation, now)
            self._local[node] = m
            if node not in self._base_set:
                self._extra.append(node)
            self._n_live += 1
            self._emit(node, ALIVE, u.incarnation, now, u.origin)
            self._enqueue(u)
            return
        inc = m.incarnation
        if st == ALIVE:
            if u.incarnation <= inc and not (
                # Saturated: at the top incarnation the node's own word, heard from it, refutes.
                u.incarnation == inc == INCARNATION_MAX and sender == node and m.state in (SUSPECT, DEAD)
            ):
                return
        elif st == SUSPECT:
            if u.incarnation < inc or m.state >= DEAD:
                return
            if m.state == SUSPECT and u.incarnation == inc:
                self._confirm(node, u, sender if sender is not None else self.self_id)
                return
        else:  # DEAD or LEFT
            if u.incarnation < inc or m.state >= DEAD:
                return
        if m is _BASE_ALIVE:
            m = self._materialize(node)
        was_live = m.state <= SUSPECT
        m.state = st
        m.incarnation = u.incarnation
        m.since = now
        now_live = st <= SUSPECT
        self._n_live += now_live - was_live
        if st == SUSPECT:
            self._start_suspicion(node, u.origin, sender if sender is not None else self.self_id, now)
        elif self._suspicions.pop(node, None) is not None:
            self._susp_dirty = True
        if st == DEAD or (st == LEFT and sender is not None and sender != node):
            # A leave we only heard of second-hand may be a lie: ping it like the dead, so a
            # node still running hears it and refutes.
            self._dead[node] = None
        else:
            self._dead.pop(node, None)
        self._emit(node, st, u.incarnation, now, u.origin)
        self._enqueue(u)

    def _confirm(self, node: NodeId, u: SwimUpdate, sender: NodeId) -> None:
        s = self._suspicions.get(node)
        if s is None or not self.config.lifeguard or u.origin in s.confirmers:
            return
        relayed = sender != u.origin
        if relayed and sender in s.relays:
            return  # one peer relaying (or inventing) accusations counts once
        if len(s.confirmers) - 1 >= s.k:
            # Already at the minimum timeout: more confirmations change nothing here, and
            # re-gossiping each of them (hundreds when a partition makes everyone suspect the
            # other side) would flood the queue (memberlist's Confirm() returns false too).
            return
        s.confirmers.add(u.origin)
        if relayed:
            s.relays.add(sender)
        c = len(s.confirmers) - 1
        s.deadline = s.start + suspicion_timeout(s.min_s, s.max_s, s.k, c)
        if s.deadline < self._susp_min:
            self._susp_min = s.deadline
        self._enqueue(u)  # re-gossip confirmations: they are what shortens timeouts elsewhere

    def _start_suspicion(self, node: NodeId, origin: NodeId, sender: NodeId, now: float) -> None:
        min_s, max_s, k = suspicion_bounds(self.config, self._n_live)
        if not self.config.lifeguard:
            max_s, k = min_s, 0
        s = _Suspicion(now, min_s, max_s, k, origin, sender)
        if node in self._suspicions:
            self._susp_dirty = True
        self._suspicions[node] = s
        if s.deadline < self._susp_min:
            self._susp_min = s.deadline

    def _suspicion_deadline(self) -> float:
        if self._susp_dirty:
            self._susp_dirty = False
            self._susp_min = min((s.deadline for s in self._suspicions.values()), default=_INF)
        return self._susp_min

    def _about_self(self, u: SwimUpdate) -> None:
        if self._left:
            return
        if u.state == ALIVE:
            if u.incarnation <= self.incarnation:
                return
        elif u.incarnation < self.incarnation:
            return
        if self.incarnation >= INCARNATION_MAX:
            return  # saturated: nobody else may accuse at the top (see "Hostile members")
        # Somebody thinks we are suspect/dead/left at our incarnation (or knows a later one of
        # a previous life): refute with a higher incarnation, at most a window above ours (an
        # honest view is never further ahead; a previous life's is reached in steps).
        claimed = min(u.incarnation, self.incarnation + self.config.incarnation_window - 1)
        self.incarnation = min(claimed + 1, INCARNATION_MAX)
        self._local[self.self_id].incarnation = self.incarnation
        self.stats["refutations"] += 1
        if u.state != ALIVE:
            self._adjust_health(1)
        self._enqueue(SwimUpdate(self.self_id, ALIVE, self.incarnation, self.self_id))

    def _emit(self, node: NodeId, st: int, inc: int, now: float, origin: NodeId) -> None:
        self._events.append(MemberEvent(node, st, inc, now, origin))

    # ------------------------------------------------------------------ piggyback

    def _enqueue(self, u: SwimUpdate) -> None:
        self._updates.put(u.node, u, _update_size(u))

    def _piggy_updates(self) -> tuple[SwimUpdate, ...]:
        if not self._updates:
            return ()
        limit = retransmit_limit(self.config.retransmit_mult, self._n_live)
        return tuple(self._updates.take(self.config.max_piggyback_bytes // 2, MAX_UPDATES, limit))

    def _piggy_records(self) -> tuple[Record, ...]:
        d = self.delegate
        if d is None:
            return ()
        return d.get_piggyback(self.config.max_piggyback_bytes // 2)


def _update_size(u: SwimUpdate) -> int:
    # Upper bound on the CBOR of one update inside a message (field names + values).
    return 48 + len(u.node) + len(u.origin)
