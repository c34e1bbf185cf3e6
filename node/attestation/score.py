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
integrity alarms               25 each (a bare count, for callers without findings)
integrity findings             the node's committed integrity penalty (below)
=============================  ===========================================================

So a fresh, healthy hardware node scores 100, a healthy simulated node 90, one missed
re-attestation brings a node to 75–85 and two to 60–70, and any policy failure to ≤ 50.

Integrity findings
------------------
The runtime integrity monitor (consensus/integrity.py, in the replicated state) keeps a penalty
per node: each finding adds its kind's weight, each good result (an agreeing replica without a
finding) decays it with a half-life of :data:`HALF_LIFE_RESULTS` (50) results:

=================  ======  ====================================================================
finding            points  why
=================  ======  ====================================================================
``minority``       20      it signed an output an honest quorum contradicts
``bad-signature``  15      its result does not verify under its own key (the manager's word)
``limit``          10      fuel, memory or output limit hit where the quorum finished
``trap``           10      a trap or non-zero exit where the quorum finished
``outlier``         5      a resource profile |x − median| / (1.4826 · MAD) > 6 for its module
=================  ======  ====================================================================

The federation's score of a member is its attestation score less that penalty
(:func:`with_integrity`); the manager commits it (``record-score``) and revokes the member
through consensus below the policy's ``min_score``, as for a failed attestation. With
``min_score`` 60: one finding of any kind never revokes a node scoring 80 or more (a healthy
node: 100 on hardware, 90 simulated), and :data:`CONSECUTIVE_MINORITY_REVOKES` (3) minority
findings in a row (no good result between them) revoke any node, whatever its history
(tests/attestation_core/test_integrity_score.py). In general k = ⌈(101 − min_score) / 20⌉.
The score record a verifier signs stays what the evidence says: findings are not the verifier's
to judge, they are the committed state's.
"""

from __future__ import annotations

import dataclasses
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consensus.integrity import (
    HALF_LIFE_RESULTS,
    WEIGHTS,
    federation_score,
    penalty_points,
    step_penalty,
)
from node.attestation.base import Evidence, TeeKind, Verdict
from node.attestation.policy import Decision, Policy
from node.keys.base import IdentityKey
from overlay.messages import ScoreRecord
from overlay.wire import encode

POLICY_FAILURE_PENALTY = 50
SIMULATED_PENALTY = 10
DEBUG_PENALTY = 30
TCB_AT_MINIMUM_PENALTY = 5
MAX_AGE_PENALTY = 20
MISSED_REATTEST_PENALTY = 15
INTEGRITY_ALARM_PENALTY = 25
INTEGRITY_WEIGHTS = WEIGHTS  # points per finding kind (consensus/integrity.py, the one source)
INTEGRITY_HALF_LIFE_RESULTS = HALF_LIFE_RESULTS
CONSECUTIVE_MINORITY_REVOKES = 3  # with min_score 60: ⌈(101 − 60) / 20⌉
HEALTHY_SCORE = 80  # one finding never takes a node scoring this much below min_score 60
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
    integrity_penalty: int = 0,
) -> int:
    """The documented score function (see the module docstring). ``integrity_penalty``: the
    node's committed integrity penalty in points (``consensus.integrity.penalty``)."""
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
    penalty += max(0, integrity_penalty)
    return max(0, min(100, 100 - penalty))


def degrade(score: int, *, missed_reattestations: int = 0, integrity_alarms: int = 0,
            integrity_penalty: int = 0) -> int:
    """Lower an earlier score for availability or integrity trouble since it was computed."""
    penalty = MISSED_REATTEST_PENALTY * missed_reattestations
    penalty += INTEGRITY_ALARM_PENALTY * integrity_alarms
    penalty += max(0, integrity_penalty)
    return max(0, min(100, score - penalty))


def with_integrity(attestation_score: int, integrity_penalty: int) -> int:
    """The federation's score of a member: its attestation score (0..100) less its committed
    integrity penalty in points (``consensus.integrity.penalty``), clamped to 0..100: the
    replicated state's rule (``consensus.integrity.federation_score``)."""
    return federation_score(attestation_score, integrity_penalty)


def integrity_penalty(events: list[str] | tuple[str, ...], start_milli: int = 0) -> int:
    """The penalty in points after ``events`` (finding kinds, or ``"good"`` for a good result)
    from ``start_milli`` thousandths: the rule the replicated state applies, result by result."""
    pen = start_milli
    for e in events:
        pen = step_penalty(pen, e)
    return penalty_points(pen)


def evidence_hash(evidence: Evidence) -> bytes:
    h = hashlib.sha256(str(evidence.kind).encode() + b"\0")
    h.update(len(evidence.blob).to_bytes(4, "big") + evidence.blob)
    for cert in evidence.certs:
        h.update(len(cert).to_bytes(4, "big") + cert)
    return h.digest()


def _signed_bytes(record: ScoreRecord) -> bytes:
    return encode(dataclasses.replace(record, signature=bytes(64)))


def sign_record(
    key: IdentityKey,
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
