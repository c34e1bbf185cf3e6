"""The peer table: who we are connected to, and whether they are attested (sans-IO).

Rules
-----
- A peer is *quarantined* from the moment it connects until an attestation of ours accepts it,
  and again from the moment a re-attestation fails, its record expires, it misses too many
  re-attestations, or its score drops below the policy minimum. Quarantined peers get only
  ping, identify and attest; :meth:`PeerTable.is_attested` is the single gate every other
  protocol handler asks.
- Entries are bounded (``max_entries``): when full, the longest-disconnected entry goes.
- Time is a float passed in by the caller; the table never reads a clock.
- Peers learned from others (peer exchange, mDNS) are dialled through one :class:`DialPlan`:
  what another member names costs us at most ``max_per_answer`` dials per answer and
  ``max_pending`` dials at once, whatever it names (see the class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

ALIVE, LEFT, REVOKED = "alive", "left", "revoked"
MIN_TRANSFER_BYTES = 64 * 1024  # smaller transfers say more about the RTT than the bandwidth


@dataclasses.dataclass
class PeerState:
    peer_id: str
    addrs: list[str] = dataclasses.field(default_factory=list)
    connected: bool = False
    connected_since: float | None = None
    disconnected_at: float | None = None
    attested: bool = False
    tee: str | None = None
    score: int | None = None
    rtt_ms: float | None = None
    kib_s: float | None = None  # transfer rate observed from/to this peer (see on_transfer)
    last_attested_at: float | None = None  # last success
    last_attempt_at: float | None = None
    last_verdict: str | None = None
    measurement: str | None = None
    missed: int = 0  # consecutive failed or missing re-attestations
    attest_in_flight: bool = False
    quarantine_reason: str | None = "not attested yet"
    record_expires_at: float | None = None
    state: str = ALIVE
    membership: str | None = None  # SWIM view (alive/suspect/dead/left) from the gossip layer

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "addrs": list(self.addrs),
            "connected": self.connected,
            "attested": self.attested,
            "tee": self.tee,
            "score": self.score,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "kib_s": None if self.kib_s is None else round(self.kib_s),
            "last_attested_at": self.last_attested_at,
            "last_attested_ago_s": None if self.last_attested_at is None
            else round(now - self.last_attested_at, 3),
            "verdict": self.last_verdict,
            "measurement": self.measurement,
            "missed_reattestations": self.missed,
            "quarantine_reason": None if self.attested else self.quarantine_reason,
            "state": self.state,
            "membership": self.membership,
        }


class PeerTable:
    def __init__(self, *, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._peers: dict[str, PeerState] = {}

    # ------------------------------------------------------------------ queries
    def get(self, peer_id: str) -> PeerState | None:
        return self._peers.get(peer_id)

    def is_attested(self, peer_id: str) -> bool:
        p = self._peers.get(peer_id)
        return p is not None and p.attested and p.connected and p.state == ALIVE

    def is_revoked(self, peer_id: str) -> bool:
        p = self._peers.get(peer_id)
        return p is not None and p.state == REVOKED

    def attested(self) -> list[PeerState]:
        return [p for p in self._peers.values() if p.attested and p.connected]

    def connected(self) -> list[PeerState]:
        return [p for p in self._peers.values() if p.connected]

    def all(self) -> list[PeerState]:
        return list(self._peers.values())

    def __len__(self) -> int:
        return len(self._peers)

    def due_for_attestation(self, now: float, interval_s: float, *,
                            first_retry_s: float | None = None) -> list[PeerState]:
        """Connected peers with no attempt in flight whose last attempt is ``interval_s`` old,
        or ``first_retry_s`` old (when given) for a peer that has not attested on this
        connection yet: a first exchange lost to a transient failure (the connection it ran
        on closed under a simultaneous dial, a stalled peer) is retried well before the
        unattested deadline drops the peer, not a whole re-attestation interval later."""
        out = []
        for p in self._peers.values():
            if not p.connected or p.attest_in_flight:
                continue
            wait = interval_s
            if first_retry_s is not None and p.last_attested_at is None:
                wait = min(interval_s, first_retry_s)
            if p.last_attempt_at is None or now - p.last_attempt_at >= wait:
                out.append(p)
        return out

    def overdue_unattested(self, now: float, deadline_s: float) -> list[PeerState]:
        """Connected peers that never attested within ``deadline_s`` of connecting."""
        return [
            p for p in self._peers.values()
            if p.connected and p.last_attested_at is None and p.connected_since is not None
            and now - p.connected_since > deadline_s
        ]

    # ------------------------------------------------------------------ events
    def _entry(self, peer_id: str) -> PeerState:
        p = self._peers.get(peer_id)
        if p is None:
            if len(self._peers) >= self.max_entries:
                self._evict()
            p = self._peers[peer_id] = PeerState(peer_id)
        return p

    def _evict(self) -> None:
        gone = [p for p in self._peers.values() if not p.connected]
        if not gone:
            raise OverflowError("peer table full of connected peers")
        victim = min(gone, key=lambda p: p.disconnected_at or 0.0)
        del self._peers[victim.peer_id]

    def on_connected(self, peer_id: str, addrs: list[str], now: float) -> PeerState:
        p = self._entry(peer_id)
        if p.state == REVOKED:
            p.connected = True
            return p
        if not p.connected:
            p.connected = True
            p.connected_since = now
            # A new connection must attest afresh: nothing carries over from an old one.
            p.attested = False
            p.quarantine_reason = "not attested yet"
            p.last_attempt_at = None
            p.last_attested_at = None
            p.missed = 0
        p.state = ALIVE
        for a in addrs:
            if a not in p.addrs:
                p.addrs.append(a)
        del p.addrs[:-8]
        return p

    def on_disconnected(self, peer_id: str, now: float) -> None:
        p = self._peers.get(peer_id)
        if p is None:
            return
        p.connected = False
        p.attested = False
        p.attest_in_flight = False
        p.disconnected_at = now
        p.quarantine_reason = "disconnected"

    def on_attest_started(self, peer_id: str, now: float) -> None:
        p = self._entry(peer_id)
        p.attest_in_flight = True
        p.last_attempt_at = now

    def on_attest_result(
        self,
        peer_id: str,
        *,
        accepted: bool,
        reason: str,
        now: float,
        score: int,
        tee: str | None,
        measurement: str | None,
        record_expires_at: float | None,
    ) -> bool:
        """Record an outcome. Returns True when the peer's attested status changed."""
        p = self._entry(peer_id)
        before = p.attested
        p.attest_in_flight = False
        p.last_verdict = reason
        p.score = score
        if tee is not None:
            p.tee = tee
        if measurement is not None:
            p.measurement = measurement
        if accepted:
            # A late result must not re-admit a peer that has left, was revoked or disconnected.
            p.attested = p.connected and p.state == ALIVE
            p.last_attested_at = now
            p.missed = 0
            p.quarantine_reason = None
            p.record_expires_at = record_expires_at
        else:
            p.attested = False
            p.missed += 1
            p.quarantine_reason = reason
        return before != p.attested

    def on_attest_missed(self, peer_id: str, reason: str, now: float, *, max_missed: int,
                         penalty: int) -> bool:
        """A re-attestation failed to complete (timeout, stream error). Lowers the score;
        quarantines after ``max_missed`` in a row. Returns True when status changed."""
        p = self._peers.get(peer_id)
        if p is None:
            return False
        before = p.attested
        p.attest_in_flight = False
        p.missed += 1
        p.last_verdict = reason
        if p.score is not None:
            p.score = max(0, p.score - penalty)
        if p.missed >= max_missed or p.last_attested_at is None:
            p.attested = False
            p.quarantine_reason = f"{p.missed} missed attestation(s): {reason}"
        return before != p.attested

    def quarantine(self, peer_id: str, reason: str) -> bool:
        p = self._peers.get(peer_id)
        if p is None or not p.attested:
            return False
        p.attested = False
        p.quarantine_reason = reason
        return True

    def on_attest_deferred(self, peer_id: str, now: float, *, retry_in_s: float,
                           interval_s: float) -> None:
        """A re-attestation ran out of time because our own loop stalled (node/loop_health.py):
        nothing is held against the peer, and it is due again in ``retry_in_s`` (at most the
        usual ``interval_s``) rather than a whole interval later."""
        p = self._peers.get(peer_id)
        if p is not None:
            p.attest_in_flight = False
            p.last_attempt_at = now - interval_s + min(retry_in_s, interval_s)

    def expire_records(self, now: float,
                       grace_s: Callable[[PeerState], float] | None = None) -> list[str]:
        """Quarantine attested peers whose score record has expired, ``grace_s(peer)`` seconds
        later (the time our own loop lost since the peer last attested: a renewal we could not
        run is not the peer's fault). Returns their ids."""
        out = []
        for p in self._peers.values():
            if not p.attested or p.record_expires_at is None or now <= p.record_expires_at:
                continue
            if grace_s is None or now > p.record_expires_at + grace_s(p):
                p.attested = False
                p.quarantine_reason = "score record expired without re-attestation"
                out.append(p.peer_id)
        return out

    def on_rtt(self, peer_id: str, rtt_ms: float) -> None:
        p = self._peers.get(peer_id)
        if p is not None:
            # Smoothed like TCP's SRTT (RFC 6298, alpha = 1/8) so one slow ping does not jump.
            p.rtt_ms = rtt_ms if p.rtt_ms is None else p.rtt_ms + (rtt_ms - p.rtt_ms) / 8

    def on_transfer(self, peer_id: str, nbytes: int, seconds: float) -> bool:
        """A transfer of ``nbytes`` with ``peer_id`` took ``seconds``: smooth it into the peer's
        observed rate (alpha = 1/4). Transfers under :data:`MIN_TRANSFER_BYTES` measure the round
        trip more than the link and are ignored, as are non-positive times. True when taken."""
        p = self._peers.get(peer_id)
        if p is None or nbytes < MIN_TRANSFER_BYTES or not seconds > 0:
            return False
        rate = nbytes / 1024 / seconds
        p.kib_s = rate if p.kib_s is None else p.kib_s + (rate - p.kib_s) / 4
        return True

    def on_goodbye(self, peer_id: str) -> None:
        p = self._peers.get(peer_id)
        if p is not None:
            p.state = LEFT
            p.attested = False
            p.quarantine_reason = "left the federation"

    def revoke(self, peer_id: str, reason: str) -> bool:
        """Revoked for good (by the federation): never attested again, whatever it presents.
        Returns True when the peer was attested until now."""
        p = self._entry(peer_id)
        was = p.attested and p.connected
        p.state = REVOKED
        p.attested = False
        p.quarantine_reason = f"revoked: {reason}"
        return was

    def known_addrs(self) -> dict[str, list[str]]:
        return {p.peer_id: list(p.addrs) for p in self._peers.values() if p.addrs and p.state == ALIVE}


class DialPlan:
    """Which learned peers to dial now (sans-IO): the bound on what other members make us dial.

    A member that names peers (a peer-exchange answer, an mDNS advertisement) is trusted for
    nothing: the dial it leads to is a plain outbound connection that must then pass our
    attestation like any other. What it could cost us is the dials themselves, so:

    - an answer is taken whole or not at all: one naming more than ``max_per_answer`` peers is
      refused (the caller counts it; we asked for at most that many);
    - self, peers connected or being dialled, and peers that left or were revoked are skipped;
    - at most ``max_pending`` dials are pending at once (dialling or waiting to); what comes
      beyond is dropped and reported, never queued: the periodic peer exchange asks again.

    So a member naming 10,000 invented peers costs at most ``max_pending`` dials at a time, and
    each ends within the dial timeout. The caller runs the dials (bounded concurrency) and calls
    :meth:`done` when each ends.
    """

    def __init__(self, self_id: str, *, max_pending: int, max_per_answer: int,
                 max_addrs: int = 8) -> None:
        if max_pending < 1 or max_per_answer < 1 or max_addrs < 1:
            raise ValueError("max_pending, max_per_answer and max_addrs must be positive")
        self.self_id = self_id
        self.max_pending = max_pending
        self.max_per_answer = max_per_answer
        self.max_addrs = max_addrs
        self._pending: set[str] = set()

    @property
    def pending(self) -> frozenset[str]:
        return frozenset(self._pending)

    def offer(self, entries: Sequence[tuple[str, Sequence[str]]],
              table: PeerTable) -> tuple[list[tuple[str, list[str]]], int]:
        """Plan the dials for one answer. Returns ``(dials, dropped)``: ``dials`` are now
        pending (the caller must dial each and call :meth:`done`); ``dropped`` is how many
        dialable entries found no room. Raises ValueError if the answer names more than
        ``max_per_answer`` peers (nothing is planned)."""
        if len(entries) > self.max_per_answer:
            raise ValueError(f"{len(entries)} peers named, at most {self.max_per_answer} asked for")
        dials: list[tuple[str, list[str]]] = []
        dropped = 0
        for pid, addrs in entries:
            if pid == self.self_id or pid in self._pending or not addrs:
                continue
            st = table.get(pid)
            if st is not None and (st.connected or st.state != ALIVE):
                continue
            if len(self._pending) >= self.max_pending:
                dropped += 1
                continue
            self._pending.add(pid)
            dials.append((pid, list(addrs[: self.max_addrs])))
        return dials, dropped

    def done(self, peer_id: str) -> None:
        """A planned dial ended (connected or not)."""
        self._pending.discard(peer_id)
