"""Simulated TEE, binding, policy and score: the verify → policy → score path, end to end."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from node.attestation.base import Evidence, TeeKind
from node.attestation.engine import AttestationEngine
from node.attestation.policy import Policy, PolicyError, evaluate, load_policy
from node.attestation.score import compute_score, verify_record
from node.attestation.simulated import SimulatedProvider, SimulatedVerifier
from overlay.handshake import Challenge, binding
from overlay.messages import AttestEvidence
from overlay.wire import encode

M = bytes(range(48))
NOW = datetime.now(UTC)


def provider(tmp_path: Path, name: str = "p", **kw) -> SimulatedProvider:
    return SimulatedProvider(tmp_path / name, M, **kw)


def engine(policy: Policy | None = None, self_m: bytes = M) -> AttestationEngine:
    return AttestationEngine({TeeKind.SIM: SimulatedVerifier()}, policy or Policy.development(),
                             identity_key=Ed25519PrivateKey.generate(), self_measurement=self_m,
                             record_ttl_s=60)


def prover_reply(prov: SimulatedProvider, nonce: bytes, pub: bytes) -> AttestEvidence:
    ev = prov.get_evidence(binding(nonce, pub))
    return AttestEvidence(str(ev.kind), ev.blob, ev.certs, pub)


def test_honest_prover_is_accepted_with_sim_score(tmp_path):
    prov, pub, nonce = provider(tmp_path), os.urandom(32), os.urandom(32)
    ch = Challenge(pub, nonce, NOW.timestamp())
    out = engine().judge(ch, "peer", prover_reply(prov, nonce, pub), now=NOW.timestamp())
    assert out.accepted and out.reason == "ok" and out.score == 90
    assert out.record is not None and verify_record(out.record, at=NOW.timestamp())


def test_replayed_evidence_for_an_old_nonce_is_refused(tmp_path):
    prov, pub = provider(tmp_path), os.urandom(32)
    old = prover_reply(prov, os.urandom(32), pub)
    ch = Challenge(pub, os.urandom(32), NOW.timestamp())
    out = engine().judge(ch, "peer", old, now=NOW.timestamp())
    assert not out.accepted and out.reason.startswith("binding: report_data")


def test_evidence_of_another_node_is_refused(tmp_path):
    """A peer relaying another node's (valid) evidence under its own connection."""
    other_pub, my_pub, nonce = os.urandom(32), os.urandom(32), os.urandom(32)
    relayed = prover_reply(provider(tmp_path, "other"), nonce, other_pub)
    ch = Challenge(my_pub, nonce, NOW.timestamp())
    out = engine().judge(ch, "peer", relayed, now=NOW.timestamp())
    assert not out.accepted and out.reason.startswith("binding: evidence names a key")
    # Even if it claims our key, the report_data binds the other key.
    forged = dataclasses.replace(relayed, public_key=my_pub)
    out = engine().judge(ch, "peer", forged, now=NOW.timestamp())
    assert not out.accepted and out.reason.startswith("binding: report_data")


def test_production_policy_refuses_simulated(tmp_path):
    prov, pub, nonce = provider(tmp_path), os.urandom(32), os.urandom(32)
    ch = Challenge(pub, nonce, NOW.timestamp())
    out = engine(Policy.production()).judge(ch, "p", prover_reply(prov, nonce, pub), now=NOW.timestamp())
    assert not out.accepted
    assert "kind: sim not in allowed_kinds" in out.reason and "simulated" in out.reason


def test_measurement_off_the_allow_list(tmp_path):
    prov, pub, nonce = provider(tmp_path), os.urandom(32), os.urandom(32)
    ch = Challenge(pub, nonce, NOW.timestamp())
    out = engine(self_m=bytes(48)).judge(ch, "p", prover_reply(prov, nonce, pub), now=NOW.timestamp())
    assert not out.accepted and "measurement" in out.reason and out.score < 60


def test_debug_forbidden(tmp_path):
    prov, pub, nonce = provider(tmp_path, debug=True), os.urandom(32), os.urandom(32)
    ch = Challenge(pub, nonce, NOW.timestamp())
    out = engine().judge(ch, "p", prover_reply(prov, nonce, pub), now=NOW.timestamp())
    assert not out.accepted and "debug" in out.reason


def test_old_evidence_is_refused(tmp_path):
    prov, pub, nonce = provider(tmp_path), os.urandom(32), os.urandom(32)
    ch = Challenge(pub, nonce, NOW.timestamp() - 3600)
    out = engine().judge(ch, "p", prover_reply(prov, nonce, pub), now=NOW.timestamp())
    assert not out.accepted and out.reason.startswith("policy: age")


def _sim_evidence(tmp_path) -> Evidence:
    return provider(tmp_path).get_evidence(bytes(64))


def test_sim_verifier_expired_cert_and_wrong_root(tmp_path):
    ev = _sim_evidence(tmp_path)
    v = SimulatedVerifier()
    assert v.verify(ev, at=NOW).accepted
    late = v.verify(ev, at=NOW + timedelta(days=400))
    assert not late.accepted and "not valid at the given time" in late.reason
    other_root = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    wrong = SimulatedVerifier(other_root).verify(ev, at=NOW)
    assert not wrong.accepted and "simulated root" in wrong.reason


def test_sim_verifier_swapped_host_cert(tmp_path):
    a, b = _sim_evidence(tmp_path), provider(tmp_path, "b").get_evidence(bytes(64))
    mixed = Evidence(TeeKind.SIM, a.blob, b.certs)
    out = SimulatedVerifier().verify(mixed, at=NOW)
    assert not out.accepted and out.reason == "signature invalid"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sim_verifier_any_flipped_byte_is_rejected(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("flip")
    ev = _sim_evidence(tmp)
    which = data.draw(st.sampled_from(["blob", "cert"]))
    raw = bytearray(ev.blob if which == "blob" else ev.certs[0])
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    tampered = (Evidence(TeeKind.SIM, bytes(raw), ev.certs) if which == "blob"
                else Evidence(TeeKind.SIM, ev.blob, (bytes(raw),)))
    assert not SimulatedVerifier().verify(tampered, at=NOW).accepted


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.lists(st.binary(max_size=300), max_size=3))
def test_sim_verifier_garbage_never_raises(blob, certs):
    out = SimulatedVerifier().verify(Evidence(TeeKind.SIM, blob, tuple(certs)), at=NOW)
    assert not out.accepted and out.reason


def test_policy_file_round_trip_and_errors(tmp_path):
    p = tmp_path / "policy.toml"
    pol = dataclasses.replace(Policy.development(), min_tcb={"snp": 8}, min_score=70)
    p.write_text(pol.to_toml())
    assert load_policy(p) == pol
    p.write_text("allow_simulated = true\nallow_simulted = false\n")
    with pytest.raises(PolicyError, match="unknown policy keys"):
        load_policy(p)
    p.write_text("measurements = ['zz']\n")
    with pytest.raises(PolicyError, match="neither 'self' nor hex"):
        load_policy(p)
    p.write_text("min_score = 'high'\n")
    with pytest.raises(PolicyError, match="integer"):
        load_policy(p)


def test_policy_names_every_failed_rule(tmp_path):
    ev = provider(tmp_path, debug=True).get_evidence(bytes(64))
    verdict = SimulatedVerifier().verify(ev, at=NOW)
    pol = dataclasses.replace(Policy.production(), min_tcb={"snp": 99})
    d = evaluate(pol, verdict, at=NOW, evidence_time=NOW - timedelta(hours=1), self_measurement=bytes(48))
    names = [r.split(":")[0] for r in d.failed_rules]
    assert names == ["kind", "simulated", "measurement", "debug", "age", "tcb.snp"]
    assert compute_score(verdict, d, pol) == 0


def test_score_function_documented_values(tmp_path):
    ev = _sim_evidence(tmp_path)
    verdict = SimulatedVerifier().verify(ev, at=NOW)
    pol = Policy.development()
    d = evaluate(pol, verdict, at=NOW, self_measurement=M)
    assert compute_score(verdict, d, pol) == 90
    assert compute_score(verdict, d, pol, missed_reattestations=1) == 75
    assert compute_score(verdict, d, pol, integrity_alarms=1) == 65
    half_old = evaluate(pol, verdict, at=NOW, evidence_time=NOW - timedelta(seconds=150), self_measurement=M)
    assert compute_score(verdict, half_old, pol) == 80


def test_score_record_tamper_detected(tmp_path):
    prov, pub, nonce = provider(tmp_path), os.urandom(32), os.urandom(32)
    out = engine().judge(Challenge(pub, nonce, NOW.timestamp()), "peer", prover_reply(prov, nonce, pub),
                         now=NOW.timestamp())
    rec = out.record
    assert rec is not None and verify_record(rec)
    assert not verify_record(dataclasses.replace(rec, score=100))
    assert not verify_record(rec, at=rec.expires_at + 1)
    assert encode(rec)  # it is a valid wire message
