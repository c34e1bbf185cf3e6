"""The Prometheus collector of one node: reads, never computes.

Everything it exports is kept up to date by the node as it works (node/metrics.py's
``Counters`` and ``Timings``, the gossip layer's traffic counts, the Raft node's term and
commit index, the shard store's byte count) or refreshed on the node's loop by
:class:`node.telemetry.sampler.Sampler`. A scrape runs on the exporter's thread: each family
is read under the owner's lock or as one attribute read, and a family whose source fails is
left out of that scrape (and counted) rather than failing the whole scrape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from node.telemetry.catalog import BY_NAME
from node.telemetry.sampler import Sampler

log = logging.getLogger("enclave_swarm.telemetry")

# Distinct (event, reason) series of enclave_swarm_events_total; the rest are summed into
# reason="other" of their event (and events beyond the bound into event="other").
MAX_EVENT_SERIES = 400
MAX_LABEL_CHARS = 64

# Counters (event, reason) of node/metrics.py that have a family of their own.
VERDICT_EVENTS = {"attest_ok": "pass", "attest_rejected": "fail", "attest_missed": "missed",
                  "attest_deferred": "deferred"}
REPAIR_EVENTS = {"shard_repaired": "repaired", "shard_repair_failed": "repair_failed",
                 "shard_repair_scheduled": "scheduled", "shard_rebuilt": "rebuilt",
                 "shard_rebuild_failed": "rebuild_failed"}
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")  # consensus/tasks.py
FRAGMENT_STATES = ("pending", "assigned", "done", "failed")
QUARANTINE_CAUSES = ("failed", "unreachable", "revoked")
ROLES = ("manager", "council", "follower", "joining", "left", "revoked", "dissolved")
HISTOGRAMS = {"attestation": "attestation_seconds", "raft_commit": "raft_commit_seconds",
              "fragment_run": "fragment_run_seconds", "scheduler_decision": "scheduler_decision_seconds",
              "loop_stall": "loop_stall_seconds"}


def _family(name: str) -> Any:
    m = BY_NAME[name]
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
           "histogram": HistogramMetricFamily}[m.kind]
    return cls(m.full_name, m.help, labels=list(m.labels))


def _label(value: str) -> str:
    return (value or "none")[:MAX_LABEL_CHARS]


class NodeCollector(Collector):
    def __init__(self, agent: Any, sampler: Sampler) -> None:
        self.agent = agent
        self.sampler = sampler
        self.failures = 0

    def collect(self) -> Iterator[Metric]:
        for part in (self._node, self._counted, self._timed, self._gossip, self._raft,
                     self._shards, self._sampled):
            try:
                families = list(part())
            except Exception:  # a source mid-change or a bug: leave it out, never fail the scrape
                self.failures += 1
                self.agent.counters.inc("internal_error", f"metrics:{part.__name__}")
                log.debug("metrics: %s failed", part.__name__, exc_info=True)
                continue
            yield from families

    # ------------------------------------------------------------------ the families
    def _node(self) -> Iterator[Metric]:
        a = self.agent
        f = _family("node_info")
        f.add_metric([str(a.provider.kind), a.config.profile], 1)
        yield f
        f = _family("uptime_seconds")
        f.add_metric([], a._now() - a.started_at if a.started_at else 0.0)
        yield f
        f = _family("open_connections")
        f.add_metric([], sum(len(c) if isinstance(c, list) else 1
                             for c in list(a.host.get_network().connections.values())))
        yield f
        f = _family("loop_lost_seconds")
        f.add_metric([], a.loop_health.total_s)
        yield f

    def _counted(self) -> Iterator[Metric]:
        items = self.agent.counters.items()
        verdicts = _family("attestation_verdicts")
        quarantines = _family("quarantines")
        revocations = _family("revocations")
        repairs = _family("shard_repairs")
        events = _family("events")
        revoked = 0
        repaired: dict[str, int] = {}
        by_event: dict[tuple[str, str], int] = {}
        for (event, reason), n in sorted(items):
            if event in VERDICT_EVENTS:
                verdicts.add_metric([VERDICT_EVENTS[event], _label(reason or "ok")], n)
            elif event == "quarantined":
                quarantines.add_metric([_label(reason or "failed")], n)
            elif event == "revoked":
                revoked += n
            elif event in REPAIR_EVENTS:
                repaired[REPAIR_EVENTS[event]] = repaired.get(REPAIR_EVENTS[event], 0) + n
            key = (_label(event), _label(reason))
            if len(by_event) >= MAX_EVENT_SERIES and key not in by_event:
                key = (key[0], "other") if (key[0], "other") in by_event else ("other", "other")
            by_event[key] = by_event.get(key, 0) + n
        revocations.add_metric([], revoked)
        seen = {reason for (event, reason), _ in items if event == "quarantined"}
        for cause in QUARANTINE_CAUSES:
            if cause not in seen:
                quarantines.add_metric([cause], 0)
        for outcome in REPAIR_EVENTS.values():
            repairs.add_metric([outcome], repaired.get(outcome, 0))
        for (event, reason), n in by_event.items():
            events.add_metric([event, reason], n)
        yield from (verdicts, quarantines, revocations, repairs, events)

    def _timed(self) -> Iterator[Metric]:
        snap = self.agent.timings.snapshot()
        families = {name: _family(fam) for name, fam in HISTOGRAMS.items()}
        for (name, label), (bounds, cumulative, total, _n) in snap.items():
            f = families.get(name)
            if f is None:
                continue
            buckets = [(_le(b), c) for b, c in zip(bounds, cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            f.add_metric([label] if BY_NAME[HISTOGRAMS[name]].labels else [], buckets, total)
        yield from families.values()

    def _gossip(self) -> Iterator[Metric]:
        g = getattr(self.agent, "gossip", None)
        if g is None or not hasattr(g, "traffic"):
            return
        t = dict(g.traffic)
        msgs, nbytes = _family("gossip_messages"), _family("gossip_bytes")
        for d in ("in", "out"):
            msgs.add_metric([d], t[f"messages_{d}"])
            nbytes.add_metric([d], t[f"bytes_{d}"])
        s = _family("swim_suspicions")
        s.add_metric([], g.suspicions)
        yield from (msgs, nbytes, s)

    def _raft(self) -> Iterator[Metric]:
        from node.manager import role_of

        try:
            role = role_of(self.agent)
        except LookupError:
            return
        term, commit = role.term_and_commit()
        now = role.role_name()
        f = _family("raft_term")
        f.add_metric([], term)
        yield f
        f = _family("raft_commit_index")
        f.add_metric([], commit)
        yield f
        f = _family("raft_role")
        for r in ROLES:
            f.add_metric([r], 1 if r == now else 0)
        yield f
        f = _family("raft_leader_changes")
        f.add_metric([], role.leader_changes)
        yield f

    def _shards(self) -> Iterator[Metric]:
        from node.shards.service import service_of

        try:
            svc = service_of(self.agent)
        except KeyError:
            return
        f = _family("shard_objects")
        f.add_metric([], len(svc._objects))
        yield f
        used, quota = svc.store.usage()
        f = _family("shard_store_bytes")
        f.add_metric([], used)
        yield f
        f = _family("shard_store_quota_bytes")
        f.add_metric([], quota)
        yield f

    def _sampled(self) -> Iterator[Metric]:
        v = self.sampler.values  # one read: the sampler replaces the dict as a whole
        f = _family("attested_peers")
        for tee, n in sorted(v.get("attested_peers", {}).items()):
            f.add_metric([_label(tee)], n)
        yield f
        for name, states in (("jobs", JOB_STATES), ("fragments", FRAGMENT_STATES)):
            if name in v:
                f = _family(name)
                counts = v[name]
                for state in (*states, *sorted(set(counts) - set(states))):
                    f.add_metric([_label(state)], counts.get(state, 0))
                yield f
        for name in ("connected_peers", "fragments_running", "swim_members", "metrics_sample_seconds"):
            if name in v:
                f = _family(name)
                f.add_metric([], v[name])
                yield f
        cost = self.sampler.cost.snapshot()
        f = _family("metrics_cpu_seconds")
        f.add_metric(["sample"], cost["sample_cpu_s"])
        f.add_metric(["scrape"], cost["scrape_cpu_s"])
        yield f
        f = _family("metrics_scrapes")
        f.add_metric([], cost["scrapes"])
        yield f


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))
