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
