"""The simulated network: per-link latency, bandwidth, loss, duplication, reordering, partitions.

Every random draw comes from the one ``random.Random`` handed in by the world (derived from the
master seed), in event order, so a run replays exactly.

Latency model: one-way delay = region base × uniform(0.8, 1.2) + a heavy tail (with
probability ``tail_p`` add an exponential with mean ``tail_mean_s``) + serialisation
(size / bandwidth). There is no queueing model: links are independent and never congest,
which is optimistic for bursts and is stated in docs/simulator.md.
"""

from __future__ import annotations

import dataclasses
import random

# One-way base latency between regions, milliseconds (a coarse picture of public-cloud RTT/2:
# us-east, us-west, eu-west, ap-southeast).
WAN_REGIONS = ("us-east", "us-west", "eu-west", "ap-southeast")
WAN_BASE_MS = (
    (1.0, 32.0, 38.0, 105.0),
    (32.0, 1.0, 70.0, 80.0),
    (38.0, 70.0, 1.0, 85.0),
    (105.0, 80.0, 85.0, 1.0),
)


@dataclasses.dataclass(frozen=True, slots=True)
class LinkProfile:
    """Link parameters of a simulated world (all links share them)."""

    regions: int  # nodes are assigned round-robin to this many regions
    base_ms: tuple[tuple[float, ...], ...]
    bandwidth_bytes_per_s: float
    tail_p: float  # probability of a delay spike
    tail_mean_s: float  # mean of the exponential spike

    @classmethod
    def lan(cls) -> LinkProfile:
        # 0.25 ms one way, 1 Gbit/s, 1% of packets hit a ~2 ms spike (busy switch / host).
        return cls(1, ((0.25,),), 125e6, 0.01, 0.002)

    @classmethod
    def wan(cls) -> LinkProfile:
        # Four regions, 100 Mbit/s per flow, 1% spikes of ~20 ms.
        return cls(len(WAN_REGIONS), WAN_BASE_MS, 12.5e6, 0.01, 0.020)


class Network:
    """Decides, for one send, whether and when each copy arrives.

    ``part[i]`` is node i's partition group (0 when healed); ``bridge[i]`` lets a node reach
    every group (the "bridge node" partition shape).
    """

    __slots__ = ("_base_s", "_bw", "_rng", "_tail_mean", "_tail_p", "bridge", "duplicate",
                 "loss", "part", "partitioned", "region", "reorder", "reorder_s")

    def __init__(self, n: int, profile: LinkProfile, rng: random.Random, *, loss: float = 0.0,
                 duplicate: float = 0.0, reorder: float = 0.0) -> None:
        self._rng = rng
        self._base_s = [[ms / 1000.0 for ms in row] for row in profile.base_ms]
        self._bw = profile.bandwidth_bytes_per_s
        self._tail_p = profile.tail_p
        self._tail_mean = profile.tail_mean_s
        self.region = [i % profile.regions for i in range(n)]
        self.part = [0] * n
        self.bridge = [False] * n
        self.partitioned = False
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_s = 0.010  # a reordered packet is held back up to this long

    def grow(self, n: int, regions: int) -> None:
        while len(self.region) < n:
            self.region.append(len(self.region) % regions)
            self.part.append(0)
            self.bridge.append(False)

    def connected(self, a: int, b: int) -> bool:
        return not self.partitioned or self.part[a] == self.part[b] or self.bridge[a] or \
            self.bridge[b]

    def delays(self, src: int, dst: int, size: int) -> tuple[float, ...]:
        """Arrival delays of the copies of one packet: () if lost, two if duplicated."""
        if self.partitioned and self.part[src] != self.part[dst] and not (
                self.bridge[src] or self.bridge[dst]):
            return ()
        rnd = self._rng.random
        if self.loss and rnd() < self.loss:
            return ()
        d = self._base_s[self.region[src]][self.region[dst]] * (0.8 + 0.4 * rnd()) + size / self._bw
        if rnd() < self._tail_p:
            d += self._rng.expovariate(1.0 / self._tail_mean)
        if self.reorder and rnd() < self.reorder:
            d += rnd() * self.reorder_s
        if self.duplicate and rnd() < self.duplicate:
            return (d, d + rnd() * self.reorder_s)
        return (d,)

    # ------------------------------------------------------------------ partitions

    def heal(self) -> None:
        self.partitioned = False
        for i in range(len(self.part)):
            self.part[i] = 0
            self.bridge[i] = False

    def split(self, groups: list[int], bridges: tuple[int, ...] = ()) -> None:
        self.part[:] = groups
        for b in bridges:
            self.bridge[b] = True
        self.partitioned = True
