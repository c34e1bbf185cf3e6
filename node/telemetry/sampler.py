"""The gauges that need a count over the node's tables (peers by TEE kind, jobs and fragments
by state), refreshed on the node's own loop every ``period_s``, so that a scrape only reads
the last result and never walks state itself.

The jobs and fragments are counted again only when the committed state moved (its index
changed); the peer table is at most ``PeerTable.max_entries`` long. The time a refresh took
is exported too (``enclave_swarm_metrics_sample_seconds``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import trio

log = logging.getLogger("enclave_swarm.telemetry")

SAMPLE_PERIOD_S = 2.0


class MetricsCost:
    """The CPU time a node spends on its own metrics, by thread CPU time (``time.thread_time``,
    so other threads' work in the meantime is not counted): the sampler's refreshes on the
    loop and each scrape on the exporter's thread. What the metrics cost is then read, not
    inferred from two noisy runs (bench/bench_metrics.py, part ``account``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes run on threads of their own
        self.sample_cpu_s = 0.0
        self.scrape_cpu_s = 0.0
        self.scrapes = 0

    def add_sample(self, cpu_s: float) -> None:
        with self._lock:
            self.sample_cpu_s += cpu_s

    def add_scrape(self, cpu_s: float) -> None:
        with self._lock:
            self.scrape_cpu_s += cpu_s
            self.scrapes += 1

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"sample_cpu_s": self.sample_cpu_s, "scrape_cpu_s": self.scrape_cpu_s,
                    "scrapes": self.scrapes}


class Sampler:
    """``values`` is replaced as a whole at each refresh (the exporter thread reads it)."""

    def __init__(self, agent: Any, *, period_s: float = SAMPLE_PERIOD_S,
                 cost: MetricsCost | None = None) -> None:
        self.agent = agent
        self.period_s = period_s
        self.cost = cost or MetricsCost()
        self.values: dict[str, Any] = {}
        self._jobs_at: int | None = None
        self._jobs: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def refresh(self, *, recount: bool = False) -> None:
        """Recompute the sampled gauges (``recount``: the jobs too, even if the state did not
        move)."""
        began, cpu = time.perf_counter(), time.thread_time()
        if recount:
            self._jobs_at = None
        tee: collections.Counter[str] = collections.Counter()
        connected = 0
        for p in self.agent.peers.all():
            if p.connected:
                connected += 1
                if p.attested:  # as PeerTable.attested() and status's attested_peers count
                    tee[p.tee or "unknown"] += 1
        out: dict[str, Any] = {"attested_peers": dict(tee), "connected_peers": connected}
        jobs = self._jobs_by_state()
        if jobs is not None:
            out["jobs"], out["fragments"] = jobs
        tasks = getattr(self.agent, "tasks", None)
        if tasks is not None:
            out["fragments_running"] = sum(1 for r in tasks.executor.runs.values() if r.finished is None)
        gossip = getattr(self.agent, "gossip", None)
        if gossip is not None and hasattr(gossip, "membership"):
            out["swim_members"] = gossip.membership.num_members()
        out["metrics_sample_seconds"] = time.perf_counter() - began
        self.values = out
        self.cost.add_sample(time.thread_time() - cpu)

    def _jobs_by_state(self) -> tuple[dict[str, int], dict[str, int]] | None:
        from consensus import tasks as ct
        from node.manager import role_of

        try:
            role = role_of(self.agent)
        except LookupError:
            return None
        st, idx = role.view()
        if idx != self._jobs_at:
            jobs: collections.Counter[str] = collections.Counter()
            frags: collections.Counter[str] = collections.Counter()
            for j in ct.jobs(st).values():
                jobs[j["status"]] += 1
                if j["status"] in ct.LIVE_JOB:
                    for frag in j["frags"]:
                        for rep in frag:
                            frags[rep["st"]] += 1
            self._jobs, self._jobs_at = (dict(jobs), dict(frags)), idx
        return self._jobs

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.refresh()
        task_status.started()
        while True:
            await trio.sleep(self.period_s)
            try:
                self.refresh()
            except Exception:  # a bug here must not take the node down; the gauges go stale
                self.agent.counters.inc("internal_error", "metrics-sample")
                log.exception("refreshing the sampled metrics failed")
