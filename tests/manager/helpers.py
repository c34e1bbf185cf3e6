"""Real in-process nodes (node/testing.py) with the manager role installed.

The intervals these federations run with (``FAST``, ``_council_config``, ``_gossip_config``)
are defined in node/testing.py, whose module docstring says why each value is what it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.agent import Agent
from node.manager import ManagerRole
from node.manager_control import check_perf
from node.manager_settings import ManagerSettings
from node.testing import (
    council_config,
    crash_in_process,
    gossip_config,
    make_agent,
    manager_test_settings,
    run_in_process,
)

FAST = manager_test_settings()
# Kept under their old names for the tests that import them (node/testing.py has the why).
_council_config = council_config
_gossip_config = gossip_config


@dataclasses.dataclass
class Member:
    name: str
    agent: Agent
    role: ManagerRole
    path: Path
    scope: trio.CancelScope | None = None


class Fed:
    """A federation of in-process nodes; ``start``/``kill`` individual members."""

    def __init__(self, tmp: Path, nursery: trio.Nursery, settings: ManagerSettings,
                 gossip: bool = False, bus: GossipBus | None = None) -> None:
        self.tmp, self.nursery, self.settings, self.gossip = tmp, nursery, settings, gossip
        self.bus = bus
        self.members: list[Member] = []

    def _boot_for(self, name: str) -> str | None:
        """A running member other than ``name`` to bootstrap from: not simply the first node,
        which may be the one restarting (it would dial its own dead address and never join)."""
        for m in self.members:
            if m.name != name:
                return m.agent.full_addrs()[0]
        return None

    async def start(self, name: str, *, settings: ManagerSettings | None = None,
                    key: Any = None) -> Member:
        config = _gossip_config() if self.gossip else _council_config()
        boot = self._boot_for(name)
        agent = make_agent(self.tmp, name, bootstrap=(boot,) if boot else (), gossip=self.gossip,
                           config=config, key=key)  # key: a restart with the same identity
        if self.bus is not None:
            agent.gossip = self.bus.attach(agent)  # type: ignore[attr-defined]
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        role = ManagerRole(agent, path, settings or self.settings)
        role.install()
        m = Member(name, agent, role, path)
        m.scope = await run_in_process(self.nursery, agent)
        self.members.append(m)
        return m

    async def kill(self, m: Member) -> None:
        """Crash: cancel the node's tasks without a goodbye, then close its connections as
        the kernel would close a killed process's sockets (in-process SIGKILL)."""
        assert m.scope is not None
        self.members.remove(m)
        await crash_in_process(m.agent, m.scope)

    def leaders(self) -> list[Member]:
        return [m for m in self.members if m.role.is_leader()]

    def statuses(self) -> list[dict[str, Any]]:
        return [m.role.status() for m in self.members]


class GossipBus:
    """An in-memory stand-in for node/gossip.py's record path, for in-process tests of what
    consumes records: ``publish`` signs a real record with the publisher's libp2p identity
    (Ed25519Signer), and every other attached node checks the signature (Ed25519Verifier)
    and that the issuer is attested and unrevoked there -- the dissemination core's checks --
    before calling its subscribers. ``deliver`` can be switched off per node to model a node
    gossip does not reach, and ``offer`` injects a hand-made record. (Federations built with
    ``gossip=True`` run the real service; see ``_gossip_config`` for what that takes in one
    process.)"""

    def __init__(self) -> None:
        self.nodes: dict[str, _BusNode] = {}

    def attach(self, agent: Agent) -> _BusNode:
        node = _BusNode(self, agent)
        self.nodes[agent.peer_id] = node
        return node


class _BusNode:
    def __init__(self, bus: GossipBus, agent: Agent) -> None:
        import nacl.signing

        from node.gossip import public_key_of_peer_or_none
        from overlay.records import Ed25519Signer, Ed25519Verifier

        self.bus, self.agent = bus, agent
        self.signer = Ed25519Signer(agent.peer_id, nacl.signing.SigningKey(
            agent._identity.private_bytes_raw()))
        self.verify = Ed25519Verifier(public_key_of_peer_or_none)
        self.subscribers: dict[str, list[Any]] = {}
        self.version = 0
        self.deliver = True
        self.refused = 0

    def subscribe(self, kind: str, callback: Any) -> None:
        self.subscribers.setdefault(kind, []).append(callback)

    def publish(self, kind: str, subject: str, payload: bytes, *, ttl_s: float = 60.0) -> bool:
        import time

        now = time.time()
        self.version += 1
        rec = self.signer.sign(kind, subject, self.version, now, now + ttl_s, payload)
        self.offer(rec)
        return True

    def offer(self, rec: Any) -> None:
        """Hand ``rec`` to every other node, through the checks a receiver makes."""
        for node in list(self.bus.nodes.values()):
            if node is self or not node.deliver or node.agent.stopping:
                continue
            ok = node.verify(rec) and node.agent.peers.is_attested(rec.issuer) \
                and not node.agent.peers.is_revoked(rec.issuer)
            if not ok:
                node.refused += 1
                continue
            for cb in node.subscribers.get(rec.kind, ()):
                cb(rec)


@asynccontextmanager
async def federation(tmp: Path, n: int, settings: ManagerSettings = FAST, *,
                     gossip: bool = False, bus: GossipBus | None = None) -> AsyncIterator[Fed]:
    """``n`` nodes; with ``gossip`` each also runs node/gossip.py (as a real node does), so
    the manager's announcements travel through it; with ``bus`` they travel through that
    in-memory record bus instead."""
    async with trio.open_nursery() as nursery:
        fed = Fed(tmp, nursery, settings, gossip, bus)
        for i in range(n):
            await fed.start(f"n{i}")
        try:
            yield fed
        finally:
            for m in fed.members:
                m.agent.stop()


def settled(fed: Fed, council: int) -> bool:
    """One manager, every node agrees on it and its term, and the council has ``council``
    voters."""
    sts = fed.statuses()
    leaders = fed.leaders()
    if len(leaders) != 1:
        return False
    lead = leaders[0]
    voters = lead.role.node.raft.conf.voters if lead.role.node else ()
    return (len(voters) == council and all(s["manager"] == lead.agent.peer_id for s in sts)
            and len({s["term"] for s in sts}) == 1)


class ManagerLog:
    """Samples (term, manager) from every status; fails on two managers in one term."""

    def __init__(self) -> None:
        self.seen: dict[int, set[str]] = {}

    def sample(self, fed: Fed) -> None:
        for s in fed.statuses():
            if s["manager"] and s["term"]:
                self.seen.setdefault(s["term"], set()).add(s["manager"])
        bad = {t: ms for t, ms in self.seen.items() if len(ms) > 1}
        assert not bad, f"two managers in one term: {bad}"


async def commit_some(fed: Fed, n: int, timeout_s: float = 30.0) -> Member:
    """Commit ``n`` commands through whoever manages now (an election on a loaded machine may
    interrupt a run: retry on the new manager). Returns the manager that finished."""
    with trio.fail_after(timeout_s):
        while True:
            leaders = fed.leaders()
            if leaders:
                r = await check_perf(leaders[0].role, n, min(n, 64), timeout_s)
                if r["ok"]:
                    return leaders[0]
            await trio.sleep(0.1)
