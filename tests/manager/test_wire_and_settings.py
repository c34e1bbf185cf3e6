"""The manager's wire messages (round trip and fuzzing), its settings file, and the pure
checks of dissolve orders."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import messages as cm
from consensus.certificate import Certificate, Checkpoint, Vouch
from consensus.state import SwarmState, decode_state
from node.manager_checks import check_announcement, check_dissolve_order, load_owner_key
from node.manager_settings import ManagerSettings
from node.manager_wire import (
    STATE_REQUESTS,
    CertifyReply,
    CertifyRequest,
    DecisionRecord,
    DissolveOrder,
    LeaveRequest,
    ManagerAnnounce,
    ManagerReply,
    StateRequest,
    StateResponse,
    TransferRequest,
    dissolve_payload,
)
from overlay import wire
from overlay.errors import RemoteProtocolError

nat = st.integers(0, 2**63)
peer = st.text(min_size=1, max_size=60)
decisions = st.builds(DecisionRecord, term=nat, index=st.integers(1, 2**63),
                      entry=st.binary(max_size=200), signer=peer,
                      signature=st.binary(min_size=64, max_size=64))
checkpoints = st.builds(Checkpoint, federation=peer, index=st.integers(1, 2**63),
                        digest=st.binary(min_size=32, max_size=32),
                        voters=st.lists(peer, min_size=1, max_size=5).map(tuple),
                        manager_term=nat, manager=peer)
certificates = st.builds(Certificate, checkpoint=checkpoints, vouches=st.lists(
    st.builds(Vouch, signer=peer, signature=st.binary(min_size=64, max_size=64)),
    max_size=3).map(tuple))
messages = st.one_of(
    st.builds(StateRequest, raft_id=nat, have_index=nat),
    st.builds(StateResponse, term=nat, commit_index=nat, leader=st.text(max_size=60),
              state_index=nat, state=st.binary(max_size=300),
              decisions=st.lists(decisions, max_size=3).map(tuple), removed=st.booleans(),
              proof=st.lists(certificates, max_size=2).map(tuple)),
    st.builds(CertifyRequest, checkpoint=checkpoints, prev=st.none() | certificates),
    st.builds(CertifyReply, signature=st.sampled_from([b"", bytes(64)]), reason=st.text(max_size=20)),
    st.builds(ManagerAnnounce, term=st.integers(1, 2**63), commit_index=st.integers(2**62, 2**63),
              applied_index=st.integers(0, 2**62), state_digest=st.binary(min_size=32, max_size=32),
              federation=st.text(max_size=60)),
    st.builds(LeaveRequest, reason=st.text(max_size=50)),
    st.builds(TransferRequest, to=st.text(max_size=60)),
    st.builds(ManagerReply, ok=st.booleans(), error=st.text(max_size=50),
              detail=st.text(max_size=50)),
    st.builds(DissolveOrder, federation=peer, issued_at=nat,
              signature=st.binary(min_size=64, max_size=64)),
)
ALL = (StateRequest, StateResponse, ManagerAnnounce, LeaveRequest, TransferRequest, ManagerReply,
       DissolveOrder, CertifyRequest, CertifyReply, *cm.MESSAGE_TYPES)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip(m: Any) -> None:
    assert wire.decode(wire.encode(m)) == m


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_fuzz_mutations_are_remote_errors_or_valid(m: Any, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(m))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        out = wire.decode(bytes(raw), ALL)
    except RemoteProtocolError:
        return
    assert type(out) in ALL


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_garbage(raw: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        wire.decode(raw, STATE_REQUESTS)
    with contextlib.suppress(RemoteProtocolError):
        wire.decode(raw, (StateResponse, DissolveOrder, ManagerReply, CertifyReply))
    with contextlib.suppress(RemoteProtocolError):
        wire.decode(raw, ManagerAnnounce)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_followed_state_bytes(raw: bytes) -> None:
    """A follower decodes the state a peer sent; garbage is InvalidCommand, never a crash."""
    from consensus.state import InvalidCommand

    with contextlib.suppress(InvalidCommand):
        decode_state(raw)


def test_bounds_are_enforced() -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode(wire.encode(DissolveOrder("x", 1, bytes(64)))[:-3])
    import cbor2

    for body in ({"federation": "", "issued_at": 1, "signature": bytes(64)},
                 {"federation": "x", "issued_at": 1, "signature": bytes(63)},
                 {"federation": "x", "issued_at": -1, "signature": bytes(64)}):
        with pytest.raises(RemoteProtocolError):
            wire.decode(cbor2.dumps(["dissolve-order", 1, body]))


def test_announcement_payload_rules() -> None:
    import cbor2

    good = ManagerAnnounce(term=3, commit_index=10, applied_index=9, state_digest=bytes(32),
                           federation="fed")
    assert wire.decode(wire.encode(good), ManagerAnnounce) == good
    body = {"term": 3, "commit_index": 10, "applied_index": 9, "state_digest": bytes(32),
            "federation": "fed"}
    for bad in ({"applied_index": 11}, {"term": 0}, {"state_digest": bytes(31)},
                {"federation": "x" * 200}):
        with pytest.raises(RemoteProtocolError):
            wire.decode(cbor2.dumps(["manager-announce", 1, {**body, **bad}]), ManagerAnnounce)


def test_an_announcement_must_come_from_the_manager_the_state_records_for_its_term() -> None:
    state = dataclasses.replace(SwarmState(), manager_term=7, manager_id="boss")
    assert check_announcement(7, "boss", state) is None
    assert check_announcement(7, "impostor", state) == "not-the-manager"
    assert check_announcement(6, "boss", state) == "stale-term"
    assert check_announcement(8, "boss", state) == "term-not-committed"
    assert check_announcement(1, "anyone", SwarmState()) == "term-not-committed"


def test_settings_file_overrides_the_profile(tmp_path) -> None:
    assert ManagerSettings.load(tmp_path, "lan") == ManagerSettings.for_profile("lan")
    assert ManagerSettings.for_profile("lan").term_limit_s == 600.0
    (tmp_path / "manager.toml").write_text("term_limit_s = 2\ncouncil_size = 3\nfsync = false\n")
    s = ManagerSettings.load(tmp_path, "local_test")
    assert (s.term_limit_s, s.council_size, s.fsync, s.tick_s) == (2.0, 3, False, 0.02)
    for bad in ("nope = 1\n", "council_size = 0\n", "fsync = 1\n", "founder = \"maybe\"\n",
                "term_limit_s = \"x\"\n", "[[[\n", "announce_refresh_s = 0.01\n",
                "announce_min_interval_s = 0\n", "announce_refresh_s = 600\n"):
        (tmp_path / "manager.toml").write_text(bad)
        with pytest.raises(ValueError):
            ManagerSettings.load(tmp_path, "lan")


def test_dissolve_orders_are_checked(tmp_path) -> None:
    owner = Ed25519PrivateKey.generate()
    assert load_owner_key(tmp_path) is None
    (tmp_path / "federation-owner.pub").write_bytes(owner.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    pub = load_owner_key(tmp_path)
    now = 1_800_000_000
    good = DissolveOrder("fed", now, owner.sign(dissolve_payload("fed", now)))
    assert check_dissolve_order(good, pub, "fed", now + 5) is None
    assert check_dissolve_order(good, None, "fed", now) is not None
    assert check_dissolve_order(good, pub, None, now) is not None
    assert check_dissolve_order(good, pub, "other", now) == "order is for another federation"
    assert check_dissolve_order(good, pub, "fed", now + 3600) == "order is stale or from the future"
    assert check_dissolve_order(dataclasses.replace(good, issued_at=now + 1), pub, "fed", now) \
        == "bad owner signature"
    (tmp_path / "federation-owner.pub").write_bytes(b"not a key")
    with pytest.raises(ValueError):
        load_owner_key(tmp_path)


def test_only_a_verdict_becomes_a_revocation_not_an_unreachable_peer(tmp_path, monkeypatch):
    """A re-attestation that never completed (stream failure, timeout, expired record) is a
    crash or a slow link: the manager rides it out. Only refused evidence is revoked."""
    from node.attestation.engine import Outcome
    from node.manager import ManagerRole
    from node.manager_settings import ManagerSettings
    from tests.netutil import make_agent

    agent = make_agent(tmp_path, "m")
    role = ManagerRole(agent, tmp_path / "m", ManagerSettings.for_profile("local-test"))
    role.install()
    monkeypatch.setattr(role, "is_leader", lambda: True)
    # attested peers that then miss their re-attestations until quarantined as unreachable,
    # and one whose committed revocation this node applies: no verdict, no revocation
    for pid in ("peer-a", "peer-b", "peer-c"):
        agent._record_outcome(pid, True, "ok", 90, "sim", None, None)
    for _ in range(agent.config.attestation.max_missed_reattestations):
        agent._record_missed("peer-a", "stream: StreamFailure")
        agent._record_missed("peer-b", "timeout")
    assert not agent.peers.is_attested("peer-a") and not agent.peers.is_attested("peer-b")
    agent.revoke("peer-c", "by the manager")
    assert role._pending_revokes == {}
    # a verdict against the evidence, as the agent reports it after judging
    for hook in agent._on_outcome:
        hook("peer-d", Outcome(False, "policy: measurement not allowed", 0, "sim", None, None, None))
    assert list(role._pending_revokes) == ["peer-d"]
