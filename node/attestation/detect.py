"""Recognise the kind of an evidence blob, and pick the verifier for a kind.

Theory of operation
-------------------
Detection is a cheap structural sniff, not verification: it looks only at fixed header fields
and never decides trust. An SEV-SNP report is exactly 1184 bytes with version 2, 3 or 5 and
signature algorithm 1 (ECDSA P-384) at 0x34. A DCAP quote starts with version 3, 4 or 5,
attestation key type 2 (ECDSA P-256) and Intel's QE vendor ID at byte 12; its TEE type (0x81)
says TDX, otherwise SGX. Anything else, including our simulated-TEE CBOR envelope
("sim-evidence"), is reported as unknown (None): the caller knows the kind from the wire
message in that case.
"""

from __future__ import annotations

import struct
from typing import Any

from node.attestation.base import TeeKind, Verifier

__all__ = ["detect_kind", "verifier_for"]

_INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")


def detect_kind(blob: bytes) -> TeeKind | None:
    """SEV_SNP, TDX or SGX when ``blob`` looks like that evidence, else None. Never raises."""
    b = bytes(blob)
    if len(b) == 1184:
        version, = struct.unpack_from("<I", b, 0)
        algo, = struct.unpack_from("<I", b, 0x34)
        if version in (2, 3, 5) and algo == 1:
            return TeeKind.SEV_SNP
    if len(b) >= 48:
        version, key_type, tee_type = struct.unpack_from("<HHI", b, 0)
        if version in (3, 4, 5) and key_type == 2 and b[12:28] == _INTEL_QE_VENDOR_ID:
            return TeeKind.TDX if tee_type == 0x81 else TeeKind.SGX
    return None


def verifier_for(kind: TeeKind, **kw: Any) -> Verifier:
    """A fresh verifier for ``kind``; ``kw`` goes to its constructor.

    SEV_SNP: :class:`~node.attestation.sevsnp.SnpVerifier` (``vcek``, ``chain``, ``extra_arks``);
    TDX/SGX: :class:`~node.attestation.dcap.DcapVerifier` (``collateral``, ``root_pem``);
    SIM: :class:`~node.attestation.simulated.SimulatedVerifier`.

    Raises:
        ValueError: unknown kind.
    """
    if kind is TeeKind.SEV_SNP:
        from node.attestation.sevsnp import SnpVerifier

        return SnpVerifier(**kw)
    if kind in (TeeKind.TDX, TeeKind.SGX):
        from node.attestation.dcap import DcapVerifier

        return DcapVerifier(kind, **kw)
    if kind is TeeKind.SIM:
        from node.attestation.simulated import SimulatedVerifier

        return SimulatedVerifier(**kw)
    raise ValueError(f"no verifier for {kind!r}")
