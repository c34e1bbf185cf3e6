"""What the node counts and times as it goes: counters by reason, and duration histograms.

Every remote-protocol error is counted in :class:`Counters` under ``(event, reason)``;
``status --json`` shows them. :class:`Timings` keeps the durations (attestation, Raft commit,
fragment runs, scheduling, loop stalls) in fixed buckets. ``node/telemetry`` exports both to
Prometheus by reading them at a scrape.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
from typing import Any


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: collections.Counter[tuple[str, str]] = collections.Counter()

    def inc(self, event: str, reason: str = "", n: int = 1) -> None:
        with self._lock:
            self._c[(event, reason)] += n

    def get(self, event: str, reason: str | None = None) -> int:
        with self._lock:
            if reason is not None:
                return self._c[(event, reason)]
            return sum(v for (e, _), v in self._c.items() if e == event)

    def items(self) -> list[tuple[tuple[str, str], int]]:
        """A consistent copy of every ``((event, reason), count)``."""
        with self._lock:
            return list(self._c.items())

    def to_json(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (event, reason), v in sorted(self._c.items()):
                out.setdefault(event, {})[reason or "-"] = v
        return out


# Upper bounds (seconds) of the histogram buckets, by the kind of duration measured. Fixed
# and few: a Prometheus histogram costs one series per bucket.
BUCKETS: dict[str, tuple[float, ...]] = {
    # a network exchange: an attestation, a Raft commit
    "exchange": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    # CPU work inside the node: a scheduling decision
    "compute": (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    # a fragment's run in the sandbox
    "run": (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
    # a stall of the node's own event loop (node/loop_health.py)
    "stall": (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
}


class Timings:
    """Durations the node measured, by ``(name, label)``, in the fixed buckets of
    :data:`BUCKETS`: Prometheus histograms kept by the node whether or not it exports them
    (``node/telemetry`` reads them at a scrape; nothing is computed then).

    ``label`` is one of a small fixed set chosen by the caller (``"first"``/``"reattest"``),
    never a peer or job id. Thread-safe: the exporter reads from its own thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (name, label) -> [bucket kind, per-bucket counts (not cumulative), sum, count]
        self._h: dict[tuple[str, str], list[Any]] = {}

    def observe(self, name: str, kind: str, seconds: float, label: str = "") -> None:
        bounds = BUCKETS[kind]
        i = bisect.bisect_left(bounds, seconds)
        with self._lock:
            h = self._h.get((name, label))
            if h is None:
                h = self._h[(name, label)] = [kind, [0] * (len(bounds) + 1), 0.0, 0]
            h[1][i] += 1
            h[2] += seconds
            h[3] += 1

    def snapshot(self) -> dict[tuple[str, str], tuple[tuple[float, ...], list[int], float, int]]:
        """``(name, label) -> (bucket bounds, cumulative counts incl. +Inf, sum, count)``."""
        out = {}
        with self._lock:
            items = [(k, h[0], list(h[1]), h[2], h[3]) for k, h in self._h.items()]
        for key, kind, counts, total, n in items:
            out[key] = (BUCKETS[kind], list(itertools.accumulate(counts)), total, n)
        return out

    def count(self, name: str, label: str | None = None) -> int:
        with self._lock:
            return sum(h[3] for (n, lab), h in self._h.items()
                       if n == name and (label is None or lab == label))
