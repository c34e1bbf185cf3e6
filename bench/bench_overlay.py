"""Overlay benchmarks, each against a baseline measured in the same run.

1. Connection set-up, timed until the connection is usable on both sides, not until
   py-libp2p's ``connect`` returns: unpatched, ``connect`` waits its 250 ms happy-eyeballs
   "dial delay" (``libp2p/network/swarm.py``; overlay/libp2p_fixes.py ends it at the first
   success), inside which the attestation exchange hid. Baseline: a
   plain py-libp2p connection (Noise + yamux) established on both sides; ours: the same plus
   the mutual attestation (both sides hold the other as attested). The two arms alternate,
   round by round. Goal: attested <= 1.5x plain.
2. The attestation exchange on its own: on one open connection between two attested nodes,
   one verifier-side exchange (``Agent.attest_peer``: new stream, challenge, evidence from the
   simulated TEE, verdict, result) against one plain request/response round trip on the same
   connection (``Agent.ping``: new stream, 32 bytes each way), alternating.
3. Stream throughput: a raw py-libp2p stream vs the same bytes through our overlay path
   (attestation gate, length-prefixed frames, FrameReader), three of each, alternating.
   Goal: overlay >= 0.9x raw.
4. Memory: RSS of a node process before and after 50 attested peers connect; memory per
   connection.

The wire-speed parts (issue 12, overlay/libp2p_fixes.py): each prints the patched figure,
a baseline measured in the same run, and the unpatched py-libp2p figure, measured by this
module in a subprocess (``--arm unpatched``) whose ``build_host`` installs none of the fixes.

5. handshake: from the dial until ``connect`` has returned and both agents hold each other
   as attested; baseline: a TCP connect + TLS 1.3 handshake (mutual, Python's ``ssl``, an
   ECDSA P-256 certificate) until both sides completed it. Goal: <= 30 ms median.
6. streams: ``new_stream`` (open + multistream-select) on an idle connection and on one
   carrying a bulk transfer on another stream, 200 of each; p99. Goals: <= 5 ms idle,
   <= 50 ms busy.
7. wirespeed: one stream, 32 MiB in 256 KiB writes, Noise and TLS; baseline: a trio TCP
   socket carrying TLS 1.3 (Python's ``ssl``), the same writes. Goal: >= 0.5x.

8. formation: N node processes started as an operator starts them (``enclave-swarm init``,
   then ``run``: the first, then the N - 1 others at once with ``--bootstrap`` to it), timed
   from the last start until every node's ``status`` shows every other node attested, for 3
   and 30 processes; also from the last node's "listening" line (30 processes on 2 cores spend
   most of the first span starting Python). Arms: the join path (``network.join_exchange``,
   the default) and without it (periodic peer exchange only). Baseline: one pair's connect +
   mutual attestation (the ``connect`` part's second arm, in process), the floor.
   Goals: 3 nodes within 3 s of the last start, 30 within 10 s.

    python -m bench overlay            # or: make bench
    python -m bench.bench_overlay --rounds 5 --only connect,exchange   # a quick look
    python -m bench.bench_overlay --only handshake,streams,wirespeed   # the wire-speed parts
    python -m bench.bench_overlay --only formation --sizes 3,30          # formation
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.config import NodeConfig
from overlay.framing import FrameReader, frame
from overlay.host import HostOptions, build_host

ROUNDS = 15
PAYLOAD_MB = 32
CHUNK = 64 * 1024
PEERS_FOR_RSS = 50
POLL_S = 0.0005  # both connect arms poll their condition at this step
WIRE_PARTS = ("handshake", "streams", "wirespeed")
PARTS = ("connect", "exchange", "throughput", "memory", *WIRE_PARTS, "formation")
STREAM_OPENS = 200
WIRE_MB = 32
WRITE = 256 * 1024
WIRE_ROUNDS = 3
FORMATION_SIZES = (3, 30)
FORMATION_TIMEOUT_S = 120.0
FORMATION_PROFILE = "lan"  # see _formation_s: local_test's 1-2 s intervals swamp 30 processes
OPEN_PROTOCOL = TProtocol("/enclave-swarm/bench-open/1.0.0")
BULK_PROTOCOL = TProtocol("/enclave-swarm/bench-bulk/1.0.0")


def _quiet_config(security: str = "noise") -> NodeConfig:
    """``node.testing.local_config`` without background traffic during a measurement: no
    ping, peer exchange or periodic re-attestation inside a round."""
    from node.testing import local_config

    cfg = local_config()
    return dataclasses.replace(
        cfg, network=dataclasses.replace(cfg.network, ping_interval_s=3600.0,
                                         peer_exchange_interval_s=3600.0, security=security),
        attestation=dataclasses.replace(cfg.attestation, reattest_interval_s=3600.0))


async def _plain_connect_s() -> tuple[float, float]:
    """(until both sides hold the connection, until ``connect`` returns) for two bare hosts."""
    la = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    h1 = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
    h2 = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
    returned: list[float] = []
    async with h1.run(la), h2.run(la), trio.open_nursery() as n:
        info = info_from_p2p_addr(h1.get_addrs()[0])

        async def dial() -> None:
            await h2.connect(info)
            returned.append(time.perf_counter() - t)

        t = time.perf_counter()
        n.start_soon(dial)
        while not (h2.get_network().connections.get(h1.get_id())
                   and h1.get_network().connections.get(h2.get_id())):
            await trio.sleep(POLL_S)
        established = time.perf_counter() - t
        while not returned:
            await trio.sleep(POLL_S)
    return established, returned[0]


async def attested_connect_s(tmp: Path, i: int, keys: tuple[Any, Any] = (None, None)) -> float:
    """Until both agents hold the other as attested, from the start of the dial. ``keys``: the
    two nodes' key providers (node/keys; None: file keys), for bench_keys."""
    from node.testing import make_agent

    cfg = _quiet_config()
    a = make_agent(tmp, f"a{i}", config=cfg, keys=keys[0])
    b = make_agent(tmp, f"b{i}", config=cfg, keys=keys[1])
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        info = info_from_p2p_addr(multiaddr.Multiaddr(a.full_addrs()[0]))
        t = time.perf_counter()
        n.start_soon(b.host.connect, info)
        while not (a.peers.is_attested(b.peer_id) and b.peers.is_attested(a.peer_id)):
            await trio.sleep(POLL_S)
        dt = time.perf_counter() - t
        a.stop()
        b.stop()
    return dt


async def _exchange_vs_ping(tmp: Path, rounds: int) -> tuple[list[float], list[float]]:
    """On one connection between two attested agents: ``rounds`` attestation exchanges and
    ``rounds`` ping round trips, alternating; seconds each."""
    from node.testing import fully_attested, make_agent, wait_until

    cfg = _quiet_config()
    a, b = make_agent(tmp, "xa", config=cfg), make_agent(tmp, "xb", config=cfg)
    attest, ping = [], []
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        await b.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.full_addrs()[0])))
        await wait_until(lambda: fully_attested([a, b]), 30, 0.01)
        a_id = ID.from_base58(a.peer_id)
        await b.attest_peer(a_id)  # warm-up: the verifier's chain cache, the thread pool
        await b.ping(a.peer_id)
        for _ in range(rounds):
            t = time.perf_counter()
            await b.attest_peer(a_id)
            attest.append(time.perf_counter() - t)
            t = time.perf_counter()
            await b.ping(a.peer_id)
            ping.append(time.perf_counter() - t)
        if not b.peers.is_attested(a.peer_id):
            raise RuntimeError("the exchange did not keep the peer attested")
        a.stop()
        b.stop()
    return attest, ping


async def _throughput(overlay: bool, tmp: Path) -> float:
    """MB/s of PAYLOAD_MB sent from b to a on one stream."""
    from node.testing import fully_attested, make_agent

    a, b = make_agent(tmp, "ta"), make_agent(tmp, "tb")
    done = trio.Event()
    received = 0
    proto = TProtocol("/enclave-swarm/bench/1.0.0")

    async def raw_sink(stream):  # type: ignore[no-untyped-def]
        nonlocal received
        while received < PAYLOAD_MB * 2**20:
            data = await stream.read(CHUNK)
            if not data:
                break
            received += len(data)
        done.set()

    async def framed_sink(stream, pid):  # type: ignore[no-untyped-def]
        nonlocal received
        reader = FrameReader(stream)
        while received < PAYLOAD_MB * 2**20:
            received += len(await reader.read_frame(CHUNK + 16))
        done.set()

    if overlay:
        a.set_handler(proto, framed_sink)
    else:
        a.host.set_stream_handler(proto, raw_sink)
    chunk = b"\xab" * CHUNK
    wire = frame(chunk) if overlay else chunk
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        await b.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.full_addrs()[0])))
        while not fully_attested([a, b]):
            await trio.sleep(0.01)
        stream = await b.host.new_stream(a.host.get_id(), [proto])
        t = time.perf_counter()
        for _ in range(PAYLOAD_MB * 2**20 // CHUNK):
            await stream.write(wire)
        await done.wait()
        dt = time.perf_counter() - t
        a.stop()
        b.stop()
    return PAYLOAD_MB / dt


# ---------------------------------------------------------------------------- wire speed


def _without_libp2p_fixes() -> None:
    """The unpatched arm: ``build_host`` as it was before overlay/libp2p_fixes.py, in this
    process only (it runs in a subprocess of the benchmark)."""
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.security.tls.transport import TLSTransport

    import overlay.host

    overlay.host.libp2p_fixes = types.SimpleNamespace(  # type: ignore[attr-defined,assignment]
        apply=lambda: None, fix_host=lambda host: None,
        BufferedNoiseTransport=NoiseTransport, BufferedTLSTransport=TLSTransport)


def _tls_contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS 1.3 contexts, each authenticating the other with one self-signed
    ECDSA P-256 certificate (libp2p's TLS is mutual too)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "bench-tls.crt", tmp / "bench-tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    contexts = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert_path, key_path)
        ctx.load_verify_locations(cert_path)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        contexts.append(ctx)
    return contexts[0], contexts[1]


async def _tls_pair(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
                    nursery: trio.Nursery) -> tuple[trio.SSLStream, trio.SSLStream, float]:
    """A loopback TCP connection carrying TLS 1.3, handshaken on both sides: (server,
    client, seconds from the TCP connect to both handshakes done)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server: list[trio.SSLStream] = []
    done = trio.Event()

    async def accept() -> None:
        s = trio.SSLStream(await listeners[0].accept(), server_ctx, server_side=True)
        await s.do_handshake()
        server.append(s)
        done.set()

    nursery.start_soon(accept)
    t = time.perf_counter()
    client = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), client_ctx,
                            server_hostname="bench")
    await client.do_handshake()
    await done.wait()
    dt = time.perf_counter() - t
    await listeners[0].aclose()
    return server[0], client, dt


async def _tls_handshake_s(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> float:
    async with trio.open_nursery() as n:
        server, client, dt = await _tls_pair(server_ctx, client_ctx, n)
        await client.aclose()
        await server.aclose()
    return dt


async def _tls_socket_mb_s(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> float:
    """MB/s of WIRE_MB in WRITE-byte writes over one TLS 1.3 connection."""
    total = WIRE_MB * 2**20
    async with trio.open_nursery() as n:
        server, client, _ = await _tls_pair(server_ctx, client_ctx, n)
        done = trio.Event()

        async def sink() -> None:
            received = 0
            while received < total:
                received += len(await server.receive_some(WRITE))
            done.set()

        n.start_soon(sink)
        chunk = b"\xab" * WRITE
        t = time.perf_counter()
        for _ in range(total // WRITE):
            await client.send_all(chunk)
        await done.wait()
        dt = time.perf_counter() - t
        await client.aclose()
        await server.aclose()
    return WIRE_MB / dt


async def _attested_usable_s(tmp: Path, i: int, security: str = "noise") -> float:
    """From the dial until ``connect`` has returned and both agents hold the other as
    attested: when the dialler can use the connection."""
    from node.testing import make_agent

    cfg = _quiet_config(security)
    a, b = (make_agent(tmp, f"h{side}{security}{i}", config=cfg) for side in "ab")
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        info = info_from_p2p_addr(multiaddr.Multiaddr(a.full_addrs()[0]))
        returned = trio.Event()

        async def dial() -> None:
            await b.host.connect(info)
            returned.set()

        t = time.perf_counter()
        n.start_soon(dial)
        while not (returned.is_set() and a.peers.is_attested(b.peer_id)
                   and b.peers.is_attested(a.peer_id)):
            await trio.sleep(POLL_S)
        dt = time.perf_counter() - t
        a.stop()
        b.stop()
    return dt


async def _stream_opens_s(busy: bool) -> list[float]:
    """Seconds per ``new_stream`` (open + multistream-select), STREAM_OPENS of them, on a
    connection that is idle or carries a bulk transfer on another stream."""
    la = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    h1 = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
    h2 = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
    received = 0

    async def close_at_once(stream):  # type: ignore[no-untyped-def]
        await stream.close()

    async def drain(stream):  # type: ignore[no-untyped-def]
        nonlocal received
        while True:
            data = await stream.read(WRITE)
            if not data:
                return
            received += len(data)

    h1.set_stream_handler(OPEN_PROTOCOL, close_at_once)
    h1.set_stream_handler(BULK_PROTOCOL, drain)
    opens: list[float] = []
    async with h1.run(la), h2.run(la), trio.open_nursery() as n:
        await h2.connect(info_from_p2p_addr(h1.get_addrs()[0]))
        if busy:
            bulk = await h2.new_stream(h1.get_id(), [BULK_PROTOCOL])

            async def pump() -> None:
                chunk = b"\xab" * WRITE
                while True:
                    await bulk.write(chunk)

            n.start_soon(pump)
            while received < 8 * 2**20:  # the transfer is under way, its window grown
                await trio.sleep(POLL_S)
        for _ in range(STREAM_OPENS):
            t = time.perf_counter()
            stream = await h2.new_stream(h1.get_id(), [OPEN_PROTOCOL])
            opens.append(time.perf_counter() - t)
            await stream.close()
        n.cancel_scope.cancel()
    return opens


async def _libp2p_mb_s(security: str) -> float:
    """MB/s of WIRE_MB in WRITE-byte writes over one libp2p stream (raw, no overlay framing)."""
    la = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    opts = HostOptions(listen=("/ip4/127.0.0.1/tcp/0",), security=security)
    h1 = build_host(Ed25519PrivateKey.generate(), opts)
    h2 = build_host(Ed25519PrivateKey.generate(), opts)
    total = WIRE_MB * 2**20
    done = trio.Event()

    async def sink(stream):  # type: ignore[no-untyped-def]
        received = 0
        while received < total:
            received += len(await stream.read(WRITE))
        done.set()

    h1.set_stream_handler(BULK_PROTOCOL, sink)
    async with h1.run(la), h2.run(la):
        await h2.connect(info_from_p2p_addr(h1.get_addrs()[0]))
        stream = await h2.new_stream(h1.get_id(), [BULK_PROTOCOL])
        chunk = b"\xab" * WRITE
        t = time.perf_counter()
        for _ in range(total // WRITE):
            await stream.write(chunk)
        await done.wait()
        dt = time.perf_counter() - t
    return WIRE_MB / dt


def _p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))]


def _wire_arm(parts: set[str], rounds: int, tmp: Path, baseline: bool) -> dict[str, Any]:
    """Raw figures of the wire-speed parts in this process (seconds, MB/s); with the
    baselines when ``baseline``, alternating round by round with the libp2p arm."""
    out: dict[str, Any] = {}
    ctxs = _tls_contexts(tmp) if baseline else None
    if "handshake" in parts:
        out["handshake"], out["handshake_tls"], out["tls_handshake"] = [], [], []
        for i in range(rounds):
            if ctxs:
                out["tls_handshake"].append(trio.run(_tls_handshake_s, *ctxs))
            out["handshake"].append(trio.run(_attested_usable_s, tmp, i))
            out["handshake_tls"].append(trio.run(_attested_usable_s, tmp, i, "tls"))
    if "streams" in parts:
        out["open_idle"] = trio.run(_stream_opens_s, False)
        out["open_busy"] = trio.run(_stream_opens_s, True)
    if "wirespeed" in parts:
        for key in ("noise", "tls", "tls_socket"):
            out[key] = []
        for _ in range(WIRE_ROUNDS):
            if ctxs:
                out["tls_socket"].append(trio.run(_tls_socket_mb_s, *ctxs))
            out["noise"].append(trio.run(_libp2p_mb_s, "noise"))
            out["tls"].append(trio.run(_libp2p_mb_s, "tls"))
    return out


def _unpatched_arm(parts: set[str], rounds: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_overlay", "--arm", "unpatched", "--rounds",
           str(rounds), "--only", ",".join(sorted(parts))]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _print_wire(parts: set[str], ours: dict[str, Any], plain: dict[str, Any]) -> None:
    med = statistics.median
    if "handshake" in parts:
        o, u, t = med(ours["handshake"]), med(plain["handshake"]), med(ours["tls_handshake"])
        print(f"handshake, {len(ours['handshake'])} rounds: connect + mutual attestation, usable "
              f"by the dialler: patched {_ms(ours['handshake'])}; unpatched py-libp2p "
              f"{_ms(plain['handshake'])}; TCP + TLS 1.3 handshake (Python ssl) "
              f"{_ms(ours['tls_handshake'])}; patched {o / t:.1f}x TLS, unpatched {u / t:.1f}x "
              f"(goal <= 30 ms: {'met' if o <= 0.030 else 'not met'})")
        o2, u2 = med(ours["handshake_tls"]), med(plain["handshake_tls"])
        print(f"handshake over libp2p TLS 1.3 instead of Noise, {len(ours['handshake_tls'])} rounds: "
              f"patched {_ms(ours['handshake_tls'])}; unpatched {_ms(plain['handshake_tls'])}; "
              f"patched TLS / patched Noise {o2 / o:.2f}x, unpatched {u2 / u:.2f}x")
    if "streams" in parts:
        for key, goal in (("open_idle", 0.005), ("open_busy", 0.050)):
            o, u = _p99(ours[key]), _p99(plain[key])
            print(f"stream open, {key.removeprefix('open_')} connection, {len(ours[key])} opens: "
                  f"patched p99 {o * 1000:.1f} ms (median {med(ours[key]) * 1000:.2f}); unpatched "
                  f"p99 {u * 1000:.1f} ms (median {med(plain[key]) * 1000:.2f}); "
                  f"goal p99 <= {goal * 1000:.0f} ms: {'met' if o <= goal else 'not met'}")
    if "wirespeed" in parts:
        base = med(ours["tls_socket"])
        for key in ("noise", "tls"):
            o, u = med(ours[key]), med(plain[key])
            print(f"throughput, {key} stream, {WIRE_MB} MiB in {WRITE // 1024} KiB writes x "
                  f"{WIRE_ROUNDS}: patched {o:.1f} MB/s ({', '.join(f'{x:.1f}' for x in ours[key])}), "
                  f"unpatched {u:.1f} MB/s ({', '.join(f'{x:.1f}' for x in plain[key])}); "
                  f"TLS 1.3 socket {base:.1f} MB/s ({', '.join(f'{x:.1f}' for x in ours['tls_socket'])}); "
                  f"patched {o / base:.2f}x, unpatched {u / base:.2f}x (goal >= 0.5x)")


def _init_nodes(dirs: list[Path], *, join_exchange: bool) -> None:
    """``enclave-swarm init --profile lan`` in each dir at once; the join path on or off in
    config.toml, as an operator would set it."""
    procs = [subprocess.Popen([sys.executable, "-m", "node.cli", "init", "--data-dir", str(d),
                               "--profile", FORMATION_PROFILE], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for d in dirs]
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"init failed: {err.decode(errors='replace')}")
    if not join_exchange:
        for d in dirs:
            cfg = d / "config.toml"
            text = cfg.read_text()
            if "join_exchange = true" not in text:
                raise RuntimeError(f"{cfg}: no join_exchange setting to switch off")
            cfg.write_text(text.replace("join_exchange = true", "join_exchange = false"))


def _formation_s(tmp: Path, n: int, *, join_exchange: bool,
                 timeout_s: float = FORMATION_TIMEOUT_S) -> dict[str, Any]:
    """Start ``n`` node processes (the first, then the rest at once bootstrapping from it) and
    time until each one's status shows all the others attested.

    Profile ``lan`` with the simulated TEE admitted (``--insecure-simulated-tee``, loopback,
    no mDNS): its intervals are the ones a federation runs with. ``local_test``'s (ping every
    1 s, re-attestation every 2 s, peer exchange every 1 s) cost 30 processes on 2 cores more
    CPU than they have: loops stall, re-attestations time out, and peers are quarantined and
    cut faster than they form (measured: no formation within 120 s, load 25)."""
    from node.demo import NodeProcess, all_mutually_attested

    dirs = [tmp / f"n{n}-{'join' if join_exchange else 'periodic'}-{i}" for i in range(n)]
    _init_nodes(dirs, join_exchange=join_exchange)
    extra = ["--insecure-simulated-tee", "--no-mdns", "--log-level", "warning"]
    nodes = [NodeProcess(dirs[0], extra=extra)]
    try:
        boot = nodes[0].wait_listening(60)[0]
        for d in dirs[1:]:
            nodes.append(NodeProcess(d, bootstrap=[boot], extra=extra))
        t0 = time.monotonic()
        for p in nodes[1:]:
            p.wait_listening(120)
        t_ready = time.monotonic()
        poll_s = 0.05 if n <= 5 else 0.5  # polling 30 control sockets is itself load
        formed = None
        statuses: list[Any] = []
        while time.monotonic() - t0 < timeout_s:
            statuses = [p.status() for p in nodes]
            if all_mutually_attested(statuses):
                formed = time.monotonic()
                break
            time.sleep(poll_s)
        # where the time went: every process's CPU (start-up included) and a few counters
        cpu = sum(_cpu_s(p.proc.pid) for p in nodes)
        counts: dict[str, int] = {}
        for st in statuses:
            for name in ("attest_missed", "quarantined", "dial_learned", "join_exchange",
                         "record_rejected"):
                counts[name] = counts.get(name, 0) + sum(((st or {}).get("counters") or {})
                                                         .get(name, {}).values())
        return {"n": n, "join": join_exchange, "startup_s": t_ready - t0, "timeout_s": timeout_s,
                "cpu_s": cpu, "counters": counts,
                "from_start_s": None if formed is None else formed - t0,
                "from_ready_s": None if formed is None else formed - t_ready, "poll_s": poll_s}
    finally:
        for p in nodes:
            p.signal(signal.SIGTERM)
        for p in nodes:
            p.wait(20)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print_formation(r: dict[str, Any], floor_s: float) -> None:
    arm = "join path" if r["join"] else "periodic peer exchange only (join_exchange = false)"
    if r["from_start_s"] is None:
        print(f"formation, {r['n']} processes, {arm}: not formed within {r['timeout_s']:.0f} s "
              f"of the last start (start-up {r['startup_s']:.1f} s)")
        return
    goal = 3.0 if r["n"] <= 3 else 10.0
    print(f"formation, {r['n']} processes, {arm}: {r['from_start_s']:.2f} s from the last start "
          f"(goal <= {goal:.0f} s), {r['from_ready_s']:.2f} s from the last 'listening' line "
          f"(start-up {r['startup_s']:.2f} s; polled every {r['poll_s'] * 1000:.0f} ms); "
          f"{r['from_ready_s'] / floor_s:.0f}x one pair's connect + mutual attestation")
    print(f"  where the time went: {r['cpu_s']:.1f} CPU-s in all {r['n']} processes (start-up "
          f"included); summed counters {r['counters']}")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _peers_for_rss(tmp: Path, boot: str, center_status) -> dict | None:  # type: ignore[no-untyped-def,type-arg]
    from node.testing import local_config, make_agent

    cfg = local_config()
    # The peers only talk to the centre: no peer exchange among themselves, slow re-attestation.
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(
        cfg.network, peer_exchange_interval_s=1e6, ping_interval_s=5.0),
        attestation=dataclasses.replace(cfg.attestation, reattest_interval_s=30.0))
    async with trio.open_nursery() as n:
        agents = []
        for i in range(PEERS_FOR_RSS):
            a = make_agent(tmp, f"p{i}", config=cfg, bootstrap=(boot,))
            await n.start(a.run)
            agents.append(a)
        deadline = trio.current_time() + 180
        while trio.current_time() < deadline:
            st = await trio.to_thread.run_sync(center_status)
            if st and st["attested_peers"] >= PEERS_FOR_RSS:
                break
            await trio.sleep(1)
        await trio.sleep(3)  # let buffers settle
        status = await trio.to_thread.run_sync(center_status)
        n.cancel_scope.cancel()
    return status  # type: ignore[no-any-return]


def _ms(xs: list[float]) -> str:
    return (f"median {statistics.median(xs) * 1000:.1f} ms "
            f"(min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f})")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_overlay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"connect/exchange rounds ({ROUNDS})")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--sizes", default=",".join(map(str, FORMATION_SIZES)),
                    help="formation: comma-separated federation sizes (processes)")
    ap.add_argument("--formation-timeout", type=float, default=FORMATION_TIMEOUT_S,
                    help=f"formation: seconds to wait from the last start ({FORMATION_TIMEOUT_S:.0f})")
    ap.add_argument("--formation-arms", default="join,periodic",
                    help="formation: join (the join path) and/or periodic (join_exchange = false)")
    ap.add_argument("--arm", choices=("patched", "unpatched"), default="patched",
                    help="unpatched: measure the wire-speed parts without overlay/libp2p_fixes.py "
                         "and print them as JSON (the benchmark runs this itself)")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    if set(args.formation_arms.split(",")) - {"join", "periodic"}:
        ap.error(f"--formation-arms: join and/or periodic, not {args.formation_arms!r}")
    if parts - set(PARTS):
        ap.error(f"unknown part(s): {', '.join(sorted(parts - set(PARTS)))}")
    from node.demo import NodeProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    if args.arm == "unpatched":
        from node.logs import setup_logging

        setup_logging("text", "error")
        _without_libp2p_fixes()
        print(json.dumps(_wire_arm(parts & set(WIRE_PARTS), args.rounds, tmp, baseline=False)))
        return 0
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    if "connect" in parts:
        plain, returned, attested = [], [], []
        for i in range(args.rounds):  # alternating: a load change hits both arms alike
            est, ret = trio.run(_plain_connect_s)
            plain.append(est)
            returned.append(ret)
            attested.append(trio.run(attested_connect_s, tmp, i))
        p_med, a_med = statistics.median(plain), statistics.median(attested)
        print(f"connect, {args.rounds} rounds: plain connection established {_ms(plain)}; "
              f"connection + mutual attestation {_ms(attested)}; ratio {a_med / p_med:.2f}x "
              f"(goal <= 1.5x); attestation adds {(a_med - p_med) * 1000:.1f} ms")
        print(f"  (py-libp2p's connect() itself returns after {_ms(returned)}; unpatched it "
              f"waits its 250 ms dial delay: see the handshake part and docs/libp2p.md)")
    if "exchange" in parts:
        att, png = trio.run(_exchange_vs_ping, tmp, args.rounds)
        print(f"on one open connection, {args.rounds} rounds: attestation exchange {_ms(att)}; "
              f"ping round trip {_ms(png)}; ratio {statistics.median(att) / statistics.median(png):.1f}x")
    if "throughput" in parts:
        raw, ovl = [], []
        for _ in range(3):
            raw.append(trio.run(_throughput, False, tmp))
            ovl.append(trio.run(_throughput, True, tmp))
        r_med, o_med = statistics.median(raw), statistics.median(ovl)
        print(f"throughput, {PAYLOAD_MB} MiB x 3: raw stream median {r_med:.1f} MB/s "
              f"({', '.join(f'{x:.1f}' for x in raw)}), overlay {o_med:.1f} MB/s "
              f"({', '.join(f'{x:.1f}' for x in ovl)}), ratio {o_med / r_med:.2f}x (goal >= 0.9x)")
    if "memory" in parts:
        center = NodeProcess(tmp / "center")
        try:
            boot = center.wait_listening(30)[0]
            time.sleep(2)
            base_kb = _rss_kb(center.proc.pid)
            st = trio.run(_peers_for_rss, tmp, boot, center.status)
            peak_kb = _rss_kb(center.proc.pid)
            n = st["attested_peers"] if st else 0
            print(f"memory: node RSS {base_kb / 1024:.1f} MiB alone, {peak_kb / 1024:.1f} MiB with "
                  f"{n} attested peers: {(peak_kb - base_kb) / max(n, 1):.0f} KiB per connection")
        finally:
            center.signal(signal.SIGTERM)
            center.wait(15)
    wire = parts & set(WIRE_PARTS)
    if wire:
        ours = _wire_arm(wire, args.rounds, tmp, baseline=True)
        print(f"  (patched arm and baselines done, load {os.getloadavg()[0]:.1f}; "
              f"now the unpatched arm in a subprocess)")
        _print_wire(wire, ours, _unpatched_arm(wire, args.rounds))
    if "formation" in parts:
        floor = statistics.median(trio.run(attested_connect_s, tmp, 100 + i) for i in range(5))
        print(f"formation floor: one pair's connect + mutual attestation, in process, median of 5: "
              f"{floor * 1000:.1f} ms")
        for n in (int(x) for x in args.sizes.split(",")):
            for arm in args.formation_arms.split(","):
                print(f"  (load {os.getloadavg()[0]:.1f})", flush=True)
                _print_formation(_formation_s(tmp, n, join_exchange=arm == "join",
                                              timeout_s=args.formation_timeout), floor)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
