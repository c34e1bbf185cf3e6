"""Wire compatibility with js-libp2p: a patched host (``build_host``, so every fix in
overlay/libp2p_fixes.py, and our own identify) against a js-libp2p peer in a Node process
(tests/interop/js/peer.mjs, versions pinned by its package-lock.json), over TCP, Noise and yamux,
in both directions: who dials does not matter, each side then pings the other three times,
identifies it, sends 4 MiB to its sink and takes 4 MiB from its source (yamux flow control and
frame sizes against js-yamux, both ways). `make interop-deps` installs Node and the packages."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.abc import IHost
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.host.ping import ID as PING_ID
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.identify import PROTOCOL_VERSION as IDENTIFY_PROTOCOL_VERSION
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.plain_peer import SINK, SOURCE, exchange, serve
from node.testing import wait_until
from overlay.framing import decode_uvarint
from overlay.host import AGENT_VERSION, UNATTESTED_PROTOCOLS, install_identify
from tests.overlay.test_libp2p_fixes import running_host

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "interop" / "js"
BULK_BYTES = 4 * 2**20
JS_LIBP2P_VERSION = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["libp2p"]
MAX_LINE_BYTES = 1 << 20

pytestmark = pytest.mark.process


@pytest.fixture
def node_command() -> list[str]:
    """``node peer.mjs``, or a failure that says how to install what is missing (never a skip:
    on the project's machine `make test` installs it)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make interop-deps` (installs Node.js and the "
                    "js-libp2p packages of tests/interop/js)")
    installed = JS_DIR / "node_modules" / "libp2p" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != JS_LIBP2P_VERSION:
        pytest.fail(f"js-libp2p {JS_LIBP2P_VERSION} is not installed in {JS_DIR}: run `make interop-deps`")
    return [node, str(JS_DIR / "peer.mjs")]


class JsPeer:
    """A running peer.mjs: its first line (who it is) and a command channel (its stdin)."""

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        self.proc = proc
        self._stdout = proc.stdout
        self._stdin = proc.stdin
        self._buf = b""
        self.info: dict[str, Any] = {}

    async def read_json(self) -> dict[str, Any]:
        with trio.fail_after(60):
            while b"\n" not in self._buf:
                chunk = await self._stdout.receive_some(65536)
                assert chunk, f"peer.mjs exited ({await self.proc.wait()}) before its next line"
                self._buf += chunk
                assert len(self._buf) <= MAX_LINE_BYTES
        line, self._buf = self._buf.split(b"\n", 1)
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def exchange(self, peer_id: ID, n: int) -> dict[str, Any]:
        """Ask the js peer to run its exchange against ``peer_id``; its report."""
        await self._stdin.send_all(json.dumps({"exchange": peer_id.to_base58(), "bytes": n}).encode() + b"\n")
        return await self.read_json()

    async def close_stdin(self) -> None:
        """The peer stops when its stdin closes."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._stdin.aclose()

    @property
    def peer_id(self) -> ID:
        return ID.from_base58(self.info["peer_id"])


@contextlib.asynccontextmanager
async def js_peer(command: list[str], *args: str) -> AsyncIterator[JsPeer]:
    proc = await trio.lowlevel.open_process([*command, *args], cwd=JS_DIR,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    peer = JsPeer(proc)
    try:
        peer.info = await peer.read_json()
        yield peer
    finally:
        await peer.close_stdin()
        with trio.move_on_after(20):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"peer.mjs exited with {proc.returncode}"


async def identify(host: IHost, peer_id: ID) -> Identify:
    """What ``peer_id`` answers on identify: one length-prefixed message, then the end."""
    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    data = b""
    with trio.fail_after(10), contextlib.suppress(StreamEOF):
        while chunk := await stream.read(65536):
            data += chunk
            assert len(data) <= MAX_LINE_BYTES
    length, used = decode_uvarint(data)
    assert used + length == len(data), "identify: one message and nothing after it"
    msg = Identify()
    msg.ParseFromString(data[used:])
    return msg


def without_p2p(addr: Any) -> str:
    return str(addr).split("/p2p/")[0]


async def our_side(ours: IHost, js: JsPeer) -> None:
    """Our host against the js peer: its identify answer, three pings, 4 MiB each way."""
    # py-libp2p identifies every new connection's peer by itself (BasicHost._schedule_identify);
    # js-libp2p takes one inbound identify stream at a time per connection and resets a second,
    # so ours waits for that one to have filled the peerstore (which it checks too).
    peerstore = ours.get_peerstore()
    await wait_until(lambda: bool(peerstore.supports_protocols(js.peer_id, [str(IDENTIFY_ID)])))
    assert sorted(peerstore.get_protocols(js.peer_id)) == js.info["protocols"]
    msg = await identify(ours, js.peer_id)
    assert msg.agent_version == js.info["agent_version"]
    assert msg.agent_version.startswith(f"enclave-swarm-interop js-libp2p/{JS_LIBP2P_VERSION} node/v")
    assert msg.protocol_version == IDENTIFY_PROTOCOL_VERSION
    assert sorted(msg.protocols) == js.info["protocols"]
    assert {str(PING_ID), str(IDENTIFY_ID), SINK, SOURCE} <= set(msg.protocols)
    assert ID.from_pubkey(deserialize_public_key(msg.public_key)) == js.peer_id
    listen_addrs = [str(multiaddr.Multiaddr(a)) for a in msg.listen_addrs]
    assert listen_addrs == [without_p2p(a) for a in js.info["addrs"]]
    with trio.fail_after(60):
        result = await exchange(ours, js.peer_id, BULK_BYTES)
    assert result["sent_digest_ok"] and result["received_ok"]
    # Three pongs that echoed their ping (py-libp2p raises on a mismatch); the RTTs are whole
    # milliseconds, so 0 on loopback is a real value.
    assert len(result["ping_rtts_ms"]) == 3


def check_js_report(report: dict[str, Any], ours: IHost) -> None:
    """The js peer's report of its exchange with our host (what it saw of us and the link)."""
    assert report["encryption"] == "/noise" and report["multiplexer"] == "/yamux/1.0.0"
    assert report["identify"]["peer_id"] == ours.get_id().to_base58()
    assert report["identify"]["public_key_peer_id"] == ours.get_id().to_base58()
    assert report["identify"]["agent_version"] == AGENT_VERSION
    assert report["identify"]["protocol_version"] == IDENTIFY_PROTOCOL_VERSION
    assert len(report["ping_rtts_ms"]) == 3  # js-libp2p's ping too rejects a pong that does not echo
    assert report["sent_digest_ok"] is True and report["received_ok"] is True


async def test_patched_host_dials_a_js_peer(node_command: list[str]) -> None:
    # The js peer is not attested here: identify tells it only what an unattested peer learns.
    async with js_peer(node_command, "listen") as js, running_host() as ours:
        install_identify(ours, lambda peer_id: False)
        serve(ours)
        assert js.info["node_version"].startswith("v")
        with trio.fail_after(30):
            await ours.connect(info_from_p2p_addr(multiaddr.Multiaddr(js.info["addrs"][0])))
        await our_side(ours, js)
        with trio.fail_after(60):
            report = await js.exchange(ours.get_id(), BULK_BYTES)
    check_js_report(report, ours)
    assert report["identify"]["protocols"] == sorted(UNATTESTED_PROTOCOLS)
    assert report["identify"]["listen_addrs"] == [] and report["identify"]["observed_addr"] is None


async def test_js_peer_dials_a_patched_host(node_command: list[str]) -> None:
    # Here the js peer counts as attested: identify gives it our full answer.
    async with running_host() as ours:
        install_identify(ours, lambda peer_id: True)
        serve(ours)
        our_addr = str(ours.get_addrs()[0])
        async with js_peer(node_command, "dial", our_addr, str(BULK_BYTES)) as js:
            with trio.fail_after(60):
                report = await js.read_json()
            await our_side(ours, js)
        protocols = sorted(str(p) for p in ours.get_mux().get_protocols() if p is not None)
    check_js_report(report, ours)
    assert report["identify"]["protocols"] == protocols
    assert {str(PING_ID), str(IDENTIFY_ID), SINK, SOURCE} <= set(protocols)
    assert report["identify"]["listen_addrs"] == [without_p2p(our_addr)]
    # What we observed of the js peer's connection: its loopback address and an ephemeral port.
    observed = multiaddr.Multiaddr(report["identify"]["observed_addr"])
    assert observed.value_for_protocol("ip4") == "127.0.0.1" and int(observed.value_for_protocol("tcp")) > 0
