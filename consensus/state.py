"""The replicated swarm state machine: validated, deterministic commands over immutable state.

Theory of operation
-------------------
Every committed log entry of kind ``normal`` carries one encoded command (the leader's no-op
is empty and skipped). Each replica runs ``apply_entry(state, data)``, which decodes the
command and applies it. A command is a frozen dataclass with CBOR-friendly fields; its
handler is a pure function ``(state, command) -> state`` that raises :class:`Rejected` when
the command is invalid *for this state*. Rejection is deterministic: every replica reaches
the same verdict, the state is unchanged, and the result carries the reason.

Rules
-----
- Nothing here reads a clock, a random generator or the environment: the same log gives the
  same state and the same bytes (``encode_state``) on every replica.
- Scores are integers in permille (0..1000); no floats in replicated state.
- Member lifecycle: ``join`` (only with a positive attestation verdict) -> ``admitted``;
  ``suspect`` <-> ``admitted`` (``reinstate``); any -> ``revoked`` (terminal, with reason);
  ``admitted``/``suspect`` -> ``left`` (decommission). A revoked id never rejoins. A node
  that left may rejoin and gets a fresh raft id: raft ids are never reused.
- Revoked, suspect and departed nodes drop out of the council at once; the leader then
  proposes the matching Raft membership change (the driver's duty).
- Shard placements: ``place`` registers an object's holders from its owner-signed manifest
  (owner, k, n fixed; re-registration needs a higher manifest revision and the current
  epoch); ``repair-shard`` moves one index to a new, admitted, non-holder node as *pending*;
  ``shard-repaired`` clears the pending mark. Every change bumps the placement's epoch.
- Extension point: later features (tasks, privacy budgets) add command types through
  :meth:`CommandRegistry.extended` and keep their data in ``SwarmState.ext[<section>]``
  (plain CBOR values), without touching this module.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args, get_origin, get_type_hints

import cbor2

from consensus import cbor_strict

MAX_SCORE = 1000
MAX_ID_LEN = 256
MAX_LABEL = 64  # provider and region names (node/tasks/capability.py MAX_NAME_CHARS)
STATE_VERSION = 1

ADMITTED = "admitted"
SUSPECT = "suspect"
REVOKED = "revoked"
LEFT = "left"
ACTIVE = (ADMITTED, SUSPECT)


class Rejected(Exception):
    """A command is invalid for the current state; the state is left unchanged."""


@dataclasses.dataclass(frozen=True)
class Member:
    node_id: str
    raft_id: int
    status: str
    provider: str
    region: str
    tee_kind: str
    score: int
    score_epoch: int
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ShardHolder:
    """Shard ``index`` is on ``holder``. ``pending``: a repair named this holder, which has not
    yet reported the regenerated shard stored (it holds nothing usable until then)."""

    index: int
    holder: str
    pending: bool = False


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the shards of one object are (docs/shards.md, "Placement in the swarm state").

    ``owner`` is the owner's node id; ``manifest_revision`` / ``manifest_digest`` (SHA-256 of
    the owner-signed manifest frame) name the manifest the placement was registered from;
    ``epoch`` increases with every change (registration, repair, repaired), so a writer can
    compare-and-set against the placement it saw.
    """

    object_id: str
    holders: tuple[ShardHolder, ...]
    owner: str = ""
    k: int = 1
    manifest_revision: int = 0
    manifest_digest: bytes = b""
    epoch: int = 0

    def holder_of(self, index: int) -> ShardHolder | None:
        return self.holders[index] if 0 <= index < len(self.holders) else None


@dataclasses.dataclass(frozen=True)
class SwarmState:
    """Immutable replicated state. Treat the mappings as read-only; handlers copy on write."""

    members: Mapping[str, Member] = dataclasses.field(default_factory=dict)
    council: tuple[str, ...] = ()
    placements: Mapping[str, Placement] = dataclasses.field(default_factory=dict)
    next_raft_id: int = 1
    manager_term: int = 0
    manager_id: str = ""
    ext: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def member(self, node_id: str) -> Member | None:
        return self.members.get(node_id)

    def by_raft_id(self, raft_id: int) -> Member | None:
        for m in self.members.values():
            if m.raft_id == raft_id:
                return m
        return None


@dataclasses.dataclass(frozen=True)
class Result:
    ok: bool
    error: str = ""
    value: Any = None


# --------------------------------------------------------------------------- council choice


@dataclasses.dataclass(frozen=True)
class Candidate:
    node_id: str
    score: int
    provider: str
    region: str
    revoked: bool = False


# A sitting council member keeps its seat against a challenger that scores up to this much
# more (permille). One missed re-attestation costs 150 (15 points × 10): a transient miss on a
# loaded host reshuffles nothing, two misses (300) do. Every seat change costs the council a
# Raft membership change, and a manager's seat a hand-over. Part of the state machine: every
# replica must apply the same rule.
INCUMBENT_MARGIN = 200


def choose_council(candidates: Sequence[Candidate], size: int,
                   sitting: Sequence[str] = (), margin: int = INCUMBENT_MARGIN) -> tuple[str, ...]:
    """Pick up to ``size`` council members: best score first, with provider diversity.

    Ranking is by effective score (descending) then node id, so the choice is total and
    deterministic; a member of ``sitting`` (the council in office) ranks with ``margin`` added
    to its score, so a challenger must beat it by more than ``margin`` to take its seat.
    Pass 1 takes the best candidate of each provider not yet represented, preferring an
    unrepresented region among equal effective scores; pass 2 fills the remaining seats by rank,
    whatever the provider. Revoked candidates never sit. The result is in rank order of the
    scores themselves.
    """
    if size < 0:
        raise ValueError("negative council size")
    if margin < 0:
        raise ValueError("negative incumbency margin")
    incumbents = frozenset(sitting)

    def eff(c: Candidate) -> int:
        return c.score + margin if c.node_id in incumbents else c.score

    pool = sorted((c for c in candidates if not c.revoked), key=lambda c: (-eff(c), c.node_id))
    chosen: list[Candidate] = []
    providers: set[str] = set()
    regions: set[str] = set()
    while len(chosen) < size:
        fresh = [c for c in pool if c.provider not in providers and c not in chosen]
        if not fresh:
            break
        top = eff(fresh[0])
        tied = [c for c in fresh if eff(c) == top]
        pick = next((c for c in tied if c.region not in regions), tied[0])
        chosen.append(pick)
        providers.add(pick.provider)
        regions.add(pick.region)
    for c in pool:
        if len(chosen) >= size:
            break
        if c not in chosen:
            chosen.append(c)
    chosen.sort(key=lambda c: (-c.score, c.node_id))
    return tuple(c.node_id for c in chosen)


# --------------------------------------------------------------------------- core commands


@dataclasses.dataclass(frozen=True)
class Join:
    """Admit an attested node. ``attested`` is the verifier's verdict, checked by the
    proposer; a join without it is rejected so a failed attestation can be logged too."""

    node_id: str
    provider: str
    region: str
    tee_kind: str
    score: int
    attested: bool
    evidence_digest: bytes = b""


@dataclasses.dataclass(frozen=True)
class Suspect:
    node_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Reinstate:
    node_id: str


@dataclasses.dataclass(frozen=True)
class Revoke:
    node_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Leave:
    node_id: str


@dataclasses.dataclass(frozen=True)
class RecordScore:
    """Latest attestation score; ``epoch`` must increase so a stale record never wins."""

    node_id: str
    score: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class SetLabels:
    """The placement labels of a member: the provider and region it declares in its capability
    record (the ``[tasks]`` section of its config). Self-declared, not attested: they steer
    anti-affinity, council diversity and a job's allowed providers and regions, and a member that
    lies about them only fools those (docs/tasks.md)."""

    node_id: str
    provider: str
    region: str


@dataclasses.dataclass(frozen=True)
class SetCouncil:
    size: int


@dataclasses.dataclass(frozen=True)
class PlaceShards:
    """Register (or re-register, after the owner re-signed its manifest) an object's placement.

    The proposer (the manager) has checked the owner-signed manifest these fields come from.
    A new object needs ``base_epoch == 0``; an existing one the same owner, k and n, a higher
    ``manifest_revision`` and ``base_epoch`` equal to its current epoch (compare-and-set, so a
    repair committed meanwhile is never overwritten by a stale view)."""

    object_id: str
    holders: tuple[ShardHolder, ...]
    owner: str = ""
    k: int = 1
    manifest_revision: int = 0
    manifest_digest: bytes = b""
    base_epoch: int = 0


@dataclasses.dataclass(frozen=True)
class DropPlacement:
    object_id: str


@dataclasses.dataclass(frozen=True)
class RepairShard:
    """The manager moves shard ``index`` from a lost ``old_holder`` to ``new_holder``, which
    then regenerates it (marked pending until :class:`ShardRepaired`). Valid only at the
    placement's current ``epoch``, for an admitted new holder that is neither the owner nor
    already a holder of the object."""

    object_id: str
    index: int
    old_holder: str
    new_holder: str
    epoch: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ShardRepaired:
    """The pending ``holder`` of shard ``index`` reports the regenerated shard stored."""

    object_id: str
    index: int
    holder: str


@dataclasses.dataclass(frozen=True)
class AnnounceManager:
    """Recorded by a new leader as its first command: who manages term ``term``."""

    term: int
    node_id: str


def _check_id(node_id: str) -> None:
    if not node_id or len(node_id) > MAX_ID_LEN:
        raise Rejected("bad node id")


def _need(state: SwarmState, node_id: str, statuses: tuple[str, ...]) -> Member:
    m = state.members.get(node_id)
    if m is None:
        raise Rejected(f"unknown member {node_id}")
    if m.status not in statuses:
        raise Rejected(f"member {node_id} is {m.status}")
    return m


def _with_member(state: SwarmState, m: Member, **changes: Any) -> SwarmState:
    members = dict(state.members)
    members[m.node_id] = m
    return dataclasses.replace(state, members=members, **changes)


def _drop_from_council(state: SwarmState, node_id: str) -> tuple[str, ...]:
    return tuple(n for n in state.council if n != node_id)


def _join(s: SwarmState, c: Join) -> SwarmState:
    _check_id(c.node_id)
    if not c.attested:
        raise Rejected("attestation failed")
    if not 0 <= c.score <= MAX_SCORE:
        raise Rejected("score out of range")
    old = s.members.get(c.node_id)
    if old is not None and old.status != LEFT:
        raise Rejected(f"member {c.node_id} is {old.status}")
    m = Member(c.node_id, s.next_raft_id, ADMITTED, c.provider, c.region, c.tee_kind, c.score, 0)
    return _with_member(s, m, next_raft_id=s.next_raft_id + 1)


def _suspect(s: SwarmState, c: Suspect) -> SwarmState:
    m = _need(s, c.node_id, (ADMITTED,))
    return _with_member(s, dataclasses.replace(m, status=SUSPECT, reason=c.reason),
                        council=_drop_from_council(s, c.node_id))


def _reinstate(s: SwarmState, c: Reinstate) -> SwarmState:
    m = _need(s, c.node_id, (SUSPECT,))
    return _with_member(s, dataclasses.replace(m, status=ADMITTED, reason=""))


def _revoke(s: SwarmState, c: Revoke) -> SwarmState:
    if not c.reason:
        raise Rejected("a revocation needs a reason")
    m = _need(s, c.node_id, (ADMITTED, SUSPECT, LEFT))
    return _with_member(s, dataclasses.replace(m, status=REVOKED, reason=c.reason),
                        council=_drop_from_council(s, c.node_id))


def _leave(s: SwarmState, c: Leave) -> SwarmState:
    m = _need(s, c.node_id, ACTIVE)
    return _with_member(s, dataclasses.replace(m, status=LEFT),
                        council=_drop_from_council(s, c.node_id))


def _set_labels(s: SwarmState, c: SetLabels) -> SwarmState:
    m = _need(s, c.node_id, (ADMITTED, SUSPECT))
    if not c.provider or len(c.provider) > MAX_LABEL or len(c.region) > MAX_LABEL:
        raise Rejected(f"a provider of 1..{MAX_LABEL} characters and a region of at most {MAX_LABEL}")
    if (m.provider, m.region) == (c.provider, c.region):
        raise Rejected("labels unchanged")
    return _with_member(s, dataclasses.replace(m, provider=c.provider, region=c.region))


def _record_score(s: SwarmState, c: RecordScore) -> SwarmState:
    m = _need(s, c.node_id, ACTIVE)
    if not 0 <= c.score <= MAX_SCORE:
        raise Rejected("score out of range")
    if c.epoch <= m.score_epoch:
        raise Rejected(f"stale score epoch {c.epoch} <= {m.score_epoch}")
    return _with_member(s, dataclasses.replace(m, score=c.score, score_epoch=c.epoch))


def _set_council(s: SwarmState, c: SetCouncil) -> SwarmState:
    if not 1 <= c.size <= 64:
        raise Rejected("council size out of range")
    cands = [Candidate(m.node_id, m.score, m.provider, m.region)
             for m in s.members.values() if m.status == ADMITTED]
    return dataclasses.replace(s, council=choose_council(cands, c.size, sitting=s.council))


MAX_DIGEST_BYTES = 64


def _place(s: SwarmState, c: PlaceShards) -> SwarmState:
    if not c.object_id or len(c.object_id) > MAX_ID_LEN:
        raise Rejected("bad object id")
    if not c.holders:
        raise Rejected("no holders")
    if sorted(h.index for h in c.holders) != list(range(len(c.holders))):
        raise Rejected("shard indexes must be 0..n-1, each once")
    if len({h.holder for h in c.holders}) != len(c.holders):
        raise Rejected("holders must be distinct")
    if any(h.pending for h in c.holders):
        raise Rejected("a registered holder cannot be pending")
    if c.owner and any(h.holder == c.owner for h in c.holders):
        raise Rejected("the owner cannot hold its own shards")
    if not 1 <= c.k <= len(c.holders):
        raise Rejected("need 1 <= k <= n")
    if c.manifest_revision < 0 or len(c.manifest_digest) > MAX_DIGEST_BYTES or len(c.owner) > MAX_ID_LEN:
        raise Rejected("bad manifest reference")
    for h in c.holders:
        _need(s, h.holder, (ADMITTED,))
    old = s.placements.get(c.object_id)
    if old is None:
        if c.base_epoch != 0:
            raise Rejected(f"no placement for {c.object_id} at epoch {c.base_epoch}")
        epoch = 0
    else:
        if (old.owner, old.k, len(old.holders)) != (c.owner, c.k, len(c.holders)):
            raise Rejected("owner, k and n of a placement never change")
        if c.manifest_revision <= old.manifest_revision:
            raise Rejected(f"manifest revision {c.manifest_revision} is not after {old.manifest_revision}")
        if c.base_epoch != old.epoch:
            raise Rejected(f"placement changed: epoch {old.epoch}, not {c.base_epoch}")
        epoch = old.epoch + 1
    placements = dict(s.placements)
    placements[c.object_id] = Placement(
        c.object_id, tuple(ShardHolder(h.index, h.holder) for h in sorted(c.holders, key=lambda h: h.index)),
        c.owner, c.k, c.manifest_revision, c.manifest_digest, epoch)
    return dataclasses.replace(s, placements=placements)


def _drop_placement(s: SwarmState, c: DropPlacement) -> SwarmState:
    if c.object_id not in s.placements:
        raise Rejected(f"no placement for {c.object_id}")
    placements = dict(s.placements)
    del placements[c.object_id]
    return dataclasses.replace(s, placements=placements)


def _with_holder(s: SwarmState, p: Placement, h: ShardHolder) -> SwarmState:
    holders = tuple(h if x.index == h.index else x for x in p.holders)
    placements = dict(s.placements)
    placements[p.object_id] = dataclasses.replace(p, holders=holders, epoch=p.epoch + 1)
    return dataclasses.replace(s, placements=placements)


def _repair_shard(s: SwarmState, c: RepairShard) -> SwarmState:
    p = s.placements.get(c.object_id)
    if p is None:
        raise Rejected(f"no placement for {c.object_id}")
    if c.epoch != p.epoch:
        raise Rejected(f"placement changed: epoch {p.epoch}, not {c.epoch}")
    cur = p.holder_of(c.index)
    if cur is None or cur.holder != c.old_holder:
        raise Rejected(f"{c.old_holder} does not hold shard {c.index}")
    if not c.reason or len(c.reason) > 200:
        raise Rejected("a repair needs a reason")
    _check_id(c.new_holder)
    if c.new_holder == p.owner or any(h.holder == c.new_holder for h in p.holders):
        raise Rejected(f"{c.new_holder} is the owner or already a holder")
    _need(s, c.new_holder, (ADMITTED,))
    return _with_holder(s, p, ShardHolder(c.index, c.new_holder, pending=True))


def _shard_repaired(s: SwarmState, c: ShardRepaired) -> SwarmState:
    p = s.placements.get(c.object_id)
    if p is None:
        raise Rejected(f"no placement for {c.object_id}")
    cur = p.holder_of(c.index)
    if cur is None or cur.holder != c.holder or not cur.pending:
        raise Rejected(f"shard {c.index} is not pending on {c.holder}")
    return _with_holder(s, p, ShardHolder(c.index, c.holder))


def _announce(s: SwarmState, c: AnnounceManager) -> SwarmState:
    if c.term <= s.manager_term:
        raise Rejected(f"term {c.term} is not after {s.manager_term}")
    m = _need(s, c.node_id, (ADMITTED,))
    if m.node_id not in s.council:
        raise Rejected(f"{c.node_id} is not on the council")
    return dataclasses.replace(s, manager_term=c.term, manager_id=c.node_id)


# --------------------------------------------------------------------------- registry


# A handler returns the new state, or ``(new_state, value)`` to answer the proposer (reads).
Handler = Callable[[SwarmState, Any], "SwarmState | tuple[SwarmState, Any]"]


class InvalidCommand(Exception):
    """Bytes that do not decode to a known, well-typed command."""


class CommandRegistry:
    """Command kinds -> (class, handler). Immutable: ``extended`` returns a new registry, so a
    node's registry is fixed once built and every replica must build the same one."""

    def __init__(self, specs: Mapping[str, tuple[type, Handler]] | None = None) -> None:
        self._by_kind: dict[str, tuple[type, Handler]] = dict(specs or {})
        self._by_cls: dict[type, str] = {cls: k for k, (cls, _) in self._by_kind.items()}

    def extended(self, kind: str, cls: type, handler: Handler) -> CommandRegistry:
        """A registry with one more command kind (for tasks, privacy budgets...)."""
        if kind in self._by_kind or cls in self._by_cls:
            raise ValueError(f"command {kind!r} already registered")
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise ValueError("commands must be frozen dataclasses")
        return CommandRegistry({**self._by_kind, kind: (cls, handler)})

    def extended_all(self, commands: Sequence[tuple[str, type, Handler]]) -> CommandRegistry:
        """A registry with every ``(kind, class, handler)`` of ``commands`` added, in order."""
        registry = self
        for kind, cls, handler in commands:
            registry = registry.extended(kind, cls, handler)
        return registry

    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_kind))

    def encode(self, command: Any) -> bytes:
        kind = self._by_cls.get(type(command))
        if kind is None:
            raise ValueError(f"{type(command).__name__} is not a registered command")
        return cbor2.dumps([kind, _plain(command)], canonical=True)

    def decode(self, data: bytes) -> Any:
        try:
            # Entries come off the wire (AppendEntries): no tag may build an object here.
            raw = cbor_strict.loads(data)
        except cbor_strict.CborRefused as exc:
            raise InvalidCommand(f"cbor: {exc.reason}: {exc.detail}") from None
        if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str):
            raise InvalidCommand("expected [kind, body]")
        spec = self._by_kind.get(raw[0])
        if spec is None:
            raise InvalidCommand(f"unknown command {raw[0][:64]!r}")
        return _typed(raw[1], spec[0], raw[0])

    def apply(self, state: SwarmState, command: Any) -> tuple[SwarmState, Result]:
        kind = self._by_cls.get(type(command))
        if kind is None:
            return state, Result(False, f"unknown command {type(command).__name__}")
        try:
            out = self._by_kind[kind][1](state, command)
        except Rejected as exc:
            return state, Result(False, str(exc))
        if isinstance(out, tuple):  # a handler may answer a value: (state, value)
            return out[0], Result(True, value=out[1])
        return out, Result(True)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


@functools.cache
def _hints(tp: Any) -> dict[str, Any]:
    """``get_type_hints`` of a command/record class, resolved once: it re-evaluates every
    annotation string on each call, which made decoding a command ~100 us (a hot path: every
    replica decodes every committed entry)."""
    return get_type_hints(tp)


def _typed(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        rest = [a for a in get_args(tp) if a is not type(None)]
        return _typed(value, rest[0], where)
    if origin is tuple:
        if not isinstance(value, list) or len(value) > 4096:
            raise InvalidCommand(f"{where}: expected a bounded array")
        return tuple(_typed(v, get_args(tp)[0], where) for v in value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InvalidCommand(f"{where}: expected a map")
        hints = _hints(typing.cast(type, tp))
        names = [f.name for f in dataclasses.fields(tp)]
        if set(value) != set(names):
            raise InvalidCommand(f"{where}: fields differ from the schema")
        return tp(**{n: _typed(value[n], hints[n], f"{where}.{n}") for n in names})  # type: ignore[operator]
    if tp in (str, bytes, bool, int):
        if type(value) is not tp:
            raise InvalidCommand(f"{where}: expected {tp.__name__}")
        if tp is int and not -(2**63) <= value < 2**64:
            raise InvalidCommand(f"{where}: int out of range")
        return value
    if tp is Any:
        return value
    raise InvalidCommand(f"{where}: unsupported type {tp!r}")


CORE_REGISTRY = CommandRegistry({
    "join": (Join, _join),
    "suspect": (Suspect, _suspect),
    "reinstate": (Reinstate, _reinstate),
    "revoke": (Revoke, _revoke),
    "leave": (Leave, _leave),
    "score": (RecordScore, _record_score),
    "set-council": (SetCouncil, _set_council),
    "place": (PlaceShards, _place),
    "drop-placement": (DropPlacement, _drop_placement),
    "repair-shard": (RepairShard, _repair_shard),
    "shard-repaired": (ShardRepaired, _shard_repaired),
    "announce-manager": (AnnounceManager, _announce),
    "set-labels": (SetLabels, _set_labels),
})


def apply(state: SwarmState, command: Any,
          registry: CommandRegistry = CORE_REGISTRY) -> tuple[SwarmState, Result]:
    """Apply one command. Invalid commands give ``(state, Result(ok=False, error=...))``."""
    return registry.apply(state, command)


def apply_entry(state: SwarmState, data: bytes,
                registry: CommandRegistry = CORE_REGISTRY) -> tuple[SwarmState, Result]:
    """Decode and apply a committed entry's payload; empty payloads (leader no-ops) are
    no-ops, undecodable ones are rejected (deterministically, on every replica)."""
    if not data:
        return state, Result(True)
    try:
        cmd = registry.decode(data)
    except InvalidCommand as exc:
        return state, Result(False, f"invalid command: {exc}")
    return registry.apply(state, cmd)


# --------------------------------------------------------------------------- snapshots


def encode_state(state: SwarmState) -> bytes:
    """Canonical bytes of the state: equal states give equal bytes on every replica."""
    body = {
        "v": STATE_VERSION,
        "members": [_plain(state.members[k]) for k in sorted(state.members)],
        "council": list(state.council),
        "placements": [_plain(state.placements[k]) for k in sorted(state.placements)],
        "next_raft_id": state.next_raft_id,
        "manager": [state.manager_term, state.manager_id],
        "ext": dict(state.ext),
    }
    return cbor2.dumps(body, canonical=True)


def decode_state(data: bytes) -> SwarmState:
    """Inverse of :func:`encode_state`.

    State bytes come off the wire (state responses, snapshots), so they are decoded strictly
    (``consensus/cbor_strict.py``): a CBOR tag anywhere is refused before any object is built.

    Raises:
        InvalidCommand: malformed bytes; the message starts with ``state tag:`` for a tag.
    """
    try:
        raw = cbor_strict.loads(data)
    except cbor_strict.CborRefused as exc:
        raise InvalidCommand(f"state {exc.reason}: {exc.detail}") from None
    if not isinstance(raw, dict) or raw.get("v") != STATE_VERSION:
        raise InvalidCommand("unknown state version")
    try:
        members = tuple(_typed(m, Member, "member") for m in raw["members"])
        placements = tuple(_typed(p, Placement, "placement") for p in raw["placements"])
        term, manager = raw["manager"]
        return SwarmState(
            members={m.node_id: m for m in members},
            council=tuple(_typed(raw["council"], tuple[str, ...], "council")),
            placements={p.object_id: p for p in placements},
            next_raft_id=_typed(raw["next_raft_id"], int, "next_raft_id"),
            manager_term=_typed(term, int, "manager"),
            manager_id=_typed(manager, str, "manager"),
            ext=dict(raw["ext"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCommand(f"state: {type(exc).__name__}") from None
