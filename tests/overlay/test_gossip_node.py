"""The membership and dissemination cores running in real nodes over libp2p."""

from __future__ import annotations

from tests.netutil import federation, fully_attested, wait_until


def _scores_everywhere(agents, issuer, subject) -> bool:
    return all(a.gossip.scores().get(subject, {}).get(issuer) is not None for a in agents)


async def test_score_records_reach_every_node_and_members_are_alive(tmp_path):
    async with federation(tmp_path, 5, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        issuer, subject = agents[0].peer_id, agents[1].peer_id
        await wait_until(lambda: _scores_everywhere(agents, issuer, subject), 20)
        for a in agents:
            st = a.status()
            assert st["gossip"]["scores"][subject][issuer] == 90
        await wait_until(lambda: all(
            all(p["membership"] == "alive" for p in a.status()["peers"]) for a in agents), 20)
        assert all(a.status()["gossip"]["members"] == 5 for a in agents)


async def test_revocation_record_cuts_a_node_off_everywhere(tmp_path):
    async with federation(tmp_path, 4, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        bad = agents[3]
        agents[0].revoke(bad.peer_id, "failed attestation on a manager's check")
        await wait_until(lambda: all(a.peers.is_revoked(bad.peer_id) for a in agents[:3]), 20)
        assert all(not a.peers.is_attested(bad.peer_id) for a in agents[:3])
        assert agents[1].counters.get("revoked") == 1
