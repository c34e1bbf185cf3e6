"""Two implementations of the gossip transport behind one test interface.

The membership and dissemination cores never see a network: their driver hands every message
they emit to a *transport* (``send(dest, msg)``) and steps the right core with every message
that arrives (``core.step(src, msg, now)``). Two drivers do this -- ``sim.world.World`` over the
simulated network and ``node.gossip.GossipService`` over libp2p -- and the cores rely on the
same contract from both:

- a message sent to a live member arrives intact (equal to what was sent), attributed to the
  sender the transport authenticated, at the core of its type;
- send is best effort and never raises or blocks: a destination that is unknown (or, on a
  real node, not attested) or a message that exceeds its type's size bound is dropped and
  counted, never sent;
- bytes that do not decode as a gossip message are dropped and counted at the receiver, and
  the link keeps working;
- a stopped destination costs the sender nothing but the loss.

:class:`SimHarness` and :class:`Libp2pHarness` expose both drivers through the same methods, so
``test_transport.py`` holds them to the contract with one suite. Received messages are tapped
at the cores' ``step`` (a proxy in front of the real core, which still processes them).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import trio

from overlay.framing import frame
from overlay.messages_gossip import GossipDigest, GossipPush
from overlay.records import Record

GOSSIP_TYPES = (GossipPush, GossipDigest)


def _all_in(msgs: list[Any], log: list[tuple[str, Any, str]]) -> bool:
    got = [m for _, m, _ in log]
    return all(m in got for m in msgs)


class Tap:
    """Stands in front of a core: records ``(src, msg)`` of every step, then forwards."""

    def __init__(self, inner: Any, log: list[tuple[str, Any, str]], name: str) -> None:
        self._inner = inner
        self._log = log
        self._name = name

    def step(self, src: str, msg: Any, now: float) -> None:
        self._log.append((src, msg, self._name))
        self._inner.step(src, msg, now)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class Harness(Protocol):
    ids: list[str]

    def send(self, i: int, dest: str, msg: Any) -> None: ...
    def received(self, j: int) -> list[tuple[str, Any, str]]: ...
    async def wait_for(self, j: int, msgs: list[Any], timeout_s: float = 20.0) -> None: ...
    async def wait_until(self, pred: Callable[[], bool], timeout_s: float = 20.0) -> None: ...
    async def barrier(self, i: int, j: int) -> None: ...
    async def send_raw(self, i: int, j: int, data: bytes) -> None: ...
    async def stop(self, j: int) -> None: ...
    def dropped(self, i: int, reason: str) -> int: ...
    def dropped_total(self, i: int) -> int: ...
    def malformed(self, j: int) -> int: ...
    def record(self, i: int, subject: str, payload: bytes) -> Record: ...


class SimHarness:
    """The simulated network, in wire mode: every message is really encoded and decoded."""

    def __init__(self, n: int) -> None:
        from sim.world import SimConfig, World

        self.world = World(SimConfig(nodes=n, seed=5, wire=True, updates_per_s=0.0,
                                     clock_drift_ppm=0.0, clock_offset_s=0.0))
        self.ids = list(self.world.ids)
        self._logs: list[list[tuple[str, Any, str]]] = []
        for nd in self.world.nodes:
            log: list[tuple[str, Any, str]] = []
            self._logs.append(log)
            nd.m = Tap(nd.m, log, "membership")  # type: ignore[assignment]
            nd.d = Tap(nd.d, log, "dissemination")  # type: ignore[assignment]
        self._version = 0

    def send(self, i: int, dest: str, msg: Any) -> None:
        w = self.world
        w._send(w.nodes[i], dest, msg, w.now)

    def received(self, j: int) -> list[tuple[str, Any, str]]:
        return self._logs[j]

    async def wait_until(self, pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
        w = self.world
        end = w.now + timeout_s
        while not pred():
            if w.now >= end:
                raise TimeoutError(f"not within {timeout_s} virtual s")
            w.run_until(w.now + 0.05)

    async def wait_for(self, j: int, msgs: list[Any], timeout_s: float = 20.0) -> None:
        await self.wait_until(lambda: _all_in(msgs, self._logs[j]), timeout_s)

    async def barrier(self, i: int, j: int) -> None:
        # Links may reorder (latency jitter), so a marker proves nothing here: run the clock
        # well past the largest link delay instead.
        self.world.run_until(self.world.now + 2.0)

    async def send_raw(self, i: int, j: int, data: bytes) -> None:
        self.world.send_bytes(i, j, data, self.world.now)

    async def stop(self, j: int) -> None:
        self.world.crash(j, self.world.now)

    def dropped(self, i: int, reason: str) -> int:
        return self.world.dropped[reason]

    def dropped_total(self, i: int) -> int:
        return sum(self.world.dropped.values())

    def malformed(self, j: int) -> int:
        return self.world.decode_errors

    def record(self, i: int, subject: str, payload: bytes) -> Record:
        nd = self.world.nodes[i]
        self._version += 1
        now = nd.local(self.world.now)
        return nd.signer.sign("score", subject, self._version, now, now + 600.0, payload)


class Libp2pHarness:
    """Real nodes (attested, in-process) on loopback, each running the gossip service."""

    _REASONS = {"unknown-destination": "unattested-destination", "oversize": "oversize"}

    def __init__(self, agents: list[Any]) -> None:
        self.agents = agents
        self.ids = [a.peer_id for a in agents]
        self._logs: list[list[tuple[str, Any, str]]] = []
        for a in agents:
            log: list[tuple[str, Any, str]] = []
            self._logs.append(log)
            a.gossip.membership = Tap(a.gossip.membership, log, "membership")
            a.gossip.dissemination = Tap(a.gossip.dissemination, log, "dissemination")
        self._version = 0

    def send(self, i: int, dest: str, msg: Any) -> None:
        self.agents[i].gossip._send(dest, msg)

    def received(self, j: int) -> list[tuple[str, Any, str]]:
        return self._logs[j]

    async def wait_until(self, pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
        with trio.fail_after(timeout_s):
            while not pred():
                await trio.sleep(0.02)

    async def wait_for(self, j: int, msgs: list[Any], timeout_s: float = 20.0) -> None:
        await self.wait_until(lambda: _all_in(msgs, self._logs[j]), timeout_s)

    async def barrier(self, i: int, j: int) -> None:
        # One ordered stream per sender and destination: once a marker sent after the message
        # under test has arrived, that message has arrived too, or never will.
        marker = GossipPush(user=(b"barrier-%d" % time.monotonic_ns(),))
        self.send(i, self.ids[j], marker)
        await self.wait_for(j, [marker])

    async def send_raw(self, i: int, j: int, data: bytes) -> None:
        from libp2p.peer.id import ID

        from node.gossip import GOSSIP_PROTOCOL

        stream = await self.agents[i]._open_stream(ID.from_base58(self.ids[j]), GOSSIP_PROTOCOL)
        await stream.write(frame(data))
        await stream.close()

    async def stop(self, j: int) -> None:
        a = self.agents[j]
        a.stop()
        await a.wait_stopped()

    def dropped(self, i: int, reason: str) -> int:
        return int(self.agents[i].counters.get("gossip_dropped", self._REASONS[reason]))

    def dropped_total(self, i: int) -> int:
        return int(self.agents[i].counters.get("gossip_dropped"))

    def malformed(self, j: int) -> int:
        c = self.agents[j].counters.to_json().get("remote_error", {})
        return sum(v for k, v in c.items() if k.startswith("/enclave-swarm/gossip/"))

    def record(self, i: int, subject: str, payload: bytes) -> Record:
        self._version += 1
        now = time.time()
        return self.agents[i].gossip.signer.sign("conformance", subject, self._version, now,
                                                 now + 600.0, payload)


@asynccontextmanager
async def libp2p_harness(tmp: Path, n: int) -> AsyncIterator[Libp2pHarness]:
    from tests.netutil import federation, fully_attested, wait_until

    async with federation(tmp, n, gossip=True) as agents:
        await wait_until(lambda: fully_attested(agents), 40)
        yield Libp2pHarness(agents)


@asynccontextmanager
async def sim_harness(tmp: Path, n: int) -> AsyncIterator[SimHarness]:
    yield SimHarness(n)
