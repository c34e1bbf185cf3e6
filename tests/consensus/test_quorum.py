"""quorum.py against a naive reference, over many random configurations."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import quorum
from consensus.quorum import VoteResult

ids = st.integers(min_value=1, max_value=12)
voter_sets = st.sets(ids, min_size=0, max_size=9)


def naive_committed(voters: set[int], matched: dict[int, int]) -> int:
    """The largest i such that strictly more than half of the voters have match >= i."""
    if not voters:
        return 0
    best = 0
    for i in sorted({0, *matched.values()}):
        if 2 * sum(1 for v in voters if matched.get(v, 0) >= i) > len(voters):
            best = max(best, i)
    return best


def naive_vote(voters: set[int], votes: dict[int, bool]) -> VoteResult:
    """Enumerate every way the missing voters could still answer."""
    if not voters:
        return VoteResult.LOST
    missing = [v for v in voters if v not in votes]
    outcomes = set()
    for answers in itertools.product([True, False], repeat=len(missing)):
        full = {v: votes[v] for v in voters if v in votes} | dict(zip(missing, answers, strict=True))
        outcomes.add(2 * sum(full.values()) > len(voters))
    if outcomes == {True}:
        return VoteResult.WON
    if outcomes == {False}:
        return VoteResult.LOST
    return VoteResult.PENDING


@settings(max_examples=600, deadline=None)
@given(voter_sets, st.dictionaries(ids, st.integers(min_value=0, max_value=20)))
def test_committed_index_matches_reference(voters: set[int], matched: dict[int, int]) -> None:
    assert quorum.committed_index(voters, matched) == naive_committed(voters, matched)


@settings(max_examples=600, deadline=None)
@given(voter_sets, st.dictionaries(ids, st.booleans()))
def test_vote_result_matches_reference(voters: set[int], votes: dict[int, bool]) -> None:
    assert quorum.vote_result(voters, votes) == naive_vote(voters, votes)


@settings(max_examples=200, deadline=None)
@given(voter_sets, st.sets(ids))
def test_is_quorum_matches_reference(voters: set[int], active: set[int]) -> None:
    expected = bool(voters) and 2 * len(voters & active) > len(voters)
    assert quorum.is_quorum(voters, active) == expected


@settings(max_examples=200, deadline=None)
@given(st.sets(ids, min_size=1, max_size=9), st.data())
def test_two_quorums_intersect(voters: set[int], data: st.DataObject) -> None:
    a = data.draw(st.sets(st.sampled_from(sorted(voters))))
    b = data.draw(st.sets(st.sampled_from(sorted(voters))))
    if quorum.is_quorum(voters, a) and quorum.is_quorum(voters, b):
        assert a & b


@settings(max_examples=200, deadline=None)
@given(st.sets(ids, min_size=1, max_size=9), st.dictionaries(ids, st.integers(0, 20)), ids,
       st.integers(0, 20))
def test_committed_index_is_monotonic_in_matches(voters: set[int], matched: dict[int, int],
                                                 who: int, more: int) -> None:
    before = quorum.committed_index(voters, matched)
    bumped = dict(matched)
    bumped[who] = max(bumped.get(who, 0), more)
    assert quorum.committed_index(voters, bumped) >= before


def test_majority() -> None:
    assert [quorum.majority(n) for n in range(7)] == [1, 1, 2, 2, 3, 3, 4]
