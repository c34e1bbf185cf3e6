"""One attested peer breaking the record rules, performed over libp2p against honest real nodes.

The attacker is a real, attested node of the federation: it signs records with its own
identity (as any member can) and sends them straight down its gossip streams, past its own
dissemination core's checks. Honest nodes must refuse and count them, and lose nothing.
"""

from __future__ import annotations

import time

from node.attestation.score import sign_record
from overlay.records import KIND_MANAGER, KIND_REVOCATION, KIND_SCORE, Record
from overlay.wire import encode
from tests.adversary import Adversary
from tests.netutil import federation, fully_attested, wait_until


def _forge(attacker, kind: str, subject: str, version: int | None = None,
           payload: bytes = b"forged") -> Record:
    return Adversary(attacker).forge_record(kind, subject, version=version, payload=payload)


def _send_to_all(attacker, honest, records: tuple[Record, ...]) -> None:
    Adversary(attacker).push_records(honest, records)


async def _push_until(attacker, honest, records: tuple[Record, ...], took) -> None:  # type: ignore[no-untyped-def]
    """Push ``records`` to every honest node, and again (every 0.5 s) to those for which
    ``took(node)`` is not yet true: gossip is best effort, and a push lost with a stream that
    failed to open (seen in a fresh-clone run) is not what these tests are about."""

    def everywhere() -> bool:
        missing = [a for a in honest if not took(a)]
        if missing:
            _send_to_all(attacker, missing, records)
        return not missing

    await wait_until(everywhere, 20, 0.5)


def _rejected(a, reason: str) -> int:
    return a.counters.get("record_rejected", reason)


async def test_an_attested_peer_cannot_revoke_anyone_by_gossip(tmp_path):
    async with federation(tmp_path, 4, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        attacker, victim = agents[3], agents[1]
        honest = agents[:3]
        # The attack: a well-signed revocation record about an honest node, sent to everyone.
        await _push_until(attacker, honest, (_forge(attacker, KIND_REVOCATION, victim.peer_id),),
                          lambda a: _rejected(a, "revocation-not-manager") >= 1)
        # Nobody revoked the victim, nobody stored the record, the victim stays in everywhere.
        for a in honest:
            assert not a.peers.is_revoked(victim.peer_id)
            assert a.counters.get("revoked") == 0
            assert a.gossip.dissemination.about(KIND_REVOCATION, victim.peer_id) == []
        await wait_until(lambda: fully_attested(agents), 20)
        # Its own agent's revoke is a local cut-off: it publishes nothing...
        attacker.revoke(victim.peer_id, "says so")
        # ...and asking the gossip layer to publish is refused: it is not the manager.
        assert not attacker.gossip.publish_revocation_hint(victim.peer_id, "says so")
        assert attacker.counters.get("record_publish_refused", "revocation-not-manager") == 1
        await wait_until(lambda: not attacker.peers.is_attested(victim.peer_id), 10)
        for a in honest:
            assert not a.peers.is_revoked(victim.peer_id)
            assert a.gossip.dissemination.about(KIND_REVOCATION, victim.peer_id) == []


async def test_the_committed_managers_hint_reaches_everyone_and_revokes_nobody(tmp_path):
    async with federation(tmp_path, 4, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        manager, victim = agents[0], agents[3]
        hints: dict[str, list[tuple[str, str]]] = {a.peer_id: [] for a in agents}
        for a in agents:  # what the manager role wires from the committed state
            a.gossip.is_manager = manager.peer_id.__eq__
            a.gossip.on_revocation_hint(
                lambda s, i, got=hints[a.peer_id]: got.append((s, i)))
        assert not agents[2].gossip.publish_revocation_hint(victim.peer_id, "not mine to say")
        assert manager.gossip.publish_revocation_hint(victim.peer_id, "committed: integrity alarm")
        await wait_until(lambda: all(hints[a.peer_id] == [(victim.peer_id, manager.peer_id)]
                                     for a in agents[:3]), 20)
        # A hint is not a revocation: only the committed state revokes (the manager role).
        assert not any(a.peers.is_revoked(victim.peer_id) for a in agents)
        # The committed revocation, once applied, drops the revoked node's records (and only
        # those: the others' score records stay; waited for, since a record that reached a
        # node before it had attested the issuer comes back only by anti-entropy).
        def others_about_1(a) -> list[Record]:
            return [r for r in a.gossip.dissemination.about(KIND_SCORE, agents[1].peer_id)
                    if r.issuer != victim.peer_id]

        await wait_until(lambda: all(others_about_1(a) for a in agents[:3]), 20)
        for a in agents[:3]:
            a.revoke(victim.peer_id, "committed: integrity alarm")
            assert others_about_1(a)
            assert not [r for r in a.gossip.dissemination.records() if r.issuer == victim.peer_id]
            assert a.gossip.dissemination.is_revoked(victim.peer_id)


async def test_an_attested_peer_cannot_squat_another_issuers_slot(tmp_path):
    async with federation(tmp_path, 4, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        attacker, owner = agents[3], agents[1]
        honest = agents[:3]
        got: dict[str, list[Record]] = {a.peer_id: [] for a in agents}
        for a in agents:
            a.gossip.subscribe(KIND_MANAGER, got[a.peer_id].append)
        # The attack: owner's "manager" slot, written by the attacker with a version far above
        # the owner's (inside the bound: only the kind rule stops it), and owner's score slot
        # with a version no honest record could ever exceed.
        far = int(time.time() * 1000) + 60_000
        sr = sign_record(attacker._identity, subject=owner.peer_id, score=1, kind="sim",
                         verdict="ok", evidence_hash=bytes(32), issued_at=time.time(), ttl_s=600)
        await _push_until(attacker, honest, (
            _forge(attacker, KIND_MANAGER, owner.peer_id, far),
            _forge(attacker, KIND_SCORE, owner.peer_id, 2**62, encode(sr)),
        ), lambda a: _rejected(a, "subject-not-issuer") >= 1 and _rejected(a, "version-too-far") >= 1)
        # The owner's own records still go through everywhere.
        t0 = time.time()
        assert owner.gossip.publish(KIND_MANAGER, owner.peer_id, b"announce")
        await wait_until(lambda: all(any(r.issuer == owner.peer_id for r in got[a.peer_id])
                                     for a in (agents[0], agents[2])), 20)
        # Honest verifiers' fresh scores about the owner are kept (re-attestation runs every
        # second), however high the attacker's version was.
        await wait_until(lambda: all(any(
            r.issuer != attacker.peer_id and r.issued_at >= t0
            for r in a.gossip.dissemination.about(KIND_SCORE, owner.peer_id))
            for a in (agents[0], agents[2])), 20)
        for a in honest:
            assert not [r for r in a.gossip.dissemination.records()
                        if r.issuer == attacker.peer_id and r.version >= far]


async def test_a_record_with_an_invalid_subject_does_not_cost_its_batch(tmp_path):
    async with federation(tmp_path, 3, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        attacker = agents[2]
        honest = agents[:2]
        got: dict[str, list[str]] = {a.peer_id: [] for a in agents}
        for a in agents:
            a.gossip.subscribe("probe", lambda r, seen=got[a.peer_id]: seen.append(r.subject))
        g = attacker
        batch = (
            _forge(g, "probe", agents[0].peer_id, payload=b"first"),
            # not a peer id: once enough to abort the rest of the batch on every receiver
            _forge(g, KIND_REVOCATION, "not-a-peer-id!", payload=b"bad subject"),
            _forge(g, KIND_SCORE, "0" * 40, payload=b"bad subject"),
            _forge(g, "probe", agents[1].peer_id, payload=b"after the bad one"),
        )
        await _push_until(attacker, honest, batch, lambda a: _rejected(a, "invalid-subject") >= 2)
        # both bad subjects of one batch counted (a batch is refused or kept record by record)
        assert all(_rejected(a, "invalid-subject") % 2 == 0 for a in honest)
        await wait_until(lambda: all(sorted(got[a.peer_id]) == sorted(
            [agents[0].peer_id, agents[1].peer_id]) for a in honest), 20)
        for a in honest:
            assert a.counters.get("internal_error") == 0
            assert a.counters.get("revoked") == 0
