"""The manager's holder-loss decision as pure functions: who is lost, what repair to commit.

Rules
-----
The manager (the Raft leader) looks at every holder of every committed placement each tick.
A holder is **lost**:

1. at once when the committed state does not list it as a member, or lists it as revoked or
   left (the council decided; there is nothing to wait for);
2. after the grace period when it is suspect in the committed state, or (any other status)
   not attested as seen from the manager: its *down clock* starts at the first tick that sees
   it so and is reset by any tick that sees it attested and not suspect. The manager itself is
   never unreachable to itself.

A holder that is not lost has no reason. Per placement the manager repairs at most one index a
tick (the first lost holder, in index order, whose repair is not backing off after a failure):
the command moves the placement's epoch, so the next index is looked at afresh next tick.

The repair it commits (:func:`plan_repair`) names a new holder chosen by
:func:`~node.shards.placement.choose_holders` among the admitted members that are attested
(the manager counts as attested), not the owner and not already holders of the object, spread
away from the providers and regions of the holders that stay, seeded by the object id and the
lost holder (so every manager picks the same one), at the placement's current epoch.

Theory of operation
-------------------
No I/O, no clock, no trio: the time, the attestation view and the clocks are arguments, and
the new clock is part of the answer. :class:`~node.shards.managed.ManagedShards` keeps the
clocks and the back-offs, and proposes what :func:`plan_repair` returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

from consensus.state import (
    ADMITTED,
    LEFT,
    REVOKED,
    SUSPECT,
    Member,
    Placement,
    RepairShard,
    ShardHolder,
    SwarmState,
)
from node.shards.placement import Candidate, choose_holders

REPAIR_REASON_MAX = 200  # what consensus/state.py accepts as a repair reason


@dataclasses.dataclass(frozen=True)
class Loss:
    """``reason``: why the holder counts as lost now (None: it does not).
    ``down_since``: the holder's down clock after this look (None: not running)."""

    reason: str | None
    down_since: float | None


def holder_loss(member: Member | None, *, is_me: bool, attested: bool, down_since: float | None,
                now: float, grace_s: float) -> Loss:
    """Whether a holder is lost (rules 1 and 2).

    Args:
        member: the holder's entry in the committed state (None: not a member).
        is_me: the holder is the manager itself.
        attested: the manager sees the holder attested and connected.
        down_since: the holder's down clock from the previous look (None: not running).
        now: the current time (any monotonic clock, seconds).
        grace_s: how long a suspect or unreachable holder is given.
    """
    if member is None:
        return Loss("not a member", down_since)
    if member.status == REVOKED:
        return Loss(f"revoked ({member.reason})" if member.reason else "revoked", down_since)
    if member.status == LEFT:
        return Loss("left the swarm", down_since)
    if is_me or (member.status != SUSPECT and attested):
        return Loss(None, None)
    since = now if down_since is None else down_since
    if now - since < grace_s:
        return Loss(None, since)
    what = "suspect" if member.status == SUSPECT else "unreachable or unattested"
    return Loss(f"{what} for {now - since:.0f}s", since)


def first_lost(p: Placement, lost: Callable[[str], str | None],
               backoff: Mapping[tuple[str, int], float], now: float) -> tuple[ShardHolder, str] | None:
    """The holder of ``p`` to repair this tick and why: the first, in index order, that is lost
    and whose repair is not backing off (until ``backoff[(object id, index)]``). ``lost`` is
    asked about each holder in order, up to the one returned."""
    for h in p.holders:
        reason = lost(h.holder)
        if reason is None or backoff.get((p.object_id, h.index), -math.inf) > now:
            continue
        return h, reason
    return None


def plan_repair(st: SwarmState, p: Placement, h: ShardHolder, reason: str, *, me: str,
                attested: Callable[[str], bool], min_score: float) -> RepairShard:
    """The command that moves shard ``h.index`` of ``p`` from lost ``h.holder`` to a new holder.

    Raises:
        PlacementError: no eligible new holder.
        ValueError: the placement's object id is not hex.
    """
    holding = {x.holder for x in p.holders}
    cands = [
        Candidate(m.node_id, m.score / 10, m.provider or m.node_id, m.region or m.node_id, True, 2**62)
        for m in st.members.values()
        if m.status == ADMITTED and m.node_id not in holding and m.node_id != p.owner
        and (m.node_id == me or attested(m.node_id))
    ]
    taken = []
    for x in p.holders:
        mm = st.member(x.holder)
        if x.holder != h.holder and mm is not None:
            taken.append((mm.provider or mm.node_id, mm.region or mm.node_id))
    (new,) = choose_holders(cands, 1, min_score=min_score, need_bytes=0,
                            seed=bytes.fromhex(p.object_id) + h.holder.encode(), taken=taken)
    return RepairShard(p.object_id, h.index, h.holder, new, p.epoch, reason[:REPAIR_REASON_MAX])
