"""Every metric a node exports, in one table: the collector builds its families from it, and
the documentation test checks that docs/operations.md lists each one.

Conventions (Prometheus'): the ``enclave_swarm_`` prefix; counters end in ``_total`` (the
name here is the family's, which prometheus_client exposes with ``_total``); durations are
``_seconds`` histograms; sizes are ``_bytes``. Label values come from small fixed sets (a TEE
kind, a verdict's result, a reason class, a job state), never a peer id or a job id.
"""

from __future__ import annotations

import dataclasses

PREFIX = "enclave_swarm_"


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str            # without the prefix; counters without "_total"
    kind: str            # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

    @property
    def exposed_name(self) -> str:
        """The name a scrape shows (counters get ``_total``; histograms ``_bucket``/``_sum``/
        ``_count`` series under this name)."""
        return self.full_name + ("_total" if self.kind == "counter" else "")


CATALOG: tuple[Metric, ...] = (
    Metric("node_info", "gauge", "Always 1; the labels say what this node runs as.",
           ("tee", "profile")),
    # --- peers and attestation
    Metric("attested_peers", "gauge", "Peers attested now, by the TEE kind of their evidence.",
           ("tee",)),
    Metric("connected_peers", "gauge", "Peers with a live connection (attested or not)."),
    Metric("open_connections", "gauge", "libp2p connections open now (all peers)."),
    Metric("attestation_verdicts", "counter",
           "Attestations this node judged or attempted, by result (pass, fail, missed, deferred) "
           "and reason class.", ("result", "reason")),
    Metric("attestation_seconds", "histogram",
           "Time from challenge to verdict of a peer's attestation, first or re-attestation.",
           ("phase",)),
    Metric("quarantines", "counter",
           "Peers this node quarantined, by cause (failed evidence, unreachable, revoked).",
           ("cause",)),
    Metric("revocations", "counter", "Committed revocations this node applied."),
    # --- gossip and membership
    Metric("gossip_messages", "counter", "Gossip messages (SWIM and records), by direction.",
           ("direction",)),
    Metric("gossip_bytes", "counter", "Gossip bytes on the wire (frames), by direction.",
           ("direction",)),
    Metric("swim_suspicions", "counter", "Members this node saw become suspect (SWIM)."),
    Metric("swim_members", "gauge", "Members alive or suspect in this node's SWIM view."),
    # --- consensus
    Metric("raft_term", "gauge", "The Raft term this node knows (its own, or the followed one)."),
    Metric("raft_role", "gauge", "1 for this node's role, 0 for the others.", ("role",)),
    Metric("raft_commit_index", "gauge", "The highest committed log index this node knows."),
    Metric("raft_commit_seconds", "histogram",
           "Time from this node proposing an entry (as manager) to applying it."),
    Metric("raft_leader_changes", "counter", "Changes of the manager (Raft leader) this node saw."),
    # --- shards
    Metric("shard_objects", "gauge", "Data objects this node owns (put through it)."),
    Metric("shard_store_bytes", "gauge", "Bytes of shards this node holds for owners."),
    Metric("shard_store_quota_bytes", "gauge", "The shard store's quota."),
    Metric("shard_repairs", "counter", "Shard repairs and rebuilds, by outcome.", ("outcome",)),
    # --- jobs
    Metric("jobs", "gauge", "Jobs in the committed state, by state.", ("state",)),
    Metric("fragments", "gauge", "Fragment replicas of live jobs in the committed state, by state.",
           ("state",)),
    Metric("fragments_running", "gauge", "Fragment replicas running on this node now."),
    Metric("fragment_run_seconds", "histogram",
           "Sandbox run time of the fragments this node ran, by result.", ("result",)),
    Metric("scheduler_decision_seconds", "histogram",
           "Time the manager took to compute one placement decision."),
    # --- the node itself
    Metric("loop_stall_seconds", "histogram",
           "Stalls of this node's event loop (time it woke late), each observed once."),
    Metric("loop_lost_seconds", "counter", "Event-loop time lost in stalls since start."),
    Metric("uptime_seconds", "gauge", "Seconds since the node started."),
    Metric("events", "counter",
           "Everything the node counts by reason (refusals, drops, failures): status --json's "
           "counters. Reasons beyond the series bound are summed under reason=\"other\".",
           ("event", "reason")),
    Metric("metrics_sample_seconds", "gauge",
           "How long the last refresh of the sampled gauges took on the node's loop."),
    Metric("metrics_cpu_seconds", "counter",
           "CPU time this node spent on its own metrics: refreshing the sampled gauges "
           "(part=\"sample\", on the node's loop) and answering scrapes (part=\"scrape\", on "
           "the exporter's threads).", ("part",)),
    Metric("metrics_scrapes", "counter", "Scrapes of this endpoint answered."),
)

# prometheus_client's process collector, registered with the same prefix: resident memory,
# open file descriptors, CPU seconds, start time.
PROCESS_METRICS = ("process_resident_memory_bytes", "process_virtual_memory_bytes",
                   "process_open_fds", "process_max_fds", "process_cpu_seconds_total",
                   "process_start_time_seconds")

BY_NAME = {m.name: m for m in CATALOG}
