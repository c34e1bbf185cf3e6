"""The in-memory Raft log: a snapshot prefix plus a contiguous run of entries.

Theory of operation
-------------------
The log is ``snapshot (index = offset, term = snap_term)`` followed by ``entries`` with
indexes ``offset+1 .. last_index``. Three cursors move through it, always in this order::

    offset <= applied <= committed <= last_index          stable <= last_index

- ``stable``: entries up to here were handed to the caller in a Ready and persisted.
  A truncation (a new leader overwriting a conflicting suffix) moves it back.
- ``committed``: known to be durable on a quorum; never moves back, and a truncation at or
  below it is a bug (LogInvariantError).
- ``applied``: handed to the caller as committed entries in a Ready that was advanced.

The whole uncompacted log stays in memory; the caller compacts it after taking a snapshot
(``compact``), which keeps memory bounded by the snapshot interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from consensus.messages import (
    CONF_ADD,
    CONF_REMOVE,
    ENTRY_CONF,
    ConfChange,
    ConfState,
    Entry,
    Snapshot,
    SnapshotMeta,
)


class LogInvariantError(AssertionError):
    """A Raft safety invariant about the log would be broken (always a bug)."""


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after one single-server change. Changes that make no sense
    (adding a voter or a tombstoned id, removing a non-voter) leave it unchanged; the leader
    refuses to propose them, so they only occur in hand-crafted logs."""
    voters, removed = set(conf.voters), set(conf.removed)
    if cc.op == CONF_ADD and cc.node_id not in voters and cc.node_id not in removed:
        voters.add(cc.node_id)
    elif cc.op == CONF_REMOVE and cc.node_id in voters and len(voters) > 1:
        voters.discard(cc.node_id)
        removed.add(cc.node_id)
    return ConfState(voters=tuple(sorted(voters)), removed=tuple(sorted(removed)))


def apply_conf_entries(conf: ConfState, entries: Iterable[Entry]) -> ConfState:
    for e in entries:
        if e.kind == ENTRY_CONF:
            try:
                conf = apply_conf_change(conf, ConfChange.decode(e.data))
            except ValueError:
                continue  # an undecodable change is a no-op everywhere, deterministically
    return conf


def entry_size(e: Entry) -> int:
    return len(e.data) + 24


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry] = (), committed: int = 0,
                 applied: int = 0) -> None:
        self.snapshot = snapshot
        self.offset = snapshot.meta.index
        self.snap_term = snapshot.meta.term
        self.entries: list[Entry] = list(entries)
        for i, e in enumerate(self.entries):
            if e.index != self.offset + 1 + i:
                raise LogInvariantError("persisted entries are not contiguous with the snapshot")
        self.stable = self.last_index()
        self.committed = max(committed, self.offset)
        if self.committed > self.last_index():
            raise LogInvariantError("commit index beyond the persisted log")
        self.applied = max(applied, self.offset)
        if self.applied > self.committed:
            raise LogInvariantError("applied beyond committed")
        self.unstable_snapshot: Snapshot | None = None

    # ------------------------------------------------------------------ queries

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.offset:
            return self.snap_term
        if index < self.offset or index > self.last_index():
            return None
        return self.entries[index - self.offset - 1].term

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (§5.4.1): is a log ending at (last_index, last_term) at least
        as up-to-date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def entry(self, index: int) -> Entry:
        if not self.offset < index <= self.last_index():
            raise LogInvariantError(f"entry {index} not in log ({self.offset}, {self.last_index()}]")
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None,
              max_entries: int | None = None) -> list[Entry] | None:
        """Entries ``[lo, hi)``, at least one if any, limited by size; None if compacted."""
        if lo <= self.offset:
            return None
        hi = min(hi, self.last_index() + 1)
        out: list[Entry] = []
        size = 0
        for i in range(lo, hi):
            e = self.entries[i - self.offset - 1]
            size += entry_size(e)
            if out and ((max_bytes is not None and size > max_bytes)
                        or (max_entries is not None and len(out) >= max_entries)):
                break
            out.append(e)
        return out

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if all
        of them are already in our log."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest ``(i, term_i)`` with ``i <= index`` and ``term_i <= term``, used to skip a
        whole term of mismatching entries per round trip instead of one entry."""
        index = min(index, self.last_index())
        while index > self.offset:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return self.offset, self.snap_term

    def conf_at(self, index: int) -> ConfState:
        """The configuration in force after the entry at ``index`` (applied on append)."""
        return apply_conf_entries(self.snapshot.meta.conf,
                                  (e for e in self.entries if e.index <= index))

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.offset:]

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.offset)

    def next_committed(self, max_bytes: int | None = None) -> list[Entry]:
        lo = max(self.applied, self.offset) + 1
        if lo > self.committed:
            return []
        out = self.slice(lo, self.committed + 1, max_bytes)
        assert out is not None
        return out

    # ------------------------------------------------------------------ mutations

    def append(self, entries: Sequence[Entry]) -> bool:
        """Append, truncating any conflicting suffix. Returns whether it truncated."""
        if not entries:
            return False
        first = entries[0].index
        if first <= self.committed:
            raise LogInvariantError(f"truncating committed entry {first} <= {self.committed}")
        if first > self.last_index() + 1:
            raise LogInvariantError(f"gap: appending {first} after {self.last_index()}")
        truncated = first <= self.last_index()
        del self.entries[first - self.offset - 1:]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)
        return truncated

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     entries: Sequence[Entry]) -> tuple[int, bool] | None:
        """The follower side of AppendEntries (Figure 2, receiver rules 2–5).

        Returns ``(last new index, truncated)`` or None when the consistency check fails."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        ci = self.find_conflict(entries)
        truncated = False
        if ci:
            truncated = self.append(entries[ci - prev_index - 1:])
        self.commit_to(min(commit, last_new))
        return last_new, truncated

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise LogInvariantError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise LogInvariantError(f"applied {index} > committed {self.committed}")
        self.applied = max(self.applied, index)

    def stable_to(self, index: int, term: int) -> None:
        if self.term(index) == term:
            self.stable = max(self.stable, index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.snapshot = snapshot
        self.offset = snapshot.meta.index
        self.snap_term = snapshot.meta.term
        self.entries = []
        self.committed = snapshot.meta.index
        self.stable = snapshot.meta.index
        self.unstable_snapshot = snapshot

    def compact(self, index: int, data: bytes, conf: ConfState) -> Snapshot:
        """Drop entries up to ``index`` (<= applied) behind a snapshot of the caller's state."""
        if index <= self.offset:
            return self.snapshot
        if index > self.applied:
            raise LogInvariantError(f"compacting {index} beyond applied {self.applied}")
        term = self.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index=index, term=term, conf=conf), data)
        del self.entries[: index - self.offset]
        self.snapshot = snap
        self.offset = index
        self.snap_term = term
        self.stable = max(self.stable, index)
        return snap
