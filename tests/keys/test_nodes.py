"""Nodes with their keys in a token among nodes with file keys: real libp2p on loopback."""

from __future__ import annotations

import pytest
import trio

from node.attestation.score import verify_record
from node.testing import fully_attested, make_agent, wait_until
from tests.keys.conftest import BACKENDS, make_provider


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_file_key_node_and_a_node_of_each_backend_attest_each_other(tmp_path, request, backend):
    keys = make_provider(backend, request, "b")
    async with trio.open_nursery() as nursery:
        a = make_agent(tmp_path, "a", gossip=True)
        await nursery.start(a.run)
        b = make_agent(tmp_path, "b", gossip=True, bootstrap=(a.full_addrs()[0],), keys=keys)
        await nursery.start(b.run)
        try:
            await wait_until(lambda: fully_attested([a, b]), 30)
            # b's verdict on a came back to a signed by b's key (the token's, for pkcs11)
            await wait_until(lambda: b.peer_id in a.records_about_us, 20)
            rec = a.records_about_us[b.peer_id]
            assert rec.issuer == b.public_key and verify_record(rec)
            # b's gossip records passed a's signature check (dissemination core)
            await wait_until(lambda: any(r.issuer == b.peer_id for r in a.gossip.dissemination.records()), 20)
            # and a's records passed b's
            await wait_until(lambda: any(r.issuer == a.peer_id for r in b.gossip.dissemination.records()), 20)
            st = b.status()["keys"]
            assert st["backend"] == backend and st["available"] is True
            if backend == "pkcs11":
                assert st["signatures"] > 0  # the Noise handshake and the records went through it
        finally:
            a.stop()
            b.stop()


async def test_token_removed_at_run_time_quarantines_the_node_and_it_recovers(tmp_path, request):
    keys = make_provider("pkcs11", request, "b")
    hsm = request.getfixturevalue("hsm")
    started = []

    async def start(nursery, agent):
        started.append(agent)
        await nursery.start(agent.run)
        return agent

    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_agent(tmp_path, "a", gossip=True))
        b = await start(nursery, make_agent(tmp_path, "b", gossip=True, bootstrap=(a.full_addrs()[0],),
                                            keys=keys, key_watch_s=0.5))
        try:
            await wait_until(lambda: fully_attested([a, b]), 30)
            away = hsm.tokens.with_name("tokens.away")
            hsm.tokens.rename(away)
            await wait_until(lambda: not b.status()["keys"]["available"], 10)
            # b withholds its evidence: a quarantines it as a node that cannot attest
            await wait_until(lambda: not a.peers.is_attested(b.peer_id), 30)
            assert b.counters.get("evidence_withheld", "key-unavailable") >= 1
            assert b.counters.get("keys_lost") == 1
            # a newcomer cannot even open a channel to b (b cannot sign its Noise handshake),
            # and b's listener survives that
            c = await start(nursery, make_agent(tmp_path, "c", gossip=True, bootstrap=(b.full_addrs()[0],)))
            await wait_until(lambda: c.counters.get("dial_failed") >= 1, 20)
            away.rename(hsm.tokens)
            await wait_until(lambda: b.status()["keys"]["available"], 10)
            await wait_until(lambda: fully_attested([a, b]), 30)
            # new channels to b work again (c itself waits out libp2p's 60 s negative dial
            # cache of b, as after any failed dial; a newcomer does not)
            d = await start(nursery, make_agent(tmp_path, "d", gossip=True, bootstrap=(b.full_addrs()[0],)))
            await wait_until(lambda: fully_attested([b, d]), 30)
            st = b.status()["keys"]
            assert st["losses"] == 1 and st["recoveries"] == 1
            assert b.counters.get("keys_recovered") == 1
            assert b.counters.get("internal_error") == 0
        finally:
            for n in started:
                n.stop()
