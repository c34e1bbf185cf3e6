"""Scenarios: the fault schedule of the safety phase, and how the liveness phase heals it.

=============== =====================================================================
steady          no faults; one score update per second (the fault-free baseline: the
                ``no-false-death`` invariant is armed only here)
churn           at ``churn_per_s``, a random node crashes (40%) or leaves gracefully (40%)
                and comes back 7–17 s later (fresh state, incarnation 0, join through 3
                live seeds), or pauses for 2–8 s (20%) and resumes with its backlog
partition-heal  at 20% of the safety phase the network splits (``partition_shape``:
                halves, isolate, random-cut, bridge); updates continue on every side
revocation      at 30% the manager revokes a node; the revoked node keeps issuing, an
                unattested intruder and a forger inject records from then on
lossy           10% loss (or ``--loss``), 2% duplication, 5% reordering on every link
slow-node       ``slow_nodes`` nodes process every inbound message up to
                ``slow_delay_s`` late (an overloaded host): Lifeguard's false positives
crash           one crash at a time: a random node crashes; 2 s after some member suspects
                it, it restarts, and the next crash follows 0.5–1.5 × 1/``churn_per_s`` s
                later. SWIM's detection model (one failure among members that all probe),
                which churn's overlapping faults leave: there, down probers and suspects
                still in the ring slow the probes
=============== =====================================================================

Heal (start of the liveness phase): partitions removed, pauses and slowness ended, churn and
injections stopped, links back to the configured loss; crashed nodes stay down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overlay.messages_gossip import GossipPush
from overlay.records import KIND_SCORE, SimSigner
from sim.events import (
    A_CHURN,
    A_INJECT,
    A_LEAVE,
    A_PARTITION,
    A_PAUSE,
    A_PUBLISH,
    A_RESTART,
    A_SLOW,
    EV_ACTION,
    EV_DELIVER,
)

if TYPE_CHECKING:
    from sim.world import World

SCENARIOS = ("steady", "churn", "partition-heal", "revocation", "lossy", "slow-node", "crash")
PARTITION_SHAPES = ("halves", "isolate", "random-cut", "bridge")


def setup(w: World) -> None:
    cfg = w.cfg
    name = cfg.scenario
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; have {', '.join(SCENARIOS)}")
    w.fault_free = name == "steady" and cfg.loss == 0 and cfg.duplicate == 0
    rng = w.fault_rng
    n = cfg.nodes
    if name in ("churn", "crash") and cfg.churn_per_s > 0:
        w.push(1.0 + rng.random() / cfg.churn_per_s, EV_ACTION, A_CHURN)
    elif name == "partition-heal":
        w.push(0.2 * cfg.duration_s, EV_ACTION, A_PARTITION, cfg.partition_shape)
    elif name == "revocation":
        victim = 1 + rng.randrange(n - 1)  # never the manager
        w.revocation_victim = victim
        t0 = 0.3 * cfg.duration_s
        w.push(t0, EV_ACTION, A_PUBLISH, 1, victim)
        t = t0 + 0.5
        while t < cfg.duration_s:
            w.push(t, EV_ACTION, A_INJECT, 2)
            w.push(t + 0.25, EV_ACTION, A_INJECT, 1)
            w.push(t + 0.5, EV_ACTION, A_INJECT, 0)
            t += 1.0
    elif name == "lossy":
        w.net.loss = cfg.loss if cfg.loss > 0 else 0.10
        w.net.duplicate = cfg.duplicate if cfg.duplicate > 0 else 0.02
        w.net.reorder = cfg.reorder if cfg.reorder > 0 else 0.05
    elif name == "slow-node":
        chosen: list[int] = []
        while len(chosen) < min(cfg.slow_nodes, n - 1):
            i = 1 + rng.randrange(n - 1)
            if i not in chosen:
                chosen.append(i)
        for i in chosen:
            w.push(1.0, EV_ACTION, A_SLOW, i, cfg.slow_delay_s)


def heal(w: World) -> None:
    cfg = w.cfg
    w.net.heal()
    w.net.loss, w.net.duplicate, w.net.reorder = cfg.loss, cfg.duplicate, cfg.reorder
    w.churn_on = False
    w.inject_on = False
    for nd in w.nodes:
        nd.slow_s = 0.0
        if nd.pause_until > w.now:
            nd.pause_until = w.now


def partition(w: World, shape: str) -> None:
    n = len(w.nodes)
    rng = w.fault_rng
    bridges: tuple[int, ...] = ()
    if shape == "halves":
        groups = [0 if i < n // 2 else 1 for i in range(n)]
    elif shape == "isolate":
        lone = rng.randrange(n)
        groups = [1 if i == lone else 0 for i in range(n)]
    elif shape == "random-cut":
        frac = 0.2 + 0.6 * rng.random()
        groups = [1 if rng.random() < frac else 0 for i in range(n)]
    elif shape == "bridge":
        groups = [0 if i < n // 2 else 1 for i in range(n)]
        bridges = (rng.randrange(n),)
    else:
        raise ValueError(f"unknown partition shape {shape!r}; have {', '.join(PARTITION_SHAPES)}")
    for nd in w.nodes:
        nd.faulted = True  # everyone is cut from someone: no false-positive accounting
    w.net.split(groups, bridges)


def churn_step(w: World, t: float, node: int | None = None) -> None:
    if not w.churn_on:
        return
    rng = w.fault_rng
    if w.cfg.scenario == "crash":
        _crash_step(w, t, node)
        return
    cand = w._live_sample(1, exclude=w.manager)
    if cand:
        i = cand[0]
        r = rng.random()
        if r < 0.2:  # a stop-the-world pause (VM migration, GC): back on its own
            w.push(t, EV_ACTION, A_PAUSE, i, 2.0 + 6.0 * rng.random())
        else:
            if r < 0.6:
                w.crash(i, t)
            else:
                w.push(t, EV_ACTION, A_LEAVE, i)
            w.push(t + 5.0 + 10.0 * rng.random() + 2.0, EV_ACTION, A_RESTART, i)
    w.push(t + rng.expovariate(w.cfg.churn_per_s), EV_ACTION, A_CHURN)


CRASH_CHECK_S = 0.5  # how often the crash scenario looks whether its victim was detected
CRASH_SETTLE_S = 2.0  # the victim stays down this long after it was first suspected
CRASH_GIVE_UP_S = 60.0  # ... or restarts after this long undetected (then it is not counted)


def _crash_step(w: World, t: float, node: int | None) -> None:
    """The ``crash`` scenario: crash a random node (``node`` None), or check on the victim.

    The victim restarts only after it was detected, so no crash is cut short by its restart:
    a restart before detection would drop the slowest detections from the figures.
    """
    if node is None:
        cand = w._live_sample(1, exclude=w.manager)
        if cand:
            w.crash(cand[0], t)
            w.push(t + CRASH_CHECK_S, EV_ACTION, A_CHURN, cand[0])
        else:
            w.push(t + 1.0 / w.cfg.churn_per_s, EV_ACTION, A_CHURN)
        return
    ca = w.crash_at.get(node)
    if ca is not None and t - ca < CRASH_GIVE_UP_S:  # not suspected by anyone yet
        w.push(t + CRASH_CHECK_S, EV_ACTION, A_CHURN, node)
        return
    w.push(t + CRASH_SETTLE_S, EV_ACTION, A_RESTART, node)
    gap = (0.5 + w.fault_rng.random()) / w.cfg.churn_per_s
    w.push(t + CRASH_SETTLE_S + gap, EV_ACTION, A_CHURN)


def inject(w: World, kind: int, t: float) -> None:
    """Hostile records handed to a random live node as if gossiped by a live peer."""
    if not w.inject_on:
        return
    rng = w.fault_rng
    targets = w._live_sample(2)
    if len(targets) < 2:
        return
    dst, via = w.nodes[targets[0]], w.nodes[targets[1]]
    subject = w.ids[rng.randrange(len(w.ids))]
    local = dst.local(t)
    if kind == 0:  # forged: claims an attested issuer, signature is garbage
        issuer = w.ids[rng.randrange(len(w.ids))]
        good = SimSigner(issuer, b"not-the-key").sign(KIND_SCORE, subject, 10**6, local,
                                                     local + 3600.0, b"forged")
        rec = good
    elif kind == 1:  # valid signature, issuer never attested
        rec = SimSigner(w.intruder, w.secrets[w.intruder]).sign(
            KIND_SCORE, subject, 10**6, local, local + 3600.0, b"intruder")
    else:  # the revoked node keeps issuing
        victim = w.revocation_victim
        if victim is None:
            return
        vn = w.nodes[victim]
        w.key_versions[subject] = w.key_versions.get(subject, 0) + 1
        rec = vn.signer.sign(KIND_SCORE, subject, 10**6 + w.key_versions[subject], local,
                             local + 3600.0, b"revoked")
        w.injected_after_revocation += 1
    if kind in (0, 1):
        w.invariants.bogus.add(rec)
    w.push(t, EV_DELIVER, dst.idx, via.idx, GossipPush((rec,)))
