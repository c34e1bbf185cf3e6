"""Dissemination of signed records: push gossip + push-pull anti-entropy, sans-IO.

Rules
-----
1. No I/O, no clock, no global randomness (``now`` and ``rng`` are injected), like
   :mod:`overlay.membership`. Inputs: :meth:`Dissemination.step`, :meth:`Dissemination.tick`,
   :meth:`Dissemination.publish`; outputs: :meth:`Dissemination.ready`.
2. Records are keyed by ``(kind, subject, issuer)`` and each kind says who may write it
   (:mod:`overlay.records`, rules 3-5): one issuer can never occupy another issuer's slot.
3. Acceptance order for every record, from whatever path (gossip, piggyback, anti-entropy,
   local publish), stopping at the first refusal:
   a. exact duplicate or not newer than what we hold for its key: ignored (nothing new is
      trusted, so nothing needs verifying);
   b. expired, or issued further in the future than ``clock_skew_s``: refused;
   c. bounds: ``expires_at`` beyond ``now + clock_skew_s + max_ttl_s``, or ``version`` beyond
      ``(now + clock_skew_s) × 1000 + version_lead_max`` (or ``VERSION_MAX``): refused;
   d. shape: a self-kind record about someone else, or a subject that is not a valid node
      id (the injected ``valid_id``): refused;
   e. **signature** checked by the injected verifier: refused if invalid;
   f. issuer trusted: not revoked here (:meth:`Dissemination.revoke`) and the injected
      ``issuer_trusted(issuer)``: refused otherwise;
   g. a manager-only kind (``revocation``) from an issuer the injected ``is_manager`` does not
      name: refused;
   h. a new key beyond the issuer's share (``max_records_per_issuer``) or the store
      (``max_records``): refused;
   i. stored, superseding the older record for its key, and queued for gossip.
   Only accepted records are ever forwarded, so an unattested or revoked issuer cannot use
   this node as a relay. Every refusal from b on is counted in :attr:`Dissemination.stats`
   and reported in ``ready().refused`` (the driver counts and logs it); one refused record
   never stops the rest of its message.
4. A record never revokes anyone. A revocation is decided by the council; the driver applies
   it with :meth:`Dissemination.revoke`, which drops every record the revoked node issued and
   refuses its records from then on. A ``revocation`` record (manager-only) is a hint that
   makes the driver fetch the committed state sooner.
5. Every container is bounded: the store (``max_records``, ``max_records_per_issuer``), the
   broadcast queue (one entry per key), the refusal report (``REFUSED_REPORT_MAX``), and every
   message (item and byte budgets).

Theory of operation
-------------------
*Push.* Every ``gossip_interval_s`` a node with pending broadcasts sends one ``GossipPush`` to
``gossip_fanout`` random members. Each record is sent at most
``retransmit_mult × ceil(log10(n + 1))`` times in total, least-sent first
(:class:`TransmitLimitedQueue`, memberlist's idea): with fanout f the informed set grows about
(1 + f)× per round until saturation, so a record reaches everyone in O(log n) rounds and
costs each node O(log n) messages. Records also ride on SWIM probes (the membership core
asks :meth:`get_piggyback`). Revocation hints jump the queue.

*Pull (anti-entropy).* Push alone leaves a tail, and a partition stops it. Every
``push_pull_interval_s`` a node sends its record digest (``GossipDigest``: key, version,
issued_at, signature prefix) to one random member, which answers with the records that are
newer on its side (or missing from a complete digest) and with its own digest, so the first
node can return the favour. After a partition heals, every pair that talks converges, and the
epidemic push of newly accepted records finishes the job in O(log n) rounds.

*Delegates.* A :class:`GossipDelegate` may add opaque payloads (``user``) to each push under
``max_user_bytes``, and receives those of others.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol

from overlay.errors import LocalProtocolError
from overlay.messages_gossip import (
    MAX_DIGEST_ENTRIES,
    MAX_RECORDS,
    MAX_USER_ITEMS,
    USER_ITEM_MAX_BYTES,
    GossipDigest,
    GossipDigestEntry,
    GossipPush,
)
from overlay.records import (
    KIND_REVOCATION,
    MANAGER_KINDS,
    PAYLOAD_MAX_BYTES,
    SELF_KINDS,
    VERSION_MAX,
    Record,
    RecordKey,
    RecordVerifier,
    order_key,
)

NodeId = str
_INF = math.inf
#: Refusals kept for the driver between two :meth:`Dissemination.ready` calls; beyond this
#: they are only counted in the stats (a flood of hostile records costs no memory).
REFUSED_REPORT_MAX = 1024


# ----------------------------------------------------------------------------- queue


class TransmitLimitedQueue:
    """Broadcasts retransmitted a bounded number of times, fewest-sent first.

    One entry per key: a new item for the same key replaces the old one and its count. The
    caller passes the current limit to :meth:`take`, so the limit follows the cluster size.
    Entries live in buckets by ``(−priority, transmits)``; a take walks the few buckets in
    order, newest entry first within a bucket, so it costs O(items returned), not a sort of
    the whole queue (which matters when a healed partition queues hundreds of updates).
    """

    __slots__ = ("_buckets", "_items")

    # How many entries too big for the remaining budget a take skips before it stops:
    # bounds the cost of one take once the budget is nearly used up.
    SCAN_SLACK = 8

    def __init__(self) -> None:
        # key -> [transmits, item, size, bucket_key, key]
        self._items: dict[Hashable, list[Any]] = {}
        self._buckets: dict[tuple[int, int], dict[Hashable, list[Any]]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def put(self, key: Hashable, item: Any, size: int, priority: int = 0) -> None:
        self.remove(key)
        bk = (-priority, 0)
        e = [0, item, size, bk, key]
        self._items[key] = e
        self._buckets.setdefault(bk, {})[key] = e

    def remove(self, key: Hashable) -> None:
        e = self._items.pop(key, None)
        if e is not None:
            self._unbucket(e)

    def _unbucket(self, e: list[Any]) -> None:
        b = self._buckets[e[3]]
        del b[e[4]]
        if not b:
            del self._buckets[e[3]]

    def transmits(self, key: Hashable) -> int | None:
        e = self._items.get(key)
        return None if e is None else int(e[0])

    def take(self, budget_bytes: int, max_items: int, limit: int) -> list[Any]:
        """Up to ``max_items`` items whose sizes fit ``budget_bytes``; counts one transmit each
        and drops items that reach ``limit``. Higher priority first, then fewest transmits,
        then newest."""
        if not self._items:
            return []
        out: list[Any] = []
        taken: list[list[Any]] = []
        used = 0
        misses = 0
        slack = self.SCAN_SLACK
        for bk in sorted(self._buckets):
            for e in reversed(self._buckets[bk].values()):
                if used + e[2] <= budget_bytes:
                    used += e[2]
                    out.append(e[1])
                    taken.append(e)
                    if len(out) >= max_items:
                        break
                else:
                    misses += 1
                    if misses > slack:
                        break
            if len(out) >= max_items or misses > slack:
                break
        for e in taken:
            self._unbucket(e)
            e[0] += 1
            if e[0] >= limit:
                del self._items[e[4]]
            else:
                bk = (e[3][0], e[0])
                e[3] = bk
                self._buckets.setdefault(bk, {})[e[4]] = e
        return out


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """retransmit_mult × ceil(log10(n + 1)), at least retransmit_mult."""
    return retransmit_mult * max(1, math.ceil(math.log10(max(1, n) + 1)))


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True, slots=True)
class DisseminationConfig:
    """Dissemination tuning. Start from :meth:`lan`, :meth:`wan` or :meth:`local_test`."""

    # Time between push rounds of a node with pending broadcasts. Latency to reach n nodes is
    # about log_(1+fanout)(n) + small tail rounds of this.
    gossip_interval_s: float = 0.2
    # Members pushed to per round (memberlist GossipNodes). Higher: faster and costlier.
    gossip_fanout: int = 3
    # Each record is sent retransmit_mult × ceil(log10(n + 1)) times by each node that holds
    # it (probability of a miss falls exponentially in this; memberlist uses 4).
    retransmit_mult: int = 4
    # Anti-entropy digest exchange with one random member, at this period (random phase).
    # It bounds convergence after a partition heals; 0 disables.
    push_pull_interval_s: float = 10.0
    # Byte budget of the records in one push (one datagram with the envelope).
    max_gossip_bytes: int = 1400
    # Byte budget of one anti-entropy answer (a stream, so larger).
    max_sync_bytes: int = 200 * 1024
    # Byte budget of delegate payloads per push.
    max_user_bytes: int = 1024
    # Store bound: records for new keys beyond this are refused (counted).
    max_records: int = 100_000
    # Records issued more than this far in our future are refused (clock skew tolerance).
    clock_skew_s: float = 30.0
    # Longest lifetime a record may claim: expires_at beyond now + clock_skew_s + max_ttl_s is
    # refused (a record that never expires would hold its slot and its relay budget forever).
    # Twice the longest TTL an issuer uses today (node/gossip.py RECORD_TTL_S, one hour).
    max_ttl_s: float = 7200.0
    # How far a version may run ahead of the receiver's clock in milliseconds: issuers choose
    # max(previous + 1, wall-clock ms), so versions survive restarts and run ahead only while
    # an issuer publishes more than one record per millisecond (10 minutes of that here).
    version_lead_max: int = 600_000
    # Store share of one issuer: records for new keys beyond this are refused (counted), so
    # one attested issuer cannot fill the store. An honest node issues one score per peer it
    # attests plus a few records of its own.
    max_records_per_issuer: int = 8192

    @classmethod
    def lan(cls) -> DisseminationConfig:
        return cls()

    @classmethod
    def wan(cls) -> DisseminationConfig:
        """Longer rounds, larger fanout to hide WAN latency (Serf WAN-like)."""
        return cls(gossip_interval_s=0.5, gossip_fanout=4, push_pull_interval_s=30.0)

    @classmethod
    def local_test(cls) -> DisseminationConfig:
        return cls(gossip_interval_s=0.1, push_pull_interval_s=5.0)

    def validate(self) -> None:
        """Raise LocalProtocolError if the settings are inconsistent."""
        if self.gossip_interval_s <= 0 or self.gossip_fanout < 1 or self.retransmit_mult < 1:
            raise LocalProtocolError("gossip_interval_s > 0, fanout and retransmit_mult >= 1")
        if self.push_pull_interval_s < 0 or self.clock_skew_s < 0:
            raise LocalProtocolError("push_pull_interval_s and clock_skew_s must be >= 0")
        if self.max_gossip_bytes < 512 or self.max_sync_bytes < PAYLOAD_MAX_BYTES + 512:
            raise LocalProtocolError("byte budgets too small for one record")
        if self.max_records < 1 or self.max_user_bytes < 0 or self.max_records_per_issuer < 1:
            raise LocalProtocolError("max_records, max_records_per_issuer >= 1, "
                                     "max_user_bytes >= 0")
        if self.max_ttl_s <= 0 or self.version_lead_max < 0:
            raise LocalProtocolError("max_ttl_s > 0, version_lead_max >= 0")


# ----------------------------------------------------------------------------- API types


class PeerSampler(Protocol):
    """Where gossip goes: the membership core implements this."""

    def sample(self, k: int) -> list[NodeId]: ...

    def num_members(self) -> int: ...


class GossipDelegate(Protocol):
    """Lets another component ride on push rounds with opaque, size-limited payloads."""

    def get_broadcasts(self, limit_bytes: int) -> list[bytes]: ...

    def notify_user(self, from_id: NodeId, data: bytes, now: float) -> None: ...


@dataclasses.dataclass(slots=True)
class DisseminationReady:
    """Send ``messages`` in order; ``accepted`` are records newly stored (for the app);
    ``refused`` are ``(from_id, reason, record)`` for records refused since the last call
    (from_id is ``self_id`` for local publications; at most :data:`REFUSED_REPORT_MAX`).
    Reasons: ``expired``, ``expiry-too-far``, ``version-too-far``, ``subject-not-issuer``,
    ``invalid-subject``, ``bad-signature``, ``revoked-issuer``, ``untrusted``,
    ``revocation-not-manager``, ``issuer-full``, ``store-full``."""

    messages: list[tuple[NodeId, Any]]
    accepted: list[Record]
    refused: list[tuple[NodeId, str, Record]] = dataclasses.field(default_factory=list)


def record_size(r: Record) -> int:
    """Upper bound on the CBOR size of one record inside a message."""
    return (96 + len(r.kind) + len(r.issuer) + len(r.subject) + len(r.payload)
            + len(r.signature))


def digest_entry(r: Record) -> GossipDigestEntry:
    return GossipDigestEntry(r.kind, r.subject, r.version, r.issued_at, r.signature[:8],
                             r.issuer)


@dataclasses.dataclass
class DisseminationStats:
    accepted: int = 0
    duplicates: int = 0
    stale: int = 0
    expired: int = 0
    bad_signature: int = 0
    untrusted: int = 0  # issuer not attested, or revoked here
    store_full: int = 0  # the store, or the issuer's share of it
    purged_revoked: int = 0
    out_of_bounds: int = 0  # version or expiry beyond the bounds
    not_permitted: int = 0  # the kind's issuer/subject rule: not the manager, not itself
    invalid_subject: int = 0
    pushes_sent: int = 0
    digests_sent: int = 0


class Dissemination:
    """One node's record store and gossip state machine.

    Args:
        self_id: this node's id.
        config: validated on construction.
        rng: the only source of randomness.
        now: current local time (seconds).
        verify: signature verifier, called before anything about a record is trusted.
        issuer_trusted: attestation predicate (the driver's view of who is attested).
        peers: membership view used to pick gossip targets and to size retransmit limits.
        delegate: optional payload delegate.
        is_manager: ``is_manager(issuer)``: the issuer is the manager the committed state
            names (only it may issue manager-only kinds). Default: nobody.
        valid_id: ``valid_id(subject)``: a well-formed node id. Default: any (non-empty,
            bounded by the wire schema).
    """

    def __init__(
        self,
        self_id: NodeId,
        config: DisseminationConfig,
        rng: random.Random,
        now: float,
        *,
        verify: RecordVerifier,
        issuer_trusted: Callable[[str], bool],
        peers: PeerSampler,
        delegate: GossipDelegate | None = None,
        is_manager: Callable[[str], bool] | None = None,
        valid_id: Callable[[str], bool] | None = None,
    ) -> None:
        config.validate()
        self.self_id = self_id
        self.config = config
        self._rng = rng
        self._now = now
        self._verify = verify
        self._issuer_trusted = issuer_trusted
        self._is_manager = is_manager
        self._valid_id = valid_id
        self.peers = peers
        self.delegate = delegate
        self._store: dict[RecordKey, Record] = {}
        self._by_issuer: dict[str, set[RecordKey]] = {}
        self._revoked: set[str] = set()
        self._expiry: list[tuple[float, int, RecordKey, Record]] = []
        self._expiry_seq = 0
        self._queue = TransmitLimitedQueue()
        self._messages: list[tuple[NodeId, Any]] = []
        self._accepted: list[Record] = []
        self._refused: list[tuple[NodeId, str, Record]] = []
        self._digest_cache: tuple[GossipDigestEntry, ...] | None = None
        self._digest_pos = 0
        self._next_gossip_at = now + rng.random() * config.gossip_interval_s
        pp = config.push_pull_interval_s
        self._next_sync_at = now + rng.random() * pp if pp > 0 else _INF
        self.stats = DisseminationStats()

    # ------------------------------------------------------------------ queries

    def get(self, kind: str, subject: str, issuer: str) -> Record | None:
        """The record ``issuer`` holds in force about ``subject``, if any."""
        return self._store.get((kind, subject, issuer))

    def about(self, kind: str, subject: str) -> list[Record]:
        """Every stored record of ``kind`` about ``subject``, one per issuer (a scan: for
        status and tests, not for a hot path)."""
        return [r for (k, s, _), r in self._store.items() if k == kind and s == subject]

    def records(self) -> Iterator[Record]:
        return iter(self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def holds_all(self, records: tuple[Record, ...]) -> bool:
        """Whether every record in ``records`` is the one stored for its key: a push of them
        would change nothing here but the duplicate counter. (The simulator uses it to skip
        such deliveries; nothing in the node needs it.)"""
        store = self._store
        for r in records:
            cur = store.get((r.kind, r.subject, r.issuer))
            if cur is not r and (cur is None or cur != r):
                return False
        return True

    def is_revoked(self, node: NodeId) -> bool:
        """True once :meth:`revoke` was applied for ``node``."""
        return node in self._revoked

    def trusted(self, issuer: str) -> bool:
        """Attested (per the injected predicate) and not revoked."""
        return issuer not in self._revoked and self._issuer_trusted(issuer)

    def pending_broadcasts(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ inputs

    def publish(self, record: Record, now: float) -> bool:
        """Originate (or re-announce) a record; it goes through the same acceptance checks."""
        self._now = now
        return self._offer(record, now, self.self_id)

    def revoke(self, node: NodeId) -> int:
        """Apply a revocation the council committed: drop every record ``node`` issued (they
        are never forwarded again) and refuse its records from now on. Call it only for a
        committed revocation, never on the word of a record. Returns the records dropped."""
        self._revoked.add(node)
        dropped = 0
        for key in list(self._by_issuer.get(node, ())):
            r = self._store.pop(key)
            self._unindex(r)
            self._queue.remove(key)
            dropped += 1
        if dropped:
            self.stats.purged_revoked += dropped
            self._digest_cache = None
        return dropped

    def step(self, from_id: NodeId, msg: Any, now: float) -> None:
        """Handle one decoded ``GossipPush`` or ``GossipDigest`` from an attested peer."""
        self._now = now
        t = type(msg)
        if t is GossipPush:
            for r in msg.records:
                self._offer(r, now, from_id)
            if msg.user and self.delegate is not None:
                for data in msg.user:
                    self.delegate.notify_user(from_id, data, now)
        elif t is GossipDigest:
            self._answer_digest(from_id, msg)
        else:
            raise LocalProtocolError(f"dissemination cannot handle {t.__name__}")

    def notify_piggyback(self, from_id: NodeId, records: tuple[Record, ...], now: float) -> None:
        """Membership hands over records that rode on a probe."""
        self._now = now
        for r in records:
            self._offer(r, now, from_id)

    def get_piggyback(self, limit_bytes: int) -> tuple[Record, ...]:
        """Membership asks for records to ride on a probe (counts as transmits)."""
        if not self._queue:
            return ()
        return self._still_trusted(self._queue.take(limit_bytes, MAX_RECORDS, self._limit()))

    def _still_trusted(self, records: list[Record]) -> tuple[Record, ...]:
        # Attestation can lapse after acceptance without a revocation record (the injected
        # predicate changed): re-check at send time, so we never relay for an untrusted issuer.
        trusted = self.trusted
        return tuple(r for r in records if trusted(r.issuer))

    def next_deadline(self) -> float:
        """The latest local time by which :meth:`tick` must be called."""
        t = self._next_sync_at
        if self._queue or self.delegate is not None:
            g = self._next_gossip_at
            if g < self._now:  # keep the round phase while idle
                step = self.config.gossip_interval_s
                g += math.ceil((self._now - g) / step) * step
                self._next_gossip_at = g
            t = min(t, g)
        if self._expiry and self._expiry[0][0] < t:
            t = self._expiry[0][0]
        return t

    def tick(self, now: float) -> None:
        """Advance timers to local time ``now``."""
        self._now = now
        if self._expiry and self._expiry[0][0] <= now:
            self._expire(now)
        if now >= self._next_gossip_at:
            step = self.config.gossip_interval_s
            self._next_gossip_at += (math.floor((now - self._next_gossip_at) / step) + 1) * step
            if self._queue or self.delegate is not None:
                self._gossip_round()
        if now >= self._next_sync_at:
            self._next_sync_at = now + self.config.push_pull_interval_s
            peers = self.peers.sample(1)
            if peers:
                self._send_digest(peers[0], reply=True)

    def ready(self) -> DisseminationReady:
        out = DisseminationReady(self._messages, self._accepted, self._refused)
        self._messages = []
        self._accepted = []
        if self._refused:
            self._refused = []
        return out

    def has_output(self) -> bool:
        return bool(self._messages or self._accepted or self._refused)

    # ------------------------------------------------------------------ acceptance

    def _offer(self, r: Record, now: float, from_id: NodeId) -> bool:
        st = self.stats
        key = (r.kind, r.subject, r.issuer)
        cur = self._store.get(key)
        if cur is not None:
            if cur is r or cur == r:
                st.duplicates += 1
                return False
            if order_key(r) <= order_key(cur):
                st.stale += 1
                return False
        cfg = self.config
        if r.expires_at <= now or r.issued_at > now + cfg.clock_skew_s:
            st.expired += 1
            return self._refuse(from_id, "expired", r)
        if r.expires_at > now + cfg.clock_skew_s + cfg.max_ttl_s:
            st.out_of_bounds += 1
            return self._refuse(from_id, "expiry-too-far", r)
        if r.version > VERSION_MAX or \
                r.version > (now + cfg.clock_skew_s) * 1000.0 + cfg.version_lead_max:
            st.out_of_bounds += 1
            return self._refuse(from_id, "version-too-far", r)
        if r.kind in SELF_KINDS and r.subject != r.issuer:
            st.not_permitted += 1
            return self._refuse(from_id, "subject-not-issuer", r)
        if self._valid_id is not None and not self._valid_id(r.subject):
            st.invalid_subject += 1
            return self._refuse(from_id, "invalid-subject", r)
        if not self._verify(r):
            st.bad_signature += 1
            return self._refuse(from_id, "bad-signature", r)
        if r.issuer in self._revoked:
            st.untrusted += 1
            return self._refuse(from_id, "revoked-issuer", r)
        if not self._issuer_trusted(r.issuer):
            st.untrusted += 1
            return self._refuse(from_id, "untrusted", r)
        if r.kind in MANAGER_KINDS and (self._is_manager is None or not self._is_manager(r.issuer)):
            st.not_permitted += 1
            return self._refuse(from_id, "revocation-not-manager", r)
        if cur is None:
            mine = self._by_issuer.get(r.issuer)
            if mine is not None and len(mine) >= cfg.max_records_per_issuer:
                st.store_full += 1
                return self._refuse(from_id, "issuer-full", r)
            if len(self._store) >= cfg.max_records:
                st.store_full += 1
                return self._refuse(from_id, "store-full", r)
        else:
            self._unindex(cur)
        self._store[key] = r
        self._by_issuer.setdefault(r.issuer, set()).add(key)
        self._expiry_seq += 1
        heapq.heappush(self._expiry, (r.expires_at, self._expiry_seq, key, r))
        self._digest_cache = None
        st.accepted += 1
        self._accepted.append(r)
        # Revocation hints jump the queue: they make followers fetch the committed state.
        self._queue.put(key, r, record_size(r), priority=1 if r.kind == KIND_REVOCATION else 0)
        return True

    def _refuse(self, from_id: NodeId, reason: str, r: Record) -> bool:
        if len(self._refused) < REFUSED_REPORT_MAX:
            self._refused.append((from_id, reason, r))
        return False

    def _unindex(self, r: Record) -> None:
        keys = self._by_issuer.get(r.issuer)
        if keys is not None:
            keys.discard((r.kind, r.subject, r.issuer))
            if not keys:
                del self._by_issuer[r.issuer]

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, _, key, r = heapq.heappop(self._expiry)
            if self._store.get(key) is r:
                del self._store[key]
                self._unindex(r)
                self._queue.remove(key)
                self._digest_cache = None

    # ------------------------------------------------------------------ outputs

    def _limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self.peers.num_members())

    def _gossip_round(self) -> None:
        cfg = self.config
        targets = self.peers.sample(cfg.gossip_fanout)
        if not targets:
            return
        limit = self._limit()
        for peer in targets:
            if not self._queue and self.delegate is None:
                break
            batch = self._still_trusted(self._queue.take(cfg.max_gossip_bytes, MAX_RECORDS, limit))
            user: tuple[bytes, ...] = ()
            if self.delegate is not None:
                user = self._user_payloads()
            if batch or user:
                self._messages.append((peer, GossipPush(batch, user)))
                self.stats.pushes_sent += 1

    def _user_payloads(self) -> tuple[bytes, ...]:
        assert self.delegate is not None
        budget = self.config.max_user_bytes
        out: list[bytes] = []
        used = 0
        for data in self.delegate.get_broadcasts(budget):
            if type(data) is not bytes or len(data) > USER_ITEM_MAX_BYTES:
                raise LocalProtocolError("delegate payloads must be bytes of at most "
                                         f"{USER_ITEM_MAX_BYTES} bytes")
            if len(out) == MAX_USER_ITEMS or used + len(data) > budget:
                break  # the delegate overshot its budget: the rest waits for the next round
            out.append(data)
            used += len(data)
        return tuple(out)

    def _digest(self) -> tuple[tuple[GossipDigestEntry, ...], bool]:
        if self._digest_cache is None:
            self._digest_cache = tuple(digest_entry(r) for r in self._store.values())
        d = self._digest_cache
        if len(d) <= MAX_DIGEST_ENTRIES:
            return d, True
        # Too many to list: a rotating window, marked incomplete.
        start = self._digest_pos % len(d)
        self._digest_pos = start + MAX_DIGEST_ENTRIES
        window = d[start:start + MAX_DIGEST_ENTRIES]
        if len(window) < MAX_DIGEST_ENTRIES:
            window += d[: MAX_DIGEST_ENTRIES - len(window)]
        return window, False

    def _send_digest(self, peer: NodeId, reply: bool) -> None:
        entries, complete = self._digest()
        self._messages.append((peer, GossipDigest(entries, complete, reply)))
        self.stats.digests_sent += 1

    def _answer_digest(self, from_id: NodeId, msg: GossipDigest) -> None:
        store = self._store
        send: list[Record] = []
        seen: set[RecordKey] = set()
        for e in msg.entries:
            key = (e.kind, e.subject, e.issuer)
            seen.add(key)
            mine = store.get(key)
            if mine is not None and (mine.version, mine.issued_at, mine.signature[:8]) > (
                e.version, e.issued_at, e.sig_prefix
            ):
                send.append(mine)
        if msg.complete:
            send.extend(r for k, r in store.items() if k not in seen)
        if send:
            self._push_batches(from_id, list(self._still_trusted(send)))
        if msg.reply:
            self._send_digest(from_id, reply=False)

    def _push_batches(self, peer: NodeId, records: list[Record]) -> None:
        budget = self.config.max_sync_bytes
        batch: list[Record] = []
        used = 0
        for r in records:
            size = record_size(r)
            if batch and (used + size > budget or len(batch) >= MAX_RECORDS):
                self._messages.append((peer, GossipPush(tuple(batch))))
                batch, used = [], 0
            batch.append(r)
            used += size
        if batch:
            self._messages.append((peer, GossipPush(tuple(batch))))
