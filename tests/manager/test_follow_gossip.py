"""Following the committed state by gossip, on real in-process libp2p nodes whose signed records
travel through an in-memory bus (tests/manager/helpers.py GossipBus; test_processes.py runs
the real gossip service): the manager's signed ``manager`` record brings non-voters along;
forged and stale announcements are refused and counted; a voter removed without hearing it
retires its Raft node once a manager ahead of it says its raft id is tombstoned."""

from __future__ import annotations

import dataclasses
import time

import pytest
import trio

from node.manager import RETIRED_FILE
from node.manager_settings import ANNOUNCE_TTL_S
from node.manager_wire import ManagerAnnounce
from overlay.records import KIND_MANAGER, Ed25519Signer
from overlay.wire import encode
from tests.manager.helpers import FAST, Fed, GossipBus, Member, commit_some, federation, settled
from tests.netutil import wait_until

# The fallback poll never fires within a test: what followers learn, they learn by gossip.
GOSSIP_ONLY = dataclasses.replace(FAST, follow_poll_s=3600.0)


async def _hand_over(fed: Fed) -> None:
    """A new term through a transfer (retried: on a loaded machine one may not finish in the
    window ``request_transfer`` waits)."""
    term0 = fed.leaders()[0].role.node.raft.term
    with trio.fail_after(30):
        while True:
            leaders = fed.leaders()
            if len(leaders) == 1 and leaders[0].role.node.raft.term > term0:
                return
            if leaders:
                await leaders[0].role.request_transfer(None)
            await trio.sleep(0.2)


def _roles(fed: Fed) -> list[str]:
    return sorted(s["role"] for s in fed.statuses())


def _follow(m: Member) -> dict:
    return m.role.status()["consensus"]["follow"]


# Slow suite (make test-slow, in CI); make test keeps its in-process twin on the real gossip
# service, test_inprocess.py::test_nodes_outside_the_council_follow_the_committed_state.
@pytest.mark.slow
async def test_a_node_outside_the_council_learns_new_commits_by_gossip(tmp_path):
    settings = dataclasses.replace(GOSSIP_ONLY, council_size=3)
    async with federation(tmp_path, 5, settings, bus=GossipBus()) as fed:
        # Joining members were admitted and made voters without a single poll: announcements
        # told them to fetch the state, and their fetches told the manager they were ready.
        await wait_until(lambda: settled(fed, 3), 60)
        await wait_until(lambda: _roles(fed) == ["council", "council", "follower", "follower",
                                                 "manager"], 20)
        # Scores move under load (a late re-attestation costs 15 points), and a re-ranked
        # council can promote a follower mid-round: that one then learns by Raft, not gossip.
        # A round counts the nodes that stayed outside the council and whose own Raft log did not
        # bring them the round's commits; up to three rounds find one.
        learned: list[Member] = []
        for _ in range(3):
            followers = [m for m in fed.members if m.role.status()["role"] == "follower"]
            before = {m.name: (m.role.follow_updates["gossip"], m.role.followed_index)
                      for m in followers}
            lead = await commit_some(fed, 10)
            target = lead.role.state_index
            await wait_until(lambda fs=followers, t=target: all(
                f.role.followed_index >= t or f.role.is_voter() for f in fs), 20)
            learned = [f for f in followers if not f.role.is_voter()
                       and f.role.followed_index >= target > f.role.state_index]
            if learned:
                break
        assert learned, _roles(fed)
        for f in learned:
            fs = _follow(f)
            assert fs["updates"]["poll"] == 0, fs
            assert fs["updates"]["gossip"] > before[f.name][0], fs
            assert f.role.followed_index > before[f.name][1], fs
            assert fs["via"] == "gossip"
            assert fs["announcements"]["accepted"] > 0 and fs["announcements"]["rejected"] == 0
            assert f.role.followed.members.keys() == lead.role.view()[0].members.keys()
            s = f.role.status()
            assert s["manager"] == lead.agent.peer_id
        # the manager published, and what followers hold is what the manager announced
        assert _follow(lead)["announcements"]["published"] > 0
        await wait_until(lambda: all(_follow(f)["announcement"] is not None
                                     and _follow(f)["announcement"]["manager"] == lead.agent.peer_id
                                     for f in learned), 20)
        # the followers also checked the manager's signed decisions they fetched with the state
        assert all(f.role.decisions_verified > 0 and f.role.decisions_rejected == 0
                   for f in learned)


async def test_forged_and_stale_announcements_are_refused_and_counted(tmp_path):
    async with federation(tmp_path, 4, GOSSIP_ONLY, bus=GossipBus()) as fed:
        await wait_until(lambda: settled(fed, 4), 60)
        # One hand-over, so that there is an older term to replay.
        await _hand_over(fed)
        await wait_until(lambda: settled(fed, 4), 30)
        lead = fed.leaders()[0]
        term = lead.role.node.raft.term
        await wait_until(lambda: all(m.role.view()[0].manager_term == term for m in fed.members), 20)
        await wait_until(lambda: all(m.role._announced is not None
                                     and m.role._announced[1].term == term
                                     for m in fed.members if m is not lead), 20)
        forger = next(m for m in fed.members if m is not lead)
        others = [m for m in fed.members if m is not forger]
        _, idx = forger.role.view()
        fed_id = forger.role.status()["consensus"]["federation"]

        def forge(t: int) -> None:
            ann = ManagerAnnounce(term=t, commit_index=idx + 100, applied_index=idx + 100,
                                  state_digest=bytes(32), federation=fed_id)
            passed = {m.name: m.agent.gossip.refused for m in others}
            forger.agent.gossip.publish(KIND_MANAGER, forger.agent.peer_id, encode(ann),
                                        ttl_s=ANNOUNCE_TTL_S)
            # The record is the forger's own and validly signed, so the record path hands it to
            # every receiver (the bus delivers at once): only the manager role can refuse it.
            assert all(m.agent.gossip.refused == passed[m.name] for m in others)

        def count(m: Member, reason: str) -> int:
            return m.agent.counters.get("announce_rejected", reason)

        # 1. an older term than the one the committed state records
        forge(term - 1)
        await wait_until(lambda: all(count(m, "stale-term") >= 1 for m in others), 20)
        # 2. the current term, claimed by a node that is not its manager
        forge(term)
        await wait_until(lambda: all(count(m, "not-the-manager") >= 1 for m in others), 20)
        # 3. a term the committed state has never seen: the receivers ask the forger for its
        #    state, which names someone else as manager, and refuse it
        forge(term + 5)
        await wait_until(lambda: all(count(m, "term-not-committed") >= 1 for m in others), 20)
        for m in others:
            assert m.role.announcements["rejected"] >= 3
            assert m.role.status()["manager"] == lead.agent.peer_id
            assert m.role.status()["term"] == term
        # 4. a record claiming to come from the manager but signed with another key never
        #    reaches a role (the signature is checked before anything else)
        before = {m.name: (m.agent.gossip.refused, m.role.announcements["rejected"]) for m in others}
        now = time.time()
        ann = ManagerAnnounce(term=term + 9, commit_index=idx, applied_index=idx,
                              state_digest=bytes(32), federation=fed_id)
        forged = Ed25519Signer(lead.agent.peer_id, forger.agent.gossip.signer._key).sign(
            KIND_MANAGER, lead.agent.peer_id, 2**40, now, now + 30, encode(ann))
        forger.agent.gossip.offer(forged)
        for m in others:
            if m is lead:
                continue
            assert m.agent.gossip.refused == before[m.name][0] + 1
            assert m.role.announcements["rejected"] == before[m.name][1]
        # 5. the manager's own gossip refuses to publish (its record store full): the manager
        #    counts it and does not take the announcement for published
        lead = fed.leaders()[0]
        real_publish = lead.agent.gossip.publish
        lead.agent.gossip.publish = lambda *args, **kw: False
        try:
            published = lead.role.announcements["published"]
            refused = lead.agent.counters.get("announce_publish_refused")
            await commit_some(fed, 2)
            await wait_until(lambda: lead.agent.counters.get("announce_publish_refused") > refused, 20)
            assert lead.role.announcements["published"] == published
        finally:
            lead.agent.gossip.publish = real_publish
        # the legitimate manager is still followed, and commits still reach everyone by gossip
        await commit_some(fed, 5)
        target = fed.leaders()[0].role.state_index
        await wait_until(lambda: all(m.role.view()[1] >= target for m in fed.members), 20)


async def test_a_voter_removed_without_hearing_it_retires_its_raft_node(tmp_path):
    async with federation(tmp_path, 5, GOSSIP_ONLY, bus=GossipBus()) as fed:
        await wait_until(lambda: settled(fed, 5), 60)
        lead = fed.leaders()[0]
        council = lead.role.state.council
        if council[-1] == lead.agent.peer_id:  # the one to drop must not be the manager
            await _hand_over(fed)
            await wait_until(lambda: settled(fed, 5), 30)
        victim = next(m for m in fed.members if m.agent.peer_id == council[-1])
        rid = victim.role.node.id
        # The victim goes deaf to Raft: nothing the council sends reaches its Raft node.
        real_inbox = victim.role._inbox_send
        deaf_send, _deaf_recv = trio.open_memory_channel(10**6)
        victim.role._inbox_send = deaf_send
        # The council shrinks by one: the lowest-ranked member (the victim) loses its vote.
        for m in fed.members:
            m.role.settings = dataclasses.replace(m.role.settings, council_size=4)

        def removal_committed() -> bool:
            leaders = fed.leaders()
            if len(leaders) != 1 or leaders[0] is victim:
                return False
            r = leaders[0].role.node.raft
            return rid in r.log.conf_at(r.log.committed).removed

        await wait_until(removal_committed, 30)
        assert victim.agent.peer_id not in fed.leaders()[0].role.state.council
        victim.role._inbox_send = real_inbox  # hears again, but the council no longer talks to it
        # It learns from the announcements (its poll is off) and retires its Raft node.
        await wait_until(lambda: victim.role.node is None, 30)
        assert victim.role._retired_id == rid
        assert (victim.path / "raft" / RETIRED_FILE).read_text().strip() == str(rid)
        lead = fed.leaders()[0]
        await wait_until(lambda: victim.role.status()["role"] == "follower"
                         and victim.role.status()["manager"] == lead.agent.peer_id
                         and victim.role.status()["term"] == lead.role.node.raft.term, 20)
        assert victim.role.follow_updates["poll"] == 0 and victim.role.follow_updates["gossip"] > 0
        assert _follow(victim)["retired_raft_id"] == rid
        # it keeps following: a new commit reaches it by gossip
        lead = await commit_some(fed, 5)
        target = lead.role.state_index
        await wait_until(lambda: victim.role.view()[1] >= target, 20)
        # the remaining council still works with four voters, the victim not among them
        voters = set(lead.role.node.raft.conf.voters)
        assert rid not in voters and len(voters) == 4
        # A restart keeps the Raft node retired (raft/retired).
        key = victim.agent._identity
        await fed.kill(victim)
        again = await fed.start(victim.name, key=key)
        await wait_until(lambda: again.role.status()["role"] == "follower"
                         and again.role.status()["manager"] in {m.agent.peer_id for m in fed.leaders()},
                         60)
        assert again.role.node is None and again.role._retired_id == rid
