"""Wire schemas of the membership (``swim-*``) and dissemination (``gossip-*``) protocols.

Every type is a frozen dataclass registered with :mod:`overlay.wire`, so it is decoded with
size, schema and semantic checks before either core sees it. The sender's identity is never a
message field: it comes from the authenticated (attested) channel the frame arrived on.

Membership updates (:class:`SwimUpdate`) and signed records (:class:`~overlay.records.Record`)
piggyback on probe traffic; each list has an item bound, and the senders fill them up to a
byte budget (``MembershipConfig.max_piggyback_bytes``) so a probe stays one small datagram.
"""

from __future__ import annotations

import dataclasses

from overlay.errors import RemoteProtocolError
from overlay.records import ID_MAX_LEN, KIND_MAX_LEN, Record
from overlay.wire import message

# Member states, as small ints on the wire. Order matters only for readability.
ALIVE = 0
SUSPECT = 1
DEAD = 2
LEFT = 3
STATE_NAMES = ("alive", "suspect", "dead", "left")

SEQ_MAX = 2**63 - 1
INCARNATION_MAX = 2**63 - 1
MAX_UPDATES = 64  # membership updates piggybacked on one probe message
MAX_RECORDS = 64  # records piggybacked on one message
MAX_USER_ITEMS = 16  # delegate payloads per gossip message
USER_ITEM_MAX_BYTES = 4096
MAX_SYNC_MEMBERS = 16384  # full-state sync bound: the largest cluster a join can describe
MAX_DIGEST_ENTRIES = 1024

_SEQ = {"min": 0, "max": SEQ_MAX}
_ID = {"max_len": ID_MAX_LEN}


@message("swim-update", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimUpdate:
    """``node`` is in ``state`` at ``incarnation``, according to ``origin``."""

    node: str = dataclasses.field(metadata=_ID)
    state: int = dataclasses.field(metadata={"min": ALIVE, "max": LEFT})
    incarnation: int = dataclasses.field(metadata={"min": 0, "max": INCARNATION_MAX})
    origin: str = dataclasses.field(metadata=_ID)

    def validate(self) -> None:
        if not self.node or not self.origin:
            raise RemoteProtocolError("invalid", "empty node id")
        if self.state == LEFT and self.origin != self.node:
            raise RemoteProtocolError("invalid", "only a node itself can announce leaving")


_UPDATES = dataclasses.field(default=(), metadata={"max_items": MAX_UPDATES})
_RECORDS = dataclasses.field(default=(), metadata={"max_items": MAX_RECORDS})


@message("swim-ping", version=1, max_bytes=64 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimPing:
    """Direct probe. ``target`` lets a restarted node ignore probes meant for its old self."""

    seq: int = dataclasses.field(metadata=_SEQ)
    target: str = dataclasses.field(metadata=_ID)
    updates: tuple[SwimUpdate, ...] = _UPDATES
    records: tuple[Record, ...] = _RECORDS


@message("swim-ping-req", version=1, max_bytes=64 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimPingReq:
    """Ask the receiver to probe ``target`` for us and forward the ack (or a nack)."""

    seq: int = dataclasses.field(metadata=_SEQ)
    target: str = dataclasses.field(metadata=_ID)
    nack: bool = False
    updates: tuple[SwimUpdate, ...] = _UPDATES


@message("swim-ack", version=1, max_bytes=64 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimAck:
    """Answer to a ping, or an indirect ack forwarded by a ping-req helper."""

    seq: int = dataclasses.field(metadata=_SEQ)
    updates: tuple[SwimUpdate, ...] = _UPDATES
    records: tuple[Record, ...] = _RECORDS


@message("swim-gossip", version=1, max_bytes=64 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimGossip:
    """A membership gossip round: pending updates pushed to a few random members."""

    updates: tuple[SwimUpdate, ...] = _UPDATES


@message("swim-nack", version=1, max_bytes=128)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimNack:
    """Lifeguard: the ping-req helper is alive but the target did not answer it in time."""

    seq: int = dataclasses.field(metadata=_SEQ)


@message("swim-sync", version=1, max_bytes=2 * 1024 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class SwimSync:
    """Full membership state, exchanged on join and by periodic push-pull.

    ``join``: the sender is joining (the receiver answers with its own state, ``reply``).
    """

    members: tuple[SwimUpdate, ...] = dataclasses.field(
        default=(), metadata={"max_items": MAX_SYNC_MEMBERS}
    )
    join: bool = False
    reply: bool = False


@message("gossip-push", version=1, max_bytes=256 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class GossipPush:
    """A gossip round (or an anti-entropy answer): records plus delegate payloads."""

    records: tuple[Record, ...] = _RECORDS
    user: tuple[bytes, ...] = dataclasses.field(
        default=(), metadata={"max_items": MAX_USER_ITEMS, "max_len": USER_ITEM_MAX_BYTES}
    )


@message("gossip-digest-entry", version=2, max_bytes=512)
@dataclasses.dataclass(frozen=True, slots=True)
class GossipDigestEntry:
    """Summary of one stored record: its key ``(kind, subject, issuer)`` and enough to compare
    order keys without the payload. (v2: the issuer is part of the key.)"""

    kind: str = dataclasses.field(metadata={"max_len": KIND_MAX_LEN})
    subject: str = dataclasses.field(metadata=_ID)
    version: int = dataclasses.field(metadata={"min": 0, "max": 2**63 - 1})
    issued_at: float = dataclasses.field(metadata={"min": 0.0})
    sig_prefix: bytes = dataclasses.field(metadata={"max_len": 8})
    issuer: str = dataclasses.field(metadata=_ID)

    def validate(self) -> None:
        if not self.subject or not self.issuer:
            raise RemoteProtocolError("invalid", "empty subject or issuer")


@message("gossip-digest", version=2, max_bytes=512 * 1024)
@dataclasses.dataclass(frozen=True, slots=True)
class GossipDigest:
    """Push-pull anti-entropy: the sender's record digest.

    ``complete``: the digest lists every record the sender holds, so anything missing from it
    is something the sender lacks. ``reply``: the receiver should answer with its own digest.
    (v2: entries carry the issuer; 1,024 entries with 128-character ids fit in 512 KiB.)
    """

    entries: tuple[GossipDigestEntry, ...] = dataclasses.field(
        default=(), metadata={"max_items": MAX_DIGEST_ENTRIES}
    )
    complete: bool = True
    reply: bool = False


# ----------------------------------------------------------------------------- findings

FINDING_KINDS = ("minority", "outlier", "limit", "trap", "bad-signature")  # consensus/integrity.py KINDS
MAX_EVIDENCE_BYTES = 1024
MAX_JOB_ID_CHARS = 256  # consensus.state.MAX_ID_LEN


@message("finding-record", version=1, max_bytes=2048)
@dataclasses.dataclass(frozen=True, slots=True)
class FindingRecord:
    """A signed integrity finding (the payload of a ``finding`` gossip record): ``issuer`` (the
    raw Ed25519 key of the manager that committed it) says that the committed state holds
    finding ``finding_id`` of ``kind`` against ``subject`` for replica ``replica`` of fragment
    ``fragment`` of ``job``, committed in manager term ``term``, with ``evidence`` (the
    canonical CBOR of the committed evidence map: hashes, the z-score, the error).
    ``signature`` is the issuer's over the canonical encoding with the signature zeroed
    (node/tasks/findings.py). A receiver adopts it only after checking it against its own
    committed state (docs/tasks.md, "Integrity monitoring")."""

    issuer: bytes = dataclasses.field(metadata={"len": 32})
    subject: str = dataclasses.field(metadata=_ID)
    finding_id: int = dataclasses.field(metadata={"min": 1, "max": SEQ_MAX})
    kind: str = dataclasses.field(metadata={"max_len": 16})
    job: str = dataclasses.field(metadata={"max_len": MAX_JOB_ID_CHARS})
    fragment: int = dataclasses.field(metadata={"min": 0, "max": 1 << 20})
    replica: int = dataclasses.field(metadata={"min": 0, "max": 1 << 20})
    term: int = dataclasses.field(metadata={"min": 0, "max": SEQ_MAX})
    evidence: bytes = dataclasses.field(metadata={"max_len": MAX_EVIDENCE_BYTES})
    issued_at: float = dataclasses.field(metadata={"min": 0.0})
    signature: bytes = dataclasses.field(metadata={"len": 64})

    def validate(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise RemoteProtocolError("invalid", "unknown finding kind")
        if not self.subject or not self.job:
            raise RemoteProtocolError("invalid", "empty subject or job")
        if self.issued_at != self.issued_at or self.issued_at == float("inf"):
            raise RemoteProtocolError("invalid", "issued_at is not a finite time")


SWIM_MESSAGES = (SwimPing, SwimPingReq, SwimAck, SwimNack, SwimSync, SwimGossip)
GOSSIP_MESSAGES = (GossipPush, GossipDigest)
ALL_MESSAGES = SWIM_MESSAGES + GOSSIP_MESSAGES
"""Top-level frames the two cores accept (nested types are never sent alone)."""
