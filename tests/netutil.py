"""Helpers to build real in-process nodes on loopback for integration tests."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.agent import Agent
from node.attestation.base import TeeKind
from node.attestation.engine import AttestationEngine
from node.attestation.policy import Policy
from node.attestation.simulated import SimulatedProvider, SimulatedVerifier
from node.config import NodeConfig
from node.measure import agent_measurement


def local_config(**attestation: object) -> NodeConfig:
    cfg = NodeConfig.local_test()
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=1.0, attest_deadline_s=5.0,
                              handshake_timeout_s=3.0, **attestation)  # type: ignore[arg-type]
    net = dataclasses.replace(cfg.network, peer_exchange_interval_s=0.5, ping_interval_s=0.5)
    return dataclasses.replace(cfg, attestation=att, network=net)


def make_agent(tmp: Path, name: str, *, config: NodeConfig | None = None, build_tag: str = "",
               policy: Policy | None = None, bootstrap: tuple[str, ...] = (),
               gossip: bool = False, key: Ed25519PrivateKey | None = None) -> Agent:
    """A node on loopback with a simulated TEE; ``key`` restarts one with its identity."""
    cfg = config or local_config()
    if bootstrap:
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, bootstrap=bootstrap))
    key = key or Ed25519PrivateKey.generate()
    provider = SimulatedProvider(tmp / name / "sim-tee", agent_measurement(build_tag))
    engine = AttestationEngine(
        {TeeKind.SIM: SimulatedVerifier()},
        policy or Policy.development(),
        identity_key=key,
        self_measurement=agent_measurement(""),
        record_ttl_s=3 * cfg.attestation.reattest_interval_s,
    )
    agent = Agent(config=cfg, identity=key, provider=provider, engine=engine)
    if gossip:
        from node.gossip import attach

        attach(agent)
    return agent


async def run_in_process(nursery: trio.Nursery, agent: Agent) -> trio.CancelScope:
    """Start ``agent`` in ``nursery`` (returns once it listens); cancelling the returned scope
    stops it without a goodbye (see :func:`crash_in_process`)."""
    scopes: list[trio.CancelScope] = []

    async def runner(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await agent.run(task_status=task_status)

    await nursery.start(runner)
    return scopes[0]


async def crash_in_process(agent: Agent, scope: trio.CancelScope) -> None:
    """In-process SIGKILL: cancel the node's tasks without a goodbye, then close its
    connections as the kernel would close a killed process's sockets."""
    scope.cancel()
    await trio.sleep(0)
    conns = agent.host.get_network().connections
    for cs in list(conns.values()):
        for c in list(cs if isinstance(cs, list) else [cs]):
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await c.close()


async def wait_until(pred, timeout_s: float = 20.0, step_s: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(step_s)


def fully_attested(agents: list[Agent]) -> bool:
    for a in agents:
        others = {b.peer_id for b in agents if b is not a}
        if not others <= {p.peer_id for p in a.peers.attested()}:
            return False
    return True


@asynccontextmanager
async def federation(tmp: Path, n: int, **kw: object) -> AsyncIterator[list[Agent]]:
    async with trio.open_nursery() as nursery:
        first = make_agent(tmp, "n0", **kw)  # type: ignore[arg-type]
        await nursery.start(first.run)
        agents = [first]
        for i in range(1, n):
            a = make_agent(tmp, f"n{i}", bootstrap=(first.full_addrs()[0],), **kw)  # type: ignore[arg-type]
            await nursery.start(a.run)
            agents.append(a)
        try:
            yield agents
        finally:
            for a in agents:
                a.stop()
