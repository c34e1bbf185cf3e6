"""What an unattested peer learns from a real node: only what attesting needs.

A plain py-libp2p host dials a node. Identify tells it the agent is ``enclave-swarm`` (no
library, no version), our key and the three protocols open to it, no addresses and no other
protocol. A challenge on the attest protocol gets no evidence: the node proves only to a
peer that passed its own challenge, or that it dialled itself (overlay/handshake.py rule 5).
Attested peers get the full identify, pushed once they pass, and attest each other both ways.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import trio
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from node.gossip import GOSSIP_PROTOCOL
from overlay.framing import FrameReader, decode_uvarint, frame, read_message
from overlay.handshake import may_prove_to
from overlay.host import AGENT_VERSION, UNATTESTED_PROTOCOLS, push_identify
from overlay.messages import ATTEST_PROTOCOL, AttestChallenge, AttestEvidence
from overlay.wire import encode
from tests.netutil import fully_attested, make_agent, wait_until
from tests.overlay.test_hostile_peers import Hostile


async def _identify(host: Any, peer_id: Any) -> Identify:
    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    data = b""
    with trio.fail_after(10), contextlib.suppress(StreamEOF):
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            data += chunk
    length, used = decode_uvarint(data)
    msg = Identify()
    msg.ParseFromString(data[used:used + length])
    return msg


async def _read_all(stream: Any) -> bytes:
    data = b""
    with contextlib.suppress(StreamError):  # a reset stream ends the read too (EOF is one)
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_rule_5_table():
    assert may_prove_to(peer_attested=True, we_dialled=False)
    assert may_prove_to(peer_attested=False, we_dialled=True)
    assert not may_prove_to(peer_attested=False, we_dialled=False)


async def test_unattested_peer_gets_minimal_identify_and_no_evidence(tmp_path):
    h = Hostile()
    agent = make_agent(tmp_path, "victim", gossip=True)
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            await n.start(agent.run)
            async with h.host.run([]):
                await h.host.connect(info_from_p2p_addr(Multiaddr(agent.full_addrs()[0])))
                node = agent.host.get_id()

                ident = await _identify(h.host, node)
                assert ident.agent_version == AGENT_VERSION == "enclave-swarm"
                assert sorted(ident.protocols) == sorted(UNATTESTED_PROTOCOLS)
                assert GOSSIP_PROTOCOL not in ident.protocols
                assert list(ident.listen_addrs) == []
                assert not ident.observed_addr and not ident.signedPeerRecord
                assert ident.public_key == agent.host.get_public_key().serialize()

                # A well-formed challenge: the node reads it, then withholds its evidence.
                stream = await h.host.new_stream(node, [ATTEST_PROTOCOL])
                await stream.write(frame(encode(AttestChallenge(os.urandom(32)))))
                assert await _read_all(stream) == b""
                await wait_until(lambda: agent.counters.get("attest_withheld") == 1, 15)
                assert not agent.peers.attested()
                assert agent.status()["peer_id"]
            agent.stop()


@contextlib.asynccontextmanager
async def _attested_pair(tmp_path: Any) -> Any:
    """Nodes a and b, b bootstrapped from a, attested both ways; stopped on the way out."""
    a = make_agent(tmp_path, "a", gossip=True)
    with trio.fail_after(90):
        async with trio.open_nursery() as n:
            await n.start(a.run)
            b = make_agent(tmp_path, "b", gossip=True, bootstrap=(a.full_addrs()[0],))
            await n.start(b.run)
            await wait_until(lambda: fully_attested([a, b]), 30)
            yield a, b
            a.stop()
            b.stop()


async def test_attested_peers_prove_both_ways_and_get_full_identify(tmp_path):
    async with _attested_pair(tmp_path) as (a, b):
        # b dialled a: a proved to b only after b passed a's challenge; nothing withheld
        # for long enough to fail.
        assert b.counters.get("attest_missed") == 0
        # a learns b's listen address from b's identify push (b dialled from an
        # ephemeral port; the minimal identify a got at first had no addresses).
        b_listen = set(b.full_addrs())
        store = a.host.get_peerstore()
        await wait_until(lambda: b_listen & {str(x) for x in store.addrs(b.host.get_id())}, 15)
        ident = await _identify(a.host, b.host.get_id())
        assert ident.agent_version == "enclave-swarm"
        assert GOSSIP_PROTOCOL in ident.protocols and ATTEST_PROTOCOL in ident.protocols
        assert ident.listen_addrs


async def test_an_identify_push_while_our_listener_closes_is_dropped_not_fatal(tmp_path):
    """A fresh-clone make test (tests/manager/test_follow_gossip.py): a node stopping while it
    pushed identify to a peer it had just attested read its own listen addresses from a closed
    listener (getsockname: EBADF), and the OSError crashed the agent's nursery. The push now
    gives up, and the node keeps running."""
    async with _attested_pair(tmp_path) as (a, b):

        def closed(*_args: Any) -> Any:
            raise OSError(9, "Bad file descriptor")

        b.host.get_addrs = closed  # what a closed listener's getsockname gives
        assert await push_identify(b.host, a.host.get_id()) is False


async def test_node_that_dials_proves_at_once(tmp_path):
    # The residual of rule 5: a node proves to whom it dials (here a plain host that answers
    # the node's challenge with nothing): its chosen bootstrap, mDNS or peer-exchange target.
    got: list[AttestEvidence] = []
    h = Hostile()
    agent = make_agent(tmp_path, "dialler")
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            async with h.host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                await n.start(agent.run)
                addr = f"{h.host.get_addrs()[0]}/p2p/{h.host.get_id()}"
                await agent.host.connect(info_from_p2p_addr(Multiaddr(addr)))
                stream = await h.host.new_stream(agent.host.get_id(), [ATTEST_PROTOCOL])
                await stream.write(frame(encode(AttestChallenge(os.urandom(32)))))
                got.append(await read_message(FrameReader(stream), AttestEvidence, timeout_s=10))
                assert got[0].public_key == agent.public_key
                assert agent.counters.get("attest_withheld") == 0
            agent.stop()
