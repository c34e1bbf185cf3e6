"""The Secure Enclave Agent: the trio driver of one node.

Theory of operation
-------------------
One :class:`Agent` owns one libp2p host and one nursery. :meth:`Agent.run` starts the host,
then these services, each of which signals readiness with ``task_status.started()``:

- *connection events*: libp2p's notifee pushes connects/disconnects into a bounded channel;
  every new connection is challenged at once (``/enclave-swarm/attest/1.0.0``);
- *maintenance*: reconciles the peer table with libp2p's live connections, re-challenges every
  peer each ``reattest_interval_s``, expires stale score records and disconnects peers that
  never attested within ``attest_deadline_s``;
- *ping*: RTT to every connected peer with libp2p ping (``/ipfs/ping/1.0.0``);
- *peer exchange* (node/peer_exchange.py, ``Agent.px``): asks attested peers for the
  attested peers they know and dials them, at once when a peer newly attests or gossip names
  members we do not hold (the join path), and every ``peer_exchange_interval_s``;
- *bootstrap*: dials each bootstrap address with backoff until connected;
- *mDNS* (LAN profile): advertises and browses the local network;
- *control*: the Unix-socket control API (node/control.py).

Rules
-----
- Quarantine: every protocol handler of ours except attest asks :meth:`PeerTable.is_attested`
  first; an unattested peer gets its stream reset and a counted, logged refusal.
- Every remote error (bad frame, timeout, reset, bad evidence) is a ``RemoteProtocolError`` by
  the time it reaches our code (overlay/framing.py translates at the edge); it is logged with
  a reason, counted in ``counters`` and the node carries on.
- Every wait on the network has a timeout; every channel has a bound.
- Evidence verification runs in a worker thread (it is CPU-bound crypto), bounded by a
  capacity limiter of ``max_concurrent``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.rcmgr import Direction

from node.attestation.base import AttestationUnavailable, EvidenceProvider
from node.attestation.engine import AttestationEngine, Outcome
from node.attestation.score import MISSED_REATTEST_PENALTY, verify_record
from node.config import NodeConfig
from node.datadir import DataDir
from node.keys.base import IdentityKey, KeyUnavailable
from node.loop_health import LoopHealth
from node.metrics import Counters, Timings
from node.peer_exchange import PeerExchange
from overlay.discovery import Backoff, MdnsAdvertiser, dns_name, resolved_addrs, split_p2p_addr
from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, close_stream, read_message, reset_stream, write_message
from overlay.handshake import Challenge, binding, may_prove_to
from overlay.host import (
    HostOptions,
    build_host,
    expand_unspecified,
    install_identify,
    public_key_of_peer,
    push_identify,
)
from overlay.messages import (
    ATTEST_PROTOCOL,
    GOODBYE_PROTOCOL,
    NONCE_BYTES,
    PEERS_PROTOCOL,
    PING_PROTOCOL,
    AttestChallenge,
    AttestEvidence,
    AttestResult,
    Goodbye,
    ScoreRecord,
)
from overlay.peers import REVOKED, PeerState, PeerTable

log = logging.getLogger("enclave_swarm.agent")
MAX_GOODBYE_TAIL = 1024  # read size while waiting for a peer to close its goodbye stream
# trio.TaskStatus; spelled Any because py-libp2p pulls in trio-typing, whose stubs predate it.
Status = Any

EVENT_QUEUE = 1024  # connection events buffered before they are dropped (and counted)
PING_BYTES = 32
MAX_INBOUND_STREAMS_PER_PEER = 16  # concurrent streams a peer may hold open on our protocols
MAX_DIALS_IN_FLIGHT = 16
# Attempts at a connection's first attestation within attest_deadline_s (one every
# deadline / FIRST_TRIES: 5 s on lan) before the peer is dropped as unattested.
FIRST_TRIES = 6
#: Prefix of quarantine reasons where no verdict was reached (see :meth:`Agent.on_quarantine`).
UNREACHABLE = "unreachable: "
#: Share of the handshake timeout a prover that accepted the connection waits for its own
#: challenge of the dialler to pass before it answers (overlay/handshake.py rule 5); the
#: rest is left for producing and sending evidence within the dialler's timeout.
PROVE_WAIT_SHARE = 0.6


class Agent:
    """One node. Construct it, then ``await nursery.start(agent.run)``.

    Args:
        config: the node's configuration (validated).
        identity: the node's Ed25519 libp2p identity key.
        provider: produces this host's TEE evidence.
        engine: judges peers' evidence (verifiers, policy, score).
        data_dir: where peers are persisted and the control socket lives (optional for
            in-process tests).
        clock: wall-clock seconds (injectable).
    """

    def __init__(
        self,
        *,
        config: NodeConfig,
        identity: IdentityKey,
        provider: EvidenceProvider,
        engine: AttestationEngine,
        data_dir: DataDir | None = None,
        clock: Callable[[], float] = time.time,
        psk_hex: str | None = None,
        keys: Any = None,
    ) -> None:
        config.validate()
        self.config = config
        self.provider = provider
        self.engine = engine
        self.data_dir = data_dir
        self._now = clock
        self._identity = identity
        # Where the identity lives (node/keys): a token may go away at run time; then we stop
        # signing and withhold our evidence until node/keys/watch.py sees it back.
        self.keys = keys
        self.public_key = identity.public_key().public_bytes_raw()
        net = config.network
        self.host = build_host(identity, HostOptions(
            listen=net.listen, security=net.security, psk_hex=psk_hex,
            max_connections=net.max_connections, dial_timeout_s=net.dial_timeout_s))
        self.peer_id = self.host.get_id().to_base58()
        self.peers = PeerTable()
        self.counters = Counters()
        self.timings = Timings()  # durations, in histogram buckets (node/metrics.py)
        self.loop_health = LoopHealth(
            clock=clock, on_stall=lambda s: self.timings.observe("loop_stall", "stall", s))
        self.started_at: float | None = None
        self.stopping = False
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._ready = trio.Event()
        self._events_send, self._events_recv = trio.open_memory_channel[tuple[str, ID]](EVENT_QUEUE)
        self._attest_limiter = trio.CapacityLimiter(config.attestation.max_concurrent)
        self._dial_limiter = trio.CapacityLimiter(MAX_DIALS_IN_FLIGHT)
        self._inbound: dict[str, int] = {}
        # Open inbound streams of gated protocols, per peer: cut when the peer's verdict fails.
        self._gated_streams: dict[str, set[INetStream]] = {}
        self._proving: set[str] = set()
        # Set when a challenge of the peer ends (passed or not): wakes a prover waiting to
        # answer that peer (overlay/handshake.py rule 5).
        self._verdict_events: dict[str, trio.Event] = {}
        self._rng = random.Random(secrets.randbits(64))
        # How peers judged us, by peer id: their latest signed score record about us.
        self.records_about_us: dict[str, ScoreRecord] = {}
        self._nursery: trio.Nursery | None = None
        self.px = PeerExchange(self)  # peer exchange and the dials it learns (node/peer_exchange.py)
        # Peers whose last verdict on us, on their current connection, was a pass.
        self._accepted_by: set[str] = set()
        # The connection each peer opened or accepted last (see _close_stale_connections).
        self._newest_conn: dict[str, INetConn] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._on_quarantine: list[Callable[[str, str], None]] = []
        self._services: list[Callable[..., Awaitable[None]]] = []
        self._on_outcome: list[Callable[[str, Outcome], None]] = []
        self._on_revoked: list[Callable[[str, str], None]] = []
        self._status_providers: dict[str, Callable[[], Any]] = {}

    # ================================================================== lifecycle
    async def run(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until :meth:`stop`. Calls ``task_status.started(self)`` once listening
        and every service is up. On stop: says goodbye to attested peers, saves the peer list,
        closes the host."""
        self._register_handlers()
        self.host.get_network().register_notifee(_Notifee(self))
        listen = [multiaddr.Multiaddr(a) for a in self.config.network.listen]
        self._token = trio.lowlevel.current_trio_token()
        async with self.host.run(listen), trio.open_nursery() as nursery:
            # Whom we connect to is our decision (bootstrap, peer exchange, mDNS). libp2p's
            # auto-connector would redial any peer in its peerstore, including peers we cut
            # off for failing attestation, so it is switched off.
            auto = getattr(self.host.get_network(), "auto_connector", None)
            if auto is not None:
                await auto.stop()
            self._nursery = nursery
            self.started_at = self._now()
            await nursery.start(self.loop_health.run)
            await nursery.start(self._connection_events_loop)
            await nursery.start(self._maintenance_loop)
            await nursery.start(self._ping_loop)
            await nursery.start(self.px.loop)
            for addr in self._bootstrap_addrs():
                await nursery.start(self._bootstrap_loop, addr)
            mdns = None
            if self.config.network.mdns:
                mdns = await self._start_mdns()
            for service in self._services:
                await nursery.start(service)
            if self.data_dir is not None:
                from node.control import serve_control

                await nursery.start(serve_control, self, self.data_dir.socket_path)
            self._ready.set()
            log.info("node %s listening on %s (tee %s, profile %s)", self.peer_id,
                     ", ".join(self.full_addrs()), self.provider.kind, self.config.profile)
            task_status.started(self)
            try:
                await self._stop.wait()
            finally:
                self.stopping = True
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(3):
                        await self._say_goodbye()
                    self._save_peers()
                    if mdns is not None:
                        await trio.to_thread.run_sync(mdns.close)
                    # py-libp2p serves its listeners from a task of its own that leaving
                    # host.run() does not end: a node stopped in a process that goes on (tests,
                    # an embedding) would go on accepting dials, and handshake with its old
                    # identity, until the process exits. Only the listeners: the connections
                    # end as before (closing them here too let the peer that had read our
                    # goodbye take us for back, in 1-2 of 10 runs of the SIGTERM process test,
                    # by a path not found yet).
                    with trio.move_on_after(5):
                        await self._close_listeners()
                nursery.cancel_scope.cancel()
        log.info("node %s stopped", self.peer_id)
        self._stopped.set()

    async def _close_listeners(self) -> None:
        network: Any = self.host.get_network()
        for listener in list(getattr(network, "listeners", {}).values()):
            with contextlib.suppress(Exception):  # closing is best effort at shutdown
                await listener.close()

    def stop(self) -> None:
        """Ask the node to shut down gracefully (idempotent, callable from any task)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """:meth:`stop` was called (the node is leaving or has left)."""
        return self._stop.is_set()

    async def wait_stop_requested(self) -> None:
        """Wait until :meth:`stop` is called."""
        await self._stop.wait()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has finished its shutdown (goodbyes sent, state saved)."""
        await self._stopped.wait()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def full_addrs(self) -> list[str]:
        """Listen addresses with /p2p/<peer id>, unspecified addresses expanded."""
        out = []
        for s in expand_unspecified([str(a) for a in self.host.get_addrs()]):
            out.append(s if "/p2p/" in s else f"{s}/p2p/{self.peer_id}")
        return out

    def keys_available(self) -> bool:
        """False while the identity key's token is gone (node/keys/pkcs11.py)."""
        return self.keys is None or bool(getattr(self.keys, "available", True))

    def add_service(self, service: Callable[..., Awaitable[None]]) -> None:
        """Run ``await service(task_status=...)`` in the node's nursery once the core services are
        up (before the control socket opens). It must call ``task_status.started()`` when ready
        and run until cancelled. Call before :meth:`run`."""
        self._services.append(service)

    def add_status(self, key: str, provider: Callable[[], Any]) -> None:
        """Add ``key: provider()`` to :meth:`status` (a JSON-serialisable value)."""
        self._status_providers[key] = provider

    def revoke(self, peer_id: str, reason: str) -> None:
        """Cut ``peer_id`` off for good: quarantined, disconnected now and on every reconnect.
        Called when the federation revoked a node (a committed consensus command, applied by
        the manager role), never on the word of a gossiped record. The ``on_revoked`` hooks run
        for their local effects (the gossip layer drops the node's records); nothing is
        published from here: the manager announces a committed revocation explicitly
        (``GossipService.publish_revocation_hint``)."""
        was = self.peers.revoke(peer_id, reason)
        self._cut_streams(peer_id)
        for hook in self._on_revoked:
            hook(peer_id, reason)
        self.counters.inc("revoked")
        log.warning("peer %s revoked: %s", peer_id, reason, extra={"peer": peer_id, "reason": reason})
        if was:
            for cb in self._on_quarantine:
                cb(peer_id, f"revoked: {reason}")
        if self._nursery is not None:
            try:
                pid = ID.from_base58(peer_id)
            except ValueError:  # not a peer id: no connection can carry it, nothing to close
                return
            self._nursery.start_soon(self._disconnect, pid)

    def on_outcome(self, callback: Callable[[str, Outcome], None]) -> None:
        """Hook: ``callback(peer_id, outcome)`` after each attestation we judged."""
        self._on_outcome.append(callback)

    def on_revoked(self, callback: Callable[[str, str], None]) -> None:
        """Hook: ``callback(peer_id, reason)`` whenever :meth:`revoke` cuts a peer off (a
        committed revocation applied here), for local effects only: a hook must not publish."""
        self._on_revoked.append(callback)

    def on_quarantine(self, callback: Callable[[str, str], None]) -> None:
        """Hook: ``callback(peer_id, reason)`` whenever an attested peer becomes quarantined.

        ``reason`` starts with :data:`UNREACHABLE` when no verdict was reached (re-attestation
        missed: timeouts, stream failures, an expired record), and with ``"revoked: "`` when
        we applied a revocation; otherwise the peer's evidence was judged and refused (a
        failed attestation, which the manager turns into a revocation)."""
        self._on_quarantine.append(callback)

    # ================================================================== handlers
    def _register_handlers(self) -> None:
        install_identify(self.host, self.peers.is_attested)
        self.set_handler(ATTEST_PROTOCOL, self._handle_attest, gated=False)
        self.set_handler(PEERS_PROTOCOL, self.px.handle)
        self.set_handler(GOODBYE_PROTOCOL, self._handle_goodbye)

    def set_handler(self, proto: str, handler: Callable[[INetStream, str], Awaitable[None]], *,
                    gated: bool = True) -> None:
        """Serve ``proto`` with ``handler(stream, peer_id)`` behind the quarantine gate (unless
        ``gated`` is False) and the remote-error boundary. Later components register here."""
        self.host.set_stream_handler(TProtocol(proto), self._guard(proto, handler, gated=gated))

    def _guard(self, proto: str, handler: Callable[[INetStream, str], Awaitable[None]], *,
               gated: bool = True) -> Callable[[INetStream], Awaitable[None]]:
        """Wrap a handler: quarantine gate, per-peer stream bound, and the error boundary."""

        async def wrapped(stream: INetStream) -> None:
            pid = str(stream.muxed_conn.peer_id)
            if gated and not self.peers.is_attested(pid):
                self.counters.inc("refused_unattested", proto)
                log.info("refused %s from unattested peer %s", proto, pid,
                         extra={"peer": pid, "proto": proto})
                await reset_stream(stream)
                return
            if self._inbound.get(pid, 0) >= MAX_INBOUND_STREAMS_PER_PEER:
                self.counters.inc("refused_stream_limit", proto)
                await reset_stream(stream)
                return
            self._inbound[pid] = self._inbound.get(pid, 0) + 1
            if gated:
                self._gated_streams.setdefault(pid, set()).add(stream)
            try:
                await handler(stream, pid)
            except RemoteProtocolError as exc:
                self._remote_error(pid, proto, exc)
                await reset_stream(stream)
            except KeyUnavailable as exc:  # our token is gone: we cannot answer signed
                self.counters.inc("sign_unavailable", proto)
                log.warning("cannot answer %s from %s: %s", proto, pid, exc, extra={"peer": pid})
                await reset_stream(stream)
            except Exception:  # a bug of ours: loud, counted, but the node stays up
                self.counters.inc("internal_error", proto)
                log.exception("internal error handling %s from %s", proto, pid, extra={"peer": pid})
                await reset_stream(stream)
            finally:
                if gated:
                    open_ = self._gated_streams.get(pid)
                    if open_ is not None:
                        open_.discard(stream)
                        if not open_:
                            self._gated_streams.pop(pid, None)
                n = self._inbound.get(pid, 1) - 1
                if n:
                    self._inbound[pid] = n
                else:
                    self._inbound.pop(pid, None)

        return wrapped

    def _remote_error(self, pid: str, proto: str, exc: RemoteProtocolError) -> None:
        self.counters.inc("remote_error", f"{proto}:{exc.reason}")
        log.warning("dropped input from %s on %s: %s", pid, proto, exc,
                    extra={"peer": pid, "proto": proto, "reason": exc.reason})

    async def _handle_attest(self, stream: INetStream, pid: str) -> None:
        """Prover side: answer a challenge with evidence bound to it and our key."""
        timeout = self.config.attestation.handshake_timeout_s
        if pid in self._proving:
            # One challenge per peer at a time: evidence generation costs the TEE real work.
            self.counters.inc("refused_attest_busy")
            await reset_stream(stream)
            return
        self._proving.add(pid)
        try:
            reader = FrameReader(stream)
            challenge = await read_message(reader, AttestChallenge, timeout_s=timeout)
            if not await self._may_prove_to(stream, pid, timeout * PROVE_WAIT_SHARE):
                self.counters.inc("attest_withheld")
                log.info("withheld our evidence from %s: it dialled us and has not passed our "
                         "challenge", pid, extra={"peer": pid})
                await reset_stream(stream)
                return
            if not self.keys_available():
                # Our identity key is unreachable: we cannot vouch that this key lives in our
                # enclave, so we do not attest (peers quarantine us until the token is back).
                self.counters.inc("evidence_withheld", "key-unavailable")
                log.warning("withheld our evidence from %s: the identity key is unavailable (%s)",
                            pid, self.keys.reason if self.keys is not None else "", extra={"peer": pid})
                await reset_stream(stream)
                return
            report_data = binding(challenge.nonce, self.public_key)
            try:
                evidence = await trio.to_thread.run_sync(self.provider.get_evidence, report_data)
            except AttestationUnavailable as exc:
                self.counters.inc("evidence_unavailable")
                log.error("cannot produce evidence for %s: %s", pid, exc, extra={"peer": pid})
                await reset_stream(stream)
                return
            await write_message(stream, AttestEvidence(str(evidence.kind), evidence.blob,
                                                       tuple(evidence.certs), self.public_key),
                                timeout_s=timeout)
            result = await read_message(reader, AttestResult, timeout_s=timeout)
            self._note_result_about_us(pid, result)
            await close_stream(stream)
        finally:
            self._proving.discard(pid)

    async def _may_prove_to(self, stream: INetStream, pid: str, wait_s: float) -> bool:
        """Rule 5 of overlay/handshake.py: True once this peer may see our evidence."""
        with trio.move_on_after(wait_s):
            while True:
                if may_prove_to(peer_attested=self.peers.is_attested(pid),
                                we_dialled=self._dialled(stream.muxed_conn.peer_id)):
                    return True
                ev = self._verdict_events.setdefault(pid, trio.Event())
                await ev.wait()
                if not self.peers.is_attested(pid):
                    return False  # our challenge of it ended without a pass
        return False

    def _dialled(self, peer_id: ID) -> bool:
        """Whether we hold a connection to ``peer_id`` that we opened."""
        found = self.host.get_network().connections.get(peer_id) or []
        conns = found if isinstance(found, list) else [found]
        return any(getattr(c, "direction", None) == Direction.OUTBOUND for c in conns)

    def _verdict_reached(self, pid: str) -> None:
        ev = self._verdict_events.pop(pid, None)
        if ev is not None:
            ev.set()

    def _note_result_about_us(self, pid: str, result: AttestResult) -> None:
        rec = result.record
        if rec is not None:
            issuer_ok = public_key_of_peer(pid) == rec.issuer
            if issuer_ok and rec.subject == self.peer_id and verify_record(rec):
                self.records_about_us[pid] = rec
            else:
                self.counters.inc("remote_error", "attest:bad-score-record")
                log.warning("peer %s sent a score record that does not verify", pid, extra={"peer": pid})
        if not result.accepted:
            self._accepted_by.discard(pid)
            log.warning("peer %s refused our attestation: %s", pid, result.reason,
                        extra={"peer": pid, "reason": result.reason})
        elif pid not in self._accepted_by:
            self._accepted_by.add(pid)
            if self.peers.is_attested(pid):
                self._now_mutual(pid)

    def _now_mutual(self, pid: str) -> None:
        """``pid`` and we have just attested each other: the join path. Whom it knows, we
        meet now, not a peer-exchange interval later (its peers handler is open to us now)."""
        self.px.soon(pid)


    async def _handle_goodbye(self, stream: INetStream, pid: str) -> None:
        msg = await read_message(FrameReader(stream), Goodbye,
                                 timeout_s=self.config.network.request_timeout_s)
        log.info("peer %s is leaving: %s", pid, msg.reason, extra={"peer": pid})
        self.peers.on_goodbye(pid)
        await close_stream(stream)

    # ================================================================== verifier side
    async def attest_peer(self, peer_id: ID) -> None:
        """Challenge ``peer_id`` once and record the outcome (never raises on peer failure)."""
        pid = peer_id.to_base58()
        cfg = self.config.attestation
        async with self._attest_limiter:
            if self.stopping:
                return
            began = self._now()
            began_mono = trio.current_time()
            known = self.peers.get(pid)
            phase = "reattest" if known is not None and known.last_attested_at is not None else "first"
            self.peers.on_attest_started(pid, began)
            pub = public_key_of_peer(peer_id)
            if pub is None:
                self._record_outcome(pid, False, "identity: peer id does not embed an Ed25519 key", 0,
                                     None, None, None)
                return
            try:
                outcome = None
                with trio.fail_after(cfg.handshake_timeout_s):
                    stream = await self._open_stream(peer_id, ATTEST_PROTOCOL)
                    try:
                        challenge = Challenge(pub, secrets.token_bytes(NONCE_BYTES), self._now())
                        await write_message(stream, challenge.message(), timeout_s=cfg.handshake_timeout_s)
                        evidence = await read_message(FrameReader(stream), AttestEvidence,
                                                      timeout_s=cfg.handshake_timeout_s)
                        outcome = await trio.to_thread.run_sync(
                            lambda: self.engine.judge(challenge, pid, evidence, now=self._now()))
                        await write_message(stream, AttestResult(outcome.accepted, outcome.reason[:500],
                                                                 outcome.record),
                                            timeout_s=cfg.handshake_timeout_s)
                        await close_stream(stream)
                    except BaseException:
                        await reset_stream(stream)
                        raise
            except trio.TooSlowError:
                lost = self.loop_health.stalled_s(began)
                if lost >= cfg.handshake_timeout_s / 2:
                    # Our own loop lost at least half the exchange's time: not the peer's miss.
                    self._record_deferred(pid, lost)
                else:
                    self._record_missed(pid, "timeout")
                return
            except RemoteProtocolError as exc:
                if outcome is None:
                    self._remote_error(pid, ATTEST_PROTOCOL, exc)
                    self._record_missed(pid, f"{exc.reason}: {exc.detail}"[:200])
                    return
                # The verdict is in; only delivering the result to the prover failed.
            assert outcome is not None
            self.timings.observe("attestation", "exchange", trio.current_time() - began_mono, phase)
            for hook in self._on_outcome:
                hook(pid, outcome)
            self._record_outcome(
                pid, outcome.accepted, outcome.reason, outcome.score, outcome.kind,
                outcome.measurement.hex() if outcome.measurement else None,
                outcome.record.expires_at if outcome.record else None)

    def _record_outcome(self, pid: str, accepted: bool, reason: str, score: int, kind: str | None,
                        measurement: str | None, expires_at: float | None) -> None:
        was = self.peers.is_attested(pid)
        self.peers.on_attest_result(pid, accepted=accepted, reason=reason, now=self._now(), score=score,
                                    tee=kind, measurement=measurement, record_expires_at=expires_at)
        self._verdict_reached(pid)
        if accepted:
            self.counters.inc("attest_ok")
            if not was:
                log.info("peer %s attested (%s, score %d)", pid, kind, score, extra={"peer": pid})
                if self._nursery is not None:
                    # It heard only the minimal identify so far (overlay/host.py).
                    self._nursery.start_soon(push_identify, self.host, ID.from_base58(pid))
                if pid in self._accepted_by:
                    self._now_mutual(pid)
        else:
            self.counters.inc("attest_rejected", reason.split(":")[0])
            log.warning("peer %s failed attestation: %s", pid, reason, extra={"peer": pid, "reason": reason})
            if was:
                self._quarantined(pid, reason)

    def _record_missed(self, pid: str, reason: str) -> None:
        was = self.peers.is_attested(pid)
        self.counters.inc("attest_missed", reason.split(":")[0])
        changed = self.peers.on_attest_missed(
            pid, reason, self._now(), max_missed=self.config.attestation.max_missed_reattestations,
            penalty=MISSED_REATTEST_PENALTY)
        self._verdict_reached(pid)
        log.info("attestation of %s did not complete: %s", pid, reason, extra={"peer": pid})
        with contextlib.suppress(ValueError):  # a peer id that does not parse has no connection
            self._close_stale_connections(ID.from_base58(pid))
        if was and changed:
            self._quarantined(pid, f"{UNREACHABLE}{reason}")

    def _close_stale_connections(self, peer_id: ID) -> int:
        """Close every connection to ``peer_id`` but the one it opened or accepted last.

        A peer that crashed or lost power leaves its old connection half-open here (no FIN, no
        RST) until TCP gives up, and py-libp2p opens new streams on the connection that already
        has the most streams: the dead one, whose stuck streams only add up. Called when the
        peer reconnects or misses a re-attestation while it has several connections. Returns
        how many were closed."""
        newest = self._newest_conn.get(peer_id.to_base58())
        found = self.host.get_network().connections.get(peer_id) or []
        conns = found if isinstance(found, list) else [found]
        stale = [c for c in conns if c is not newest]
        if newest is None or not stale or len(stale) == len(conns) or self._nursery is None:
            return 0  # keep one, and the one known to be live
        for c in stale:
            self.counters.inc("stale_connection_closed")
            self._nursery.start_soon(self._close_quietly, c)
        log.info("closed %d stale connection(s) to %s; keeping its newest", len(stale),
                 peer_id.to_base58(), extra={"peer": peer_id.to_base58()})
        return len(stale)

    async def _close_quietly(self, conn: INetConn) -> None:
        with trio.move_on_after(self.config.network.request_timeout_s):
            try:
                await conn.close()
            except Exception as exc:  # libp2p may raise if the connection is already gone
                log.debug("closing a stale connection: %s", exc)

    def _record_deferred(self, pid: str, lost_s: float) -> None:
        cfg = self.config.attestation
        # Retry sooner than a whole interval, but not at every tick: a loop that stays
        # overloaded should not take on (nor cause its peers) more attestation work.
        retry_in = max(cfg.handshake_timeout_s, cfg.reattest_interval_s / 4)
        self.counters.inc("attest_deferred", "local-stall")
        self.peers.on_attest_deferred(pid, self._now(), retry_in_s=retry_in,
                                      interval_s=cfg.reattest_interval_s)
        log.warning("attestation of %s ran out of time while this node's loop stalled %.1fs; "
                    "retrying in %.0fs, nothing held against the peer", pid, lost_s, retry_in,
                    extra={"peer": pid})

    def _record_grace(self, p: PeerState) -> float:
        """How long past its expiry a peer's record stays trusted: the time our loop lost since
        the peer last attested, at most one record lifetime (node/loop_health.py)."""
        since = p.last_attested_at if p.last_attested_at is not None else self._now()
        return min(self.engine.record_ttl_s, self.loop_health.stalled_s(since))

    def _quarantined(self, pid: str, reason: str) -> None:
        self.counters.inc("quarantined", "unreachable" if reason.startswith(UNREACHABLE) else
                          "revoked" if reason.startswith("revoked: ") else "failed")
        log.warning("peer %s quarantined: %s", pid, reason, extra={"peer": pid, "reason": reason})
        if not reason.startswith(UNREACHABLE):
            self._cut_streams(pid)
        for cb in self._on_quarantine:
            cb(pid, reason)

    def _cut_streams(self, pid: str) -> int:
        """Reset every gated stream ``pid`` opened to us: a peer whose evidence failed (or that
        was revoked) loses what it had open, not only what it would open next. (A peer that
        only missed a re-attestation keeps them: no verdict was reached.) Returns how many."""
        streams = self._gated_streams.pop(pid, set())
        if self._nursery is None:
            return 0
        for st in streams:
            self.counters.inc("stream_cut", "quarantined")
            self._nursery.start_soon(reset_stream, st)
        return len(streams)

    async def _open_stream(self, peer_id: ID, proto: str) -> INetStream:
        try:
            return await self.host.new_stream(peer_id, [TProtocol(proto)])
        except trio.Cancelled:
            raise
        except Exception as exc:  # libp2p: StreamFailure, SwarmException, MultiselectClientError...
            raise RemoteProtocolError("stream", f"cannot open {proto}: {type(exc).__name__}") from None

    # ================================================================== services
    async def _connection_events_loop(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for event, peer_id in self._events_recv:
            pid = peer_id.to_base58()
            now = self._now()
            if event == "connected" and self.peers.is_revoked(pid):
                self.counters.inc("refused_revoked")
                assert self._nursery is not None
                self._nursery.start_soon(self._disconnect, peer_id)
            elif event == "connected":
                st = self.peers.get(pid)
                if st is None or not st.connected:
                    self.peers.on_connected(pid, self._advertised_addrs(pid), now)
                    assert self._nursery is not None
                    self._nursery.start_soon(self.attest_peer, peer_id)
                elif st.missed and self._close_stale_connections(peer_id) and not st.attest_in_flight:
                    # It came back on a new connection while we could not reach it: try it now.
                    assert self._nursery is not None
                    self._nursery.start_soon(self.attest_peer, peer_id)
            elif event == "disconnected" and not self.host.get_network().connections.get(peer_id):
                self._accepted_by.discard(pid)
                was = self.peers.is_attested(pid)
                self.peers.on_disconnected(pid, now)
                if was:
                    log.info("peer %s disconnected", pid, extra={"peer": pid})

    def _enqueue(self, event: str, peer_id: ID) -> None:
        try:
            self._events_send.send_nowait((event, peer_id))
        except trio.WouldBlock:
            # The maintenance loop reconciles with libp2p's connection table, so nothing is lost.
            self.counters.inc("dropped_event", event)

    async def _maintenance_loop(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config.attestation
        tick_s = min(1.0, cfg.reattest_interval_s / 4)
        task_status.started()
        while True:
            await trio.sleep(tick_s)
            now = self._now()
            conns = self.host.get_network().connections
            live = {pid.to_base58(): pid for pid, cs in conns.items() if cs}
            for p in self.peers.connected():
                if p.peer_id not in live:
                    self.peers.on_disconnected(p.peer_id, now)
                    self._accepted_by.discard(p.peer_id)
            assert self._nursery is not None
            for pid_s, _pid in live.items():
                st = self.peers.get(pid_s)
                # A peer that said goodbye is not taken back by this reconciliation: the
                # connection it still has here is the old one, closing (the branch below cuts
                # it). Only a new connection's event (_connection_events_loop) revives it.
                if st is None or (not st.connected and st.state != "left"):
                    self.peers.on_connected(pid_s, self._advertised_addrs(pid_s), now)
            for p in self.peers.due_for_attestation(now, cfg.reattest_interval_s,
                                                    first_retry_s=cfg.attest_deadline_s / FIRST_TRIES):
                if p.state == "revoked":
                    if p.peer_id in live:
                        self._nursery.start_soon(self._disconnect, live[p.peer_id])
                    continue
                if p.peer_id in live:
                    self._nursery.start_soon(self.attest_peer, live[p.peer_id])
            for pid_s in self.peers.expire_records(now, self._record_grace):
                self._quarantined(pid_s, f"{UNREACHABLE}score record expired without re-attestation")
            for p in self.peers.overdue_unattested(now, cfg.attest_deadline_s):
                if p.peer_id in live:
                    self.counters.inc("disconnected_unattested")
                    log.warning("disconnecting %s: not attested within %.0fs (%s)", p.peer_id,
                                cfg.attest_deadline_s, p.quarantine_reason, extra={"peer": p.peer_id})
                    self.peers.on_disconnected(p.peer_id, now)
                    self._nursery.start_soon(self._disconnect, live[p.peer_id])
            for p in self.peers.connected():
                if p.state == "left" and p.peer_id in live:
                    self._nursery.start_soon(self._disconnect, live[p.peer_id])

    async def _disconnect(self, peer_id: ID) -> None:
        with trio.move_on_after(self.config.network.request_timeout_s):
            try:
                await self.host.disconnect(peer_id)
            except Exception as exc:  # libp2p may raise if the connection is already gone
                log.debug("disconnect %s: %s", peer_id, exc, extra={"peer": str(peer_id)})

    async def _ping_loop(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.config.network.ping_interval_s)
            async with trio.open_nursery() as n:
                for p in self.peers.connected():
                    n.start_soon(self._ping_one, p.peer_id)

    async def ping(self, peer_id: str) -> float:
        """One libp2p ping round trip, in milliseconds (float precision)."""
        timeout = self.config.network.ping_timeout_s
        with trio.fail_after(timeout):
            stream = await self._open_stream(ID.from_base58(peer_id), PING_PROTOCOL)
            try:
                payload = secrets.token_bytes(PING_BYTES)
                start = trio.current_time()
                await stream.write(payload)
                got = b""
                while len(got) < PING_BYTES:
                    chunk = await stream.read(PING_BYTES - len(got))
                    if not chunk:
                        raise RemoteProtocolError("stream", "ping stream closed")
                    got += chunk
                rtt = (trio.current_time() - start) * 1000
            finally:
                await reset_stream(stream)
        if got != payload:
            raise RemoteProtocolError("invalid", "ping payload mismatch")
        return rtt

    async def _ping_one(self, pid: str) -> None:
        try:
            rtt = await self.ping(pid)
        except (trio.TooSlowError, RemoteProtocolError, OSError) as exc:
            self.counters.inc("ping_failed", type(exc).__name__)
            return
        except Exception as exc:  # libp2p stream errors
            self.counters.inc("ping_failed", type(exc).__name__)
            return
        self.peers.on_rtt(pid, rtt)

    async def _dial(self, info: PeerInfo) -> bool:
        if self.stopping:
            # Our goodbyes are out: a peer that has marked us gone and closed our connection
            # must not be dialled again by a bootstrap loop or a learned address (it would
            # take us for back, and the departure would be lost).
            self.counters.inc("dial_skipped", "stopping")
            return False
        with trio.move_on_after(self.config.network.dial_timeout_s):
            try:
                await self.host.connect(info)
                return True
            except trio.Cancelled:
                raise
            except Exception as exc:  # libp2p: SwarmException, OSError, ...
                log.debug("dial %s failed: %s", info.peer_id, exc, extra={"peer": str(info.peer_id)})
                self.counters.inc("dial_failed", type(exc).__name__)
                return False
        self.counters.inc("dial_failed", "timeout")
        return False

    def _bootstrap_addrs(self) -> list[str]:
        addrs = list(self.config.network.bootstrap)
        if self.data_dir is not None:
            for pid, known in self.data_dir.load_peers().items():
                addrs.extend(a if "/p2p/" in a else f"{a}/p2p/{pid}" for a in known[:2])
        seen: set[str] = set()
        out = []
        for a in addrs:
            if a not in seen and f"/p2p/{self.peer_id}" not in a:
                seen.add(a)
                out.append(a)
        return out

    async def _bootstrap_loop(self, addr: str, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        """Dial ``addr`` with backoff until connected; then watch and redial if it drops."""
        transport, pid = split_p2p_addr(addr)
        info = PeerInfo(ID.from_base58(pid), [multiaddr.Multiaddr(transport)])
        net = self.config.network
        backoff = Backoff(net.bootstrap_backoff_initial_s, net.bootstrap_backoff_max_s, rng=self._rng)
        task_status.started()
        while True:
            st = self.peers.get(pid)
            if st is not None and st.state == "left":
                return
            if self.host.get_network().connections.get(info.peer_id):
                # Backoff restarts only once the peer has attested: a bootstrap node that
                # keeps refusing us must not be hammered at the initial rate.
                if self.peers.is_attested(pid):
                    backoff.reset()
                await trio.sleep(net.bootstrap_backoff_initial_s)
                continue
            target = await self._resolve_bootstrap(info)
            if target is not None and await self._dial(target):
                log.info("connected to bootstrap peer %s", addr, extra={"peer": pid})
                await trio.sleep(net.bootstrap_backoff_initial_s)
                if self.peers.is_attested(pid):
                    continue
            delay = backoff.next_delay()
            if backoff.attempts in (1, 5) or backoff.attempts % 20 == 0:
                log.warning("bootstrap %s not joined yet (attempt %d); retrying in %.1fs", addr,
                            backoff.attempts, delay, extra={"peer": pid})
            await trio.sleep(delay)

    async def _resolve_bootstrap(self, info: PeerInfo) -> PeerInfo | None:
        """``info`` with a host name resolved (overlay/discovery.py, ``dns_name``), afresh each
        attempt: a rescheduled pod keeps its name, not its IP. None when it does not resolve."""
        name = dns_name(str(info.addrs[0]))
        if name is None:
            return info
        host, family, rest = name
        try:
            with trio.fail_after(self.config.network.dial_timeout_s):
                found = await trio.socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
        except (OSError, trio.TooSlowError) as exc:  # socket.gaierror is an OSError
            log.debug("bootstrap name %s of %s does not resolve: %s", host, info.peer_id, exc,
                      extra={"peer": str(info.peer_id), "reason": "dns"})
            self.counters.inc("dial_failed", "dns")
            return None
        addrs = resolved_addrs([(fam, str(sa[0])) for fam, _, _, _, sa in found], rest)
        if not addrs:
            self.counters.inc("dial_failed", "dns")
            return None
        return PeerInfo(info.peer_id, [multiaddr.Multiaddr(a) for a in addrs])

    async def _start_mdns(self) -> MdnsAdvertiser | None:
        token = trio.lowlevel.current_trio_token()

        def found(pid: str, addrs: list[str]) -> None:
            def hop() -> None:
                self.px.dial_learned([(pid, addrs)], "mdns")
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(hop, trio_token=token)

        try:
            return await trio.to_thread.run_sync(MdnsAdvertiser, self.peer_id, self.full_addrs(), found)
        except OSError as exc:
            log.warning("mDNS unavailable (%s); continuing with bootstrap only", exc)
            return None

    async def _say_goodbye(self) -> None:
        async with trio.open_nursery() as n:
            for p in self.peers.attested():
                n.start_soon(self._goodbye_one, p.peer_id)

    async def _goodbye_one(self, pid: str) -> None:
        try:
            with trio.fail_after(2):
                stream = await self._open_stream(ID.from_base58(pid), GOODBYE_PROTOCOL)
                await write_message(stream, Goodbye("shutting down"), timeout_s=2)
                # The peer closes its side once it has marked us gone: wait for that (within
                # the 2 s), or the host, closed right after, may cut the connection before the
                # peer read the goodbye (it would then see a disconnection, not a departure).
                with contextlib.suppress(Exception):  # EOF or reset: either way it is done
                    while await stream.read(MAX_GOODBYE_TAIL):
                        pass
                await close_stream(stream)
        except (trio.TooSlowError, RemoteProtocolError):
            pass

    # ================================================================== state
    def _advertised_addrs(self, pid: str) -> list[str]:
        try:
            addrs = self.host.get_peerstore().addrs(ID.from_base58(pid))
        except Exception:  # PeerStoreError when unknown
            return []
        out = []
        for a in addrs:
            s = str(a)
            if "/ip4/0.0.0.0/" in s or "/ip6/::/" in s:
                continue
            out.append(s if "/p2p/" in s else f"{s}/p2p/{pid}")
        return out

    def _save_peers(self) -> None:
        """Every peer ever attested here and not revoked, with its last advertised addresses,
        for the next start (``_bootstrap_addrs``). Peers that said goodbye are kept: a goodbye
        is how every restart ends, and when a whole federation stops each node hears all the
        others' goodbyes before its own."""
        if self.data_dir is None:
            return
        known = {p.peer_id: self._advertised_addrs(p.peer_id) or p.addrs for p in self.peers.all()
                 if p.last_attested_at is not None and p.state != REVOKED}
        try:
            self.data_dir.save_peers({k: v for k, v in known.items() if v})
        except OSError as exc:
            log.error("could not save the peer list: %s", exc)

    def status(self) -> dict[str, Any]:
        now = self._now()
        peers = sorted((p.to_json(now) for p in self.peers.all() if p.connected or p.state == "left"),
                       key=lambda d: d["peer_id"])
        return {
            "peer_id": self.peer_id,
            "addrs": self.full_addrs(),
            "tee": str(self.provider.kind),
            "profile": self.config.profile,
            "security": self.config.network.security,
            "measurement": self.engine.self_measurement.hex() if self.engine.self_measurement else None,
            "uptime_s": round(now - self.started_at, 3) if self.started_at else 0.0,
            "pid": os.getpid(),
            "policy": {"min_score": self.engine.policy.min_score,
                       "allow_simulated": self.engine.policy.allow_simulated},
            "peers": peers,
            "attested_peers": sum(1 for p in peers if p["attested"]),
            "scores_about_us": {k: {"score": r.score, "verdict": r.verdict, "issued_at": r.issued_at}
                                for k, r in sorted(self.records_about_us.items())},
            "counters": self.counters.to_json(),
            "loop": self.loop_health.status(),
            "keys": self.keys.status() if self.keys is not None else {"backend": "file", "available": True},
            **{key: provider() for key, provider in self._status_providers.items()},
        }


class _Notifee(INotifee):
    """Moves libp2p's connection notifications into the agent's bounded event channel."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    async def connected(self, network: Any, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        self._agent._newest_conn[peer_id.to_base58()] = conn
        self._agent._enqueue("connected", peer_id)

    async def disconnected(self, network: Any, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        if self._agent._newest_conn.get(peer_id.to_base58()) is conn:
            del self._agent._newest_conn[peer_id.to_base58()]
        self._agent._enqueue("disconnected", peer_id)

    async def opened_stream(self, network: Any, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: Any, stream: INetStream) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


def dump_status(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2, sort_keys=True)


