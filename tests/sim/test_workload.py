"""The reattest workload (SimConfig.workload): records as large as real score records, one per
peer per node per interval, at the configured phases, deterministic per seed; and the default
uniform workload left as it was."""

from __future__ import annotations

import collections

import nacl.signing
import pytest
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from overlay.dissemination import record_size
from overlay.messages import ScoreRecord
from overlay.records import KIND_SCORE, Ed25519Signer
from overlay.wire import encode
from sim.world import REAL_SCORE_RECORD_BYTES, SimConfig, World


def world(**kw) -> World:
    kw.setdefault("nodes", 6)
    kw.setdefault("duration_s", 9.0)
    kw.setdefault("liveness_deadline_s", 10.0)
    kw.setdefault("workload", "reattest")
    kw.setdefault("reattest_interval_s", 2.0)
    return World(SimConfig(**kw))


def test_a_reattest_record_is_as_large_as_a_real_score_record():
    w = world()
    w.run()
    key = nacl.signing.SigningKey(bytes(range(32)))
    peer = str(ID.from_pubkey(Ed25519PublicKey(key.verify_key.encode())))
    assert len(peer) == 52
    real_payload = encode(ScoreRecord(issuer=bytes(key.verify_key), subject=peer, score=100,
                                      kind="sev-snp", verdict="ok", evidence_hash=bytes(32),
                                      issued_at=1.7e9 + 0.5, expires_at=1.7e9 + 12.5,
                                      signature=key.sign(b"x").signature))
    real = Ed25519Signer(peer, key).sign(KIND_SCORE, peer, 1, 1.7e9, 1.7e9 + 3600, real_payload)
    sims = [r for r in w.tracks if r.kind == KIND_SCORE]
    assert sims
    assert {record_size(r) for r in sims} == {record_size(real)} == {REAL_SCORE_RECORD_BYTES}


def test_every_node_scores_every_peer_once_per_interval():
    w = world()
    r = w.run()
    assert r["invariants"]["violations"] == []
    per_pair = collections.Counter((rec.issuer, rec.subject) for rec in w.tracks)
    n = len(w.ids)
    assert len(per_pair) == n * (n - 1)  # a full mesh, nobody scores itself
    # first rounds in [1, 3), then every 2 s give or take 25 ms: 4 rounds before the 9 s
    # safety phase ends (3 where a late first round's jitter carries the 4th past it)
    assert set(per_pair.values()) <= {3, 4} and 4 in per_pair.values()
    assert all(rec.issuer != rec.subject for rec in w.tracks)


def test_phase_and_burst_bound_when_the_records_are_published():
    w = world(reattest_phase_s=0.2, reattest_burst_s=0.03, duration_s=3.0)
    w.run()
    first = sorted(tr.t0 for tr in w.tracks.values())[: len(w.ids) * (len(w.ids) - 1)]
    assert first[0] >= 1.0 and first[-1] < 1.0 + 0.2 + 0.03


def test_reattest_runs_are_deterministic_and_distinct_from_uniform():
    a, b = world(seed=3).run(), world(seed=3).run()
    assert a["trace_digest"] == b["trace_digest"]
    assert world(seed=4).run()["trace_digest"] != a["trace_digest"]
    assert world(seed=3, workload="uniform").run()["trace_digest"] != a["trace_digest"]


@pytest.mark.parametrize("bad", [{"workload": "bursty"}, {"reattest_interval_s": 0.0},
                                 {"reattest_burst_s": -1.0}, {"reattest_phase_s": -0.5}])
def test_bad_workload_settings_are_refused(bad):
    with pytest.raises(ValueError, match="workload"):
        world(**bad)
