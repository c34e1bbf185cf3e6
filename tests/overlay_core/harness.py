"""A tiny in-memory pump for the sans-IO cores: fixed latency, optional drops, no threads."""

from __future__ import annotations

import heapq
import random
from typing import Any

from overlay.dissemination import Dissemination, DisseminationConfig
from overlay.membership import Membership, MembershipConfig, Snapshot
from overlay.messages_gossip import ALL_MESSAGES, SWIM_MESSAGES
from overlay.records import SimSigner, SimVerifier
from overlay.wire import decode, encode


class Cluster:
    """n nodes started from one shared snapshot; every message goes through the wire codec."""

    def __init__(self, n: int, mcfg: MembershipConfig | None = None,
                 dcfg: DisseminationConfig | None = None, seed: int = 0,
                 latency_s: float = 0.001) -> None:
        self.mcfg = mcfg or MembershipConfig.lan()
        self.dcfg = dcfg or DisseminationConfig.lan()
        self.ids = [f"m{i}" for i in range(n)]
        self.snapshot = Snapshot(self.ids)
        self.secrets = {i: i.encode() * 4 for i in self.ids} | {"outsider": b"o" * 16}
        self.signers = {i: SimSigner(i, s) for i, s in self.secrets.items()}
        self.verifier = SimVerifier(self.secrets)
        self.attested = set(self.ids)
        self.now = 0.0
        self.latency_s = latency_s
        self.rng = random.Random(seed)
        self.drop: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        self.mute: set[str] = set()  # nodes whose inbound traffic is dropped (not crashed)
        self.down: set[str] = set()
        self._q: list[tuple[float, int, str, str, bytes]] = []
        self._seq = 0
        self.events: list[tuple[str, Any]] = []
        self.m: dict[str, Membership] = {}
        self.d: dict[str, Dissemination] = {}
        for k, i in enumerate(self.ids):
            self.boot(i, seed * 1000 + k, snapshot=True)

    def boot(self, i: str, seed: int, snapshot: bool, incarnation: int = 0) -> None:
        rng = random.Random(seed)
        m = Membership(i, self.mcfg, rng, self.now,
                       initial_members=self.snapshot if snapshot else (),
                       incarnation=incarnation)
        d = Dissemination(i, self.dcfg, rng, self.now, verify=self.verifier,
                          issuer_trusted=self.attested.__contains__, peers=m)
        m.delegate = d
        self.m[i], self.d[i] = m, d
        self.down.discard(i)

    def _drain(self, i: str) -> None:
        for core in (self.m[i], self.d[i]):
            r = core.ready()
            for dst, msg in r.messages:
                if (i, dst) in self.drop or dst in self.down or dst in self.mute:
                    continue
                self._seq += 1
                heapq.heappush(self._q, (self.now + self.latency_s, self._seq, i, dst, encode(msg)))
            for ev in getattr(r, "events", ()):
                self.events.append((i, ev))

    def run(self, duration_s: float, dt: float = 0.01) -> None:
        end = self.now + duration_s
        while self.now < end:
            self.now = round(self.now + dt, 9)
            while self._q and self._q[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._q)
                if dst in self.down:
                    continue
                msg = decode(data, ALL_MESSAGES)
                core = self.m[dst] if type(msg) in SWIM_MESSAGES else self.d[dst]
                core.step(src, msg, self.now)
                self._drain(dst)
            for i in self.ids:
                if i in self.down:
                    continue
                if min(self.m[i].next_deadline(), self.d[i].next_deadline()) <= self.now:
                    self.m[i].tick(self.now)
                    self.d[i].tick(self.now)
                self._drain(i)

    def view(self, observer: str, node: str) -> tuple[int, int] | None:
        return self.m[observer].state_of(node)
