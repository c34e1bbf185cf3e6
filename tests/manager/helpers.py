"""Real in-process nodes (tests/netutil.py) with the manager role installed."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.agent import Agent
from node.config import NodeConfig
from node.manager import ManagerRole, ManagerSettings
from tests.netutil import crash_in_process, local_config, make_agent, run_in_process

FAST = dataclasses.replace(ManagerSettings.for_profile("local_test"), reconcile_s=0.1,
                           follow_poll_s=0.2)


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


def _council_config() -> NodeConfig:
    """In-process council nodes without gossip: ping every 2 s, peer exchange every 1 s and
    re-attestation every 2 s instead of netutil's 0.5 s, 0.5 s and 1 s. These tests are about
    the council, not about how fast a crash is seen (a crash closes the connections at once);
    with 1 s re-attestation a score record lives 3 s, and a loop stalled that long by a
    loaded machine (two pytest workers on two cores) quarantines live members as unreachable
    and tears the Raft links the test depends on (see ``_gossip_config`` for why a busy loop
    stalls)."""
    cfg = local_config()
    net = dataclasses.replace(cfg.network, ping_interval_s=2.0, peer_exchange_interval_s=1.0)
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=2.0)
    return dataclasses.replace(cfg, network=net, attestation=att)


def _gossip_config() -> NodeConfig:
    """In-process nodes that also run gossip: ping every 5 s and peer exchange every 2 s
    instead of 0.5 s; re-attestation every 4 s instead of 1 s (score records live 3
    intervals; each attestation also publishes a score record that gossip spreads), with
    5 s instead of 3 s for one exchange.

    All the nodes of one test share one trio loop, and py-libp2p's yamux/Noise read loop
    takes about six scheduler passes per frame it receives, so each connection carries only
    a few dozen frames a second when the loop is busy. Every stream opened costs about 16
    frames (SYN/ACK, two multistream-select round trips, a window update per read, the
    close), so netutil's 0.5 s ping and peer-exchange intervals plus SWIM and dissemination
    keep the connections at capacity: frames queue, opening a stream takes seconds, pings
    and attestations time out, and spurious quarantines cut Raft links for reasons unrelated
    to what is tested."""
    cfg = local_config()
    net = dataclasses.replace(cfg.network, ping_interval_s=5.0, peer_exchange_interval_s=2.0)
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=4.0, handshake_timeout_s=5.0)
    return dataclasses.replace(cfg, network=net, attestation=att)


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
                r = await leaders[0].role.check_perf(n, min(n, 64), timeout_s)
                if r["ok"]:
                    return leaders[0]
            await trio.sleep(0.1)
