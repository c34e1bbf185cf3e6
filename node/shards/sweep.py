"""The holder's clean-up as a pure decision: which stored shards to mark, which to erase.

Rules
-----
Every holder periodically compares the shards in its store with its view of the committed
swarm state (``consensus/state.py``) and with the placement marks its store keeps
(``placed/``: the federation id and state index at which the committed placement first named
this holder for the shard). For each stored shard ``(object, index)``:

1. **Rebuilding here**: a rebuild of this shard is running on this node. Keep it, mark
   nothing (the rebuild marks it itself before it starts).
2. **Placed here**: the committed placement names this node for the index (settled or
   pending). Keep it; mark it unless a mark of this federation exists already.
3. **Replaced**: the index belongs to *another* holder whose rebuild is done (not pending).
   Stale: a holder replaced while unreachable, back after the owner's adoption could not
   reach it.
4. **Repair pending elsewhere**: the index belongs to another holder that is still pending.
   Keep it: the move is not finished, and no decision is taken on a half-done repair.
5. **Dropped**: no committed placement of the object, and a mark of *this* federation at a
   state index strictly *older* than the view's. Stale: an ``rm`` that raced a repair to this
   holder (the owner's erase found nothing there yet).
6. Anything else is kept: no placement and no mark (a placement not yet committed, or a put
   without a manager), a mark of another federation, or a view not newer than the mark (a
   restarted node's empty or older view).

A stale shard is erased only once it has been stale at every sweep for ``grace_s`` (the clock
starts at the first sweep that finds it stale and restarts whenever it is not). That covers a
view that flickers while it catches up, and a repair the manager reverts.

Theory of operation
-------------------
:func:`plan_sweep` is a function of its inputs only (the committed state and its index, the
federation id, this node's id, the stored shards, their marks, the rebuilds in progress, the
previous stale clocks and the current time): no I/O, no clock, no trio. Its caller
(:meth:`node.shards.managed.ManagedShards.stale_tick`) reads the store, calls it, writes the
marks, erases what it returns and keeps the returned clocks for the next sweep; it drops an
erased shard's clock only after the erase succeeded, so a failed erase is retried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from consensus.state import SwarmState

REPLACED = "replaced"
DROPPED = "dropped"

ShardKey = tuple[str, int]  # (object id hex, index): the clocks' and the rebuilds' key
Mark = tuple[str, int]  # (federation id, state index) a placement mark records


@dataclasses.dataclass(frozen=True)
class Stale:
    """Why a stored shard is no longer placed here: ``kind`` is REPLACED or DROPPED."""

    kind: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Erase:
    """A shard that has been stale for the grace period."""

    object_id: bytes
    index: int
    kind: str
    detail: str


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What one sweep does.

    ``mark``: shards to mark as placed here (at the view's federation and index).
    ``erase``: shards to erase now.
    ``stale_since``: the stale clocks to keep for the next sweep (the shards in ``erase``
    included: the caller drops each once its erase succeeded).
    """

    mark: tuple[tuple[bytes, int], ...]
    erase: tuple[Erase, ...]
    stale_since: dict[ShardKey, float]


def judge(state: SwarmState, view_index: int, federation: str, me: str, object_id: str, index: int,
          mark: Mark | None) -> Stale | None:
    """Whether shard ``index`` of ``object_id`` (hex) stored here is stale (rules 2 to 6)."""
    p = state.placements.get(object_id)
    if p is not None:
        h = p.holder_of(index)
        if h is None or h.holder == me or h.pending:
            return None
        return Stale(REPLACED, f"index {index} moved to {h.holder}")
    if mark is not None and mark[0] == federation and view_index > mark[1]:
        return Stale(DROPPED, f"placed here at state index {mark[1]}, gone at {view_index}")
    return None


def wants_mark(state: SwarmState, federation: str, me: str, object_id: str, index: int,
               mark: Mark | None) -> bool:
    """Whether the committed placement names this node for the shard and no mark of this
    federation records it yet (rule 2)."""
    p = state.placements.get(object_id)
    h = p.holder_of(index) if p is not None else None
    return h is not None and h.holder == me and (mark is None or mark[0] != federation)


def plan_sweep(state: SwarmState, view_index: int, federation: str, me: str,
               shards: Iterable[tuple[bytes, int]], marks: Mapping[tuple[bytes, int], Mark],
               rebuilding: Collection[ShardKey], stale_since: Mapping[ShardKey, float],
               now: float, grace_s: float) -> SweepPlan:
    """One sweep over the stored ``shards`` (see the module docstring).

    Args:
        state: this node's committed view; ``view_index`` its state index; ``federation`` its
            federation id.
        me: this node's peer id.
        shards: the stored (object id, index) pairs.
        marks: the store's placement marks by (object id, index).
        rebuilding: the (object id hex, index) rebuilds running on this node.
        stale_since: the clocks the previous sweep returned.
        now: the current time (any monotonic clock, seconds).
        grace_s: how long a shard stays stale before it is erased.
    """
    to_mark: list[tuple[bytes, int]] = []
    to_erase: list[Erase] = []
    clocks: dict[ShardKey, float] = {}
    for oid, index in shards:
        key = (oid.hex(), index)
        if key in rebuilding:
            continue
        mark = marks.get((oid, index))
        if wants_mark(state, federation, me, key[0], index, mark):
            to_mark.append((oid, index))
        why = judge(state, view_index, federation, me, key[0], index, mark)
        if why is None:
            continue
        since = clocks[key] = stale_since.get(key, now)
        if now - since >= grace_s:
            to_erase.append(Erase(oid, index, why.kind, why.detail))
    return SweepPlan(tuple(to_mark), tuple(to_erase), clocks)
