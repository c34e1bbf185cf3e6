"""The manager demo's agreement check (node/manager_demo.py): it kills the manager only when
the council can elect a successor without it."""

from __future__ import annotations

from node.manager_demo import _agreed


def _st(peer: str, role: str, council: list[str], term: int = 1, manager: str = "a") -> dict:
    return {"peer_id": peer, "role": role, "term": term, "manager": manager, "council": council}


def test_a_two_voter_council_is_not_enough_to_show_a_failover():
    young = [_st("a", "manager", ["a", "b"]), _st("b", "council", ["a", "b"]),
             _st("c", "follower", ["a", "b"])]
    assert _agreed(young) == "a"
    assert _agreed(young, min_council=3) is None
    grown = [_st("a", "manager", ["a", "b", "c"]), _st("b", "council", ["a", "b", "c"]),
             _st("c", "council", ["a", "b", "c"])]
    assert _agreed(grown, min_council=3) == "a"


def test_no_agreement_on_split_views_or_a_missing_node():
    split = [_st("a", "manager", ["a", "b", "c"]), _st("b", "council", ["a", "b", "c"], term=2),
             _st("c", "council", ["a", "b", "c"])]
    assert _agreed(split) is None
    assert _agreed([_st("a", "manager", ["a"]), None]) is None
    unseated = [_st("a", "manager", ["a", "b", "c"]), _st("b", "council", ["a", "b", "c"]),
                _st("c", "follower", ["a", "b", "c"])]
    assert _agreed(unseated) is None
