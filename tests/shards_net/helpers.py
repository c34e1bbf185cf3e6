"""In-process federations of real libp2p nodes with the shard service attached."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.agent import Agent
from node.config import NodeConfig
from node.shards import service as shard_service
from node.shards.service import ShardService
from tests.netutil import fully_attested, local_config, make_agent, wait_until


def shard_config() -> NodeConfig:
    """tests.netutil's loopback config, re-attesting every 5 s instead of every second: a
    federation of 6-8 nodes in one interpreter, moving megabytes, on a loaded 2-core machine,
    must not lose its attestations to scheduling delays (score records live 3 intervals)."""
    cfg = local_config()
    return dataclasses.replace(cfg, attestation=dataclasses.replace(cfg.attestation, reattest_interval_s=5.0))


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
            # rtt estimates come from the ping loop; let one round happen
            await trio.sleep(0.6)
            yield agents, services, nursery
        finally:
            for a in agents:
                a.stop()


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data
