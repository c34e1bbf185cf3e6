"""One test per rule of the Raft paper (Figure 2, §5.2–5.4, Figure 8)."""

from __future__ import annotations

import pytest

from consensus.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    VoteRequest,
    VoteResponse,
)
from consensus.raft import CANDIDATE, FOLLOWER, LEADER, ProposalDropped
from tests.consensus.helpers import Net, ents, make_raft, take

# --------------------------------------------------------------------------- all servers


@pytest.mark.parametrize("role", [FOLLOWER, CANDIDATE, LEADER])
def test_higher_term_converts_to_follower(role: str) -> None:
    """All servers: if an RPC has term T > currentTerm, set currentTerm = T, be follower."""
    r = make_raft(1, term=1)
    if role == CANDIDATE:
        r.become_candidate()
    elif role == LEADER:
        r.become_candidate()
        r.become_leader()
    r.step(AppendEntries(sender=2, to=1, term=5, prev_index=0, prev_term=0, entries=(), commit=0))
    assert (r.role, r.term, r.lead) == (FOLLOWER, 5, 2)


def test_stale_term_rejected() -> None:
    """AppendEntries/RequestVote receiver rule 1: reply false if term < currentTerm."""
    r = make_raft(1, term=3, check_quorum=True)
    r.step(AppendEntries(sender=2, to=1, term=2, prev_index=0, prev_term=0,
                         entries=tuple(ents(2)), commit=1))
    (resp,) = take(r)
    assert isinstance(resp, AppendResponse) and resp.reject and resp.term == 3
    assert r.log.last_index() == 0
    r.step(VoteRequest(sender=2, to=1, term=2, last_log_index=9, last_log_term=9))
    assert take(r) == [] and r.vote is None


def test_applied_follows_committed_in_order() -> None:
    """All servers: if commitIndex > lastApplied, apply log[lastApplied+1] (in order)."""
    from consensus.messages import ConfState, HardState, Snapshot, SnapshotMeta
    from consensus.raft import Config, Persisted, RawNode

    snap = Snapshot(SnapshotMeta(0, 0, ConfState(voters=(1, 2, 3))), b"")
    import random

    rn = RawNode(Config(id=1), random.Random(1), Persisted(HardState(1, None, 2), snap,
                                                           tuple(ents(1, 1, 1))),
                 logger=lambda *_: None)
    rd = rn.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    rn.advance(rd)
    assert rn.raft.log.applied == 2
    assert not rn.has_ready() or not rn.ready().committed_entries


# --------------------------------------------------------------------------- RequestVote


def test_vote_at_most_once_per_term() -> None:
    """RequestVote rule 2: grant only if votedFor is null or candidateId."""
    r = make_raft(1)
    r.step(VoteRequest(sender=2, to=1, term=1, last_log_index=0, last_log_term=0))
    (m,) = take(r)
    assert isinstance(m, VoteResponse) and not m.reject and r.vote == 2
    r.step(VoteRequest(sender=3, to=1, term=1, last_log_index=0, last_log_term=0))
    (m,) = take(r)
    assert m.reject and r.vote == 2
    r.step(VoteRequest(sender=2, to=1, term=1, last_log_index=0, last_log_term=0))
    (m,) = take(r)
    assert not m.reject  # a retransmitted request from the same candidate is re-granted


@pytest.mark.parametrize(
    ("cand_index", "cand_term", "granted"),
    [(2, 2, True), (3, 2, True), (1, 2, False), (1, 3, True), (5, 1, False), (2, 1, False)],
)
def test_election_restriction(cand_index: int, cand_term: int, granted: bool) -> None:
    """§5.4.1: vote only if the candidate's log is at least as up-to-date (our log: 1, 2)."""
    r = make_raft(1, entries=ents(1, 2), term=2)
    r.step(VoteRequest(sender=2, to=1, term=3, last_log_index=cand_index, last_log_term=cand_term))
    (m,) = take(r)
    assert m.reject is (not granted)


def test_vote_persisted_with_the_response() -> None:
    """Persistent state (currentTerm, votedFor) is on stable storage before responding:
    the vote is in the same Ready as the response."""
    import random

    from consensus.raft import Config, Persisted, RawNode

    rn = RawNode(Config(id=1), random.Random(1), Persisted.initial([1, 2, 3]),
                 logger=lambda *_: None)
    rn.advance(rn.ready())
    rn.step(VoteRequest(sender=2, to=1, term=1, last_log_index=0, last_log_term=0))
    rd = rn.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 2 and rd.must_sync
    assert any(isinstance(m, VoteResponse) and not m.reject for m in rd.messages)


# --------------------------------------------------------------------------- AppendEntries


def test_append_rejects_on_prev_mismatch() -> None:
    """AppendEntries rule 2: false if the log has no entry at prevLogIndex of prevLogTerm."""
    r = make_raft(1, entries=ents(1, 1), term=2)
    r.step(AppendEntries(sender=2, to=1, term=2, prev_index=2, prev_term=2,
                         entries=tuple(ents(2, start=3)), commit=0))
    (m,) = take(r)
    assert isinstance(m, AppendResponse) and m.reject and m.index == 2
    assert r.log.last_index() == 2
    r.step(AppendEntries(sender=2, to=1, term=2, prev_index=5, prev_term=2, entries=(), commit=0))
    (m,) = take(r)
    assert m.reject and m.reject_hint == 2  # hint: our last index


def test_append_truncates_conflicts_and_appends() -> None:
    """AppendEntries rules 3 and 4: delete a conflicting entry and all that follow it, then
    append new entries not already in the log; entries that match are kept."""
    r = make_raft(1, entries=ents(1, 1, 1, 1), term=2)
    new = ents(2, 2, start=3)
    r.step(AppendEntries(sender=2, to=1, term=2, prev_index=2, prev_term=1,
                         entries=tuple(new), commit=0))
    (m,) = take(r)
    assert not m.reject and m.index == 4
    assert [e.term for e in r.log.entries] == [1, 1, 2, 2]
    # A stale, shorter append that matches must not truncate what follows.
    r.step(AppendEntries(sender=2, to=1, term=2, prev_index=2, prev_term=1,
                         entries=tuple(new[:1]), commit=0))
    assert [e.term for e in r.log.entries] == [1, 1, 2, 2]


def test_follower_commit_is_min_of_leader_commit_and_last_new() -> None:
    """AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new entry)."""
    r = make_raft(1, entries=ents(1, 1, 1, 1), term=1)
    r.step(AppendEntries(sender=2, to=1, term=1, prev_index=1, prev_term=1,
                         entries=tuple(ents(1, start=2)), commit=10))
    assert r.log.committed == 2  # not 4: entries 3..4 are not known to match the leader's


def test_heartbeat_commit_never_exceeds_match() -> None:
    r = make_raft(1, entries=ents(1, 1), term=1)
    r.step(Heartbeat(sender=2, to=1, term=1, commit=2))
    assert r.log.committed == 2


# --------------------------------------------------------------------------- roles


def test_follower_times_out_and_campaigns() -> None:
    """Followers: without AppendEntries or a granted vote for an election timeout, convert
    to candidate; candidates: increment term, vote for self, send RequestVote to all."""
    r = make_raft(1, election=10)
    for _ in range(2 * 10):
        r.tick()
    assert r.role == CANDIDATE and r.term == 1 and r.vote == 1
    assert sorted(m.to for m in take(r) if isinstance(m, VoteRequest)) == [2, 3]


def test_candidate_wins_with_majority_then_heartbeats() -> None:
    """Candidates: majority of votes -> leader; leaders send initial empty AppendEntries and
    heartbeats during idle periods."""
    rafts = [make_raft(i) for i in (1, 2, 3)]
    net = Net(rafts)
    net.elect(1)
    assert rafts[0].role == LEADER and all(r.lead == 1 for r in rafts)
    assert rafts[0].log.committed == 1  # the leader's empty entry of its term
    rafts[0].tick()
    assert sorted(m.to for m in take(rafts[0]) if isinstance(m, Heartbeat)) == [2, 3]


def test_candidate_steps_down_on_append_from_new_leader() -> None:
    """Candidates: AppendEntries from a new leader (term >= ours) -> follower."""
    r = make_raft(1)
    r.hup()
    take(r)
    r.step(AppendEntries(sender=2, to=1, term=1, prev_index=0, prev_term=0, entries=(), commit=0))
    assert r.role == FOLLOWER and r.lead == 2


def test_split_vote_times_out_into_new_election() -> None:
    r = make_raft(1)
    r.hup()
    take(r)
    r.step(VoteResponse(sender=2, to=1, term=1, reject=True))
    r.step(VoteResponse(sender=3, to=1, term=1, reject=True))
    assert r.role == FOLLOWER  # lost
    for _ in range(20):
        r.tick()
    assert r.role == CANDIDATE and r.term == 2


def test_leader_appends_replicates_and_commits() -> None:
    """Leaders: append client command, replicate, reply once applied; on rejection,
    decrement nextIndex and retry."""
    rafts = [make_raft(1), make_raft(2), make_raft(3, entries=ents(1, 1, 1, 1, 1), term=1)]
    # node 3 holds a stale uncommitted suffix from term 1
    net = Net(rafts)
    rafts[0].term = 1
    net.elect(1)  # needs 2's vote only; 3 rejects (its log is longer)
    assert rafts[0].role == LEADER
    idx = rafts[0].propose(b"x")
    net.stabilize()
    for r in rafts:
        assert r.log.committed == idx
        assert [(e.term, e.data) for e in r.log.entries] == [(e.term, e.data) for e in rafts[0].log.entries]


def test_follower_refuses_proposals() -> None:
    r = make_raft(1)
    with pytest.raises(ProposalDropped):
        r.propose(b"x")


# --------------------------------------------------------------------------- safety


def test_figure8_only_current_term_entries_commit_by_counting() -> None:
    """§5.4.2 / Figure 8: a leader may not commit an entry of an older term by counting
    replicas; it commits once an entry of its own term is on a majority."""
    # Five nodes. Node 1 leads term 4 (elected by 1, 2, 3). Its log: [1, 2]; entry 2 is
    # from term 2 and is also on node 2 only.
    rafts = [make_raft(i, voters=(1, 2, 3, 4, 5), entries=ents(1, 2) if i in (1, 2) else ents(1),
                       term=3, commit=1) for i in (1, 2, 3, 4, 5)]
    leader = rafts[0]
    leader.become_candidate()  # term 4
    leader.become_leader()     # appends its empty entry at index 3, term 4
    take(leader)
    pr = leader.progress
    # Term-2 entry 2 now on a majority (1, 2, 3) -- but entry 3 (term 4) only on node 1.
    pr[2].maybe_update(2)
    pr[3].maybe_update(2)
    assert not leader._maybe_commit()
    assert leader.log.committed == 1, "must not commit an old-term entry by counting"
    pr[2].maybe_update(3)
    pr[3].maybe_update(3)
    assert leader._maybe_commit()
    assert leader.log.committed == 3  # entry 2 commits indirectly


def test_leader_completeness_stale_node_cannot_win() -> None:
    """§5.4: a node that lacks a committed entry cannot be elected (it gets no majority)."""
    rafts = [make_raft(i, voters=(1, 2, 3, 4, 5)) for i in (1, 2, 3, 4, 5)]
    net = Net(rafts)
    net.elect(1)
    net.cut = {4, 5}
    idx = rafts[0].propose(b"committed")
    net.stabilize()
    assert rafts[0].log.committed == idx
    net.cut = {1}  # the leader dies; 4 (stale) campaigns first
    rafts[3].hup()
    net.stabilize()
    assert rafts[3].role != LEADER
    rafts[1].hup()
    net.stabilize()
    assert rafts[1].role == LEADER
    assert rafts[1].log.entry(idx).data == b"committed"


def test_log_matching_after_repair() -> None:
    """Log matching: if two logs hold an entry with the same index and term, the logs are
    identical up to it -- the leader's consistency check enforces it."""
    leader_log = ents(1, 1, 2, 3, 3)
    follower_log = ents(1, 1, 2, 2, 2, 2, 2)
    rafts = [make_raft(1, entries=leader_log, term=3), make_raft(2, entries=follower_log, term=2),
             make_raft(3, entries=leader_log[:3], term=3)]
    net = Net(rafts)
    net.elect(1)
    net.stabilize()
    for r in rafts[1:]:
        assert [(e.index, e.term) for e in r.log.entries] == [(e.index, e.term) for e in rafts[0].log.entries]
