"""The attestation interfaces every TEE backend plugs into.

Theory of operation
-------------------
A *prover* asks its :class:`EvidenceProvider` for evidence over 64 bytes of report_data. The
overlay always sets ``report_data = sha512(nonce || prover's libp2p public key)``, so evidence
proves that this key lives in an attested enclave and is fresh for this challenge.

A *verifier* hands the :class:`Evidence` to the :class:`Verifier` for its kind. A verifier
checks authenticity and structure only: signatures, certificate chains to pinned roots,
reserved fields, lengths, at an explicit time ``at``. It returns a :class:`Verdict` and never
raises on hostile bytes. What the claims *mean* for trust (allowed measurements, debug, TCB,
age) is decided afterwards by the policy (``node/attestation/policy.py``), and the outcome is
turned into a score (``node/attestation/score.py``).

Verdict reasons are short stable phrases (``"signature invalid"``, ``"chain: ASK not signed
by ARK"``...) suitable for logs, JSON output and tests.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


class TeeKind(enum.StrEnum):
    SIM = "sim"
    SEV_SNP = "sev-snp"
    TDX = "tdx"
    SGX = "sgx"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a prover sends: the raw report/quote plus what is needed to check it.

    Attributes:
        kind: which TEE produced it.
        blob: the raw report or quote bytes, exactly as the hardware produced them.
        certs: DER certificates that endorse ``blob`` and are not embedded in it, leaf first
            (for SEV-SNP: VCEK or VLEK, then ASK/ASVK, then ARK; for the simulated TEE: the
            host certificate). DCAP quotes embed their PCK chain, so this is usually empty.
    """

    kind: TeeKind
    blob: bytes
    certs: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True)
class Claims:
    """What authentic evidence says about the enclave. Policy reads only these."""

    kind: TeeKind
    measurement: bytes  # SNP MEASUREMENT (48), TDX MRTD (48), SGX MRENCLAVE (32), sim (48)
    report_data: bytes  # always 64 bytes
    debug: bool
    # Comparable TCB components, e.g. {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    # for SNP, {"tee_tcb_svn": ..} for TDX. Kept as plain ints so policy can compare them.
    tcb: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Intel's TCB status from collateral ("UpToDate", "SWHardeningNeeded", ...) when known.
    tcb_status: str | None = None
    # Everything else a backend reports (policy bits, host_data, VMPL, chip id, FMSPC...),
    # JSON-serialisable, for display and for policies that want it.
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "measurement": self.measurement.hex(),
            "report_data": self.report_data.hex(),
            "debug": self.debug,
            "tcb": dict(self.tcb),
            "tcb_status": self.tcb_status,
            "extra": _jsonable(self.extra),
        }


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Outcome of checking evidence for authenticity and structure.

    ``claims`` is present when the evidence parsed, even on a rejection (for display), but a
    caller must never trust claims from a rejected verdict.
    """

    accepted: bool
    kind: TeeKind | None
    reason: str
    claims: Claims | None = None

    @classmethod
    def reject(cls, kind: TeeKind | None, reason: str, claims: Claims | None = None) -> Verdict:
        return cls(False, kind, reason, claims)

    @classmethod
    def accept(cls, claims: Claims) -> Verdict:
        return cls(True, claims.kind, "ok", claims)

    def to_json(self) -> dict[str, Any]:
        c = self.claims
        return {
            "verdict": "accept" if self.accepted else "reject",
            "kind": str(self.kind) if self.kind else None,
            "reason": self.reason,
            "measurement": c.measurement.hex() if c else None,
            "report_data": c.report_data.hex() if c else None,
            "tcb": dict(c.tcb) if c else None,
            "tcb_status": c.tcb_status if c else None,
            "debug": c.debug if c else None,
            "claims": c.to_json() if c else None,
        }


@runtime_checkable
class Verifier(Protocol):
    """Checks evidence of one kind. Must never raise on hostile input."""

    kind: TeeKind

    def verify(self, evidence: Evidence, *, at: datetime) -> Verdict:
        """Check ``evidence`` as of time ``at`` (timezone-aware UTC)."""
        ...


@runtime_checkable
class EvidenceProvider(Protocol):
    """Produces evidence on this host."""

    kind: TeeKind

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Return fresh evidence whose report_data is exactly ``report_data`` (64 bytes).

        Raises:
            AttestationUnavailable: the TEE cannot produce evidence right now.
        """
        ...


class AttestationUnavailable(Exception):
    """The local TEE is absent or failed to produce evidence."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, enum.Enum):
        return v.value
    return v
