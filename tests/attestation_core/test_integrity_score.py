"""The score's integrity input (node/attestation/score.py over consensus/integrity.py): pure
property tests of the weights and the decay, with the default policy minimum of 60."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus import integrity as I
from node.attestation.policy import Policy
from node.attestation.score import (
    CONSECUTIVE_MINORITY_REVOKES,
    HEALTHY_SCORE,
    INTEGRITY_WEIGHTS,
    integrity_penalty,
    with_integrity,
)

MIN_SCORE = Policy().min_score
KINDS = st.sampled_from(I.KINDS)
EVENTS = st.lists(st.one_of(st.just("good"), KINDS), max_size=200)
GOODS = st.integers(0, 300).map(lambda n: ["good"] * n)


def revoked(base: int, events: list[str], start_milli: int = 0) -> bool:
    return with_integrity(base, integrity_penalty(events, start_milli)) < MIN_SCORE


def test_the_documented_constants_hold_for_the_default_policy() -> None:
    assert MIN_SCORE == 60
    w = INTEGRITY_WEIGHTS[I.MINORITY]
    assert -(-(101 - MIN_SCORE) // w) == CONSECUTIVE_MINORITY_REVOKES
    assert HEALTHY_SCORE - max(INTEGRITY_WEIGHTS.values()) >= MIN_SCORE


@given(st.integers(HEALTHY_SCORE, 100), GOODS, KINDS, GOODS)
def test_one_finding_never_revokes_a_healthy_node(base: int, before: list[str], kind: str,
                                                  after: list[str]) -> None:
    assert not revoked(base, [*before, kind, *after])


@given(st.integers(0, 100), EVENTS)
def test_k_consecutive_minority_findings_always_revoke(base: int, history: list[str]) -> None:
    """Whatever came before (any findings, any good results), k minority findings in a row take
    any node, even one scoring 100, below the policy."""
    pen = 0
    for e in history:
        pen = I.step_penalty(pen, e)
    assert revoked(base, [I.MINORITY] * CONSECUTIVE_MINORITY_REVOKES, pen)


def test_k_minus_one_consecutive_minority_findings_do_not_revoke_a_perfect_node() -> None:
    assert not revoked(100, [I.MINORITY] * (CONSECUTIVE_MINORITY_REVOKES - 1))


@given(st.integers(0, I.MAX_PENALTY), st.integers(1, 400))
def test_good_results_only_decay_and_halve_in_a_half_life(pen: int, goods: int) -> None:
    after = pen
    for _ in range(goods):
        nxt = I.step_penalty(after, "good")
        assert nxt <= after
        after = nxt
    halvings = goods // I.HALF_LIFE_RESULTS
    assert after <= pen / 2**halvings + 1e-9


@given(st.integers(0, I.MAX_PENALTY), KINDS)
def test_a_finding_adds_its_weight_up_to_the_cap(pen: int, kind: str) -> None:
    assert I.step_penalty(pen, kind) == min(I.MAX_PENALTY, pen + INTEGRITY_WEIGHTS[kind] * I.MILLI)


def test_a_liar_on_one_fragment_in_ten_is_revoked_and_an_honest_node_is_not() -> None:
    """Decay is by results, so a node that lies on 10 % of its fragments keeps a penalty well
    above the gap, and one outlier in 10,000 results is forgotten."""
    liar = ([I.MINORITY] + ["good"] * 9) * 50
    assert revoked(100, liar)
    honest = ["good"] * 5000 + [I.OUTLIER] + ["good"] * 5000
    assert integrity_penalty(honest) == 0 and not revoked(90, honest)
