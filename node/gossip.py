"""The node's driver of the membership (SWIM/Lifeguard) and dissemination cores over libp2p.

Theory of operation
-------------------
The pure cores in ``overlay/membership.py`` and ``overlay/dissemination.py`` (the same code the
simulator runs) decide everything; this module only moves their messages and their clock:

- **Wire.** One protocol, ``/enclave-swarm/gossip/1.0.0``, behind the attestation gate. Each
  peer gets one long-lived outbound stream carrying length-prefixed frames, each a ``swim-*`` or
  ``gossip-*`` message. Sends go through a bounded per-peer queue and are dropped (and counted)
  when it is full: the cores are built for datagram semantics, so loss is tolerated, never
  waited on. Inbound frames are checked again against attestation one by one, because a peer
  can be quarantined while its stream stays open.
- **Time.** A single loop ticks both cores at their ``next_deadline`` (or on input) with the
  wall clock, drains ``ready()`` and hands the messages to the senders.
- **Admission.** Only attested peers become members (the core's ``admit`` predicate, so an
  id another member invented never enters): each newly attested peer is sent a join. A peer
  that names members we cannot admit yet (``Ready.unadmitted``: the seed's full state
  answering our join, news of a newcomer) is asked at once for the attested peers it knows
  (``PeerExchange.soon``, node/peer_exchange.py), which dials within its bounds: a new node meets the
  federation without waiting for the periodic peer exchange. The
  sender the core sees is the attested peer the frame came from; claims it cannot truthfully
  make (membership.py, "Hostile members") are refused and counted ``swim_refused{reason}``.
  A peer quarantined or revoked by the agent is dropped from gossip at once (the dissemination
  core's ``issuer_trusted`` predicate is the agent's attestation table).
- **Records.** Every attestation outcome of ours becomes a signed ``score`` record (payload: the
  signed :class:`~overlay.messages.ScoreRecord`), so every node learns every score within a few
  gossip intervals (records are keyed by kind, subject *and issuer*: each verifier's latest
  score about a subject is kept; :meth:`GossipService.scores` shows the newest). Other
  components consume records of their own kind through :meth:`GossipService.subscribe` and
  publish through :meth:`GossipService.publish`: the manager role (node/manager.py) publishes
  a ``manager`` record (its term, commit index and state digest) and every node's role
  receives the accepted ones from its peers. Refused records are counted
  (``record_rejected{<reason>}``) and logged once per peer and reason per batch.
- **Revocation is the council's.** No record revokes anyone. A revocation takes effect when
  the committed state carries it (the manager role calls ``Agent.revoke``); the agent's
  ``on_revoked`` hook then makes the dissemination core drop every record the revoked node
  issued and refuse its records from then on. A ``revocation`` record is only a *hint* that
  makes followers fetch the committed state sooner: it is accepted only from the issuer that
  :attr:`GossipService.is_manager` names (the committed manager; wired by the manager role,
  default nobody), published only through :meth:`GossipService.publish_revocation_hint` (which
  refuses unless this node is that manager), and handed to the
  :meth:`GossipService.on_revocation_hint` callbacks.

Assume one attested member may lie (DESIGN.md): it can gossip records about itself and its
own measurements, never revoke anyone, never take another issuer's slot.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from node.keys.base import KeyUnavailable
from overlay.dissemination import Dissemination, DisseminationConfig
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.framing import FrameReader, frame, read_message, reset_stream
from overlay.host import public_key_of_peer
from overlay.membership import Membership, MembershipConfig
from overlay.messages import ScoreRecord, protocol_id
from overlay.messages_gossip import (
    GossipDigest,
    GossipPush,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
    SwimSync,
)
from overlay.records import KIND_REVOCATION, Ed25519Verifier, Record, signing_bytes
from overlay.wire import decode, encode

if TYPE_CHECKING:
    from node.agent import Agent
    from node.attestation.engine import Outcome
    from node.datadir import DataDir

log = logging.getLogger("enclave_swarm.gossip")

GOSSIP_PROTOCOL = protocol_id("gossip")
SWIM_TYPES = (SwimPing, SwimPingReq, SwimAck, SwimNack, SwimGossip, SwimSync)
GOSSIP_TYPES = (GossipPush, GossipDigest)
ALL_TYPES = SWIM_TYPES + GOSSIP_TYPES
SEND_QUEUE = 256  # frames buffered per peer before we drop (datagram semantics)
COALESCE_BYTES = 60_000  # frames queued for one peer go out in one write up to this size
MAX_IDLE_WAIT_S = 0.5  # the loop wakes at least this often to notice admissions
SCORE_KIND, REVOCATION_KIND = "score", KIND_REVOCATION
RECORD_TTL_S = 3600.0
REASON_MAX_BYTES = 512  # the payload of a revocation hint: the council's reason, truncated
# Refusals whose cause is usually benign (clock skew, an issuer not attested here yet) are
# logged at debug; the others are an attested peer breaking the record rules.
_BENIGN_REFUSALS = frozenset({"expired", "untrusted"})


def _nobody(_issuer: str) -> bool:
    return False


def _profile_configs(profile: str) -> tuple[MembershipConfig, DisseminationConfig]:
    if profile == "wan":
        return MembershipConfig.wan(), DisseminationConfig.wan()
    if profile == "local_test":
        return MembershipConfig.local_test(), DisseminationConfig.local_test()
    return MembershipConfig.lan(), DisseminationConfig.lan()


class IdentitySigner:
    """Issues records signed by the node's identity key object (``sign(data) -> bytes``):
    a ``cryptography`` key or a token key (node/keys). The overlay's ``Ed25519Signer`` wants
    the raw key bytes, which a token never gives out."""

    __slots__ = ("_issuer", "_key")

    def __init__(self, issuer: str, key: Any) -> None:
        self._issuer = issuer
        self._key = key

    @property
    def issuer(self) -> str:
        return self._issuer

    def sign(self, kind: str, subject: str, version: int, issued_at: float, expires_at: float,
             payload: bytes) -> Record:
        msg = signing_bytes(kind, self._issuer, subject, version, issued_at, expires_at, payload)
        return Record(kind, self._issuer, subject, version, float(issued_at), float(expires_at),
                      payload, bytes(self._key.sign(msg)))


class GossipService:
    """Runs the cores for one agent. Use :func:`attach`."""

    def __init__(self, agent: Agent, *, clock: Callable[[], float] = time.time) -> None:
        self.agent = agent
        self._now = clock
        now = clock()
        mcfg, dcfg = _profile_configs(agent.config.profile)
        rng = random.Random(secrets.randbits(64))
        # Only attested peers become members (an id one member invented never counts).
        self.membership = Membership(agent.peer_id, mcfg, rng, now, admit=self._attested)
        self.is_manager: Callable[[str], bool] = _nobody
        """``is_manager(peer_id)``: the peer is the manager this node's committed state names.
        The only issuer whose ``revocation`` records (hints) are accepted, and the only node
        that may publish one. The manager role replaces this default (nobody)."""
        self.dissemination = Dissemination(
            agent.peer_id, dcfg, random.Random(secrets.randbits(64)), now,
            verify=Ed25519Verifier(public_key_of_peer_or_none),
            issuer_trusted=self._trusted,
            peers=self.membership,
            is_manager=lambda issuer: self.is_manager(issuer),
            valid_id=is_peer_id,
        )
        self.membership.delegate = self.dissemination
        # Signs through the identity key object: with a token (node/keys/pkcs11.py) the key
        # never enters this process.
        self.signer = IdentitySigner(agent.peer_id, agent._identity)
        self._wake_send, self._wake_recv = trio.open_memory_channel[None](1)
        self._out: dict[str, trio.MemorySendChannel[bytes]] = {}
        self._members: set[str] = set()
        self._version = 0
        self._nursery: trio.Nursery | None = None
        self.states: dict[str, str] = {}
        self._subscribers: dict[str, list[Callable[[Record], None]]] = {}
        self._revocation_hints: list[Callable[[str, str], None]] = []
        # Traffic and suspicions, counted as they happen (plain ints: only this task writes
        # them; the metrics exporter reads them from its thread).
        self.traffic = {"messages_in": 0, "bytes_in": 0, "messages_out": 0, "bytes_out": 0}
        self.suspicions = 0

    # ------------------------------------------------------------------ trust
    def _attested(self, node: str) -> bool:
        return self.agent.peers.is_attested(node)

    def _trusted(self, issuer: str) -> bool:
        return issuer == self.agent.peer_id or self.agent.peers.is_attested(issuer)

    # ------------------------------------------------------------------ service
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.agent.set_handler(GOSSIP_PROTOCOL, self._handle_stream)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                now = self._now()
                self._admit(now)
                deadline = min(self.membership.next_deadline(), self.dissemination.next_deadline())
                wait = max(0.0, min(deadline - now, MAX_IDLE_WAIT_S))
                with trio.move_on_after(wait):
                    await self._wake_recv.receive()
                now = self._now()
                self.membership.tick(now)
                self.dissemination.tick(now)
                self._flush(now)

    def _poke(self) -> None:
        with contextlib.suppress(trio.WouldBlock):  # already awake
            self._wake_send.send_nowait(None)

    def _admit(self, now: float) -> None:
        attested = set()
        for p in self.agent.peers.attested():
            attested.add(p.peer_id)
            # Events can precede the peer table's entry: keep the table in step with our view.
            p.membership = self.states.get(p.peer_id, p.membership)
        new = attested - self._members
        if new:
            self.membership.join(sorted(new), now)
        for gone in self._members - attested:
            ch = self._out.pop(gone, None)
            if ch is not None:
                ch.close()
        self._members = attested

    def _flush(self, now: float) -> None:
        r = self.membership.ready()
        for pid, reason in r.refused:  # a claim the sender cannot truthfully make (membership.py)
            self.agent.counters.inc("swim_refused", reason)
            log.debug("refused a membership claim from %s: %s", pid, reason, extra={"peer": pid})
        for pid, named in r.unadmitted.items():
            # It holds members we do not (the join's full state, or news of a newcomer). Most
            # are usually peers we are connected to and still attesting; for any other, ask
            # it how to reach them now rather than at the next peer exchange.
            if any(self.agent.px.unknown(node) for node in named):
                self.agent.px.soon(pid)
        for ev in r.events:
            if ev.state_name == "suspect":
                self.suspicions += 1
            self.states[ev.node] = ev.state_name
            p = self.agent.peers.get(ev.node)
            if p is not None:
                p.membership = ev.state_name
            log.info("member %s is %s (incarnation %d, by %s)", ev.node, ev.state_name,
                     ev.incarnation, ev.origin, extra={"peer": ev.node, "peers": [ev.node, ev.origin]})
        for dest, msg in r.messages:
            self._send(dest, msg)
        d = self.dissemination.ready()
        for dest, msg in d.messages:
            self._send(dest, msg)
        if d.refused:
            self._count_refused(d.refused)
        for rec in d.accepted:
            if rec.issuer != self.agent.peer_id and log.isEnabledFor(logging.DEBUG):
                # The receive side of a record's spread, for bench/bench_fidelity.py (the
                # simulator's dissemination figure measured on real processes).
                log.debug("accepted a %s record by %s about %s (version %d, issued at %.6f)",
                          rec.kind, rec.issuer, rec.subject, rec.version, rec.issued_at,
                          extra={"peer": rec.issuer, "peers": [rec.issuer, rec.subject]})
            self._on_record(rec)

    def _count_refused(self, refused: list[tuple[str, str, Record]]) -> None:
        seen: dict[tuple[str, str], Record] = {}
        for from_id, reason, rec in refused:
            self.agent.counters.inc("record_rejected", reason)
            seen.setdefault((from_id, reason), rec)
        for (from_id, reason), rec in seen.items():
            level = logging.DEBUG if reason in _BENIGN_REFUSALS else logging.WARNING
            log.log(level, "refused a %s record by %s about %s from %s: %s", rec.kind[:32],
                    rec.issuer[:64], rec.subject[:64], from_id, reason,
                    extra={"peer": from_id, "reason": reason,
                           "peers": [from_id, rec.issuer[:64], rec.subject[:64]]})
    def _send(self, dest: str, msg: Any) -> None:
        if dest == self.agent.peer_id or not self.agent.peers.is_attested(dest):
            self.agent.counters.inc("gossip_dropped", "unattested-destination")
            return
        ch = self._out.get(dest)
        if ch is None:
            send, recv = trio.open_memory_channel[bytes](SEND_QUEUE)
            self._out[dest] = ch = send
            assert self._nursery is not None
            self._nursery.start_soon(self._sender, dest, recv)
        try:
            data = frame(encode(msg))
        except LocalProtocolError as exc:  # over its size bound (or invalid): a bug of ours, not fatal
            self.agent.counters.inc("gossip_dropped", "oversize")
            log.warning("not sending %s to %s: %s", type(msg).__name__, dest, exc, extra={"peer": dest})
            return
        try:
            ch.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.agent.counters.inc("gossip_dropped", "queue-full")
            return
        self.traffic["messages_out"] += 1
        self.traffic["bytes_out"] += len(data)

    async def _sender(self, dest: str, queue: trio.MemoryReceiveChannel[bytes]) -> None:
        """One long-lived stream to ``dest``; reopened when it breaks, dropped when the peer is."""
        timeout = self.agent.config.network.request_timeout_s
        stream: INetStream | None = None
        try:
            async for first in queue:
                # Everything queued for this peer meanwhile (one tick's messages) goes out in
                # one write: one yamux DATA frame instead of one per message, and one read
                # (hence one window update back) at the receiver. Frames are length-prefixed,
                # so the receiver splits them again.
                chunks, size = [first], len(first)
                while size < COALESCE_BYTES:
                    try:
                        more = queue.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    chunks.append(more)
                    size += len(more)
                data = b"".join(chunks)
                try:
                    with trio.fail_after(timeout):
                        if stream is None:
                            stream = await self.agent._open_stream(ID.from_base58(dest), GOSSIP_PROTOCOL)
                        await stream.write(data)
                except (trio.TooSlowError, RemoteProtocolError) as exc:
                    self.agent.counters.inc("gossip_dropped", "send-failed", len(chunks))
                    log.debug("gossip to %s failed: %s", dest, exc, extra={"peer": dest})
                    if stream is not None:
                        await reset_stream(stream)
                    stream = None
                except Exception as exc:  # libp2p stream errors on write
                    self.agent.counters.inc("gossip_dropped", "send-failed", len(chunks))
                    log.debug("gossip to %s failed: %s", dest, exc, extra={"peer": dest})
                    if stream is not None:
                        await reset_stream(stream)
                    stream = None
        finally:
            if stream is not None:
                await reset_stream(stream)

    async def _handle_stream(self, stream: INetStream, pid: str) -> None:
        reader = FrameReader(stream)
        idle = max(60.0, 4 * self.agent.config.attestation.reattest_interval_s)
        while True:
            before = reader.consumed
            try:
                msg = await read_message(reader, ALL_TYPES, timeout_s=idle)
            except RemoteProtocolError as exc:
                if exc.reason in ("stream", "timeout"):
                    # The peer closed or went quiet: it reopens when it has more to say. Reset,
                    # never just walk away: a stream nobody reads fills its flow-control window
                    # and the writer's whole connection stalls behind it.
                    await reset_stream(stream)
                    return
                raise
            if not self.agent.peers.is_attested(pid):
                self.agent.counters.inc("refused_unattested", GOSSIP_PROTOCOL)
                await reset_stream(stream)  # the sender sees it and reopens once attested
                return
            self.traffic["messages_in"] += 1
            self.traffic["bytes_in"] += reader.consumed - before
            now = self._now()
            if isinstance(msg, GOSSIP_TYPES):
                self.dissemination.step(pid, msg, now)
            else:
                self.membership.step(pid, msg, now)
            self._flush(now)
            self._poke()

    # ------------------------------------------------------------------ records
    def subscribe(self, kind: str, callback: Callable[[Record], None]) -> None:
        """Call ``callback(record)`` for every accepted record of ``kind`` (ours included:
        the dissemination core accepts our own publications too). Records have passed the
        core's checks (signature, attested and unrevoked issuer, freshness, bounds, the kind's
        writer rule, a peer-id subject) but their payload is the consumer's to decode and
        judge. The callback runs inside the gossip loop: it must not block (hand work to a
        bounded channel)."""
        self._subscribers.setdefault(kind, []).append(callback)

    def publish(self, kind: str, subject: str, payload: bytes, *, ttl_s: float = RECORD_TTL_S) -> bool:
        """Sign a record of ``kind`` about ``subject`` with our identity and spread it.
        Returns False if the dissemination core refused it (counted ``record_rejected``: e.g.
        its store is full, ``ttl_s`` exceeds the core's ``max_ttl_s``, ``subject`` is not a peer
        id, or a self kind names someone else). Revocation hints go through
        :meth:`publish_revocation_hint`."""
        now = self._now()
        # Versions only grow: a record always supersedes our earlier one about the same subject.
        self._version = max(self._version + 1, int(now * 1000))
        try:
            rec = self.signer.sign(kind, subject, self._version, now, now + ttl_s, payload)
        except KeyUnavailable:
            # Our token is gone (node/keys): we stop signing until it is back.
            self.agent.counters.inc("sign_unavailable", kind)
            return False
        ok = self.dissemination.publish(rec, now)
        self._flush(now)
        self._poke()
        return ok

    def on_outcome(self, pid: str, outcome: Outcome) -> None:
        if outcome.record is not None:
            self.publish(SCORE_KIND, pid, encode(outcome.record))

    # ------------------------------------------------------------------ revocation
    def on_peer_revoked(self, pid: str, reason: str) -> None:
        """Agent hook (``Agent.on_revoked``): a committed revocation was applied here. Drop
        every record ``pid`` issued and refuse its records from now on. Publishes nothing."""
        dropped = self.dissemination.revoke(pid)
        if dropped:
            log.info("dropped %d records issued by revoked %s", dropped, pid, extra={"peer": pid})

    def publish_revocation_hint(self, subject: str, reason: str) -> bool:
        """Spread a hint that ``subject`` was revoked, so followers fetch the committed state
        sooner. For the manager role, after the council committed the revocation; refused
        (False, counted ``record_publish_refused{revocation-not-manager}``) unless
        :attr:`is_manager` names this node. The hint revokes nobody by itself."""
        if not self.is_manager(self.agent.peer_id):
            self.agent.counters.inc("record_publish_refused", "revocation-not-manager")
            return False
        return self.publish(REVOCATION_KIND, subject, reason.encode()[:REASON_MAX_BYTES])

    def on_revocation_hint(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(subject, issuer)`` for every accepted revocation hint (issued by the
        node :attr:`is_manager` names; ours included). The manager role connects this to a
        fetch of the committed state; the callback runs in the gossip loop and must not block."""
        self._revocation_hints.append(callback)

    def _on_record(self, rec: Record) -> None:
        if rec.kind == REVOCATION_KIND:
            for hint in self._revocation_hints:
                try:
                    hint(rec.subject, rec.issuer)
                except Exception:  # a consumer's bug must not stop the gossip loop
                    log.exception("consumer of revocation hints failed")
                    self.agent.counters.inc("internal_error", "gossip-consumer:revocation-hint")
        for callback in self._subscribers.get(rec.kind, ()):
            try:
                callback(rec)
            except Exception:  # a consumer's bug must not stop the gossip loop
                log.exception("consumer of %s records failed", rec.kind)
                self.agent.counters.inc("internal_error", f"gossip-consumer:{rec.kind}")

    def scores(self) -> dict[str, dict[str, Any]]:
        """The newest score record per subject among its verifiers' (each verifier keeps its
        own record about a subject): ``{subject: {score, issuer, issued_at}}``."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.dissemination.records():
            if rec.kind != SCORE_KIND:
                continue
            have = out.get(rec.subject)
            if have is not None and have["issued_at"] >= rec.issued_at:
                continue
            try:
                sr = decode(rec.payload, ScoreRecord)
            except RemoteProtocolError:
                continue
            out[rec.subject] = {"score": sr.score, "issuer": rec.issuer, "issued_at": rec.issued_at}
        return out

    def status(self) -> dict[str, Any]:
        return {
            "members": self.membership.num_members(),
            "health": self.membership.health,
            "records": len(self.dissemination),
            "traffic": dict(self.traffic),
            "suspicions": self.suspicions,
            "states": dict(sorted(self.states.items())),
            "scores": self.scores(),
        }


def public_key_of_peer_or_none(issuer: str) -> bytes | None:
    try:
        return public_key_of_peer(issuer)
    except Exception:  # not a peer id at all
        return None


def is_peer_id(s: str) -> bool:
    """A node id of this federation: the canonical base58 form of an Ed25519 libp2p peer id
    (the key embedded in it). Record subjects must be one."""
    if public_key_of_peer_or_none(s) is None:
        return False
    try:
        return ID.from_base58(s).to_base58() == s
    except ValueError:
        return False


def attach(agent: Agent, data_dir: DataDir | None = None) -> GossipService:
    """Plug the gossip layer into ``agent`` (called for every node by node/runtime.py)."""
    svc = GossipService(agent)
    agent.add_service(svc.run)
    agent.add_status("gossip", svc.status)
    agent.on_outcome(svc.on_outcome)
    agent.on_revoked(svc.on_peer_revoked)
    agent.gossip = svc  # type: ignore[attr-defined]
    return svc
