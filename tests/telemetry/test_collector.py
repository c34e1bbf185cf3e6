"""The collector's families, read straight from a real (not running) node's registry: counters
mapped to their families, histograms with Prometheus' cumulative ``le`` buckets, zero-filled
fixed label sets, and the bound on the ``events`` series however many reasons the node counts."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node.telemetry.collector import MAX_EVENT_SERIES
from node.telemetry.server import MetricsAddress, MetricsEndpoint
from node.testing import make_agent


def samples(ep: MetricsEndpoint) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(generate_latest(ep.registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def endpoint(tmp: Path) -> MetricsEndpoint:
    return MetricsEndpoint(make_agent(tmp, "n0"), MetricsAddress("127.0.0.1", 0))


def test_counters_and_timings_become_their_families(tmp_path: Path) -> None:
    ep = endpoint(tmp_path)
    a = ep.agent
    a.counters.inc("attest_ok", n=3)
    a.counters.inc("attest_rejected", "measurement")
    a.counters.inc("attest_missed", "timeout", 2)
    a.counters.inc("quarantined", "unreachable")
    a.counters.inc("revoked", n=2)
    a.counters.inc("shard_repaired")
    for s in (0.004, 0.03, 0.03, 7.0):
        a.timings.observe("attestation", "exchange", s, "reattest")
    a.timings.observe("raft_commit", "exchange", 0.02)
    m = samples(ep)
    v = m["enclave_swarm_attestation_verdicts_total"]
    assert v[(("reason", "ok"), ("result", "pass"))] == 3
    assert v[(("reason", "measurement"), ("result", "fail"))] == 1
    assert v[(("reason", "timeout"), ("result", "missed"))] == 2
    q = m["enclave_swarm_quarantines_total"]
    assert q == {(("cause", "unreachable"),): 1, (("cause", "failed"),): 0, (("cause", "revoked"),): 0}
    assert m["enclave_swarm_revocations_total"][()] == 2
    assert m["enclave_swarm_shard_repairs_total"][(("outcome", "repaired"),)] == 1
    assert m["enclave_swarm_shard_repairs_total"][(("outcome", "rebuild_failed"),)] == 0
    b = m["enclave_swarm_attestation_seconds_bucket"]
    assert b[(("le", "0.005"), ("phase", "reattest"))] == 1
    assert b[(("le", "0.05"), ("phase", "reattest"))] == 3
    assert b[(("le", "5.0"), ("phase", "reattest"))] == 3
    assert b[(("le", "+Inf"), ("phase", "reattest"))] == 4
    assert m["enclave_swarm_attestation_seconds_count"][(("phase", "reattest"),)] == 4
    assert abs(m["enclave_swarm_attestation_seconds_sum"][(("phase", "reattest"),)] - 7.064) < 1e-9
    assert m["enclave_swarm_raft_commit_seconds_count"][()] == 1
    # everything counted is also in events_total, by event and reason
    assert m["enclave_swarm_events_total"][(("event", "attest_missed"), ("reason", "timeout"))] == 2


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["remote_error", "dial_failed", "x"]), st.text(max_size=80)),
                max_size=900))
def test_events_series_stay_bounded_and_keep_their_sum(tmp_path_factory, counts) -> None:  # type: ignore[no-untyped-def]
    ep = endpoint(tmp_path_factory.mktemp("n"))
    for event, reason in counts:
        ep.agent.counters.inc(event, reason)
    ev = samples(ep).get("enclave_swarm_events_total", {})
    assert len(ev) <= MAX_EVENT_SERIES + 1
    assert sum(ev.values()) == len(counts)
    assert all(len(v) <= 64 for labels in ev for _, v in labels)
