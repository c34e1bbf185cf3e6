"""Bad input from real libp2p peers: each gets a logged reason and a counter; the node stays up.

The hostile peers are plain py-libp2p hosts (a standard libp2p implementation), so these tests
also show that any libp2p node can connect and ping us, and gets nothing else until it attests.
"""

from __future__ import annotations

import os

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.host.exceptions import StreamFailure
from libp2p.host.ping import PingService
from libp2p.network.stream.exceptions import StreamClosed, StreamError, StreamReset
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.attestation.simulated import SimulatedProvider
from node.measure import agent_measurement
from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, encode_uvarint, frame, read_message, write_message
from overlay.handshake import binding
from overlay.host import HostOptions, build_host
from overlay.messages import (
    ATTEST_PROTOCOL,
    PEERS_PROTOCOL,
    AttestChallenge,
    AttestEvidence,
    PeersRequest,
)
from overlay.wire import encode
from tests.netutil import make_agent, wait_until


class Hostile:
    """A raw py-libp2p host whose attest answer is chosen by the test.

    The node may reset or close the stream under the answer at any point (StreamError, or
    RemoteProtocolError from our framing): that ends the answer. Any other error is the test's
    own script failing, which would leave the node to count something else than the test means;
    it is kept in ``unexpected`` for the test to check (the handler runs inside py-libp2p).
    """

    def __init__(self, respond=None) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.pub = self.key.public_key().public_bytes_raw()
        self.host = build_host(self.key, HostOptions(listen=("/ip4/127.0.0.1/tcp/0",)))
        self.unexpected: list[Exception] = []
        if respond is not None:
            async def handler(stream):
                try:
                    await respond(self, stream)
                except (StreamError, RemoteProtocolError):
                    pass
                except Exception as exc:
                    self.unexpected.append(exc)
            self.host.set_stream_handler(ATTEST_PROTOCOL, handler)


async def run_against(tmp_path, hostile: Hostile, body):
    agent = make_agent(tmp_path, "victim")
    async with trio.open_nursery() as n:
        await n.start(agent.run)
        async with hostile.host.run([]):
            await hostile.host.connect(info_from_p2p_addr(Multiaddr(agent.full_addrs()[0])))
            await body(agent)
        agent.stop()
    assert hostile.unexpected == []
    return agent


async def test_plain_libp2p_peer_can_ping_but_gets_nothing_else(tmp_path):
    h = Hostile()

    async def body(agent):
        rtts = await PingService(h.host).ping(agent.host.get_id(), 2)
        assert len(rtts) == 2
        # The node resets the stream: the request gets no answer. Where the reset lands depends
        # on timing: during protocol negotiation (StreamFailure, what loopback shows), or on the
        # write or read after it (StreamReset / StreamClosed / end of stream). An answer, a
        # hang (TooSlowError) or any other error fails the test.
        with trio.fail_after(10), pytest.raises((StreamFailure, StreamReset, StreamClosed, EOFError)):
            stream = await h.host.new_stream(agent.host.get_id(), [PEERS_PROTOCOL])
            await stream.write(frame(encode(PeersRequest(10))))
            if not await stream.read(100):
                raise EOFError
        await wait_until(lambda: agent.counters.get("refused_unattested", PEERS_PROTOCOL) == 1)
        st = agent.status()
        assert [p["attested"] for p in st["peers"]] == [False]
        # It never attests (it does not speak the protocol): cut off after the deadline.
        await wait_until(lambda: agent.counters.get("disconnected_unattested") >= 1, 15)
        assert agent.counters.get("attest_missed") >= 1

    await run_against(tmp_path, h, body)


async def _garbage(h, stream):
    await stream.read(100)
    await stream.write(frame(b"\xff\x00garbage" * 3))


async def _oversized(h, stream):
    await stream.read(100)
    await stream.write(encode_uvarint(50 * 1024 * 1024) + b"x" * 64)


async def _truncated(h, stream):
    await stream.read(100)
    await stream.write(encode_uvarint(500) + b"x" * 10)
    await stream.close()


@pytest.mark.parametrize("respond,reason", [
    (_garbage, f"{ATTEST_PROTOCOL}:cbor"),
    (_oversized, f"{ATTEST_PROTOCOL}:size"),
    (_truncated, f"{ATTEST_PROTOCOL}:stream"),
])
async def test_bad_frames_on_attest_are_dropped_and_counted(tmp_path, respond, reason):
    async def body(agent):
        await wait_until(lambda: agent.counters.get("remote_error", reason) >= 1, 15)
        assert not agent.peers.attested()
        assert agent.status()["peer_id"]  # still serving

    await run_against(tmp_path, Hostile(respond), body)


def _sim(tmp_path, name):
    return SimulatedProvider(tmp_path / name, agent_measurement(""))


async def test_replayed_evidence_with_an_old_nonce(tmp_path):
    prov = _sim(tmp_path, "replayer")

    async def respond(h, stream):
        reader = FrameReader(stream)
        await read_message(reader, AttestChallenge, timeout_s=5)
        old = prov.get_evidence(binding(os.urandom(32), h.pub))  # captured earlier
        await write_message(stream, AttestEvidence("sim", old.blob, old.certs, h.pub), timeout_s=5)
        await stream.read(4096)

    async def body(agent):
        await wait_until(lambda: agent.counters.get("attest_rejected", "binding") >= 1, 15)
        assert not agent.peers.attested()

    await run_against(tmp_path, Hostile(respond), body)


async def test_evidence_bound_to_another_key(tmp_path):
    prov = _sim(tmp_path, "thief")
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()

    async def respond(h, stream):
        reader = FrameReader(stream)
        ch = await read_message(reader, AttestChallenge, timeout_s=5)
        ev = prov.get_evidence(binding(ch.nonce, other))  # fresh, but for someone else's key
        await write_message(stream, AttestEvidence("sim", ev.blob, ev.certs, other), timeout_s=5)
        await stream.read(4096)

    async def body(agent):
        await wait_until(lambda: agent.counters.get("attest_rejected", "binding") >= 1, 15)
        assert "evidence names a key other" in agent.peers.all()[0].last_verdict

    await run_against(tmp_path, Hostile(respond), body)


async def test_peer_vanishing_mid_handshake(tmp_path):
    async def respond(h, stream):
        await read_message(FrameReader(stream), AttestChallenge, timeout_s=5)
        await h.host.disconnect(stream.muxed_conn.peer_id)

    async def body(agent):
        await wait_until(lambda: agent.counters.get("attest_missed") >= 1, 15)
        assert not agent.peers.attested()
        assert agent.status()["peer_id"]

    await run_against(tmp_path, Hostile(respond), body)


async def test_garbage_challenge_to_our_prover(tmp_path):
    h = Hostile()

    async def body(agent):
        stream = await h.host.new_stream(agent.host.get_id(), [ATTEST_PROTOCOL])
        await stream.write(frame(b"\xa1\x01\x02"))  # valid CBOR, but a map, not an envelope
        await wait_until(lambda: agent.counters.get("remote_error", f"{ATTEST_PROTOCOL}:envelope") >= 1, 10)

    await run_against(tmp_path, h, body)
