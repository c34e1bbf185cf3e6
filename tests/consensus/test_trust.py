"""Adaptive replication's pure rules (consensus/trust.py): the counters, the deterministic
draws and their rates."""

from __future__ import annotations

import math

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import trust

ids = st.text(min_size=1, max_size=20)
nodes = st.sampled_from([f"n{i}" for i in range(8)])


@given(st.integers(0, trust.CV_MIN - 1), ids, st.integers(0, 10**6), st.integers(0, 4095),
       st.integers(1, 16), ids)
def test_never_trusted_below_cv_min(cv, job, seq, f, attempt, node) -> None:
    assert not trust.trusted(cv, job, seq, f, attempt, node)
    assert trust.mode(cv, job, seq, f, attempt, node) == trust.REPLICATED


@given(st.integers(0, 2 * trust.CV_CAP), st.integers(0, trust.PPM), ids, st.integers(0, 10**6),
       st.integers(0, 4095), st.integers(1, 16), ids, st.binary(min_size=64, max_size=64))
def test_the_same_inputs_give_the_same_decision(cv, ppm, job, seq, f, attempt, node, sig) -> None:
    """Every member computes the mode from committed data alone: a pure function, SOLO exactly
    when trusted; and the spot-check from the committed draw alone."""
    got = trust.mode(cv, job, seq, f, attempt, node)
    assert got == trust.mode(cv, job, seq, f, attempt, node)
    assert got == (trust.SOLO if trust.trusted(cv, job, seq, f, attempt, node) else trust.REPLICATED)
    assert trust.spot_checked(ppm, sig) == trust.spot_checked(ppm, sig)
    assert trust.spot_checked(0, sig) is False
    assert trust.spot_checked(trust.PPM, sig) is True


MANAGER = Ed25519PrivateKey.generate()


def _draw(f: int, out: bytes = b"\x11" * 32, key: Ed25519PrivateKey = MANAGER, job: str = "j") -> bytes:
    return key.sign(trust.spot_transcript(job, 3, f, 1, "n1", out))


def _within(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("ppm", [1_000, 100_000, 250_000, 900_000])
def test_the_spot_check_rate_is_the_jobs_rate(ppm: int) -> None:
    """Over 20,000 fragments of fixed jobs, the share spot-checked is the rate (within five
    standard deviations of the binomial: a fixed seed, so this never flakes)."""
    n = 20_000
    hits = sum(trust.spot_checked(ppm, _draw(f, job=f"job-{f % 7}")) for f in range(n))
    assert _within(hits, n, ppm / trust.PPM), hits


@pytest.mark.parametrize("cv", [10, 11, 20, 100])
def test_a_node_is_trusted_with_probability_one_minus_one_over_cv(cv: int) -> None:
    n = 20_000
    hits = sum(trust.trusted(cv, "job", f // 1000, f, 1, f"node-{f % 13}") for f in range(n))
    assert _within(hits, n, 1 - 1 / cv), hits


def test_draws_are_independent_of_each_other() -> None:
    """Whether a node is trusted says nothing about whether the fragment is spot-checked: the
    joint frequency is the product of the rates."""
    n = 20_000
    both = sum(trust.trusted(10, "j", 1, f, 1, "n") and trust.spot_checked(100_000, _draw(f))
               for f in range(n))
    assert _within(both, n, 0.9 * 0.1), both


def test_a_new_attempt_or_node_draws_again() -> None:
    """A primary moved to another node (or tried again) is decided afresh, not copied."""
    same_attempt = [trust.trusted(10, "j", 1, f, 1, "a") for f in range(2000)]
    other_node = [trust.trusted(10, "j", 1, f, 1, "b") for f in range(2000)]
    assert same_attempt != other_node


def test_the_node_cannot_know_whether_its_answer_is_checked() -> None:
    """The spot-check hangs on the manager's signature over the answer: the same answers under
    another manager's key, or other answers under the same key, are checked on other fragments
    (about half of them differ at a 50 % rate), and nothing the node knows decides it."""
    other = Ed25519PrivateKey.generate()
    mine = [trust.spot_checked(500_000, _draw(f)) for f in range(2000)]
    theirs = [trust.spot_checked(500_000, _draw(f, key=other)) for f in range(2000)]
    lie = [trust.spot_checked(500_000, _draw(f, out=b"\x22" * 32)) for f in range(2000)]
    assert _within(sum(a != b for a, b in zip(mine, theirs, strict=True)), 2000, 0.5)
    assert _within(sum(a != b for a, b in zip(mine, lie, strict=True)), 2000, 0.5)
    # the transcript binds every field the node could vary
    base = trust.spot_transcript("j", 3, 0, 1, "n1", b"\x11" * 32)
    assert len({base, trust.spot_transcript("j", 3, 0, 2, "n1", b"\x11" * 32),
                trust.spot_transcript("j", 3, 0, 1, "n2", b"\x11" * 32),
                trust.spot_transcript("j", 4, 0, 1, "n1", b"\x11" * 32),
                trust.spot_transcript("k", 3, 0, 1, "n1", b"\x11" * 32)}) == 5


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(nodes, st.integers(1, trust.CV_CAP)), st.lists(nodes, max_size=20),
       st.lists(nodes, max_size=5))
def test_the_counter_rules(before, valid, invalid) -> None:
    """Any invalid result resets a node (its entry removed: 0); otherwise it grows by its valid
    results, capped; nodes with neither are unchanged."""
    after = trust.update(before, valid, invalid)
    for node in {*before, *valid, *invalid}:
        if node in invalid:
            assert node not in after
        elif node in valid:
            assert after[node] == min(trust.CV_CAP, before.get(node, 0) + valid.count(node))
        else:
            assert after.get(node) == before.get(node)
    assert all(v > 0 for v in after.values())


def test_consecutive_means_consecutive() -> None:
    cvs: dict[str, int] = {}
    for _ in range(12):
        cvs = trust.update(cvs, ["a", "b"], [])
    assert cvs == {"a": 12, "b": 12}
    cvs = trust.update(cvs, ["a", "a", "b"], ["a"])  # valid and invalid in one job: reset
    assert cvs == {"b": 13}
    assert trust.update({"a": trust.CV_CAP}, ["a"], []) == {"a": trust.CV_CAP}


def test_the_counters_are_bounded() -> None:
    full = {f"n{i}": 1 for i in range(trust.MAX_TRUST_NODES)}
    after = trust.update(full, ["newcomer", "n0"], [])
    assert "newcomer" not in after and after["n0"] == 2 and len(after) == trust.MAX_TRUST_NODES
    after = trust.update(full, ["newcomer"], ["n1"])  # a reset frees a place
    assert "newcomer" in after and "n1" not in after


@pytest.mark.parametrize("text,ppm", [("0", 0), ("0.1", 100_000), ("1", trust.PPM), (0.05, 50_000),
                                      ("0.000001", 1), (1, trust.PPM)])
def test_rates_parse_to_ppm(text, ppm) -> None:
    assert trust.rate_ppm(text) == ppm


@pytest.mark.parametrize("text,why", [("1.5", "outside 0..1"), (-0.1, "outside 0..1"),
                                      ("0.0000001", "six decimal places"), ("x", "not a number"),
                                      ("nan", "outside"), (float("inf"), "outside")])
def test_bad_rates_are_named(text, why) -> None:
    with pytest.raises(ValueError, match=why):
        trust.rate_ppm(text)
    with pytest.raises(ValueError, match="outside"):
        trust.spot_checked(trust.PPM + 1, _draw(0))
