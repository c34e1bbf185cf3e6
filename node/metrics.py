"""Counters of what the node refused, dropped or failed at, by reason.

Every remote-protocol error is counted here under ``(event, reason)``; ``status --json`` shows
them, and the operations issue exports them to Prometheus.
"""

from __future__ import annotations

import collections
import threading


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

    def to_json(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (event, reason), v in sorted(self._c.items()):
                out.setdefault(event, {})[reason or "-"] = v
        return out
