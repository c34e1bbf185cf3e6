"""The pieces of a council member's driver that every simulation shares.

``node/manager.py`` is the production driver (trio, raftstore, libp2p); the simulations drive
the same :class:`consensus.raft.RawNode` and :mod:`consensus.state` with these:

- :class:`Disk`: the simulated disk. It holds exactly what the Ready cycle asked to persist;
  :meth:`Disk.persist_prefix` models a power cut in the middle of a write (a prefix of the
  records in ``node/raftstore.py``'s order survives, nothing after it).
- :func:`initial_state`: the replicated state every member starts from (``n`` joined,
  attested members, council of ``n``), with raft ids ``1..n``.
- :func:`handover_target` and :func:`revoked_voter`: the manager's duties, through
  :func:`consensus.manager.decide` (term limit, revoked or low-score manager) and the
  revocation flow (a revoked member's vote is removed by the leader).
"""

from __future__ import annotations

from consensus.manager import ManagerPolicy, decide
from consensus.messages import Entry, HardState, Snapshot
from consensus.raft import Persisted, Raft, Ready
from consensus.state import REVOKED, Join, SetCouncil, SwarmState, apply


class Disk:
    """What survives a crash: everything a Ready asked to persist, and nothing else."""

    def __init__(self, initial: Persisted) -> None:
        self.hard_state: HardState = initial.hard_state
        self.snapshot: Snapshot = initial.snapshot
        self.entries: list[Entry] = list(initial.entries)

    def persist(self, rd: Ready) -> None:
        self.persist_prefix(rd, self.records(rd))

    def records(self, rd: Ready) -> int:
        """How many records persisting ``rd`` writes (snapshot, entries, hard state)."""
        return (rd.snapshot is not None) + len(rd.entries) + (rd.hard_state is not None)

    def persist_prefix(self, rd: Ready, k: int) -> None:
        """A crash while persisting ``rd``: only its first ``k`` records reach the disk, in
        the raftstore's order (the snapshot is written atomically first, then each entry,
        then the hard state). Entry ``i`` replaces every stored entry ``>= i``, as at WAL
        replay."""
        if k <= 0:
            return
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
            k -= 1
        if rd.entries and k > 0:
            self._write_entries(rd.entries[:k])
            k -= min(k, len(rd.entries))
        if rd.hard_state is not None and k > 0:
            self.hard_state = rd.hard_state

    def _write_entries(self, entries: tuple[Entry, ...]) -> None:
        first = entries[0].index
        if self.entries and self.entries[-1].index >= first:
            self.entries = [e for e in self.entries if e.index < first]
        self.entries.extend(entries)

    def compact(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]

    def load(self) -> Persisted:
        return Persisted(self.hard_state, self.snapshot, tuple(self.entries))


def node_name(raft_id: int) -> str:
    """The member id of raft id ``raft_id`` in :func:`initial_state`."""
    return f"node-{raft_id}"


def initial_state(n: int) -> SwarmState:
    """``n`` attested members (raft ids ``1..n``, three providers, two regions, distinct
    scores) and a council of ``n``."""
    s = SwarmState()
    for i in range(1, n + 1):
        s, r = apply(s, Join(node_name(i), f"provider-{i % 3}", f"region-{i % 2}", "sim", 900 - i,
                             True))
        if not r.ok:
            raise AssertionError(r.error)
    s, r = apply(s, SetCouncil(n))
    if not r.ok:
        raise AssertionError(r.error)
    return s


def handover_target(state: SwarmState, raft: Raft, *, now_tick: int, term_start_tick: int,
                    term_limit_ticks: int) -> tuple[str, int] | None:
    """The manager's decision (``consensus.manager.decide``) for the leader ``raft``:
    ``(action, raft id to transfer to)``, or None to stay. ``action`` is ``"handover"`` at the
    term limit or ``"step-down"`` when the manager itself was revoked."""
    me = state.by_raft_id(raft.id)
    if me is None:
        return None
    scores = {c: state.members[c].score for c in state.council if c in state.members}
    scores[me.node_id] = me.score
    d = decide(ManagerPolicy(term_limit_ticks=term_limit_ticks, min_score=0),
               self_id=me.node_id, now_tick=now_tick, term_start_tick=term_start_tick,
               scores=scores,
               revoked={m.node_id for m in state.members.values() if m.status == REVOKED})
    if d.action == "stay" or d.to is None:
        return None
    target = state.members[d.to].raft_id
    if target not in raft.voters:
        return None
    return d.action, target


def revoked_voter(state: SwarmState, raft: Raft) -> int | None:
    """A voter of ``raft``'s configuration that the state machine has revoked (the leader
    proposes its removal), or None."""
    for v in raft.voters:
        m = state.by_raft_id(v)
        if m is not None and m.status == REVOKED:
            return v
    return None
