"""Peer exchange: answering attested peers with the attested peers we know, asking them in
turn, and dialling what they name within bounds.

A node asks a peer for the attested peers it knows (``/enclave-swarm/peers/1.0.0``, at most
:data:`PX_LIMIT`) at three moments:

- at once when the peer and we have just attested each other: the *join path* (issue 12): a
  new node meets the whole federation about one round trip after its first attestation,
  instead of a peer-exchange interval later;
- at once when the peer's gossip names members we neither hold a connection to nor are
  dialling (``node/gossip.py``, membership ``Ready.unadmitted``);
- every ``peer_exchange_interval_s``, :data:`PX_FANOUT` attested peers at random, to repair
  what those missed.

The first two are off with ``network.join_exchange = false``. Requests to one peer never
overlap: one asked for meanwhile runs once more afterwards, :data:`LEARNED_EXCHANGE_GAP_S`
later. Whatever a peer (or mDNS) names is dialled through :class:`~overlay.peers.DialPlan`: an
answer naming more peers than we asked for is dropped whole (``remote_error{px:over-limit}``),
at most :data:`MAX_PENDING_DIALS` learned dials are pending (the rest counted
``dial_dropped{pending-full}``), entries that do not parse are counted
``remote_error{<source>:bad-entry}``, and every dial still has to attest like any connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, read_message, reset_stream, write_message
from overlay.messages import PEERS_PROTOCOL, PeerEntry, PeersRequest, PeersResponse
from overlay.peers import DialPlan

if TYPE_CHECKING:
    from node.agent import Agent

log = logging.getLogger("enclave_swarm.agent")

PX_FANOUT = 3  # attested peers asked per peer-exchange round
PX_LIMIT = 64  # peers asked for per request; an answer naming more is refused whole
# Learned peers pending a dial at once (dialling, or waiting for a dial slot); beyond it they
# are dropped (counted dial_dropped{pending-full}) and peer exchange asks again.
MAX_PENDING_DIALS = 2 * PX_LIMIT
# A peer whose gossip keeps naming members we lack is asked again at most this often.
LEARNED_EXCHANGE_GAP_S = 0.5
# We dial a learned peer whose id is below ours this much later: when two nodes learn each
# other at the same moment (both joined through one seed), the lower id's dial usually lands
# first and the higher finds the connection there, instead of two crossing connections whose
# loser takes the first attestation exchange down with it.
CROSSING_DIAL_DELAY_S = 0.15
ADDRS_PER_ENTRY = 8


class PeerExchange:
    """One agent's peer exchange (the module docstring says when it asks and what it dials)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.plan = DialPlan(agent.peer_id, max_pending=MAX_PENDING_DIALS, max_per_answer=PX_LIMIT,
                             max_addrs=ADDRS_PER_ENTRY)
        self._running: set[str] = set()  # peers with an exchange running now
        self._again: set[str] = set()    # ... and asked for again meanwhile

    # ------------------------------------------------------------------ serving

    async def handle(self, stream: INetStream, pid: str) -> None:
        """Answer an attested peer with up to the asked number of the attested peers we know,
        with their advertised addresses (never the asker itself)."""
        a = self.agent
        timeout = a.config.network.request_timeout_s
        req = await read_message(FrameReader(stream), PeersRequest, timeout_s=timeout)
        entries = []
        for p in a.peers.attested():
            if p.peer_id == pid:
                continue
            addrs = a._advertised_addrs(p.peer_id)
            if addrs:
                entries.append(PeerEntry(p.peer_id, tuple(addrs[:ADDRS_PER_ENTRY])))
            if len(entries) >= req.limit:
                break
        await write_message(stream, PeersResponse(tuple(entries)), timeout_s=timeout)

    # ------------------------------------------------------------------ asking

    async def loop(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The periodic exchange: every interval, a few attested peers at random."""
        task_status.started()
        a = self.agent
        while True:
            await trio.sleep(a.config.network.peer_exchange_interval_s)
            attested = a.peers.attested()
            for p in a._rng.sample(attested, min(PX_FANOUT, len(attested))):
                await self.exchange_with(p.peer_id)

    async def exchange_with(self, pid: str) -> None:
        a = self.agent
        timeout = a.config.network.request_timeout_s
        try:
            with trio.fail_after(timeout):
                stream = await a._open_stream(ID.from_base58(pid), PEERS_PROTOCOL)
                try:
                    await write_message(stream, PeersRequest(PX_LIMIT), timeout_s=timeout)
                    resp = await read_message(FrameReader(stream), PeersResponse, timeout_s=timeout)
                finally:
                    await reset_stream(stream)
        except trio.TooSlowError:
            a.counters.inc("px_failed", "timeout")
            return
        except RemoteProtocolError as exc:
            a._remote_error(pid, PEERS_PROTOCOL, exc)
            return
        self.dial_learned([(e.peer_id, list(e.addrs)) for e in resp.peers], "px", pid)

    def soon(self, pid: str) -> None:
        """Ask attested ``pid`` now (the join path, or its gossip named members we lack)."""
        a = self.agent
        if (not a.config.network.join_exchange or a._nursery is None or a.stopping
                or not a.peers.is_attested(pid)):
            return
        if pid in self._running:
            self._again.add(pid)
            return
        self._running.add(pid)
        a._nursery.start_soon(self._exchange_now, pid)

    def unknown(self, pid: str) -> bool:
        """Neither connected to us, nor being dialled, nor gone for good: a member we could
        only meet by learning its address."""
        if pid == self.agent.peer_id or pid in self.plan.pending:
            return False
        st = self.agent.peers.get(pid)
        return st is None or (not st.connected and st.state == "alive")

    async def _exchange_now(self, pid: str) -> None:
        a = self.agent
        try:
            while True:
                a.counters.inc("join_exchange")
                await self.exchange_with(pid)
                if pid not in self._again:
                    return
                self._again.discard(pid)
                await trio.sleep(LEARNED_EXCHANGE_GAP_S)
                if not a.peers.is_attested(pid):
                    return
        finally:
            self._running.discard(pid)
            self._again.discard(pid)

    # ------------------------------------------------------------------ dialling

    def dial_learned(self, entries: list[tuple[str, list[str]]], source: str,
                     named_by: str | None = None) -> None:
        """Dial the peers another member (``named_by``) or mDNS named, within the plan's
        bounds (the module docstring lists what is dropped and how it is counted)."""
        a = self.agent
        if a._nursery is None:
            return
        try:
            dials, dropped = self.plan.offer(entries, a.peers)
        except ValueError as exc:
            a.counters.inc("remote_error", f"{source}:over-limit")
            log.warning("dropped the peers %s named: %s", named_by, exc,
                        extra={"peer": named_by, "reason": "over-limit"})
            return
        if dropped:
            a.counters.inc("dial_dropped", "pending-full", dropped)
        bad = 0
        for pid, addrs in dials:
            try:
                info = PeerInfo(ID.from_base58(pid), [multiaddr.Multiaddr(x.split("/p2p/")[0])
                                                      for x in addrs])
            except Exception:  # base58/multiaddr raise several types on garbage
                self.plan.done(pid)
                bad += 1
                continue
            a._nursery.start_soon(self._dial_planned, pid, info)
        if bad:
            a.counters.inc("remote_error", f"{source}:bad-entry", bad)
            log.warning("dropped %d peer entries %s named: bad peer id or address", bad,
                        named_by or source, extra={"peer": named_by, "reason": "bad-entry"})

    async def _dial_planned(self, pid: str, info: PeerInfo) -> None:
        a = self.agent
        try:
            if pid < a.peer_id:
                await trio.sleep(CROSSING_DIAL_DELAY_S)
            async with a._dial_limiter:
                st = a.peers.get(pid)
                if st is None or not st.connected:  # it may have dialled us meanwhile
                    a.counters.inc("dial_learned")
                    await a._dial(info)
        finally:
            self.plan.done(pid)
