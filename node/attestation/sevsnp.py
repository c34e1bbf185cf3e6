"""AMD SEV-SNP attestation report parser and verifier (report versions 2, 3 and 5).

Theory of operation
-------------------
An SNP guest asks the AMD Secure Processor (ASP) for an ATTESTATION_REPORT: a fixed 1184-byte
structure (SEV-SNP firmware ABI, "ATTESTATION_REPORT Structure") whose first 0x2A0 bytes are
signed with ECDSA P-384 / SHA-384 by a key derived from the chip and its TCB (the VCEK) or, on
cloud providers, by a key AMD issued to the provider (the VLEK). The signature sits at 0x2A0:
R and S, each 72 bytes little-endian (only the low 48 bytes may be non-zero), then 368 reserved
bytes.

:func:`parse_report` decodes every field and rejects anything structurally wrong: wrong size,
unknown version, unknown signature algorithm or signing key, reserved bits or bytes that are
not zero, the must-be-one policy bit clear. It never trusts a byte without checking it.

:class:`SnpVerifier` then

1. builds the chain VCEK/VLEK <- ASK/ASVK <- ARK from ``Evidence.certs`` (leaf first) or the
   certificates given to the constructor, falling back to the AMD intermediates shipped in
   ``roots/`` (they are verified like any other intermediate), and checks it: every link
   RSA-PSS SHA-384 with a 48-byte salt, issuer names, CA flags, validity at ``at``, and the ARK
   must be one of the ARKs *pinned* in ``roots/ark_*.pem`` (same public key; a presented ARK
   must also be byte-identical). The pinned ARK decides the product (Milan, Genoa, Turin);
2. binds the leaf to the report: leaf kind (VCEK vs VLEK) equals SIGNING_KEY; the product name
   extension matches the chain; for a VCEK the hwID extension equals CHIP_ID (64 bytes, 8 on
   Turin with the remaining 56 bytes zero) unless MASK_CHIP_ID is set; a VLEK report has an
   all-zero CHIP_ID; the SPL extensions equal REPORTED_TCB decoded with the product's layout
   (Turin adds FMC and moves every field); for v3+ reports the CPUID family/model must name the
   same product as the chain;
3. verifies the report signature with the leaf's P-384 key.

Verified chains are cached (bounded LRU keyed by certificate fingerprints, served only inside
the chain's validity window), so a warm verification costs one ECDSA P-384 check plus parsing.

Every failure is a :class:`Verdict` rejection with a short stable reason. :meth:`verify` never
raises; unexpected exceptions become ``"internal: <type>"`` as a last line of defence.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from node.attestation import _certs
from node.attestation._certs import CertError, ChainCache
from node.attestation.base import Claims, Evidence, TeeKind, Verdict

__all__ = [
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "Product",
    "SnpFormatError",
    "SnpReport",
    "SnpVerifier",
    "TcbVersion",
    "parse_report",
]

REPORT_SIZE = 0x4A0  # 1184
SIGNED_SIZE = 0x2A0  # bytes 0x000..0x29F are covered by the signature
SUPPORTED_VERSIONS = frozenset({2, 3, 5})

SIG_ALGO_ECDSA_P384_SHA384 = 1

# POLICY bits (ABI spec, "Guest Policy Structure")
POLICY_SMT = 1 << 16
POLICY_RESERVED_MBO = 1 << 17  # reserved, must be one
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
POLICY_CXL_ALLOW = 1 << 21
POLICY_MEM_AES_256_XTS = 1 << 22
POLICY_RAPL_DIS = 1 << 23
POLICY_CIPHERTEXT_HIDING = 1 << 24
POLICY_PAGE_SWAP_DISABLE = 1 << 25
POLICY_KNOWN_MASK = (1 << 26) - 1  # bits 26..63 are reserved, must be zero

# PLATFORM_INFO bits; 8..63 are reserved, must be zero
_PLATFORM_INFO_BITS = {
    "smt_enabled": 0,
    "tsme_enabled": 1,
    "ecc_enabled": 2,
    "rapl_disabled": 3,
    "ciphertext_hiding_dram_enabled": 4,
    "alias_check_complete": 5,
    "iommu_write_safe": 6,
    "tio_enabled": 7,
}
PLATFORM_INFO_KNOWN_MASK = 0xFF

# Word at 0x48: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_ID, bits 4:2 SIGNING_KEY, rest reserved.
FLAGS_KNOWN_MASK = 0x1F

OID_AMD = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME = OID_AMD + ".2"
OID_BL_SPL = OID_AMD + ".3.1"
OID_TEE_SPL = OID_AMD + ".3.2"
OID_SNP_SPL = OID_AMD + ".3.3"
OID_UCODE_SPL = OID_AMD + ".3.8"
OID_FMC_SPL = OID_AMD + ".3.9"
OID_HWID = OID_AMD + ".4"


class SnpFormatError(ValueError):
    """The bytes are not a well-formed SNP report. ``str()`` is a stable reason."""


class Product(enum.StrEnum):
    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


class SigningKey(enum.IntEnum):
    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclasses.dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION decoded with a product's layout (``fmc`` is None before Turin)."""

    raw: bytes
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, raw: bytes, turin: bool) -> TcbVersion:
        """Decode 8 bytes; raises :class:`SnpFormatError` if its reserved bytes are not zero.

        Milan/Genoa: [0]=BOOT_LOADER [1]=TEE [2..5]=reserved [6]=SNP [7]=MICROCODE.
        Turin:       [0]=FMC [1]=BOOT_LOADER [2]=TEE [3]=SNP [4..6]=reserved [7]=MICROCODE.
        """
        if turin:
            if any(raw[4:7]):
                raise SnpFormatError("reserved TCB bytes not zero")
            return cls(bytes(raw), raw[1], raw[2], raw[3], raw[7], raw[0])
        if any(raw[2:6]):
            raise SnpFormatError("reserved TCB bytes not zero")
        return cls(bytes(raw), raw[0], raw[1], raw[6], raw[7])

    def as_dict(self) -> dict[str, int]:
        d = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp,
             "microcode": self.microcode}
        if self.fmc is not None:
            d["fmc"] = self.fmc
        return d


@dataclasses.dataclass(frozen=True)
class SnpReport:
    """Every field of an ATTESTATION_REPORT. TCB fields are kept raw here; decoding needs the
    product (see :meth:`tcb`). Offsets refer to the ABI table."""

    raw: bytes
    version: int  # 0x000
    guest_svn: int  # 0x004
    policy: int  # 0x008
    family_id: bytes  # 0x010
    image_id: bytes  # 0x020
    vmpl: int  # 0x030
    signature_algo: int  # 0x034
    current_tcb: bytes  # 0x038
    platform_info: int  # 0x040
    author_key_en: bool  # 0x048 bit 0
    mask_chip_id: bool  # 0x048 bit 1
    signing_key: SigningKey  # 0x048 bits 4:2
    report_data: bytes  # 0x050
    measurement: bytes  # 0x090
    host_data: bytes  # 0x0C0
    id_key_digest: bytes  # 0x0E0
    author_key_digest: bytes  # 0x110
    report_id: bytes  # 0x140
    report_id_ma: bytes  # 0x160
    reported_tcb: bytes  # 0x180
    cpuid_fam_id: int | None  # 0x188 (v3+)
    cpuid_mod_id: int | None  # 0x189 (v3+)
    cpuid_step: int | None  # 0x18A (v3+)
    chip_id: bytes  # 0x1A0
    committed_tcb: bytes  # 0x1E0
    current_version: tuple[int, int, int]  # 0x1E8 build, minor, major (0x1EB reserved)
    committed_version: tuple[int, int, int]  # 0x1EC build, minor, major (0x1EF reserved)
    launch_tcb: bytes  # 0x1F0
    launch_mit_vector: int | None  # 0x1F8 (v5)
    current_mit_vector: int | None  # 0x200 (v5)
    sig_r: int  # 0x2A0, 72 bytes LE
    sig_s: int  # 0x2E8, 72 bytes LE

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)

    def cpuid_product(self) -> Product | None:
        """The product named by CPUID_FAM_ID/CPUID_MOD_ID (v3+), or None when absent/unknown."""
        fam, mod = self.cpuid_fam_id, self.cpuid_mod_id
        if fam is None or mod is None:
            return None
        if fam == 0x19 and mod <= 0x0F:
            return Product.MILAN
        if fam == 0x19 and (0x10 <= mod <= 0x1F or 0xA0 <= mod <= 0xAF):
            return Product.GENOA  # Genoa, Bergamo, Siena
        if fam == 0x1A and mod <= 0x1F:
            return Product.TURIN
        return None

    def tcb(self, product: Product) -> dict[str, TcbVersion]:
        turin = product is Product.TURIN
        return {
            "current": TcbVersion.decode(self.current_tcb, turin),
            "reported": TcbVersion.decode(self.reported_tcb, turin),
            "committed": TcbVersion.decode(self.committed_tcb, turin),
            "launch": TcbVersion.decode(self.launch_tcb, turin),
        }

    def policy_dict(self) -> dict[str, Any]:
        p = self.policy
        return {
            "raw": p,
            "abi_minor": p & 0xFF,
            "abi_major": (p >> 8) & 0xFF,
            "smt_allowed": bool(p & POLICY_SMT),
            "migrate_ma": bool(p & POLICY_MIGRATE_MA),
            "debug": bool(p & POLICY_DEBUG),
            "single_socket": bool(p & POLICY_SINGLE_SOCKET),
            "cxl_allowed": bool(p & POLICY_CXL_ALLOW),
            "mem_aes_256_xts": bool(p & POLICY_MEM_AES_256_XTS),
            "rapl_disabled": bool(p & POLICY_RAPL_DIS),
            "ciphertext_hiding": bool(p & POLICY_CIPHERTEXT_HIDING),
            "page_swap_disabled": bool(p & POLICY_PAGE_SWAP_DISABLE),
        }

    def platform_info_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"raw": self.platform_info}
        for name, bit in _PLATFORM_INFO_BITS.items():
            d[name] = bool(self.platform_info >> bit & 1)
        return d


def _zero(b: bytes, start: int, end: int, what: str) -> None:
    if any(b[start:end]):
        raise SnpFormatError(f"reserved field not zero: {what} (0x{start:03X}..0x{end - 1:03X})")


def parse_report(blob: bytes) -> SnpReport:
    """Parse and structurally check one SNP ATTESTATION_REPORT.

    Structural checks only: no signature or certificate is checked here.

    Raises:
        SnpFormatError: size, version, algorithm, signing key, VMPL or a reserved field is wrong.
    """
    b = bytes(blob)
    if len(b) != REPORT_SIZE:
        raise SnpFormatError(f"report size {len(b)} != {REPORT_SIZE}")
    version, guest_svn, policy = struct.unpack_from("<IIQ", b, 0x000)
    fam: int | None
    mod: int | None
    step: int | None
    launch_mit: int | None
    current_mit: int | None
    if version not in SUPPORTED_VERSIONS:
        raise SnpFormatError(f"unsupported report version {version}")
    vmpl, sig_algo = struct.unpack_from("<II", b, 0x030)
    (platform_info, flags) = struct.unpack_from("<QI", b, 0x040)
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise SnpFormatError(f"unsupported signature algorithm {sig_algo}")
    if vmpl > 3:
        raise SnpFormatError(f"VMPL {vmpl} out of range")
    if not policy & POLICY_RESERVED_MBO:
        raise SnpFormatError("policy bit 17 (reserved, must be one) is clear")
    if policy & ~POLICY_KNOWN_MASK:
        raise SnpFormatError("reserved policy bits set")
    if platform_info & ~PLATFORM_INFO_KNOWN_MASK:
        raise SnpFormatError("reserved PLATFORM_INFO bits set")
    if flags & ~FLAGS_KNOWN_MASK:
        raise SnpFormatError("reserved key-info bits set (0x048)")
    sk = (flags >> 2) & 0x7
    if sk == SigningKey.NONE:
        raise SnpFormatError("report is not signed (SIGNING_KEY = none)")
    if sk not in (SigningKey.VCEK, SigningKey.VLEK):
        raise SnpFormatError(f"unknown SIGNING_KEY {sk}")
    _zero(b, 0x04C, 0x050, "RESERVED after key info")
    if version >= 3:
        fam, mod, step = b[0x188], b[0x189], b[0x18A]
        _zero(b, 0x18B, 0x1A0, "RESERVED after CPUID")
    else:
        fam = mod = step = None
        _zero(b, 0x188, 0x1A0, "RESERVED after REPORTED_TCB")
    _zero(b, 0x1EB, 0x1EC, "RESERVED in CURRENT version")
    _zero(b, 0x1EF, 0x1F0, "RESERVED in COMMITTED version")
    if version >= 5:
        launch_mit, current_mit = struct.unpack_from("<QQ", b, 0x1F8)
        _zero(b, 0x208, SIGNED_SIZE, "RESERVED after CURRENT_MIT_VECTOR")
    else:
        launch_mit = current_mit = None
        _zero(b, 0x1F8, SIGNED_SIZE, "RESERVED after LAUNCH_TCB")
    # Signature: R and S are 72-byte little-endian fields holding 48-byte P-384 scalars.
    _zero(b, 0x2A0 + 48, 0x2A0 + 72, "signature R high bytes")
    _zero(b, 0x2E8 + 48, 0x2E8 + 72, "signature S high bytes")
    _zero(b, 0x330, REPORT_SIZE, "signature RESERVED")
    sig_r = int.from_bytes(b[0x2A0:0x2A0 + 48], "little")
    sig_s = int.from_bytes(b[0x2E8:0x2E8 + 48], "little")
    chip_id = b[0x1A0:0x1E0]
    if sk == SigningKey.VLEK and any(chip_id):
        raise SnpFormatError("CHIP_ID must be zero in a VLEK-signed report")
    if flags & 0x2 and any(chip_id):
        raise SnpFormatError("CHIP_ID must be zero when MASK_CHIP_ID is set")
    return SnpReport(
        raw=b,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=b[0x010:0x020],
        image_id=b[0x020:0x030],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=b[0x038:0x040],
        platform_info=platform_info,
        author_key_en=bool(flags & 0x1),
        mask_chip_id=bool(flags & 0x2),
        signing_key=SigningKey(sk),
        report_data=b[0x050:0x090],
        measurement=b[0x090:0x0C0],
        host_data=b[0x0C0:0x0E0],
        id_key_digest=b[0x0E0:0x110],
        author_key_digest=b[0x110:0x140],
        report_id=b[0x140:0x160],
        report_id_ma=b[0x160:0x180],
        reported_tcb=b[0x180:0x188],
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        chip_id=chip_id,
        committed_tcb=b[0x1E0:0x1E8],
        current_version=(b[0x1E8], b[0x1E9], b[0x1EA]),
        committed_version=(b[0x1EC], b[0x1ED], b[0x1EE]),
        launch_tcb=b[0x1F0:0x1F8],
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        sig_r=sig_r,
        sig_s=sig_s,
    )


# ---------------------------------------------------------------------------------------------
# Certificates


@dataclasses.dataclass(frozen=True)
class _Roots:
    arks: Mapping[bytes, tuple[Product, x509.Certificate]]  # SPKI DER -> product, ARK
    intermediates: tuple[x509.Certificate, ...]


_DEFAULT_ROOTS: _Roots | None = None


def _load_roots(extra_arks: Sequence[x509.Certificate] = ()) -> _Roots:
    arks: dict[bytes, tuple[Product, x509.Certificate]] = {}
    inters: list[x509.Certificate] = []
    for product in Product:
        ark_pem = (_certs.ROOTS_DIR / f"ark_{product.lower()}.pem").read_bytes()
        for c in _certs.load_pem_all(ark_pem):
            arks[_certs.spki(c)] = (product, c)
        for prefix in ("ask", "asvk"):
            p = _certs.ROOTS_DIR / f"{prefix}_{product.lower()}.pem"
            if p.exists():
                inters.extend(_certs.load_pem_all(p.read_bytes()))
    for c in extra_arks:
        prod = _product_from_cn(_certs.common_name(c.subject))
        if prod is None:
            raise ValueError(f"pinned ARK has unknown product: {c.subject.rfc4514_string()}")
        arks[_certs.spki(c)] = (prod, c)
    return _Roots(arks, tuple(inters))


def default_roots() -> _Roots:
    global _DEFAULT_ROOTS
    if _DEFAULT_ROOTS is None:
        _DEFAULT_ROOTS = _load_roots()
    return _DEFAULT_ROOTS


def _product_from_cn(cn: str) -> Product | None:
    # "ARK-Milan", "SEV-Milan", "SEV-VLEK-Genoa", ...
    for p in Product:
        if cn.endswith("-" + p.value):
            return p
    return None


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """What a verified chain tells us about its leaf; cached with the chain."""

    product: Product
    kind: SigningKey
    key: ec.EllipticCurvePublicKey
    hwid: bytes | None
    spl: Mapping[str, int]


def _ext_raw(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    v = ext.value
    return v.value if isinstance(v, x509.UnrecognizedExtension) else None


def _der_small_int(b: bytes) -> int:
    # DER INTEGER, non-negative, at most 8 content bytes; SPL values are 0..255.
    if len(b) < 3 or b[0] != 0x02 or b[1] != len(b) - 2 or b[1] > 8:
        raise CertError("bad SPL extension encoding")
    v = int.from_bytes(b[2:], "big", signed=True)
    if v < 0:
        raise CertError("negative SPL in certificate")
    return v


def _leaf_info(leaf: x509.Certificate, product: Product, kind: SigningKey) -> _Leaf:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise CertError("leaf key is not ECDSA P-384")
    name_raw = _ext_raw(leaf, OID_PRODUCT_NAME)
    if name_raw is not None:
        # IA5String; "Milan-B0", "Genoa", "Turin"... The chain already fixed the product.
        if len(name_raw) < 2 or name_raw[0] != 0x16 or name_raw[1] != len(name_raw) - 2:
            raise CertError("bad productName extension encoding")
        pname = name_raw[2:].decode("ascii", "replace")
        if pname.split("-")[0] != product.value:
            raise CertError(f"leaf productName {pname!r} does not match chain product {product}")
    oids = {"bootloader": OID_BL_SPL, "tee": OID_TEE_SPL, "snp": OID_SNP_SPL,
            "microcode": OID_UCODE_SPL}
    if product is Product.TURIN:
        oids["fmc"] = OID_FMC_SPL
    spl: dict[str, int] = {}
    for name, oid in oids.items():
        raw = _ext_raw(leaf, oid)
        if raw is None:
            raise CertError(f"leaf lacks {name} SPL extension")
        spl[name] = _der_small_int(raw)
    hwid = None
    if kind is SigningKey.VCEK:
        raw = _ext_raw(leaf, OID_HWID)
        if raw is None:
            raise CertError("VCEK lacks hwID extension")
        want = 8 if product is Product.TURIN else 64
        if len(raw) == want + 2 and raw[0] == 0x04 and raw[1] == want:
            raw = raw[2:]  # some issuers wrap it in an OCTET STRING
        if len(raw) != want:
            raise CertError("VCEK hwID has wrong length")
        hwid = raw
    return _Leaf(product, kind, key, hwid, spl)


class SnpVerifier:
    """Verifies SEV-SNP attestation reports against pinned AMD roots.

    Args:
        vcek: DER or PEM of the VCEK/VLEK to use when ``Evidence.certs`` is empty.
        chain: DER/PEM of ASK/ASVK (and optionally ARK) used when the evidence carries none.
        extra_arks: additional pinned ARKs (PEM/DER bytes), e.g. for tests or new products.
            The built-in pins are always present.
        cache_size: bound of the verified-chain LRU; 0 disables caching.

    ``verify`` is thread-safe; the only shared state is the chain cache.
    """

    kind = TeeKind.SEV_SNP

    def __init__(
        self,
        *,
        vcek: bytes | None = None,
        chain: bytes | None = None,
        extra_arks: Sequence[bytes] = (),
        cache_size: int = 256,
    ) -> None:
        extra = [c for blob in extra_arks for c in _certs.load_any(blob)]
        self._roots = _load_roots(extra) if extra else default_roots()
        loaded: list[x509.Certificate] = []
        if vcek is not None:
            loaded.extend(_certs.load_any(vcek))
        if chain is not None:
            loaded.extend(_certs.load_any(chain))
        self._default_certs: tuple[bytes, ...] = tuple(_certs.der(c) for c in loaded)
        self.cache = ChainCache(cache_size)

    # -- public -------------------------------------------------------------------------------

    def verify(self, evidence: Evidence, *, at: datetime) -> Verdict:
        """Check an SNP report. Never raises on hostile input.

        Args:
            evidence: ``kind`` SEV_SNP, ``blob`` the 1184-byte report, ``certs`` DER
                certificates leaf first (VCEK/VLEK, then ASK/ASVK, then optionally ARK).
            at: timezone-aware time at which every certificate must be valid.

        Returns:
            An accepting :class:`Verdict` with claims, or a rejection with a stable reason.

        Raises:
            ValueError: ``at`` is naive (local misuse; never raised for evidence bytes).
        """
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")  # local misuse, not hostile input
        try:
            return self._verify(evidence, at)
        except Exception as e:  # last line of defence: hostile bytes must never raise
            return Verdict.reject(TeeKind.SEV_SNP, f"internal: {type(e).__name__}")

    # -- internals ----------------------------------------------------------------------------

    def _verify(self, evidence: Evidence, at: datetime) -> Verdict:
        if evidence.kind is not TeeKind.SEV_SNP:
            return Verdict.reject(evidence.kind, f"wrong evidence kind {evidence.kind}")
        try:
            rep = parse_report(evidence.blob)
        except SnpFormatError as e:
            return Verdict.reject(TeeKind.SEV_SNP, f"format: {e}")
        try:
            leaf = self._verified_leaf(evidence.certs or self._default_certs, at)
        except CertError as e:
            return Verdict.reject(TeeKind.SEV_SNP, f"chain: {e}", self._display_claims(rep))
        product = leaf.product
        try:
            tcbs = rep.tcb(product)
        except SnpFormatError as e:
            return Verdict.reject(TeeKind.SEV_SNP, f"format: {e}")
        claims = self._claims(rep, product, tcbs)
        # Bind the leaf to the report.
        cp = rep.cpuid_product()
        if rep.version >= 3 and cp is not product:
            return Verdict.reject(
                TeeKind.SEV_SNP, f"CPUID family/model ({cp or 'unknown'}) does not match "
                f"chain product {product}", claims)
        if rep.version < 3 and product is Product.TURIN:
            return Verdict.reject(TeeKind.SEV_SNP, "report version 2 from a Turin chain", claims)
        if leaf.kind is not rep.signing_key:
            return Verdict.reject(
                TeeKind.SEV_SNP, f"report signed by {rep.signing_key.name} but certificate is a "
                f"{leaf.kind.name}", claims)
        if leaf.hwid is not None and not rep.mask_chip_id:
            n = len(leaf.hwid)
            if not hmac.compare_digest(leaf.hwid, rep.chip_id[:n]) or any(rep.chip_id[n:]):
                return Verdict.reject(TeeKind.SEV_SNP, "VCEK hwID does not match CHIP_ID", claims)
        reported = tcbs["reported"].as_dict()
        for name, value in leaf.spl.items():
            if reported.get(name) != value:
                return Verdict.reject(
                    TeeKind.SEV_SNP,
                    f"certificate {name} SPL {value} != REPORTED_TCB {reported.get(name)}", claims)
        try:
            leaf.key.verify(encode_dss_signature(rep.sig_r, rep.sig_s), rep.signed_bytes,
                            ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            return Verdict.reject(TeeKind.SEV_SNP, "signature invalid", claims)
        return Verdict.accept(claims)

    def _verified_leaf(self, ders: Sequence[bytes], at: datetime) -> _Leaf:
        if not ders:
            raise CertError("no VCEK/VLEK certificate")
        if len(ders) > 3:
            raise CertError("too many certificates")
        # Warm path: the exact presented bytes were verified before and are still in their
        # validity window; skip parsing and every RSA check.
        raw_key = ("snp", *(hashlib.sha256(d).digest() for d in ders))
        hit = self.cache.get(raw_key, at)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        certs = [_certs.load_der(d) for d in ders]
        leaf = certs[0]
        leaf_cn = _certs.common_name(leaf.subject)
        kind = {"SEV-VCEK": SigningKey.VCEK, "SEV-VLEK": SigningKey.VLEK}.get(leaf_cn)
        if kind is None:
            raise CertError(f"leaf is not a VCEK/VLEK (CN={leaf_cn!r})")
        # Intermediate: the presented one, else a shipped one whose subject is the leaf's issuer.
        if len(certs) >= 2:
            ask = certs[1]
        else:
            cands = [c for c in self._roots.intermediates if c.subject == leaf.issuer]
            if not cands:
                raise CertError("no ASK/ASVK for this VCEK/VLEK")
            ask = cands[0]
        # ARK: must be pinned; a presented ARK must be byte-identical to the pin.
        pinned = self._roots.arks
        ark_entry = None
        if len(certs) == 3:
            ark_entry = pinned.get(_certs.spki(certs[2]))
            if ark_entry is None or _certs.der(ark_entry[1]) != ders[2]:
                raise CertError("ARK is not a pinned AMD root")
        else:
            for entry in pinned.values():
                if entry[1].subject == ask.issuer:
                    ark_entry = entry
                    break
            if ark_entry is None:
                raise CertError("no pinned ARK issues this ASK")
        product, ark = ark_entry
        chain = [leaf, ask, ark]
        for c, what in ((leaf, leaf_cn[4:]), (ask, "ASK"), (ark, "ARK")):
            _certs.check_valid_at(c, at, what)
        inter_name = "ASVK" if kind is SigningKey.VLEK else "ASK"
        want_ask_cn = f"SEV-VLEK-{product}" if kind is SigningKey.VLEK else f"SEV-{product}"
        if _certs.common_name(ask.subject) != want_ask_cn:
            raise CertError(f"{inter_name} is not {want_ask_cn}")
        _certs.require_ca(ask, inter_name)
        _certs.verify_rsa_pss_sha384(ark, ark, "ARK self-signature")
        _certs.verify_rsa_pss_sha384(ask, ark, f"{inter_name} not signed by ARK")
        _certs.verify_rsa_pss_sha384(leaf, ask, f"{leaf_cn[4:]} not signed by {inter_name}")
        info = _leaf_info(leaf, product, kind)
        self.cache.put(raw_key, chain, info)
        return info

    @classmethod
    def _display_claims(cls, rep: SnpReport) -> Claims | None:
        """Claims for displaying a report whose chain failed: the product is guessed from
        CPUID (v3+) or is pre-Turin (v2). Never trusted: the verdict is a rejection."""
        product = rep.cpuid_product() or (Product.MILAN if rep.version == 2 else None)
        if product is None:
            return None
        try:
            c = cls._claims(rep, product, rep.tcb(product))
        except SnpFormatError:
            return None
        return dataclasses.replace(c, extra={**c.extra, "product": None})  # not established

    @staticmethod
    def _claims(rep: SnpReport, product: Product, tcbs: Mapping[str, TcbVersion]) -> Claims:
        extra: dict[str, Any] = {
            "product": str(product),
            "report_version": rep.version,
            "guest_svn": rep.guest_svn,
            "policy": rep.policy_dict(),
            "family_id": rep.family_id,
            "image_id": rep.image_id,
            "vmpl": rep.vmpl,
            "signature_algo": rep.signature_algo,
            "platform_info": rep.platform_info_dict(),
            "author_key_en": rep.author_key_en,
            "mask_chip_id": rep.mask_chip_id,
            "signing_key": rep.signing_key.name.lower(),
            "host_data": rep.host_data,
            "id_key_digest": rep.id_key_digest,
            "author_key_digest": rep.author_key_digest,
            "report_id": rep.report_id,
            "report_id_ma": rep.report_id_ma,
            "chip_id": rep.chip_id,
            "current_tcb": tcbs["current"].as_dict(),
            "reported_tcb": tcbs["reported"].as_dict(),
            "committed_tcb": tcbs["committed"].as_dict(),
            "launch_tcb": tcbs["launch"].as_dict(),
            "current_version": "{2}.{1}.{0}".format(*rep.current_version),
            "committed_version": "{2}.{1}.{0}".format(*rep.committed_version),
        }
        if rep.cpuid_fam_id is not None:
            extra["cpuid_family"] = rep.cpuid_fam_id
            extra["cpuid_model"] = rep.cpuid_mod_id
            extra["cpuid_stepping"] = rep.cpuid_step
        if rep.launch_mit_vector is not None:
            extra["launch_mit_vector"] = rep.launch_mit_vector
            extra["current_mit_vector"] = rep.current_mit_vector
        return Claims(
            kind=TeeKind.SEV_SNP,
            measurement=rep.measurement,
            report_data=rep.report_data,
            debug=rep.debug,
            tcb=tcbs["reported"].as_dict(),
            extra=extra,
        )
