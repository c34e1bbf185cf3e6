"""The simulated TEE: a clearly labelled stand-in for machines without SEV-SNP, TDX or SGX.

Theory of operation
-------------------
It mirrors the shape of AMD SEV-SNP so that it exercises the same verify → policy → score path
as real evidence:

- a **root key** (the AMD ARK's role) certifies a **per-host key** (the VCEK's role) in a
  ``SimHostCert`` that also carries the host's chip id and TCB version and a validity window;
- the host key signs a ``SimReport`` (the attestation report's role) holding a measurement of
  the installed agent code, the 64-byte report_data, the TCB version and the policy flags.

The root key is *public knowledge*: its seed is a constant in this file. Anyone can mint
simulated evidence, which is exactly why ``allow_simulated`` is false in the production policy
and why every verdict and status line says ``sim``. What the simulation does prove is the
*protocol*: binding to the nonce and libp2p key, chain checking, expiry, policy and scoring.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.attestation.base import AttestationUnavailable, Claims, Evidence, TeeKind, Verdict
from node.datadir import write_new
from overlay.errors import RemoteProtocolError
from overlay.wire import decode, encode, message

log = logging.getLogger(__name__)

SIM_ROOT_SEED = hashlib.sha256(b"enclave-swarm simulated TEE root v1 -- NOT A HARDWARE ROOT").digest()
REPORT_VERSION = 1
MEASUREMENT_BYTES = 48
REPORT_DATA_BYTES = 64
CHIP_ID_BYTES = 32
# TCB components, in the order SEV-SNP's REPORTED_TCB uses.
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode")
DEFAULT_TCB = (4, 0, 22, 213)
HOST_CERT_LIFETIME_S = 365 * 24 * 3600
# Policy flag bits, as in SEV-SNP's guest policy.
POLICY_DEBUG = 1 << 19
POLICY_SMT = 1 << 16


def sim_root_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SIM_ROOT_SEED)


def sim_root_public() -> bytes:
    return sim_root_key().public_key().public_bytes_raw()


@message("sim-host-cert", version=1, max_bytes=1024)
@dataclasses.dataclass(frozen=True)
class SimHostCert:
    host_public_key: bytes = dataclasses.field(metadata={"len": 32})
    chip_id: bytes = dataclasses.field(metadata={"len": CHIP_ID_BYTES})
    tcb: tuple[int, ...] = dataclasses.field(metadata={"max_items": 4, "min": 0, "max": 255})
    not_before: int = dataclasses.field(metadata={"min": 0})
    not_after: int = dataclasses.field(metadata={"min": 0})
    signature: bytes = dataclasses.field(metadata={"len": 64})

    def validate(self) -> None:
        if len(self.tcb) != len(TCB_COMPONENTS):
            raise RemoteProtocolError("invalid", "tcb must have 4 components")
        if self.not_after <= self.not_before:
            raise RemoteProtocolError("invalid", "empty validity window")


@message("sim-report", version=1, max_bytes=1024)
@dataclasses.dataclass(frozen=True)
class SimReport:
    version: int = dataclasses.field(metadata={"min": 0, "max": 255})
    measurement: bytes = dataclasses.field(metadata={"len": MEASUREMENT_BYTES})
    report_data: bytes = dataclasses.field(metadata={"len": REPORT_DATA_BYTES})
    tcb: tuple[int, ...] = dataclasses.field(metadata={"max_items": 4, "min": 0, "max": 255})
    policy: int = dataclasses.field(metadata={"min": 0, "max": 2**64 - 1})
    chip_id: bytes = dataclasses.field(metadata={"len": CHIP_ID_BYTES})
    signature: bytes = dataclasses.field(metadata={"len": 64})

    def validate(self) -> None:
        if len(self.tcb) != len(TCB_COMPONENTS):
            raise RemoteProtocolError("invalid", "tcb must have 4 components")


def _unsigned(obj: SimHostCert | SimReport) -> bytes:
    """The signed bytes: the canonical encoding with an all-zero signature."""
    return encode(dataclasses.replace(obj, signature=bytes(64)))


def make_host_cert(
    host_public_key: bytes, *, chip_id: bytes, tcb: tuple[int, ...], not_before: int, not_after: int
) -> SimHostCert:
    cert = SimHostCert(host_public_key, chip_id, tcb, not_before, not_after, bytes(64))
    return dataclasses.replace(cert, signature=sim_root_key().sign(_unsigned(cert)))


#: A file of this name in the simulated TEE's state dir turns on its debug bit (see below).
DEBUG_SWITCH = "debug"


class SimulatedProvider:
    """Produces simulated evidence on this host.

    Args:
        state_dir: where the per-host key and certificate live (created, files 0600).
        measurement: 48 bytes identifying the agent build (see ``node/measure.py``).
        debug: set the debug policy bit (a policy that forbids debug then refuses us). A
            file named ``debug`` (:data:`DEBUG_SWITCH`) in ``state_dir`` sets it too, from the
            next evidence on: a running node's simulated TEE can be made to fail attestation
            (the chaos nemesis's ``attest`` fault, node/chaos/), as a host whose TEE was put
            into debug mode would.
        tcb: the TCB version this simulated host reports.
        clock: wall-clock seconds, injectable for tests.
    """

    kind = TeeKind.SIM

    def __init__(
        self,
        state_dir: Path,
        measurement: bytes,
        *,
        debug: bool = False,
        tcb: tuple[int, ...] = DEFAULT_TCB,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(measurement) != MEASUREMENT_BYTES:
            raise ValueError("measurement must be 48 bytes")
        self.measurement = measurement
        self.debug = debug
        self._debug_switch = state_dir / DEBUG_SWITCH
        self.tcb = tcb
        self._clock = clock
        self._key, self._cert = self._load_or_create(state_dir)

    def _load_or_create(self, state_dir: Path) -> tuple[Ed25519PrivateKey, SimHostCert]:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path = state_dir / "host.key"
        if key_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise AttestationUnavailable(f"{key_path}: unreadable simulated host key ({exc})") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise AttestationUnavailable(f"{key_path}: not an Ed25519 key")
        else:
            key = Ed25519PrivateKey.generate()
            write_new(key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()), 0o600)
        pub = key.public_key().public_bytes_raw()
        # The chip id is a stable function of the host key: one "chip" per data dir.
        chip_id = hashlib.sha256(b"sim-chip-id" + pub).digest()
        now = int(self._clock())
        cert = make_host_cert(pub, chip_id=chip_id, tcb=self.tcb,
                              not_before=now - 3600, not_after=now + HOST_CERT_LIFETIME_S)
        return key, cert

    def get_evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != REPORT_DATA_BYTES:
            raise ValueError("report_data must be 64 bytes")
        debug = self.debug or self._debug_switch.exists()
        policy = POLICY_SMT | (POLICY_DEBUG if debug else 0)
        report = SimReport(REPORT_VERSION, self.measurement, report_data, self.tcb, policy,
                           self._cert.chip_id, bytes(64))
        report = dataclasses.replace(report, signature=self._key.sign(_unsigned(report)))
        return Evidence(TeeKind.SIM, encode(report), (encode(self._cert),))


class SimulatedVerifier:
    """Verifies simulated evidence through the same steps as an SEV-SNP report.

    Args:
        root_public_key: the pinned simulated root (defaults to the well-known one).
    """

    kind = TeeKind.SIM

    def __init__(self, root_public_key: bytes | None = None) -> None:
        self._root = Ed25519PublicKey.from_public_bytes(root_public_key or sim_root_public())

    def verify(self, evidence: Evidence, *, at: datetime) -> Verdict:
        kind = TeeKind.SIM
        if evidence.kind != TeeKind.SIM:
            return Verdict.reject(kind, f"wrong kind {evidence.kind} for the simulated verifier")
        if len(evidence.certs) != 1:
            return Verdict.reject(kind, "chain: expected exactly one host certificate")
        try:
            cert = decode(evidence.certs[0], SimHostCert)
        except RemoteProtocolError as exc:
            return Verdict.reject(kind, f"chain: malformed host certificate ({exc.reason})")
        try:
            report = decode(evidence.blob, SimReport)
        except RemoteProtocolError as exc:
            return Verdict.reject(kind, f"report: malformed ({exc.reason})")
        claims = Claims(
            kind=kind,
            measurement=report.measurement,
            report_data=report.report_data,
            debug=bool(report.policy & POLICY_DEBUG),
            tcb=dict(zip(TCB_COMPONENTS, report.tcb, strict=True)),
            extra={
                "simulated": True,
                "version": report.version,
                "policy": report.policy,
                "smt": bool(report.policy & POLICY_SMT),
                "chip_id": report.chip_id,
            },
        )
        try:
            self._root.verify(cert.signature, _unsigned(cert))
        except InvalidSignature:
            return Verdict.reject(kind, "chain: host certificate not signed by the simulated root", claims)
        ts = at.timestamp()
        if not cert.not_before <= ts <= cert.not_after:
            return Verdict.reject(kind, "chain: host certificate not valid at the given time", claims)
        try:
            Ed25519PublicKey.from_public_bytes(cert.host_public_key).verify(
                report.signature, _unsigned(report))
        except InvalidSignature:
            return Verdict.reject(kind, "signature invalid", claims)
        if report.version != REPORT_VERSION:
            return Verdict.reject(kind, f"report: unsupported version {report.version}", claims)
        if not hmac.compare_digest(report.chip_id, cert.chip_id):
            return Verdict.reject(kind, "chip id does not match the host certificate", claims)
        if tuple(report.tcb) != tuple(cert.tcb):
            return Verdict.reject(kind, "reported TCB does not match the host certificate", claims)
        return Verdict.accept(claims)


def now_utc() -> datetime:
    return datetime.now(UTC)
