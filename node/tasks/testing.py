"""In-process federations of real nodes running the whole task flow, for the tests and the
benchmarks: gossip (offers), the manager role, the shard service and the task service, on
loopback (node/testing.py says why the intervals are what they are)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from consensus import tasks as ct
from node.agent import Agent
from node.config import TasksConfig
from node.shards import service as shard_service
from node.tasks import offers as offers_mod
from node.tasks import service as task_service
from node.tasks.service import TaskService
from node.tasks.spec import render_spec
from node.testing import (
    crash_in_process,
    fully_attested,
    gossip_config,
    make_agent,
    run_in_process,
    shard_manager_settings,
    wait_until,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "workload" / "examples"


def task_config(i: int) -> Any:
    cfg = gossip_config()
    return dataclasses.replace(cfg, tasks=TasksConfig(cores=2, memory_mib=4096, provider=f"p{i}",
                                                      region="r1"))


@dataclasses.dataclass
class Node:
    name: str
    agent: Agent
    tasks: TaskService
    role: Any
    offers: offers_mod.Offers
    scope: trio.CancelScope | None = None

    @property
    def peer_id(self) -> str:
        return str(self.agent.peer_id)


def measured(nodes: list[Node]) -> bool:
    """Every node holds, for every node, the same capability record (same seq), and it carries
    the RTT its publisher measured to every other node."""
    ids = {n.peer_id for n in nodes}
    for m in nodes:
        recs = [n.offers.record(m.peer_id) for n in nodes]
        if any(r is None for r in recs) or len({r.seq for r in recs if r is not None}) != 1:
            return False
        first = recs[0]
        assert first is not None
        if {lk.peer for lk in first.links if lk.rtt_ms is not None} < ids - {m.peer_id}:
            return False
    return True


class TaskFederation:
    def __init__(self, tmp: Path, nursery: trio.Nursery, settings: Any = None) -> None:
        self.tmp, self.nursery = tmp, nursery
        self.settings = settings or shard_manager_settings()  # the manager role's (ManagerSettings)
        self.nodes: list[Node] = []

    async def start(self, name: str, i: int) -> Node:
        from node.manager import ManagerRole

        boot = next((n.agent.full_addrs()[0] for n in self.nodes
                     if not (n.scope and n.scope.cancel_called)), None)
        a = make_agent(self.tmp, name, config=task_config(i), bootstrap=(boot,) if boot else (),
                       gossip=True)
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        role = ManagerRole(a, path, self.settings)
        role.install()
        shard_service.attach(a, path, quota_bytes=1 << 30, repair_grace_s=2.0,
                             message_timeout_s=10.0, repair_tick_s=0.2)
        offers = offers_mod.attach(a)
        svc = task_service.attach(a, path)
        node = Node(name, a, svc, role, offers)
        node.scope = await run_in_process(self.nursery, a)
        self.nodes.append(node)
        return node

    async def crash(self, node: Node) -> None:
        assert node.scope is not None
        await crash_in_process(node.agent, node.scope)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if not (n.scope and n.scope.cancel_called)]

    def leader(self) -> Node | None:
        leaders = [n for n in self.alive() if n.role.is_leader()]
        return leaders[0] if len(leaders) == 1 else None

    def freshest(self) -> Any:
        """The freshest committed swarm state any live node knows (None: no node is live)."""
        views = [n.role.view() for n in self.alive()]
        return max(views, key=lambda v: v[1])[0] if views else None

    def by_peer(self, pid: str) -> Node:
        return next(n for n in self.nodes if n.peer_id == pid)

    def ready(self) -> bool:
        """Every node admitted in every view with the provider it declares, one manager known to
        all, and every node holds every node's offer, the same one, with an RTT to every other
        node (so that council members can re-run the manager's placements)."""
        nodes = self.alive()
        ids = {n.peer_id for n in nodes}
        lead = self.leader()
        if lead is None or any(set(n.offers.offers()) != ids for n in nodes):
            return False
        if not measured(nodes):
            return False
        labels = {n.peer_id: n.agent.config.tasks.provider for n in nodes}
        for n in nodes:
            st, _ = n.role.view()
            if not all((m := st.member(i)) is not None and m.status == "admitted"
                       and m.provider == labels[i] for i in ids):
                return False
            if n.tasks.manager_peer() != lead.peer_id:
                return False
        return True


@asynccontextmanager
async def task_federation(tmp: Path, n: int, settings: Any = None) -> AsyncIterator[TaskFederation]:
    """``n`` nodes, every one attested by every other, one manager known to all, every offer
    and measurement everywhere (``TaskFederation.ready``); ``settings``: the manager role's."""
    async with trio.open_nursery() as nursery:
        fed = TaskFederation(tmp, nursery, settings)
        try:
            for i in range(n):
                await fed.start(f"n{i}", i)
            await wait_until(lambda: fully_attested([x.agent for x in fed.nodes]), 90)
            await wait_until(fed.ready, 120)
            yield fed
        finally:
            for x in fed.nodes:
                x.agent.stop()
            nursery.cancel_scope.cancel()


def write_job(tmp: Path, module: str, *, fragments: int, split: str = "bytes",
              aggregation: str = "concat", redundancy: int = 1, extra: str = "",
              top: str = "", input_path: Path | None = None) -> Path:
    """A job spec in ``tmp`` (named after the module: a second call replaces it) over
    ``input_path`` (default ``tmp/input``); ``top`` adds top-level keys (TOML lines, e.g.
    ``quorum = 2``), ``extra`` is appended (more TOML tables)."""
    spec = tmp / f"{module}-job.toml"
    spec.write_text(render_spec(
        EXAMPLES / f"{module}.wasm", input_path or tmp / "input",
        fragments=fragments if split != "files" else None, split=split, aggregation=aggregation,
        name=module, top=f"redundancy = {redundancy}\n{top}",
        reducer=EXAMPLES / "u64sum.wasm" if aggregation == "wasm" else None, extra=extra))
    return spec


def committed(fed: TaskFederation, job_id: str) -> Any:
    """The job in the freshest committed state any live node knows (not the leader's own state:
    a leader just elected applies what its predecessor committed only after its first entry)."""
    state = fed.freshest()
    return ct.job(state, job_id) if state is not None else None
