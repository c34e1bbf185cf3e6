"""Overlay benchmarks, each against a baseline measured in the same run.

1. Connection set-up, timed until the connection is usable on both sides, not until
   py-libp2p's ``connect`` returns: ``connect`` always waits its 250 ms happy-eyeballs "dial
   delay" (``libp2p/network/swarm.py``), inside which the attestation exchange hides, so a
   comparison of two ``connect`` calls reads ~1.00x whatever attestation costs. Baseline: a
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

    python -m bench overlay            # or: make bench
    python -m bench.bench_overlay --rounds 5 --only connect,exchange   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
PARTS = ("connect", "exchange", "throughput", "memory")


def _quiet_config() -> NodeConfig:
    """``node.testing.local_config`` without background traffic during a measurement: no
    ping, peer exchange or periodic re-attestation inside a round."""
    from node.testing import local_config

    cfg = local_config()
    return dataclasses.replace(
        cfg, network=dataclasses.replace(cfg.network, ping_interval_s=3600.0,
                                         peer_exchange_interval_s=3600.0),
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


async def _attested_connect_s(tmp: Path, i: int) -> float:
    """Until both agents hold the other as attested, from the start of the dial."""
    from node.testing import make_agent

    cfg = _quiet_config()
    a, b = make_agent(tmp, f"a{i}", config=cfg), make_agent(tmp, f"b{i}", config=cfg)
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
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        ap.error(f"unknown part(s): {', '.join(sorted(parts - set(PARTS)))}")
    from node.demo import NodeProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    if "connect" in parts:
        plain, returned, attested = [], [], []
        for i in range(args.rounds):  # alternating: a load change hits both arms alike
            est, ret = trio.run(_plain_connect_s)
            plain.append(est)
            returned.append(ret)
            attested.append(trio.run(_attested_connect_s, tmp, i))
        p_med, a_med = statistics.median(plain), statistics.median(attested)
        print(f"connect, {args.rounds} rounds: plain connection established {_ms(plain)}; "
              f"connection + mutual attestation {_ms(attested)}; ratio {a_med / p_med:.2f}x "
              f"(goal <= 1.5x); attestation adds {(a_med - p_med) * 1000:.1f} ms")
        print(f"  (py-libp2p's connect() itself returns after {_ms(returned)}: its 250 ms dial "
              f"delay, which both arms would otherwise wait)")
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
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
