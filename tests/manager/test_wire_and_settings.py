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
from consensus.state import decode_state
from node.manager import ManagerSettings, check_dissolve_order, load_owner_key
from node.manager_wire import (
    STATE_REQUESTS,
    DecisionRecord,
    DissolveOrder,
    LeaveRequest,
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
messages = st.one_of(
    st.builds(StateRequest, raft_id=nat, have_index=nat),
    st.builds(StateResponse, term=nat, commit_index=nat, leader=st.text(max_size=60),
              state_index=nat, state=st.binary(max_size=300),
              decisions=st.lists(decisions, max_size=3).map(tuple)),
    st.builds(LeaveRequest, reason=st.text(max_size=50)),
    st.builds(TransferRequest, to=st.text(max_size=60)),
    st.builds(ManagerReply, ok=st.booleans(), error=st.text(max_size=50),
              detail=st.text(max_size=50)),
    st.builds(DissolveOrder, federation=peer, issued_at=nat,
              signature=st.binary(min_size=64, max_size=64)),
)
ALL = (StateRequest, StateResponse, LeaveRequest, TransferRequest, ManagerReply, DissolveOrder,
       *cm.MESSAGE_TYPES)


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
        wire.decode(raw, (StateResponse, DissolveOrder, ManagerReply))


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


def test_settings_file_overrides_the_profile(tmp_path) -> None:
    assert ManagerSettings.load(tmp_path, "lan") == ManagerSettings.for_profile("lan")
    assert ManagerSettings.for_profile("lan").term_limit_s == 600.0
    (tmp_path / "manager.toml").write_text("term_limit_s = 2\ncouncil_size = 3\nfsync = false\n")
    s = ManagerSettings.load(tmp_path, "local_test")
    assert (s.term_limit_s, s.council_size, s.fsync, s.tick_s) == (2.0, 3, False, 0.02)
    for bad in ("nope = 1\n", "council_size = 0\n", "fsync = 1\n", "founder = \"maybe\"\n",
                "term_limit_s = \"x\"\n", "[[[\n"):
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
