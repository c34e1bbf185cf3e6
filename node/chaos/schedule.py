"""The nemesis's schedule: which fault, where, when and for how long, from one seed.

Theory of operation
-------------------
A run is a sequence of *windows*, Jepsen style: after a warm-up, one fault is active for a
while, then the federation gets a calm stretch to recover, then the next fault; the schedule
ends with a final calm of at least ``final_calm_s`` in which everything is healed, so that the
checkers can ask for recovery. One fault at a time keeps each finding attributable to its
fault, and the times to a new manager measurable.

Everything here is pure: :func:`generate` takes a seed and returns the same tuple of
:class:`Fault` every time (a ``random.Random`` seeded with it is the only randomness), so a
run is replayed by its seed. Targets are node indices or the symbolic ``"manager"``, which the
driver resolves when the fault starts (the history records whom it hit).

Fault kinds and their heals:

- ``partition`` (shape ``halves`` | ``majority`` | ``bridge`` | ``isolate`` |
  ``isolate-manager``): packets between groups are dropped; heal: the drops are removed.
- ``netem``: latency with jitter, loss, duplication, reordering on some nodes' links, or a
  ``tbf`` bandwidth cap; heal: the qdisc is removed.
- ``kill``: SIGKILL, restart with the same data dir at the end of the window.
- ``pause``: SIGSTOP, SIGCONT at the end of the window.
- ``skew``: the node's wall clock jumps by ``offset_s`` (libfaketime); heal: back to zero.
- ``disk``: the node's data dir (a small tmpfs) is filled; heal: the ballast is removed.
- ``attest``: the node's simulated TEE starts reporting debug; never healed: the federation
  must revoke the node, and the checkers hold it to that.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Any

FAULT_KINDS: tuple[str, ...] = ("partition", "netem", "kill", "pause", "skew", "disk", "attest", "slow")
SLOW_CPU_PCT: tuple[int, ...] = (5, 10, 25)  # a slow node's share of one CPU
# What `enclave-swarm chaos` plays when --faults is not given: everything but the one-way
# attestation failure.
DEFAULT_FAULTS: tuple[str, ...] = ("partition", "netem", "kill", "pause", "skew", "disk", "slow")
PARTITION_SHAPES: tuple[str, ...] = ("halves", "majority", "bridge", "isolate", "isolate-manager")
MANAGER = "manager"


class ScheduleError(ValueError):
    """Arguments that no schedule can satisfy (too short a run, unknown fault kind...)."""


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault window: ``kind`` active from ``start_s`` to ``end_s`` (run-relative seconds).

    ``params`` holds only JSON values (the verdict and the plot show them as they are):
    ``target`` (a node index or ``"manager"``), ``groups`` (partitions: lists of node indices;
    ``bridge`` for the shape of that name), ``shape``, ``nodes`` and ``qdisc`` settings (netem),
    ``offset_s`` (skew), ``cpu_pct`` (slow: the node's share of one CPU)."""

    kind: str
    start_s: float
    end_s: float
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_s": self.start_s, "end_s": self.end_s, "params": self.params}


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Shape of a schedule.

    Attributes:
        warmup_s: nothing happens before this (clients start, the federation settles).
        fault_s: (min, max) length of one fault window.
        calm_s: (min, max) healthy stretch after each fault.
        final_calm_s: everything healed for at least this long at the end.
        skew_s: (min, max) absolute clock offset of a skew fault.
        skew_window_min_s: the shortest skew window.
    """

    warmup_s: float = 10.0
    fault_s: tuple[float, float] = (8.0, 20.0)
    calm_s: tuple[float, float] = (8.0, 15.0)
    final_calm_s: float = 20.0
    skew_s: tuple[float, float] = (30.0, 300.0)
    # A skew restarts the node under libfaketime; on a loaded two-core machine a node takes up
    # to ~15 s to start, so a shorter window would hardly see the skewed node run.
    skew_window_min_s: float = 30.0

    def validate(self) -> None:
        for name, (lo, hi) in (("fault_s", self.fault_s), ("calm_s", self.calm_s), ("skew_s", self.skew_s)):
            if not 0 < lo <= hi:
                raise ScheduleError(f"{name}: need 0 < min <= max, got {lo}, {hi}")
        if self.warmup_s < 0 or self.final_calm_s < 0:
            raise ScheduleError("warmup_s and final_calm_s must be >= 0")


def partition_groups(shape: str, n: int, rng: random.Random) -> list[list[int]]:
    """Groups of node indices that cannot reach each other (a bridge node is in none).

    ``halves``: two groups of n//2 and the rest; ``majority``: a majority and the minority;
    ``bridge``: two halves plus one node that sees both (returned separately by the caller);
    ``isolate``: one node alone. ``isolate-manager`` is resolved by the driver (the manager
    alone), so its groups are empty here."""
    if n < 3:
        raise ScheduleError("partitions need at least 3 nodes")
    nodes = list(range(n))
    rng.shuffle(nodes)
    if shape == "halves":
        return [sorted(nodes[: n // 2]), sorted(nodes[n // 2:])]
    if shape == "majority":
        minority = rng.randint(1, (n - 1) // 2)
        return [sorted(nodes[minority:]), sorted(nodes[:minority])]
    if shape == "bridge":
        rest = nodes[1:]
        half = len(rest) // 2
        return [sorted(rest[:half]), sorted(rest[half:])]
    if shape == "isolate":
        return [sorted(nodes[1:]), [nodes[0]]]
    if shape == "isolate-manager":
        return []
    raise ScheduleError(f"unknown partition shape {shape!r}")


def _fault_params(kind: str, n: int, rng: random.Random, cfg: ScheduleConfig,
                  used_attest: set[int]) -> dict[str, Any]:
    if kind == "partition":
        shape = rng.choice(PARTITION_SHAPES)
        groups = partition_groups(shape, n, rng)
        params: dict[str, Any] = {"shape": shape, "groups": groups}
        if shape == "bridge":
            params["bridge"] = sorted(set(range(n)) - {i for g in groups for i in g})[0]
        if shape == "isolate-manager":
            params["target"] = MANAGER
        return params
    if kind == "netem":
        nodes = sorted(rng.sample(range(n), rng.randint(1, n)))
        if rng.random() < 0.25:
            return {"nodes": nodes, "qdisc": "tbf", "rate_kbit": rng.choice((256, 512, 1024, 4096))}
        return {"nodes": nodes, "qdisc": "netem", "delay_ms": rng.choice((20, 50, 100, 200)),
                "jitter_ms": rng.choice((0, 10, 30)), "loss_pct": rng.choice((0.0, 1.0, 5.0, 10.0)),
                "duplicate_pct": rng.choice((0.0, 1.0, 5.0)),
                "reorder_pct": rng.choice((0.0, 10.0, 25.0))}
    if kind in ("kill", "pause"):
        return {"target": MANAGER if rng.random() < 0.5 else rng.randrange(n)}
    if kind == "skew":
        lo, hi = cfg.skew_s
        return {"target": rng.randrange(n), "offset_s": round(rng.uniform(lo, hi), 1) * rng.choice((-1, 1))}
    if kind == "disk":
        return {"target": rng.randrange(n)}
    if kind == "slow":
        return {"target": MANAGER if rng.random() < 0.5 else rng.randrange(n),
                "cpu_pct": rng.choice(SLOW_CPU_PCT)}
    if kind == "attest":
        # Never node 0: it founded the federation, and the manager's own attestation failing is
        # a different story (it steps down first); a follower losing its TEE is the case here.
        choices = [i for i in range(1, n) if i not in used_attest]
        target = rng.choice(choices)
        used_attest.add(target)
        return {"target": target}
    raise ScheduleError(f"unknown fault kind {kind!r}")


def generate(seed: int, n: int, duration_s: float, kinds: Sequence[str],
             cfg: ScheduleConfig | None = None) -> tuple[Fault, ...]:
    """The schedule of a run: deterministic in all of its arguments.

    At most one ``attest`` fault per run (a revoked node never comes back, and a federation
    that lost too many members to revocation has nothing left to test).

    Raises:
        ScheduleError: unknown kinds, fewer than 3 nodes, or a run too short for one window.
    """
    cfg = cfg or ScheduleConfig()
    cfg.validate()
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ScheduleError(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
    if not kinds:
        raise ScheduleError("no fault kinds")
    if n < 3:
        raise ScheduleError("need at least 3 nodes")
    if duration_s < cfg.warmup_s + cfg.fault_s[0] + cfg.final_calm_s:
        raise ScheduleError(f"a {duration_s:g} s run has no room for one fault window "
                            f"(warm-up {cfg.warmup_s:g} s + {cfg.fault_s[0]:g} s + final calm "
                            f"{cfg.final_calm_s:g} s)")
    rng = random.Random(seed)
    order = list(dict.fromkeys(kinds))
    faults: list[Fault] = []
    used_attest: set[int] = set()
    t = round(cfg.warmup_s, 1)
    i = 0
    while True:
        kind = order[i % len(order)] if i < len(order) else rng.choice(order)
        i += 1
        if kind == "attest" and used_attest:
            kind = next((k for k in order if k != "attest"), "")
            if not kind:
                break
        length = round(rng.uniform(*cfg.fault_s), 1)
        if kind == "skew":  # the skewed process must live long enough to take part at all
            length = max(length, cfg.skew_window_min_s)
        if kind == "attest":
            length = cfg.fault_s[0]  # an instant fault; the window is the time to revoke
        room = math.floor((duration_s - cfg.final_calm_s - t) * 10) / 10
        if room < cfg.fault_s[0]:
            break
        length = min(length, room)  # the last window may be shorter, never under the minimum
        end = min(round(t + length, 1), t + room)
        faults.append(Fault(kind, t, end, _fault_params(kind, n, rng, cfg, used_attest)))
        t = round(end + round(rng.uniform(*cfg.calm_s), 1), 1)
    return tuple(faults)


def last_heal_s(faults: Sequence[Fault]) -> float:
    """When the last fault ends (0 for an empty schedule)."""
    return max((f.end_s for f in faults), default=0.0)
