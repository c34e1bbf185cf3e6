"""Overlay benchmarks, each against a baseline measured in the same run.

1. Connection set-up: plain py-libp2p ``connect`` vs connect + mutual attestation (both sides
   accept the other's simulated evidence). Goal: attested ≤ 1.5× plain.
2. Stream throughput: a raw py-libp2p stream vs the same bytes through our overlay path
   (attestation gate, length-prefixed frames, FrameReader). Goal: overlay ≥ 0.9× raw.
3. Memory: RSS of a node process before and after 50 attested peers connect; memory per
   connection.

    python -m bench overlay            # or: make bench
"""

from __future__ import annotations

import dataclasses
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.peerinfo import info_from_p2p_addr

from overlay.framing import FrameReader, frame
from overlay.host import HostOptions, build_host

ROUNDS = 15
PAYLOAD_MB = 32
CHUNK = 64 * 1024
PEERS_FOR_RSS = 50


def _tests_path() -> None:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


async def _plain_connect_s() -> float:
    la = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    h1 = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
    h2 = build_host(Ed25519PrivateKey.generate(), HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
    async with h1.run(la), h2.run(la):
        t = time.perf_counter()
        await h2.connect(info_from_p2p_addr(h1.get_addrs()[0]))
        return time.perf_counter() - t


async def _attested_connect_s(tmp: Path, i: int) -> float:
    from tests.netutil import make_agent

    a, b = make_agent(tmp, f"a{i}"), make_agent(tmp, f"b{i}")
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        t = time.perf_counter()
        await b.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.full_addrs()[0])))
        while not (a.peers.is_attested(b.peer_id) and b.peers.is_attested(a.peer_id)):
            await trio.sleep(0.0005)
        dt = time.perf_counter() - t
        a.stop()
        b.stop()
    return dt


async def _throughput(overlay: bool, tmp: Path) -> float:
    """MB/s of PAYLOAD_MB sent from b to a on one stream."""
    from tests.netutil import fully_attested, make_agent

    a, b = make_agent(tmp, "ta"), make_agent(tmp, "tb")
    done = trio.Event()
    received = 0
    proto = "/enclave-swarm/bench/1.0.0"

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
    from tests.netutil import local_config, make_agent

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


def main(argv: list[str]) -> int:
    _tests_path()
    from node.demo import NodeProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    plain = [trio.run(_plain_connect_s) for _ in range(ROUNDS)]
    attested = [trio.run(_attested_connect_s, tmp, i) for i in range(ROUNDS)]
    p_med, a_med = statistics.median(plain), statistics.median(attested)
    print(f"connect: plain median {p_med * 1000:.1f} ms, attested median {a_med * 1000:.1f} ms, "
          f"ratio {a_med / p_med:.2f}x (goal <= 1.5x)")

    raw = [trio.run(_throughput, False, tmp) for _ in range(3)]
    ovl = [trio.run(_throughput, True, tmp) for _ in range(3)]
    r_med, o_med = statistics.median(raw), statistics.median(ovl)
    print(f"throughput: raw stream {r_med:.1f} MB/s, overlay {o_med:.1f} MB/s, "
          f"ratio {o_med / r_med:.2f}x (goal >= 0.9x)")

    center = NodeProcess(tmp / "center")
    try:
        boot = center.wait_listening(30)[0]
        time.sleep(2)
        base_kb = _rss_kb(center.proc.pid)
        st = trio.run(_peers_for_rss, tmp, boot, center.status)
        peak_kb = _rss_kb(center.proc.pid)
        n = st["attested_peers"] if st else 0
        print(f"memory: node RSS {base_kb / 1024:.1f} MiB alone, {peak_kb / 1024:.1f} MiB with {n} "
              f"attested peers: {(peak_kb - base_kb) / max(n, 1):.0f} KiB per connection")
    finally:
        center.signal(signal.SIGTERM)
        center.wait(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
