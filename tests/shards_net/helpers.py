"""In-process federations of real libp2p nodes with the shard service attached.

``shard_config`` and ``manager_settings`` (the intervals these federations run with) are
defined in node/testing.py, whose module docstring says why each value is what it is (it also
explains the repair tick, grace and message timeout passed to the shard service below).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.agent import Agent
from node.shards import service as shard_service
from node.shards.service import ShardService
from node.testing import (
    crash_in_process,
    fully_attested,
    make_agent,
    run_in_process,
    shard_config,
    wait_until,
)
from node.testing import shard_manager_settings as manager_settings

__all__ = ["ManagedFederation", "Node", "managed_federation", "manager_settings", "shard_config",
           "shard_federation", "write_random"]


@asynccontextmanager
async def shard_federation(
    tmp: Path,
    n: int,
    *,
    quotas: dict[int, int] | None = None,
    repair_grace_s: float = 2.0,
    message_timeout_s: float = 10.0,
    **kw: Any,
) -> AsyncIterator[tuple[list[Agent], list[ShardService], trio.Nursery]]:
    """n nodes (node 0 bootstraps the others), each with a shard service; waits until every
    pair has attested. Yields the agents, their services and the nursery they run in."""
    quotas = quotas or {}
    async with trio.open_nursery() as nursery:
        agents: list[Agent] = []
        services: list[ShardService] = []
        for i in range(n):
            boot = (agents[0].full_addrs()[0],) if agents else ()
            kw.setdefault("config", shard_config())
            a = make_agent(tmp, f"n{i}", bootstrap=boot, **kw)
            services.append(
                shard_service.attach(
                    a,
                    tmp / f"n{i}",
                    quota_bytes=quotas.get(i, 1 << 34),
                    repair_grace_s=repair_grace_s,
                    message_timeout_s=message_timeout_s,
                    repair_tick_s=0.2,
                )
            )
            await nursery.start(a.run)
            agents.append(a)
        try:
            await wait_until(lambda: fully_attested(agents), 60)
            yield agents, services, nursery
        finally:
            for a in agents:
                a.stop()


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# ----------------------------------------------------------------------------- with a manager


@dataclasses.dataclass
class Node:
    name: str
    agent: Agent
    svc: ShardService
    role: Any
    scope: trio.CancelScope | None = None

    @property
    def peer_id(self) -> str:
        return str(self.agent.peer_id)


class ManagedFederation:
    """In-process nodes running the manager role and the shard service; ``stop`` crashes one
    (cancels its tasks), ``restart`` brings a stopped one back with its identity and data dir."""

    def __init__(self, tmp: Path, nursery: trio.Nursery, repair_grace_s: float) -> None:
        self.tmp, self.nursery, self.grace = tmp, nursery, repair_grace_s
        self.nodes: list[Node] = []

    def _boot_for(self, name: str) -> str | None:
        """A running node other than ``name`` to bootstrap from: not simply the first node,
        which may be the one restarting (it would dial its own dead address and never join)."""
        for n in self.nodes:
            if n.name != name and not n.agent.stopping and not (n.scope and n.scope.cancel_called):
                return n.agent.full_addrs()[0]
        return None

    async def start(self, name: str, key: Any = None) -> Node:
        from node.manager import ManagerRole

        boot = self._boot_for(name)
        a = make_agent(self.tmp, name, config=shard_config(), bootstrap=(boot,) if boot else (),
                       key=key)  # key: a restart with the same identity
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        role = ManagerRole(a, path, manager_settings())
        role.install()
        svc = shard_service.attach(a, path, quota_bytes=1 << 34, repair_grace_s=self.grace,
                                   message_timeout_s=10.0, repair_tick_s=0.2)
        node = Node(name, a, svc, role)
        node.scope = await run_in_process(self.nursery, a)
        self.nodes = [n for n in self.nodes if n.name != name] + [node]
        return node

    def stop(self, node: Node) -> None:
        node.agent.stop()

    async def crash(self, node: Node) -> None:
        """In-process SIGKILL: cancel the node's tasks without a goodbye, then close its
        connections as the kernel would close a killed process's sockets."""
        assert node.scope is not None
        await crash_in_process(node.agent, node.scope)

    async def restart(self, node: Node) -> Node:
        return await self.start(node.name, key=node.agent._identity)

    def by_peer(self, pid: str) -> Node:
        return next(n for n in self.nodes if n.peer_id == pid)

    def leader(self) -> Node | None:
        leaders = [n for n in self.nodes if n.role.is_leader()]
        return leaders[0] if len(leaders) == 1 else None

    def all_admitted(self, nodes: list[Node]) -> bool:
        ids = {n.peer_id for n in nodes}
        for n in nodes:
            st, _ = n.role.view()
            if not all((m := st.member(i)) is not None and m.status == "admitted" for i in ids):
                return False
        lead = self.leader()
        return (lead is not None and len(lead.role.status()["consensus"]["voters"]) == min(5, len(nodes))
                and all(n.role.leader_peer() == lead.peer_id for n in nodes))


@asynccontextmanager
async def managed_federation(tmp: Path, n: int, *, repair_grace_s: float = 1.0
                             ) -> AsyncIterator[ManagedFederation]:
    """n nodes with manager and shard service; waits until all are attested, admitted in every
    node's view, the council has its 5 voters and every node knows the manager."""
    async with trio.open_nursery() as nursery:
        fed = ManagedFederation(tmp, nursery, repair_grace_s)
        try:
            for i in range(n):
                await fed.start(f"n{i}")
            agents = [x.agent for x in fed.nodes]
            await wait_until(lambda: fully_attested(agents), 90)
            await wait_until(lambda: fed.all_admitted(fed.nodes), 90)
            yield fed
        finally:
            for x in fed.nodes:
                x.agent.stop()
