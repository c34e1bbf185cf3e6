"""The council checkers bite: forged histories and deliberately broken Raft variants are caught.

A checker that never fires proves nothing, so every rule of ``sim/council/invariants.py`` is
fed a history that breaks it, and two broken variants of the protocol (commit without a
quorum, win an election with one vote) are run through the world and must be reported.
"""

from __future__ import annotations

import pytest

import consensus.raft
from consensus import quorum
from consensus.messages import ConfChange, ConfState, Entry, Snapshot, SnapshotMeta, VoteResponse
from consensus.raft import Config, Persisted, RawNode
from consensus.state import Revoke, SwarmState, apply
from sim.council import CouncilConfig, CouncilWorld
from sim.council.driver import Disk, initial_state
from sim.council.invariants import RaftInvariants, SafetyViolation


class _Rng:
    def randrange(self, stop: int) -> int:
        return 0


def raft_node(node_id: int, voters: tuple[int, ...] = (1, 2, 3), removed: tuple[int, ...] = (),
              entries: tuple[Entry, ...] = ()) -> RawNode:
    snap = Snapshot(SnapshotMeta(index=0, term=0, conf=ConfState(voters=voters, removed=removed)), b"")
    from consensus.messages import HardState

    return RawNode(Config(id=node_id, election_tick=10, heartbeat_tick=1), _Rng(),
                   Persisted(HardState(term=0), snap, entries), logger=lambda level, text: None)


def leader_at_term_1(node_id: int) -> RawNode:
    rn = raft_node(node_id)
    rn.raft.become_candidate()
    rn.raft.become_leader()
    assert rn.raft.term == 1
    return rn


def entry(index: int, term: int, data: bytes) -> Entry:
    return Entry(term=term, index=index, kind="normal", data=data)


def test_two_leaders_in_one_term_are_caught():
    inv = RaftInvariants()
    assert inv.after_ready(1, leader_at_term_1(1).raft, 0.0)
    assert inv.count == 0
    inv.after_ready(2, leader_at_term_1(2).raft, 0.1)
    assert inv.count == 1 and "two leaders in term 1: 1 and 2" in inv.violations[0]


def test_the_same_leader_seen_twice_is_one_election():
    inv = RaftInvariants()
    r = leader_at_term_1(1).raft
    assert inv.after_ready(1, r, 0.0)
    assert not inv.after_ready(1, r, 0.5)
    assert inv.count == 0 and len(inv.elections) == 1


def test_fail_fast_raises_with_the_prefix():
    inv = RaftInvariants(fail_fast=True, prefix="SEED=9: ")
    inv.after_ready(1, leader_at_term_1(1).raft, 0.0)
    with pytest.raises(SafetyViolation, match=r"^SEED=9: two leaders in term 1"):
        inv.after_ready(2, leader_at_term_1(2).raft, 0.0)


def test_log_matching_is_checked_on_persist():
    inv = RaftInvariants()
    inv.persisted(1, [entry(1, 1, b"a")])
    inv.persisted(2, [entry(1, 1, b"a")])
    assert inv.count == 0
    inv.persisted(3, [entry(1, 1, b"b")])
    assert inv.count == 1 and "log matching broken at 1/1" in inv.violations[0]


def test_a_held_committed_entry_is_never_replaced_but_a_stale_one_may_be():
    inv = RaftInvariants()
    s = SwarmState()
    inv.applied(1, 0, entry(1, 2, b"x"), s, 0.0)
    # Raft's Figure 7: a stale follower holds an old, uncommitted entry at index 1 and gets an
    # old leader's append there; that is legal as long as it never held the committed one.
    inv.persisted(4, [entry(1, 1, b"old")], held=[entry(1, 1, b"older-still")])
    assert inv.count == 0
    inv.persisted(5, [entry(1, 1, b"old")], held=[entry(1, 2, b"x")])
    assert inv.count == 1 and "replaced committed entry 1" in inv.violations[0]


def test_state_machine_safety_entries_order_and_states():
    inv = RaftInvariants()
    s1 = initial_state(3)
    inv.applied(1, 0, entry(1, 1, b"a"), s1, 0.0)
    inv.applied(2, 0, entry(1, 1, b"b"), s1, 0.0)  # another entry at the same index
    assert "applied a different entry at 1" in inv.violations[-1]
    inv.applied(3, 0, entry(1, 1, b"a"), initial_state(4), 0.0)  # same entry, other state
    assert "state diverged at index 1" in inv.violations[-1]
    inv.applied(1, 1, entry(3, 1, b"c"), s1, 0.0)  # skipped index 2
    assert "applied 3 after 1" in inv.violations[-1]
    inv.restored(4, 1, initial_state(5))
    assert "restored a snapshot at 1" in inv.violations[-1]
    assert inv.count == 4


def test_revoked_member_on_the_council_is_caught():
    inv = RaftInvariants()
    s = initial_state(3)
    s, r = apply(s, Revoke("node-2", "integrity alarm"))
    assert r.ok and "node-2" not in s.council
    inv.applied(1, 0, entry(1, 1, b"r"), s, 0.0)
    assert inv.count == 0
    import dataclasses

    forged = dataclasses.replace(s, council=(*s.council, "node-2"))
    inv.applied(1, 1, entry(2, 1, b"f"), forged, 0.0)
    assert inv.count == 1 and "revoked node-2 still on the council" in inv.violations[0]


def caught(inv: RaftInvariants, text: str) -> bool:
    return any(text in v for v in inv.violations)


def test_a_removed_node_never_leads_never_counts_and_never_grants():
    inv = RaftInvariants()
    remove = Entry(term=1, index=1, kind="conf", data=ConfChange("remove", 2).encode())
    inv.applied(1, 0, remove, SwarmState(), 0.25)
    assert inv.removed_committed == {2: 0.25}
    inv.after_ready(2, leader_at_term_1(2).raft, 1.0)
    assert caught(inv, "removed node 2 became leader in term 1")
    # Node 3 wins term 2 with node 2's vote counted.
    rn = raft_node(3)
    rn.raft.term = 1
    rn.raft.become_candidate()
    rn.raft.become_leader()
    rn.raft.votes = {3: True, 2: True}
    inv.after_ready(3, rn.raft, 1.0)
    assert caught(inv, "vote of removed node 2 counted for 3 in term 2")
    # A node that knows it was removed grants a vote; a rejection would be fine.
    before = inv.count
    gone = raft_node(4, voters=(1, 2, 3), removed=(4,))
    inv.sent(4, gone.raft, VoteResponse(sender=4, to=1, term=2, reject=True, pre=False))
    assert inv.count == before
    inv.sent(4, gone.raft, VoteResponse(sender=4, to=1, term=2, reject=False, pre=False))
    assert inv.count == before + 1 and caught(inv, "removed node 4 granted a vote")


def test_leader_completeness():
    inv = RaftInvariants()
    inv.applied(1, 0, entry(1, 1, b"a"), SwarmState(), 0.0)
    rn = raft_node(2)  # empty log: lacks entry 1
    rn.raft.term = 1
    rn.raft.become_candidate()
    rn.raft.become_leader()  # term 2, its log holds only its own no-op at index 1
    inv.after_ready(2, rn.raft, 0.0)
    assert inv.violations == ["leader 2 (term 2) lacks committed entry 1"]


# --------------------------------------------------------------------------- the disk


def test_disk_torn_write_keeps_a_prefix_in_raftstore_order():
    from consensus.messages import HardState
    from consensus.raft import Ready

    init = Persisted.initial([1, 2, 3])
    d = Disk(init)
    d.persist(Ready(None, HardState(1, 1, 0), (entry(1, 1, b"a"), entry(2, 1, b"b")), None, (), (), True))
    rd = Ready(None, HardState(2, 2, 2), (entry(2, 2, b"B"), entry(3, 2, b"C")), None, (), (), True)
    assert d.records(rd) == 3
    d2 = Disk(d.load())
    d2.persist_prefix(rd, 1)  # the first entry only: it replaces the old entry 2 and all after
    assert [(e.index, e.term) for e in d2.entries] == [(1, 1), (2, 2)]
    assert d2.hard_state == HardState(1, 1, 0)
    d3 = Disk(d.load())
    d3.persist_prefix(rd, 0)
    assert d3.load() == d.load()
    d4 = Disk(d.load())
    d4.persist_prefix(rd, 3)
    d.persist(rd)
    assert d4.load() == d.load()


# --------------------------------------------------------------------------- broken protocols


def test_commit_without_a_quorum_is_caught(monkeypatch):
    """A leader that commits what only it holds loses committed entries to the next leader."""
    monkeypatch.setattr(consensus.raft.quorum, "committed_index",
                        lambda voters, matched: max(matched.values()))
    r = CouncilWorld(CouncilConfig(seed=0, scenario="manager-partition")).run()
    assert r["invariants"]["violation_count"] > 0
    assert any("applied a different entry" in v or "lacks committed entry" in v
               for v in r["invariants"]["violations"])


def test_winning_an_election_with_one_vote_is_caught(monkeypatch):
    honest = quorum.vote_result

    def one_vote_wins(voters, votes):  # type: ignore[no-untyped-def]
        return quorum.VoteResult.WON if any(votes.values()) else honest(voters, votes)

    monkeypatch.setattr(consensus.raft.quorum, "vote_result", one_vote_wins)
    r = CouncilWorld(CouncilConfig(seed=0, scenario="manager-partition")).run()
    assert r["invariants"]["violation_count"] > 0
