"""One attested peer tries to take the federation over (issue 19, items 1-2 and the transfer
part of 6). Each test performs the attack from a real, attested in-process node whose manager
role answers or sends what the wire allows, against honest real nodes, and checks that the
honest nodes keep their state, their council and their Raft."""

from __future__ import annotations

import dataclasses

import trio
from libp2p.peer.id import ID

from consensus import messages as cm
from consensus.state import encode_state
from node.manager_wire import (
    RAFT_PROTOCOL,
    STATE_PROTOCOL,
    ManagerReply,
    StateResponse,
    TransferRequest,
)
from overlay.framing import frame
from overlay.wire import encode
from tests.adversary import Adversary
from tests.manager.helpers import FAST, federation, settled
from tests.netutil import wait_until

SETTINGS = dataclasses.replace(FAST, council_size=3)


async def _settled_with_followers(fed):
    await wait_until(lambda: settled(fed, 3), 60)
    await wait_until(lambda: sorted(s["role"] for s in fed.statuses())
                     == ["council", "council", "follower", "follower", "manager"], 30)
    lead = fed.leaders()[0]
    # every node holds a certified state of the current term
    await wait_until(lambda: all(m.role.cert.chain.latest is not None
                                 and m.role.view()[0].manager_term == lead.role.node.raft.term
                                 for m in fed.members), 30)
    followers = [m for m in fed.members if m.role.status()["role"] == "follower"]
    voters = [m for m in fed.members if m.role.status()["role"] == "council"]
    return lead, followers, voters


async def test_a_forged_state_served_by_one_attested_peer_is_not_adopted(tmp_path):
    async with federation(tmp_path, 5, SETTINGS) as fed:
        lead, followers, voters = await _settled_with_followers(fed)
        adv, victim = Adversary(followers[0]), followers[1]
        honest, index = victim.role.view()
        forged = adv.forged_takeover(honest)
        data = encode_state(forged)
        at = index + 100
        proofs = {
            "no proof": (),
            "self-certified, itself the only voter": (adv.self_certified(forged, at, (adv.peer_id,)),),
            "claims the real voters, vouched by itself": (adv.self_certified(
                forged, at, tuple(m.agent.peer_id for m in [lead, *voters])),),
        }
        for what, proof in proofs.items():
            adv.serve_state(StateResponse(term=forged.manager_term, commit_index=at,
                                          leader=adv.peer_id, state_index=at, state=data,
                                          decisions=(), proof=proof))
            before = victim.agent.counters.get("state_rejected", "unproven")
            assert await victim.role.follow.fetch(adv.peer_id, "poll")
            # at least this fetch's refusal (the victim's own polls may ask the adversary too)
            assert victim.agent.counters.get("state_rejected", "unproven") >= before + 1, what
            st, idx = victim.role.view()
            assert st.manager_id != adv.peer_id and idx < at, what
            assert not any(victim.agent.peers.is_revoked(m.agent.peer_id) for m in fed.members)
        # the victim still follows the honest manager afterwards
        assert victim.role.status()["manager"] == lead.agent.peer_id


async def test_a_removed_verdict_without_proof_does_not_retire_a_voter(tmp_path):
    async with federation(tmp_path, 5, SETTINGS) as fed:
        _lead, followers, voters = await _settled_with_followers(fed)
        adv, victim = Adversary(followers[0]), voters[0]
        rid = victim.role.node.id
        adv.serve_state(StateResponse(term=99, commit_index=10**6, leader=adv.peer_id,
                                      state_index=0, state=b"", decisions=(), removed=True))
        assert await victim.role.follow.fetch(adv.peer_id, "poll")
        assert victim.role.node is not None and victim.role.node.id == rid
        assert victim.role.is_voter() and victim.role._retired_id is None
        assert not (victim.role.raft_dir / "retired").exists()


async def test_raft_from_a_member_that_is_not_a_voter_is_dropped(tmp_path):
    async with federation(tmp_path, 5, SETTINGS) as fed:
        lead, followers, voters = await _settled_with_followers(fed)
        adv, victim = Adversary(followers[0]), voters[0]
        adv_rid = victim.role.view()[0].member(adv.peer_id).raft_id
        term = victim.role.node.raft.term
        before = victim.agent.counters.get("raft_dropped", "not-a-voter")
        # A higher-term heartbeat would make the victim a follower of the adversary's term
        # (and an election would follow): the takeover of the council's Raft by a non-voter.
        await adv.send(victim, RAFT_PROTOCOL, cm.Heartbeat(sender=adv_rid, to=victim.role.node.id,
                                                   term=term + 50, commit=0))
        await wait_until(lambda: victim.agent.counters.get("raft_dropped", "not-a-voter") > before, 10)
        assert victim.role.node.raft.term < term + 50
        assert lead.role.is_leader() and lead.role.node.raft.term < term + 50


async def test_raft_stops_at_once_from_a_voter_quarantined_since_its_stream_opened(tmp_path):
    async with federation(tmp_path, 5, SETTINGS) as fed:
        _lead, _followers, voters = await _settled_with_followers(fed)
        adv, victim = voters
        adv_rid = adv.role.node.id
        hb = cm.Heartbeat(sender=adv_rid, to=victim.role.node.id,
                          term=victim.role.node.raft.term, commit=0)
        # 1. the Raft handler re-checks attestation on every message
        stream = await adv.agent._open_stream(ID.from_base58(victim.agent.peer_id), RAFT_PROTOCOL)
        await stream.write(frame(encode(hb)))
        victim.agent.peers.quarantine(adv.agent.peer_id, "evidence refused")
        await stream.write(frame(encode(hb)))
        await wait_until(lambda: victim.agent.counters.get("raft_dropped", "from-unattested") >= 1, 10)
        # 2. a failed verdict cuts every stream the peer has open at once, idle ones included
        victim.agent._record_outcome(adv.agent.peer_id, True, "ok", 90, "sim", None, None)
        stream = await adv.agent._open_stream(ID.from_base58(victim.agent.peer_id), RAFT_PROTOCOL)
        await stream.write(frame(encode(hb)))
        await wait_until(lambda: adv.agent.peer_id in victim.agent._gated_streams, 10)
        victim.agent._record_outcome(adv.agent.peer_id, False, "policy: measurement not allowed",
                                     0, "sim", None, None)
        assert victim.agent.counters.get("stream_cut", "quarantined") >= 1
        assert adv.agent.peer_id not in victim.agent._gated_streams


async def test_only_a_council_member_may_ask_the_manager_to_hand_over(tmp_path):
    async with federation(tmp_path, 5, SETTINGS) as fed:
        lead, followers, voters = await _settled_with_followers(fed)
        term = lead.role.node.raft.term

        async def ask(member) -> ManagerReply:
            return await Adversary(member).ask(lead, STATE_PROTOCOL, TransferRequest(""), ManagerReply)

        reply = await ask(followers[0])
        assert not reply.ok and "council member" in reply.error
        assert lead.agent.counters.get("transfer_refused", "not-council") == 1
        await trio.sleep(0)
        assert lead.role.is_leader() and lead.role.node.raft.term == term
        # a council member still may
        reply = await ask(voters[0])
        assert reply.ok, reply.error
        await wait_until(lambda: any(m.role.is_leader() and m.role.node.raft.term > term
                                     for m in fed.members), 20)


async def test_a_node_pinned_to_its_federation_adopts_no_other(tmp_path):
    async with federation(tmp_path, 3, SETTINGS) as fed:
        await wait_until(lambda: settled(fed, 3), 60)
        other = await fed.start("pinned", settings=dataclasses.replace(
            SETTINGS, federation="12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X"))
        await wait_until(lambda: other.agent.counters.get("state_rejected", "unproven") >= 1, 30)
        assert other.role.view()[1] == 0 and other.role.node is None
        # the same node unpinned (or pinned to this federation) joins
        fed_id = fed.members[0].role.status()["consensus"]["federation"]
        other.role.settings = dataclasses.replace(SETTINGS, federation=fed_id)
        await wait_until(lambda: other.role.view()[1] > 0, 30)
