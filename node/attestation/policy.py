"""Attestation policy: what authentic evidence must also satisfy to be trusted.

A verifier (``Verifier.verify``) answers "is this evidence genuine?". The policy answers "do we
trust what it says?". :func:`evaluate` checks every rule, never stopping at the first failure,
so a :class:`Decision` names *every* rule that failed. The policy file is TOML::

    allowed_kinds = ["sev-snp", "tdx", "sgx"]   # TEE kinds accepted at all
    allow_simulated = false                     # the simulated TEE (never in production)
    measurements = ["self"]                     # hex allow-list; "self" = our own measurement;
                                                # an empty list accepts any measurement
    forbid_debug = true                         # refuse debug-enabled guests/enclaves
    max_evidence_age_s = 300.0                  # evidence older than this is refused
    min_score = 60                              # below this a peer is quarantined
    allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]   # Intel collateral statuses
    snp_vmpl_max = 0                            # SEV-SNP: highest VMPL a report may come from
    snp_host_data = []                          # SEV-SNP: HOST_DATA allow-list (32-byte hex)
    [min_tcb]                                   # per-component minimum TCB versions
    snp = 8
    microcode = 115

Unknown keys are an error: a typo must not silently weaken a policy.

The SNP rules bind what the launch measurement alone does not. VMPL is the privilege level of
the code that asked the firmware for the report: a report from VMPL 1..3 may come from less
privileged code beside (or under the control of) the measured VMPL-0 image, so by default only
VMPL 0 is accepted (a guest under an SVSM, whose kernel runs at VMPL 2, raises
``snp_vmpl_max``). HOST_DATA is 32 bytes the host fixes at launch and the guest cannot change;
deployments that put a digest there (e.g. of the launch configuration) pin it with
``snp_host_data``. Both rules apply to SEV-SNP claims only and fail closed when the claim is
missing.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from node.attestation.base import TeeKind, Verdict

SELF = "self"
ALL_KINDS = tuple(k.value for k in TeeKind)
HARDWARE_KINDS = (TeeKind.SEV_SNP.value, TeeKind.TDX.value, TeeKind.SGX.value)


class PolicyError(ValueError):
    """The policy file is unreadable or invalid (a local configuration error)."""


@dataclasses.dataclass(frozen=True)
class Policy:
    allowed_kinds: tuple[str, ...] = HARDWARE_KINDS
    allow_simulated: bool = False
    measurements: tuple[str, ...] = (SELF,)
    forbid_debug: bool = True
    max_evidence_age_s: float = 300.0
    min_score: int = 60
    allowed_tcb_statuses: tuple[str, ...] = ("UpToDate", "SWHardeningNeeded")
    min_tcb: Mapping[str, int] = dataclasses.field(default_factory=dict)
    snp_vmpl_max: int = 0
    snp_host_data: tuple[str, ...] = ()

    @classmethod
    def production(cls) -> Policy:
        """Hardware only, our own measurement only, no debug: what a real federation runs."""
        return cls()

    @classmethod
    def development(cls) -> Policy:
        """Also accepts the simulated TEE (with a score penalty). Never for production."""
        return cls(allowed_kinds=ALL_KINDS, allow_simulated=True)

    def validate(self) -> None:
        unknown = set(self.allowed_kinds) - set(ALL_KINDS)
        if unknown:
            raise PolicyError(f"allowed_kinds: unknown kinds {sorted(unknown)}")
        for m in self.measurements:
            if m != SELF:
                try:
                    raw = bytes.fromhex(m)
                except ValueError:
                    raise PolicyError(f"measurements: {m!r} is neither 'self' nor hex") from None
                if len(raw) not in (32, 48):
                    raise PolicyError(f"measurements: {m!r} must be 32 or 48 bytes")
        if not (math.isfinite(self.max_evidence_age_s) and self.max_evidence_age_s > 0):
            raise PolicyError("max_evidence_age_s must be a positive number")
        if not 0 <= self.min_score <= 100:
            raise PolicyError("min_score must be within 0..100")
        for k, v in self.min_tcb.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise PolicyError(f"min_tcb.{k} must be a non-negative integer")
        if not 0 <= self.snp_vmpl_max <= 3:
            raise PolicyError("snp_vmpl_max must be a VMPL within 0..3")
        for h in self.snp_host_data:
            try:
                raw = bytes.fromhex(h)
            except ValueError:
                raise PolicyError(f"snp_host_data: {h!r} is not hex") from None
            if len(raw) != 32:
                raise PolicyError(f"snp_host_data: {h!r} must be 32 bytes")

    def to_toml(self) -> str:
        def arr(xs: tuple[str, ...]) -> str:
            return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

        lines = [
            f"allowed_kinds = {arr(self.allowed_kinds)}",
            f"allow_simulated = {str(self.allow_simulated).lower()}",
            f"measurements = {arr(self.measurements)}",
            f"forbid_debug = {str(self.forbid_debug).lower()}",
            f"max_evidence_age_s = {self.max_evidence_age_s!r}",
            f"min_score = {self.min_score}",
            f"allowed_tcb_statuses = {arr(self.allowed_tcb_statuses)}",
            f"snp_vmpl_max = {self.snp_vmpl_max}",
            f"snp_host_data = {arr(self.snp_host_data)}",
            "[min_tcb]",
            *(f"{k} = {v}" for k, v in sorted(self.min_tcb.items())),
        ]
        return "\n".join(lines) + "\n"


_FIELDS = {f.name for f in dataclasses.fields(Policy)}


def policy_from_mapping(data: Mapping[str, Any], *, base: Policy | None = None) -> Policy:
    unknown = set(data) - _FIELDS
    if unknown:
        raise PolicyError(f"unknown policy keys: {sorted(unknown)}")
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("allowed_kinds", "measurements", "allowed_tcb_statuses", "snp_host_data"):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise PolicyError(f"{key} must be a list of strings")
            kw[key] = tuple(value)
        elif key in ("allow_simulated", "forbid_debug"):
            if not isinstance(value, bool):
                raise PolicyError(f"{key} must be true or false")
            kw[key] = value
        elif key == "max_evidence_age_s":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise PolicyError(f"{key} must be a number")
            kw[key] = float(value)
        elif key in ("min_score", "snp_vmpl_max"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise PolicyError(f"{key} must be an integer")
            kw[key] = value
        elif key == "min_tcb":
            if not isinstance(value, dict):
                raise PolicyError("min_tcb must be a table")
            kw[key] = dict(value)
    policy = dataclasses.replace(base or Policy(), **kw)
    policy.validate()
    return policy


def load_policy(path: str | Path, *, base: Policy | None = None) -> Policy:
    """Read and validate a TOML policy file.

    Raises:
        PolicyError: unreadable file, bad TOML, unknown keys or invalid values (the message
            names the file).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{p}: invalid TOML ({exc})") from None
    try:
        return policy_from_mapping(data, base=base)
    except PolicyError as exc:
        raise PolicyError(f"{p}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Decision:
    """The policy's outcome. ``failed_rules`` names every rule that failed, in rule order.

    ``tcb_margin`` is the smallest (reported − minimum) over the components the policy
    constrains (None when it constrains none); the score uses it.
    """

    allowed: bool
    failed_rules: tuple[str, ...]
    evidence_age_s: float
    tcb_margin: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "failed_rules": list(self.failed_rules),
            "evidence_age_s": self.evidence_age_s,
            "tcb_margin": self.tcb_margin,
        }


def evaluate(
    policy: Policy,
    verdict: Verdict,
    *,
    at: datetime,
    evidence_time: datetime | None = None,
    self_measurement: bytes | None = None,
) -> Decision:
    """Apply ``policy`` to a verifier's ``verdict``.

    Args:
        at: the time of the decision.
        evidence_time: when the evidence was produced (for live challenges, when the nonce was
            issued); None means "now" (age 0), as for a file checked offline.
        self_measurement: our own measurement, which the ``"self"`` allow-list entry stands for.
    """
    failed: list[str] = []
    age = 0.0 if evidence_time is None else max(0.0, (at - evidence_time).total_seconds())
    if not verdict.accepted or verdict.claims is None:
        failed.append(f"verdict: evidence rejected ({verdict.reason})")
        return Decision(False, tuple(failed), age, None)
    c = verdict.claims
    kind = str(c.kind)
    if kind not in policy.allowed_kinds:
        failed.append(f"kind: {kind} not in allowed_kinds")
    if c.kind == TeeKind.SIM and not policy.allow_simulated:
        failed.append("simulated: the simulated TEE is refused by this policy")
    if policy.measurements:
        allowed = [
            self_measurement if m == SELF else bytes.fromhex(m) for m in policy.measurements
        ]
        if not any(a is not None and hmac.compare_digest(a, c.measurement) for a in allowed):
            failed.append(f"measurement: {c.measurement.hex()[:24]}… not on the allow-list")
    if policy.forbid_debug and c.debug:
        failed.append("debug: debug-enabled TEE forbidden")
    if age > policy.max_evidence_age_s:
        failed.append(f"age: evidence is {age:.0f}s old > {policy.max_evidence_age_s:.0f}s")
    margin: int | None = None
    for comp, minimum in sorted(policy.min_tcb.items()):
        if comp not in c.tcb:
            continue  # the component does not exist for this kind of TEE
        have = c.tcb[comp]
        margin = have - minimum if margin is None else min(margin, have - minimum)
        if have < minimum:
            failed.append(f"tcb.{comp}: {have} < minimum {minimum}")
    if c.tcb_status is not None and c.tcb_status not in policy.allowed_tcb_statuses:
        failed.append(f"tcb_status: {c.tcb_status} not allowed")
    if c.kind == TeeKind.SEV_SNP:
        failed.extend(_snp_launch_rules(policy, c.extra))
    return Decision(not failed, tuple(failed), age, margin)


def _snp_launch_rules(policy: Policy, extra: Mapping[str, Any]) -> list[str]:
    """The SEV-SNP VMPL and HOST_DATA rules; a missing or malformed claim fails (closed)."""
    failed = []
    vmpl = extra.get("vmpl")
    if not isinstance(vmpl, int) or isinstance(vmpl, bool):
        failed.append("snp_vmpl: the report names no VMPL")
    elif vmpl > policy.snp_vmpl_max:
        failed.append(f"snp_vmpl: report requested at VMPL {vmpl} > snp_vmpl_max {policy.snp_vmpl_max}")
    if policy.snp_host_data:
        host_data = extra.get("host_data")
        if not isinstance(host_data, bytes) or len(host_data) != 32:
            failed.append("snp_host_data: the report names no HOST_DATA")
        elif not any(hmac.compare_digest(bytes.fromhex(h), host_data) for h in policy.snp_host_data):
            failed.append(f"snp_host_data: {host_data.hex()[:16]}… not on the allow-list")
    return failed
