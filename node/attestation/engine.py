"""Judging a peer's evidence: binding → evidence → policy → score → signed record.

One :class:`AttestationEngine` per node holds the verifiers for every TEE kind, the current
policy (replaceable at run time, e.g. on ``reload``), our own measurement for the ``self``
allow-list entry, and our identity key to sign score records. It is synchronous and does no
I/O; the agent runs it in a worker thread because RSA/ECDSA chain checks take milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from node.attestation.base import Evidence, TeeKind, Verdict, Verifier
from node.attestation.policy import Decision, Policy, evaluate
from node.attestation.score import compute_score, evidence_hash, sign_record
from node.keys.base import IdentityKey, KeyUnavailable
from overlay.handshake import Challenge
from overlay.messages import AttestEvidence, ScoreRecord


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The judgement of one attestation attempt."""

    accepted: bool
    reason: str
    score: int
    kind: str | None
    verdict: Verdict | None
    decision: Decision | None
    record: ScoreRecord | None
    measurement: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "score": self.score,
            "kind": self.kind,
            "verdict": self.verdict.to_json() if self.verdict else None,
            "decision": self.decision.to_json() if self.decision else None,
        }


class AttestationEngine:
    def __init__(
        self,
        verifiers: Mapping[TeeKind, Verifier],
        policy: Policy,
        *,
        identity_key: IdentityKey,
        self_measurement: bytes | None,
        record_ttl_s: float,
    ) -> None:
        self.verifiers = dict(verifiers)
        self.policy = policy
        self._key = identity_key
        self.self_measurement = self_measurement
        self.record_ttl_s = record_ttl_s

    def judge(
        self,
        challenge: Challenge,
        subject: str,
        msg: AttestEvidence,
        *,
        now: float,
        missed_reattestations: int = 0,
        integrity_alarms: int = 0,
    ) -> Outcome:
        """Judge ``msg``, the answer to ``challenge`` from peer ``subject``, at time ``now``."""
        policy = self.policy
        key_problem = challenge.check_key(msg)
        if key_problem:
            return Outcome(False, key_problem, 0, msg.kind, None, None, None)
        try:
            kind = TeeKind(msg.kind)
        except ValueError:
            return Outcome(False, f"unknown TEE kind {msg.kind[:16]!r}", 0, None, None, None, None)
        verifier = self.verifiers.get(kind)
        if verifier is None:
            return Outcome(False, f"no verifier for TEE kind {kind}", 0, str(kind), None, None, None)
        evidence = Evidence(kind, msg.blob, msg.certs)
        at = datetime.fromtimestamp(now, UTC)
        verdict = verifier.verify(evidence, at=at)
        if verdict.claims is not None:
            problem = challenge.check_report_data(verdict.claims.report_data)
            if problem:
                return Outcome(False, problem, 0, str(kind), verdict, None, None)
        decision = evaluate(
            policy,
            verdict,
            at=at,
            evidence_time=datetime.fromtimestamp(challenge.issued_at, UTC),
            self_measurement=self.self_measurement,
        )
        score = compute_score(verdict, decision, policy, missed_reattestations=missed_reattestations,
                              integrity_alarms=integrity_alarms)
        accepted = decision.allowed and score >= policy.min_score
        if not verdict.accepted:
            reason = f"evidence rejected: {verdict.reason}"
        elif not decision.allowed:
            reason = "policy: " + "; ".join(decision.failed_rules)
        elif not accepted:
            reason = f"score {score} below policy minimum {policy.min_score}"
        else:
            reason = "ok"
        try:
            record: ScoreRecord | None = sign_record(
                self._key,
                subject=subject,
                score=score,
                kind=str(kind),
                verdict=reason,
                evidence_hash=evidence_hash(evidence),
                issued_at=now,
                ttl_s=self.record_ttl_s,
            )
        except KeyUnavailable:
            record = None  # our token is gone (node/keys): the verdict stands, unsigned
        measurement = verdict.claims.measurement if verdict.claims else None
        return Outcome(accepted, reason, score, str(kind), verdict, decision, record, measurement)
