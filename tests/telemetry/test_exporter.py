"""The metrics endpoint of real in-process nodes on loopback: what a scrape shows (parsed by
prometheus_client's own parser here; tests/telemetry/test_prometheus_scrape.py has Prometheus
itself scrape node processes), the bounded labels, a taken address, a scrape while the node's
loop is stalled, and a clean shutdown."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from node.agent import Agent
from node.telemetry.catalog import PREFIX
from node.telemetry.server import MetricsAddress, MetricsEndpoint, enable_metrics
from node.testing import fully_attested, make_agent, wait_until


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``name -> {sorted labels: value}`` of every sample."""
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def scrape_async(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    return await trio.to_thread.run_sync(scrape, url)


@asynccontextmanager
async def nodes_with_metrics(tmp: Path, n: int) -> AsyncIterator[list[tuple[Agent, MetricsEndpoint]]]:
    async with trio.open_nursery() as nursery:
        out: list[tuple[Agent, MetricsEndpoint]] = []
        for i in range(n):
            boot = (out[0][0].full_addrs()[0],) if out else ()
            a = make_agent(tmp, f"n{i}", bootstrap=boot, gossip=True)
            ep = enable_metrics(a, MetricsAddress("127.0.0.1", 0), sample_period_s=0.2)
            await nursery.start(a.run)
            out.append((a, ep))
        try:
            yield out
        finally:
            for a, _ in out:
                a.stop()


async def test_three_nodes_export_their_peers_gossip_and_counters(tmp_path: Path) -> None:
    async with nodes_with_metrics(tmp_path, 3) as nodes:
        agents = [a for a, _ in nodes]
        await wait_until(lambda: fully_attested(agents), 30)

        async def each_sees_two_sim_peers() -> bool:
            for _, ep in nodes:
                m = await scrape_async(ep.url)
                if m.get(PREFIX + "attested_peers", {}).get((("tee", "sim"),)) != 2:
                    return False
                if not m.get(PREFIX + "gossip_messages_total", {}).get((("direction", "in"),)):
                    return False
            return True

        deadline = trio.current_time() + 30
        while not await each_sees_two_sim_peers():
            assert trio.current_time() < deadline, "the scrapes never showed the attested peers"
            await trio.sleep(0.2)
        m = await scrape_async(nodes[0][1].url)
        verdicts = m[PREFIX + "attestation_verdicts_total"]
        assert verdicts[(("reason", "ok"), ("result", "pass"))] >= 2
        assert m[PREFIX + "attestation_seconds_count"][(("phase", "first"),)] >= 2
        assert m[PREFIX + "gossip_bytes_total"][(("direction", "out"),)] > 0
        assert m[PREFIX + "open_connections"][()] >= 2
        assert m[PREFIX + "process_resident_memory_bytes"][()] > 0
        assert m[PREFIX + "node_info"][(("profile", "local_test"), ("tee", "sim"))] == 1
        # bounded labels: no label value anywhere is a peer id
        ids = {a.peer_id for a in agents}
        for series in m.values():
            for labels in series:
                assert not ids & {v for _, v in labels}
        # each node has a registry of its own: node 1's scrape is about node 1
        up0 = m[PREFIX + "uptime_seconds"][()]
        assert up0 > 0 and nodes[1][1].registry is not nodes[0][1].registry


async def test_a_taken_address_is_logged_and_the_node_runs_on_then_serves(tmp_path: Path, caplog) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    async with trio.open_nursery() as nursery:
        a = make_agent(tmp_path, "n0")
        ep = enable_metrics(a, MetricsAddress("127.0.0.1", port), retry_s=0.2)
        await nursery.start(a.run)  # the node starts all the same
        assert not ep.serving and "cannot listen on 127.0.0.1:" in (ep.error or "")
        assert a.counters.get("metrics_bind_failed", "EADDRINUSE") >= 1
        assert a.status()["metrics"]["serving"] is False
        assert any("metrics: cannot listen" in r.getMessage() for r in caplog.records)
        held.close()  # the address frees: the endpoint comes up on its own
        await wait_until(lambda: ep.serving, 10)
        assert (await scrape_async(ep.url))[PREFIX + "uptime_seconds"][()] > 0
        a.stop()
        await a.wait_stopped()
        nursery.cancel_scope.cancel()


async def test_a_scrape_answers_while_the_node_loop_is_stalled(tmp_path: Path) -> None:
    """The collector reads counters from the exporter's thread; it never waits on the node's
    loop, so a scrape answers within its timeout while that loop is blocked."""
    async with nodes_with_metrics(tmp_path, 1) as nodes:
        a, ep = nodes[0]
        got: list[object] = []

        def scrape_during_stall() -> None:
            got.append(scrape(ep.url, timeout_s=3.0))

        t = threading.Thread(target=scrape_during_stall)
        t.start()
        time.sleep(6.0)  # blocks the trio loop on purpose: the stall under test
        t.join()
        assert got and PREFIX + "uptime_seconds" in got[0]  # type: ignore[operator]
        await wait_until(lambda: a.loop_health.total_s >= 5.0, 5)
        m = await scrape_async(ep.url)
        assert m[PREFIX + "loop_stall_seconds_count"][()] >= 1
        assert m[PREFIX + "loop_lost_seconds_total"][()] >= 5.0


async def test_stopping_the_node_closes_the_endpoint(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        a = make_agent(tmp_path, "n0")
        ep = enable_metrics(a, MetricsAddress("127.0.0.1", 0))
        await nursery.start(a.run)
        port, thread = ep.bound_port, ep._thread
        assert port and ep.serving and thread is not None and thread.is_alive()
        a.stop()
        await a.wait_stopped()
        await wait_until(lambda: not ep.serving, 10)
    assert not thread.is_alive()  # the server's thread was joined
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


async def test_the_metrics_account_their_own_cpu_time(tmp_path: Path) -> None:
    """Each scrape's thread CPU time and each refresh of the sampler are added up, exported
    (enclave_swarm_metrics_cpu_seconds_total, _scrapes_total) and shown in status."""
    async with nodes_with_metrics(tmp_path, 1) as [(a, ep)]:
        await wait_until(lambda: ep.cost.snapshot()["sample_cpu_s"] > 0, 10)
        for _ in range(5):
            await scrape_async(ep.url)
        got = await scrape_async(ep.url)  # counts the five before it, not itself
        assert got[f"{PREFIX}metrics_scrapes_total"][()] >= 5
        cpu = got[f"{PREFIX}metrics_cpu_seconds_total"]
        assert cpu[(("part", "scrape"),)] > 0 and cpu[(("part", "sample"),)] > 0
        cost = a.status()["metrics"]["cost"]
        assert cost["scrapes"] == 6 and cost["scrape_cpu_s"] >= cpu[(("part", "scrape"),)]


async def test_an_ipv6_loopback_endpoint_serves(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        a = make_agent(tmp_path, "n0")
        ep = enable_metrics(a, MetricsAddress("::1", 0))
        await nursery.start(a.run)
        assert ep.url.startswith("http://[::1]:")
        got = await scrape_async(ep.url)
        assert f"{PREFIX}node_info" in got
        a.stop()
