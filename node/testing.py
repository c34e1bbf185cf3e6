"""Harness for in-process federations of real nodes on loopback, shared by tests and benchmarks.

Rules: nothing in the running node imports this module; it builds real agents (py-libp2p on
127.0.0.1, the simulated TEE, the development policy) and never fakes a protocol. It lives in
the installed package, named like ``trio.testing`` and ``numpy.testing`` (support for code that
exercises the package, not part of its runtime), so that ``tests/`` and ``bench/`` import one
copy without putting the repository root on ``sys.path``: a benchmark must not depend on the
test tree (``tests/netutil.py``, ``tests/manager/helpers.py`` and ``tests/shards_net/helpers.py``
re-export what moved here).

Timing values of the multi-node tests
-------------------------------------

The intervals the multi-node tests share are set here, and the test helpers re-export these
functions; a test that needs another value overrides it in the test itself, next to its reason
(e.g. tests/node/test_loop_health.py, tests/node/test_hostile_wire.py). Base:
``NodeConfig.local_test()`` (re-attest 2 s, handshake 5 s, unattested deadline 10 s, ping 1 s,
peer exchange 1 s) and
``ManagerSettings.for_profile("local_test")`` (tick 20 ms, election 15 ticks, heartbeat 3
ticks, reconcile 0.2 s, follow poll 3 s). Why each override is what it is:

========================================  ===============  =====================================
value (function)                          base -> here     why
========================================  ===============  =====================================
reattest_interval_s (local_config)        2 s -> 1 s       tests of dynamic attestation (a TEE
                                                           that turns to debug mode, a revoked
                                                           peer) see the quarantine within
                                                           about one interval; a score record
                                                           then lives 3 s (``make_agent``:
                                                           record TTL = 3 intervals)
attest_deadline_s (local_config)          10 s -> 5 s      a peer that connects and never
                                                           attests is dropped within 5 s, so the
                                                           hostile-peer tests end sooner
                                                           (chosen in the first overlay commit;
                                                           no test needs exactly 5 s)
handshake_timeout_s (local_config)        5 s -> 3 s       a peer that stalls an exchange is
                                                           counted as a miss within 3 s; still
                                                           50-150x one exchange (20-60 ms, the
                                                           challenge-now arm of ``python -m
                                                           bench reattest``, load 5)
ping_interval_s, peer_exchange_interval_s 1 s -> 0.5 s     nodes bootstrapped from node 0 find
(local_config)                                             each other and learn RTTs in about a
                                                           second; fine for 2-4 nodes, too busy
                                                           for bigger federations (below)
ping 2 s, peer exchange 1 s, re-attest    from 0.5/0.5/1   5 council nodes in one loop under
2 s (council_config)                                       two pytest workers: a loop stalled
                                                           for a record's life (3 intervals)
                                                           would quarantine live members as
                                                           unreachable and cut Raft links; a
                                                           crash is still seen at once (its
                                                           connections close)
ping 5 s, peer exchange 2 s, re-attest    from 0.5/0.5/1,  with gossip (SWIM + dissemination)
4 s, handshake 5 s (gossip_config)        handshake 3      every stream costs the shared loop
                                                           ~16 yamux frames; at 0.5 s intervals
                                                           the connections run at capacity,
                                                           stream opens take seconds, pings and
                                                           attestations time out (see
                                                           ``gossip_config``)
ping 2 s, peer exchange 1 s, re-attest    from 0.5/0.5/1   6-7 nodes moving megabytes in one
5 s (shard_config)                                         loop: attestations must survive the
                                                           stalls of sealing and transfer; RTT
                                                           is unknown until the first ping (a
                                                           get asks such holders last, in
                                                           shard-index order)
reconcile_s 0.1 (manager_test_settings)   0.2 s -> 0.1 s   council changes and admissions the
                                                           tests wait for come twice as fast
follow_poll_s (manager_test_settings)     3 s -> 0.2 s     followers learn the committed state
                                                           by polling when gossip is off (most
                                                           in-process council tests run without
                                                           gossip); a test of the gossip path
                                                           must set a poll longer than its wait
tick 50 ms, election 40 ticks, heartbeat  20 ms, 15, 3,    7 nodes sealing and moving shards in
4 ticks, council 5, fsync off             council 5, fsync one interpreter stall it for longer
(shard_manager_settings)                                   than the 0.3-0.6 s election timeout:
                                                           2-4 s keeps elections for real
                                                           failures; no fsync: a dozen Raft
                                                           logs on one loaded disk
repair_tick_s 0.2, message_timeout_s 10,  service default  the shard tests wait on a repair:
repair_grace_s 1-2 (tests/shards_net)                      a short grace and tick start it
                                                           within ~2 s; 10 s per message covers
                                                           a stalled shared loop
========================================  ===============  =====================================

What a test controls instead of a timing: ``wait_until`` waits on a condition (never a sleep
and an assert); ``crash_in_process`` closes a crashed node's connections at once, so a crash is
seen by its peers without waiting for a ping or a re-attestation to fail; ``make_agent(key=)``
restarts a node with its identity. Prefer those to shortening an interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.agent import Agent
from node.attestation.base import TeeKind
from node.attestation.engine import AttestationEngine
from node.attestation.policy import Policy
from node.attestation.simulated import SimulatedProvider, SimulatedVerifier
from node.config import NodeConfig
from node.measure import agent_measurement

if TYPE_CHECKING:
    from node.manager_settings import ManagerSettings

# ----------------------------------------------------------------------------- configurations


def local_config(**attestation: object) -> NodeConfig:
    """``NodeConfig.local_test()`` with the faster intervals of a 2-4 node test (table above);
    ``attestation`` overrides fields of its attestation section."""
    cfg = NodeConfig.local_test()
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=1.0, attest_deadline_s=5.0,
                              handshake_timeout_s=3.0, **attestation)  # type: ignore[arg-type]
    net = dataclasses.replace(cfg.network, peer_exchange_interval_s=0.5, ping_interval_s=0.5)
    return dataclasses.replace(cfg, attestation=att, network=net)


def council_config() -> NodeConfig:
    """In-process council nodes without gossip: ping every 2 s, peer exchange every 1 s and
    re-attestation every 2 s instead of ``local_config``'s 0.5 s, 0.5 s and 1 s. Council tests
    are about the council, not about how fast a crash is seen (a crash closes the connections
    at once); with 1 s re-attestation a score record lives 3 s, and a loop stalled that long by
    a loaded machine (two pytest workers on two cores) quarantines live members as unreachable
    and tears the Raft links the test depends on (see :func:`gossip_config` for why a busy
    loop stalls)."""
    cfg = local_config()
    net = dataclasses.replace(cfg.network, ping_interval_s=2.0, peer_exchange_interval_s=1.0)
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=2.0)
    return dataclasses.replace(cfg, network=net, attestation=att)


def gossip_config() -> NodeConfig:
    """In-process nodes that also run gossip: ping every 5 s and peer exchange every 2 s
    instead of 0.5 s; re-attestation every 4 s instead of 1 s (score records live 3
    intervals; each attestation also publishes a score record that gossip spreads), with
    5 s instead of 3 s for one exchange.

    All the nodes of one test share one trio loop, and py-libp2p's yamux/Noise read loop
    takes about six scheduler passes per frame it receives, so each connection carries only
    a few dozen frames a second when the loop is busy. Every stream opened costs about 16
    frames (SYN/ACK, two multistream-select round trips, a window update per read, the
    close), so 0.5 s ping and peer-exchange intervals plus SWIM and dissemination keep the
    connections at capacity: frames queue, opening a stream takes seconds, pings and
    attestations time out, and spurious quarantines cut Raft links for reasons unrelated to
    what is tested."""
    cfg = local_config()
    net = dataclasses.replace(cfg.network, ping_interval_s=5.0, peer_exchange_interval_s=2.0)
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=4.0, handshake_timeout_s=5.0)
    return dataclasses.replace(cfg, network=net, attestation=att)


def shard_config() -> NodeConfig:
    """``local_config`` re-attesting every 5 s instead of every second, pinging every 2 s and
    exchanging peers every 1 s instead of every 0.5 s: a federation of 6-7 nodes in one
    interpreter, moving megabytes, on a loaded 2-core machine (two pytest workers), must not
    lose its attestations to scheduling delays (score records live 3 intervals), and every
    stream a background loop opens costs the shared event loop about 16 frames (see
    :func:`gossip_config`). Until a peer's first ping, its RTT is unknown and sorts last among
    the holders a get asks first."""
    cfg = local_config()
    net = dataclasses.replace(cfg.network, ping_interval_s=2.0, peer_exchange_interval_s=1.0)
    att = dataclasses.replace(cfg.attestation, reattest_interval_s=5.0)
    return dataclasses.replace(cfg, network=net, attestation=att)


def manager_test_settings() -> ManagerSettings:
    """The local_test manager profile with a 0.1 s reconcile loop and a 0.2 s fallback poll
    of the committed state (``FAST`` in tests/manager/helpers.py; table above)."""
    from node.manager_settings import ManagerSettings

    return dataclasses.replace(ManagerSettings.for_profile("local_test"), reconcile_s=0.1,
                               follow_poll_s=0.2)


def shard_manager_settings() -> ManagerSettings:
    """The local_test manager profile with a 5-seat council (two members may be down at once
    and a quorum remains), no fsync (a dozen Raft logs on one loaded disk), and 2-4 s election
    timeouts: seven nodes sealing and moving shards in one interpreter stall it for longer than
    local_test's 0.3 s, and the council would hold elections instead of committing."""
    from node.manager_settings import ManagerSettings

    return dataclasses.replace(ManagerSettings.for_profile("local_test"), council_size=5,
                               reconcile_s=0.1, follow_poll_s=0.2, fsync=False, tick_s=0.05,
                               election_tick=40, heartbeat_tick=4)


# ----------------------------------------------------------------------------- nodes


def make_agent(tmp: Path, name: str, *, config: NodeConfig | None = None, build_tag: str = "",
               policy: Policy | None = None, bootstrap: tuple[str, ...] = (),
               gossip: bool = False, key: Ed25519PrivateKey | None = None, keys: Any = None,
               key_watch_s: float | None = None) -> Agent:
    """A node on loopback with a simulated TEE under ``tmp/name``; ``key`` restarts one with
    its identity, ``build_tag`` makes it report another build's measurement, ``gossip``
    attaches node/gossip.py as a real node does. ``keys`` (node/keys) gives the identity from
    a key provider (a token); ``key_watch_s`` attaches its watch (node/keys/watch.py)."""
    cfg = config or local_config()
    if bootstrap:
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, bootstrap=bootstrap))
    key = keys.identity if keys is not None else key or Ed25519PrivateKey.generate()
    provider = SimulatedProvider(tmp / name / "sim-tee", agent_measurement(build_tag))
    engine = AttestationEngine(
        {TeeKind.SIM: SimulatedVerifier()},
        policy or Policy.development(),
        identity_key=key,
        self_measurement=agent_measurement(""),
        record_ttl_s=3 * cfg.attestation.reattest_interval_s,
    )
    agent = Agent(config=cfg, identity=key, provider=provider, engine=engine, keys=keys)
    if key_watch_s is not None:
        from node.keys.watch import attach as attach_key_watch

        attach_key_watch(agent, interval_s=key_watch_s)
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
    listening sockets and its connections' sockets as the kernel closes a killed process's.

    py-libp2p's own ``close`` is not enough: it serves listeners from a task outside the
    node's scope (a cancelled node would go on accepting its peers' redials), and a connection
    whose close was interrupted by the cancellation counts as closed while its socket stays
    open. Either way a peer held a live connection to the dead node until the node's score
    record expired (measured: 2.6-3.1 s instead of 0.4 s with 1 s re-attestation; the crash
    arm of ``python -m bench reattest``)."""
    scope.cancel()
    await trio.sleep(0)
    with trio.move_on_after(1):
        await agent._close_listeners()
    network = agent.host.get_network()
    conns = [c for cs in list(network.connections.values())
             for c in list(cs if isinstance(cs, list) else [cs])]
    for c in conns:
        sock = _socket_of(c)
        if sock is not None:
            sock.close()
    for c in conns:  # then let py-libp2p forget them
        with trio.move_on_after(1), contextlib.suppress(Exception):
            await c.close()


def _socket_of(conn: Any) -> Any:
    """The trio socket under a py-libp2p connection (SwarmConn -> muxer -> secure session ->
    Noise reader/writer -> raw connection -> TCP stream -> SocketStream), or None."""
    obj = conn
    for _ in range(10):
        if isinstance(obj, trio.socket.SocketType):
            return obj
        for attr in ("muxed_conn", "secured_conn", "conn", "stream", "socket"):
            nxt = getattr(obj, attr, None)
            if nxt is not None and nxt is not obj:
                obj = nxt
                break
        else:
            return None
    return None


async def wait_until(pred: Callable[[], bool], timeout_s: float = 20.0, step_s: float = 0.05) -> None:
    """Return once ``pred()`` is true, checking every ``step_s``; ``trio.TooSlowError`` after
    ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(step_s)


def fully_attested(agents: list[Agent]) -> bool:
    """Whether every agent holds every other one as attested."""
    for a in agents:
        others = {b.peer_id for b in agents if b is not a}
        if not others <= {p.peer_id for p in a.peers.attested()}:
            return False
    return True


@asynccontextmanager
async def federation(tmp: Path, n: int, **kw: Any) -> AsyncIterator[list[Agent]]:
    """``n`` agents (``make_agent`` keywords in ``kw``), node 0 the bootstrap of the others;
    yields once all listen (not once they have attested: wait for :func:`fully_attested`)."""
    async with trio.open_nursery() as nursery:
        first = make_agent(tmp, "n0", **kw)
        await nursery.start(first.run)
        agents = [first]
        for i in range(1, n):
            a = make_agent(tmp, f"n{i}", bootstrap=(first.full_addrs()[0],), **kw)
            await nursery.start(a.run)
            agents.append(a)
        try:
            yield agents
        finally:
            for a in agents:
                a.stop()


def poll_until(pred: Callable[[], Any], timeout_s: float = 60.0, step_s: float = 0.2,
               what: str = "condition") -> Any:
    """The blocking twin of ``wait_until`` for tests that drive node processes from a plain
    thread: ``pred()``'s first true value, checking every ``step_s``; AssertionError naming
    ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"{what} not reached within {timeout_s:g}s")
