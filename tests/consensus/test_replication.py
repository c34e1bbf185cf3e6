"""Flow control, batching, transfer and membership details beyond the paper's rules."""

from __future__ import annotations

import random

import pytest

from consensus.messages import AppendEntries, AppendResponse, HeartbeatResponse, VoteRequest
from consensus.raft import LEADER, Config, ProposalDropped, Raft
from tests.consensus.helpers import Net, make_raft, take


def leader_of_three(**kw: object) -> tuple[Raft, Net]:
    rafts = [make_raft(i, **kw) for i in (1, 2, 3)]  # type: ignore[arg-type]
    net = Net(rafts)
    net.elect(1)
    return rafts[0], net


def appends_to(msgs: list, to: int) -> list[AppendEntries]:
    return [m for m in msgs if isinstance(m, AppendEntries) and m.to == to]


def test_inflight_window_bounds_pipelining() -> None:
    r, _ = leader_of_three()
    r.cfg = Config(id=1, max_inflight_msgs=2, max_entries_per_msg=1)
    for pr in r.progress.values():
        pr.max_inflight = 2
    for i in range(5):
        r.propose(f"x{i}".encode())
    sent = appends_to(take(r), 2)
    assert len([m for m in sent if m.entries]) == 2  # window full: the rest waits
    r.step(AppendResponse(sender=2, to=1, term=1, index=sent[0].entries[-1].index))
    assert len(appends_to(take(r), 2)) == 1  # one ack frees one slot


def test_probe_sends_one_append_per_heartbeat() -> None:
    r, _ = leader_of_three()
    r.progress[2].become_probe()
    r.progress[2].next = r.log.last_index()  # pretend we do not know where 2 is
    r.propose(b"a")
    r.propose(b"b")
    assert len(appends_to(take(r), 2)) == 1
    r.step(HeartbeatResponse(sender=2, to=1, term=1))
    assert len(appends_to(take(r), 2)) == 1


def test_batching_limits_entries_per_message() -> None:
    rafts = [make_raft(i) for i in (1, 2, 3)]
    net = Net(rafts)
    net.elect(1)
    r = rafts[0]
    r.cfg = Config(id=1, max_entries_per_msg=3)
    net.cut = {2, 3}
    for i in range(7):
        r.propose(bytes([i]))
    take(r)
    net.cut = set()
    r.progress[2].become_probe()
    r.progress[2].next = 2
    r._send_append(2)
    (m,) = appends_to(take(r), 2)
    assert len(m.entries) == 3


def test_transfer_refuses_proposals_and_hands_over() -> None:
    r, net = leader_of_three()
    r.transfer_leader(3)
    with pytest.raises(ProposalDropped):
        r.propose(b"x")
    net.stabilize()
    assert net.rafts[3].role == LEADER and r.role != LEADER


def test_transfer_aborts_after_election_timeout() -> None:
    r, net = leader_of_three(check_quorum=True)
    net.cut = {3}
    r.transfer_leader(3)
    for _ in range(10):
        r.tick()
        for m in take(r):
            if m.to == 2:
                net.rafts[2].step(m)
        for m in take(net.rafts[2]):
            r.step(m)
    assert r.role == LEADER and r.lead_transferee is None
    r.propose(b"after")


def test_removed_node_cannot_vote_or_be_voted_for() -> None:
    r, net = leader_of_three()
    r.propose(b"x")
    net.stabilize()
    r.propose_conf_change("remove", 3)
    net.stabilize()
    three = net.rafts[3]
    assert three.is_removed() and not three.promotable()
    three.step(VoteRequest(sender=2, to=3, term=5, last_log_index=99, last_log_term=99))
    (resp,) = take(three)
    assert resp.reject
    two = net.rafts[2]
    two.election_elapsed = 100  # out of lease
    two.step(VoteRequest(sender=3, to=2, term=5, last_log_index=99, last_log_term=99))
    assert all(m.reject for m in take(two))


def test_conf_change_needs_commit_in_current_term_and_one_at_a_time() -> None:
    rafts = [make_raft(i, voters=(1, 2, 3)) for i in (1, 2, 3, 4, 5)]
    net = Net(rafts)
    r = rafts[0]
    r.hup()
    for m in take(r):
        rafts[m.to - 1].step(m)
    for x in rafts[1:3]:
        for m in take(x):
            r.step(m)
    assert r.role == LEADER and r.log.committed == 0
    with pytest.raises(ProposalDropped):
        r.propose_conf_change("add", 4)  # nothing of this term committed yet
    net.stabilize()
    r.propose_conf_change("add", 4)
    with pytest.raises(ProposalDropped):
        r.propose_conf_change("add", 5)
    net.stabilize()
    r.propose_conf_change("add", 5)
    net.stabilize()
    assert all(x.voters == (1, 2, 3, 4, 5) for x in rafts)


def test_leader_removing_itself_steps_down_after_commit() -> None:
    r, net = leader_of_three()
    r.propose(b"x")
    net.stabilize()
    r.propose_conf_change("remove", 1)
    assert r.role == LEADER  # still leads until the change commits
    net.stabilize()
    assert r.role != LEADER and not r.promotable()
    for _ in range(40):
        for x in net.rafts.values():
            x.tick()
        net.stabilize()
    leaders = [x.id for x in net.rafts.values() if x.role == LEADER]
    assert leaders and leaders[0] in (2, 3)


def test_election_timeout_is_randomized_from_injected_rng() -> None:
    seen = set()
    for seed in range(30):
        r = make_raft(1)
        r.rng = random.Random(seed)
        r.become_follower(0, None)
        seen.add(r.randomized_election_timeout)
    assert seen <= set(range(10, 20)) and len(seen) > 3


def test_config_validation() -> None:
    for bad in (dict(id=0), dict(id=1, election_tick=1, heartbeat_tick=1),
                dict(id=1, max_inflight_msgs=0)):
        with pytest.raises(ValueError):
            Config(**bad).validate()  # type: ignore[arg-type]
