"""One attested peer against a holder's resources: quota exhaustion and reshare-mailbox floods.

The attacker is a real, attested node of the federation whose code sends what the wire allows:
manifests it signs itself (it is their owner), offers it never finishes, mailbox messages for
sessions nobody opened. The honest nodes must keep storing and repairing."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import trio

from node.shards.crypto import Layout
from node.shards.manifest import PlacementEntry, SignedManifest, build_manifest, sign_manifest
from node.shards.messages import ReshareMaskSeed, ShardAck, ShardChunk, ShardOffer, ShardOfferReply
from node.shards.service import CHUNK_BYTES
from overlay.errors import RemoteProtocolError
from overlay.framing import close_stream
from overlay.wire import decode
from tests.netutil import wait_until
from tests.shards.helpers import seal_bytes

from .helpers import shard_federation, write_random

QUOTA = 16 << 20


def forged_offer(key: Any, holder: str, declared: int) -> ShardOffer:
    """An offer of a shard its sender owns (so the holder must consider it) whose manifest
    declares ``declared`` plaintext bytes, k = n = 1, placed on ``holder``; its fragment hash is
    of another object, which the holder only learns if the transfer ever finishes."""
    sealed, _ = seal_bytes(os.urandom(100), 1, 1, chunk_size=1 << 16)
    m = build_manifest(sealed, key, [holder])
    lay = Layout(declared, m.chunk_size, 1, 1)
    m = dataclasses.replace(m, object_id=os.urandom(16), plaintext_size=declared,
                            ciphertext_size=lay.ciphertext_size, fragment_size=lay.fragment_size,
                            placement=(PlacementEntry(0, holder),))
    return ShardOffer(os.urandom(16), decode(sign_manifest(m, key), SignedManifest), 0)


async def stall_offer(svc: Any, holder: str, offer: ShardOffer, held: list[Any]) -> str:
    """Open the transfer, send every chunk but the last while the holder acks, then keep the
    stream open and silent (it is appended to ``held``). Returns how it ended."""
    stream, reader = await svc._open(holder)
    held.append(stream)
    await svc._send(stream, offer)
    reply = await svc._recv(reader, ShardOfferReply)
    if not reply.accepted:
        return f"refused: {reply.reason}"
    size = offer.manifest.manifest.fragment_size
    offset = 0
    while offset + CHUNK_BYTES < size:
        await svc._send(stream, ShardChunk(offer.transfer_id, offset, os.urandom(CHUNK_BYTES), False))
        offset += CHUNK_BYTES
        ack = await svc._recv(reader, ShardAck)
        if not ack.ok:
            return f"cut off at {offset}: {ack.reason}"
    return f"stalled at {offset}"


async def test_one_owner_stalling_transfers_cannot_fill_a_holder(tmp_path):
    """The attacker opens eight transfers of 2.7 MiB each to the holder (a sixth of its quota
    each), sends all but the last chunk of every one it may and stalls them all. Before per-owner
    quotas and growing reservations each accepted offer reserved its full size: five left no room for
    holder and an honest owner's put was refused. Now the attacker is held to its share (a
    quarter) and the honest put lands on the holder while the attacker's streams still hang."""
    async with shard_federation(tmp_path, 3, quotas={1: QUOTA}) as (_agents, svcs, _):
        owner, holder, attacker = svcs
        hid = holder.agent.peer_id
        held: list[Any] = []
        outcomes = [await stall_offer(attacker, hid, forged_offer(attacker._key, hid, QUOTA // 6), held)
                    for _ in range(8)]
        try:
            write_random(tmp_path / "honest.bin", 3 << 20)
            res = await owner.put(tmp_path / "honest.bin", n=2, k=1)
            assert hid in res["holders"]
            assert any(o.startswith(("refused: owner quota", "cut off")) for o in outcomes), outcomes
            assert holder.store.owner_bytes(attacker.public_key) <= holder.store.owner_quota_bytes
            assert any(s.object_id.hex() == res["object_id"] for s in holder.store.list_shards())
            refused = holder.agent.counters.get("shard_store_refused", "owner quota") \
                + holder.agent.counters.get("shard_store_failed", "OwnerQuotaExceeded")
            assert refused >= 1
        finally:
            for s in held:
                await close_stream(s)
        # Reaped: broken off, the stalled transfers are parked, then aborted, and release it all.
        for p in holder._parked.values():
            p.expires_at = trio.current_time()
        await wait_until(
            lambda: not holder._parked and holder.store.owner_bytes(attacker.public_key) == 0, 30
        )


async def test_a_peer_flooding_reshare_mailboxes_cannot_stop_a_repair(tmp_path):
    """The attacker sends every other node mask seeds for 70 sessions it invented (more than
    the 64 session mailboxes a node keeps) and repeats messages in one session. Before per-peer
    bounds its mailboxes took every slot for 120 s and any repair failed with "too many reshare
    sessions"; now it may hold 4 unclaimed sessions and 2 messages per session, and a lost
    holder is repaired meanwhile through the helpers' and the new holder's mailboxes."""
    async with shard_federation(tmp_path, 7, repair_grace_s=1.0) as (agents, svcs, _):
        owner, attacker = svcs[0], svcs[6]
        write_random(tmp_path / "in.bin", 300_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        refused = 0
        for victim in svcs[1:6]:
            vid = victim.agent.peer_id
            session = os.urandom(16)
            for _ in range(5):  # one session, more messages than a helper ever sends
                try:
                    await attacker.repairer.deliver(vid, ReshareMaskSeed(session, 1, 2, os.urandom(32)))
                except RemoteProtocolError:
                    refused += 1
            for _ in range(70):
                try:
                    seed = ReshareMaskSeed(os.urandom(16), 1, 2, os.urandom(32))
                    await attacker.repairer.deliver(vid, seed)
                except RemoteProtocolError:
                    refused += 1
        for victim in svcs[1:6]:  # (before the repair claims or drops any mailbox)
            assert sum(getattr(b, "opened_by", None) == attacker.agent.peer_id
                       for b in victim._mailboxes.values()) <= 4
        lost = next(pid for pid in res["holders"] if pid != attacker.agent.peer_id)
        next(a for a in agents if a.peer_id == lost).stop()
        await wait_until(lambda: agents[0].counters.get("shard_repaired") == 1, 40)
        m = owner._objects[bytes.fromhex(res["object_id"])][1]
        assert lost not in {p.peer_id for p in m.placement}
        await owner.get(bytes.fromhex(res["object_id"]), tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == (tmp_path / "in.bin").read_bytes()
        assert refused == 5 * (5 - 2 + 70 - 3)
        for victim in svcs[1:6]:
            # At least the flood's refusals: the attacker node may also be an honest helper of
            # the repair, and its one real message then finds its share of sessions taken.
            assert victim.agent.counters.get("shard_mailbox_refused", "messages-per-peer") >= 3
            assert victim.agent.counters.get("shard_mailbox_refused", "sessions-per-peer") >= 67
