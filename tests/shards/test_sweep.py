"""The holder's clean-up (node/shards/sweep.py): what it erases, what it never erases.

One scenario test per rule of the module docstring, then Hypothesis properties over random
committed states, marks, rebuilds and clocks, checked against the rules written out again
as a naive reference.
"""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.state import Placement, ShardHolder, SwarmState
from node.shards.sweep import DROPPED, REPLACED, Erase, plan_sweep

ME = "me"
FED = "fedA"
OTHER_FED = "fedB"
GRACE = 30.0
IMPURE = {"trio", "libp2p", "time", "os", "random", "socket", "overlay"}
OID = bytes(range(16))
KEY = (OID.hex(), 1)


def placed(oid: bytes, holders: list[tuple[str, bool]]) -> Placement:
    entries = tuple(ShardHolder(i, pid, pending) for i, (pid, pending) in enumerate(holders))
    return Placement(oid.hex(), entries, owner="owner", k=1)


def state(*placements: Placement) -> SwarmState:
    return SwarmState(placements={p.object_id: p for p in placements})


def sweep(st_: SwarmState, *, view_index: int = 10, marks=None, rebuilding=(), since=None, now: float = 100.0,
          grace: float = GRACE, shards=((OID, 1),)):
    return plan_sweep(st_, view_index, FED, ME, list(shards), marks or {}, set(rebuilding), since or {},
                      now, grace)


def erased(plan) -> set[tuple[bytes, int]]:
    return {(e.object_id, e.index) for e in plan.erase}


# ------------------------------------------------------------------------- one test per rule


def test_placed_here_is_marked_and_kept_even_when_long_stale_before() -> None:
    # a clock left from an earlier stale spell does not erase a shard placed here again
    for pending in (False, True):
        plan = sweep(state(placed(OID, [("a", False), (ME, pending)])), since={KEY: 0.0})
        assert plan.erase == () and plan.stale_since == {}
        assert plan.mark == ((OID, 1),)


def test_placed_here_and_marked_in_this_federation_is_not_marked_again() -> None:
    plan = sweep(state(placed(OID, [("a", False), (ME, False)])), marks={(OID, 1): (FED, 3)})
    assert plan.mark == () and plan.erase == ()


def test_a_mark_of_another_federation_is_replaced_by_ours() -> None:
    plan = sweep(state(placed(OID, [("a", False), (ME, False)])), marks={(OID, 1): (OTHER_FED, 3)})
    assert plan.mark == ((OID, 1),)


def test_replaced_by_a_settled_holder_is_erased_after_the_grace_period() -> None:
    st_ = state(placed(OID, [("a", False), ("b", False)]))
    first = sweep(st_, now=100.0)
    assert first.erase == () and first.stale_since == {KEY: 100.0} and first.mark == ()
    before = sweep(st_, since=first.stale_since, now=100.0 + GRACE - 0.001)
    assert before.erase == () and before.stale_since == {KEY: 100.0}
    due = sweep(st_, since=before.stale_since, now=100.0 + GRACE)
    assert due.erase == (Erase(OID, 1, REPLACED, "index 1 moved to b"),)
    assert due.stale_since == {KEY: 100.0}  # the caller drops it once the erase succeeded


def test_a_repair_pending_on_another_holder_erases_nothing() -> None:
    plan = sweep(state(placed(OID, [("a", False), ("b", True)])), since={KEY: 0.0})
    assert plan.erase == () and plan.stale_since == {}


def test_a_shard_being_rebuilt_here_erases_and_marks_nothing() -> None:
    for p in (placed(OID, [("a", False), ("b", False)]), placed(OID, [("a", False), (ME, True)])):
        plan = sweep(state(p), rebuilding={KEY}, since={KEY: 0.0})
        assert plan.erase == () and plan.mark == () and plan.stale_since == {}
    plan = sweep(state(), marks={(OID, 1): (FED, 3)}, rebuilding={KEY}, since={KEY: 0.0})
    assert plan.erase == ()


def test_an_index_beyond_the_placement_erases_nothing() -> None:
    plan = sweep(state(placed(OID, [("a", False)])), since={KEY: 0.0})
    assert plan.erase == () and plan.mark == ()


def test_dropped_after_this_holder_saw_it_is_erased_after_the_grace_period() -> None:
    marks = {(OID, 1): (FED, 7)}
    first = sweep(state(), view_index=8, marks=marks, now=50.0)
    assert first.erase == () and first.stale_since == {KEY: 50.0}
    due = sweep(state(), view_index=8, marks=marks, since=first.stale_since, now=50.0 + GRACE)
    assert due.erase == (Erase(OID, 1, DROPPED, "placed here at state index 7, gone at 8"),)


def test_no_placement_and_no_mark_erases_nothing() -> None:
    # a placement not yet committed (a put in flight) or an object put without a manager
    plan = sweep(state(), since={KEY: 0.0})
    assert plan.erase == () and plan.stale_since == {} and plan.mark == ()


def test_a_view_not_newer_than_the_mark_erases_nothing() -> None:
    # a restarted node's empty or older view, and the view the mark was written from
    for view_index in (0, 6, 7):
        plan = sweep(state(), view_index=view_index, marks={(OID, 1): (FED, 7)}, since={KEY: 0.0})
        assert plan.erase == () and plan.stale_since == {}, view_index


def test_a_view_of_another_federation_erases_nothing() -> None:
    plan = sweep(state(), view_index=100, marks={(OID, 1): (OTHER_FED, 7)}, since={KEY: 0.0})
    assert plan.erase == () and plan.stale_since == {}


def test_a_clock_restarts_when_the_shard_is_placed_here_again() -> None:
    gone = state(placed(OID, [("a", False), ("b", False)]))
    back = state(placed(OID, [("a", False), (ME, False)]))
    s1 = sweep(gone, now=0.0).stale_since
    s2 = sweep(back, since=s1, now=GRACE / 2).stale_since
    assert s2 == {}
    s3 = sweep(gone, since=s2, now=GRACE).stale_since
    assert s3 == {KEY: GRACE}
    assert sweep(gone, since=s3, now=GRACE + GRACE / 2).erase == ()


def test_clocks_of_shards_no_longer_stored_are_forgotten() -> None:
    plan = sweep(state(placed(OID, [("a", False), ("b", False)])), since={("ff" * 16, 0): 1.0, KEY: 90.0})
    assert plan.stale_since == {KEY: 90.0}


# ------------------------------------------------------------------------- properties

PEERS = (ME, "a", "b", "c")
OIDS = tuple(bytes([i]) * 16 for i in range(3))
FEDS = (FED, OTHER_FED)


@st.composite
def worlds(draw):
    placements = []
    for oid in OIDS:
        if draw(st.booleans()):
            holders = draw(st.permutations(PEERS))[: draw(st.integers(1, len(PEERS)))]
            placements.append(placed(oid, [(pid, draw(st.booleans())) for pid in holders]))
    keys = [(oid, i) for oid in OIDS for i in range(len(PEERS) + 1)]
    shards = draw(st.lists(st.sampled_from(keys), unique=True, max_size=8))
    marks = {k: (draw(st.sampled_from(FEDS)), draw(st.integers(0, 20)))
             for k in shards if draw(st.booleans())}
    rebuilding = {(oid.hex(), i) for oid, i in shards if draw(st.integers(0, 4)) == 0}
    now = draw(st.floats(0, 1000))
    grace = draw(st.floats(0, 100))
    since = {(oid.hex(), i): draw(st.floats(0, now)) for oid, i in shards if draw(st.booleans())}
    return state(*placements), draw(st.integers(0, 20)), shards, marks, rebuilding, since, now, grace


def run(world):
    st_, view_index, shards, marks, rebuilding, since, now, grace = world
    return plan_sweep(st_, view_index, FED, ME, shards, marks, rebuilding, since, now, grace)


def reference_stale(st_: SwarmState, view_index: int, key: tuple[bytes, int], marks,
                    rebuilding) -> str | None:
    """The rules of node/shards/sweep.py, written out again without sharing its code."""
    oid, index = key
    if (oid.hex(), index) in rebuilding:
        return None
    p = st_.placements.get(oid.hex())
    if p is None:
        mark = marks.get(key)
        return DROPPED if mark is not None and mark[0] == FED and mark[1] < view_index else None
    holder = next((h for h in p.holders if h.index == index), None)
    if holder is None or holder.holder == ME or holder.pending:
        return None
    return REPLACED


@settings(deadline=None, max_examples=400)
@given(worlds())
def test_never_erases_a_shard_the_committed_state_places_here(world) -> None:
    st_ = world[0]
    for e in run(world).erase:
        p = st_.placements.get(e.object_id.hex())
        assert p is None or all(h.holder != ME for h in p.holders if h.index == e.index)


@settings(deadline=None, max_examples=400)
@given(worlds())
def test_never_erases_while_a_repair_of_the_index_is_pending_or_rebuilding_here(world) -> None:
    st_, rebuilding = world[0], world[4]
    for e in run(world).erase:
        assert (e.object_id.hex(), e.index) not in rebuilding
        p = st_.placements.get(e.object_id.hex())
        assert p is None or not any(h.pending for h in p.holders if h.index == e.index)


@settings(deadline=None, max_examples=400)
@given(worlds())
def test_never_drops_on_a_view_not_newer_than_the_mark_or_of_another_federation(world) -> None:
    st_, view_index, _, marks = world[:4]
    for e in run(world).erase:
        if st_.placements.get(e.object_id.hex()) is None:
            mark = marks.get((e.object_id, e.index))
            assert e.kind == DROPPED
            assert mark is not None and mark[0] == FED and mark[1] < view_index
        else:
            assert e.kind == REPLACED


@settings(deadline=None, max_examples=400)
@given(worlds())
def test_never_erases_before_the_grace_period(world) -> None:
    since, now, grace = world[5:]
    for e in run(world).erase:
        key = (e.object_id.hex(), e.index)
        # stale at an earlier sweep (or the grace is zero), and for at least the grace period
        assert key in since or grace == 0
        assert now - since.get(key, now) >= grace


@settings(deadline=None, max_examples=400)
@given(worlds())
def test_matches_the_reference_exactly(world) -> None:
    """Liveness as well as safety: every shard the rules call stale keeps its clock (started
    now if new) and is erased once the clock is past the grace; the rest have no clock; the
    shards placed here without a mark of this federation are marked."""
    st_, view_index, shards, marks, rebuilding, since, now, grace = world
    plan = run(world)
    want_clocks, want_erase, want_mark = {}, set(), []
    for key in shards:
        hkey = (key[0].hex(), key[1])
        kind = reference_stale(st_, view_index, key, marks, rebuilding)
        if kind is not None:
            want_clocks[hkey] = since.get(hkey, now)
            if now - want_clocks[hkey] >= grace:
                want_erase.add((key, kind))
        p = st_.placements.get(hkey[0])
        mine = p is not None and any(h.index == key[1] and h.holder == ME for h in p.holders)
        mark = marks.get(key)
        if mine and hkey not in rebuilding and (mark is None or mark[0] != FED):
            want_mark.append(key)
    assert plan.stale_since == want_clocks
    assert {((e.object_id, e.index), e.kind) for e in plan.erase} == want_erase
    assert list(plan.mark) == want_mark


@settings(deadline=None, max_examples=200)
@given(worlds())
def test_a_view_that_places_every_stored_shard_here_erases_nothing(world) -> None:
    _, view_index, shards, marks, rebuilding, since, now, grace = world
    holders = {oid: [("x" + str(i), False) for i in range(len(PEERS) + 1)] for oid in OIDS}
    for oid, index in shards:
        holders[oid][index] = (ME, False)
    mine = state(*(placed(oid, hs) for oid, hs in holders.items()))
    plan = plan_sweep(mine, view_index, FED, ME, shards, marks, rebuilding, since, now, grace)
    assert plan.erase == () and plan.stale_since == {}


def test_the_module_is_pure() -> None:
    """DESIGN.md rule 1: no I/O, clock, trio or global random in the decision."""
    path = Path(__file__).parents[2] / "node" / "shards" / "sweep.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name.split(".")[0] not in IMPURE, name
