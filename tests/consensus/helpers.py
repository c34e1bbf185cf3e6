"""Small builders for unit tests of the Raft core."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from consensus.log import RaftLog
from consensus.messages import (
    ENTRY_NORMAL,
    ConfState,
    Entry,
    HardState,
    Message,
    Snapshot,
    SnapshotMeta,
)
from consensus.raft import Config, Raft


def ents(*terms: int, start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes, data ``b"<index>"``."""
    return [Entry(term=t, index=start + i, kind=ENTRY_NORMAL, data=str(start + i).encode())
            for i, t in enumerate(terms)]


def make_raft(node: int, voters: Sequence[int] = (1, 2, 3), entries: Iterable[Entry] = (),
              term: int = 0, vote: int | None = None, commit: int = 0, election: int = 10,
              heartbeat: int = 1, pre_vote: bool = False, check_quorum: bool = False) -> Raft:
    snap = Snapshot(SnapshotMeta(0, 0, ConfState(voters=tuple(sorted(voters)))), b"")
    log = RaftLog(snap, list(entries), committed=commit)
    cfg = Config(id=node, election_tick=election, heartbeat_tick=heartbeat, pre_vote=pre_vote,
                 check_quorum=check_quorum)
    return Raft(cfg, random.Random(node), log, HardState(term, vote, commit),
                logger=lambda level, text: None)


def take(r: Raft) -> list[Message]:
    out, r.msgs = r.msgs, []
    return out


class Net:
    """Deliver messages among Rafts synchronously until quiet (optionally dropping some)."""

    def __init__(self, rafts: Iterable[Raft]) -> None:
        self.rafts = {r.id: r for r in rafts}
        self.cut: set[int] = set()

    def stabilize(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            msgs = [m for r in self.rafts.values() for m in take(r)]
            if not msgs:
                return
            for m in msgs:
                if m.to in self.rafts and m.to not in self.cut and m.sender not in self.cut:
                    self.rafts[m.to].step(m)
        raise AssertionError("did not stabilize")

    def elect(self, node: int) -> None:
        self.rafts[node].hup()
        self.stabilize()
