"""What the Prometheus metrics cost (node/telemetry), each figure against a baseline measured
in the same run.

1. connect: attested connect time (two in-process nodes, from the dial until both hold the
   other as attested) with metrics off and on. "On" is the endpoint serving and its sampler
   running on both nodes, and a scraper process reading both every ``--scrape-interval``
   seconds (1 s: fifteen times Prometheus' default rate) on a fixed schedule, so a timed
   window meets scrapes at their real rate whatever its phase. Goal: on <= 1.03x off.
2. gossip: gossip throughput on three in-process nodes (gossip attached, fully attested):
   node 0 publishes a burst of ``--records`` records and the time until both others accepted
   the last one gives records per second; off and on (as above). Goal: time ratio <= 1.03x.

   Both parts: one discarded warm-up round per arm, then paired rounds in ABBA order (off-on,
   on-off, ...); wall time and the process's CPU time (every thread: the exporter's too; less
   disturbed by other work on the machine); each arm's median and IQR, and the ratio of
   medians with a 95 % bootstrap interval over the pairs (bench/spread.py). The verdict says
   met (the interval below the goal), not met (above) or that the run cannot tell.
3. scrape: the time a scrape takes (GET /metrics from another process, median and p99 of
   ``--scrapes``) for a node whose state holds 100 attested peers and 1,000 jobs, against the
   same node empty; also while the node's own thread is kept busy (a CPU-bound task in its
   trio loop), and the sampler's refresh time on the loop at that size. The state is built
   in process: 100 peers with real Ed25519 peer ids entered in the real ``PeerTable`` as
   connected and attested (TEE sim), and 1,000 jobs (2 fragments x 2 replicas each) applied
   through the real consensus commands (``SubmitJob``) to the ``SwarmState`` the node's
   manager role holds; no network traffic (100 real peers are too heavy for two cores).
   The committed state admits at most ``consensus.tasks.MAX_JOBS`` (256) jobs, so this
   benchmark raises that cap in its own process while it builds the state (the issue asks for
   1,000); a scrape never reads the jobs (the sampler counts them on the loop when the state
   index moves), so the scrape figure does not depend on the count, the refresh time does.
4. account: the cost read rather than inferred from two noisy arms. Three gossip nodes with
   metrics on, scraped every ``--scrape-interval``, publish ``--account-bursts`` bursts; over
   that window the process's CPU time, and the CPU time the metrics themselves spent, as each
   node accounts it (``MetricsCost``: thread CPU time of every sampler refresh on the loop and
   of every scrape's thread). The share of the process's CPU that is the metrics' gives the
   cost ratio it implies, 1 / (1 - share), and the same at Prometheus' default 15 s interval.
   What this does not see: the GIL hand-offs a scrape's thread forces on the loop (parts 1
   and 2 bound those), and the per-message counting, which runs with metrics off too (the
   counters are status --json's).

    python -m bench metrics
    python -m bench.bench_metrics --rounds 5 --only connect       # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.peerinfo import info_from_p2p_addr

from bench.spread import quartiles, ratio_ci, verdict
from node.config import NodeConfig
from node.telemetry.sampler import SAMPLE_PERIOD_S
from node.telemetry.server import MetricsAddress, enable_metrics

PARTS = ("connect", "gossip", "scrape", "account")
ACCOUNT_BURSTS = 40
PROMETHEUS_INTERVAL_S = 15.0  # Prometheus' default scrape_interval
ROUNDS = 41
GOSSIP_ROUNDS = 21
RECORDS = 2000
GOAL = 1.03
SCRAPES = 200
POLL_S = 0.0005
PEERS, JOBS = 100, 1000

# The scraper: one separate process for the whole run, as Prometheus is one. It reads a line of
# URLs from stdin (empty: scrape nothing), acknowledges it, and GETs each URL every interval.
SCRAPER = r"""
import select, sys, time, urllib.request
urls, every = [], float(sys.argv[1])
due = time.monotonic() + every
while True:
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, due - time.monotonic()))
    if ready:
        line = sys.stdin.readline()
        if not line:
            break
        urls = line.split()
        print("ok", flush=True)
        continue
    # A fixed schedule, never reset by a change of URLs: a timed window of any length meets
    # scrapes at their real rate, whatever its phase (a reset would put the first scrape a
    # whole period after each window's start, so a window shorter than it never met one).
    due += every
    for u in urls:
        try:
            urllib.request.urlopen(u, timeout=5).read()
        except OSError:
            pass
"""


class Scraper:
    def __init__(self, every_s: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SCRAPER, str(every_s)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def scrape(self, urls: list[str]) -> None:
        """Scrape ``urls`` from now on (none: stop scraping)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(urls) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# Timed scrapes from a separate process: prints one duration (seconds) per line.
TIMER = r"""
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
urllib.request.urlopen(url, timeout=10).read()  # warm-up
for _ in range(n):
    t = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=10).read()
    print(time.perf_counter() - t, len(body), flush=True)
"""


def _quiet_config() -> NodeConfig:
    from node.testing import local_config

    cfg = local_config()
    return dataclasses.replace(
        cfg, network=dataclasses.replace(cfg.network, ping_interval_s=3600.0,
                                         peer_exchange_interval_s=3600.0),
        attestation=dataclasses.replace(cfg.attestation, reattest_interval_s=3600.0))


async def _connect_s(tmp: Path, i: int, metrics: bool, scraper: Scraper) -> tuple[float, float]:
    """(wall seconds, process CPU seconds: every thread, the exporter's included)."""
    from node.testing import make_agent

    cfg = _quiet_config()
    a, b = make_agent(tmp, f"a{i}{metrics}", config=cfg), make_agent(tmp, f"b{i}{metrics}", config=cfg)
    eps = [enable_metrics(x, MetricsAddress("127.0.0.1", 0)) for x in (a, b)] if metrics else []
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        scraper.scrape([e.url for e in eps])
        info = info_from_p2p_addr(multiaddr.Multiaddr(a.full_addrs()[0]))
        t, c = time.perf_counter(), time.process_time()
        n.start_soon(b.host.connect, info)
        while not (a.peers.is_attested(b.peer_id) and b.peers.is_attested(a.peer_id)):
            await trio.sleep(POLL_S)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        scraper.scrape([])
        a.stop()
        b.stop()
    return dt, dc


async def _gossip_s(tmp: Path, i: int, metrics: bool, scraper: Scraper, records: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one burst of ``records``."""
    from node.testing import fully_attested, make_agent, wait_until

    cfg = _quiet_config()
    agents: list[Any] = []
    async with trio.open_nursery() as n:
        for k in range(3):
            boot = (agents[0].full_addrs()[0],) if agents else ()
            a = make_agent(tmp, f"g{i}{metrics}{k}", config=cfg, bootstrap=boot, gossip=True)
            if metrics:
                enable_metrics(a, MetricsAddress("127.0.0.1", 0))
            await n.start(a.run)
            agents.append(a)
        await wait_until(lambda: fully_attested(agents), 60)
        await wait_until(lambda: all(a.gossip.membership.num_members() == 3 for a in agents), 60)
        scraper.scrape([a.status()["metrics"]["url"] for a in agents] if metrics else [])
        last = f"burst-{records - 1}".encode()
        seen = [trio.Event(), trio.Event()]
        for k, a in enumerate(agents[1:]):
            a.gossip.subscribe("probe", lambda rec, ev=seen[k]: ev.set() if rec.payload == last else None)
        t, c = time.perf_counter(), time.process_time()
        for j in range(records):
            agents[0].gossip.publish("probe", agents[0].peer_id, f"burst-{j}".encode())
            if j % 10 == 9:
                await trio.sleep(0)
        for ev in seen:
            await ev.wait()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        scraper.scrape([])
        for a in agents:
            a.stop()
    return dt, dc


async def _account(tmp: Path, scraper: Scraper, records: int, bursts: int) -> dict[str, float]:
    """Three gossip nodes, metrics on and scraped: the process's CPU and wall time over
    ``bursts`` bursts of ``records``, and the metrics' own CPU over the same window."""
    from node.testing import fully_attested, make_agent, wait_until

    cfg = _quiet_config()
    agents: list[Any] = []
    eps: list[Any] = []
    async with trio.open_nursery() as n:
        for k in range(3):
            boot = (agents[0].full_addrs()[0],) if agents else ()
            a = make_agent(tmp, f"acct{k}", config=cfg, bootstrap=boot, gossip=True)
            eps.append(enable_metrics(a, MetricsAddress("127.0.0.1", 0)))
            await n.start(a.run)
            agents.append(a)
        await wait_until(lambda: fully_attested(agents), 60)
        await wait_until(lambda: all(a.gossip.membership.num_members() == 3 for a in agents), 60)
        scraper.scrape([e.url for e in eps])
        before = [e.cost.snapshot() for e in eps]
        t, c = time.perf_counter(), time.process_time()
        for b in range(bursts):
            last = f"acct-{b}-{records - 1}".encode()
            seen = [trio.Event(), trio.Event()]
            for k, a in enumerate(agents[1:]):
                a.gossip.subscribe(f"acct{b}", lambda rec, ev=seen[k], last=last:
                                   ev.set() if rec.payload == last else None)
            for j in range(records):
                agents[0].gossip.publish(f"acct{b}", agents[0].peer_id, f"acct-{b}-{j}".encode())
                if j % 10 == 9:
                    await trio.sleep(0)
            for ev in seen:
                await ev.wait()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        after = [e.cost.snapshot() for e in eps]
        scraper.scrape([])
        for a in agents:
            a.stop()
    spent = {key: sum(x[key] - y[key] for x, y in zip(after, before, strict=True))
             for key in ("sample_cpu_s", "scrape_cpu_s", "scrapes")}
    return {"wall": wall, "cpu": cpu, **spent}


def _report_account(r: dict[str, float], every_s: float, goal: float) -> None:
    metrics = r["sample_cpu_s"] + r["scrape_cpu_s"]
    share = metrics / r["cpu"]
    per_scrape = r["scrape_cpu_s"] / r["scrapes"] if r["scrapes"] else 0.0
    print(f"  window {r['wall']:.1f} s, process CPU {r['cpu']:.2f} s; the metrics' own CPU "
          f"{metrics * 1000:.1f} ms: sampler {r['sample_cpu_s'] * 1000:.1f} ms, "
          f"{r['scrapes']:.0f} scrapes {r['scrape_cpu_s'] * 1000:.1f} ms ({per_scrape * 1000:.2f} ms each)")
    implied = 1 / (1 - share)
    print(f"  share of the process's CPU {share * 100:.2f}%: implied cost {implied:.4f}x "
          f"({'met' if implied <= goal else 'NOT met'}: goal <= {goal:g}x)")
    # The same nodes at Prometheus' default interval: the scrapes scale with their rate.
    scrape_rate = r["scrapes"] / r["wall"] * (every_s / PROMETHEUS_INTERVAL_S)
    default = (r["sample_cpu_s"] + scrape_rate * r["wall"] * per_scrape) / r["cpu"]
    print(f"  at Prometheus' default {PROMETHEUS_INTERVAL_S:g} s interval: share {default * 100:.3f}%, "
          f"implied {1 / (1 - default):.4f}x")


def _build_state(agent: Any, tmp: Path, peers: int, jobs: int) -> None:
    """``peers`` attested peers in the agent's PeerTable and ``jobs`` jobs in its manager role's
    state, through the real table methods and consensus commands (see the module docstring)."""
    from consensus import tasks as ct
    from consensus.scheduler import Requirements, Weights
    from consensus.state import Join, SwarmState
    from consensus.tasks import TASK_REGISTRY, SubmitJob
    from node.manager import ManagerRole
    from node.testing import manager_test_settings
    from overlay.host import peer_id_of

    now = time.time()
    for _ in range(peers):
        pid = peer_id_of(Ed25519PrivateKey.generate())
        agent.peers.on_connected(pid, [], now)
        agent.peers.on_attest_result(pid, accepted=True, reason="ok", now=now, score=90, tee="sim",
                                     measurement=None, record_expires_at=now + 3600)
    role = ManagerRole(agent, tmp / "role", manager_test_settings())
    role.install()
    st = SwarmState()
    members = [peer_id_of(Ed25519PrivateKey.generate()) for _ in range(4)]  # real ids, never dialled
    for k, member in enumerate(members):
        st, r = TASK_REGISTRY.apply(st, Join(member, f"p{k}", "eu", "sev-snp", 900, True))
        assert r.ok, r.error
    spec, wasm = hashlib.sha256(b"spec").digest(), hashlib.sha256(b"wasm").digest()
    cap = ct.MAX_JOBS
    ct.MAX_JOBS = max(cap, jobs)  # see the module docstring: the state's cap, raised here only
    try:
        for j in range(jobs):
            st, r = TASK_REGISTRY.apply(st, SubmitJob(f"job-{j:04d}", members[0], spec, wasm, 2, 2,
                                                      Requirements(), Weights(), 10**12))
            assert r.ok, r.error
    finally:
        ct.MAX_JOBS = cap
    # As a follower's view (the role's own Raft state is its run's to manage): the freshest
    # committed state this node knows, which is what the sampler reads.
    role.followed, role.followed_index = st, 10**6


def _timed_scrapes(url: str, n: int) -> tuple[list[float], int]:
    r = subprocess.run([sys.executable, "-c", TIMER, url, str(n)], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"the timed scrapes failed: {r.stderr.strip()[-2000:]}")
    out = r.stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    return [float(r[0]) for r in rows], int(rows[-1][1])


async def _scrape_arm(tmp: Path, name: str, peers: int, jobs: int, n: int, busy: bool) -> dict[str, Any]:
    from node.testing import make_agent

    a = make_agent(tmp, name, config=_quiet_config())
    ep = enable_metrics(a, MetricsAddress("127.0.0.1", 0))
    _build_state(a, tmp / name, peers, jobs)
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        # The endpoint and its sampler only: the node's own services (its maintenance loop
        # would mark the table's peers disconnected: they have no libp2p connection) stay off.
        await nursery.start(ep.run)
        t = time.perf_counter()
        ep.sampler.refresh(recount=True)  # the jobs counted again, as after a state change
        out["refresh_s"] = time.perf_counter() - t
        stop = trio.Event()
        if busy:
            async def spin() -> None:  # the node's thread kept busy: pure-Python work, yielding rarely
                while not stop.is_set():
                    x = 0
                    for k in range(200_000):
                        x += k * k
                    await trio.sleep(0)
            nursery.start_soon(spin)
        try:
            times, size = await trio.to_thread.run_sync(_timed_scrapes, ep.url, n)
        except RuntimeError as exc:
            raise RuntimeError(f"arm {name}: {exc}") from None
        stop.set()
        out.update(times=times, size=size, attested=ep.sampler.values["attested_peers"],
                   jobs=sum(ep.sampler.values.get("jobs", {}).values()))
        nursery.cancel_scope.cancel()
    return out


def _paired(rounds: int, run: Any) -> tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]:
    """``rounds`` paired rounds of ``run(i, metrics)`` -> (wall, cpu), each (off, on). One
    discarded warm-up round of each arm first; then the order alternates off-on, on-off, ...
    (ABBA), so neither arm always runs first (after the other's garbage, in its cache)."""
    run(-1, False)
    run(-1, True)
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for i in range(rounds):
        for metrics in ((False, True) if i % 2 == 0 else (True, False)):
            w, c = run(i, metrics)
            wall[metrics].append(w)
            cpu[metrics].append(c)
    return wall, cpu


def _report(what: str, arms: tuple[list[float], list[float]], unit: str, scale: float, goal: float,
            per: int | None = None) -> None:
    off, on = arms
    ratio, lo, hi = ratio_ci(off, on)
    parts = []
    for name, xs in (("off", off), ("on", on)):
        q1, q2, q3 = quartiles(xs)
        rate = f" = {per / q2:,.0f} records/s" if per else ""
        parts.append(f"{name} median {q2 * scale:.2f} {unit}{rate} (IQR {q1 * scale:.2f}..{q3 * scale:.2f})")
    print(f"  {what}: {'; '.join(parts)}")
    print(f"    ratio on/off {ratio:.3f}x, 95% bootstrap interval {lo:.3f}..{hi:.3f}x: "
          f"{verdict(lo, hi, goal)}")


def _ms(xs: list[float]) -> str:
    return (f"median {statistics.median(xs) * 1000:.2f} ms "
            f"(min {min(xs) * 1000:.2f}, max {max(xs) * 1000:.2f})")


def _p99(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.99) - 1)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_metrics", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"connect rounds per arm ({ROUNDS})")
    ap.add_argument("--gossip-rounds", type=int, default=GOSSIP_ROUNDS, help=f"({GOSSIP_ROUNDS})")
    ap.add_argument("--records", type=int, default=RECORDS, help=f"gossip burst size ({RECORDS})")
    ap.add_argument("--scrapes", type=int, default=SCRAPES, help=f"timed scrapes per arm ({SCRAPES})")
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="the scraper's period, s (1)")
    ap.add_argument("--account-bursts", type=int, default=ACCOUNT_BURSTS,
                    help=f"bursts of --records in the account part ({ACCOUNT_BURSTS})")
    ap.add_argument("--goal", type=float, default=GOAL, help=f"the ratio to meet ({GOAL:g})")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    if parts - set(PARTS):
        ap.error(f"unknown part(s): {', '.join(sorted(parts - set(PARTS)))}")
    from node.logs import setup_logging

    setup_logging("text", "error")
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    scraper = Scraper(args.scrape_interval)
    if "connect" in parts:
        wall, cpu = _paired(args.rounds, lambda i, m: trio.run(_connect_s, tmp, i, m, scraper))
        print(f"connect (dial to both attested), {args.rounds} rounds each, arms alternating "
              f"(ABBA), metrics on = serving, sampled and scraped every {args.scrape_interval:g} s:")
        _report("wall", wall, "ms", 1000, args.goal)
        _report("CPU (process, all threads)", cpu, "ms", 1000, args.goal)
    if "gossip" in parts:
        wall, cpu = _paired(args.gossip_rounds,
                            lambda i, m: trio.run(_gossip_s, tmp, i, m, scraper, args.records))
        print(f"gossip, bursts of {args.records} records over 3 nodes, {args.gossip_rounds} rounds each, "
              f"arms alternating (ABBA); time per burst (records/s = {args.records} / time):")
        _report("wall", wall, "ms", 1000, args.goal, per=args.records)
        _report("CPU (process, all threads)", cpu, "ms", 1000, args.goal)
    if "account" in parts:
        r = trio.run(_account, tmp, scraper, args.records, args.account_bursts)
        print(f"account, 3 gossip nodes with metrics on, scraped every {args.scrape_interval:g} s, "
              f"{args.account_bursts} bursts of {args.records} records (the cost as the nodes "
              "account it):")
        _report_account(r, args.scrape_interval, args.goal)
    scraper.close()
    if "scrape" in parts:
        empty = trio.run(_scrape_arm, tmp, "empty", 0, 0, args.scrapes, False)
        full = trio.run(_scrape_arm, tmp, "full", PEERS, JOBS, args.scrapes, False)
        busy = trio.run(_scrape_arm, tmp, "busy", PEERS, JOBS, args.scrapes, True)
        base = statistics.median(empty["times"])
        print(f"scrape, {args.scrapes} GETs from another process: empty node {_ms(empty['times'])}, "
              f"{empty['size']:,} bytes")
        for label, r in ((f"{PEERS} attested peers and {JOBS:,} jobs", full),
                         ("the same, node thread busy", busy)):
            print(f"  {label}: {_ms(r['times'])}, p99 {_p99(r['times']) * 1000:.2f} ms, "
                  f"{r['size']:,} bytes; ratio {statistics.median(r['times']) / base:.2f}x the empty node "
                  f"(state seen: {r['attested']} peers, {r['jobs']} jobs)")
        print(f"  sampler refresh on the node's loop at that size, jobs recounted: "
              f"{full['refresh_s'] * 1000:.2f} ms (at most every {SAMPLE_PERIOD_S:g} s; "
              f"empty node {empty['refresh_s'] * 1000:.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
