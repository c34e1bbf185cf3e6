"""One attested member lying to the others over the real gossip protocol (SWIM claims).

The attacker is a real node of the federation; its code sends frames the wire allows straight
through its gossip service: an accusation of a victim at incarnation 2^63 - 2 (which, believed,
would leave the victim needing an incarnation no message can carry), an alive claim at the top,
and a full-state sync naming two thousand members it invented. The honest nodes must keep the
victim alive, refutable, and their member tables to the attested peers."""

from __future__ import annotations

from overlay.messages_gossip import ALIVE, DEAD, SUSPECT, SwimGossip, SwimSync, SwimUpdate
from tests.adversary import Adversary
from tests.netutil import federation, fully_attested, wait_until

TOP = 2**63 - 1


async def test_one_member_cannot_push_a_victim_past_refutation_or_invent_members(tmp_path):
    async with federation(tmp_path, 4, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        honest, victim, attacker = agents[0], agents[1], agents[3]
        await wait_until(lambda: all(a.gossip.membership.num_members() == 4 for a in agents), 30)
        vid = victim.peer_id
        lies = (SwimUpdate(vid, DEAD, TOP - 1, attacker.peer_id),
                SwimUpdate(vid, SUSPECT, TOP - 1, agents[2].peer_id),
                SwimUpdate(vid, ALIVE, TOP, vid))
        invented = tuple(SwimUpdate(f"12D3KooWinvented{i:05d}", ALIVE, 0, f"12D3KooWinvented{i:05d}")
                         for i in range(2000))
        Adversary(attacker).send_gossip((honest, agents[2]), SwimGossip(lies),
                                        SwimSync(members=invented))
        # Until both lies have been dealt with: refused (counted), or believed.
        await wait_until(lambda: (honest.counters.get("swim_refused", "incarnation-jump") >= 2
                                  or honest.gossip.membership.state_of(vid)[1] > 1024)
                         and (honest.counters.get("swim_refused", "not-admitted") >= 2000
                              or honest.gossip.membership.num_members() > 4), 20)
        for a in agents[:3]:
            assert a.gossip.membership.num_members() == 4
        state, inc = honest.gossip.membership.state_of(vid)
        assert state == ALIVE and inc <= victim.gossip.membership.incarnation <= 1024
        assert honest.counters.get("swim_refused", "incarnation-jump") >= 2
        assert honest.counters.get("swim_refused", "not-admitted") >= 2000
        # The victim hears the lie about itself too and refutes within the window: the others
        # follow, and nobody ever needs an incarnation past the top.
        attacker.gossip._send(vid, SwimGossip(lies[:1]))
        await wait_until(lambda: victim.gossip.membership.incarnation >= 1, 20)
        await wait_until(lambda: honest.gossip.membership.state_of(vid)
                         == (ALIVE, victim.gossip.membership.incarnation), 20)
        assert victim.gossip.membership.incarnation <= 1024
        assert victim.counters.get("gossip_dropped", "oversize") == 0
