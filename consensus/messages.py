"""Raft records and messages: plain frozen dataclasses with wire-friendly fields only.

Theory of operation
-------------------
``consensus/`` imports nothing from ``overlay/`` (DESIGN.md rule 1), so these classes are not
decorated with ``overlay.wire.message`` here. Instead :data:`ALL_MESSAGES` lists every class
that may cross the wire (records first, so nested types are known before the messages that
contain them) and :data:`WIRE_NAMES` gives each its stable wire name. The node registers them
at the edge::

    for cls in ALL_MESSAGES:
        wire.message(WIRE_NAMES[cls], version=1, max_bytes=WIRE_MAX_BYTES[cls])(cls)

Field types are restricted to what the codec accepts: ``bytes``, ``str``, ``int``, ``bool``,
``None``, nested frozen dataclasses, ``tuple[T, ...]`` and ``T | None``. Field bounds are given
through ``dataclasses.field(metadata=...)`` (``max_len``, ``max_items``, ``min``), which the
codec reads.

Node ids are positive integers (``raft ids``); the swarm state machine assigns them to peers
when they are admitted and never reuses one, which is what makes the removal tombstones in
:class:`ConfState` sound.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

# The largest entry payload we accept on the wire; a proposal above it is refused locally.
MAX_ENTRY_BYTES = 1024 * 1024
# One snapshot travels in one message; snapshots are not chunked (see docs/consensus.md).
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024 - 4096
MAX_ENTRIES_PER_MSG = 4096
MAX_VOTERS = 64

ENTRY_NORMAL = "normal"
ENTRY_CONF = "conf"
ENTRY_KINDS = (ENTRY_NORMAL, ENTRY_CONF)

CONF_ADD = "add"
CONF_REMOVE = "remove"

_ID = {"min": 1}
_NAT = {"min": 0}


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Entry:
    """One log entry. ``kind`` is ``"normal"`` (application data, empty for the leader's
    no-op) or ``"conf"`` (an encoded :class:`ConfChange`)."""

    term: int = field(metadata=_NAT)
    index: int = field(metadata=_ID)
    kind: str = field(metadata={"max_len": 8})
    data: bytes = field(metadata={"max_len": MAX_ENTRY_BYTES})

    def validate(self) -> None:
        if self.kind not in ENTRY_KINDS:
            raise ValueError(f"unknown entry kind {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class ConfState:
    """A membership configuration: the voters, and the ids removed so far (tombstones).

    A tombstoned id never votes, never campaigns and is never re-added."""

    voters: tuple[int, ...] = field(metadata={"max_items": MAX_VOTERS, **_ID})
    removed: tuple[int, ...] = field(default=(), metadata={"max_items": 4096, **_ID})

    def validate(self) -> None:
        if list(self.voters) != sorted(set(self.voters)):
            raise ValueError("voters must be sorted and distinct")
        if list(self.removed) != sorted(set(self.removed)):
            raise ValueError("removed must be sorted and distinct")
        if set(self.voters) & set(self.removed):
            raise ValueError("a removed id cannot be a voter")


@dataclasses.dataclass(frozen=True)
class ConfChange:
    """A single-server membership change (the payload of a ``conf`` entry)."""

    op: str
    node_id: int

    def encode(self) -> bytes:
        return f"{self.op} {self.node_id}".encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse the canonical encoding. Raises ValueError on anything else."""
        try:
            op, raw = data.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise ValueError("malformed conf change") from None
        if op not in (CONF_ADD, CONF_REMOVE) or not raw.isdigit() or raw != str(int(raw)):
            raise ValueError("malformed conf change")
        node_id = int(raw)
        if node_id < 1:
            raise ValueError("malformed conf change")
        return cls(op, node_id)


@dataclasses.dataclass(frozen=True)
class SnapshotMeta:
    index: int = field(metadata=_NAT)
    term: int = field(metadata=_NAT)
    conf: ConfState


@dataclasses.dataclass(frozen=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = field(metadata={"max_len": MAX_SNAPSHOT_BYTES})


@dataclasses.dataclass(frozen=True)
class HardState:
    """What must be on stable storage before any message of the same Ready is sent."""

    term: int = field(default=0, metadata=_NAT)
    vote: int | None = field(default=None, metadata=_ID)
    commit: int = field(default=0, metadata=_NAT)


# --------------------------------------------------------------------------- messages


@dataclasses.dataclass(frozen=True)
class VoteRequest:
    """RequestVote, or a pre-vote when ``pre`` (sent at term+1 without bumping our term).

    ``transfer`` marks a campaign started by MsgTimeoutNow: it overrides the leader lease."""

    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)
    last_log_index: int = field(metadata=_NAT)
    last_log_term: int = field(metadata=_NAT)
    pre: bool = False
    transfer: bool = False


@dataclasses.dataclass(frozen=True)
class VoteResponse:
    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)
    reject: bool
    pre: bool = False


@dataclasses.dataclass(frozen=True)
class AppendEntries:
    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)
    prev_index: int = field(metadata=_NAT)
    prev_term: int = field(metadata=_NAT)
    entries: tuple[Entry, ...] = field(metadata={"max_items": MAX_ENTRIES_PER_MSG})
    commit: int = field(metadata=_NAT)

    def validate(self) -> None:
        for i, e in enumerate(self.entries):
            if e.index != self.prev_index + 1 + i:
                raise ValueError("entries are not contiguous after prev_index")


@dataclasses.dataclass(frozen=True)
class AppendResponse:
    """Ack (``index`` = last index known to match) or reject (``index`` = the rejected
    prev_index, with a hint ``reject_hint``/``hint_term`` for fast back-off)."""

    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)
    index: int = field(metadata=_NAT)
    reject: bool = False
    reject_hint: int = field(default=0, metadata=_NAT)
    hint_term: int = field(default=0, metadata=_NAT)


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """``commit`` is min(follower's match, leader's commit): always safe to apply."""

    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)
    commit: int = field(metadata=_NAT)


@dataclasses.dataclass(frozen=True)
class HeartbeatResponse:
    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)


@dataclasses.dataclass(frozen=True)
class InstallSnapshot:
    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)
    snapshot: Snapshot


@dataclasses.dataclass(frozen=True)
class TimeoutNow:
    """Leadership transfer: the target campaigns at once, skipping pre-vote and lease."""

    sender: int = field(metadata=_ID)
    to: int = field(metadata=_ID)
    term: int = field(metadata=_NAT)


Message = (
    VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)

MESSAGE_TYPES: tuple[type[Message], ...] = (
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
)

# Records before the messages that nest them: registration order matters to some codecs.
ALL_MESSAGES: tuple[type, ...] = (
    Entry,
    ConfState,
    SnapshotMeta,
    Snapshot,
    HardState,
    *MESSAGE_TYPES,
)

WIRE_NAMES: dict[type, str] = {
    Entry: "raft-entry",
    ConfState: "raft-conf-state",
    SnapshotMeta: "raft-snapshot-meta",
    Snapshot: "raft-snapshot",
    HardState: "raft-hard-state",
    VoteRequest: "raft-vote",
    VoteResponse: "raft-vote-resp",
    AppendEntries: "raft-append",
    AppendResponse: "raft-append-resp",
    Heartbeat: "raft-heartbeat",
    HeartbeatResponse: "raft-heartbeat-resp",
    InstallSnapshot: "raft-snapshot-install",
    TimeoutNow: "raft-timeout-now",
}

_BIG = 4 * 1024 * 1024
_SMALL = 512
WIRE_MAX_BYTES: dict[type, int] = {
    Entry: MAX_ENTRY_BYTES + _SMALL,
    ConfState: 64 * 1024,
    SnapshotMeta: 64 * 1024,
    Snapshot: _BIG,
    HardState: _SMALL,
    VoteRequest: _SMALL,
    VoteResponse: _SMALL,
    AppendEntries: _BIG,
    AppendResponse: _SMALL,
    Heartbeat: _SMALL,
    HeartbeatResponse: _SMALL,
    InstallSnapshot: _BIG,
    TimeoutNow: _SMALL,
}


def describe_entry(e: Entry) -> str:
    """Compact one-line form used in logs and scenario files: ``term/index kind data``."""
    data = e.data.decode("utf-8", "backslashreplace") if e.data.isascii() else e.data.hex()
    return f"{e.term}/{e.index} {'EntryConfChange' if e.kind == ENTRY_CONF else 'EntryNormal'} {data!r}"


def describe_message(m: object) -> str:
    """Compact one-line form of a message, for logs and scenario files."""
    if isinstance(m, VoteRequest):
        kind = "MsgPreVote" if m.pre else "MsgVote"
        extra = " transfer" if m.transfer else ""
        return (f"{m.sender}->{m.to} {kind} Term:{m.term} Log:{m.last_log_term}/"
                f"{m.last_log_index}{extra}")
    if isinstance(m, VoteResponse):
        kind = "MsgPreVoteResp" if m.pre else "MsgVoteResp"
        return f"{m.sender}->{m.to} {kind} Term:{m.term}{' Rejected' if m.reject else ''}"
    if isinstance(m, AppendEntries):
        ents = ", ".join(describe_entry(e) for e in m.entries)
        return (f"{m.sender}->{m.to} MsgApp Term:{m.term} Log:{m.prev_term}/{m.prev_index} "
                f"Commit:{m.commit}" + (f" Entries:[{ents}]" if ents else ""))
    if isinstance(m, AppendResponse):
        if m.reject:
            return (f"{m.sender}->{m.to} MsgAppResp Term:{m.term} Index:{m.index} Rejected "
                    f"(Hint: {m.reject_hint}/{m.hint_term})")
        return f"{m.sender}->{m.to} MsgAppResp Term:{m.term} Index:{m.index}"
    if isinstance(m, Heartbeat):
        return f"{m.sender}->{m.to} MsgHeartbeat Term:{m.term} Commit:{m.commit}"
    if isinstance(m, HeartbeatResponse):
        return f"{m.sender}->{m.to} MsgHeartbeatResp Term:{m.term}"
    if isinstance(m, InstallSnapshot):
        meta = m.snapshot.meta
        return (f"{m.sender}->{m.to} MsgSnap Term:{m.term} Snapshot: Index:{meta.index} "
                f"Term:{meta.term} Voters:{list(meta.conf.voters)}")
    if isinstance(m, TimeoutNow):
        return f"{m.sender}->{m.to} MsgTimeoutNow Term:{m.term}"
    return repr(m)
