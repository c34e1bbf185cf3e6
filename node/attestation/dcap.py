"""Intel DCAP quote parser and verifier: TDX quotes v4 and v5, SGX quotes v3 (and v4/v5 SGX).

Theory of operation
-------------------
A DCAP quote is ``header (48) ‖ body ‖ u32 signature_data_len ‖ signature_data [‖ junk]``.
Version 5 inserts a body descriptor (``u16 type, u32 size``) before the body; type 1 is an SGX
report body (384 bytes), 2 a TDX 1.0 TD report (584), 3 a TDX 1.5 TD report (648). Versions 3
and 4 imply the body by the header's TEE type (0x00 SGX, 0x81 TDX).

The signature data is ``ECDSA sig (64, r‖s) ‖ attestation public key (64, x‖y) ‖``
certification data. Version 3 continues directly with the QE report (384), its signature (64),
``u16 len ‖ QE authentication data`` and the certification data ``u16 type = 5 ‖ u32 size ‖
PEM PCK chain``. Versions 4 and 5 wrap those in certification data of type 6 (``u16 type = 6 ‖
u32 size``). :func:`parse_quote` checks every type, every length and that each nested length
consumes its container exactly; only bytes *after* the declared signature data are tolerated
(several real quote generators pad to a fixed buffer). Those trailing bytes are covered by
nothing, so they are counted (``extra["trailing_bytes"]``) and never read.

:class:`DcapVerifier` then checks, in order:

1. the PCK chain (leaf, Platform/Processor CA, root) to the Intel SGX Root CA *pinned* in
   ``roots/intel_sgx_root_ca.pem`` (byte-identical), ECDSA P-256/SHA-256 links, names, CA
   flags, validity at ``at``;
2. the QE report signature with the PCK leaf key, and that the QE is Intel's (pinned MRSIGNER
   and ISVPRODID for the SGX QE / TD QE) and not a debug enclave;
3. ``QE report_data[0:32] == SHA-256(attestation key ‖ QE auth data)``, bytes 32..63 zero;
4. the quote signature over ``header ‖ [descriptor ‖] body`` with the attestation key;
5. with :class:`Collateral`: TCB info and QE identity signatures by the TCB Signing
   certificate chained to the pinned root, their issue/next-update window at ``at``, FMSPC and
   PCE-ID match, the CRLs (signed by their issuers, current at ``at``) for revocation of the PCK
   leaf, the intermediate and the TCB signing cert, then the TCB status (Intel's rules: first
   TCB level whose SGX components and PCE SVN, and for TDX TEE_TCB_SVN, are all >=; TDX module
   identity; QE identity level), converged into ``Claims.tcb_status``. A revoked TCB or no
   matching level is a rejection; any other status is accepted and left to policy.

Verified PCK chains and collateral signatures are cached (bounded LRU, served only inside the
validity window), so a warm verification costs two ECDSA P-256 checks plus parsing.
:meth:`DcapVerifier.verify` never raises; unexpected exceptions become ``"internal: <type>"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import struct
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from node.attestation import _certs
from node.attestation._certs import CertError, ChainCache
from node.attestation.base import Claims, Evidence, TeeKind, Verdict

__all__ = [
    "Collateral",
    "DcapFormatError",
    "DcapVerifier",
    "Quote",
    "ReportBody",
    "parse_quote",
]

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD10_REPORT_SIZE = 584
TD15_REPORT_SIZE = 648
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATT_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
# Intel's quoting enclaves, pinned even without collateral (the QE identity collateral, when
# given, checks the same values plus the QE's SVN): MRSIGNER and ISVPRODID per quote kind.
INTEL_QE_MRSIGNER = {
    "sgx": bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff"),
    "tdx": bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"),
}
INTEL_QE_PRODID = {"sgx": 1, "tdx": 2}
SGX_FLAGS_DEBUG = 0x02
TD_ATTRIBUTES_DEBUG = 0x01
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
MAX_QUOTE_BYTES = 1 << 20  # real quotes are ~5 KiB; refuse anything absurd before parsing

_BODY_SIZES = {1: SGX_REPORT_SIZE, 2: TD10_REPORT_SIZE, 3: TD15_REPORT_SIZE}

_PEM_CHAIN_RE = re.compile(
    rb"\A(?:\s*-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----)+\s*\Z")


class DcapFormatError(ValueError):
    """The bytes are not a well-formed DCAP quote. ``str()`` is a stable reason."""


# ---------------------------------------------------------------------------------------------
# Report bodies


@dataclasses.dataclass(frozen=True)
class ReportBody:
    """An SGX report body (quote body or QE report) or a TDX TD report body, decoded."""

    kind: TeeKind
    raw: bytes
    fields: Mapping[str, Any]

    @property
    def report_data(self) -> bytes:
        return self.fields["report_data"]  # type: ignore[no-any-return]


def _sgx_body(b: bytes, what: str) -> ReportBody:
    assert len(b) == SGX_REPORT_SIZE
    for start, end, name in ((20, 32, "reserved1"), (96, 128, "reserved2"),
                             (160, 192, "reserved3"), (262, 304, "reserved4")):
        if any(b[start:end]):
            raise DcapFormatError(f"{what}: {name} not zero")
    flags, xfrm = struct.unpack_from("<QQ", b, 48)
    isv_prod_id, isv_svn, config_svn = struct.unpack_from("<HHH", b, 256)
    return ReportBody(TeeKind.SGX, b, {
        "cpu_svn": b[0:16],
        "misc_select": struct.unpack_from("<I", b, 16)[0],
        "isv_ext_prod_id": b[32:48],
        "attributes": b[48:64],
        "attributes_flags": flags,
        "attributes_xfrm": xfrm,
        "mr_enclave": b[64:96],
        "mr_signer": b[128:160],
        "config_id": b[192:256],
        "isv_prod_id": isv_prod_id,
        "isv_svn": isv_svn,
        "config_svn": config_svn,
        "isv_family_id": b[304:320],
        "report_data": b[320:384],
    })


def _td_body(b: bytes) -> ReportBody:
    assert len(b) in (TD10_REPORT_SIZE, TD15_REPORT_SIZE)
    f: dict[str, Any] = {
        "tee_tcb_svn": b[0:16],
        "mr_seam": b[16:64],
        "mr_signer_seam": b[64:112],
        "seam_attributes": b[112:120],
        "td_attributes": b[120:128],
        "xfam": b[128:136],
        "mr_td": b[136:184],
        "mr_config_id": b[184:232],
        "mr_owner": b[232:280],
        "mr_owner_config": b[280:328],
        "rtmrs": [b[328 + 48 * i:376 + 48 * i] for i in range(4)],
        "report_data": b[520:584],
    }
    if len(b) == TD15_REPORT_SIZE:
        f["tee_tcb_svn2"] = b[584:600]
        f["mr_servicetd"] = b[600:648]
    return ReportBody(TeeKind.TDX, b, f)


# ---------------------------------------------------------------------------------------------
# Quote


@dataclasses.dataclass(frozen=True)
class Quote:
    """A parsed, structurally checked quote. Nothing here is verified yet."""

    version: int
    tee_type: int
    body_type: int  # 1 SGX, 2 TD 1.0, 3 TD 1.5 (implied for v3/v4)
    header: bytes
    qe_svn: int
    pce_svn: int
    user_data: bytes
    body: ReportBody
    signed: bytes  # header ‖ [descriptor ‖] body
    signature: bytes  # r ‖ s, 64
    attestation_key: bytes  # x ‖ y, 64
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing_bytes: int

    @property
    def kind(self) -> TeeKind:
        return self.body.kind


class _Reader:
    def __init__(self, b: bytes, start: int, end: int, what: str) -> None:
        self.b, self.pos, self.end, self.what = b, start, end, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise DcapFormatError(f"{self.what}: truncated at {field}")
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])

    def done(self) -> None:
        if self.pos != self.end:
            raise DcapFormatError(f"{self.what}: {self.end - self.pos} unexpected bytes")


def _qe_block(r: _Reader) -> tuple[ReportBody, bytes, bytes, bytes]:
    """QE report ‖ QE report signature ‖ u16 auth len ‖ auth ‖ type-5 PCK chain."""
    qe = _sgx_body(r.take(SGX_REPORT_SIZE, "QE report"), "QE report")
    qe_sig = r.take(64, "QE report signature")
    auth = r.take(r.u16("QE auth data length"), "QE auth data")
    ctype = r.u16("certification data type")
    if ctype != CERT_TYPE_PCK_CHAIN:
        raise DcapFormatError(f"certification data type {ctype}, want 5 (PCK chain)")
    pem = r.take(r.u32("PCK chain size"), "PCK chain")
    r.done()
    return qe, qe_sig, auth, pem


def parse_quote(blob: bytes) -> Quote:
    """Parse a DCAP quote strictly (see the module docstring for the layout).

    Raises:
        DcapFormatError: any length, type, version or reserved field is wrong.
    """
    b = bytes(blob)
    if len(b) > MAX_QUOTE_BYTES:
        raise DcapFormatError("quote too large")
    r = _Reader(b, 0, len(b), "quote")
    header = r.take(HEADER_SIZE, "header")
    version, att_key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", header, 0)
    vendor, user_data = header[12:28], header[28:48]
    if version not in (3, 4, 5):
        raise DcapFormatError(f"unsupported quote version {version}")
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise DcapFormatError(f"unsupported attestation key type {att_key_type}")
    if not hmac.compare_digest(vendor, INTEL_QE_VENDOR_ID):
        raise DcapFormatError("QE vendor ID is not Intel")
    if version == 3:
        if tee_type != 0:  # reserved in v3
            raise DcapFormatError("reserved header field not zero")
        body_type = 1
    elif tee_type == TEE_TYPE_SGX:
        body_type = 1
    elif tee_type == TEE_TYPE_TDX:
        body_type = 2
    else:
        raise DcapFormatError(f"unknown TEE type 0x{tee_type:x}")
    if version == 5:
        body_type = r.u16("body type")
        size = r.u32("body size")
        if body_type not in _BODY_SIZES:
            raise DcapFormatError(f"unknown body type {body_type}")
        if _BODY_SIZES[body_type] != size:
            raise DcapFormatError(f"body size {size} wrong for body type {body_type}")
        if (body_type == 1) != (tee_type == TEE_TYPE_SGX):
            raise DcapFormatError("body type does not match TEE type")
    raw_body = r.take(_BODY_SIZES[body_type], "body")
    body = _sgx_body(raw_body, "quote body") if body_type == 1 else _td_body(raw_body)
    signed = b[:r.pos]
    sig_len = r.u32("signature data length")
    if sig_len > r.end - r.pos:
        raise DcapFormatError("signature data length exceeds quote")
    sig_end = r.pos + sig_len
    s = _Reader(b, r.pos, sig_end, "signature data")
    signature = s.take(64, "quote signature")
    att_key = s.take(64, "attestation key")
    if version == 3:
        qe, qe_sig, auth, pem = _qe_block(s)
    else:
        ctype = s.u16("certification data type")
        if ctype != CERT_TYPE_QE_REPORT:
            raise DcapFormatError(f"certification data type {ctype}, want 6 (QE report)")
        size = s.u32("QE report certification data size")
        if size != s.end - s.pos:
            raise DcapFormatError("QE report certification data size mismatch")
        qe, qe_sig, auth, pem = _qe_block(_Reader(b, s.pos, s.end, "QE report certification data"))
    return Quote(
        version=version,
        tee_type=tee_type,
        body_type=body_type,
        header=header,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        user_data=user_data,
        body=body,
        signed=signed,
        signature=signature,
        attestation_key=att_key,
        qe_report=qe,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_pem=pem,
        trailing_bytes=len(b) - sig_end,
    )


# ---------------------------------------------------------------------------------------------
# Minimal DER reader for the SGX PCK extension (cryptography does not decode it)


def _der_items(b: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(b):
        if i + 2 > len(b):
            raise CertError("bad DER")
        tag, ln = b[i], b[i + 1]
        i += 2
        if tag & 0x1F == 0x1F:
            raise CertError("bad DER tag")
        if ln & 0x80:
            n = ln & 0x7F
            if n == 0 or n > 3 or i + n > len(b):
                raise CertError("bad DER length")
            ln = int.from_bytes(b[i:i + n], "big")
            i += n
        if i + ln > len(b):
            raise CertError("bad DER length")
        out.append((tag, b[i:i + ln]))
        i += ln
    return out


def _oid_der(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


OID_SGX_EXT = "1.2.840.113741.1.13.1"
_SGX = _oid_der(OID_SGX_EXT)


def _sgx_extension(cert: x509.Certificate) -> dict[str, Any]:
    """Decode the PCK certificate's SGX extension: PPID, TCB, PCE-ID, FMSPC, SGX type."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX_EXT))
    except x509.ExtensionNotFound as e:
        raise CertError("PCK certificate lacks the SGX extension") from e
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise CertError("bad SGX extension")
    top = _der_items(ext.value.value)
    if len(top) != 1 or top[0][0] != 0x30:
        raise CertError("bad SGX extension")
    out: dict[str, Any] = {}
    for tag, seq in _der_items(top[0][1]):
        if tag != 0x30:
            raise CertError("bad SGX extension")
        items = _der_items(seq)
        if len(items) != 2 or items[0][0] != 0x06:
            raise CertError("bad SGX extension")
        oid, (vtag, val) = items[0][1], items[1]
        if oid == _SGX + b"\x01" and vtag == 0x04:
            out["ppid"] = val
        elif oid == _SGX + b"\x02" and vtag == 0x30:
            comps: dict[int, int] = {}
            cpusvn = None
            for t2, s2 in _der_items(val):
                pair = _der_items(s2) if t2 == 0x30 else []
                if (len(pair) != 2 or pair[0][0] != 0x06
                        or not pair[0][1].startswith(_SGX + b"\x02")):
                    raise CertError("bad SGX TCB extension")
                sub = pair[0][1][len(_SGX) + 1:]
                if len(sub) != 1:
                    raise CertError("bad SGX TCB extension")
                if sub[0] == 18 and pair[1][0] == 0x04:
                    cpusvn = pair[1][1]
                elif 1 <= sub[0] <= 17 and pair[1][0] == 0x02 and 1 <= len(pair[1][1]) <= 3:
                    comps[sub[0]] = int.from_bytes(pair[1][1], "big", signed=True)
                else:
                    raise CertError("bad SGX TCB extension")
            if len(comps) != 17 or cpusvn is None or len(cpusvn) != 16:
                raise CertError("incomplete SGX TCB extension")
            out["tcb_components"] = [comps[i] for i in range(1, 17)]
            out["pce_svn"] = comps[17]
            out["cpu_svn"] = cpusvn
        elif oid == _SGX + b"\x03" and vtag == 0x04:
            out["pce_id"] = val
        elif oid == _SGX + b"\x04" and vtag == 0x04:
            out["fmspc"] = val
        elif oid == _SGX + b"\x05" and vtag == 0x0A:
            out["sgx_type"] = int.from_bytes(val, "big")
        # .6 PlatformInstanceID, .7 Configuration (multi-package platforms): informational.
    for need in ("tcb_components", "pce_id", "fmspc"):
        if need not in out:
            raise CertError(f"SGX extension lacks {need}")
    if len(out["fmspc"]) != 6 or len(out["pce_id"]) != 2:
        raise CertError("bad FMSPC/PCE-ID length")
    return out


# ---------------------------------------------------------------------------------------------
# Collateral


@dataclasses.dataclass(frozen=True)
class Collateral:
    """Intel collateral for TCB evaluation (all optional; raw bytes exactly as served by PCS).

    Attributes:
        tcb_info: TCB info JSON (``{"tcbInfo": {...}, "signature": "..."}``).
        qe_identity: QE identity JSON (``{"enclaveIdentity": {...}, "signature": "..."}``).
        tcb_signing_chain: PEM, TCB Signing certificate then (optionally) the root.
        pck_crl: DER or PEM CRL issued by the PCK Platform/Processor CA.
        root_crl: DER, PEM or hex CRL issued by the Intel SGX Root CA.
    """

    tcb_info: bytes | None = None
    qe_identity: bytes | None = None
    tcb_signing_chain: bytes | None = None
    pck_crl: bytes | None = None
    root_crl: bytes | None = None

    _NAMES: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = (
        ("tcb_info", ("tcb_info.json", "tcbInfo.json", "sample_tcbInfo_response")),
        ("qe_identity", ("qe_identity.json", "qeIdentity.json", "enclaveIdentity.json",
                         "sample_qeIdentity_response")),
        ("tcb_signing_chain", ("tcb_signing_chain.pem", "tcb_info_issuer_chain.pem")),
        ("pck_crl", ("pck_crl.der", "pck_crl.pem", "pckcrl")),
        ("root_crl", ("root_crl.der", "root_crl.pem", "rootcrl.der")),
    )

    @classmethod
    def from_dir(cls, path: str | Path) -> Collateral:
        """Load collateral files by their usual names from a directory (missing ones: None).

        Names: tcb_info.json|tcbInfo.json, qe_identity.json|enclaveIdentity.json,
        tcb_signing_chain.pem, pck_crl.der|pckcrl, root_crl.der|rootcrl.der.
        """
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"collateral directory not found: {p}")
        kw: dict[str, bytes | None] = {}
        for attr, names in cls._NAMES:
            kw[attr] = next(((p / n).read_bytes() for n in names if (p / n).is_file()), None)
        return cls(**kw)


def _signed_json(raw: bytes, key: str) -> tuple[dict[str, Any], bytes, bytes]:
    """Return (object, exact signed bytes of the ``key`` member, 64-byte signature)."""
    text = raw.decode("utf-8")
    m = re.match(r'\s*\{\s*"' + key + r'"\s*:\s*', text)
    if not m:
        raise CertError(f"{key}: not a signed {key} document")
    obj, end = json.JSONDecoder().raw_decode(text, m.end())
    whole = json.loads(text)
    if not isinstance(obj, dict) or not isinstance(whole, dict) or set(whole) != {key, "signature"}:
        raise CertError(f"{key}: bad document")
    sig = bytes.fromhex(whole["signature"])
    if len(sig) != 64:
        raise CertError(f"{key}: bad signature length")
    return obj, text[m.end():end].encode("utf-8"), sig


def _p256_verify(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    d = data.strip()
    if d.startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(d)
    if re.fullmatch(rb"[0-9a-fA-F]+", d):
        d = bytes.fromhex(d.decode())
    return x509.load_der_x509_crl(d)


def _iso(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


_STATUS_RANK = {  # worse is higher
    "UpToDate": 0, "SWHardeningNeeded": 1, "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3, "OutOfDate": 4, "OutOfDateConfigurationNeeded": 5,
    "Revoked": 6,
}


def _converge(platform: str, other: str) -> str:
    """Intel QVL convergence of the platform status with a QE / TDX-module status."""
    if other == "Revoked":
        return "Revoked"
    if other == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform


# ---------------------------------------------------------------------------------------------
# Verifier


@dataclasses.dataclass(frozen=True)
class _Pck:
    key: ec.EllipticCurvePublicKey
    sgx: Mapping[str, Any]
    leaf_serial: int
    ca_serial: int
    ca_subject: x509.Name
    ca_key: ec.EllipticCurvePublicKey
    ca_spki: bytes


class DcapVerifier:
    """Verifies Intel DCAP quotes (TDX v4/v5, SGX v3) against the pinned Intel SGX Root CA.

    Args:
        kind: which evidence kind this instance serves (TDX or SGX); ``verify`` also accepts
            the other DCAP kind, but the quote's TEE type must match ``Evidence.kind``.
        collateral: optional Intel collateral; when given, the TCB status is evaluated.
        root_pem: override the pinned root (tests only); default ``roots/intel_sgx_root_ca.pem``.
        cache_size: bound of the verified-chain LRU; 0 disables caching.
    """

    def __init__(
        self,
        kind: TeeKind = TeeKind.TDX,
        *,
        collateral: Collateral | None = None,
        root_pem: bytes | None = None,
        cache_size: int = 256,
    ) -> None:
        if kind not in (TeeKind.TDX, TeeKind.SGX):
            raise ValueError("DcapVerifier serves TDX or SGX")
        self.kind: TeeKind = kind
        if root_pem is None:
            root_pem = (_certs.ROOTS_DIR / "intel_sgx_root_ca.pem").read_bytes()
        roots = _certs.load_pem_all(root_pem)
        if len(roots) != 1:
            raise ValueError("exactly one pinned Intel root expected")
        self._root = roots[0]
        self._root_der = _certs.der(self._root)
        self.collateral = collateral
        self.cache = ChainCache(cache_size)
        self._root_spki = _certs.spki(self._root)
        self._digests: dict[str, bytes] = {}
        self._crls: dict[Any, x509.CertificateRevocationList] = {}
        self._docs: dict[Any, dict[str, Any]] = {}

    # -- public -------------------------------------------------------------------------------

    def verify(self, evidence: Evidence, *, at: datetime) -> Verdict:
        """Check a DCAP quote as of ``at``. Never raises on hostile input.

        Args:
            evidence: ``kind`` TDX or SGX, ``blob`` the quote (``certs`` is unused: the PCK
                chain is embedded in the quote).
            at: timezone-aware time for certificate, CRL and collateral validity.

        Returns:
            An accepting :class:`Verdict` (``claims.tcb_status`` set when collateral was given)
            or a rejection with a stable reason.

        Raises:
            ValueError: ``at`` is naive (local misuse; never raised for evidence bytes).
        """
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        kind = evidence.kind if evidence.kind in (TeeKind.TDX, TeeKind.SGX) else self.kind
        try:
            return self._verify(evidence, at)
        except Exception as e:  # last line of defence: hostile bytes must never raise
            return Verdict.reject(kind, f"internal: {type(e).__name__}")

    # -- internals ----------------------------------------------------------------------------

    def _verify(self, evidence: Evidence, at: datetime) -> Verdict:
        if evidence.kind not in (TeeKind.TDX, TeeKind.SGX):
            return Verdict.reject(evidence.kind, f"wrong evidence kind {evidence.kind}")
        try:
            q = parse_quote(evidence.blob)
        except DcapFormatError as e:
            return Verdict.reject(evidence.kind, f"format: {e}")
        if q.kind is not evidence.kind:
            return Verdict.reject(evidence.kind,
                                  f"quote is {q.kind}, evidence says {evidence.kind}")
        try:
            pck = self._verified_pck(q.pck_chain_pem, at)
        except CertError as e:
            return Verdict.reject(q.kind, f"chain: {e}")
        claims = self._claims(q, pck.sgx, None, {})
        if not _p256_verify(pck.key, q.qe_report_signature, q.qe_report.raw):
            return Verdict.reject(q.kind, "QE report signature invalid", claims)
        qf = q.qe_report.fields
        if (not hmac.compare_digest(qf["mr_signer"], INTEL_QE_MRSIGNER[q.kind.value])
                or qf["isv_prod_id"] != INTEL_QE_PRODID[q.kind.value]):
            return Verdict.reject(q.kind, "QE is not Intel's quoting enclave", claims)
        if qf["attributes_flags"] & SGX_FLAGS_DEBUG:
            return Verdict.reject(q.kind, "QE is a debug enclave", claims)
        want = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest()
        qe_rd = q.qe_report.report_data
        if not hmac.compare_digest(qe_rd[:32], want) or any(qe_rd[32:]):
            return Verdict.reject(q.kind, "QE report_data does not bind the attestation key",
                                  claims)
        try:
            att_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + q.attestation_key)
        except ValueError:
            return Verdict.reject(q.kind, "attestation key is not a P-256 point", claims)
        if not _p256_verify(att_key, q.signature, q.signed):
            return Verdict.reject(q.kind, "quote signature invalid", claims)
        if self.collateral is None:
            return Verdict.accept(claims)
        try:
            status, info = self._tcb_status(q, pck, at)
        except CertError as e:
            return Verdict.reject(q.kind, f"collateral: {e}", claims)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            return Verdict.reject(q.kind, f"collateral: malformed ({type(e).__name__})", claims)
        claims = self._claims(q, pck.sgx, status, info)
        if status == "Revoked":
            return Verdict.reject(q.kind, "TCB status Revoked", claims)
        return Verdict.accept(claims)

    def _verified_pck(self, pem: bytes, at: datetime) -> _Pck:
        body = pem.rstrip(b"\x00")
        key = ("pck", hashlib.sha256(body).digest())
        hit = self.cache.get(key, at)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        if not _PEM_CHAIN_RE.match(body):
            raise CertError("PCK chain is not a PEM certificate chain")
        certs = _certs.load_pem_all(body)
        if len(certs) != 3:
            raise CertError(f"PCK chain has {len(certs)} certificates, want 3")
        # The PEM text itself is signed by nothing: require the canonical encoding of the
        # certificates (64-column base64, LF), so no byte of it is malleable. Only NUL padding
        # after it is allowed (stripped above).
        if body != b"".join(c.public_bytes(Encoding.PEM) for c in certs):
            raise CertError("PCK chain is not canonical PEM")
        leaf, ca, root = certs
        if _certs.der(root) != self._root_der:
            raise CertError("root is not the pinned Intel SGX Root CA")
        for c, what in ((leaf, "PCK"), (ca, "PCK CA"), (root, "root")):
            _certs.check_valid_at(c, at, what)
        ca_cn = _certs.common_name(ca.subject)
        if ca_cn not in ("Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA"):
            raise CertError(f"unexpected PCK CA {ca_cn!r}")
        if _certs.common_name(leaf.subject) != "Intel SGX PCK Certificate":
            raise CertError("leaf is not an Intel SGX PCK Certificate")
        _certs.require_ca(ca, "PCK CA")
        _certs.verify_ecdsa_sha256(root, root, "root self-signature")
        _certs.verify_ecdsa_sha256(ca, root, "PCK CA not signed by root")
        _certs.verify_ecdsa_sha256(leaf, ca, "PCK not signed by PCK CA")
        lk, ck = leaf.public_key(), ca.public_key()
        if not isinstance(lk, ec.EllipticCurvePublicKey) or lk.curve.name != "secp256r1":
            raise CertError("PCK key is not P-256")
        assert isinstance(ck, ec.EllipticCurvePublicKey)
        info = _Pck(lk, _sgx_extension(leaf), leaf.serial_number, ca.serial_number, ca.subject,
                    ck, _certs.spki(ca))
        self.cache.put(key, certs, info)
        return info

    # -- collateral ---------------------------------------------------------------------------

    def _tcb_signer(self, at: datetime) -> tuple[ec.EllipticCurvePublicKey, int, bytes]:
        """The TCB Signing key, its serial and SPKI; its chain to the pinned root checked."""
        col = self.collateral
        assert col is not None
        if not col.tcb_signing_chain:
            raise CertError("TCB signing chain missing")
        key = ("tcbsign", self._digest("tcb_signing_chain"))
        hit = self.cache.get(key, at)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        certs = _certs.load_pem_all(col.tcb_signing_chain)
        if not certs:
            raise CertError("TCB signing chain empty")
        signer = certs[0]
        if len(certs) > 1 and _certs.der(certs[-1]) != self._root_der:
            raise CertError("TCB signing chain does not end at the pinned root")
        _certs.check_valid_at(signer, at, "TCB signing")
        _certs.check_valid_at(self._root, at, "root")
        if _certs.common_name(signer.subject) != "Intel SGX TCB Signing":
            raise CertError("TCB signing certificate has the wrong subject")
        _certs.verify_ecdsa_sha256(signer, self._root, "TCB signing cert not signed by root")
        pk = signer.public_key()
        assert isinstance(pk, ec.EllipticCurvePublicKey)
        value = (pk, signer.serial_number, _certs.spki(signer))
        self.cache.put(key, [signer, self._root], value)
        return value

    def _digest(self, name: str) -> bytes:
        """SHA-256 of one collateral item (memoised: collateral is fixed per verifier)."""
        d = self._digests.get(name)
        if d is None:
            data = getattr(self.collateral, name)
            d = self._digests[name] = hashlib.sha256(data or b"").digest()
        return d

    def _crl(self, name: str, issuer: x509.Name, issuer_key: Any, issuer_spki: bytes,
             what: str) -> x509.CertificateRevocationList:
        """Parse a CRL and check its issuer and signature; memoised per (bytes, issuer key)."""
        key = (self._digest(name), issuer_spki)
        crl = self._crls.get(key)
        if crl is None:
            try:
                crl = _load_crl(getattr(self.collateral, name))
            except ValueError as e:
                raise CertError(f"{what} CRL unparsable") from e
            if crl.issuer != issuer:
                raise CertError(f"{what} CRL issuer mismatch")
            if not crl.is_signature_valid(issuer_key):
                raise CertError(f"{what} CRL signature invalid")
            if len(self._crls) >= 16:  # bounded: collateral is fixed per verifier
                self._crls.clear()
            self._crls[key] = crl
        return crl

    def _check_crls(self, pck: _Pck, tcb_signer_serial: int | None, at: datetime) -> None:
        col = self.collateral
        assert col is not None
        checks: list[tuple[str, x509.Name, Any, bytes, dict[int, str], str]] = []
        if col.pck_crl is not None:
            checks.append(("pck_crl", pck.ca_subject, pck.ca_key, pck.ca_spki,
                           {pck.leaf_serial: "PCK certificate revoked"}, "PCK"))
        if col.root_crl is not None:
            serials = {pck.ca_serial: "PCK CA certificate revoked"}
            if tcb_signer_serial is not None:
                serials[tcb_signer_serial] = "TCB signing certificate revoked"
            checks.append(("root_crl", self._root.subject, self._root.public_key(),
                           self._root_spki, serials, "root"))
        for name, issuer, issuer_key, issuer_spki, serials, what in checks:
            crl = self._crl(name, issuer, issuer_key, issuer_spki, what)
            nu = crl.next_update_utc
            if at < crl.last_update_utc or (nu is not None and at > nu):
                raise CertError(f"{what} CRL not current")
            for serial, reason in serials.items():
                if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                    raise CertError(reason)

    def _tcb_status(self, q: Quote, pck: _Pck, at: datetime) -> tuple[str, dict[str, Any]]:
        col = self.collateral
        assert col is not None
        info: dict[str, Any] = {}
        if col.tcb_info is None:
            raise CertError("TCB info missing")
        signer, signer_serial, signer_spki = self._tcb_signer(at)
        self._check_crls(pck, signer_serial, at)
        ti = self._signed_doc("tcb_info", "tcbInfo", signer, signer_spki)
        if not (_iso(ti["issueDate"]) <= at <= _iso(ti["nextUpdate"])):
            raise CertError("TCB info expired or not yet valid")
        want_id = "TDX" if q.kind is TeeKind.TDX else "SGX"
        if ti.get("id", "SGX") != want_id:
            raise CertError(f"TCB info is for {ti.get('id')}, not {want_id}")
        if bytes.fromhex(ti["fmspc"]) != pck.sgx["fmspc"]:
            raise CertError("TCB info FMSPC does not match the PCK certificate")
        if bytes.fromhex(ti["pceId"]) != pck.sgx["pce_id"]:
            raise CertError("TCB info PCE-ID does not match the PCK certificate")
        info["tcb_evaluation_data_number"] = ti.get("tcbEvaluationDataNumber")
        comps, pcesvn = pck.sgx["tcb_components"], pck.sgx["pce_svn"]
        tee_svn = q.body.fields.get("tee_tcb_svn") if q.kind is TeeKind.TDX else None
        status = None
        for level in ti["tcbLevels"]:
            t = level["tcb"]
            if "sgxtcbcomponents" in t:
                lv = [int(c["svn"]) for c in t["sgxtcbcomponents"]]
            else:
                lv = [int(t[f"sgxtcbcomp{i:02d}svn"]) for i in range(1, 17)]
            if len(lv) != 16 or any(a < b for a, b in zip(comps, lv, strict=True)):
                continue
            if pcesvn < int(t["pcesvn"]):
                continue
            if tee_svn is not None:
                td = [int(c["svn"]) for c in t["tdxtcbcomponents"]]
                start = 2 if tee_svn[1] > 0 else 0  # module SVNs judged by module identity
                if len(td) != 16 or any(tee_svn[i] < td[i] for i in range(start, 16)):
                    continue
            status = str(level["tcbStatus"])
            info["tcb_date"] = level.get("tcbDate")
            info["advisory_ids"] = list(level.get("advisoryIDs", []))
            break
        if status is None:
            raise CertError("no matching TCB level")
        if status not in _STATUS_RANK:
            raise CertError(f"unknown TCB status {status!r}")
        if tee_svn is not None:
            status = _converge(status, self._tdx_module_status(q, ti, tee_svn, info))
        if col.qe_identity is not None:
            status = _converge(status, self._qe_status(q, signer, signer_spki, at, info))
        return status, info

    def _signed_doc(self, name: str, key: str, signer: ec.EllipticCurvePublicKey,
                    signer_spki: bytes) -> dict[str, Any]:
        """Parse a signed collateral document and check its signature (memoised)."""
        mkey = (key, self._digest(name), signer_spki)
        doc = self._docs.get(mkey)
        if doc is None:
            try:
                obj, signed, sig = _signed_json(getattr(self.collateral, name), key)
            except (ValueError, KeyError, TypeError) as e:
                raise CertError(f"{key}: unparsable") from e
            if not _p256_verify(signer, sig, signed):
                raise CertError(f"{key} signature invalid")
            if len(self._docs) >= 16:
                self._docs.clear()
            self._docs[mkey] = doc = obj
        return doc

    @staticmethod
    def _tdx_module_status(q: Quote, ti: Mapping[str, Any], tee_svn: bytes,
                           info: dict[str, Any]) -> str:
        f = q.body.fields
        if tee_svn[1] == 0:
            mod = ti.get("tdxModule")
            ids = [mod] if mod else []
            levels = None
        else:
            mid = f"TDX_{tee_svn[1]:02X}"
            ids = [m for m in ti.get("tdxModuleIdentities", []) if m.get("id") == mid]
            if not ids:
                raise CertError(f"TDX module identity {mid} not in TCB info")
            levels = ids[0]["tcbLevels"]
        if not ids:
            raise CertError("TCB info lacks tdxModule")
        m = ids[0]
        if not hmac.compare_digest(bytes.fromhex(m["mrsigner"]), f["mr_signer_seam"]):
            raise CertError("TDX module MRSIGNERSEAM mismatch")
        mask = int.from_bytes(bytes.fromhex(m["attributesMask"]), "big")
        want = int.from_bytes(bytes.fromhex(m["attributes"]), "big")
        if int.from_bytes(f["seam_attributes"], "big") & mask != want:
            raise CertError("TDX module SEAM attributes mismatch")
        if levels is None:
            return "UpToDate"
        for lv in levels:
            if tee_svn[0] >= int(lv["tcb"]["isvsvn"]):
                info["tdx_module_status"] = str(lv["tcbStatus"])
                return str(lv["tcbStatus"])
        raise CertError("no matching TDX module TCB level")

    def _qe_status(self, q: Quote, signer: ec.EllipticCurvePublicKey, signer_spki: bytes,
                   at: datetime, info: dict[str, Any]) -> str:
        col = self.collateral
        assert col is not None and col.qe_identity is not None
        qi = self._signed_doc("qe_identity", "enclaveIdentity", signer, signer_spki)
        if not (_iso(qi["issueDate"]) <= at <= _iso(qi["nextUpdate"])):
            raise CertError("QE identity expired or not yet valid")
        want_id = "TD_QE" if q.kind is TeeKind.TDX else "QE"
        if qi.get("id") != want_id:
            raise CertError(f"QE identity is {qi.get('id')}, want {want_id}")
        f = q.qe_report.fields
        if not hmac.compare_digest(bytes.fromhex(qi["mrsigner"]), f["mr_signer"]):
            raise CertError("QE MRSIGNER mismatch")
        if int(qi["isvprodid"]) != f["isv_prod_id"]:
            raise CertError("QE ISVPRODID mismatch")
        ms_mask = int(qi["miscselectMask"], 16)
        if f["misc_select"] & ms_mask != int(qi["miscselect"], 16):
            raise CertError("QE MISCSELECT mismatch")
        a_mask = int.from_bytes(bytes.fromhex(qi["attributesMask"]), "big")
        a_want = int.from_bytes(bytes.fromhex(qi["attributes"]), "big")
        if int.from_bytes(f["attributes"], "big") & a_mask != a_want:
            raise CertError("QE ATTRIBUTES mismatch")
        for lv in qi["tcbLevels"]:
            if f["isv_svn"] >= int(lv["tcb"]["isvsvn"]):
                info["qe_status"] = str(lv["tcbStatus"])
                return str(lv["tcbStatus"])
        info["qe_status"] = "Revoked"
        return "Revoked"  # QE older than every listed level

    # -- claims -------------------------------------------------------------------------------

    @staticmethod
    def _claims(q: Quote, sgx: Mapping[str, Any], status: str | None,
                info: Mapping[str, Any]) -> Claims:
        f = q.body.fields
        extra: dict[str, Any] = {
            "quote_version": q.version,
            "tee_type": q.tee_type,
            "body_type": q.body_type,
            "qe_vendor_id": INTEL_QE_VENDOR_ID,
            "user_data": q.user_data,
            "trailing_bytes": q.trailing_bytes,
            "fmspc": sgx.get("fmspc", b""),
            "pce_id": sgx.get("pce_id", b""),
            "sgx_type": sgx.get("sgx_type"),
            "pck_tcb_components": list(sgx.get("tcb_components", [])),
            "pck_pce_svn": sgx.get("pce_svn"),
            "pck_cpu_svn": sgx.get("cpu_svn", b""),
            "qe_mr_enclave": q.qe_report.fields["mr_enclave"],
            "qe_mr_signer": q.qe_report.fields["mr_signer"],
            "qe_isv_prod_id": q.qe_report.fields["isv_prod_id"],
            "qe_isv_svn": q.qe_report.fields["isv_svn"],
        }
        extra.update(info)
        extra["header_qe_svn"] = q.qe_svn
        extra["header_pce_svn"] = q.pce_svn
        # The QE's SVN from its (PCK-signed) report and the PCE SVN from the PCK certificate
        # are the values Intel's TCB evaluation uses; the header copies are informational.
        tcb: dict[str, int] = {"qe_svn": q.qe_report.fields["isv_svn"]}
        if sgx.get("pce_svn") is not None:
            tcb["pce_svn"] = int(sgx["pce_svn"])
        if q.kind is TeeKind.TDX:
            for k in ("mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes", "xfam",
                      "mr_config_id", "mr_owner", "mr_owner_config", "rtmrs", "tee_tcb_svn",
                      "tee_tcb_svn2", "mr_servicetd"):
                if k in f:
                    extra[k] = f[k]
            attrs = int.from_bytes(f["td_attributes"], "little")
            extra["td_attributes_decoded"] = {
                "debug": bool(attrs & 1), "sept_ve_disable": bool(attrs >> 28 & 1),
                "pks": bool(attrs >> 30 & 1), "kl": bool(attrs >> 31 & 1),
                "perfmon": bool(attrs >> 63 & 1)}
            for i, v in enumerate(f["tee_tcb_svn"]):
                tcb[f"tee_tcb_svn_{i:02d}"] = v
            return Claims(TeeKind.TDX, f["mr_td"], f["report_data"],
                          bool(f["td_attributes"][0] & TD_ATTRIBUTES_DEBUG), tcb, status, extra)
        for k in ("mr_signer", "isv_prod_id", "isv_svn", "attributes", "misc_select", "config_id",
                  "config_svn", "isv_ext_prod_id", "isv_family_id", "cpu_svn"):
            extra[k] = f[k]
        fl = f["attributes_flags"]
        extra["attributes_decoded"] = {
            "init": bool(fl & 0x01), "debug": bool(fl & SGX_FLAGS_DEBUG),
            "mode64bit": bool(fl & 0x04), "provision_key": bool(fl & 0x10),
            "einittoken_key": bool(fl & 0x20), "kss": bool(fl & 0x80),
            "xfrm": f["attributes_xfrm"]}
        for i, v in enumerate(f["cpu_svn"]):
            tcb[f"cpu_svn_{i:02d}"] = v
        tcb["isv_svn"] = f["isv_svn"]
        return Claims(TeeKind.SGX, f["mr_enclave"], f["report_data"],
                      bool(f["attributes_flags"] & SGX_FLAGS_DEBUG), tcb, status, extra)
