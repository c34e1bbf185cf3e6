"""bench/bench_fidelity.py's pure part: reading the nodes' JSON logs and turning them into the
simulator's figures (spread per record, the re-attestation schedule)."""

from __future__ import annotations

import json

import pytest

from bench.bench_fidelity import parse_ts, path_loss, read_log, real_schedule, record_spreads, t_q


def line(ts: str, msg: str) -> str:
    return json.dumps({"ts": ts, "level": "debug", "logger": "enclave_swarm.gossip", "msg": msg})


def accepted(issuer: str, subject: str, version: int, issued: float, kind: str = "score") -> str:
    return f"accepted a {kind} record by {issuer} about {subject} (version {version}, issued at {issued:.6f})"


def test_read_log_takes_score_accepts_and_suspicions_and_skips_the_rest():
    t = parse_ts("2026-12-04T17:40:02.250Z")
    assert t == pytest.approx(1796406002.25)
    lines = [
        "libp2p noise that is not json",
        line("2026-12-04T17:40:02.250Z", accepted("A", "B", 7, t - 0.05)),
        line("2026-12-04T17:40:02.300Z", accepted("A", "B", 8, t, kind="manager")),
        line("2026-12-04T17:40:03.000Z", "member C is suspect (incarnation 2, by A)"),
        line("2026-12-04T17:40:03.100Z", "member C is alive (incarnation 3, by C)"),
        json.dumps({"ts": "not a time", "msg": accepted("A", "B", 9, t)}),
        json.dumps({"msg": "no ts"}),
        "[1, 2]",
    ]
    accepts, suspects = read_log(lines)
    assert accepts == [(pytest.approx(t), "A", "B", 7, pytest.approx(t - 0.05))]
    assert suspects == [(pytest.approx(t + 0.75), "C")]


def test_record_spreads_and_t_q_follow_the_simulators_definition():
    # A issued at 100.0; B held it 20 ms later, C 90 ms later, D never.
    acc = {"B": [(100.02, "A", "S", 1, 100.0)], "C": [(100.09, "A", "S", 1, 100.0),
                                                    (100.5, "A", "S", 1, 100.0)],  # a repeat
           "D": [(150.0, "A", "S", 2, 149.0)]}  # issued outside the window
    spreads = record_spreads(acc, ["A", "B", "C", "D"], 99.0, 120.0)
    assert spreads == [[0.0, pytest.approx(0.02), pytest.approx(0.09)]]
    d = spreads[0]
    assert t_q(d, 4, 0.5) == pytest.approx(0.02)  # 2 of 4, the issuer counted at 0
    assert t_q(d, 4, 0.75) == pytest.approx(0.09)
    assert t_q(d, 4, 1.0) is None  # D never held it
    assert t_q(d, 3, 1.0) == pytest.approx(0.09)
    # an issuer outside the federation is not ours to measure
    assert record_spreads({"B": [(1.0, "X", "S", 1, 0.5)]}, ["A", "B"], 0.0, 10.0) == []


def test_real_schedule_measures_bursts_and_the_arc_of_phases():
    acc = {}
    # three issuers re-attesting every 4 s, at phases 0.9, 1.0 and 3.95 (an arc across the
    # cycle's end: 3.95 -> 0.9 -> 1.0 is 1.05 s), each round three records 0, 10 and 20 ms apart
    for issuer, phase in (("A", 0.9), ("B", 1.0), ("C", 3.95)):
        acc[issuer] = [(0.0, issuer, "S", 1, 1000 * 4.0 + k * 4.0 + phase + j * 0.01)
                       for k in range(10) for j in range(3)]
    sched = real_schedule(acc, 4.0)
    assert sched["burst_s"] == pytest.approx(0.02)
    assert sched["phase_s"] == pytest.approx(1.05)
    assert real_schedule({}, 4.0) == {"burst_s": 0.0, "phase_s": 4.0}


def test_path_loss_counts_both_namespaces():
    assert path_loss(0.0) == 0.0
    assert path_loss(0.05) == pytest.approx(0.0975)
