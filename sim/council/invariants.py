"""Raft safety invariants, checked incrementally on every output of every simulated event.

One checker serves the council world (:mod:`sim.council.world`) and the consensus test harness
(``sim/council/cluster.py``). The driver calls it at the points of the Ready cycle where
each rule can be seen, so every check is O(1) or O(entries in the output):

=================== ============================================================= ==========
rule                what is checked                                               hook
=================== ============================================================= ==========
election safety     at most one leader per term                                   after_ready
log matching        two persisted entries with the same (index, term) carry the   persisted
                    same data
committed entries   a node that holds a committed entry never replaces it; every  persisted,
never change        replica applies the same entry at each index, in order        applied
state machine       every replica reaches the same state at each applied index    applied,
safety              (and a restored snapshot matches it)                          restored
leader completeness a new leader's log holds every entry committed so far         after_ready
revocation          once the removal of a node's vote has committed, it never     after_ready,
                    leads again, no vote of it counts toward an election, and     sent,
                    once it knows it was removed it grants none; the replicated   applied
                    council never seats a revoked member
=================== ============================================================= ==========

"Revoked" in Raft terms means *removed from the configuration*: the state machine's
``Revoke`` takes the node off the council, then the leader's driver proposes the Raft
``remove`` of its id, and from that commit on the rules above hold.

A violation is recorded (the first ``max_kept``) or, with ``fail_fast``, raised as
:class:`SafetyViolation` with the ``prefix`` (the test harness puts ``SEED=<n>: `` there).
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.messages import ENTRY_CONF, ConfChange, Entry, Message, VoteResponse
from consensus.raft import LEADER, Raft
from consensus.state import REVOKED, SwarmState


class SafetyViolation(AssertionError):
    """A Raft safety invariant failed (only raised with ``fail_fast``)."""


class RaftInvariants:
    """Ground truth of one simulated cluster and the checks against it.

    Args:
        fail_fast: raise :class:`SafetyViolation` at the first violation instead of recording.
        prefix: put before every violation text (e.g. ``"SEED=7: "``).
        max_kept: how many violation texts to keep (all are counted in ``count``).

    Attributes:
        leaders: term -> the node that led it.
        committed: index -> (term, data) of the entry applied there.
        removed_committed: raft id -> time its removal from the configuration committed.
        elections: (time, term, leader) of every leadership, in order.
        checked: number of checks run; ``count``: number of violations.
        commands_committed: committed entries that carry a command (not leader no-ops).
    """

    def __init__(self, *, fail_fast: bool = False, prefix: str = "", max_kept: int = 100) -> None:
        self.fail_fast = fail_fast
        self.prefix = prefix
        self.max_kept = max_kept
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.commit_max = 0
        self.commands_committed = 0
        self.states: dict[int, SwarmState] = {}
        self.seen: dict[tuple[int, int], bytes] = {}
        self.removed_committed: dict[int, float] = {}
        self.elections: list[tuple[float, int, int]] = []
        self.led: dict[int, int] = {}  # node -> the last term it was seen leading
        self.checked = 0
        self.count = 0
        self.violations: list[str] = []

    def violation(self, text: str) -> None:
        self.count += 1
        msg = self.prefix + text
        if self.fail_fast:
            raise SafetyViolation(msg)
        if len(self.violations) < self.max_kept:
            self.violations.append(msg)

    # ------------------------------------------------------------------ Ready hooks

    def persisted(self, node: int, entries: Sequence[Entry], held: Sequence[Entry] = ()) -> None:
        """Before ``node`` persists ``entries`` (step 1 of the Ready cycle). ``held``: the
        contiguous entries it has stored so far (to see what the new ones replace)."""
        seen = self.seen
        committed = self.committed
        base = held[0].index if held else 0
        for e in entries:
            self.checked += 1
            prev = seen.setdefault((e.index, e.term), e.data)
            if prev != e.data:
                self.violation(f"log matching broken at {e.index}/{e.term} on node {node}")
            known = committed.get(e.index)
            if known is None or known == (e.term, e.data):
                continue
            # A stale follower may hold an old uncommitted entry where another one has
            # committed (Raft's Figure 7); it must never replace the committed one once held.
            j = e.index - base
            if held and 0 <= j < len(held) and (held[j].term, held[j].data) == known:
                self.violation(f"node {node} replaced committed entry {e.index} (term {known[0]}) "
                               f"with one of term {e.term}")

    def sent(self, node: int, raft: Raft, m: Message) -> None:
        """Before ``node`` sends ``m`` (step 2)."""
        if type(m) is VoteResponse and not m.reject and not m.pre:
            self.checked += 1
            if raft.is_removed():
                self.violation(f"removed node {node} granted a vote in term {m.term}")

    def restored(self, node: int, index: int, state: SwarmState) -> None:
        """After ``node`` restored a snapshot at ``index`` (step 3)."""
        self.checked += 1
        known = self.states.get(index)
        if known is not None and known != state:
            self.violation(f"node {node} restored a snapshot at {index} that differs from the "
                           f"state every replica reached there")

    def applied(self, node: int, prev_applied: int, e: Entry, state: SwarmState,
                now: float) -> None:
        """After ``node`` applied committed entry ``e`` (step 3); ``state`` is the result."""
        self.checked += 1
        if e.index != prev_applied + 1:
            self.violation(f"node {node} applied {e.index} after {prev_applied}")
        known = self.committed.get(e.index)
        if known is None:
            self.committed[e.index] = (e.term, e.data)
            if e.index > self.commit_max:
                self.commit_max = e.index
            if e.data and e.kind != ENTRY_CONF:
                self.commands_committed += 1
            if e.kind == ENTRY_CONF:
                cc = ConfChange.decode(e.data)
                if cc.op == "remove":
                    self.removed_committed.setdefault(cc.node_id, now)
        elif known != (e.term, e.data):
            self.violation(f"node {node} applied a different entry at {e.index}: "
                           f"term {known[0]} vs {e.term}")
        prev = self.states.setdefault(e.index, state)
        # Equal dataclasses of plain ints/strings give equal canonical bytes (encode_state).
        if prev is not state and prev != state:
            self.violation(f"state diverged at index {e.index} on node {node}")
        for member in state.council:
            rec = state.members.get(member)
            if rec is not None and rec.status == REVOKED:
                self.violation(f"revoked {member} still on the council at {e.index}")

    def after_ready(self, node: int, raft: Raft, now: float) -> bool:
        """After ``node`` advanced (step 4). Returns True when it just became leader."""
        if raft.role != LEADER or self.led.get(node) == raft.term:
            return False
        term = raft.term
        self.led[node] = term
        self.checked += 1
        other = self.leaders.setdefault(term, node)
        if other != node:
            self.violation(f"two leaders in term {term}: {other} and {node}")
        self.elections.append((now, term, node))
        if node in self.removed_committed:
            self.violation(f"removed node {node} became leader in term {term}")
        for voter, granted in raft.votes.items():
            if granted and voter != node and voter in self.removed_committed:
                self.violation(f"vote of removed node {voter} counted for {node} in term {term}")
        log = raft.log
        for idx in range(log.offset + 1, self.commit_max + 1):
            known = self.committed.get(idx)
            if known is None:
                continue
            got = log.term(idx)
            if got != known[0] or log.entry(idx).data != known[1]:
                self.violation(f"leader {node} (term {term}) lacks committed entry {idx}")
                break
        return True
