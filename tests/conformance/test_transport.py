"""One contract, two transports: the simulated network and real libp2p nodes on loopback.

See ``harness.py`` for the contract. Every test runs against both; a difference between the
simulator and the real node would make the simulator's figures lie about the real system.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.gossip import SEND_QUEUE
from overlay.messages_gossip import (
    GossipDigest,
    GossipDigestEntry,
    GossipPush,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
    SwimSync,
    SwimUpdate,
)
from tests.conformance.harness import Harness, Libp2pHarness, libp2p_harness, sim_harness

N = 3


@pytest.fixture(params=["sim", "libp2p"])
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    make = sim_harness if request.param == "sim" else libp2p_harness
    async with make(tmp_path, N) as harness:
        yield harness


def _every_type(h: Harness) -> list[Any]:
    a, b, c = h.ids
    # Sequence numbers far above anything the running cores use, so their answers to these
    # messages can't be mistaken for the messages themselves.
    up = SwimUpdate(c, 0, 7, a)
    rec = h.record(0, b, b"\x01\x02")
    entry = GossipDigestEntry(rec.kind, rec.subject, rec.version, rec.issued_at, rec.signature[:8],
                              rec.issuer)
    return [
        SwimPing(9_000_001, b, (up,), (rec,)),
        SwimPingReq(9_000_002, c, True, (up,)),
        SwimAck(9_000_003, (up,), ()),
        SwimNack(9_000_004),
        SwimGossip((up,)),
        SwimSync((up,), join=False, reply=False),
        GossipPush((rec,), (b"delegate payload",)),
        GossipDigest((entry,), complete=False, reply=False),
    ]


async def test_every_message_type_arrives_intact_from_its_sender_at_its_core(h: Harness) -> None:
    msgs = _every_type(h)
    for m in msgs:
        h.send(0, h.ids[1], m)
    await h.wait_for(1, msgs)
    got = {id(m): (src, core) for src, m0, core in h.received(1) for m in msgs if m0 == m}
    for m in msgs:
        src, core = got[id(m)]
        assert src == h.ids[0]  # the transport's authenticated sender, not a claim in the message
        assert core == ("dissemination" if isinstance(m, GossipPush | GossipDigest) else "membership")
    # ...and only to its destination: node 2 gets none of them from node 0. Only the messages
    # with the test's own sequence numbers can tell: the others (gossip, sync, push, digest)
    # carry no nonce, and node 0's cores may legitimately send node 2 an equal one, e.g. a
    # SwimGossip of the same update once node 1 has passed it back to node 0.
    unique = [m for m in msgs if getattr(m, "seq", 0) > 9_000_000]
    assert len(unique) == 4
    assert not any(m in [x for src, x, _ in h.received(2) if src == h.ids[0]] for m in unique)


def _queue_full(h: Harness) -> int:
    """The real sender's overflow counter (the simulator has no send queue)."""
    if isinstance(h, Libp2pHarness):
        return int(h.agents[0].counters.get("gossip_dropped", "queue-full"))
    return 0


async def test_a_burst_is_delivered_or_counted_never_lost_silently(h: Harness) -> None:
    # More than a libp2p sender's per-peer queue holds, sent without a checkpoint between the
    # sends: the real transport must drop (and count) the overflow at once. The simulator has
    # no such queue and carries all of them; both must account for every message.
    burst = [GossipPush(user=(b"burst-%04d" % k,)) for k in range(SEND_QUEUE + 200)]
    before = h.dropped_total(0)
    full_before = _queue_full(h)
    for m in burst:
        h.send(0, h.ids[2], m)  # must return at once: the sender is never blocked
    counted = h.dropped_total(0) - before  # before any checkpoint: only the burst's own drops
    full = _queue_full(h) - full_before

    def arrived() -> list[Any]:
        return [m for _, m, _ in h.received(2) if m in burst]

    await h.wait_until(lambda: len(set(arrived())) >= len(burst) - counted)
    await h.barrier(0, 2)
    got = arrived()
    assert len(got) == len(set(got))  # none twice (a loss-free, duplicate-free link)
    assert len(got) + counted == len(burst)  # every message that did not arrive was counted
    if isinstance(h, Libp2pHarness):
        # the queue holds SEND_QUEUE; the sender task may hold one more if it was waiting
        assert counted >= len(burst) - SEND_QUEUE - 1
        assert full == counted  # under its reason
        assert got == burst[: len(got)]  # one ordered stream: the overflow is the tail


async def test_an_unknown_destination_is_dropped_and_counted(h: Harness) -> None:
    before = h.dropped(0, "unknown-destination")
    h.send(0, "12D3KooWNotAMemberNotAMemberNotAMemberNotAMember", SwimNack(9_100_001))
    assert h.dropped(0, "unknown-destination") == before + 1


async def test_a_message_over_its_size_bound_is_refused_at_the_sender(h: Harness) -> None:
    big = tuple(h.record(0, h.ids[1], bytes([k]) * 1500) for k in range(60))
    msg = SwimPing(9_200_001, h.ids[1], (), big)  # ~100 kB > swim-ping's 64 KiB bound
    before = h.dropped(0, "oversize")
    h.send(0, h.ids[1], msg)
    assert h.dropped(0, "oversize") == before + 1
    await h.barrier(0, 1)
    assert msg not in [m for _, m, _ in h.received(1)]
    ok = SwimNack(9_200_002)  # and the link still works
    h.send(0, h.ids[1], ok)
    await h.wait_for(1, [ok])


@pytest.mark.parametrize("garbage", [b"", b"\xff", b"\xa1\x61x\x01", b"\x82\x01\x02" * 10,
                                     b"\xc1\x00", b"\xa3" + b"\x00" * 40])
async def test_bytes_that_are_not_a_gossip_message_are_dropped_and_counted(
        h: Harness, garbage: bytes) -> None:
    before = h.malformed(1)
    await h.send_raw(0, 1, garbage)
    await h.barrier(0, 1)
    assert h.malformed(1) == before + 1
    ok = SwimNack(9_300_001)
    h.send(0, h.ids[1], ok)
    await h.wait_for(1, [ok])


async def test_a_stopped_destination_costs_the_sender_only_the_loss(h: Harness) -> None:
    await h.stop(2)
    if isinstance(h, Libp2pHarness):
        # Once the sender has seen the connection go, every message to it is counted lost at
        # the send. (Before that, and in the simulator, a message to a stopped node is lost
        # on the way, as a datagram would be: the sender cannot know.)
        await h.wait_until(lambda: not h.agents[0].peers.is_attested(h.ids[2]))
    before = h.dropped(0, "unknown-destination")
    for k in range(20):
        h.send(0, h.ids[2], SwimNack(9_400_000 + k))  # neither raises nor blocks
    if isinstance(h, Libp2pHarness):
        assert h.dropped(0, "unknown-destination") == before + 20
    ok = SwimNack(9_400_100)
    h.send(0, h.ids[1], ok)  # and the sender still talks to everyone else
    await h.wait_for(1, [ok])
