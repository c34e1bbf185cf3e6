"""GF(2^8) field axioms and Shamir sharing: correctness, perfect secrecy, uniformity."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards import gf256
from node.shards.gf256 import (
    KeyShare,
    ShareError,
    combine_shares,
    interpolate_at,
    mul,
    split_secret,
)

elements = st.integers(0, 255)
nonzero = st.integers(1, 255)


def reference_mul(a: int, b: int) -> int:
    """Carry-less multiply then reduce mod x^8+x^4+x^3+x+1: the textbook definition."""
    p = 0
    for i in range(8):
        if (b >> i) & 1:
            p ^= a << i
    for bit in range(14, 7, -1):
        if (p >> bit) & 1:
            p ^= 0x11B << (bit - 8)
    return p


def test_mul_matches_reference_exhaustively() -> None:
    for a in range(256):
        for b in range(256):
            assert mul(a, b) == reference_mul(a, b)


def test_every_nonzero_element_has_its_inverse() -> None:
    for a in range(1, 256):
        assert mul(a, gf256.inv(a)) == 1
    with pytest.raises(ZeroDivisionError):
        gf256.inv(0)


def test_multiplicative_group_is_cyclic_of_order_255() -> None:
    # 3 generates GF(2^8)* for the AES polynomial
    assert len({gf256.pow_(3, e) for e in range(255)}) == 255


@given(elements, elements, elements)
def test_field_axioms(a: int, b: int, c: int) -> None:
    assert gf256.add(a, b) == gf256.add(b, a)
    assert gf256.add(gf256.add(a, b), c) == gf256.add(a, gf256.add(b, c))
    assert mul(a, b) == mul(b, a)
    assert mul(mul(a, b), c) == mul(a, mul(b, c))
    assert mul(a, gf256.add(b, c)) == gf256.add(mul(a, b), mul(a, c))
    assert gf256.add(a, 0) == a and mul(a, 1) == a and mul(a, 0) == 0
    assert gf256.add(a, a) == 0  # characteristic 2: every element is its own negative


@given(elements, nonzero)
def test_division_inverts_multiplication(a: int, b: int) -> None:
    assert gf256.div(mul(a, b), b) == a


@given(
    secret=st.binary(min_size=1, max_size=40),
    kn=st.integers(1, 8).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 10))),
    data=st.data(),
)
@settings(deadline=None, max_examples=60)
def test_any_k_shares_recover_the_secret(secret: bytes, kn: tuple[int, int], data: st.DataObject) -> None:
    k, n = kn
    shares = split_secret(secret, k, n)
    assert [s.x for s in shares] == list(range(1, n + 1))
    subset = data.draw(st.permutations(shares).map(lambda p: p[:k]))
    assert combine_shares(subset, k) == secret
    if k > 1:
        with pytest.raises(ShareError):
            combine_shares(subset[: k - 1], k)


def test_k_minus_1_shares_fit_every_secret_exhaustively_k2() -> None:
    """k=2, one-byte secrets, every evaluation point x: each (secret, observed share) pair is
    produced by exactly one polynomial s + a1·x, so one share says nothing about s."""
    xor_tables = [bytes(v ^ s for v in range(256)) for s in range(256)]
    for x in range(1, 256):
        row = bytes(mul(a1, x) for a1 in range(256))  # a1 ↦ a1·x, all 256 polynomials
        for s in range(256):
            observed = row.translate(xor_tables[s])  # f(x) = s ⊕ a1·x for every a1
            # 256 polynomials, 256 distinct observations: each share value exactly once
            assert len(set(observed)) == 256


@pytest.mark.parametrize("xs", [(1, 2), (1, 255), (7, 200), (3, 4)])
def test_k_minus_1_shares_fit_every_secret_exhaustively_k3(xs: tuple[int, int]) -> None:
    """k=3: for every secret s the map (a1, a2) ↦ (f(x1), f(x2)) hits every pair of observed
    shares exactly once. It is y = (s, s) ⊕ L(a1, a2) with L linear, so we check that L is a
    bijection on all 65536 inputs: then every (s, y1, y2) has exactly one polynomial."""
    x1, x2 = xs
    l1 = [(mul(a, x1), mul(a, mul(x1, x1))) for a in range(256)]
    l2 = [(mul(a, x2), mul(a, mul(x2, x2))) for a in range(256)]
    images = set()
    for a1 in range(256):
        p1, q1 = l1[a1][0], l2[a1][0]
        for a2 in range(256):
            images.add(((p1 ^ l1[a2][1]) << 8) | (q1 ^ l2[a2][1]))
    assert len(images) == 65536


def test_k_minus_1_shares_fit_every_secret_full_enumeration_k3() -> None:
    """All 2^24 degree-2 polynomials with one-byte coefficients, counted per (s, y1, y2)."""
    table = np.array([[mul(a, b) for b in range(256)] for a in range(256)], dtype=np.uint8)
    x1, x2 = 5, 0x53
    s, a1, a2 = (
        g.ravel()
        for g in np.meshgrid(
            np.arange(256, dtype=np.uint8),
            np.arange(256, dtype=np.uint8),
            np.arange(256, dtype=np.uint8),
            indexing="ij",
        )
    )
    y1 = s ^ table[a1, x1] ^ table[a2, mul(x1, x1)]
    y2 = s ^ table[a1, x2] ^ table[a2, mul(x2, x2)]
    key = (s.astype(np.int64) << 16) | (y1.astype(np.int64) << 8) | y2.astype(np.int64)
    counts = np.bincount(key, minlength=1 << 24)
    assert counts.min() == 1 and counts.max() == 1


def chi_square(counts: Counter[int], total: int) -> float:
    expected = total / 256
    return sum((counts.get(v, 0) - expected) ** 2 / expected for v in range(256))


def test_a_single_share_looks_uniform() -> None:
    """Chi-square over 256 byte values (255 d.o.f.: mean 255, sd ~22.6). The secret is fixed
    and maximally structured (all zero); the randomness is seeded so the test is replayable.
    Threshold 400 is ~6 sd: generous, and a biased share would be far above it."""
    rng = random.Random(20261124)
    trials = 2000
    per_index: list[Counter[int]] = [Counter() for _ in range(5)]
    for _ in range(trials):
        for s in split_secret(bytes(32), 3, 5, rand=rng.randbytes):
            per_index[s.x - 1].update(s.value)
    for counts in per_index:
        assert chi_square(counts, trials * 32) < 400
    # and the test has teeth: a biased source is caught
    biased: Counter[int] = Counter()
    for _ in range(trials):
        biased.update(bytes(min(b, 200) for b in rng.randbytes(32)))
    assert chi_square(biased, trials * 32) > 400


def test_interpolating_at_a_share_point_gives_that_share() -> None:
    shares = split_secret(b"0123456789abcdef0123456789abcdef", 3, 6)
    for subset in itertools.combinations(shares, 3):
        for s in shares:
            assert interpolate_at(subset, s.x) == s.value


def test_bad_parameters_and_redaction() -> None:
    with pytest.raises(ShareError):
        split_secret(b"x", 3, 2)
    with pytest.raises(ShareError):
        split_secret(b"x", 1, 256)
    with pytest.raises(ShareError):
        split_secret(b"", 1, 1)
    with pytest.raises(ShareError):
        interpolate_at([KeyShare(1, b"ab"), KeyShare(1, b"cd")], 0)
    s = KeyShare(3, bytes.fromhex("deadbeef" * 8))
    assert "dead" not in repr(s) and "dead" not in str(s)
    assert KeyShare.from_bytes(s.to_bytes()).matches(s)
    assert KeyShare.from_bytes(s.to_bytes()) == s and KeyShare(3, bytes(32)) != s
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(ShareError):
        KeyShare.from_bytes(b"\x00abc")
