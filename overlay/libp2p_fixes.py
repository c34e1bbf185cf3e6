"""Every fix we make to py-libp2p, in one place, pinned to py-libp2p 0.8.1.

Rules:
1. This module is the only place that changes py-libp2p's behaviour. Each fix names the
   upstream defect (file, function) in its docstring and is written so it could be proposed
   upstream as it stands: a subclass overriding the defective method, handed to the library
   through its own extension points where it has one (``new_host(sec_opt=...)``, the host's
   ``multiselect_client``).
2. Where the library reaches a class only through a module global, :func:`apply` replaces that
   global with our subclass, and the fix's docstring says so. Those are process-wide; the rest
   is wired per host by ``overlay.host.build_host`` (:func:`fix_host`, the transports).
3. The fixes are written against 0.8.1's source. Importing this module with any other version
   raises :class:`Libp2pVersionError` (the node CLI exits 1 with its message): a silent
   mismatch between a copied method and a changed library is worse than no fix.
4. Wire compatibility: nothing here changes what goes on the wire in a way an unpatched
   py-libp2p (or go-libp2p) peer cannot read; tests/overlay/test_libp2p_interop.py runs a
   patched host against an unpatched one in another process.

Theory of operation, by payoff (docs/libp2p.md has the figures):
1. ``FastDialSwarm.dial_peer``: the happy-eyeballs delay ends at the first successful dial.
   With it, fix 8: a peer that moved is dialled at its new address, not held back for a
   minute by its dead ones (a backoff per address, not per peer).
2. ``FixedYamuxStream``: go-yamux's window rule (an update once half the window is consumed,
   crediting exactly what was consumed).
3. ``PipelinedMultiselectClient``: the multistream header and the first protocol in one write,
   one round trip instead of two (go-multistream's ``SelectProtoOrFail``).
4. ``EventYamuxStream``: a writer with an empty send window waits on an event, not 10 ms polls.
5. ``NoiseSizedYamuxStream``: a full yamux frame fits one Noise message (65,519 bytes). It
   subclasses 2 and 4 and is the stream class installed.
6. ``BufferedRawConnection`` (via ``BufferedNoiseTransport``, ``BufferedTLSTransport``):
   socket reads of 128 KiB, served to Noise and TLS from a buffer; ``BulkTLSStreamReadWriter``:
   TLS reads return every record already decrypted.
7. ``QuietYamux``, ``QuietNoiseTransportReadWriter``: no debug strings formatted per frame
   written, per read or per Noise message when debug logging is off.
"""

from __future__ import annotations

import importlib.metadata
import logging
import ssl
import struct
import time
from collections.abc import Sequence
from typing import Any

PINNED_LIBP2P_VERSION = "0.8.1"


class Libp2pVersionError(ImportError):
    """The installed py-libp2p is not the version these fixes were written against.

    An ``ImportError``: the check runs when this module is imported, and a caller that cannot
    import its networking stack has the same remedy (install the pinned version)."""


def check_version(version: str | None = None) -> None:
    """Raise :class:`Libp2pVersionError` unless py-libp2p ``PINNED_LIBP2P_VERSION`` is
    installed (``version`` overrides the installed one, for tests)."""
    if version is None:
        try:
            version = importlib.metadata.version("libp2p")
        except importlib.metadata.PackageNotFoundError:
            version = "none"
    if version != PINNED_LIBP2P_VERSION:
        raise Libp2pVersionError(
            f"py-libp2p {version} is installed, but enclave-swarm's fixes to py-libp2p "
            f"(overlay/libp2p_fixes.py) are written against py-libp2p {PINNED_LIBP2P_VERSION}; "
            f"install libp2p=={PINNED_LIBP2P_VERSION}")


check_version()  # before importing the internals the fixes below subclass

import libp2p  # noqa: E402
import trio  # noqa: E402
from libp2p.abc import (  # noqa: E402
    IHost,
    IMultiselectCommunicator,
    INetConn,
    IRawConnection,
    ISecureConn,
)
from libp2p.connection_types import ConnectionType  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.exceptions import MultiError  # noqa: E402
from libp2p.io.exceptions import IOException  # noqa: E402
from libp2p.metrics.swarm import SwarmEvent  # noqa: E402
from libp2p.network.exceptions import SwarmDialAllFailedError, SwarmException  # noqa: E402
from libp2p.network.swarm import Swarm  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerstore import PeerStoreError  # noqa: E402
from libp2p.protocol_muxer.exceptions import (  # noqa: E402
    MultiselectClientError,
    MultiselectCommunicatorError,
    ProtocolNotSupportedError,
)
from libp2p.protocol_muxer.multiselect_client import (  # noqa: E402
    DEFAULT_NEGOTIATE_TIMEOUT,
    MULTISELECT_PROTOCOL_ID,
    PROTOCOL_NOT_FOUND_MSG,
    MultiselectClient,
)
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator  # noqa: E402
from libp2p.security.exceptions import HandshakeFailure  # noqa: E402
from libp2p.security.noise import patterns as noise_patterns  # noqa: E402
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH as NOISE_MAX_PLAINTEXT  # noqa: E402
from libp2p.security.noise.io import NoiseTransportReadWriter  # noqa: E402
from libp2p.security.noise.transport import Transport as NoiseTransport  # noqa: E402
from libp2p.security.tls import io as tls_io  # noqa: E402
from libp2p.security.tls.io import TLSStreamReadWriter  # noqa: E402
from libp2p.security.tls.transport import TLSTransport  # noqa: E402
from libp2p.stream_muxer import muxer_multistream  # noqa: E402
from libp2p.stream_muxer.exceptions import (  # noqa: E402
    MuxedStreamEOF,
    MuxedStreamError,
    MuxedStreamReset,
)
from libp2p.stream_muxer.yamux import yamux as yamux_module  # noqa: E402
from libp2p.utils.address_validation import (  # noqa: E402
    has_public_ipv6,
    is_public_ipv6_address,
    is_relay_address,
)
from libp2p.utils.varint import encode_delim  # noqa: E402
from multiaddr import Multiaddr  # noqa: E402

from overlay.errors import SignerUnavailable  # noqa: E402

log = logging.getLogger(__name__)

# The happy-eyeballs head start of the first address over the next (go-libp2p's DialDelay).
HAPPY_EYEBALLS_DELAY_S = 0.250
# Fix 8: addresses one dial tries at most (a peer-exchange entry carries up to 8), and the
# backoff of an address after a failed dial: doubling from the first to the second figure,
# over at most this many (peer, address) pairs (past it, the oldest entries are forgotten).
MAX_DIAL_ADDRS = 8
DIAL_BACKOFF_S = 1.0
DIAL_BACKOFF_MAX_S = 60.0
MAX_DIAL_FAILURES_KEPT = 10_000
# How long a yamux writer waits for its peer to open an empty send window (0.8.1's value).
ZERO_WINDOW_TIMEOUT_S = 5.0
_YAMUX_HEADER = struct.Struct(yamux_module.YAMUX_HEADER_FORMAT)


# ---------------------------------------------------------------------------- 1. dial delay


def _transport_priority(addr: Multiaddr) -> int:
    # As libp2p/network/swarm.py (go-libp2p's ranking):
    # QUIC-v1 (0) > WebRTC Direct (1) > TCP (2) > WS (3) > relay (4).
    protos = {p.name for p in addr.protocols()}
    if "quic-v1" in protos or "quic" in protos:
        return 0
    if "webrtc-direct" in protos or "webrtc" in protos:
        return 1
    if "tcp" in protos and "ws" not in protos and "wss" not in protos:
        return 2
    if "ws" in protos or "wss" in protos:
        return 3
    if "p2p-circuit" in protos:
        return 4
    return 5


class FastDialSwarm(Swarm):
    """``Swarm.dial_peer`` without its fixed 250 ms wait.

    Upstream defect (``libp2p/network/swarm.py``, ``Swarm.dial_peer``): the happy-eyeballs loop
    starts the dial of an address, then waits ``_HAPPY_EYEBALLS_DELAY`` (250 ms) for an event
    that only a *failed* dial sets. A dial that succeeds does not end the wait, and after the
    last address the loop still waits out the delay; the nursery then waits for whatever
    fallback dial the delay let start. So every connect costs at least 250 ms, on loopback as
    over the internet, and a peer with addresses of two transport classes is dialled twice
    (a second connection the caller never asked for) even when the first dial succeeded in
    a millisecond.

    The fix, as go-libp2p's dial worker does it: the first successful dial cancels the
    happy-eyeballs scope, so no later address is dialled and a fallback already in flight is
    abandoned; ``dial_peer`` returns that one connection at once. A failed dial still starts
    the next address immediately, and a slow one still lets the next start after the delay.
    The upstream patch is two lines in ``dial_task`` (cancel the scope on success instead of
    only at ``max_connections_per_peer``) and no wait after the last address; this subclass
    repeats the rest of the method unchanged. Installed by :func:`apply`, which replaces
    the module global ``libp2p.Swarm`` (what ``libp2p.new_swarm`` instantiates).

    Stale addresses (fix 8). Upstream defects (same method): it dials at most one address per
    transport class, the first stored, and the peerstore keeps addresses in the order they
    arrived, so a peer that moved (a restart on a new port, a pod with a new IP) is dialled at
    its oldest, dead address while the new one a caller just gave ``host.connect`` waits
    behind it; and once every dialled address failed, the *peer* is refused every dial for
    60 s (``_NegativePeerCache``), checked before its live connections and before any new
    address is looked at. A node restarted with its peers' saved addresses could not meet
    them for a minute (tests/overlay/test_moved_peers.py). Here, as go-libp2p's dial backoff
    does it, a failure holds back that *address* only, for :data:`DIAL_BACKOFF_S` doubling
    per failure up to :data:`DIAL_BACKOFF_MAX_S`, and a success clears the peer's; every
    address not held back is dialled (at most :data:`MAX_DIAL_ADDRS`), newest first within a
    transport class; a live connection is returned before anything else is checked.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (peer, address) -> (consecutive failures, monotonic time until which it is held back)
        self.dial_failures: dict[tuple[str, str], tuple[int, float]] = {}

    def _held_back(self, peer_id: ID, addr: Multiaddr, now: float) -> bool:
        entry = self.dial_failures.get((str(peer_id), str(addr)))
        return entry is not None and now < entry[1]

    def _dial_failed(self, peer_id: ID, addr: Multiaddr) -> None:
        failures = self.dial_failures
        now = time.monotonic()
        if len(failures) >= MAX_DIAL_FAILURES_KEPT:
            for key in [k for k, (_, until) in failures.items() if until <= now]:
                del failures[key]
            while len(failures) >= MAX_DIAL_FAILURES_KEPT:
                del failures[next(iter(failures))]  # the oldest entry
        key = (str(peer_id), str(addr))
        count = failures.pop(key, (0, 0.0))[0] + 1
        failures[key] = (count, now + min(DIAL_BACKOFF_S * 2 ** (count - 1), DIAL_BACKOFF_MAX_S))

    def _dial_succeeded(self, peer_id: ID) -> None:
        failures = self.dial_failures
        pid = str(peer_id)
        for key in [k for k in failures if k[0] == pid]:
            del failures[key]

    async def dial_peer(self, peer_id: ID) -> list[INetConn]:
        event = SwarmEvent()
        event.peer_id = peer_id.pretty()
        event.dial_attempt = True
        if self.metric_send_channel is not None:
            await self.metric_send_channel.send(event)

        valid = [c for c in self.get_connections(peer_id) if not c.is_closed]
        if valid:
            return valid
        if peer_id in self._ongoing_dials:
            await self._ongoing_dials[peer_id].wait()
            valid = [c for c in self.get_connections(peer_id) if not c.is_closed]
            if valid:
                return valid

        dial_event = trio.Event()
        self._ongoing_dials[peer_id] = dial_event
        try:
            selected = await self._select_dial_addrs(peer_id)
            connections: list[INetConn] = []
            exceptions: list[SwarmException] = []
            with trio.CancelScope() as happy_eyeballs:
                async with trio.open_nursery() as nursery:
                    for i, addr in enumerate(selected):
                        failed = trio.Event()

                        async def dial_task(addr: Multiaddr = addr, failed: trio.Event = failed) -> None:
                            try:
                                async with self._global_dial_limiter:
                                    conn = await self._dial_with_retry(addr, peer_id)
                                    connections.append(conn)
                                    happy_eyeballs.cancel()  # the fix: the first success wins
                            except SwarmException as exc:
                                exceptions.append(exc)
                                log.debug("dial %s failed", addr, exc_info=exc)
                                self._dial_failed(peer_id, addr)
                                failed.set()
                            except Exception as exc:  # as upstream: any dial error moves on
                                log.debug("dial %s: unexpected %r", addr, exc)
                                self._dial_failed(peer_id, addr)
                                failed.set()

                        nursery.start_soon(dial_task)
                        if i + 1 < len(selected):  # the fix: no head start after the last one
                            with trio.move_on_after(HAPPY_EYEBALLS_DELAY_S):
                                await failed.wait()

            if not connections:
                event = SwarmEvent()
                event.peer_id = peer_id.pretty()
                event.dial_attempt_error = True
                if self.metric_send_channel is not None:
                    await self.metric_send_channel.send(event)
                raise SwarmDialAllFailedError(
                    f"unable to connect to {peer_id}, no addresses established a "
                    "successful connection (with exceptions)",
                    peer_id=peer_id,
                    num_addrs_tried=len(exceptions),
                ) from MultiError(exceptions)
            # Two dials can both finish before the cancellation lands: keep the first.
            for extra in connections[1:]:
                try:
                    await extra.close()
                except Exception as exc:  # closing a surplus connection is best effort
                    log.debug("closing a surplus connection: %r", exc)
            self._dial_succeeded(peer_id)
            return connections[:1]
        finally:
            dial_event.set()
            self._ongoing_dials.pop(peer_id, None)

    async def _select_dial_addrs(self, peer_id: ID) -> list[Multiaddr]:
        """The addresses ``dial_peer`` tries, best first: 0.8.1's filters and ranking, as is."""
        try:
            addrs = self.peerstore.addrs(peer_id)
        except PeerStoreError as error:
            raise SwarmException(f"No known addresses to peer {peer_id}") from error
        if not addrs:
            raise SwarmException(f"No known addresses to peer {peer_id}")
        allowed = [a for a in addrs if await self.connection_gate.is_allowed(a)]
        if not allowed:
            raise SwarmException(f"All addresses for peer {peer_id} blocked by connection gate")
        public = [a for a in allowed if "/ip4/127." not in str(a) and "/ip6/::1" not in str(a)]
        if public:
            allowed = public
        allowed = [a for a in allowed if not is_relay_address(a)]
        if not allowed:
            raise SwarmException(f"All addresses for peer {peer_id} are unusable "
                                 "(relay-only or blocked by connection gate)")
        if not has_public_ipv6():
            allowed = [a for a in allowed if not is_public_ipv6_address(a)]
            if not allowed:
                raise SwarmException(f"All addresses for peer {peer_id} require public IPv6 "
                                     "but the host has no public IPv6")

        def supported(addr: Multiaddr) -> bool:
            try:
                return self.transport_manager.transport_for_dialing(addr) is not None
            except Exception:  # as upstream: an address no transport parses is skipped
                return False

        allowed = [a for a in allowed if supported(a)]
        if not allowed:
            raise SwarmException(f"No supported transport found for peer {peer_id} addresses")
        # Fix 8: newest first within a class (the peerstore appends), every class, none held
        # back by a recent failure.
        allowed = sorted(reversed(allowed), key=_transport_priority)
        now = time.monotonic()
        ready = [a for a in allowed if not self._held_back(peer_id, a, now)]
        if not ready:
            raise SwarmException(f"every known address of peer {peer_id} failed a dial within "
                                 "its backoff")
        return ready[:MAX_DIAL_ADDRS]


# ---------------------------------------------------------------------------- 2. yamux window


class FixedYamuxStream(yamux_module.YamuxStream):
    """A yamux stream with go-yamux's receive-window rule.

    Upstream defect (``libp2p/stream_muxer/yamux/yamux.py``,
    ``YamuxStream._auto_tune_and_send_window_update``, called by ``YamuxStream.read`` after
    every read): when less than half the window has been consumed, the "partial slack" and
    "release on read" branches still send a WINDOW_UPDATE, so a reader gets one update per
    read (256 per MiB at 4 KiB reads, each a frame, a Noise message and a syscall on both
    sides). The partial-slack branch also credits ``delta + bytes_read`` where ``delta``
    already counts the bytes just read, so the peer holds more credit than the window.

    go-yamux (``stream.go``, ``sendWindowUpdate`` with ``segmentedBuffer.GrowTo``): the credit
    to grant is what the reader freed, ``delta = window - (credited + buffered)``; nothing is
    sent until ``delta`` reaches half the window; then exactly ``delta`` is sent (plus the
    window's auto-tuning growth, which 0.8.1 already mirrors in ``_apply_autotune_epoch``).
    Installed by :func:`apply`, which replaces the module global
    ``libp2p.stream_muxer.yamux.yamux.YamuxStream``: ``Yamux.open_stream`` and
    ``Yamux.handle_incoming`` construct streams by that name.
    """

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            delta = self.target_recv_window - (self.recv_window + buffered)
            if delta < self.target_recv_window // 2:
                return
            self.recv_window += delta
            delta += self._apply_autotune_epoch(buffered)
        # Never hold window_lock across the write (as upstream): inbound WINDOW_UPDATE
        # handling takes it.
        await self.send_window_update(delta)


# ---------------------------------------------------------------------------- 3. multistream


class PipelinedMultiselectClient(MultiselectClient):
    """Multistream-select in one round trip when the first protocol offered is accepted.

    Upstream defect (``libp2p/protocol_muxer/multiselect_client.py``,
    ``MultiselectClient.select_one_of``): the dialer writes the ``/multistream/1.0.0`` header,
    waits for the listener's header, and only then writes the protocol it wants and waits
    again: two round trips for every stream (and for the security and muxer negotiations of
    every connection), each queued behind whatever bulk frames share the connection.

    go-multistream (``client.go``, ``SelectProtoOrFail``) writes the header and the first
    protocol in one write, then reads the listener's header and its answer: one round trip.
    This is wire-compatible with every listener, ours and unpatched py-libp2p's included: the
    listener reads the two messages in order either way (the spec lets a dialer send the
    protocol before the header answer arrives). If the listener answers ``na``, the remaining
    protocols are tried one by one as before. Wired per host by :func:`fix_host` (the host's
    ``multiselect_client`` and those of its security and muxer negotiations).
    """

    async def select_one_of(
        self,
        protocols: Sequence[TProtocol],
        communicator: IMultiselectCommunicator,
        negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
    ) -> TProtocol:
        if not protocols or not isinstance(communicator, MultiselectCommunicator):
            return await super().select_one_of(protocols, communicator, negotiate_timeout)
        with trio.move_on_after(negotiate_timeout):
            first, rest = protocols[0], protocols[1:]
            wanted = first if first is not None else ""
            try:
                await communicator.read_writer.write(
                    encode_delim(MULTISELECT_PROTOCOL_ID.encode()) + encode_delim(wanted.encode()))
            except (IOException, AssertionError, ValueError) as error:  # as the communicator's
                raise MultiselectClientError(f"handshake write failed: {error}") from error
            header = await self._read(communicator, "handshake")
            if header != MULTISELECT_PROTOCOL_ID:
                raise MultiselectClientError(
                    f"multiselect protocol ID mismatch: expected {MULTISELECT_PROTOCOL_ID}, "
                    f"got {header!r}")
            answer = await self._read(communicator, "protocol")
            if answer == wanted:
                return first
            if answer == MULTISELECT_PROTOCOL_ID:  # a listener restarting the handshake
                await self.handshake(communicator)
                return await self._select_rest(communicator, protocols, protocols,
                                               negotiate_timeout, [])
            if answer != PROTOCOL_NOT_FOUND_MSG:
                raise MultiselectClientError(
                    f"unrecognized response: {answer!r}, expected {wanted!r} or "
                    f"{PROTOCOL_NOT_FOUND_MSG!r}, protocol={first}")
            return await self._select_rest(communicator, rest, protocols, negotiate_timeout,
                                           [f"protocol not supported: {first}"])
        raise MultiselectClientError(
            f"response timed out after {negotiate_timeout}s, protocols tried: {list(protocols)}")

    async def _select_rest(self, communicator: IMultiselectCommunicator,
                           protocols: Sequence[TProtocol], tried: Sequence[TProtocol],
                           negotiate_timeout: int, unsupported: list[str]) -> TProtocol:
        """Try ``protocols`` one by one (0.8.1's way); ``tried``: all, for the error."""
        for protocol in protocols:
            try:
                return await self.try_select(communicator, protocol)
            except ProtocolNotSupportedError as error:
                unsupported.append(str(error))
        last = f". Last error: {unsupported[-1]}" if unsupported else ""
        raise MultiselectClientError(
            f"protocols not supported: tried {list(tried)}, timeout={negotiate_timeout}s{last}")

    @staticmethod
    async def _read(communicator: IMultiselectCommunicator, what: str) -> str:
        try:
            return await communicator.read()
        except MultiselectCommunicatorError as error:
            raise MultiselectClientError(f"{what} read failed: {error}") from error


# ---------------------------------------------------------------------------- 4. window wait


class EventYamuxStream(FixedYamuxStream):
    """A yamux writer that sleeps until its send window opens, not in 10 ms polls.

    Upstream defect (``libp2p/stream_muxer/yamux/yamux.py``, ``YamuxStream.write``): with
    an empty send window the writer loops ``trio.sleep(0.01)`` and re-checks, so a
    flow-controlled sender wakes 100 times a second for nothing and reacts to a
    WINDOW_UPDATE up to 10 ms late (for a 256 KiB window at loopback speed, longer than the
    transfer of the window itself).

    The fix: ``send_window`` and ``closed`` are properties whose setters wake the writer
    when the window grows or the stream closes (``Yamux.handle_incoming`` and the close paths
    assign those attributes, so no other method changes); the writer waits on that event
    under the same 5 s limit as upstream. Upstream it would be an event beside the attribute.

    Also per frame, 0.8.1's ``write`` takes the stream's ``rw_lock`` and ``window_lock``
    (two lock round trips, each a trio checkpoint) to check and take send window, and drops
    both before writing the frame, so they never ordered the frames of concurrent writers.
    Under trio only one task runs at a time, and nothing between the window check and its
    decrement yields, so that check-and-take is atomic without them (inbound window updates
    still take ``window_lock``; their critical sections do not yield either). Dropping them
    is worth 14 % of one stream's throughput (docs/libp2p.md). ``write`` is otherwise 0.8.1's
    (less its per-call debug formatting).
    """

    _send_window: int
    _closed: bool
    _window_opened: trio.Event | None = None

    @property
    def send_window(self) -> int:
        return self._send_window

    @send_window.setter
    def send_window(self, value: int) -> None:
        grew = value > getattr(self, "_send_window", 0)
        self._send_window = value
        if grew and self._window_opened is not None:
            self._window_opened.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        if value and self._window_opened is not None:
            self._window_opened.set()

    async def write(self, data: bytes) -> None:
        if self.send_closed:
            raise MuxedStreamError("Stream is closed for sending")
        view = memoryview(data)
        sent, total = 0, len(data)
        while sent < total:
            if self.send_closed:
                raise MuxedStreamError("Stream is closed for sending")
            if self.closed:
                raise MuxedStreamError("Stream is closed")
            if self.send_window <= 0:
                self._zero_window_waits += 1
                with trio.move_on_after(ZERO_WINDOW_TIMEOUT_S) as wait:
                    while self.send_window <= 0 and not self.closed:
                        self._window_opened = opened = trio.Event()
                        await opened.wait()
                self._window_opened = None
                if wait.cancelled_caught:
                    raise MuxedStreamError("Timed out waiting for window update after 5 seconds.")
                continue
            # No checkpoint from the window check to the decrement: atomic under trio.
            n = min(self.send_window, self.max_frame_payload, total - sent)
            self.send_window -= n
            header = _YAMUX_HEADER.pack(0, yamux_module.TYPE_DATA, 0, self.stream_id, n)
            await self.conn._write_frame(header + view[sent:sent + n])
            sent += n

    max_frame_payload = yamux_module.MAX_MESSAGE_SIZE - yamux_module.HEADER_SIZE


# ---------------------------------------------------------------------------- 5. frame size


class NoiseSizedYamuxStream(EventYamuxStream):
    """Yamux DATA frames that fit one Noise transport message.

    Upstream defect (``libp2p/stream_muxer/yamux/yamux.py``, ``YamuxStream.write``): a frame
    carries up to ``MAX_MESSAGE_SIZE - HEADER_SIZE`` = 65,524 bytes, so a full frame is 65,536
    bytes, and Noise (``libp2p/security/noise/io.py``, ``write_msg``) carries at most
    ``MAX_PLAINTEXT_LENGTH`` = 65,519 plaintext bytes per message: every full frame becomes
    two Noise messages (65,519 + 17 bytes), two encryptions, two length prefixes, and on the
    reader two decryptions and a reassembly. go-libp2p has the same split; it costs little in
    Go and a Python-level round of work per frame here.

    The fix: at most ``MAX_PLAINTEXT_LENGTH - HEADER_SIZE`` = 65,507 payload bytes per frame, so
    a frame and its header are one Noise message. Under TLS, records are 16 KiB whatever the
    frame, so the smaller frame changes nothing there. Installed as ``YamuxStream`` by
    :func:`apply` (this class is the one installed; it includes fixes 2 and 4).
    """

    max_frame_payload = NOISE_MAX_PLAINTEXT - yamux_module.HEADER_SIZE


# ---------------------------------------------------------------------------- 6. buffered reads

# One receive_some asks for this much: two full Noise messages, eight TLS records.
READ_BUFFER_BYTES = 128 * 1024


class BufferedRawConnection(IRawConnection):
    """A raw connection whose reads are served from one large socket read.

    Upstream defects: Noise reads each message as a 2-byte length then its body
    (``libp2p/io/msgio.py``, ``FixedSizeLenMsgReadWriter.read_msg`` over
    ``libp2p/io/trio.py``, ``TrioTCPStream.read`` = ``receive_some(n)``), two system calls
    and two trips through the raw connection's lock per message at least; TLS reads raw data
    4 KiB at a time (``libp2p/security/tls/io.py``, ``TLSStreamReadWriter.read``), four
    system calls per 16 KiB record. Both read exactly what they are about to parse, never
    ahead, so a 64 KiB Noise message arriving in one TCP segment still costs two calls.

    The fix wraps the (possibly pre-shared-key protected) raw connection handed to the
    security transport: a read asks the socket for up to ``READ_BUFFER_BYTES`` and keeps what
    the caller did not ask for; later reads take from that buffer without a system call.
    Reads still return at most ``n`` bytes, as the interface promises; writes pass through.
    Upstream this belongs in ``TrioTCPStream`` (a read buffer, as go's ``bufio.Reader`` over
    the Noise conn); here it is applied by :class:`BufferedNoiseTransport` and
    :class:`BufferedTLSTransport`, which ``build_host`` hands to ``new_host(sec_opt=...)``.
    """

    def __init__(self, conn: IRawConnection, size: int = READ_BUFFER_BYTES) -> None:
        self._conn = conn
        self._size = size
        self._buf = b""
        self._pos = 0

    def buffered(self) -> int:
        """Bytes read from the socket and not yet returned."""
        return len(self._buf) - self._pos

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        if self._pos == len(self._buf):
            data = await self._conn.read(max(n or 0, self._size))
            if n is None or len(data) <= n:
                return data
            self._buf, self._pos = data, n
            return data[:n]
        end = len(self._buf) if n is None else min(len(self._buf), self._pos + n)
        out = self._buf[self._pos:end]
        self._pos = end
        if end == len(self._buf):
            self._buf, self._pos = b"", 0
        return out

    async def write(self, data: bytes) -> None:
        await self._conn.write(data)

    async def close(self) -> None:
        await self._conn.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self._conn.get_remote_address()

    def get_transport_addresses(self) -> list[Multiaddr]:
        return self._conn.get_transport_addresses()

    def get_connection_type(self) -> ConnectionType:
        return self._conn.get_connection_type()

    def __getattr__(self, name: str) -> Any:
        # Anything else a transport asks of its raw connection: is_initiator (which 0.8.1's
        # pre-shared-key PskConn lacks), conn_state(), ...
        return getattr(self._conn, name)


class BulkTLSStreamReadWriter(TLSStreamReadWriter):
    """TLS reads that take what the socket has and return every record already decrypted.

    Upstream defect (``libp2p/security/tls/io.py``, ``TLSStreamReadWriter.read``): it feeds
    the TLS object 4 KiB of ciphertext at a time (a 16 KiB record takes four trips round its
    loop, three of them ending in ``SSLWantReadError``) and returns as soon as one record
    decrypts, so a 64 KiB yamux frame costs four calls through ``SecureSession``.

    The fix: ciphertext is fed in reads of up to ``READ_BUFFER_BYTES``, and once one record
    decrypts, the records already complete in the buffer are returned with it, up to ``n``
    (never waiting for more). Errors, the handshake-time buffer and EOF are handled as in
    0.8.1. Installed by :func:`apply`, which replaces the module global
    ``libp2p.security.tls.io.TLSStreamReadWriter`` (what ``TLSReadWriter`` constructs).
    """

    async def read(self, n: int | None = None) -> bytes:
        if self._closed:
            raise RuntimeError("Cannot read: TLS connection is closed")
        if not self._handshake_complete:
            raise RuntimeError("Call handshake() first")
        if n is None:
            n = 65536
        if self._read_buffer:  # data that arrived with the handshake
            early = bytes(self._read_buffer[:n])
            del self._read_buffer[:n]
            return early
        while True:
            pending = self._out_bio.read()
            if pending:  # TLS may owe the peer something (a key update, a ticket)
                await self.raw_connection.write(pending)
            try:
                data = self._ssl_socket.read(min(n, 65536))
            except ssl.SSLWantReadError:
                incoming = await self.raw_connection.read(READ_BUFFER_BYTES)
                if not incoming:
                    return b""  # connection closed
                self._in_bio.write(incoming)
                continue
            except ssl.SSLError as e:
                reason = getattr(e, "reason", None) or ""
                if "ALERT" in reason or getattr(e, "errno", None) == ssl.SSL_ERROR_EOF \
                        or reason == "EOF_OCCURRED":
                    return b""  # as 0.8.1: an alert or EOF from the peer ends the stream
                raise
            if not data:
                return b""
            if len(data) >= n:
                return data
            out = bytearray(data)
            while len(out) < n:
                try:
                    more = self._ssl_socket.read(min(n - len(out), 65536))
                except (ssl.SSLWantReadError, ssl.SSLError):
                    break  # no complete record left: return what we have
                if not more:
                    break
                out += more
            return bytes(out)


class BufferedNoiseTransport(NoiseTransport):
    """py-libp2p's Noise transport over a :class:`BufferedRawConnection`. An identity key that
    cannot sign now (a token that went away, node/keys) fails the handshake like any other
    handshake failure, instead of escaping into libp2p's listener."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        try:
            return await super().secure_inbound(BufferedRawConnection(conn))
        except SignerUnavailable as exc:
            raise HandshakeFailure(f"our identity key cannot sign: {exc}") from None

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        try:
            return await super().secure_outbound(BufferedRawConnection(conn), peer_id)
        except SignerUnavailable as exc:
            raise HandshakeFailure(f"our identity key cannot sign: {exc}") from None


class BufferedTLSTransport(TLSTransport):
    """py-libp2p's TLS 1.3 transport over a :class:`BufferedRawConnection` (its certificate is
    signed once, when the host is built)."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return await super().secure_inbound(BufferedRawConnection(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return await super().secure_outbound(BufferedRawConnection(conn), peer_id)


# ---------------------------------------------------------------------------- 7. debug formatting


class QuietYamux(yamux_module.Yamux):
    """Yamux without debug strings formatted on its per-frame and per-read paths.

    Upstream defect (``libp2p/stream_muxer/yamux/yamux.py``): ``Yamux._write_frame`` unpacks
    every frame's header and builds an f-string describing it for ``logger.debug``, and
    ``Yamux.read_stream`` builds three, all evaluated before ``logger.debug`` can find that
    debug logging is off (f-strings are eager; ``%``-style arguments are not). The fix drops
    those messages (``read_stream`` is otherwise 0.8.1's, line for line); upstream it is
    ``logger.debug("...%s", ...)`` or an ``isEnabledFor`` guard. Installed by :func:`apply`,
    which replaces the module global ``libp2p.stream_muxer.muxer_multistream.Yamux``:
    ``MuxerMultistream.new_conn`` constructs yamux connections by that name, ignoring the
    class given in ``new_host(muxer_opt=...)`` (an upstream defect of its own).

    Left as is: ``Yamux.handle_incoming`` formats five such strings per frame received
    (~1.6 us per frame measured, against ~380 us to process a full frame at 170 MB/s); it is
    a 450-line method and a copy of it here would cost more in upkeep than it saves.
    """

    async def _write_frame(self, data: bytes) -> None:
        async with self._write_lock:
            await self.secured_conn.write(data)
        await trio.lowlevel.checkpoint()

    async def read_stream(self, stream_id: int, n: int = -1) -> bytes:
        if n is None:
            n = -1
        while True:
            async with self.streams_lock:
                if stream_id not in self.streams:
                    raise MuxedStreamEOF("Stream closed")
                if self.event_shutting_down.is_set():
                    raise MuxedStreamEOF("Connection shut down")
                stream = self.streams[stream_id]
                buffer = self.stream_buffers.get(stream_id)
                if buffer is None:
                    if stream.reset_received:
                        raise MuxedStreamReset("Stream was reset")
                    raise MuxedStreamEOF("Stream buffer closed")
                if stream.recv_closed and buffer and len(buffer) > 0:
                    return self._take(stream, buffer, n)
                if stream.reset_received:
                    raise MuxedStreamReset("Stream was reset")
                if buffer and len(buffer) > 0:
                    return self._take(stream, buffer, n)
                if stream.recv_closed:
                    raise MuxedStreamEOF("Stream is closed for receiving")
                if stream.closed:
                    raise MuxedStreamReset("Stream is reset or closed")
            try:
                await self.stream_events[stream_id].wait()
                self.stream_events[stream_id] = trio.Event()
            except KeyError:
                raise MuxedStreamEOF("Stream was removed") from None

    def _take(self, stream: yamux_module.YamuxStream, buffer: bytearray, n: int) -> bytes:
        # Caller holds streams_lock (as in 0.8.1's read_stream, where this was inline twice).
        if n == -1 or n >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:n])
            del buffer[:n]
        if stream.closed:
            # Buffer fully drained on a fully-closed stream: reclaim the bookkeeping now.
            self._finalize_stream_locked(stream, fully_closed=True)
        return data


class QuietNoiseTransportReadWriter(NoiseTransportReadWriter):
    """Noise transport messages read without three f-strings each.

    Upstream defect (``libp2p/security/noise/io.py``, ``BaseNoiseMsgReadWriter.read_msg``):
    three eager f-strings for ``logger.debug`` per message received. Installed by
    :func:`apply`, which replaces the module global
    ``libp2p.security.noise.patterns.NoiseTransportReadWriter`` (what the XX handshake
    hands the session once it is done).
    """

    async def read_msg(self, prefix_encoded: bool = False) -> bytes:
        encrypted = await self.read_writer.read_msg()
        if prefix_encoded:
            encrypted = encrypted[len(self.prefix):]
        return self.decrypt(encrypted)


# ---------------------------------------------------------------------------- installation

_applied = False


def apply() -> None:
    """Install the process-wide fixes (those the library reaches through module globals).
    Idempotent. The per-host ones are wired by ``overlay.host.build_host``.

    Raises:
        Libp2pVersionError: py-libp2p is not ``PINNED_LIBP2P_VERSION``.
    """
    global _applied
    if _applied:
        return
    check_version()
    libp2p.Swarm = FastDialSwarm  # type: ignore[attr-defined]  # what new_swarm() instantiates
    yamux_module.YamuxStream = NoiseSizedYamuxStream  # type: ignore[misc]  # what Yamux instantiates
    noise_patterns.NoiseTransportReadWriter = QuietNoiseTransportReadWriter  # type: ignore[attr-defined]
    muxer_multistream.Yamux = QuietYamux  # type: ignore[attr-defined]  # what new_conn builds
    tls_io.TLSStreamReadWriter = BulkTLSStreamReadWriter  # type: ignore[misc]  # TLSReadWriter's
    _applied = True


def applied() -> bool:
    return _applied


def fix_host(host: IHost) -> None:
    """Wire the per-host fixes into ``host`` (built by ``libp2p.new_host``): pipelined
    multistream-select for its streams and for the security and muxer negotiations of its
    connections."""
    host.multiselect_client = PipelinedMultiselectClient()  # type: ignore[attr-defined]
    upgrader: Any = host.get_network().upgrader  # type: ignore[attr-defined]
    for negotiation in (upgrader.security_multistream, upgrader.muxer_multistream):
        negotiation._selector.multiselect_client = PipelinedMultiselectClient()


__all__ = [
    "PINNED_LIBP2P_VERSION",
    "BufferedNoiseTransport",
    "BufferedRawConnection",
    "BufferedTLSTransport",
    "BulkTLSStreamReadWriter",
    "EventYamuxStream",
    "FastDialSwarm",
    "FixedYamuxStream",
    "Libp2pVersionError",
    "NoiseSizedYamuxStream",
    "PipelinedMultiselectClient",
    "QuietNoiseTransportReadWriter",
    "QuietYamux",
    "applied",
    "apply",
    "check_version",
    "fix_host",
]
