"""Fuzz targets: whatever the bytes, a verifier returns a Verdict and never raises.

Invariant: unmodified vectors are accepted; random bytes, truncations, extensions and byte
flips of real vectors give a Verdict with ``accepted`` False (a flip in the ignored trailing
bytes of a DCAP quote is the one documented exception), and never an ``internal:`` reason for
inputs that only touch parsing.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.attestation.base import Evidence, TeeKind, Verdict
from node.attestation.dcap import DcapVerifier, parse_quote
from node.attestation.detect import detect_kind
from node.attestation.sevsnp import SnpVerifier
from tests.attestation.vectors import dcap_rows, snp_rows

SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SNP = [(r.to_evidence(), r.verify_at) for r in snp_rows()]
DCAP = [(r.to_evidence(), r.verify_at) for r in dcap_rows()]
_SNP_V = SnpVerifier()
_DCAP_V = {TeeKind.TDX: DcapVerifier(TeeKind.TDX), TeeKind.SGX: DcapVerifier(TeeKind.SGX)}


def _check(v: Verdict) -> None:
    assert isinstance(v, Verdict)
    assert not v.reason.startswith("internal"), v.reason


def _snp(ev: Evidence, at) -> Verdict:
    return _SNP_V.verify(ev, at=at)


def _dcap(ev: Evidence, at) -> Verdict:
    return _DCAP_V[ev.kind].verify(ev, at=at)


@SETTINGS
@given(st.binary(max_size=6000), st.sampled_from([TeeKind.SEV_SNP, TeeKind.TDX, TeeKind.SGX]))
def test_random_bytes(blob: bytes, kind: TeeKind) -> None:
    ev = Evidence(kind, blob, SNP[0][0].certs if kind is TeeKind.SEV_SNP else ())
    v = _snp(ev, SNP[0][1]) if kind is TeeKind.SEV_SNP else _dcap(ev, DCAP[0][1])
    _check(v)
    assert not v.accepted
    detect_kind(blob)


@SETTINGS
@given(st.binary(min_size=1184, max_size=1184))
def test_random_snp_sized_reports(blob: bytes) -> None:
    v = _snp(Evidence(TeeKind.SEV_SNP, blob, SNP[0][0].certs), SNP[0][1])
    _check(v)
    assert not v.accepted


@SETTINGS
@given(st.sampled_from(range(len(SNP))), st.data())
def test_snp_flips(i: int, data: st.DataObject) -> None:
    ev, at = SNP[i]
    assert _snp(ev, at).accepted
    b = bytearray(ev.blob)
    n = data.draw(st.integers(1, 4))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] ^= data.draw(st.integers(1, 255))
    v = _snp(Evidence(ev.kind, bytes(b), ev.certs), at)
    _check(v)
    assert v.accepted is (bytes(b) == ev.blob)


@SETTINGS
@given(st.sampled_from(range(len(SNP))), st.integers(0, 1183), st.binary(max_size=8))
def test_snp_truncations_and_extensions(i: int, cut: int, tail: bytes) -> None:
    ev, at = SNP[i]
    blob = ev.blob[:cut] + tail
    v = _snp(Evidence(ev.kind, blob, ev.certs), at)
    _check(v)
    # A cut whose tail puts back the bytes cut off is the report itself (hypothesis found one:
    # the last byte of a real report is 0x00 padding).
    assert v.accepted is (blob == ev.blob)


@SETTINGS
@given(st.sampled_from(range(len(DCAP))), st.data())
def test_dcap_flips(i: int, data: st.DataObject) -> None:
    ev, at = DCAP[i]
    assert _dcap(ev, at).accepted
    q = parse_quote(ev.blob)
    covered = len(ev.blob) - q.trailing_bytes
    b = bytearray(ev.blob)
    n = data.draw(st.integers(1, 4))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] ^= data.draw(st.integers(1, 255))
    v = _dcap(Evidence(ev.kind, bytes(b)), at)
    _check(v)
    # Bytes after the signature data are deliberately ignored; any other change is fatal,
    # including whitespace in the (unsigned) PEM text, which must be canonical.
    assert v.accepted is (bytes(b[:covered]) == ev.blob[:covered])


@SETTINGS
@given(st.sampled_from(range(len(DCAP))), st.integers(0, 6000))
def test_dcap_truncations(i: int, cut: int) -> None:
    ev, at = DCAP[i]
    q = parse_quote(ev.blob)
    covered = len(ev.blob) - q.trailing_bytes
    v = _dcap(Evidence(ev.kind, ev.blob[:cut]), at)
    _check(v)
    assert v.accepted is (cut >= covered)


@SETTINGS
@given(st.sampled_from(range(len(SNP))), st.data())
def test_snp_cert_flips(i: int, data: st.DataObject) -> None:
    ev, at = SNP[i]
    certs = [bytearray(c) for c in ev.certs]
    j = data.draw(st.integers(0, len(certs) - 1))
    pos = data.draw(st.integers(0, len(certs[j]) - 1))
    certs[j][pos] ^= data.draw(st.integers(1, 255))
    v = SnpVerifier().verify(Evidence(ev.kind, ev.blob, tuple(bytes(c) for c in certs)), at=at)
    assert isinstance(v, Verdict)
    # A flip can land in unsigned DER framing that still decodes to the same certificate;
    # then the verdict may stand. It must never be an unexpected exception.
    assert not v.reason.startswith("internal"), v.reason
