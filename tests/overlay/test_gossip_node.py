"""The membership and dissemination cores running in real nodes over libp2p."""

from __future__ import annotations

from tests.netutil import federation, fully_attested, wait_until


def _known_everywhere(agents, subject, since: float) -> bool:
    return all(a.gossip.scores().get(subject, {}).get("issued_at", 0) >= since for a in agents)


async def test_score_records_reach_every_node_and_members_are_alive(tmp_path):
    async with federation(tmp_path, 5, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        import time

        from node.attestation.score import sign_record

        # A score record issued on node 0 about node 1 reaches every node's status.
        now = time.time()
        subject = agents[1].peer_id
        rec = sign_record(agents[0]._identity, subject=subject, score=77, kind="sim", verdict="ok",
                          evidence_hash=bytes(32), issued_at=now, ttl_s=60)
        from overlay.wire import encode

        agents[0].gossip.publish("score", subject, encode(rec))
        await wait_until(lambda: _known_everywhere(agents, subject, now), 20)
        for a in agents:
            got = a.status()["gossip"]["scores"][subject]
            assert got["score"] in (77, 90)  # a newer re-attestation may already supersede it
        await wait_until(lambda: all(len(a.gossip.scores()) == 5 for a in agents), 20)
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
