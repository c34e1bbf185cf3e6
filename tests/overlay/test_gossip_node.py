"""The membership and dissemination cores running in real nodes over libp2p."""

from __future__ import annotations

import logging

import pytest

from bench.bench_fidelity import ACCEPT
from tests.netutil import federation, fully_attested, wait_until


def _known_everywhere(agents, subject, since: float) -> bool:
    return all(a.gossip.scores().get(subject, {}).get("issued_at", 0) >= since for a in agents)


async def test_score_records_reach_every_node_and_members_are_alive(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="enclave_swarm.gossip")
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
        mine = next(r for r in agents[0].gossip.dissemination.records()
                    if r.kind == "score" and r.payload == encode(rec))
        await wait_until(lambda: _known_everywhere(agents, subject, now), 20)
        # Each receiver logs its acceptance at debug, in the form bench/bench_fidelity.py reads
        # (the issuer does not: its own record is no news).
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("accepted a ")]
        got = [m.groupdict() for line in lines if (m := ACCEPT.match(line))]
        assert len(got) == len(lines) > 0
        ours = [g for g in got if g["kind"] == "score" and g["issuer"] == mine.issuer
                and g["subject"] == mine.subject and int(g["version"]) == mine.version]
        assert ours and all(float(g["issued"]) == pytest.approx(mine.issued_at, abs=1e-6) for g in ours)
        for a in agents:
            got = a.status()["gossip"]["scores"][subject]
            assert got["score"] in (77, 90)  # a newer re-attestation may already supersede it
        await wait_until(lambda: all(len(a.gossip.scores()) == 5 for a in agents), 20)
        await wait_until(lambda: all(
            all(p["membership"] == "alive" for p in a.status()["peers"]) for a in agents), 20)
        assert all(a.status()["gossip"]["members"] == 5 for a in agents)


async def test_a_local_revocation_is_not_spread_by_gossip(tmp_path):
    """Revocation is the council's (the manager role applies committed ones on every node):
    one node's ``Agent.revoke`` cuts the peer off there and drops its records, and publishes
    nothing, so the other nodes keep the peer."""
    async with federation(tmp_path, 4, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        bad = agents[3]
        # The others hold the peer's records first (a record that reached a node before that
        # node had attested its issuer was refused, and comes back only by anti-entropy).
        await wait_until(lambda: all(any(r.issuer == bad.peer_id for r in a.gossip.dissemination.records())
                                     for a in agents[1:3]), 20)
        agents[0].revoke(bad.peer_id, "failed attestation on a manager's check")
        await wait_until(lambda: not agents[0].peers.is_attested(bad.peer_id), 10)
        d0 = agents[0].gossip.dissemination
        assert d0.is_revoked(bad.peer_id)
        assert not [r for r in d0.records() if r.issuer == bad.peer_id]
        # A record published after the revocation reaches the others: a revocation record
        # would have jumped the queue ahead of it, had one been published.
        seen: list[str] = []
        for a in agents[1:3]:
            a.gossip.subscribe("probe", lambda r, who=a.peer_id: seen.append(who))
        agents[0].gossip.publish("probe", agents[0].peer_id, b"after the revocation")
        await wait_until(lambda: len(seen) == 2, 20)
        for a in agents[1:3]:
            assert not a.peers.is_revoked(bad.peer_id) and a.peers.is_attested(bad.peer_id)
            assert a.counters.get("revoked") == 0
            assert any(r.issuer == bad.peer_id for r in a.gossip.dissemination.records())
