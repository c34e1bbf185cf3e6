"""Real libp2p nodes in one process on loopback: join, attest, quarantine."""

from __future__ import annotations

from tests.netutil import federation, fully_attested, wait_until


async def test_three_nodes_join_by_bootstrap_and_mutually_attest(tmp_path):
    async with federation(tmp_path, 3) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        for a in agents:
            st = a.status()
            assert st["attested_peers"] == 2
            for p in st["peers"]:
                assert p["attested"] and p["tee"] == "sim" and p["score"] == 90


async def test_peer_whose_evidence_stops_verifying_is_quarantined_by_all(tmp_path):
    quarantined: list[tuple[str, str]] = []
    async with federation(tmp_path, 3) as agents:
        for a in agents:
            a.on_quarantine(lambda pid, why: quarantined.append((pid, why)))
        await wait_until(lambda: fully_attested(agents), 30)
        bad = agents[2]
        bad.provider.debug = True  # its TEE now reports debug: the policy forbids it
        others = agents[:2]
        await wait_until(lambda: all(not a.peers.is_attested(bad.peer_id) for a in others), 15)
        for a in others:
            p = a.peers.get(bad.peer_id)
            assert "debug" in p.quarantine_reason and p.score < a.engine.policy.min_score
            # The healthy pair still trust each other.
            assert all(a.peers.is_attested(b.peer_id) for b in others if b is not a)
        assert {pid for pid, _ in quarantined} == {bad.peer_id}


async def test_policy_reload_cuts_off_a_measurement(tmp_path):
    import dataclasses

    async with federation(tmp_path, 3) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        # Operators of node 0 pin a different allow-list: nobody else matches it any more.
        agents[0].engine.policy = dataclasses.replace(agents[0].engine.policy, measurements=("ab" * 48,))
        await wait_until(lambda: not agents[0].peers.attested(), 15)
        assert all("measurement" in p.quarantine_reason for p in agents[0].peers.connected())


async def test_node_of_another_build_never_gets_in(tmp_path):
    from tests.netutil import make_agent

    async with federation(tmp_path, 2) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        import trio

        async with trio.open_nursery() as n:
            rogue = make_agent(tmp_path, "rogue", build_tag="patched",
                               bootstrap=(agents[0].full_addrs()[0],))
            await n.start(rogue.run)
            await wait_until(lambda: agents[0].counters.get("attest_rejected", "policy") >= 1, 15)
            assert not agents[0].peers.is_attested(rogue.peer_id)
            assert rogue.peer_id not in {p.peer_id for p in agents[1].peers.attested()}
            rogue.stop()


async def test_revoked_peer_is_cut_off_and_stays_out(tmp_path):
    async with federation(tmp_path, 3) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        bad = agents[2]
        for a in agents[:2]:
            a.revoke(bad.peer_id, "revoked by the federation")
        await wait_until(lambda: all(bad.peer_id not in {p.peer_id for p in a.peers.connected()}
                                     for a in agents[:2]), 15)
        # It keeps trying (bootstrap, peer exchange) but never gets back in.
        import trio

        await trio.sleep(2)
        for a in agents[:2]:
            assert not a.peers.is_attested(bad.peer_id)
            assert a.peers.is_attested(agents[1 - agents.index(a)].peer_id)
