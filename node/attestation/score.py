"""The attestation score (0–100) and the signed score record that gossips it.

The score function
------------------
``score = clamp(0, 100, 100 − Σ penalties)``, and 0 outright when the evidence was rejected or
its TCB status is ``Revoked``. The penalties, each documented where it is applied:

=============================  ===========================================================
policy rule failed             50 per failed rule: one failure lands below any sane min_score
simulated TEE (when allowed)   10: a simulation gives no hardware protection
debug on (when allowed)        30
TCB status                     SWHardeningNeeded 5, ConfigurationNeeded 10,
                               ConfigurationAndSWHardeningNeeded 15, OutOfDate 30,
                               OutOfDateConfigurationNeeded 35
TCB margin                     5 when a constrained component sits exactly at its minimum
evidence age                   up to 20, linear in age / max_evidence_age_s
missed re-attestations         15 each (availability), counted since the last success
integrity alarms               25 each (from the runtime integrity monitor)
=============================  ===========================================================

So a fresh, healthy hardware node scores 100, a healthy simulated node 90, one missed
re-attestation brings a node to 75–85 and two to 60–70, and any policy failure to ≤ 50.
"""

from __future__ import annotations

import dataclasses
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.attestation.base import Evidence, TeeKind, Verdict
from node.attestation.policy import Decision, Policy
from overlay.messages import ScoreRecord
from overlay.wire import encode

POLICY_FAILURE_PENALTY = 50
SIMULATED_PENALTY = 10
DEBUG_PENALTY = 30
TCB_AT_MINIMUM_PENALTY = 5
MAX_AGE_PENALTY = 20
MISSED_REATTEST_PENALTY = 15
INTEGRITY_ALARM_PENALTY = 25
TCB_STATUS_PENALTY = {
    "UpToDate": 0,
    "SWHardeningNeeded": 5,
    "ConfigurationNeeded": 10,
    "ConfigurationAndSWHardeningNeeded": 15,
    "OutOfDate": 30,
    "OutOfDateConfigurationNeeded": 35,
}


def compute_score(
    verdict: Verdict,
    decision: Decision,
    policy: Policy,
    *,
    missed_reattestations: int = 0,
    integrity_alarms: int = 0,
) -> int:
    """The documented score function (see the module docstring)."""
    if not verdict.accepted or verdict.claims is None:
        return 0
    c = verdict.claims
    if c.tcb_status == "Revoked":
        return 0
    penalty = POLICY_FAILURE_PENALTY * len(decision.failed_rules)
    if c.kind == TeeKind.SIM:
        penalty += SIMULATED_PENALTY
    if c.debug:
        penalty += DEBUG_PENALTY
    if c.tcb_status is not None:
        penalty += TCB_STATUS_PENALTY.get(c.tcb_status, 30)
    if decision.tcb_margin == 0:
        penalty += TCB_AT_MINIMUM_PENALTY
    age_ratio = min(1.0, decision.evidence_age_s / policy.max_evidence_age_s)
    penalty += round(MAX_AGE_PENALTY * age_ratio)
    penalty += MISSED_REATTEST_PENALTY * max(0, missed_reattestations)
    penalty += INTEGRITY_ALARM_PENALTY * max(0, integrity_alarms)
    return max(0, min(100, 100 - penalty))


def degrade(score: int, *, missed_reattestations: int = 0, integrity_alarms: int = 0) -> int:
    """Lower an earlier score for availability or integrity trouble since it was computed."""
    penalty = MISSED_REATTEST_PENALTY * missed_reattestations
    penalty += INTEGRITY_ALARM_PENALTY * integrity_alarms
    return max(0, min(100, score - penalty))


def evidence_hash(evidence: Evidence) -> bytes:
    h = hashlib.sha256(str(evidence.kind).encode() + b"\0")
    h.update(len(evidence.blob).to_bytes(4, "big") + evidence.blob)
    for cert in evidence.certs:
        h.update(len(cert).to_bytes(4, "big") + cert)
    return h.digest()


def _signed_bytes(record: ScoreRecord) -> bytes:
    return encode(dataclasses.replace(record, signature=bytes(64)))


def sign_record(
    key: Ed25519PrivateKey,
    *,
    subject: str,
    score: int,
    kind: str,
    verdict: str,
    evidence_hash: bytes,
    issued_at: float,
    ttl_s: float,
) -> ScoreRecord:
    """Issue a score record signed by ``key`` (the issuer's libp2p identity key)."""
    unsigned = ScoreRecord(
        issuer=key.public_key().public_bytes_raw(),
        subject=subject,
        score=score,
        kind=kind,
        verdict=verdict[:200],
        evidence_hash=evidence_hash,
        issued_at=issued_at,
        expires_at=issued_at + ttl_s,
        signature=bytes(64),
    )
    return dataclasses.replace(unsigned, signature=key.sign(_signed_bytes(unsigned)))


def verify_record(record: ScoreRecord, *, at: float | None = None) -> bool:
    """True when the issuer's signature holds (and, if ``at`` is given, it has not expired)."""
    try:
        Ed25519PublicKey.from_public_bytes(record.issuer).verify(
            record.signature, _signed_bytes(record))
    except (InvalidSignature, ValueError):
        return False
    return at is None or (record.issued_at <= at + 60 and at <= record.expires_at)
