"""overlay/libp2p_fixes.py: one test per fix, each asserting a count (never a duration) that
the unpatched py-libp2p 0.8.1 gets wrong, on real hosts over loopback; the version check.

The wire-compatibility test against an unpatched host in a subprocess is
tests/overlay/test_libp2p_interop.py.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.security.noise import io as noise_io
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.utils.varint import encode_delim

from overlay import libp2p_fixes
from overlay.host import HostOptions, build_host
from tests.netutil import wait_until

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_TCP = "/ip4/127.0.0.1/tcp/0"


@contextlib.asynccontextmanager
async def running_host(*listen: str, security: str = "noise") -> AsyncIterator[IHost]:
    """A host from ``build_host`` (so with every fix), listening on ``listen``."""
    listen = listen or (LOOPBACK_TCP,)
    host = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=listen, security=security))
    async with host.run([multiaddr.Multiaddr(a) for a in listen]):
        yield host

@contextlib.asynccontextmanager
async def bulk_stream(handler: Any, *, security: str = "noise") -> AsyncIterator[tuple[IHost, IHost, Any]]:
    """Two hosts: ``a`` serves BULK_PROTOCOL with ``handler``; ``b`` connects and opens a
    stream to it. Yields (a, b, the stream)."""
    async with running_host(security=security) as a, running_host(security=security) as b:
        a.set_stream_handler(BULK_PROTOCOL, handler)
        await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
        yield a, b, await b.new_stream(a.get_id(), [BULK_PROTOCOL])



# ---------------------------------------------------------------------------- version check


def test_other_versions_are_refused_with_a_clear_message():
    libp2p_fixes.check_version(libp2p_fixes.PINNED_LIBP2P_VERSION)
    with pytest.raises(libp2p_fixes.Libp2pVersionError,
                       match=r"py-libp2p 0\.9\.0 is installed.*libp2p==0\.8\.1"):
        libp2p_fixes.check_version("0.9.0")


def test_node_cli_exits_1_on_another_libp2p_version(tmp_path):
    # The real CLI in a fresh interpreter that reports another installed py-libp2p version.
    code = (
        "import importlib.metadata as m, sys\n"
        "real = m.version\n"
        "m.version = lambda name: '0.9.0' if name == 'libp2p' else real(name)\n"
        "from node.cli import main\n"
        "sys.exit(main(['run', '--data-dir', sys.argv[1]]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "node")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stderr
    assert "py-libp2p 0.9.0 is installed" in proc.stderr and "libp2p==0.8.1" in proc.stderr


def test_apply_is_idempotent():
    libp2p_fixes.apply()
    libp2p_fixes.apply()
    assert libp2p_fixes.applied()


# ---------------------------------------------------------------------------- 1. dial delay


def _sink(total: int, done: trio.Event) -> Any:
    """A stream handler that reads ``total`` bytes 64 KiB at a time, then sets ``done``."""

    async def sink(stream: Any) -> None:
        received = 0
        while received < total:
            received += len(await stream.read(2**16))
        done.set()

    return sink


def _dead_tcp_addr() -> multiaddr.Multiaddr:
    """A loopback TCP address nothing listens on (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")


def _record_dials(swarm: Any) -> list[str]:
    """The addresses ``swarm`` dials from now on, in order (each dial still made)."""
    dialled: list[str] = []
    real_dial = swarm._dial_with_retry

    async def recording_dial(addr: Any, peer_id: Any, source: Any = None) -> Any:
        dialled.append(str(addr))
        return await real_dial(addr, peer_id, source)

    swarm._dial_with_retry = recording_dial
    return dialled


async def test_dial_returns_on_first_success_without_starting_the_fallback():
    """Unpatched, ``dial_peer`` waits out its 250 ms happy-eyeballs delay after the first
    address connected and then dials the second too. Patched, the first success ends the
    dial: the second address is never dialled and one connection comes back."""
    async with running_host() as a, running_host(LOOPBACK_TCP, "/ip4/127.0.0.1/tcp/0/ws") as b:
        info = info_from_p2p_addr(a.get_addrs()[0])
        # A second address of another transport class (websocket, ranked after TCP): the
        # happy-eyeballs fallback. Nothing listens there; only whether it is dialled matters.
        b.get_peerstore().add_addrs(info.peer_id, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/9/ws")], 3600)
        swarm: Any = b.get_network()
        dialled = _record_dials(swarm)
        await b.connect(info)
        assert dialled == [str(a.get_addrs()[0]).split("/p2p/")[0]]
        assert len(swarm.get_connections(info.peer_id)) == 1


async def test_a_peer_that_moved_is_dialled_at_its_new_address_first():
    """Fix 8. Unpatched, a peer with two TCP addresses is dialled at the first one stored
    only: a peer that moved is dialled at its old, dead address and never at the new one the
    caller just gave. Patched, the newest is dialled first and connects."""
    async with running_host() as a, running_host() as b:
        live = info_from_p2p_addr(a.get_addrs()[0])
        b.get_peerstore().add_addrs(live.peer_id, [_dead_tcp_addr()], 3600)  # saved, now dead
        dialled = _record_dials(b.get_network())
        await b.connect(live)
        assert dialled == [str(live.addrs[0])]
        assert len(b.get_network().get_connections(live.peer_id)) == 1


async def test_a_failed_dial_holds_back_that_address_not_the_peer():
    """Fix 8. Unpatched, once every dialled address of a peer failed, every dial to that
    peer is refused for 60 s, even at a new address. Patched, only the failed address is held
    back (doubling per failure), the new one connects, and a success forgets the failures."""
    from libp2p.network.exceptions import SwarmException
    from libp2p.peer.peerinfo import PeerInfo

    async with running_host() as a, running_host() as b:
        live = info_from_p2p_addr(a.get_addrs()[0])
        dead = _dead_tcp_addr()
        swarm: Any = b.get_network()
        dialled = _record_dials(swarm)
        with pytest.raises(SwarmException):
            await b.connect(PeerInfo(live.peer_id, [dead]))
        assert dialled == [str(dead)]
        failures = swarm.dial_failures
        assert failures[(str(live.peer_id), str(dead))][0] == 1
        # The dead address alone again: refused at once, without a dial.
        b.get_peerstore().clear_addrs(live.peer_id)
        with pytest.raises(SwarmException, match="backoff"):
            await b.connect(PeerInfo(live.peer_id, [dead]))
        assert dialled == [str(dead)]
        # The new address connects at once.
        await b.connect(live)
        assert dialled == [str(dead), str(live.addrs[0])]
        assert not [k for k in failures if k[0] == str(live.peer_id)]


def test_the_dial_backoff_doubles_per_failure_and_its_memory_is_bounded(monkeypatch):
    """Fix 8's bookkeeping, pure: the hold-back of an address doubles from DIAL_BACKOFF_S to
    DIAL_BACKOFF_MAX_S, and past MAX_DIAL_FAILURES_KEPT pairs the oldest are forgotten."""
    from libp2p.peer.id import ID

    swarm: Any = libp2p_fixes.FastDialSwarm.__new__(libp2p_fixes.FastDialSwarm)
    swarm.dial_failures = {}  # what __init__ sets, without a whole swarm
    now = [1000.0]
    monkeypatch.setattr(libp2p_fixes.time, "monotonic", lambda: now[0])
    pid = ID.from_base58("12D3KooWDX6Qnb6An4h7wds2nqy1HFfTiB1zRr7HcJAABa7keSoT")
    addr = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/9")
    holds = []
    for _ in range(9):
        swarm._dial_failed(pid, addr)
        holds.append(swarm.dial_failures[(str(pid), str(addr))][1] - now[0])
    assert holds == [min(libp2p_fixes.DIAL_BACKOFF_S * 2 ** i, libp2p_fixes.DIAL_BACKOFF_MAX_S)
                     for i in range(9)]
    assert swarm._held_back(pid, addr, now[0] + holds[-1] - 0.001)
    assert not swarm._held_back(pid, addr, now[0] + holds[-1])
    monkeypatch.setattr(libp2p_fixes, "MAX_DIAL_FAILURES_KEPT", 5)
    for port in range(20):
        swarm._dial_failed(pid, multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{1000 + port}"))
    kept = swarm.dial_failures
    assert len(kept) == 5 and (str(pid), "/ip4/127.0.0.1/tcp/1019") in kept
    swarm._dial_succeeded(pid)
    assert swarm.dial_failures == {}


# ---------------------------------------------------------------------------- 2. yamux window

BULK_PROTOCOL = TProtocol("/enclave-swarm/test-bulk/1.0.0")
YAMUX_HEADER = struct.Struct("!BBHII")  # version, type, flags, stream id, length


def spy_frames(muxed_conn: Any) -> list[tuple[int, int, int, int]]:
    """Record (type, flags, stream id, length) of every frame ``muxed_conn`` writes, then
    write it as before."""
    frames: list[tuple[int, int, int, int]] = []
    real_write = muxed_conn._write_frame

    async def recording_write(data: bytes) -> None:
        _, typ, flags, sid, length = YAMUX_HEADER.unpack(data[:YAMUX_HEADER.size])
        frames.append((typ, flags, sid, length))
        await real_write(data)

    muxed_conn._write_frame = recording_write
    return frames


async def test_yamux_sends_one_window_update_per_half_window():
    """A reader taking 4 KiB at a time: unpatched, one WINDOW_UPDATE per read (256 per MiB),
    each over-crediting by the read; patched, one per half window consumed (<= 8 per MiB at
    the 256 KiB initial window) and never more credit granted than the window."""
    total = 4 * 2**20
    done = trio.Event()
    seen: dict[str, Any] = {}

    async def sink(stream: Any) -> None:
        seen["frames"] = spy_frames(stream.muxed_conn)
        ys = seen["stream"] = stream.muxed_stream
        buffers = stream.muxed_conn.stream_buffers
        received = over_credit = 0
        while received < total:
            received += len(await stream.read(4096))
            # go-yamux's invariant: credit the peer holds + bytes buffered <= the window
            over_credit = max(over_credit, ys.recv_window + len(buffers.get(ys.stream_id, b""))
                              - ys.target_recv_window)
        seen["over_credit"] = over_credit
        done.set()

    async with bulk_stream(sink) as (_a, _b, stream):
        for _ in range(total // 2**16):
            await stream.write(b"\x5a" * 2**16)
        with trio.fail_after(60):
            await done.wait()
        ys = seen["stream"]
        updates = [length for typ, flags, sid, length in seen["frames"]
                   if typ == 1 and flags == 0 and sid == ys.stream_id]
        assert len(updates) <= 8 * total // 2**20, f"{len(updates)} window updates for {total} bytes"
        assert seen["over_credit"] == 0


# ---------------------------------------------------------------------------- 3. multistream

ECHO_PROTOCOL = TProtocol("/enclave-swarm/test-echo/1.0.0")


async def echo(stream: Any) -> None:
    await stream.write(await stream.read(1024))
    await stream.close()


async def test_multistream_select_sends_header_and_protocol_in_one_frame():
    """Unpatched, the dialer sends the multistream header, waits for the listener's, then
    sends the protocol: two frames, two round trips. Patched: one frame (the same bytes), one
    round trip; the stream works."""
    async with running_host() as a, running_host() as b:
        a.set_stream_handler(ECHO_PROTOCOL, echo)
        await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
        frames = spy_frames(b.get_network().get_connections(a.get_id())[0].muxed_conn)
        stream = await b.new_stream(a.get_id(), [ECHO_PROTOCOL])
        sid = stream.muxed_stream.stream_id
        sent = [length for typ, _flags, s, length in frames if typ == 0 and s == sid]
        assert sent == [len(encode_delim(b"/multistream/1.0.0") + encode_delim(ECHO_PROTOCOL.encode()))]
        await stream.write(b"ping")
        assert await stream.read(1024) == b"ping"


async def test_pipelined_select_falls_back_when_the_first_protocol_is_refused():
    async with running_host() as a, running_host() as b:
        a.set_stream_handler(ECHO_PROTOCOL, echo)
        await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
        net_stream = await b.get_network().new_stream(a.get_id())
        chosen = await libp2p_fixes.PipelinedMultiselectClient().select_one_of(
            [TProtocol("/no/such/1.0.0"), ECHO_PROTOCOL], MultiselectCommunicator(net_stream))
        assert chosen == ECHO_PROTOCOL
        await net_stream.write(b"ping")
        assert await net_stream.read(1024) == b"ping"
        refused = await b.get_network().new_stream(a.get_id())
        with pytest.raises(MultiselectClientError, match=r"not supported: tried \[./no/such/1.0.0.\]"):
            await libp2p_fixes.PipelinedMultiselectClient().select_one_of(
                [TProtocol("/no/such/1.0.0")], MultiselectCommunicator(refused))


# ---------------------------------------------------------------------------- 4. window wait


class SleepCounter:
    """Stands in for the ``trio`` module in the modules that hold yamux's writer, counting the
    ``trio.sleep`` calls made from a ``write`` method; everything else is trio's."""

    def __init__(self) -> None:
        self.writer_sleeps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)

    async def sleep(self, seconds: float) -> None:
        if sys._getframe(1).f_code.co_name == "write":
            self.writer_sleeps += 1
        await trio.sleep(seconds)


async def test_a_writer_with_an_empty_window_waits_without_polling(monkeypatch):
    """Unpatched, a writer whose send window is empty sleeps 10 ms and looks again, until
    the peer reads. Patched it sleeps on an event the window update sets: no sleep calls."""
    counter = SleepCounter()
    for module in (yamux_module, libp2p_fixes):
        monkeypatch.setattr(module, "trio", counter)
    total = 17 * 2**20
    reading = trio.Event()
    done = trio.Event()

    async def late_sink(stream: Any) -> None:
        await reading.wait()
        received = 0
        while received < total:
            received += len(await stream.read(2**16))
        done.set()

    async with bulk_stream(late_sink) as (_a, _b, stream):
        async with trio.open_nursery() as n:
            n.start_soon(stream.write, b"\x5a" * total)
            # The writer has used up the window the reader granted and is waiting. (More than
            # the 16 MiB maximum window: unpatched, the negotiation's one-byte reads grow it.)
            await wait_until(lambda: stream.muxed_stream.send_window == 0, 20, 0.005)
            reading.set()
        with trio.fail_after(30):
            await done.wait()
    assert counter.writer_sleeps == 0


async def test_a_writer_takes_no_lock_round_trips_per_frame():
    """Unpatched, every frame a writer sends takes the stream's rw_lock and window_lock (two
    trio checkpoints) to check and take send window. Patched: neither, for a whole 1 MiB."""
    total = 2**20
    done = trio.Event()

    sink = _sink(total, done)

    async with bulk_stream(sink) as (_a, _b, stream):
        ys = stream.muxed_stream
        taken = collections.Counter()
        real_write_lock, real_window_acquire = ys.rw_lock.acquire_write, ys.window_lock.acquire

        def by_the_writer() -> bool:  # not by Yamux.handle_incoming adding received credit
            frame = sys._getframe(2)
            while frame is not None and frame.f_code.co_name != "write":
                frame = frame.f_back
            return frame is not None

        async def counting_write_lock() -> None:
            taken["rw_lock"] += by_the_writer()
            await real_write_lock()

        async def counting_window_acquire() -> None:
            taken["window_lock"] += by_the_writer()
            await real_window_acquire()

        ys.rw_lock.acquire_write = counting_write_lock
        ys.window_lock.acquire = counting_window_acquire
        await stream.write(b"\x5a" * total)
        with trio.fail_after(60):
            await done.wait()
        assert +taken == {}


# ---------------------------------------------------------------------------- 5. frame size


async def test_a_full_yamux_frame_is_one_noise_message():
    """Unpatched, a full yamux frame (65,536 bytes with its header) is two Noise messages
    (65,519 + 17). Patched, frames hold at most 65,507 payload bytes: one message each."""
    total = 4 * 2**20
    done = trio.Event()

    sink = _sink(total, done)

    async with bulk_stream(sink) as (_a, _b, stream):
        muxed = stream.muxed_conn
        frames = spy_frames(muxed)
        noise = muxed.secured_conn.conn  # libp2p/security/noise/io.py NoiseTransportReadWriter
        sizes: list[int] = []
        real_encrypt = noise.encrypt

        def counting_encrypt(data: bytes) -> bytes:
            sizes.append(len(data))
            return real_encrypt(data)

        noise.encrypt = counting_encrypt
        await stream.write(b"\x5a" * total)
        with trio.fail_after(60):
            await done.wait()
        data_frames = [length for typ, _flags, sid, length in frames
                       if typ == 0 and sid == stream.muxed_stream.stream_id]
        assert sum(data_frames) == total
        # Each frame (12-byte header + payload) went out as one Noise message of its own size.
        # (Other frames, e.g. a window update begun before the spies, may interleave.)
        whole = collections.Counter(sizes)
        whole.subtract(length + 12 for length in data_frames)
        assert min(whole.values()) >= 0, f"{len(sizes)} Noise messages for {len(data_frames)} frames"
        assert max(sizes) <= 65519


# ---------------------------------------------------------------------------- 6. buffered reads


def count_socket_reads(muxed_conn: Any) -> list[int]:
    """Record the size of every read the connection makes of its TCP socket from now on
    (``libp2p/io/trio.py`` TrioTCPStream.read, one ``receive_some`` each; a read already
    waiting when this is called is not seen)."""
    secure_rw = muxed_conn.secured_conn.conn
    raw = (secure_rw.read_writer.read_write_closer if hasattr(secure_rw, "read_writer")
           else secure_rw.stream_writer.raw_connection)  # Noise | TLS
    raw = getattr(raw, "_conn", raw)  # under our BufferedRawConnection, the RawConnection
    tcp = raw.stream
    reads: list[int] = []
    real_read = tcp.read

    async def counting_read(n: int | None = None) -> bytes:
        data = await real_read(n)
        reads.append(len(data))
        return data

    tcp.read = counting_read
    return reads


async def test_noise_reads_each_message_without_two_socket_reads():
    """Unpatched, every Noise message costs two socket reads (its 2-byte length, then its
    body). Patched, one read takes whatever has arrived: at most one read per message."""
    count = 500
    done = trio.Event()

    async def sink(stream: Any) -> None:
        received = 0
        while received < count * 100:
            received += len(await stream.read(2**16))
        done.set()

    async with bulk_stream(sink) as (a, b, stream):
        muxed = a.get_network().get_connections(b.get_id())[0].muxed_conn
        reads = count_socket_reads(muxed)
        noise = muxed.secured_conn.conn
        messages = 0
        real_decrypt = noise.decrypt

        def counting_decrypt(data: bytes) -> bytes:
            nonlocal messages
            messages += 1
            return real_decrypt(data)

        noise.decrypt = counting_decrypt
        for _ in range(count):  # 500 small frames: 500 Noise messages
            await stream.write(b"\x5a" * 100)
        with trio.fail_after(60):
            await done.wait()
        assert messages >= count
        assert len(reads) <= messages, f"{len(reads)} socket reads for {messages} Noise messages"


async def test_tls_reads_the_socket_in_large_chunks():
    """Unpatched, TLS reads its socket 4 KiB at a time: >= 1,024 reads for 4 MiB. Patched,
    128 KiB at a time: one read takes whatever has arrived."""
    total = 4 * 2**20
    done = trio.Event()

    sink = _sink(total, done)

    async with bulk_stream(sink, security="tls") as (a, b, stream):
        reads = count_socket_reads(a.get_network().get_connections(b.get_id())[0].muxed_conn)
        await stream.write(b"\x5a" * total)
        with trio.fail_after(60):
            await done.wait()
        assert len(reads) <= total // 8192, f"{len(reads)} socket reads for {total} bytes"


# ---------------------------------------------------------------------------- 7. debug formatting


class DebugCallCounter:
    """Stands in for a module's logger, counting the ``debug`` calls that come with a
    ready-made message (no ``%`` arguments: formatted by the caller whether or not debug is
    on), by calling function; everything else is the real logger's."""

    def __init__(self, real: logging.Logger) -> None:
        self._real = real
        self.eager: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not args:
            self.eager[sys._getframe(1).f_code.co_name] += 1
        self._real.debug(msg, *args, **kwargs)


async def test_hot_paths_format_no_debug_strings_with_debug_off(monkeypatch):
    """With debug logging off, unpatched py-libp2p formats a debug string for every yamux
    frame written (``Yamux._write_frame``), three per stream read (``Yamux.read_stream``)
    and three per Noise message received (``read_msg``). Patched: none on those paths.
    (``Yamux.handle_incoming`` still formats its own: see ``QuietYamux``.)"""
    assert not logging.getLogger("libp2p").isEnabledFor(logging.DEBUG)
    counters = {}
    for module in (yamux_module, noise_io):
        counters[module.__name__] = counter = DebugCallCounter(module.logger)
        monkeypatch.setattr(module, "logger", counter)
    total = 2**20
    done = trio.Event()

    async def sink(stream: Any) -> None:
        received = 0
        while received < total:
            received += len(await stream.read(4096))
        done.set()

    async with bulk_stream(sink) as (_a, _b, stream):
        for c in counters.values():
            c.eager.clear()  # count the transfer, not the handshakes (read_msg of Noise XX)
        for _ in range(total // 2**14):
            await stream.write(b"\x5a" * 2**14)
        with trio.fail_after(60):
            await done.wait()
    hot = {"_write_frame", "read_stream", "read_msg", "write", "read"}
    eager = {f"{module}.{fn}": n for module, c in counters.items() for fn, n in c.eager.items()
             if fn in hot}
    assert eager == {}


async def test_tls_returns_every_record_already_decrypted():
    """Unpatched, a TLS read returns one record (<= 16 KiB): >= 256 reads through the
    secure session for 4 MiB. Patched, a read returns all the complete records at hand."""
    total = 4 * 2**20
    done = trio.Event()

    sink = _sink(total, done)

    async with bulk_stream(sink, security="tls") as (a, b, stream):
        tls = a.get_network().get_connections(b.get_id())[0].muxed_conn.secured_conn.conn
        sizes: list[int] = []
        real_read = tls.stream_writer.read  # libp2p/security/tls/io.py TLSStreamReadWriter

        async def counting_read(n: int | None = None) -> bytes:
            data = await real_read(n)
            sizes.append(len(data))
            return data

        tls.stream_writer.read = counting_read
        await stream.write(b"\x5a" * total)
        with trio.fail_after(60):
            await done.wait()
        assert len(sizes) <= total // 32768, f"{len(sizes)} TLS reads for {total} bytes"
