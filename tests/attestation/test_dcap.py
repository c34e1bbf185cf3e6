"""DCAP verifier: strict parsing, negative cases with specific reasons, collateral, time."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from node.attestation.base import Evidence, TeeKind
from node.attestation.dcap import Collateral, DcapFormatError, DcapVerifier, parse_quote
from tests.attestation.vectors import VECTORS, read, ts

AT = ts("2026-06-01T00:00:00Z")
V4 = "confidential-containers-trustee/tdx_quote_4.dat"  # TDX v4, no trailing bytes
V5 = "confidential-containers-trustee/tdx_quote_5.dat"  # TDX v5, body type 3 (TD 1.5)
SGX = "confidential-containers-trustee/occlum_quote.dat"  # SGX v3
SPR = "google-go-tdx-guest/tdx_prod_quote_SPR_E4.dat"  # TDX v4 + 39 trailing bytes
GT = "google-go-tdx-guest/"


def offsets(blob: bytes) -> dict[str, int]:
    """Where each field starts, computed independently of the parser."""
    version, _, tee = struct.unpack_from("<HHI", blob, 0)
    o: dict[str, int] = {"header": 0}
    if version == 5:
        o["body_type"], o["body_size"] = 48, 50
        _, bsize = struct.unpack_from("<HI", blob, 48)
        o["body"] = 54
        o["sig_len"] = 54 + bsize
    else:
        o["body"] = 48
        o["sig_len"] = 48 + (584 if tee == 0x81 else 384)
    p = o["sig_len"] + 4
    o["sig"], o["att_key"] = p, p + 64
    p += 128
    if version >= 4:
        o["outer_type"], o["outer_size"] = p, p + 2
        p += 6
    o["qe_report"], o["qe_sig"], o["auth_len"] = p, p + 384, p + 448
    auth_len = struct.unpack_from("<H", blob, p + 448)[0]
    o["auth"] = p + 450
    p += 450 + auth_len
    o["cert_type"], o["cert_size"], o["pem"] = p, p + 2, p + 6
    return o


def kind_of(path: str) -> TeeKind:
    return TeeKind.SGX if path == SGX else TeeKind.TDX


def verify(blob: bytes | bytearray, path: str = V4, at=AT, **kw):
    return DcapVerifier(kind_of(path), **kw).verify(Evidence(kind_of(path), bytes(blob)), at=at)


def flipped(path: str, field: str, delta: int = 0, mask: int = 0x01) -> bytearray:
    b = bytearray(read(path))
    b[offsets(bytes(b))[field] + delta] ^= mask
    return b


def set_u(path: str, field: str, value: int, fmt: str) -> bytearray:
    b = bytearray(read(path))
    struct.pack_into(fmt, b, offsets(bytes(b))[field], value)
    return b


# -- parsing & claims -------------------------------------------------------------------------


def test_parse_v4_v5_v3() -> None:
    q4, q5, q3 = parse_quote(read(V4)), parse_quote(read(V5)), parse_quote(read(SGX))
    assert (q4.version, q4.body_type, q4.kind) == (4, 2, TeeKind.TDX)
    assert (q5.version, q5.body_type, q5.kind) == (5, 3, TeeKind.TDX)
    assert "mr_servicetd" in q5.body.fields and "tee_tcb_svn2" in q5.body.fields
    assert (q3.version, q3.body_type, q3.kind) == (3, 1, TeeKind.SGX)
    assert (q3.qe_svn, q3.pce_svn) == (8, 13)
    assert parse_quote(read(SPR)).trailing_bytes == 39


def test_claims_tdx() -> None:
    v = verify(read(V4))
    assert v.accepted, v.reason
    c = v.claims
    assert c is not None
    q = parse_quote(read(V4))
    assert c.measurement == q.body.fields["mr_td"] and len(c.measurement) == 48
    assert c.report_data == read(V4)[520 + 48:584 + 48]
    assert c.debug is True  # TD_ATTRIBUTES bit 0 is set in this test quote
    assert c.tcb["tee_tcb_svn_00"] == 3 and c.tcb["tee_tcb_svn_02"] == 5
    assert len(c.extra["rtmrs"]) == 4 and c.extra["fmspc"] == bytes.fromhex("50806f000000")
    assert c.tcb_status is None  # no collateral
    assert c.to_json()["extra"]["fmspc"] == "50806f000000"


def test_claims_sgx_and_debug() -> None:
    v = verify(read(SGX), SGX)
    assert v.accepted, v.reason
    c = v.claims
    assert c is not None and c.kind is TeeKind.SGX and len(c.measurement) == 32
    assert c.debug is True  # ATTRIBUTES.DEBUG (bit 1) set: an Occlum debug enclave
    assert "isv_svn" in c.tcb and "cpu_svn_00" in c.tcb and "mr_signer" in c.extra
    assert not verify(read(V5), V5).claims.debug  # type: ignore[union-attr]


def test_trailing_bytes_are_tolerated_but_untrusted() -> None:
    b = bytearray(read(SPR))
    assert verify(b, SPR).accepted
    b[-1] ^= 0xFF  # not covered by anything
    v = verify(b, SPR)
    assert v.accepted and v.claims is not None and v.claims.extra["trailing_bytes"] == 39
    assert verify(read(V4) + b"\0" * 100).accepted


# -- byte flips -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [V4, V5, SGX])
@pytest.mark.parametrize("field,delta,reason", [
    ("header", 28, "quote signature invalid"),  # user_data
    ("body", 0, "quote signature invalid"),
    ("body", 200, "quote signature invalid"),
    ("sig", 0, "quote signature invalid"),
    ("sig", 63, "quote signature invalid"),
    ("att_key", 5, "QE report_data does not bind the attestation key"),
    ("qe_report", 70, "QE report signature invalid"),
    ("qe_sig", 10, "QE report signature invalid"),
    ("auth", 0, "QE report_data does not bind the attestation key"),
])
def test_flips_with_specific_reasons(path: str, field: str, delta: int, reason: str) -> None:
    v = verify(flipped(path, field, delta), path)
    assert not v.accepted and v.reason == reason


@pytest.mark.parametrize("path", [V4, SGX])
@pytest.mark.parametrize("delta", [20, 96, 160, 262, 303])
def test_reserved_in_qe_report(path: str, delta: int) -> None:
    v = verify(flipped(path, "qe_report", delta), path)
    assert v.reason.startswith("format: QE report: reserved"), v.reason


def test_reserved_in_sgx_body() -> None:
    v = verify(flipped(SGX, "body", 96), SGX)
    assert v.reason == "format: quote body: reserved2 not zero"


@pytest.mark.parametrize("path,field,value,fmt,reason", [
    (V4, "header", 6, "<H", "format: unsupported quote version 6"),
    (V4, "sig_len", 10**6, "<I", "format: signature data length exceeds quote"),
    (V4, "sig_len", 100, "<I", "format: signature data: truncated at attestation key"),
    (V4, "sig_len", 4299, "<I", "format: QE report certification data size mismatch"),
    (V4, "outer_type", 5, "<H", "format: certification data type 5, want 6 (QE report)"),
    (V4, "outer_size", 9, "<I", "format: QE report certification data size mismatch"),
    (V4, "auth_len", 0xFFFF, "<H",
     "format: QE report certification data: truncated at QE auth data"),
    (V4, "cert_type", 3, "<H", "format: certification data type 3, want 5 (PCK chain)"),
    (V4, "cert_size", 10, "<I", "format: QE report certification data: 3668 unexpected bytes"),
    (V4, "cert_size", 10**5, "<I", "format: QE report certification data: truncated at PCK chain"),
    (V5, "body_type", 2, "<H", "format: body size 648 wrong for body type 2"),
    (V5, "body_type", 9, "<H", "format: unknown body type 9"),
    (V5, "body_size", 584, "<I", "format: body size 584 wrong for body type 3"),
    (SGX, "cert_type", 6, "<H", "format: certification data type 6, want 5 (PCK chain)"),
    (SGX, "sig_len", 10, "<I", "format: signature data: truncated at quote signature"),
])
def test_length_and_type_fields(path, field, value, fmt, reason) -> None:
    v = verify(set_u(path, field, value, fmt), path)
    assert not v.accepted and v.reason == reason


def test_header_fields() -> None:
    assert verify(set_u(V4, "header", 3 << 16 | 4, "<I")).reason == \
        "format: unsupported attestation key type 3"
    b = bytearray(read(V4))
    b[12] ^= 1
    assert verify(b).reason == "format: QE vendor ID is not Intel"
    b = bytearray(read(V4))
    b[4] = 0x80
    assert verify(b).reason == "format: unknown TEE type 0x80"
    b = bytearray(read(SGX))
    b[4] = 1
    assert verify(b, SGX).reason == "format: reserved header field not zero"


def test_truncations() -> None:
    b = read(V4)
    assert verify(b[:40]).reason == "format: quote: truncated at header"
    assert verify(b[:600]).reason == "format: quote: truncated at body"
    assert verify(b[:-1]).reason == "format: signature data length exceeds quote"


def test_kind_mismatch() -> None:
    v = DcapVerifier().verify(Evidence(TeeKind.SGX, read(V4)), at=AT)
    assert v.reason == "quote is tdx, evidence says sgx"
    v = DcapVerifier().verify(Evidence(TeeKind.SEV_SNP, read(V4)), at=AT)
    assert v.reason == "wrong evidence kind sev-snp"


# -- chain ------------------------------------------------------------------------------------


def test_wrong_root_pinned() -> None:
    ark = (VECTORS / "google-go-sev-guest/ask_ark_genoa.pem").read_bytes()
    ark = ark[ark.rindex(b"-----BEGIN"):]
    v = verify(read(V4), root_pem=ark)
    assert v.reason == "chain: root is not the pinned Intel SGX Root CA"


def test_pck_chain_tampering() -> None:
    b = bytearray(read(V4))
    o = offsets(bytes(b))
    pem = bytes(b[o["pem"]:])
    # Swap a base64 character inside the leaf certificate body.
    i = pem.index(b"-----BEGIN CERTIFICATE-----") + 200
    b[o["pem"] + i] = ord("A") if pem[i] != ord("A") else ord("B")
    v = verify(b)
    assert not v.accepted and v.reason.startswith("chain: "), v.reason
    # Not PEM at all.
    b = bytearray(read(V4))
    b[o["pem"]] = ord("X")
    assert verify(b).reason == "chain: PCK chain is not a PEM certificate chain"


def test_pck_chain_from_other_quote_rejected() -> None:
    a, other = bytearray(read(V4)), read(SPR)
    oa, ob = offsets(bytes(a)), offsets(other)
    # Graft SPR's QE block (QE report, its signature, auth data, PCK chain) into V4.
    sig_end = ob["sig_len"] + 4 + struct.unpack_from("<I", other, ob["sig_len"])[0]
    block = other[ob["qe_report"]:sig_end]
    new = a[:oa["qe_report"]] + block
    struct.pack_into("<I", new, oa["sig_len"], len(new) - oa["sig_len"] - 4)
    struct.pack_into("<I", new, oa["outer_size"], len(new) - oa["outer_size"] - 4)
    v = verify(new)
    assert v.reason == "QE report_data does not bind the attestation key"


def test_expired_pck_rejected() -> None:
    assert verify(read(V4), at=ts("2031-01-01T00:00:00Z")).reason == \
        "chain: PCK certificate expired"
    assert verify(read(V4), at=ts("2020-01-01T00:00:00Z")).reason == \
        "chain: PCK certificate not yet valid"


def test_cache() -> None:
    dv = DcapVerifier()
    e = Evidence(TeeKind.TDX, read(V4))
    assert dv.verify(e, at=AT).accepted and dv.verify(e, at=AT).accepted
    assert dv.cache.statistics()["hits"] == 1
    assert dv.verify(e, at=ts("2031-01-01T00:00:00Z")).reason == "chain: PCK certificate expired"


# -- collateral -------------------------------------------------------------------------------

AT_2023 = ts("2023-07-01T00:00:00Z")


def col_2023(**kw) -> Collateral:
    base = Collateral(
        tcb_info=read(GT + "sample_tcbInfo_response"),
        qe_identity=read(GT + "sample_qeIdentity_response"),
        tcb_signing_chain=read(GT + "tcb_signing_chain.pem"),
        pck_crl=read(GT + "pckcrl"),
        root_crl=read(GT + "rootcrl.der"),
    )
    return dataclasses.replace(base, **kw)


def test_collateral_up_to_date() -> None:
    v = verify(read(V4), at=AT_2023, collateral=col_2023())
    assert v.accepted, v.reason
    assert v.claims is not None and v.claims.tcb_status == "UpToDate"
    assert v.claims.extra["qe_status"] == "UpToDate"


def test_collateral_no_matching_level() -> None:
    # A pre-production (E4 stepping) platform below every TCB level Intel lists.
    v = verify(read(SPR), SPR, at=AT_2023, collateral=col_2023())
    assert v.reason == "collateral: no matching TCB level"


def test_collateral_out_of_date_level() -> None:
    # Lower the PCE SVN requirement's match: make the first level unreachable by editing
    # nothing signed -> must fail the signature instead.
    ti = read(GT + "sample_tcbInfo_response").replace(b'"pcesvn":11', b'"pcesvn":12', 1)
    v = verify(read(V4), at=AT_2023, collateral=col_2023(tcb_info=ti))
    assert v.reason == "collateral: tcbInfo signature invalid"


def test_collateral_time_window_and_fmspc() -> None:
    v = verify(read(V4), at=ts("2023-08-01T00:00:00Z"),
               collateral=col_2023(pck_crl=None, root_crl=None))
    assert v.reason == "collateral: TCB info expired or not yet valid"
    v = verify(read(V4), at=ts("2023-07-10T00:00:00Z"), collateral=col_2023())
    assert v.reason == "collateral: PCK CRL not current"


def test_collateral_fmspc_must_match(monkeypatch) -> None:
    from node.attestation import dcap

    real = dcap._sgx_extension

    def other_fmspc(cert):
        return {**real(cert), "fmspc": bytes.fromhex("00906ea10000")}

    monkeypatch.setattr(dcap, "_sgx_extension", other_fmspc)
    v = verify(read(V4), at=AT_2023, collateral=col_2023())
    assert v.reason == "collateral: TCB info FMSPC does not match the PCK certificate"


def test_collateral_signing_chain_checked() -> None:
    v = verify(read(V4), at=AT_2023, collateral=col_2023(tcb_signing_chain=None))
    assert v.reason == "collateral: TCB signing chain missing"
    # The 2025 TCB info is signed by a newer TCB signing key than the one we have; and the
    # old TCB signing certificate expired in May 2025.
    v = verify(read("confidential-containers-trustee/tdx_quote_6.dat"),
               "confidential-containers-trustee/tdx_quote_6.dat", at=ts("2025-11-01T00:00:00Z"),
               collateral=col_2023(tcb_info=read("confidential-containers-trustee/tcbInfo.json"),
                                   qe_identity=None, pck_crl=None, root_crl=None))
    assert v.reason == "collateral: TCB signing certificate expired"


def test_collateral_qe_identity_mismatch_is_signature_protected() -> None:
    qi = read(GT + "sample_qeIdentity_response").replace(b'"isvprodid":2', b'"isvprodid":1')
    v = verify(read(V4), at=AT_2023, collateral=col_2023(qe_identity=qi))
    assert v.reason == "collateral: enclaveIdentity signature invalid"


def test_collateral_from_dir(tmp_path) -> None:
    (tmp_path / "tcbInfo.json").write_bytes(read(GT + "sample_tcbInfo_response"))
    (tmp_path / "tcb_signing_chain.pem").write_bytes(read(GT + "tcb_signing_chain.pem"))
    c = Collateral.from_dir(tmp_path)
    assert c.tcb_info is not None and c.qe_identity is None and c.pck_crl is None
    assert verify(read(V4), at=AT_2023, collateral=c).claims.tcb_status == "UpToDate"  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError):
        Collateral.from_dir(tmp_path / "missing")


def test_parse_errors_are_typed() -> None:
    with pytest.raises(DcapFormatError):
        parse_quote(b"\x04\x00")


def test_qe_must_be_intels(monkeypatch) -> None:
    from node.attestation import dcap

    monkeypatch.setitem(dcap.INTEL_QE_MRSIGNER, "tdx", bytes(32))
    assert verify(read(V4)).reason == "QE is not Intel's quoting enclave"
    assert verify(read(SGX), SGX).accepted
    monkeypatch.setitem(dcap.INTEL_QE_PRODID, "sgx", 7)
    assert verify(read(SGX), SGX).reason == "QE is not Intel's quoting enclave"


def test_debug_qe_rejected(monkeypatch) -> None:
    from node.attestation import dcap

    # The real QE has ATTRIBUTES.FLAGS 0x15 (INIT, MODE64, PROVISIONKEY): pretend INIT is DEBUG.
    monkeypatch.setattr(dcap, "SGX_FLAGS_DEBUG", 0x01)
    assert verify(read(V4)).reason == "QE is a debug enclave"


def test_revoked_pck_rejected() -> None:
    from node.attestation.dcap import _load_crl

    crl = _load_crl(read(GT + "pckcrl"))
    revoked = next(iter(crl)).serial_number
    dv = DcapVerifier(TeeKind.TDX, collateral=col_2023())
    real = dv._verified_pck

    def with_revoked_serial(pem, at):
        return dataclasses.replace(real(pem, at), leaf_serial=revoked)

    dv._verified_pck = with_revoked_serial  # type: ignore[method-assign]
    v = dv.verify(Evidence(TeeKind.TDX, read(V4)), at=AT_2023)
    assert v.reason == "collateral: PCK certificate revoked"
