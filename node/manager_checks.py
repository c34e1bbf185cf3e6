"""The manager role's checks and small helpers: signatures of peers and of decisions, who may
announce a term, the federation's id and owner key, dissolve orders, and closing a stream
without waiting on a dead peer. Stateless; node/manager.py and its companions use them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consensus.manager import SignedDecision, check_decision, command_digest
from consensus.state import SwarmState
from node.manager_wire import DecisionRecord, DissolveOrder, dissolve_payload
from overlay.host import public_key_of_peer

FOUNDER_RAFT_ID = 1
DISSOLVE_MAX_AGE_S = 600     # a dissolve order older (or this far in the future) is refused
OWNER_KEY_FILE = "federation-owner.pub"

def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _peer_key(peer_id: str) -> bytes | None:
    try:
        return public_key_of_peer(peer_id)
    except Exception:  # malformed base58 / multihash
        return None


def verify_decision(rec: DecisionRecord, state: SwarmState) -> str | None:
    """Check a signed decision against the committed state: signed by the manager recorded
    for its term (only the latest term is recorded in the state). None = valid."""
    return check_decision(
        SignedDecision(rec.term, rec.index, command_digest(rec.entry), rec.signer, rec.signature),
        entry_term=rec.term, entry_data=rec.entry,
        manager_of_term=_manager_of_term(state),
        public_key_of=_peer_key, verify=verify_ed25519)


def _manager_of_term(state: SwarmState) -> Callable[[int], str | None]:
    return lambda t: state.manager_id if t == state.manager_term and t else None


def check_announcement(term: int, issuer: str, state: SwarmState) -> str | None:
    """Is ``issuer`` the legitimate manager of ``term`` according to the committed ``state``
    (the same rule as for signed decisions)? None = yes, else a short reason. The record's
    signature by ``issuer`` was checked by the dissemination core."""
    if term < state.manager_term:
        return "stale-term"
    if term > state.manager_term:
        return "term-not-committed"
    if _manager_of_term(state)(term) != issuer:
        return "not-the-manager"
    return None


def federation_id(state: SwarmState) -> str | None:
    """The founder's peer id (raft id 1): names the federation in dissolve orders."""
    m = state.by_raft_id(FOUNDER_RAFT_ID)
    return m.node_id if m else None


def load_owner_key(data_path: Path) -> Ed25519PublicKey | None:
    path = data_path / OWNER_KEY_FILE
    if not path.exists():
        return None
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def check_dissolve_order(order: DissolveOrder, owner: Ed25519PublicKey | None,
                         federation: str | None, now: float) -> str | None:
    """None if ``order`` is a valid dissolve order for ``federation``, else why not."""
    if owner is None:
        return f"no federation owner key ({OWNER_KEY_FILE}) provisioned"
    if federation is None:
        return "this node does not know its federation yet"
    if order.federation != federation:
        return "order is for another federation"
    if abs(now - order.issued_at) > DISSOLVE_MAX_AGE_S:
        return "order is stale or from the future"
    try:
        owner.verify(order.signature, dissolve_payload(order.federation, order.issued_at))
    except (InvalidSignature, ValueError):
        return "bad owner signature"
    return None


async def _reset(stream: Any) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        with contextlib.suppress(Exception):
            await stream.reset()


async def _close(stream: Any) -> None:
    with trio.move_on_after(2), contextlib.suppress(Exception):
        await stream.close()
