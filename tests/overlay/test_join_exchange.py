"""The join path (issue 12, item 4): a node meets the members its seed knows at once, and what
another member names costs a bounded number of dials.

Real in-process nodes on loopback. The periodic peer exchange is an hour here, so only the join
path (an exchange with a peer just mutually attested, or with one whose gossip names members we
lack) can connect nodes that were bootstrapped from the same seed."""

from __future__ import annotations

import dataclasses

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.peer_exchange import MAX_PENDING_DIALS, PX_LIMIT
from node.testing import gossip_config
from overlay.framing import FrameReader, close_stream, read_message, write_message
from overlay.messages import PEERS_PROTOCOL, PeerEntry, PeersRequest, PeersResponse
from overlay.messages_gossip import ALIVE, SwimSync, SwimUpdate
from tests.adversary import Adversary
from tests.netutil import federation, fully_attested, wait_until

HOUR = 3600.0


def no_periodic_exchange(**network: object):  # type: ignore[no-untyped-def]
    cfg = gossip_config()
    return dataclasses.replace(cfg, network=dataclasses.replace(
        cfg.network, peer_exchange_interval_s=HOUR, **network))  # type: ignore[arg-type]


def fake_ids(n: int) -> list[str]:
    """Well-formed peer ids nobody holds the keys of."""
    return [ID.from_pubkey(create_new_key_pair().public_key).to_base58() for _ in range(n)]


async def test_nodes_bootstrapped_from_one_seed_meet_through_the_join_path(tmp_path):
    async with federation(tmp_path, 4, gossip=True, config=no_periodic_exchange()) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        seed, joiners = agents[0], agents[1:]
        # Every joiner asked someone at once, and the pairs of joiners were dialled from what
        # they learned (the seed dials nobody: everyone came to it).
        assert all(a.counters.get("join_exchange") >= 1 for a in joiners)
        assert sum(a.counters.get("dial_learned") for a in joiners) >= 3
        assert seed.counters.get("dial_learned") == 0
        # Dials still waiting (a crossing dial's delay) end and free their slots.
        await wait_until(lambda: all(not a.px.plan.pending for a in agents), 15)


async def test_an_answer_naming_more_peers_than_asked_is_dropped_whole(tmp_path):
    async with federation(tmp_path, 2, config=no_periodic_exchange()) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        honest, attacker = agents
        ids = fake_ids(PX_LIMIT + 1)

        async def oversized(stream, pid):  # type: ignore[no-untyped-def]
            await read_message(FrameReader(stream), PeersRequest, timeout_s=5)
            entries = tuple(PeerEntry(i, ("/ip4/127.0.0.1/tcp/9",)) for i in ids)
            await write_message(stream, PeersResponse(entries), timeout_s=5)
            await close_stream(stream)

        attacker.set_handler(PEERS_PROTOCOL, oversized)
        dialled = honest.counters.get("dial_learned")
        honest.px.soon(attacker.peer_id)
        await wait_until(lambda: honest.counters.get("remote_error", "px:over-limit") == 1, 10)
        assert not honest.px.plan.pending and honest.counters.get("dial_learned") == dialled
        assert fully_attested(agents)  # nothing else changed: still attested both ways


async def test_a_member_naming_ten_thousand_invented_members_gets_bounded_dials(tmp_path):
    # The attacker is an attested member. Its push-pull names 10,000 members nobody can
    # admit; asked how to reach them, it answers each time with PX_LIMIT well-formed peer ids
    # at an address that accepts TCP and never speaks (each dial hangs until its timeout).
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, _hold_forever, 0)
        port = listeners[0].socket.getsockname()[1]
        pool = iter(fake_ids(4 * PX_LIMIT))
        async with federation(tmp_path, 3, gossip=True, config=no_periodic_exchange()) as agents:
            await wait_until(lambda: fully_attested(agents), 30)
            honest, attacker = agents[0], agents[2]
            answers = 0

            async def fake_peers(stream, pid):  # type: ignore[no-untyped-def]
                nonlocal answers
                await read_message(FrameReader(stream), PeersRequest, timeout_s=5)
                entries = tuple(PeerEntry(next(pool), (f"/ip4/127.0.0.1/tcp/{port}",))
                                for _ in range(PX_LIMIT))
                answers += 1
                await write_message(stream, PeersResponse(entries), timeout_s=5)
                await close_stream(stream)

            attacker.set_handler(PEERS_PROTOCOL, fake_peers)
            most = 0

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, len(honest.px.plan.pending))
                    await trio.sleep(0.01)

            nursery.start_soon(watch)
            invented = tuple(SwimUpdate(f"12D3KooWinvented{i:05d}", ALIVE, 0, f"12D3KooWinvented{i:05d}")
                             for i in range(10_000))
            for k in range(1, 4):  # three push-pulls, each a reason to ask the attacker again
                Adversary(attacker).send_gossip((honest,), SwimSync(members=invented))
                attacker.gossip._poke()
                refused = 10_000 * k
                await wait_until(lambda: honest.counters.get("swim_refused", "not-admitted")
                                 >= refused, 20)  # noqa: B023 - awaited within the iteration
            await wait_until(lambda: honest.counters.get("dial_dropped", "pending-full") >= 1, 20)
            assert answers >= 3
            assert most <= MAX_PENDING_DIALS
            assert honest.gossip.membership.num_members() == 3  # nobody invented got in
            assert fully_attested(agents)
            nursery.cancel_scope.cancel()


async def _hold_forever(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()
