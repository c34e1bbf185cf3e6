"""Vote and commit-index arithmetic for a majority configuration, as small pure functions.

Rules
-----
- A majority of ``n`` voters is ``n // 2 + 1``. Any two majorities of the same set intersect,
  which is all that election safety and commit durability rest on.
- The committed index of a configuration is the largest index that a majority of voters has
  matched: sort the voters' match indexes in descending order and take the
  ``majority``-th. Voters with no known match count as 0; non-voters' acks are ignored.
- A vote is *won* once a majority granted, *lost* once a majority can no longer grant, and
  *pending* otherwise. Votes from non-voters are ignored.
- The empty configuration is degenerate: it commits nothing and wins nothing. Raft never
  reaches it (removing the last voter is refused).

Joint consensus is not needed: membership changes are single-server (see ``raft.py``).
The tests check these functions against a naive reference over many random cases.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = "pending"
    LOST = "lost"
    WON = "won"


def majority(n: int) -> int:
    """Smallest number of voters that forms a quorum of ``n`` voters (``n`` >= 0)."""
    if n < 0:
        raise ValueError("negative configuration size")
    return n // 2 + 1


def committed_index(voters: Collection[int], matched: Mapping[int, int]) -> int:
    """The largest index acknowledged by a majority of ``voters``.

    Args:
        voters: the voter ids of the configuration.
        matched: per-id highest index known to be replicated (ids absent count as 0).

    Returns:
        The committed index, 0 for an empty configuration.
    """
    if not voters:
        return 0
    acked = sorted((matched.get(v, 0) for v in set(voters)), reverse=True)
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Tally an election.

    Args:
        voters: the voter ids of the configuration.
        votes: id -> granted (True) / rejected (False); missing ids have not answered.

    Returns:
        WON, LOST or PENDING. An empty configuration is LOST.
    """
    members = set(voters)
    if not members:
        return VoteResult.LOST
    granted = sum(1 for v in members if votes.get(v) is True)
    rejected = sum(1 for v in members if votes.get(v) is False)
    missing = len(members) - granted - rejected
    q = majority(len(members))
    if granted >= q:
        return VoteResult.WON
    if granted + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def is_quorum(voters: Collection[int], ids: Collection[int]) -> bool:
    """Whether ``ids`` contains a majority of ``voters`` (used by check-quorum)."""
    members = set(voters)
    if not members:
        return False
    return len(members & set(ids)) >= majority(len(members))
