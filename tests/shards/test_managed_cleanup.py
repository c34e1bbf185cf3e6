"""ManagedShards' driver of the pure decisions, without a network: stale_tick on a real store
(marks written, shards erased only after the grace period, a failed erase retried) and
manager_tick on a fake manager role (what it commits, when, and how often per tick).

The decisions themselves are tested in test_sweep.py and test_holder_loss.py; these tests
check that the driver feeds them the store, the view and the clock, and acts on the answer.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.state import (
    ADMITTED,
    LEFT,
    REVOKED,
    Member,
    Placement,
    RepairShard,
    ShardHolder,
    SwarmState,
    apply,
)
from node import manager as manager_mod
from node.metrics import Counters
from node.shards import managed as managed_mod
from node.shards.managed import ManagedShards
from node.shards.store import ShardStore, StoreError

from .helpers import signed_object

ME = "12D3KooWholder"
FOUNDER = "12D3KooWfounder"
GRACE = 30.0


class FakeRole:
    """What ManagedShards asks of node.manager.ManagerRole: a committed view, leadership, and
    a command channel that records what it was asked to commit."""

    def __init__(self, st: SwarmState, index: int, *, leader: bool = False) -> None:
        self.st, self.index, self.leader = st, index, leader
        self.commands: list[Any] = []
        self.accept = True

    def view(self) -> tuple[SwarmState, int]:
        return self.st, self.index

    def is_leader(self) -> bool:
        return self.leader

    def leader_peer(self) -> str | None:
        return ME if self.leader else FOUNDER

    async def command(self, cmd: Any, timeout_s: float = 10.0) -> tuple[bool, str]:
        self.commands.append(cmd)
        return (True, "") if self.accept else (False, "rejected")


class FakeAgent:
    """The agent attributes ManagedShards reads (a class: the role registry holds weak keys)."""

    def __init__(self, attested: set[str]) -> None:
        self.peer_id = ME
        self.counters = Counters()
        self.peers = SimpleNamespace(is_attested=attested.__contains__)
        self.engine = SimpleNamespace(policy=SimpleNamespace(min_score=0))


def member(pid: str, status: str = ADMITTED, raft_id: int = 9, provider: str = "") -> Member:
    return Member(pid, raft_id, status, provider or pid, pid, "sim", 900, 0)


def members(*extra: Member) -> dict[str, Member]:
    # this node shares h0's provider, so a repair's spread prefers "new" over it
    ms = [member(FOUNDER, raft_id=1), member(ME, raft_id=2, provider="h0"), *extra]
    return {m.node_id: m for m in ms}


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = ShardStore(tmp_path, b"s" * 32, quota_bytes=10**7, receipt_key=Ed25519PrivateKey.generate(),
                       holder_peer_id=ME, chunk_bytes=1024)
    attested: set[str] = set()
    agent = FakeAgent(attested)
    svc = SimpleNamespace(agent=agent, _objects={}, store=store, repair_tick_s=1.0, repair_grace_s=GRACE,
                          timeout_s=5.0)
    role = FakeRole(SwarmState(members=members()), 1)
    monkeypatch.setitem(manager_mod._ROLES, agent, role)
    return SimpleNamespace(m=ManagedShards(svc), store=store, role=role, agent=agent, attested=attested)


def put_shard(store: ShardStore, index: int = 1) -> bytes:
    _, sealed, fragments, manifest, frame = signed_object(os.urandom(1000), k=2, n=3, chunk_size=256)
    store.put(frame, index, io.BytesIO(fragments[index]), sealed.shares[index])
    return manifest.object_id


def placement(oid: bytes, holders: list[tuple[str, bool]], epoch: int = 0) -> Placement:
    return Placement(oid.hex(), tuple(ShardHolder(i, h, p) for i, (h, p) in enumerate(holders)),
                     owner="12D3KooWowner", k=2, epoch=epoch)


async def sweep(node, st: SwarmState, index: int) -> None:
    node.role.st, node.role.index = st, index
    node.m._next_stale_check = -float("inf")  # the sweep's own pacing is not under test here
    await node.m.stale_tick()


def stored(store: ShardStore) -> set[tuple[bytes, int]]:
    return {(s.object_id, s.index) for s in store.list_shards()}


# ------------------------------------------------------------------------- the holder's clean-up


async def test_a_shard_placed_here_is_marked_with_the_view_and_kept(node, autojump_clock) -> None:
    oid = put_shard(node.store)
    st = SwarmState(members=members(), placements={oid.hex(): placement(oid, [("a", False), (ME, False)])})
    await sweep(node, st, 5)
    assert node.store.placed(oid, 1) == (FOUNDER, 5)
    await trio.sleep(GRACE * 3)
    await sweep(node, st, 9)
    assert node.store.placed(oid, 1) == (FOUNDER, 5)  # first placement kept: a later drop is judged from it
    assert stored(node.store) == {(oid, 1)}


async def test_a_replaced_shard_is_erased_after_the_grace_period_only(node, autojump_clock) -> None:
    oid = put_shard(node.store)
    st = SwarmState(members=members(), placements={oid.hex(): placement(oid, [("a", False), ("b", False)])})
    await sweep(node, st, 5)
    await trio.sleep(GRACE - 1)
    await sweep(node, st, 6)
    assert stored(node.store) == {(oid, 1)}
    await trio.sleep(1)
    await sweep(node, st, 6)
    assert stored(node.store) == set()
    assert node.agent.counters.get("shard_swept", "replaced") == 1
    assert node.m._stale_since == {}


async def test_a_dropped_placement_is_erased_only_from_a_newer_view_of_the_same_federation(
        node, autojump_clock) -> None:
    oid = put_shard(node.store)
    here = placement(oid, [("a", False), (ME, False)])
    placed = SwarmState(members=members(), placements={oid.hex(): here})
    await sweep(node, placed, 5)
    gone = SwarmState(members=members())
    other = SwarmState(members={FOUNDER + "x": member(FOUNDER + "x", raft_id=1)})
    # the view the mark was written from, an older one, another federation's
    for st, index in ((gone, 5), (gone, 2), (other, 50)):
        await sweep(node, st, index)
        await trio.sleep(GRACE * 2)
        await sweep(node, st, index)
        assert stored(node.store) == {(oid, 1)}, index
    await sweep(node, gone, 6)
    await trio.sleep(GRACE)
    await sweep(node, gone, 6)
    assert stored(node.store) == set()
    assert node.agent.counters.get("shard_swept", "dropped") == 1


async def test_no_view_of_a_federation_erases_nothing(node, autojump_clock) -> None:
    oid = put_shard(node.store)
    node.store.note_placed(oid, 1, FOUNDER, 1)
    empty = SwarmState()  # a restarted node before it has a view: no founder, no federation
    for _ in range(3):
        await sweep(node, empty, 100)
        await trio.sleep(GRACE)
    assert stored(node.store) == {(oid, 1)}


async def test_a_shard_being_rebuilt_here_is_neither_erased_nor_marked(node, autojump_clock) -> None:
    oid = put_shard(node.store)
    st = SwarmState(members=members(), placements={oid.hex(): placement(oid, [("a", False), ("b", False)])})
    node.m._rebuilding.add((oid.hex(), 1))
    for _ in range(3):
        await sweep(node, st, 5)
        await trio.sleep(GRACE)
    assert stored(node.store) == {(oid, 1)} and node.store.placed(oid, 1) is None


async def test_a_failed_erase_is_retried_at_the_next_sweep(node, autojump_clock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    oid = put_shard(node.store)
    st = SwarmState(members=members(), placements={oid.hex(): placement(oid, [("a", False), ("b", False)])})
    await sweep(node, st, 5)
    await trio.sleep(GRACE)
    real_erase = node.store.erase

    def failing(*args: Any) -> Any:
        raise StoreError("disk on fire")

    monkeypatch.setattr(node.store, "erase", failing)
    with pytest.raises(StoreError):
        await sweep(node, st, 5)
    monkeypatch.setattr(node.store, "erase", real_erase)
    await sweep(node, st, 5)  # no second grace period: the clock survived the failure
    assert stored(node.store) == set()


# ------------------------------------------------------------------------- the manager's tick


def lost_world(n_objects: int, status: str = ADMITTED) -> SwarmState:
    holders = ["h0", "h1", "h2"]
    ms = members(*(member(h) for h in holders[:2]), member("h2", status), member("new"))
    ps = {}
    for i in range(n_objects):
        oid = bytes([i]) * 16
        ps[oid.hex()] = placement(oid, [(h, False) for h in holders], epoch=3)
    return SwarmState(members=ms, placements=ps)


async def test_a_revoked_holder_is_repaired_on_the_first_tick(node, autojump_clock) -> None:
    node.attested.update({"h0", "h1", "h2", "new"})
    node.role.st, node.role.leader = lost_world(1, REVOKED), True
    await node.m.manager_tick()
    (cmd,) = node.role.commands
    assert cmd == RepairShard((b"\0" * 16).hex(), 2, "h2", "new", 3, "revoked")
    assert node.agent.counters.get("shard_repair_scheduled") == 1


async def test_an_unreachable_holder_is_repaired_only_after_the_grace_period(node, autojump_clock) -> None:
    node.attested.update({"h0", "h1", "new"})
    node.role.st, node.role.leader = lost_world(1), True
    await node.m.manager_tick()
    await trio.sleep(GRACE - 1)
    await node.m.manager_tick()
    assert node.role.commands == []
    await trio.sleep(1)
    await node.m.manager_tick()
    (cmd,) = node.role.commands
    assert (cmd.old_holder, cmd.new_holder, cmd.reason) == ("h2", "new", "unreachable or unattested for 30s")


async def test_a_holder_seen_again_restarts_its_grace_period(node, autojump_clock) -> None:
    node.attested.update({"h0", "h1", "new"})
    node.role.st, node.role.leader = lost_world(1), True
    await node.m.manager_tick()
    await trio.sleep(GRACE - 1)
    node.attested.add("h2")
    await node.m.manager_tick()
    node.attested.discard("h2")
    await trio.sleep(1)
    await node.m.manager_tick()
    await trio.sleep(GRACE - 1)
    await node.m.manager_tick()
    assert node.role.commands == []


async def test_a_follower_commits_nothing_and_forgets_its_clocks(node, autojump_clock) -> None:
    node.attested.update({"h0", "h1", "new"})
    node.role.st, node.role.leader = lost_world(1, LEFT), False
    await node.m.manager_tick()
    assert node.role.commands == [] and node.m._down_since == {}


async def test_at_most_the_cap_of_repairs_per_tick_and_a_failed_one_backs_off(node, autojump_clock) -> None:
    node.attested.update({"h0", "h1", "new"})
    cap = managed_mod.MAX_REPAIRS_PER_TICK
    node.role.st, node.role.leader = lost_world(cap + 3, LEFT), True
    node.role.accept = False
    await node.m.manager_tick()
    assert len(node.role.commands) == cap
    await trio.sleep(1)
    await node.m.manager_tick()  # the first cap placements back off; the other three are tried
    assert len(node.role.commands) == cap + 3
    assert len({c.object_id for c in node.role.commands}) == cap + 3


# Regression: a successful repair used to reset the lost holder's down clock, so an
# unreachable holder's N shards were repaired one grace period apart (N x grace in all).
async def test_every_shard_of_an_unreachable_holder_is_repaired_one_grace_period_after_it_went(
        node, autojump_clock) -> None:
    node.attested.update({"h0", "h1", "new"})
    node.role.st, node.role.leader = lost_world(3), True

    async def command(cmd: Any, timeout_s: float = 10.0) -> tuple[bool, str]:
        node.role.commands.append(cmd)
        node.role.st, result = apply(node.role.st, cmd)  # the commit moves the index for real
        return result.ok, result.error or ""

    node.role.command = command
    for _ in range(int(GRACE) + 5):  # ticks of 1 s
        await node.m.manager_tick()
        await trio.sleep(1)
    assert sorted(c.object_id for c in node.role.commands) == sorted(node.role.st.placements)
