"""Real in-process nodes (tests/netutil.py) with the manager role installed."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.agent import Agent
from node.manager import ManagerRole, ManagerSettings
from tests.netutil import make_agent

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

    def __init__(self, tmp: Path, nursery: trio.Nursery, settings: ManagerSettings) -> None:
        self.tmp, self.nursery, self.settings = tmp, nursery, settings
        self.members: list[Member] = []
        self.boot: str | None = None

    async def start(self, name: str, *, settings: ManagerSettings | None = None,
                    key: Any = None) -> Member:
        agent = make_agent(self.tmp, name, bootstrap=(self.boot,) if self.boot else ())
        if key is not None:  # restart with the same identity
            agent = _with_identity(self.tmp, name, key, self.boot)
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        role = ManagerRole(agent, path, settings or self.settings)
        role.install()
        m = Member(name, agent, role, path)

        async def runner(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                m.scope = scope
                await agent.run(task_status=task_status)

        await self.nursery.start(runner)
        if self.boot is None:
            self.boot = agent.full_addrs()[0]
        self.members.append(m)
        return m

    async def kill(self, m: Member) -> None:
        """Crash: cancel the node's tasks without a goodbye, then close its connections as
        the kernel would close a killed process's sockets (in-process SIGKILL)."""
        assert m.scope is not None
        m.scope.cancel()
        self.members.remove(m)
        await trio.sleep(0)
        conns = m.agent.host.get_network().connections
        for cs in list(conns.values()):
            for c in list(cs if isinstance(cs, list) else [cs]):
                with trio.move_on_after(1), contextlib.suppress(Exception):
                    await c.close()

    def leaders(self) -> list[Member]:
        return [m for m in self.members if m.role.is_leader()]

    def statuses(self) -> list[dict[str, Any]]:
        return [m.role.status() for m in self.members]


def _with_identity(tmp: Path, name: str, key: Any, boot: str | None) -> Agent:
    from node.attestation.base import TeeKind
    from node.attestation.engine import AttestationEngine
    from node.attestation.policy import Policy
    from node.attestation.simulated import SimulatedProvider, SimulatedVerifier
    from node.measure import agent_measurement
    from tests.netutil import local_config

    cfg = local_config()
    if boot:
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, bootstrap=(boot,)))
    provider = SimulatedProvider(tmp / name / "sim-tee", agent_measurement(""))
    engine = AttestationEngine({TeeKind.SIM: SimulatedVerifier()}, Policy.development(),
                               identity_key=key, self_measurement=agent_measurement(""),
                               record_ttl_s=3 * cfg.attestation.reattest_interval_s)
    return Agent(config=cfg, identity=key, provider=provider, engine=engine)


@asynccontextmanager
async def federation(tmp: Path, n: int, settings: ManagerSettings = FAST) -> AsyncIterator[Fed]:
    async with trio.open_nursery() as nursery:
        fed = Fed(tmp, nursery, settings)
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
