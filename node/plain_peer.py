"""A plain py-libp2p peer, none of our fixes, for wire-compatibility tests and baselines.

Rules: this module never imports ``overlay`` (whose host factory installs
overlay/libp2p_fixes.py), so a process that runs it speaks py-libp2p 0.8.1 exactly as
released. Like node/testing.py it is support for code that exercises the package (tests,
benchmarks), not part of the running node.

Protocols both sides serve (the patched side imports the handlers from here):
- ``/enclave-swarm/interop/sink/1.0.0``: read until the writer closes, answer the SHA-256
  of what was read (32 bytes), close.
- ``/enclave-swarm/interop/source/1.0.0``: read an 8-byte big-endian length, write that many
  bytes of :func:`pattern`, close.
- ping (``/ipfs/ping/1.0.0``), py-libp2p's own.

    python -m node.plain_peer listen [--security noise|tls]
        prints its full multiaddr, serves until stdin closes
    python -m node.plain_peer dial ADDR [--security noise|tls] [--bytes N]
        connects to ADDR, sends N bytes to its sink, takes N bytes from its source, pings
        it, and prints one JSON line: {"sent_digest_ok": .., "received_ok": ..,
        "ping_rtts_ms": [..], "libp2p_fixes_loaded": false}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import PingService
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_ID
from libp2p.security.tls.transport import TLSTransport

SINK = TProtocol("/enclave-swarm/interop/sink/1.0.0")
SOURCE = TProtocol("/enclave-swarm/interop/source/1.0.0")
CHUNK = 256 * 1024
MAX_SOURCE_BYTES = 1 << 30
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def pattern(n: int) -> bytes:
    """The bytes a source sends: deterministic, so both sides know what to expect."""
    return hashlib.shake_256(b"enclave-swarm interop").digest(n)


def plain_host(security: str = "noise") -> IHost:
    """A py-libp2p host as ``new_host`` builds it, with the one security transport chosen
    (as ours: never the default list, which offers SECIO)."""
    kp = create_new_key_pair()
    sec: dict[Any, Any]
    if security == "noise":
        sec = {NOISE_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)}
    else:
        sec = {TLS_ID: TLSTransport(kp)}
    return new_host(key_pair=kp, sec_opt=sec, listen_addrs=[multiaddr.Multiaddr(LOOPBACK)])


async def read_to_end(stream: Any) -> bytes:
    parts = []
    while True:
        try:
            data = await stream.read(CHUNK)
        except Exception:  # py-libp2p raises StreamEOF (or a reset) at the end
            break
        if not data:
            break
        parts.append(data)
    return b"".join(parts)


async def handle_sink(stream: Any) -> None:
    data = await read_to_end(stream)
    await stream.write(hashlib.sha256(data).digest())
    await stream.close()


async def handle_source(stream: Any) -> None:
    n = int.from_bytes(await read_exactly(stream, 8), "big")
    if n > MAX_SOURCE_BYTES:
        await stream.reset()
        return
    data = pattern(n)
    for i in range(0, n, CHUNK):
        await stream.write(data[i:i + CHUNK])
    await stream.close()


async def read_exactly(stream: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = await stream.read(n - len(buf))
        if not data:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += data
    return buf


def serve(host: IHost) -> None:
    host.set_stream_handler(SINK, handle_sink)
    host.set_stream_handler(SOURCE, handle_source)


async def exchange(host: IHost, peer: Any, n: int) -> dict[str, Any]:
    """Against ``peer`` (an ID): n bytes to its sink, n bytes from its source, three pings."""
    sink = await host.new_stream(peer, [SINK])
    data = pattern(n)
    for i in range(0, n, CHUNK):
        await sink.write(data[i:i + CHUNK])
    await sink.close()
    digest = await read_exactly(sink, 32)
    source = await host.new_stream(peer, [SOURCE])
    await source.write(n.to_bytes(8, "big"))
    got = await read_to_end(source)
    rtts = await PingService(host).ping(peer, ping_amt=3)
    return {"sent_digest_ok": digest == hashlib.sha256(data).digest(),
            "received_ok": got == data, "ping_rtts_ms": rtts}


async def _listen(security: str) -> None:
    host = plain_host(security)
    serve(host)
    async with host.run([multiaddr.Multiaddr(LOOPBACK)]):
        print(host.get_addrs()[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin


async def _dial(addr: str, security: str, n: int) -> None:
    host = plain_host(security)
    serve(host)
    async with host.run([multiaddr.Multiaddr(LOOPBACK)]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        with trio.fail_after(120):
            await host.connect(info)
            result = await exchange(host, info.peer_id, n)
        # Proof that this side ran unpatched: nothing imported our fixes.
        result["libp2p_fixes_loaded"] = "overlay.libp2p_fixes" in sys.modules
        print(json.dumps(result), flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="plain_peer", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    lp = sub.add_parser("listen")
    lp.add_argument("--security", choices=("noise", "tls"), default="noise")
    dp = sub.add_parser("dial")
    dp.add_argument("addr")
    dp.add_argument("--security", choices=("noise", "tls"), default="noise")
    dp.add_argument("--bytes", type=int, default=4 * 2**20)
    args = ap.parse_args(argv)
    if args.mode == "listen":
        trio.run(_listen, args.security)
    else:
        trio.run(_dial, args.addr, args.security, args.bytes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
