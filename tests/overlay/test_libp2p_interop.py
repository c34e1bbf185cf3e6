"""Wire compatibility of overlay/libp2p_fixes.py: a patched host (``build_host``) against an
unpatched py-libp2p 0.8.1 host in another process (node/plain_peer.py), in both directions
and under both security transports: connect, multistream-select (pipelined dialer against a
plain listener, plain dialer against ours), 4 MiB each way under yamux flow control, ping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.plain_peer import exchange, serve
from tests.overlay.test_libp2p_fixes import running_host

ROOT = Path(__file__).resolve().parents[2]
BULK_BYTES = 4 * 2**20

pytestmark = pytest.mark.process


@pytest.mark.parametrize("security", ["noise", "tls"])
async def test_patched_host_dials_an_unpatched_one(security):
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.plain_peer", "listen", "--security", security],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "the plain peer exited before listening"
                line += chunk
        info = info_from_p2p_addr(multiaddr.Multiaddr(line.decode().strip()))
        async with running_host(security=security) as ours:
            with trio.fail_after(120):
                await ours.connect(info)
                result = await exchange(ours, info.peer_id, BULK_BYTES)
        assert result["sent_digest_ok"] and result["received_ok"]
        assert len(result["ping_rtts_ms"]) == 3
    finally:
        if proc.stdin is not None:
            await proc.stdin.aclose()
        with trio.move_on_after(20):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("security", ["noise", "tls"])
async def test_unpatched_host_dials_a_patched_one(security):
    async with running_host(security=security) as ours:
        serve(ours)
        cmd = [sys.executable, "-m", "node.plain_peer", "dial", str(ours.get_addrs()[0]),
               "--security", security, "--bytes", str(BULK_BYTES)]
        with trio.fail_after(120):
            done = await trio.run_process(cmd, cwd=ROOT, capture_stdout=True, check=False)
    assert done.returncode == 0, done.stdout
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result == {"sent_digest_ok": True, "received_ok": True,
                      "ping_rtts_ms": result["ping_rtts_ms"], "libp2p_fixes_loaded": False}
    assert len(result["ping_rtts_ms"]) == 3
