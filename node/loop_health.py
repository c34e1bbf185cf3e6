"""How late this node's own event loop runs, so that it does not blame peers for time it lost.

A node whose trio loop stalls (a large transfer's stream work, a host swapping or descheduling
the guest) sees every exchange it started during the stall run out of time. Without this it counts
those as its peers' missed re-attestations and lets their records lapse, then quarantines
healthy peers as unreachable: the failure is local, the blame lands on the others. This is
Lifeguard's local-health idea (the membership core's LHM, ``overlay/membership.py``), measured
directly: a task sleeps ``period_s`` and records how late it woke.

Two uses (``node/agent.py``):

* a re-attestation that timed out while the loop lost at least half of the exchange's time
  budget is *deferred* (retried early, not counted as a miss);
* a peer's record is expired only after its expiry plus the time the loop lost since the peer
  last attested, at most one record lifetime more.

Neither touches a verdict: evidence that fails verification still quarantines (and, through the
manager, revokes) at once. The stall only ever comes from this node's own measurements.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import trio

# Lateness any sleep has on an idle host (timer slack, one scheduling pass): not a stall.
NOISE_S = 0.01


class LoopHealth:
    """Time the local loop lost, in ``bucket_s`` buckets of ``clock`` time over ``horizon_s``.

    ``stalled_s(since)`` is the loop time lost in stalls observed since ``since`` (to a bucket's
    precision), plus the stall going on now if the measuring task is overdue: whichever task
    runs first after a stall sees it. Memory is bounded: at most ``horizon_s / bucket_s``
    buckets are kept, the oldest dropped first.
    """

    def __init__(self, *, clock: Callable[[], float], period_s: float = 0.1,
                 bucket_s: float = 0.5, horizon_s: float = 900.0,
                 on_stall: Callable[[float], None] | None = None) -> None:
        if period_s <= 0 or bucket_s <= 0 or horizon_s < bucket_s:
            raise ValueError("period_s and bucket_s must be positive, horizon_s at least bucket_s")
        self.period_s = period_s
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self._clock = clock
        self._on_stall = on_stall  # called with each stall's lost seconds (the metrics' histogram)
        self._buckets: collections.deque[list[float]] = collections.deque(
            maxlen=int(horizon_s / bucket_s) + 1)
        self._wake_due: float | None = None  # trio time the measuring task should wake at
        self.worst_s = 0.0
        self.total_s = 0.0

    def observe(self, at: float, lag_s: float) -> None:
        """A sleep ending at ``at`` (``clock`` time, non-decreasing) woke ``lag_s`` late."""
        lost = lag_s - NOISE_S
        if lost <= 0:
            return
        self.worst_s = max(self.worst_s, lost)
        self.total_s += lost
        if self._on_stall is not None:
            self._on_stall(lost)
        start = at - at % self.bucket_s
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += lost
        else:
            self._buckets.append([start, lost])
        while self._buckets and self._buckets[0][0] < at - self.horizon_s:
            self._buckets.popleft()

    def stalled_s(self, since: float) -> float:
        """Loop time lost in stalls observed at or after ``since``, and in the current one."""
        lost = 0.0
        if self._wake_due is not None:
            lost += max(0.0, trio.current_time() - self._wake_due - NOISE_S)
        for start, bucket_lost in reversed(self._buckets):
            if start + self.bucket_s <= since:
                break
            lost += bucket_lost
        return lost

    def status(self) -> dict[str, float]:
        return {"lost_last_60s": round(self.stalled_s(self._clock() - 60.0), 3),
                "worst_s": round(self.worst_s, 3), "total_s": round(self.total_s, 3)}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Measure until cancelled."""
        task_status.started()
        try:
            while True:
                self._wake_due = trio.current_time() + self.period_s
                await trio.sleep(self.period_s)
                lag = trio.current_time() - self._wake_due
                self._wake_due = None
                self.observe(self._clock(), lag)
        finally:
            self._wake_due = None
