"""Repair after loss and revocation, tamper detection, owner-only release, the gate, quotas."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from node.shards.errors import FetchFailed, ShardServiceError
from node.shards.gf256 import KeyShare, interpolate_at
from node.shards.manifest import SignedManifest
from node.shards.messages import ShardAck, ShardChunk, ShardKeyShare, ShardOffer, ShardOfferReply
from node.shards.service import SHARD_PROTOCOL, Job
from overlay.wire import decode
from tests.netutil import make_agent, wait_until
from tests.shards_net.helpers import shard_federation, write_random


def _oid(res):
    return bytes.fromhex(res["object_id"])


async def test_lost_holder_is_repaired_then_get_works(tmp_path):
    async with shard_federation(tmp_path, 7, repair_grace_s=1.0) as (agents, svcs, _):
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 2 * 1024 * 1024 + 3)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        oid = _oid(res)
        lost = res["holders"][1]
        spare = next(a for a in agents[1:] if a.peer_id not in res["holders"])
        next(a for a in agents if a.peer_id == lost).stop()
        await wait_until(lambda: agents[0].counters.get("shard_repaired") == 1, 40)
        m = owner._objects[oid][1]
        assert m.revision == 1 and m.holder_of(1) == spare.peer_id
        # the new holder holds a verified shard (fragment and key share match the manifest)
        new_svc = next(s for s in svcs if s.agent is spare)
        new_svc.store.verify(oid, 1)
        # lose two more original holders: k = 3 remain (incl. the regenerated shard)
        for pid in res["holders"][3:]:
            next(a for a in agents if a.peer_id == pid).stop()
        await wait_until(lambda: sum(1 for h in owner.ls()[0]["holders"] if h["attested"]) == 3, 20)
        await owner.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data


# Slow suite (make test-slow, in CI): revocation -> repair -> get also runs in make test through
# the manager path, test_manager_repair.py::test_revoked_holder_is_repaired_and_forged_...
@pytest.mark.slow
async def test_revoked_holder_is_repaired_at_once_then_get_works(tmp_path):
    # owner + 5 holders + 2 spares (one per repair; a revoked node is never reused)
    async with shard_federation(tmp_path, 8, repair_grace_s=3600) as (agents, svcs, _):
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 700_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        oid = _oid(res)
        bad = res["holders"][0]
        agents[0].revoke(bad, "integrity alarm")
        await wait_until(lambda: agents[0].counters.get("shard_repaired") == 1, 30)
        assert bad not in {p.peer_id for p in owner._objects[oid][1].placement}
        # the other holders were told the new placement
        for s in svcs[1:]:
            for info in s.store.list_shards():
                if s.agent.peer_id != bad:
                    assert s.store.manifest(info.object_id, info.index).revision == 1
        await owner.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
        # a second repair (the helpers now include the regenerated holder) works as well
        second = owner._objects[oid][1].holder_of(0)
        agents[0].revoke(second, "integrity alarm")
        await wait_until(lambda: agents[0].counters.get("shard_repaired") == 2, 30)
        (tmp_path / "out.bin").unlink()
        await owner.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data


async def test_tampered_fragment_is_detected_and_another_holder_used(tmp_path, caplog, monkeypatch):
    async with shard_federation(tmp_path, 6) as (_agents, svcs, _):
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 1_000_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        oid = _oid(res)
        # Tamper with n - k = 2 fragments (0 and 1) and pin the order in which get asks the
        # holders: a get tries the lowest-RTT holders first, and measured RTTs would otherwise
        # decide whether a tampered fragment is ever fetched (it was not, once pings had run).
        tampered = {0, 1}
        m = owner._objects[oid][1]
        holder_of = {p.index: p.peer_id for p in m.placement}
        for s in svcs[1:]:
            for info in s.store.list_shards():
                if info.object_id == oid and info.index in tampered:
                    f = s.store._path(oid, info.index) / "fragment"
                    raw = bytearray(f.read_bytes())
                    raw[100] ^= 0x01
                    f.write_bytes(bytes(raw))
        order = {pid: float(i) for i, pid in holder_of.items()}
        monkeypatch.setattr(owner, "_rtt", lambda pid: order.get(pid, float("inf")))
        with caplog.at_level(logging.WARNING):
            got = await owner.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
        assert sorted(got["from"]) == [2, 3, 4]
        for i in tampered:
            assert any(f"shard {i}" in f and "corrupt" in f for f in got["failed"]), got["failed"]
        assert "stored shard" in caplog.text and "corrupt" in caplog.text


async def test_unauthorised_attested_peer_is_refused_with_reason_logged(tmp_path, caplog):
    async with shard_federation(tmp_path, 6) as (agents, svcs, _):
        owner = svcs[0]
        write_random(tmp_path / "in.bin", 50_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        m = owner._objects[_oid(res)][1]
        thief = svcs[1]  # attested, a holder even, but neither owner nor authorised
        holder = m.holder_of(2) if m.holder_of(2) != thief.agent.peer_id else m.holder_of(3)
        idx = m.indices_held_by(holder)[0]
        with (
            caplog.at_level(logging.WARNING),
            pytest.raises(FetchFailed, match="not the owner or a principal"),
        ):
            await thief.fetcher.fetch_fragment(holder, m, idx, tmp_path / "stolen", want_share=True)
        assert not (tmp_path / "stolen").exists()
        assert "refused to release shard" in caplog.text and "not the owner" in caplog.text
        holder_agent = next(a for a in agents if a.peer_id == holder)
        assert holder_agent.counters.get("shard_fetch_refused") >= 1


async def test_authorised_principal_may_fetch(tmp_path):
    async with shard_federation(tmp_path, 6) as (agents, svcs, nursery):
        from node.shards import service as shard_service
        from tests.shards_net.helpers import shard_config

        # the friend joins after the put's placement, so it is not a holder
        friend_agent = make_agent(
            tmp_path, "friend", config=shard_config(), bootstrap=(agents[1].full_addrs()[0],)
        )
        friend = shard_service.attach(friend_agent, tmp_path / "friend", quota_bytes=1 << 20)
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 80_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3, authorised=(friend.public_key,))
        await nursery.start(friend_agent.run)
        await wait_until(
            lambda: all(
                friend_agent.peers.is_attested(pid)
                and next(a for a in agents if a.peer_id == pid).peers.is_attested(friend_agent.peer_id)
                for pid in res["holders"]
            ),
            60,
        )
        frame = owner._objects[_oid(res)][0]
        await friend.get(_oid(res), tmp_path / "out.bin", manifest_frame=frame)
        assert (tmp_path / "out.bin").read_bytes() == data
        friend_agent.stop()


async def test_unattested_peer_gets_nothing(tmp_path):
    async with shard_federation(tmp_path, 6) as (agents, svcs, nursery):
        owner = svcs[0]
        write_random(tmp_path / "in.bin", 50_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        m = owner._objects[_oid(res)][1]
        from node.shards import service as shard_service

        holder = m.holder_of(0)
        holder_agent = next(a for a in agents if a.peer_id == holder)
        rogue = make_agent(tmp_path, "rogue", build_tag="patched", bootstrap=(holder_agent.full_addrs()[0],))
        rogue_svc = shard_service.attach(rogue, tmp_path / "rogue", quota_bytes=1 << 20)
        await nursery.start(rogue.run)
        await wait_until(lambda: holder_agent.counters.get("attest_rejected", "policy") >= 1, 15)
        with pytest.raises(FetchFailed):
            await rogue_svc.fetcher.fetch_fragment(holder, m, 0, tmp_path / "x", want_share=True)
        assert not (tmp_path / "x").exists()
        assert holder_agent.counters.get("refused_unattested", SHARD_PROTOCOL) >= 1
        assert holder_agent.counters.get("shard_released") == 0
        rogue.stop()


async def test_quota_full_holder_gives_a_clear_error_and_stores_stay_intact(tmp_path):
    async with shard_federation(tmp_path, 6, quotas={3: 64 * 1024}) as (agents, svcs, _):
        owner = svcs[0]
        small = write_random(tmp_path / "small.bin", 10_000)
        first = await owner.put(tmp_path / "small.bin", n=5, k=3)
        before = {
            s.agent.peer_id: sorted((i.object_id, i.index) for i in s.store.list_shards()) for s in svcs
        }
        write_random(tmp_path / "big.bin", 1_000_000)
        with pytest.raises(ShardServiceError, match="quota") as exc:
            await owner.put(tmp_path / "big.bin", n=5, k=3)
        assert agents[3].peer_id in str(exc.value)
        after = {s.agent.peer_id: sorted((i.object_id, i.index) for i in s.store.list_shards()) for s in svcs}
        assert after == before  # the partial put was erased everywhere, the old object untouched
        assert len(owner.ls()) == 1
        await owner.get(_oid(first), tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == small


async def test_fewer_than_k_holders_clear_error_and_no_output(tmp_path):
    async with shard_federation(tmp_path, 6, repair_grace_s=3600) as (agents, svcs, _):
        owner = svcs[0]
        write_random(tmp_path / "in.bin", 300_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        dead = res["holders"][:3]
        for pid in dead:
            next(a for a in agents if a.peer_id == pid).stop()
        await wait_until(lambda: not any(agents[0].peers.is_attested(p) for p in dead), 20)
        with pytest.raises(ShardServiceError) as exc:
            await owner.get(_oid(res), tmp_path / "out.bin")
        msg = str(exc.value)
        assert "only 2 of the 3 needed shards" in msg
        for pid in dead:
            assert pid in msg
        assert not (tmp_path / "out.bin").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]
        assert not list(owner.staging.iterdir())


async def test_rm_erases_everywhere_with_verified_receipts(tmp_path):
    async with shard_federation(tmp_path, 6) as (_agents, svcs, _):
        owner = svcs[0]
        write_random(tmp_path / "in.bin", 100_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        out = await owner.rm(_oid(res))
        assert len(out["receipts"]) == 5 and all(r["existed"] for r in out["receipts"])
        assert all(not s.store.list_shards() for s in svcs)
        assert owner.ls() == []
        with pytest.raises(ShardServiceError, match="unknown object"):
            await owner.get(_oid(res), tmp_path / "out.bin")


async def test_interrupted_store_transfer_resumes_at_the_offset(tmp_path):
    """A store stream broken mid-fragment is resumed from the holder's offset, not from 0."""
    async with shard_federation(tmp_path, 6) as (_agents, svcs, _):
        owner = svcs[0]
        write_random(tmp_path / "in.bin", 3_000_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        oid = _oid(res)
        frame, m = owner._objects[oid]
        holder = m.holder_of(0)
        holder_svc = next(s for s in svcs if s.agent.peer_id == holder)
        # the holder erases its shard, then the owner re-stores it by hand, breaking the stream
        await owner.erase_on(holder, oid, 0)
        got, _ = await owner.fetcher.fetch_k(m, want_share=True, exclude={holder}, job=None)
        regen = owner._tmp_path("t")
        await trio.to_thread.run_sync(owner.repairer.regenerate, m, got, 0, regen)
        tid = os.urandom(16)
        stream, reader = await owner._open(holder)
        await owner._send(stream, ShardOffer(tid, decode(frame, SignedManifest), 0))
        reply = await owner._recv(reader, ShardOfferReply)
        assert reply.accepted and reply.resume_offset == 0
        data = regen.read_bytes()
        half = 2 * 256 * 1024
        for off in range(0, half, 256 * 1024):
            await owner._send(stream, ShardChunk(tid, off, data[off : off + 256 * 1024], False))
            assert (await owner._recv(reader, ShardAck)).ok
        await stream.reset()
        await wait_until(lambda: tid in holder_svc._parked, 10)
        # the owner does not keep shares; rebuild share 0 from the k fetched ones for this test
        share0 = KeyShare(1, interpolate_at([s for _, s in got.values()], 1))
        sent: list[int] = []

        async def finish(s, t):
            await owner._send(s, ShardKeyShare(t, oid, 0, share0.value))

        # resume with the same transfer id through the normal sender: only the rest is sent
        await owner._store_attempt(
            holder, decode(frame, SignedManifest), m, 0, regen, tid, finish, sent.append
        )
        assert sent[0] == half  # the first progress report is the holder's resume offset
        holder_svc.store.verify(oid, 0)
        for p, _ in got.values():
            p.unlink()
        regen.unlink()


async def test_holder_lost_mid_get_fails_over_to_another_holder(tmp_path):
    async with shard_federation(tmp_path, 6, repair_grace_s=3600) as (agents, svcs, _):
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 12 * 1024 * 1024)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        m = owner._objects[_oid(res)][1]
        # the get asks the 3 fastest holders first: stop one of them once bytes are flowing
        first = sorted(m.placement, key=lambda p: (owner._rtt(p.peer_id), p.index))[0]
        victim = next(a for a in agents if a.peer_id == first.peer_id)
        job = Job("t", "get")
        result = {}

        async def run_get():
            result.update(await owner.get(_oid(res), tmp_path / "out.bin", job=job))

        async with trio.open_nursery() as n:
            n.start_soon(run_get)
            await wait_until(lambda: job.done > 0, 30, step_s=0.001)
            victim.stop()
        assert (tmp_path / "out.bin").read_bytes() == data
        if first.index not in result["from"]:  # the usual case: its transfer broke and was replaced
            assert any(f"shard {first.index} on {first.peer_id}" in f for f in result["failed"])
        assert len(result["from"]) == 3


async def test_a_holder_forging_its_fragment_on_the_wire_is_caught_and_replaced(tmp_path, monkeypatch):
    """The holder of fragment 0 flips a bit in every chunk it sends. The get combines while it
    fetches: the forged stripe fails authentication before that fragment's hash is checked, so
    the combiner waits for the verdict, drops fragment 0 and uses another. The output is
    exact, and the forger is named."""
    async with shard_federation(tmp_path, 6, repair_grace_s=3600) as (_agents, svcs, _):
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 3_000_000)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        oid = _oid(res)
        m = owner._objects[oid][1]
        holder_of = {p.index: p.peer_id for p in m.placement}
        forger = next(s for s in svcs if s.agent.peer_id == holder_of[0])
        real_send = forger._send

        async def forged_send(stream, msg):
            if isinstance(msg, ShardChunk):
                data_ = bytearray(msg.data)
                data_[len(data_) // 2] ^= 0x10
                msg = ShardChunk(msg.transfer_id, msg.offset, bytes(data_), msg.last)
            await real_send(stream, msg)

        monkeypatch.setattr(forger, "_send", forged_send)
        order = {pid: float(i) for i, pid in holder_of.items()}  # fragment 0 is asked first
        monkeypatch.setattr(owner, "_rtt", lambda pid: order.get(pid, float("inf")))
        got = await owner.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
        assert 0 not in got["from"] and len(got["from"]) == 3
        assert any(f"shard 0 on {holder_of[0]}" in f and "hash mismatch" in f for f in got["failed"]), got
        assert not list(owner.staging.iterdir())
