"""Pure placement: anti-affinity, eligibility, determinism, clear errors."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards.placement import Candidate, PlacementError, choose_holders


def cand(i: int, provider: str, region: str, score: float = 0.9, attested: bool = True, free: int = 10**9):
    return Candidate(f"peer{i}", score, provider, region, attested, free)


def test_spreads_over_providers_then_regions() -> None:
    cs = [cand(i, f"prov{i % 3}", f"reg{i % 4}", 0.5 + i / 100) for i in range(30)]
    chosen = choose_holders(cs, 5, min_score=0.5, need_bytes=1, seed=b"obj")
    by_id = {c.peer_id: c for c in cs}
    providers = Counter(by_id[p].provider for p in chosen)
    assert len(set(chosen)) == 5 and len(providers) == 3 and max(providers.values()) <= 2
    assert len({by_id[p].region for p in chosen}) >= 4


def test_replacement_spreads_away_from_the_holders_that_stay() -> None:
    # the staying holders are on providers a and b; the better-scored candidate on a loses
    cs = [cand(0, "a", "r1", score=0.99), cand(1, "c", "r1", score=0.6), cand(2, "b", "r2", score=0.9)]
    taken = [("a", "r0"), ("b", "r2")]
    assert choose_holders(cs, 1, min_score=0, need_bytes=0, seed=b"s", taken=taken) == ("peer1",)
    assert choose_holders(cs, 1, min_score=0, need_bytes=0, seed=b"s") == ("peer0",)


def test_prefers_score_among_equals_and_is_deterministic() -> None:
    cs = [cand(i, f"p{i}", f"r{i}", score=i / 10) for i in range(10)]
    assert choose_holders(cs, 3, min_score=0, need_bytes=0, seed=b"a") == (
        "peer9",
        "peer8",
        "peer7",
    )
    ties = [cand(i, f"p{i}", f"r{i}") for i in range(20)]
    runs = {choose_holders(ties, 3, min_score=0, need_bytes=0, seed=s) for s in (b"1", b"2", b"3", b"4")}
    assert len(runs) > 1  # the seed spreads load among equal candidates
    assert choose_holders(ties, 3, min_score=0, need_bytes=0, seed=b"1") == choose_holders(
        list(reversed(ties)), 3, min_score=0, need_bytes=0, seed=b"1"
    )


def test_error_names_the_reasons() -> None:
    cs = [
        cand(0, "a", "x"),
        cand(1, "b", "x", attested=False),
        cand(2, "c", "x", score=0.1),
        cand(3, "d", "x", free=5),
        cand(0, "a", "x"),
    ]
    with pytest.raises(PlacementError) as err:
        choose_holders(cs, 3, min_score=0.5, need_bytes=100, seed=b"")
    text = str(err.value)
    assert "need 3" in text and "have 1" in text
    for reason in ("not attested", "below min score", "bytes free", "duplicate"):
        assert reason in text
    assert err.value.eligible == 1
    with pytest.raises(PlacementError, match="no candidates"):
        choose_holders([], 1, min_score=0, need_bytes=0, seed=b"")


candidates = st.lists(
    st.builds(
        Candidate,
        peer_id=st.text("abcdefgh", min_size=1, max_size=3),
        score=st.floats(0, 1),
        provider=st.sampled_from("PQRS"),
        region=st.sampled_from("wxyz"),
        attested=st.booleans(),
        free_bytes=st.integers(0, 100),
    ),
    max_size=40,
    unique_by=lambda c: c.peer_id,
)


@given(cs=candidates, n=st.integers(1, 8), seed=st.binary(max_size=8))
@settings(deadline=None, max_examples=200)
def test_placement_properties(cs: list[Candidate], n: int, seed: bytes) -> None:
    eligible = {c.peer_id: c for c in cs if c.attested and c.score >= 0.3 and c.free_bytes >= 50}
    try:
        chosen = choose_holders(cs, n, min_score=0.3, need_bytes=50, seed=seed)
    except PlacementError as err:
        assert len(eligible) < n and err.eligible == len(eligible)
        return
    assert len(chosen) == n == len(set(chosen)) and set(chosen) <= set(eligible)
    providers = Counter(eligible[p].provider for p in chosen)
    assert len(providers) == min(n, len({c.provider for c in eligible.values()}))
    # no provider is used twice while an eligible provider is still unused
    if n <= len({c.provider for c in eligible.values()}):
        assert max(providers.values()) == 1
