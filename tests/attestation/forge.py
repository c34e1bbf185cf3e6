"""A throw-away AMD-like CA for tests: lets us sign reports that exercise every binding rule
with a *valid* signature, pinned through ``SnpVerifier(extra_arks=...)``."""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from node.attestation.sevsnp import SIGNED_SIZE

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
T0 = datetime.fromisoformat("2024-01-01T00:00:00+00:00")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Not AMD")])


@functools.cache
def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _rsa2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _cert(subject: str, issuer: str, pub, key, *, ca: bool, exts=(), nb=T0,
          na=T0 + timedelta(days=3650)) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(pub).serial_number(1).not_valid_before(nb).not_valid_after(na))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    for oid, value in exts:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value),
                            critical=False)
    return b.sign(key, hashes.SHA384(), rsa_padding=PSS)


def _int(v: int) -> bytes:
    body = v.to_bytes((v.bit_length() + 8) // 8 or 1, "big")
    return bytes([0x02, len(body)]) + body


@dataclasses.dataclass
class ForgedChain:
    product: str
    ark: x509.Certificate
    ask: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def ark_pem(self) -> bytes:
        return self.ark.public_bytes(Encoding.PEM)

    @property
    def certs(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(Encoding.DER) for c in (self.leaf, self.ask, self.ark))

    def sign(self, report: bytes) -> bytes:
        r, s = decode_dss_signature(self.leaf_key.sign(report[:SIGNED_SIZE],
                                                       ec.ECDSA(hashes.SHA384())))
        out = bytearray(report)
        out[0x2A0:0x2A0 + 72] = r.to_bytes(72, "little")
        out[0x2E8:0x2E8 + 72] = s.to_bytes(72, "little")
        return bytes(out)


def chain(product: str = "Milan", *, kind: str = "VCEK", hwid: bytes = b"\x11" * 64,
          spl: dict[str, int] | None = None, product_name: str | None = None,
          leaf_nb: datetime = T0, leaf_na: datetime = T0 + timedelta(days=3650),
          ) -> ForgedChain:
    spl = spl or {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    oid = "1.3.6.1.4.1.3704.1"
    ark = _cert(f"ARK-{product}", f"ARK-{product}", _rsa().public_key(), _rsa(), ca=True)
    ask_cn = f"SEV-VLEK-{product}" if kind == "VLEK" else f"SEV-{product}"
    ask = _cert(ask_cn, f"ARK-{product}", _rsa2().public_key(), _rsa(), ca=True)
    pname = (product_name or product).encode()
    exts = [(oid + ".1", b"\x02\x01\x00"), (oid + ".2", bytes([0x16, len(pname)]) + pname)]
    names = {"bootloader": ".3.1", "tee": ".3.2", "snp": ".3.3", "microcode": ".3.8",
             "fmc": ".3.9"}
    exts += [(oid + names[k], _int(v)) for k, v in spl.items()]
    if kind == "VCEK":
        exts.append((oid + ".4", hwid))
    leaf = _cert(f"SEV-{kind}", ask_cn, _p384().public_key(), _rsa2(), ca=False, exts=exts,
                 nb=leaf_nb, na=leaf_na)
    return ForgedChain(product, ark, ask, leaf, _p384())


def milan_report(*, chip_id: bytes = b"\x11" * 64, version: int = 2, vlek: bool = False,
                 tcb: bytes = bytes([3, 0, 0, 0, 0, 0, 8, 115]), policy: int = 0x30000,
                 cpuid: bytes = bytes([0x19, 0x01, 0x01])) -> bytearray:
    """An unsigned Milan-layout report with sane fields (sign with ForgedChain.sign)."""
    import struct

    r = bytearray(0x4A0)
    struct.pack_into("<IIQ", r, 0, version, 0, policy)
    struct.pack_into("<II", r, 0x30, 0, 1)
    r[0x38:0x40] = tcb
    struct.pack_into("<Q", r, 0x40, 1)
    struct.pack_into("<I", r, 0x48, (1 << 2) if vlek else 0)
    r[0x50:0x90] = b"R" * 64
    r[0x90:0xC0] = b"M" * 48
    r[0x180:0x188] = tcb
    if version >= 3:
        r[0x188:0x18B] = cpuid
    r[0x1A0:0x1E0] = chip_id
    r[0x1E0:0x1E8] = tcb
    r[0x1F0:0x1F8] = tcb
    return r
