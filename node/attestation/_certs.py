"""Certificate helpers shared by the SEV-SNP and DCAP verifiers (private).

* Loading: AMD VCEK/VLEK certificates carry serial number 0, which RFC 5280 forbids and
  ``cryptography`` warns about. The warning is suppressed *only* around our own loads, with a
  message filter, so every other warning still surfaces.
* Time: every check takes an explicit timezone-aware ``at``; nothing here reads the clock.
* Caching: :class:`ChainCache` remembers chains whose signatures were verified, keyed by the
  SHA-256 fingerprints of every certificate in the chain plus the pinned root. An entry stores
  the chain's validity window (latest notBefore, earliest notAfter), so a hit is only served
  when ``at`` lies inside it: an expired chain is never accepted from cache. The cache is a
  bounded LRU and is safe to share between threads.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOTS_DIR = Path(__file__).with_name("roots")

_SERIAL_WARNING = r"Parsed a serial number which wasn't positive"


class CertError(ValueError):
    """A certificate could not be parsed or failed a check. ``str()`` is a stable reason."""


def _force(cert: x509.Certificate) -> x509.Certificate:
    """``cryptography`` decodes fields lazily; decode now everything a verifier reads, so a
    malformed field surfaces here as :class:`CertError` and never later as a stray exception."""
    try:
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc,
             cert.signature, cert.tbs_certificate_bytes, cert.signature_algorithm_oid)
        cert.public_key()
        for ext in cert.extensions:
            _ = ext.value
        for name in (cert.subject, cert.issuer):
            for attr in name:
                _ = attr.value
    except Exception as e:  # ValueError, DuplicateExtension, UnsupportedAlgorithm, ...
        raise CertError("malformed certificate") from e
    return cert


def load_der(der: bytes) -> x509.Certificate:
    """Parse one DER certificate, tolerating serial number 0 (AMD KDS certificates).

    Raises:
        CertError: not a DER certificate.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SERIAL_WARNING)
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
        except (ValueError, TypeError, x509.InvalidVersion) as e:
            raise CertError("not a DER certificate") from e
        return _force(cert)


def load_pem_all(pem: bytes) -> list[x509.Certificate]:
    """Parse every PEM certificate in ``pem`` (empty list when there is none).

    Raises:
        CertError: a PEM block is not a valid certificate.
    """
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SERIAL_WARNING)
        try:
            certs = list(x509.load_pem_x509_certificates(bytes(pem)))
        except (ValueError, TypeError, x509.InvalidVersion) as e:
            raise CertError("bad PEM certificate") from e
        return [_force(c) for c in certs]


def load_any(data: bytes) -> list[x509.Certificate]:
    """Parse PEM (one or more certificates) or a single DER certificate."""
    if b"-----BEGIN" in data:
        certs = load_pem_all(data)
        if not certs:
            raise CertError("no certificate in PEM")
        return certs
    return [load_der(data)]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(der(cert)).digest()


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def check_valid_at(cert: x509.Certificate, at: datetime, what: str) -> None:
    """Raise :class:`CertError` unless ``cert`` is within its validity period at ``at``."""
    if at < cert.not_valid_before_utc:
        raise CertError(f"{what} certificate not yet valid")
    if at > cert.not_valid_after_utc:
        raise CertError(f"{what} certificate expired")


def verify_rsa_pss_sha384(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """AMD chains: RSA-PSS, SHA-384, MGF1-SHA-384, salt length 48 (exactly)."""
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertError(f"{what}: issuer key is not RSA")
    if child.issuer != issuer.subject:
        raise CertError(f"{what}: issuer name mismatch")
    try:
        key.verify(
            child.signature,
            child.tbs_certificate_bytes,
            padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
            hashes.SHA384(),
        )
    except InvalidSignature as e:
        raise CertError(f"{what}: signature invalid") from e


def verify_ecdsa_sha256(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """Intel chains: ECDSA P-256 with SHA-256."""
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CertError(f"{what}: issuer key is not P-256")
    if child.issuer != issuer.subject:
        raise CertError(f"{what}: issuer name mismatch")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise CertError(f"{what}: signature invalid") from e


def require_ca(cert: x509.Certificate, what: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as e:
        raise CertError(f"{what}: not a CA certificate") from e
    if not bc.ca:
        raise CertError(f"{what}: not a CA certificate")


@dataclass(frozen=True)
class _Entry:
    not_before: datetime
    not_after: datetime
    value: Any


class ChainCache:
    """Bounded LRU of verified certificate chains, valid only inside their time window.

    Args:
        max_entries: the bound; 0 disables caching (every lookup misses).
    """

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._d: collections.OrderedDict[Hashable, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, at: datetime) -> Any | None:
        """The cached value for ``key`` if present and ``at`` is inside its window."""
        with self._lock:
            e = self._d.get(key)
            if e is None or not (e.not_before <= at <= e.not_after):
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return e.value

    def put(self, key: Hashable, certs: Sequence[x509.Certificate], value: Any) -> None:
        """Remember a chain verified by the caller; the window is the intersection of
        the validity periods of ``certs``."""
        if self.max_entries == 0:
            return
        nb = max(c.not_valid_before_utc for c in certs)
        na = min(c.not_valid_after_utc for c in certs)
        with self._lock:
            self._d[key] = _Entry(nb, na, value)
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def statistics(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._d), "max_entries": self.max_entries,
                    "hits": self.hits, "misses": self.misses}
