"""Share regeneration without reconstruction, and streamed fragment regeneration."""

from __future__ import annotations

import io
import os
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards import resharing as rs
from node.shards.crypto import FragmentCorrupt
from node.shards.gf256 import (
    KeyShare,
    ShareError,
    combine_shares,
    interpolate_at,
    split_secret,
    xor_bytes,
)

from .helpers import flip, seal_bytes
from .test_gf256 import chi_square


def run_protocol(
    shares: list[KeyShare],
    helpers_x: list[int],
    target_x: int,
    session: bytes = b"s" * 16,
    seed_source=rs.new_mask_seed,
) -> tuple[KeyShare, dict[int, bytes]]:
    """All parties in one process, each seeing only what it would see on the wire."""
    by_x = {s.x: s for s in shares}
    seeds: dict[int, dict[int, bytes]] = {x: {} for x in helpers_x}
    for a in helpers_x:  # helper a sends a seed to every helper b > a
        for b in helpers_x:
            if a < b:
                seed = seed_source()
                seeds[a][b] = seed
                seeds[b][a] = seed
    contributions = {
        x: rs.build_contribution(
            by_x[x], helpers_x, target_x, rs.helper_mask(x, seeds[x], session, helpers_x)
        )
        for x in helpers_x
    }
    return rs.combine_contributions(contributions, helpers_x, target_x), contributions


@given(
    kn=st.integers(1, 7).flatmap(lambda k: st.tuples(st.just(k), st.integers(k + 1, 10))),
    secret=st.binary(min_size=32, max_size=32),
    draw=st.data(),
)
@settings(deadline=None, max_examples=60)
def test_regenerated_share_is_the_lost_one_and_works_with_the_others(kn, secret, draw) -> None:
    k, n = kn
    shares = split_secret(secret, k, n)
    lost = draw.draw(st.integers(1, n))
    survivors = [s for s in shares if s.x != lost]
    helpers = sorted(draw.draw(st.permutations([s.x for s in survivors]))[:k])
    new, _ = run_protocol(shares, helpers, lost)
    assert new.matches(shares[lost - 1])  # what reconstruction would give, byte for byte
    others = draw.draw(st.permutations(survivors))[: k - 1]
    assert combine_shares([new, *others], k) == secret


@given(k=st.integers(1, 6), secret=st.binary(min_size=32, max_size=32), target=st.integers(10, 255))
@settings(deadline=None, max_examples=30)
def test_a_share_at_a_fresh_point_extends_the_same_polynomial(k: int, secret: bytes, target: int) -> None:
    shares = split_secret(secret, k, 9)
    new, _ = run_protocol(shares, [s.x for s in shares[:k]], target)
    assert new.value == interpolate_at(shares[-k:], target)
    assert combine_shares([new, *shares[1:k]], k) == secret


def test_masks_cancel_and_contributions_hide_the_terms() -> None:
    helpers = [2, 5, 7, 9]
    seeds = {(a, b): rs.new_mask_seed() for a in helpers for b in helpers if a < b}
    masks = []
    for x in helpers:
        mine = {o: seeds[(min(x, o), max(x, o))] for o in helpers if o != x}
        masks.append(rs.helper_mask(x, mine, b"session-0000000", helpers))
    acc = bytes(32)
    for mk in masks:
        acc = xor_bytes(acc, mk)
        assert mk != bytes(32)
    assert acc == bytes(32)
    # the same seeds in another session give unrelated masks (no reuse across sessions)
    assert rs.pairwise_mask(seeds[(2, 5)], b"a", 2, 5) != rs.pairwise_mask(seeds[(2, 5)], b"b", 2, 5)
    assert rs.pairwise_mask(seeds[(2, 5)], b"a", 2, 5) == rs.pairwise_mask(seeds[(2, 5)], b"a", 5, 2)


def test_a_single_contribution_looks_uniform_to_the_new_holder() -> None:
    """Secret and shares fixed; across sessions, helper 1's contribution is uniform (chi-square)
    even though λ_1·s_1 is the same every time: the mask hides it."""
    rng = random.Random(7)
    shares = split_secret(bytes(32), 3, 5, rand=rng.randbytes)
    counts: Counter[int] = Counter()
    trials = 1500
    for t in range(trials):
        _, contributions = run_protocol(
            shares,
            [1, 2, 3],
            4,
            session=t.to_bytes(16, "big"),
            seed_source=lambda: rng.randbytes(32),
        )
        counts.update(contributions[1])
    assert chi_square(counts, trials * 32) < 400


def test_protocol_misuse_is_refused() -> None:
    shares = split_secret(os.urandom(32), 3, 5)
    with pytest.raises(ShareError):
        run_protocol(shares, [1, 2, 4], 4)  # target among helpers
    with pytest.raises(ShareError):
        rs.combine_contributions({1: bytes(32), 2: bytes(32)}, [1, 2, 3], 4)
    with pytest.raises(ShareError):
        rs.helper_mask(1, {2: rs.new_mask_seed()}, b"s", [1, 2, 3])
    with pytest.raises(ShareError):
        rs.build_contribution(shares[4], [1, 2, 3], 4, bytes(32))
    with pytest.raises(ShareError):
        rs.lagrange_coefficient([1, 1], 1, 3)


@given(
    size=st.integers(0, 2000),
    kn=st.integers(1, 5).flatmap(lambda k: st.tuples(st.just(k), st.integers(k + 1, 7))),
    draw=st.data(),
)
@settings(deadline=None, max_examples=60)
def test_fragment_regeneration_from_any_k_others(size: int, kn, draw) -> None:
    k, n = kn
    sealed, fragments = seal_bytes(os.urandom(size), k, n, 100)
    target = draw.draw(st.integers(0, n - 1))
    sources = draw.draw(st.permutations([i for i in range(n) if i != target]))[:k]
    out = io.BytesIO()
    digest = rs.regenerate_fragment(
        sealed.layout,
        {i: io.BytesIO(fragments[i]) for i in sources},
        target,
        out,
        sealed.params.fragment_hashes,
    )
    assert out.getvalue() == fragments[target] and digest == sealed.params.fragment_hashes[target]


def test_fragment_regeneration_detects_a_bad_source() -> None:
    sealed, fragments = seal_bytes(os.urandom(500), 2, 4, 100)
    for pos in range(0, len(fragments[1]), 7):
        bad = flip(fragments[1], pos)
        with pytest.raises(FragmentCorrupt):
            rs.regenerate_fragment(
                sealed.layout,
                {1: io.BytesIO(bad), 3: io.BytesIO(fragments[3])},
                0,
                io.BytesIO(),
                sealed.params.fragment_hashes,
            )
    with pytest.raises(ValueError):
        rs.regenerate_fragment(sealed.layout, {1: io.BytesIO(fragments[1])}, 0, io.BytesIO())


@given(
    kn=st.integers(1, 6).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 9))),
    participants=st.integers(1, 4),
    secret=st.binary(min_size=32, max_size=32),
    draw=st.data(),
)
@settings(deadline=None, max_examples=50)
def test_refresh_keeps_the_key_and_retires_old_shares(kn, participants, secret, draw) -> None:
    k, n = kn
    old = split_secret(secret, k, n)
    xs = [s.x for s in old]
    rounds = [rs.refresh_deltas(xs, k) for _ in range(participants)]
    new = [rs.apply_refresh(s, [r[s.x] for r in rounds]) for s in old]
    subset = draw.draw(st.permutations(new))[:k]
    assert combine_shares(subset, k) == secret
    if k >= 2:
        assert all(not a.matches(b) for a, b in zip(old, new, strict=True))
        # an old share captured before the refresh does not combine with new ones
        mixed = [old[0], *[s for s in new if s.x != 1][: k - 1]]
        assert combine_shares(mixed, k) != secret


def test_refresh_misuse() -> None:
    with pytest.raises(ShareError):
        rs.refresh_deltas([1, 1, 2], 2)
    with pytest.raises(ShareError):
        rs.refresh_deltas([1, 2], 3)
    with pytest.raises(ShareError):
        rs.refresh_deltas([0, 2], 1)
