"""Invariant checkers, run on the outputs of every simulated event.

Safety (checked incrementally, O(1) per output):

- ``accept-attested``: no node accepts a record whose issuer never passed attestation;
- ``accept-signature``: no node accepts a forged record (the world keeps the set it forged);
- ``accept-revoked``: no node accepts a record (of any kind) from an issuer whose revocation
  it has applied;
- ``no-false-death``: in a fault-free run, no node declares a live, never-faulted node dead;
- ``incarnation-monotonic``: a node's own incarnation never decreases.

Liveness (checked once per virtual second after the heal, until the deadline):

- all live nodes hold the same record set;
- every live node sees every other live node alive (all pairs up to 100 nodes, else a
  deterministic sample of 3,000 pairs).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from overlay.messages_gossip import ALIVE, DEAD, STATE_NAMES
from overlay.records import Record

if TYPE_CHECKING:
    from sim.world import SimNode, World

MAX_VIOLATIONS_KEPT = 100


class Invariants:
    __slots__ = ("bogus", "checked", "incarnations", "violations", "w")

    def __init__(self, world: World) -> None:
        self.w = world
        self.checked = 0
        self.violations: list[str] = []
        self.bogus: set[Record] = set()
        self.incarnations: dict[int, int] = {}

    def violation(self, what: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS_KEPT:
            self.violations.append(f"t={self.w.now:.3f}s {what}")

    def on_accept(self, node: SimNode, rec: Record, t: float) -> None:
        if not self.w.cfg.check_invariants:
            return
        self.checked += 3
        if rec.issuer not in self.w.attested:
            self.violation(f"accept-attested: {node.id} accepted a record from {rec.issuer}")
        if rec in self.bogus:
            self.violation(f"accept-signature: {node.id} accepted a forged record")
        if node.d.is_revoked(rec.issuer):
            self.violation(f"accept-revoked: {node.id} accepted a record from revoked "
                           f"{rec.issuer}")

    def on_member_event(self, observer: SimNode, ev: Any, t: float) -> None:
        w = self.w
        if not w.cfg.check_invariants:
            return
        self.checked += 2
        if ev.state == DEAD and w.fault_free:
            si = w.index.get(ev.node)
            if si is not None:
                subj = w.nodes[si]
                if subj.up and not subj.faulted:
                    self.violation(f"no-false-death: {observer.id} declared healthy {ev.node} "
                                   f"{STATE_NAMES[ev.state]}")
        inc = observer.m.incarnation
        prev = self.incarnations.get(observer.idx)
        if prev is not None and inc < prev and observer.restarts == 0:
            self.violation(f"incarnation-monotonic: {observer.id} went {prev} -> {inc}")
        self.incarnations[observer.idx] = inc

    def convergence_problems(self) -> list[str]:
        """Why the live nodes have not converged yet (empty list: converged)."""
        w = self.w
        live = w.live_nodes()
        if not live:
            return ["no live node"]
        problems: list[str] = []
        views: dict[frozenset[tuple[str, str, int, bytes]], list[str]] = {}
        for nd in live:
            key = frozenset((r.kind, r.subject, r.version, r.signature) for r in nd.d.records())
            views.setdefault(key, []).append(nd.id)
        if len(views) > 1:
            ranked = sorted(views.items(), key=lambda kv: -len(kv[1]))
            best = ranked[0][0]
            for view, who in ranked[1:4]:
                missing = len(best - view)
                extra = len(view - best)
                problems.append(f"{len(who)} node(s) (e.g. {who[0]}) differ from the majority "
                                f"record set: {missing} missing, {extra} extra")
        pairs: list[tuple[Any, Any]]
        if len(live) <= 100:
            pairs = [(a, b) for a in live for b in live if a is not b]
        else:
            rng = random.Random(w.cfg.seed)
            pairs = [(live[rng.randrange(len(live))], live[rng.randrange(len(live))])
                     for _ in range(3000)]
        bad = 0
        example = ""
        for a, b in pairs:
            if a is b:
                continue
            st = a.m.state_of(b.id)
            if st is None or st[0] != ALIVE:
                bad += 1
                if not example:
                    name = "unknown" if st is None else STATE_NAMES[st[0]]
                    example = f"{a.id} sees {b.id} as {name}"
        if bad:
            problems.append(f"{bad} live pair(s) not alive in each other's view, e.g. {example}")
        return problems
