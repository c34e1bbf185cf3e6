"""Placement in the replicated swarm state and manager-scheduled repair, on real in-process nodes
that run the manager role (Raft council) and the shard service."""

from __future__ import annotations

import os

import pytest
import trio

from node.attestation.base import AttestationUnavailable
from node.shards.errors import FetchFailed
from node.shards.messages import RepairInvite, ShardAck, ShardDrop, ShardManagerReply, ShardRepairDone
from node.shards.service import Job
from tests.netutil import fully_attested, wait_until
from tests.shards_net.helpers import managed_federation, write_random


def _oid(res):
    return bytes.fromhex(res["object_id"])


def _calm(fed, pids):
    """Of ``pids``, the one whose loss disturbs the Raft council least: a non-voter, else a
    voter that is not the manager (an in-process council on a loaded machine can take many
    seconds to settle after losing its leader; that is the manager layer's business, not the
    subject of these tests)."""
    nodes = [fed.by_peer(p) for p in pids]
    for n in nodes:
        if n.role.status()["role"] == "follower":
            return n
    return next(n for n in nodes if not n.role.is_leader())


def _settled(p, pid=None):
    return p is not None and not any(h.pending for h in p.holders) and (
        pid is None or all(h.holder != pid for h in p.holders))


# Slow suite (make test-slow, in CI): keeps make test under 10 minutes in a fresh clone.
@pytest.mark.slow
async def test_put_replaces_a_dying_holder_and_the_placement_is_in_every_view(tmp_path):
    async with managed_federation(tmp_path, 7, repair_grace_s=3600) as fed:
        owner = _calm(fed, [n.peer_id for n in fed.nodes])
        data = write_random(tmp_path / "in.bin", 6 * 1024 * 1024)
        job = Job("t", "put")
        result = {}

        async def run_put():
            result.update(await owner.svc.put(tmp_path / "in.bin", n=5, k=3, job=job))

        async with trio.open_nursery() as n:
            n.start_soon(run_put)
            await wait_until(lambda: job.phase == "sending", 60, step_s=0.001)
            victim = _calm(fed, job.holders)
            await fed.crash(victim)
        assert result["placement_committed"] is True
        holders = result["holders"]
        assert victim.peer_id not in holders and len(set(holders)) == 5 and owner.peer_id not in holders
        assert result["revision"] >= 1 and owner.agent.counters.get("shard_put_replaced") >= 1
        oid = _oid(result)
        # every live node's replicated view has the committed placement: the final holders,
        # the owner, k, and the digest of the owner-signed manifest it was registered from
        live = [x for x in fed.nodes if x is not victim]
        frame, m = owner.svc._objects[oid]

        def everywhere() -> bool:
            for x in live:
                p = x.role.view()[0].placements.get(oid.hex())
                if p is None or [h.holder for h in p.holders] != holders:
                    return False
            return True

        await wait_until(everywhere, 30)
        p = live[0].role.view()[0].placements[oid.hex()]
        assert (p.owner, p.k, p.manifest_revision) == (owner.peer_id, 3, m.revision)
        assert p.manifest_digest == __import__("hashlib").sha256(frame).digest()
        # every holder stored the final manifest revision
        for pid in holders:
            s = fed.by_peer(pid).svc.store
            assert s.manifest(oid, m.indices_held_by(pid)[0]).revision == m.revision
        await owner.svc.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
        # rm erases everywhere and drops the committed placement
        out = await owner.svc.rm(oid)
        assert len(out["receipts"]) == 5
        await wait_until(lambda: all(oid.hex() not in x.role.view()[0].placements for x in live), 60)


async def test_crashed_holder_is_repaired_by_the_manager_while_the_owner_is_offline(tmp_path):
    # six nodes: the five-voter council, the owner outside it; 3 holders, k = 2, one spare
    async with managed_federation(tmp_path, 6, repair_grace_s=1.0) as fed:
        owner = _calm(fed, [n.peer_id for n in fed.nodes])
        data = write_random(tmp_path / "in.bin", 1_500_000)
        res = await owner.svc.put(tmp_path / "in.bin", n=3, k=2)
        oid = _oid(res)
        # (a holder revoked by the council between placement and commit, which a loaded machine
        # can provoke, makes the owner repair it and register afterwards)
        await wait_until(lambda: owner.svc.managed.owned_placement(owner.svc._objects[oid][1]), 90)
        res["holders"] = [h.holder for h in owner.svc.managed.placement(oid).holders]
        fed.stop(owner)  # the owner goes offline first: nothing below may need it
        lost = _calm(fed, res["holders"])
        j = res["holders"].index(lost.peer_id)
        await fed.crash(lost)
        live = [x for x in fed.nodes if x not in (owner, lost)]

        def repaired() -> bool:
            return all(_settled(x.role.view()[0].placements.get(oid.hex()), lost.peer_id) for x in live)

        await wait_until(repaired, 120)
        p = live[0].role.view()[0].placements[oid.hex()]
        # the new holder is a live node outside the placement: usually the one spare, but a loaded
        # machine can have the council quarantine and replace another holder first, and the spare
        # then already holds that index
        now_holding = [h.holder for h in p.holders]
        assert len(set(now_holding)) == len(now_holding) and p.epoch >= 2
        spare = fed.by_peer(now_holding[j])
        assert spare in live and spare.peer_id != res["holders"][j]
        # the new holder stores a verified shard: fragment and key share match the owner's hashes
        spare.svc.store.verify(oid, j)
        assert spare.agent.counters.get("shard_rebuilt") >= 1
        assert sum(x.agent.counters.get("shard_repair_scheduled") for x in live) >= 1
        # the owner comes back: its get uses the committed placement, then it re-signs the
        # manifest (revision 1) naming the new holder and pushes it
        back = await fed.restart(owner)
        await wait_until(lambda: fully_attested([x.agent for x in [*live, back]]), 90)
        # (its own persisted state holds the placement from before the repair: wait until it has
        # caught up with the repaired one, not merely any)
        await wait_until(lambda: (q := back.role.view()[0].placements.get(oid.hex())) is not None
                         and q.epoch >= p.epoch, 60)
        listing = back.svc.ls()[0]
        assert listing["placement"].startswith("committed")
        assert spare.peer_id in {h["peer_id"] for h in listing["holders"]}
        # another holder dies: k = 2 remain, including the regenerated shard
        for pid in [h for h in now_holding if h != spare.peer_id][:1]:
            fed.stop(fed.by_peer(pid))
        await back.svc.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data


async def test_revoked_holder_is_repaired_and_forged_repair_requests_are_refused(tmp_path):
    # six nodes: the owner, 3 holders (k = 2), a forger, and one spare
    async with managed_federation(tmp_path, 6, repair_grace_s=3600) as fed:
        owner = _calm(fed, [n.peer_id for n in fed.nodes])
        data = write_random(tmp_path / "in.bin", 700_000)
        res = await owner.svc.put(tmp_path / "in.bin", n=3, k=2)
        oid = _oid(res)
        m = owner.svc._objects[oid][1]
        outsiders = [x for x in fed.nodes if x.peer_id not in res["holders"] and x is not owner]
        forger = outsiders[0]
        holder = fed.by_peer(res["holders"][0])
        # 1. a fragment without the key share, asked by a node the placement does not name
        for _ in range(5):  # a stream that fails to open on a loaded machine is not the point
            with pytest.raises(FetchFailed) as exc:
                await forger.svc.fetcher.fetch_fragment(holder.peer_id, m, 0, tmp_path / "stolen",
                                                        want_share=False)
            if "cannot open" not in str(exc.value):
                break
        assert "nor a repairing holder named by the committed placement" in str(exc.value)
        assert not (tmp_path / "stolen").exists()
        # 2. a reshare invite claiming the repair of shard 1
        stream, reader = await forger.svc._open(holder.peer_id)
        await forger.svc._send(stream, RepairInvite(os.urandom(16), oid, 2, (1, 3), forger.peer_id))
        ack = await forger.svc._recv(reader, ShardAck)
        await stream.close()
        assert not ack.ok and "not named by the committed placement" in ack.reason
        assert holder.agent.counters.get("shard_repair_refused") >= 2
        assert holder.agent.counters.get("shard_released") == 0
        # 3. a repair report for a shard it was never given
        reply = await forger.svc.managed.ask(ShardRepairDone(os.urandom(16), oid, 1))
        assert isinstance(reply, ShardManagerReply) and not reply.ok
        assert "does not name" in reply.reason
        # revocation through consensus: the manager repairs at once (the grace is an hour). The
        # revoked holder is not the manager: revoking the manager is another scenario (see
        # test_a_follower_catches_up_after_the_manager_holder_is_revoked), and picking it by
        # chance made this test fail about one run in three.
        lead = fed.leader()
        assert lead is not None
        idx = next(i for i, h in enumerate(res["holders"]) if h != lead.peer_id)
        bad = res["holders"][idx]
        lead.role.request_revoke(bad, "integrity alarm")
        live = [x for x in fed.nodes if x.peer_id != bad]
        await wait_until(
            lambda: all(_settled(x.role.view()[0].placements.get(oid.hex()), bad) for x in live), 90)
        p = live[0].role.view()[0].placements[oid.hex()]
        new = fed.by_peer(p.holders[idx].holder)
        new.svc.store.verify(oid, idx)
        # the owner adopts: manifest revision 1 names the new holder, every holder has it
        await wait_until(lambda: owner.svc._objects[oid][1].revision == m.revision + 1, 60)
        assert owner.svc._objects[oid][1].holder_of(idx) == new.peer_id
        for h in p.holders:
            store = fed.by_peer(h.holder).svc.store
            await wait_until(lambda h=h, s=store: s.manifest(oid, h.index).revision == m.revision + 1, 30)
        await owner.svc.get(oid, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data


def _holds(node, oid: bytes) -> list[int]:
    return [s.index for s in node.svc.store.list_shards() if s.object_id == oid]


# Slow suite (make test-slow, in CI).
@pytest.mark.slow
async def test_holders_erase_shards_the_committed_state_no_longer_places_on_them(tmp_path):
    """A holder replaced while its peers could not attest it keeps a valid shard that nobody
    will ask for; the owner, offline, cannot erase it. Back, the holder sees its index moved to
    a holder whose rebuild is done and erases its copy itself. Then the placement is dropped while shards
    remain (what an rm racing a repair leaves on the new holder): every holder that saw the
    placement erases its shard."""
    async with managed_federation(tmp_path, 6, repair_grace_s=1.0) as fed:
        owner = _calm(fed, [n.peer_id for n in fed.nodes])
        write_random(tmp_path / "in.bin", 300_000)
        res = await owner.svc.put(tmp_path / "in.bin", n=3, k=2)
        oid = _oid(res)
        await wait_until(lambda: owner.svc.managed.owned_placement(owner.svc._objects[oid][1]), 90)
        holders = [h.holder for h in owner.svc.managed.placement(oid).holders]
        # every holder marks its shard as placed by the committed state
        await wait_until(lambda: all(fed.by_peer(h).svc.store.placed(oid, i) is not None
                                     for i, h in enumerate(holders)), 30)
        fed.stop(owner)  # offline: its adoption cannot erase anything below
        lost = _calm(fed, holders)
        j = holders.index(lost.peer_id)
        # The holder's TEE stops producing evidence: every peer misses its re-attestations and
        # quarantines it as unreachable, and the manager moves its shard. It stays up, so it
        # keeps its copy, and "comes back" when its evidence does.
        real = lost.agent.provider.get_evidence

        def unavailable(report_data: bytes):  # type: ignore[no-untyped-def]
            raise AttestationUnavailable("TEE device busy (test)")

        lost.agent.provider.get_evidence = unavailable  # type: ignore[method-assign]
        live = [x for x in fed.nodes if x not in (owner, lost)]
        await wait_until(lambda: all(_settled(x.role.view()[0].placements.get(oid.hex()), lost.peer_id)
                                     for x in live), 120)
        lost.agent.provider.get_evidence = real  # type: ignore[method-assign]
        # (the counter moves once the erase, run in a worker thread, has returned)
        await wait_until(lambda: lost.agent.counters.get("shard_swept", "replaced") == 1, 60)
        assert j not in _holds(lost, oid)
        assert lost.svc.store.placed(oid, j) is None
        # the shard lives on where the committed state puts it
        p = live[0].role.view()[0].placements[oid.hex()]
        now_holding = [h.holder for h in p.holders]
        fed.by_peer(now_holding[j]).svc.store.verify(oid, j)
        current = [fed.by_peer(h) for h in now_holding]
        assert all(x.agent.counters.get("shard_swept") == 0 for x in current)
        # The owner drops the placement without erasing (the manager checks it is the owner):
        # every current holder saw the placement, and erases its shard after the grace period.
        owner = await fed.restart(owner)
        mo = owner.svc.managed

        def adopted() -> bool:  # the owner re-signed its manifest for the committed holders
            p = mo.placement(oid) if mo.active() else None
            return (p is not None and oid not in mo._unregistered and oid not in mo._adopting
                    and p.manifest_revision == owner.svc._objects[oid][1].revision)

        await wait_until(adopted, 90)
        reply = await owner.svc.managed.ask(ShardDrop(os.urandom(16), oid))
        assert reply.ok, reply.reason
        await wait_until(lambda: all(x.agent.counters.get("shard_swept", "dropped") == 1
                                     for x in current), 60)
        for i, x in enumerate(current):
            assert not _holds(x, oid) and x.svc.store.placed(oid, i) is None


# Slow suite (make test-slow): a follower outside the council catches up with a successor.
@pytest.mark.slow
async def test_a_follower_catches_up_after_the_manager_holder_is_revoked(tmp_path):
    """The manager (the founder, also a holder) is revoked: the council elects a successor,
    which repairs the shard; every live node, the follower outside the council too, must then
    hold the repaired placement. The follower's own view still shows the revoked manager
    attested, and it answers every poll with its last, stale state: the follower must ask
    another member (it once stayed on the revoked manager's term for ever)."""
    async with managed_federation(tmp_path, 6, repair_grace_s=3600) as fed:
        owner = _calm(fed, [n.peer_id for n in fed.nodes])
        write_random(tmp_path / "in.bin", 300_000)
        lead = fed.leader()
        assert lead is not None
        res = None
        for _ in range(6):  # place until the manager holds a shard (the placement is by score)
            res = await owner.svc.put(tmp_path / "in.bin", n=3, k=2)
            if lead.peer_id in res["holders"]:
                break
        if res is None or lead.peer_id not in res["holders"]:
            pytest.fail("the manager was never given a shard: the scenario did not arise")
        oid = _oid(res)
        lead.role.request_revoke(lead.peer_id, "integrity alarm")
        live = [x for x in fed.nodes if x.peer_id != lead.peer_id]
        await wait_until(
            lambda: all(_settled(x.role.view()[0].placements.get(oid.hex()), lead.peer_id)
                        for x in live), 60)
