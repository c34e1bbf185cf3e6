"""Capability records on real in-process nodes (node/tasks/offers.py): every node learns every
attested node's offer by gossip, and one attested member cannot plant or overwrite another's."""

from __future__ import annotations

import dataclasses

import trio

from node.config import TasksConfig
from node.tasks import offers as offers_mod
from node.tasks.capability import sign_capability
from overlay.records import KIND_CAPABILITY
from overlay.wire import encode
from tests.adversary import Adversary
from tests.netutil import fully_attested, local_config, make_agent, wait_until


async def _federation(tmp_path, nursery, n: int):
    agents = []
    for i in range(n):
        cfg = dataclasses.replace(local_config(), tasks=TasksConfig(
            cores=1, memory_mib=256 * (i + 1), region=f"r{i}", price_core_s=10 * i))
        boot = (agents[0].full_addrs()[0],) if agents else ()
        a = make_agent(tmp_path, f"n{i}", config=cfg, bootstrap=boot, gossip=True)
        offers_mod.attach(a)
        await nursery.start(a.run)
        agents.append(a)
    return agents


async def test_every_node_learns_every_offer_and_refuses_forged_ones(tmp_path):
    async with trio.open_nursery() as nursery:
        agents = await _federation(tmp_path, nursery, 3)
        await wait_until(lambda: fully_attested(agents), 40)
        ids = {a.peer_id for a in agents}
        await wait_until(lambda: all(set(a.offers.offers()) == ids for a in agents), 30)
        for a in agents:
            o = a.offers.offers()
            for i, b in enumerate(agents):
                assert o[b.peer_id].memory_mib == 256 * (i + 1)
                assert o[b.peer_id].price_core_s == 10 * i
            assert a.status()["capabilities"][agents[1].peer_id]["region"] == "r1"

        attacker, victim, honest = Adversary(agents[2]), agents[1], agents[:2]
        own = attacker.agent.offers.own_record()
        # 1. an offer in the victim's name, signed by the attacker (its own gossip slot)
        claim = sign_capability(attacker.agent._identity,
                                dataclasses.replace(own, node_id=victim.peer_id, memory_mib=1,
                                                    links=()))
        # 2. its own slot, but the inner record carries the victim's key and a stale signature
        stolen_key = dataclasses.replace(own, issuer=victim.public_key, seq=own.seq + 10)
        # 3. its own slot and key, the fields changed after signing
        tampered = dataclasses.replace(own, memory_mib=own.memory_mib * 64, seq=own.seq + 20)
        attacker.push_records(honest, tuple(
            attacker.forge_record(KIND_CAPABILITY, attacker.peer_id, payload=encode(c))
            for c in (claim, stolen_key, tampered)))
        # 4. the victim's own slot (subject = victim): refused by the record rules themselves
        attacker.push_records(honest, (attacker.forge_record(
            KIND_CAPABILITY, victim.peer_id, payload=encode(claim)),))

        def refused(a, reason: str) -> int:
            return a.counters.get("capability_rejected", reason)

        await wait_until(lambda: all(refused(a, "not-its-own") >= 1 and refused(a, "key-mismatch") >= 1
                                     and refused(a, "bad-signature") >= 1 for a in honest), 20)
        await wait_until(lambda: all(a.counters.get("record_rejected") >= 1 for a in honest), 20)
        for a in honest:
            o = a.offers.offers()
            assert o[victim.peer_id].memory_mib == 512
            assert o[attacker.peer_id].memory_mib == own.memory_mib
        nursery.cancel_scope.cancel()


def test_check_names_each_refusal():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.ed25519 import Ed25519PublicKey as Libp2pKey
    from libp2p.peer.id import ID

    from node.tasks.capability import Detected, build_capability

    key = Ed25519PrivateKey.generate()
    pid = ID.from_pubkey(Libp2pKey.from_bytes(key.public_key().public_bytes_raw())).to_base58()
    rec = sign_capability(key, build_capability(TasksConfig(), Detected(4, 4096), node_id=pid,
                                                tee_kind="sim", seq=1, agent_version="0.1.0"))
    check = offers_mod.Offers.check
    assert check(pid, rec) is None
    assert check("12D3KooWsomeoneelse", rec) == "not-its-own"
    other = Ed25519PrivateKey.generate()
    assert check(pid, sign_capability(other, rec)) == "key-mismatch"
    assert check(pid, dataclasses.replace(rec, cores=rec.cores + 1)) == "bad-signature"
