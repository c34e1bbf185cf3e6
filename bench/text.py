"""Generated text for the benchmarks' word-count workloads (deterministic per seed)."""

from __future__ import annotations

import random


def words(n: int, *, seed: int = 11, vocabulary: int = 2000) -> bytes:
    """``n`` bytes of random words from a ``vocabulary``-word lexicon, ~10 words a line, ending
    in a newline when ``n`` > 0."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 10)))
             for _ in range(vocabulary)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(vocab).encode()
        out += b"\n" if rng.random() < 0.1 else b" "
    return bytes(out[:n - 1]) + b"\n" if n else b""
