"""Wire messages of the manager role (registered with the project codec at import).

- the Raft messages of ``consensus.messages`` (``ALL_MESSAGES``) on ``/enclave-swarm/raft/1.0.0``;
- the state-following and request messages on ``/enclave-swarm/state/1.0.0``;
- the payload of the manager's gossiped announcement (a signed ``manager`` record, see
  node/gossip.py and docs/gossip.md);
- the owner's dissolve order on ``/enclave-swarm/dissolve/1.0.0``.

docs/protocols.md ("Manager and consensus") describes each one.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import field

from consensus import certificate as cc
from consensus import messages as cm
from overlay import wire
from overlay.errors import RemoteProtocolError
from overlay.messages import MAX_PEER_ID_CHARS, protocol_id

RAFT_PROTOCOL = protocol_id("raft")
STATE_PROTOCOL = protocol_id("state")
DISSOLVE_PROTOCOL = protocol_id("dissolve")

MAX_STATE_BYTES = 4 * 1024 * 1024 - 64 * 1024
MAX_DECISIONS = 32
MAX_DECISION_ENTRY_BYTES = 16 * 1024
ED25519_SIGNATURE_BYTES = 64
DISSOLVE_DOMAIN = b"enclave-swarm/dissolve-order/v1\x00"


def register_consensus_messages() -> None:
    """Register the pure consensus records/messages with the codec (idempotent)."""
    have = wire.registered()
    for cls in cm.ALL_MESSAGES:
        name = cm.WIRE_NAMES[cls]
        if have.get(name) is not cls:
            wire.message(name, version=1, max_bytes=cm.WIRE_MAX_BYTES[cls])(cls)


register_consensus_messages()

wire.message("state-checkpoint", version=1, max_bytes=4096)(cc.Checkpoint)
wire.message("state-vouch", version=1, max_bytes=512)(cc.Vouch)
wire.message("state-certificate", version=1, max_bytes=8192)(cc.Certificate)
MAX_PROOF = cc.MAX_CHAIN + 1

_NAT = {"min": 0}
_PEER = {"max_len": MAX_PEER_ID_CHARS}


@wire.message("manager-state-req", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class StateRequest:
    """Follower -> any member (preferably the manager): "I have the state up to
    ``have_index``; my raft id is ``raft_id`` (0 = none yet)". The manager also learns from it
    that an admitted node runs its Raft node and can be made a voter."""

    raft_id: int = field(metadata=_NAT)
    have_index: int = field(metadata=_NAT)


@wire.message("manager-decision", version=1, max_bytes=MAX_DECISION_ENTRY_BYTES + 1024)
@dataclasses.dataclass(frozen=True)
class DecisionRecord:
    """A manager's signed decision about the log entry ``(term, index)`` holding ``entry``
    (see consensus/manager.py: the signature covers ``term, index, sha256(entry)``)."""

    term: int = field(metadata=_NAT)
    index: int = field(metadata={"min": 1})
    entry: bytes = field(metadata={"max_len": MAX_DECISION_ENTRY_BYTES})
    signer: str = field(metadata=_PEER)
    signature: bytes = field(metadata={"len": ED25519_SIGNATURE_BYTES})


@wire.message("manager-state", version=3, max_bytes=4 * 1024 * 1024)
@dataclasses.dataclass(frozen=True)
class StateResponse:
    """The responder's view: its Raft term, commit index and leader (peer id, "" if none),
    and -- when the requester is behind -- the latest *certified* swarm state it holds, at
    ``state_index`` (``consensus.state.encode_state`` bytes; empty when the requester is up
    to date), with ``proof``: the quorum certificates that chain it to what the requester
    holds (v3, consensus/certificate.py), plus the manager's recent signed decisions.
    ``removed`` is True when the requester's raft id is tombstoned in the responder's
    *committed* Raft configuration: a hint only, acted on when the certified state also shows
    the requester outside the voters."""

    term: int = field(metadata=_NAT)
    commit_index: int = field(metadata=_NAT)
    leader: str = field(metadata=_PEER)
    state_index: int = field(metadata=_NAT)
    state: bytes = field(metadata={"max_len": MAX_STATE_BYTES})
    decisions: tuple[DecisionRecord, ...] = field(metadata={"max_items": MAX_DECISIONS})
    removed: bool = False
    proof: tuple[cc.Certificate, ...] = field(default=(), metadata={"max_items": MAX_PROOF})


@wire.message("manager-certify-req", version=1, max_bytes=16 * 1024)
@dataclasses.dataclass(frozen=True)
class CertifyRequest:
    """Manager -> voter: "vouch for ``checkpoint`` if it is what you applied". ``prev`` is
    the manager's latest certificate, which the voter keeps (so a successor has the chain)."""

    checkpoint: cc.Checkpoint
    prev: cc.Certificate | None = None


@wire.message("manager-certify-reply", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class CertifyReply:
    """Voter -> manager: the voter's signature over the checkpoint, or why not."""

    signature: bytes = field(metadata={"max_len": ED25519_SIGNATURE_BYTES})
    reason: str = field(metadata={"max_len": 64})

    def validate(self) -> None:
        if len(self.signature) not in (0, ED25519_SIGNATURE_BYTES):
            raise RemoteProtocolError("invalid", "signature of the wrong length")


@wire.message("manager-announce", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class ManagerAnnounce:
    """The payload of a gossiped ``manager`` record (issuer = subject = the manager's peer
    id): "I lead term ``term``; my commit index is ``commit_index``; my state machine has
    applied ``applied_index`` and its canonical encoding hashes to ``state_digest``".
    ``federation`` is the federation id (the founder's peer id)."""

    term: int = field(metadata={"min": 1})
    commit_index: int = field(metadata=_NAT)
    applied_index: int = field(metadata=_NAT)
    state_digest: bytes = field(metadata={"len": 32})
    federation: str = field(metadata=_PEER)

    def validate(self) -> None:
        if self.applied_index > self.commit_index:
            raise RemoteProtocolError("invalid", "announced applied index beyond the commit index")


@wire.message("manager-leave-req", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class LeaveRequest:
    """Member -> manager: commit my graceful departure (the sender is the leaving node)."""

    reason: str = field(metadata={"max_len": 200})


@wire.message("manager-transfer-req", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class TransferRequest:
    """Member -> manager: hand leadership over now, to ``to`` ("" = next by score)."""

    to: str = field(metadata=_PEER)


@wire.message("manager-reply", version=1, max_bytes=1024)
@dataclasses.dataclass(frozen=True)
class ManagerReply:
    ok: bool
    error: str = field(metadata={"max_len": 400})
    detail: str = field(metadata={"max_len": 200})


@wire.message("dissolve-order", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class DissolveOrder:
    """Signed by the federation owner's Ed25519 key over :func:`dissolve_payload`.
    ``federation`` is the federation id (the founder's peer id); ``issued_at`` is Unix seconds."""

    federation: str = field(metadata=_PEER)
    issued_at: int = field(metadata=_NAT)
    signature: bytes = field(metadata={"len": ED25519_SIGNATURE_BYTES})

    def validate(self) -> None:
        if not self.federation:
            raise RemoteProtocolError("invalid", "dissolve order without a federation id")


def dissolve_payload(federation: str, issued_at: int) -> bytes:
    """The exact bytes the owner signs: domain tag, u16 length-prefixed federation id, u64 time."""
    fid = federation.encode()
    if not fid or len(fid) > MAX_PEER_ID_CHARS or issued_at < 0:
        raise ValueError("bad dissolve order fields")
    return DISSOLVE_DOMAIN + struct.pack(">H", len(fid)) + fid + struct.pack(">Q", issued_at)


STATE_REQUESTS = (StateRequest, LeaveRequest, TransferRequest, CertifyRequest)
