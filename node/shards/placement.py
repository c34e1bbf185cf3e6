"""Pure shard placement: n distinct holders with provider, then region, anti-affinity.

Theory of operation
-------------------
Eligible candidates are attested, score at least ``min_score`` and have ``need_bytes`` free.
Among them we pick n greedily, one index at a time, each time taking the candidate that
minimises, in this order:

1. how many already chosen holders share its provider (spread over providers first: a single
   provider's outage or subpoena then touches as few shards as possible);
2. how many share its region;
3. minus its score (better-scored nodes first);
4. SHA-256(seed ‖ peer id) (a deterministic, seed-dependent tie-break, so equal candidates are
   not always the same few nodes).

The greedy order yields the maximal number of distinct providers (min(n, #providers)) with
counts differing by at most one; region spread is best-effort within that. Same inputs and seed
give the same placement: no I/O, no clock, no global random. Fewer than n eligible is a
:class:`PlacementError` that says how many were refused and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Iterable


class PlacementError(Exception):
    """Not enough eligible candidates; ``refused`` counts the reasons."""

    def __init__(self, needed: int, eligible: int, refused: dict[str, int]) -> None:
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(refused.items())) or "no candidates"
        super().__init__(f"need {needed} distinct eligible holders, have {eligible} ({why})")
        self.needed = needed
        self.eligible = eligible
        self.refused = dict(refused)


@dataclasses.dataclass(frozen=True)
class Candidate:
    peer_id: str
    score: float
    provider: str
    region: str
    attested: bool
    free_bytes: int


def _tiebreak(seed: bytes, peer_id: str) -> bytes:
    return hashlib.sha256(len(seed).to_bytes(2, "big") + seed + peer_id.encode()).digest()


def choose_holders(
    candidates: Iterable[Candidate],
    n: int,
    *,
    min_score: float,
    need_bytes: int,
    seed: bytes,
    taken: Iterable[tuple[str, str]] = (),
) -> tuple[str, ...]:
    """Choose ``n`` distinct holders; element i is the holder of fragment i.

    Args:
        candidates: the known nodes (duplicated peer ids keep their best-scored entry).
        n: how many holders.
        min_score: lowest acceptable attestation score.
        need_bytes: free bytes each holder needs (the manifest's fragment size plus overhead).
        seed: tie-break seed (e.g. the object id), so placement is reproducible.
        taken: (provider, region) of holders that stay (a repair replacing one holder of a
            placement): the new holders spread away from them too.

    Raises:
        PlacementError: fewer than n eligible candidates.
        ValueError: n < 1.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    refused: Counter[str] = Counter()
    best: dict[str, Candidate] = {}
    for c in candidates:
        if not c.attested:
            refused["not attested"] += 1
        elif not math.isfinite(c.score) or c.score < min_score:
            refused[f"below min score {min_score}"] += 1
        elif c.free_bytes < need_bytes:
            refused[f"with less than {need_bytes} bytes free"] += 1
        elif c.peer_id in best:
            refused["duplicate peer id"] += 1
            if c.score > best[c.peer_id].score:
                best[c.peer_id] = c
        else:
            best[c.peer_id] = c
    if len(best) < n:
        raise PlacementError(n, len(best), dict(refused))
    pool = {pid: (c, _tiebreak(seed, pid)) for pid, c in best.items()}
    providers: Counter[str] = Counter(p for p, _ in taken)
    regions: Counter[str] = Counter(r for _, r in taken)
    chosen: list[str] = []
    for _ in range(n):
        pid = min(
            pool,
            key=lambda p: (
                providers[pool[p][0].provider],
                regions[pool[p][0].region],
                -pool[p][0].score,
                pool[p][1],
            ),
        )
        c = pool.pop(pid)[0]
        providers[c.provider] += 1
        regions[c.region] += 1
        chosen.append(pid)
    return tuple(chosen)
