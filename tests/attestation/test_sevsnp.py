"""SEV-SNP verifier: negative cases with specific reasons, binding rules, caching, time."""

from __future__ import annotations

import struct
from datetime import timedelta

import pytest

from node.attestation.base import Evidence, TeeKind
from node.attestation.sevsnp import (
    REPORT_SIZE,
    Product,
    SnpFormatError,
    SnpVerifier,
    TcbVersion,
    parse_report,
)
from tests.attestation import forge
from tests.attestation.vectors import ders, read, snp_rows, ts

AT = ts("2026-06-01T00:00:00Z")
TODAY = ts("2026-11-24T00:00:00Z")

GOOGLE = "google-go-sev-guest/attestation.bin"
GOOGLE_CERTS = ("google-go-sev-guest/vcek.testcer", "google-go-sev-guest/milan.testcer")
VLEK_REPORT = "confidential-containers-trustee/snp__test-vlek-report.bin"
VLEK_CERTS = ("confidential-containers-trustee/snp__test-vlek.der",
              "google-go-sev-guest/milanvlek.testcer")
TURIN = "project-oak/turin_report.bin"
TURIN_CERTS = ("project-oak/turin_vcek.der", "google-go-sev-guest/ask_ark_turin_vcek.pem")
GENOA = "project-oak/genoa_report.bin"
GENOA_CERTS = ("project-oak/genoa_vcek.der", "google-go-sev-guest/ask_ark_genoa.pem")


def ev(report: bytes | bytearray, certs: tuple[str, ...] = GOOGLE_CERTS) -> Evidence:
    return Evidence(TeeKind.SEV_SNP, bytes(report), tuple(d for c in certs for d in ders(c)))


def verify(report: bytes | bytearray, certs: tuple[str, ...] = GOOGLE_CERTS, at=AT):
    return SnpVerifier().verify(ev(report, certs), at=at)


def flipped(path: str, offset: int, mask: int = 0x01) -> bytearray:
    b = bytearray(read(path))
    b[offset] ^= mask
    return b


# -- parsing ----------------------------------------------------------------------------------


def test_parse_fields_of_real_reports() -> None:
    g = parse_report(read(GOOGLE))
    assert g.version == 2 and g.vmpl == 0 and g.signature_algo == 1
    assert g.debug and g.policy_dict()["smt_allowed"] and not g.policy_dict()["migrate_ma"]
    assert g.cpuid_fam_id is None and g.launch_mit_vector is None
    t = parse_report(read(TURIN))
    assert t.version == 5 and t.cpuid_product() is Product.TURIN
    assert t.tcb(Product.TURIN)["reported"].as_dict() == {
        "bootloader": 1, "tee": 0, "snp": 2, "microcode": 71, "fmc": 0}
    assert parse_report(read(GENOA)).cpuid_product() is Product.GENOA
    v = parse_report(read(VLEK_REPORT))
    assert v.signing_key.name == "VLEK" and v.chip_id == bytes(64) and v.vmpl == 1


def test_turin_tcb_layout_differs() -> None:
    raw = bytes([9, 1, 2, 3, 0, 0, 0, 0x47])
    assert TcbVersion.decode(raw, turin=True).as_dict() == {
        "bootloader": 1, "tee": 2, "snp": 3, "microcode": 0x47, "fmc": 9}
    with pytest.raises(SnpFormatError):
        TcbVersion.decode(raw, turin=False)  # bytes 2..5 are reserved before Turin


@pytest.mark.parametrize("path,debug", [(GOOGLE, True), ("virtee-sev/report_milan.bin", False),
                                        (TURIN, False)])
def test_debug_flag_is_policy_bit_19(path: str, debug: bool) -> None:
    assert parse_report(read(path)).debug is debug


def test_claims_content() -> None:
    v = verify(read(GOOGLE))
    assert v.accepted
    c = v.claims
    assert c is not None and c.debug is True
    assert c.tcb == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert c.extra["signing_key"] == "vcek" and c.extra["report_version"] == 2
    assert c.extra["policy"]["debug"] and c.extra["product"] == "Milan"
    assert c.extra["chip_id"] == read(GOOGLE)[0x1A0:0x1E0]
    j = v.to_json()
    assert j["verdict"] == "accept" and j["measurement"] == c.measurement.hex()


# -- byte flips -------------------------------------------------------------------------------

SIGNED_FIELDS = {
    "guest_svn": 0x04, "family_id": 0x10, "image_id": 0x20, "report_data": 0x50,
    "measurement": 0x90, "host_data": 0xC0, "id_key_digest": 0xE0, "author_key_digest": 0x110,
    "report_id": 0x140, "report_id_ma": 0x160, "committed_tcb": 0x1E0, "current_build": 0x1E8,
    "launch_tcb": 0x1F0, "current_tcb": 0x38,
}


@pytest.mark.parametrize("field", sorted(SIGNED_FIELDS))
def test_flip_in_signed_field_is_signature_invalid(field: str) -> None:
    v = verify(flipped(GOOGLE, SIGNED_FIELDS[field]))
    assert not v.accepted and v.reason == "signature invalid"


@pytest.mark.parametrize("offset", [0x2A0, 0x2A0 + 47, 0x2E8, 0x2E8 + 47])
def test_flip_in_signature_is_signature_invalid(offset: int) -> None:
    v = verify(flipped(GOOGLE, offset))
    assert not v.accepted and v.reason == "signature invalid"


@pytest.mark.parametrize("offset", [0x04C, 0x18B, 0x19F, 0x1EB, 0x1EF, 0x1F8, 0x29F,
                                    0x2A0 + 48, 0x2E8 + 71, 0x330, REPORT_SIZE - 1])
def test_flip_in_reserved_is_format_error(offset: int) -> None:
    v = verify(flipped(GOOGLE, offset))
    assert not v.accepted and v.reason.startswith("format: reserved field not zero"), v.reason


def test_flip_reserved_tcb_bytes() -> None:
    v = verify(flipped(GOOGLE, 0x180 + 3))
    assert v.reason == "format: reserved TCB bytes not zero"


@pytest.mark.parametrize("offset,mask,reason", [
    (0x000, 0x04, "format: unsupported report version 6"),
    (0x034, 0x02, "format: unsupported signature algorithm 3"),
    (0x030, 0x04, "format: VMPL 4 out of range"),
    (0x00A, 0x02, "format: policy bit 17 (reserved, must be one) is clear"),
    (0x00B, 0x04, "format: reserved policy bits set"),
    (0x041, 0x01, "format: reserved PLATFORM_INFO bits set"),
    (0x048, 0x20, "format: reserved key-info bits set (0x048)"),
    (0x048, 0x1C, "format: report is not signed (SIGNING_KEY = none)"),
    (0x048, 0x08, "format: unknown SIGNING_KEY 2"),
    (0x048, 0x04, "format: CHIP_ID must be zero in a VLEK-signed report"),
    (0x048, 0x02, "format: CHIP_ID must be zero when MASK_CHIP_ID is set"),
])
def test_structural_field_flips(offset: int, mask: int, reason: str) -> None:
    assert verify(flipped(GOOGLE, offset, mask)).reason == reason


def test_binding_flips_have_specific_reasons() -> None:
    assert verify(flipped(GOOGLE, 0x1A0)).reason == "VCEK hwID does not match CHIP_ID"
    assert verify(flipped(GOOGLE, 0x186)).reason == "certificate snp SPL 5 != REPORTED_TCB 4"
    assert verify(flipped(GOOGLE, 0x187)).reason == \
        "certificate microcode SPL 68 != REPORTED_TCB 69"
    # v2 -> v3 makes CPUID (zero here) meaningful: it names no product.
    assert verify(flipped(GOOGLE, 0x000, 0x01)).reason.startswith("CPUID family/model (unknown)")


def test_turin_chip_id_tail_must_be_zero_and_cpuid_checked() -> None:
    assert verify(read(TURIN), TURIN_CERTS).accepted
    assert verify(flipped(TURIN, 0x1A0 + 8), TURIN_CERTS).reason == \
        "VCEK hwID does not match CHIP_ID"
    assert verify(flipped(TURIN, 0x188, 0x03), TURIN_CERTS).reason.startswith(
        "CPUID family/model (Milan) does not match chain product Turin")


def test_length_errors() -> None:
    b = read(GOOGLE)
    assert verify(b[:-1]).reason == "format: report size 1183 != 1184"
    assert verify(b + b"\0").reason == "format: report size 1185 != 1184"
    assert verify(b"").reason == "format: report size 0 != 1184"


# -- chains, roots, keys ----------------------------------------------------------------------


def test_swapped_vcek_rejected() -> None:
    certs = ("virtee-sev/vcek_milan.der", "google-go-sev-guest/milan.testcer")
    assert verify(read(GOOGLE), certs).reason == "VCEK hwID does not match CHIP_ID"
    # Same chip, other product's VCEK: the chain does not even link.
    certs = ("project-oak/genoa_vcek.der", "google-go-sev-guest/milan.testcer")
    assert verify(read(GOOGLE), certs).reason.startswith("chain: VCEK not signed by ASK")


def test_wrong_chain_and_root() -> None:
    assert verify(read(GOOGLE), ("google-go-sev-guest/vcek.testcer",
                                 "google-go-sev-guest/ask_ark_genoa.pem")).reason == \
        "chain: VCEK not signed by ASK: issuer name mismatch"
    # A VCEK whose ASK is a VLEK signer.
    assert verify(read(GOOGLE), ("google-go-sev-guest/vcek.testcer",
                                 "google-go-sev-guest/milanvlek.testcer")).reason == \
        "chain: ASK is not SEV-Milan"
    # A self-made ARK is not pinned, whatever it signs.
    fc = forge.chain()
    rep = fc.sign(forge.milan_report())
    v = SnpVerifier().verify(Evidence(TeeKind.SEV_SNP, rep, fc.certs), at=AT)
    assert v.reason == "chain: ARK is not a pinned AMD root"


def test_report_signed_by_other_key_rejected() -> None:
    fc = forge.chain()
    # Genuine chain bytes, but the signature is from an unrelated key.
    rep = bytearray(fc.sign(read(GOOGLE)))
    assert verify(rep).reason == "signature invalid"


def test_missing_certs_use_shipped_intermediates() -> None:
    # Only the VCEK: the ASK comes from roots/, the ARK from the pins.
    v = verify(read(GOOGLE), ("google-go-sev-guest/vcek.testcer",))
    assert v.accepted, v.reason
    v = verify(read(TURIN), ("project-oak/turin_vcek.der",))
    assert v.accepted, v.reason
    assert verify(read(GOOGLE), ()).reason == "chain: no VCEK/VLEK certificate"


def test_vlek_report_and_expiry() -> None:
    assert verify(read(VLEK_REPORT), VLEK_CERTS, at=ts("2025-06-01T00:00:00Z")).accepted
    v = verify(read(VLEK_REPORT), VLEK_CERTS, at=TODAY)
    assert not v.accepted and v.reason == "chain: VLEK certificate expired"
    v = verify(read(VLEK_REPORT), VLEK_CERTS, at=ts("2024-01-01T00:00:00Z"))
    assert v.reason == "chain: VLEK certificate not yet valid"
    # A VLEK report presented with a VCEK.
    v = verify(read(VLEK_REPORT), ("confidential-containers-trustee/snp__test-vcek.der",
                                   "google-go-sev-guest/milan.testcer"))
    assert v.reason == "report signed by VLEK but certificate is a VCEK"


def test_cache_respects_time_window() -> None:
    sv = SnpVerifier()
    e = ev(read(VLEK_REPORT), VLEK_CERTS)
    assert sv.verify(e, at=ts("2025-06-01T00:00:00Z")).accepted
    assert sv.cache.statistics()["entries"] == 1
    assert sv.verify(e, at=ts("2025-06-02T00:00:00Z")).accepted
    assert sv.cache.statistics()["hits"] == 1
    # Same chain, later than the VLEK's notAfter: the cache must not serve it.
    assert sv.verify(e, at=TODAY).reason == "chain: VLEK certificate expired"


def test_cache_is_bounded() -> None:
    sv = SnpVerifier(cache_size=2)
    for row in snp_rows():
        sv.verify(row.to_evidence(), at=row.verify_at)
    assert sv.cache.statistics()["entries"] == 2
    assert SnpVerifier(cache_size=0).verify(ev(read(GOOGLE)), at=AT).accepted


def test_naive_time_is_local_misuse() -> None:
    with pytest.raises(ValueError):
        SnpVerifier().verify(ev(read(GOOGLE)), at=AT.replace(tzinfo=None))


def test_wrong_evidence_kind() -> None:
    e = Evidence(TeeKind.TDX, read(GOOGLE))
    assert SnpVerifier().verify(e, at=AT).reason == "wrong evidence kind tdx"


def test_garbage_certificates() -> None:
    e = Evidence(TeeKind.SEV_SNP, read(GOOGLE), (b"not a cert",))
    assert SnpVerifier().verify(e, at=AT).reason == "chain: not a DER certificate"
    e = Evidence(TeeKind.SEV_SNP, read(GOOGLE), (ders("google-go-sev-guest/milan.testcer")[1],))
    assert SnpVerifier().verify(e, at=AT).reason.startswith("chain: leaf is not a VCEK/VLEK")
    e = Evidence(TeeKind.SEV_SNP, read(GOOGLE), (b"x",) * 4)
    assert SnpVerifier().verify(e, at=AT).reason == "chain: too many certificates"


# -- binding rules with a forged (test-pinned) chain ------------------------------------------


def forged(fc: forge.ForgedChain, report: bytes | bytearray, at=AT):
    sv = SnpVerifier(extra_arks=[fc.ark_pem])
    return sv.verify(Evidence(TeeKind.SEV_SNP, fc.sign(report), fc.certs), at=at)


def test_forged_chain_accepts_when_everything_matches() -> None:
    fc = forge.chain()
    v = forged(fc, forge.milan_report())
    assert v.accepted, v.reason
    assert v.claims is not None and v.claims.measurement == b"M" * 48


def test_forged_binding_rules() -> None:
    fc = forge.chain()
    assert forged(fc, forge.milan_report(tcb=bytes([3, 0, 0, 0, 0, 0, 9, 115]))).reason == \
        "certificate snp SPL 8 != REPORTED_TCB 9"
    assert forged(fc, forge.milan_report(chip_id=b"\x22" * 64)).reason == \
        "VCEK hwID does not match CHIP_ID"
    assert forged(fc, forge.milan_report(version=3)).accepted
    assert forged(fc, forge.milan_report(version=3, cpuid=bytes([0x1A, 0x02, 0]))).reason == \
        "CPUID family/model (Turin) does not match chain product Milan"
    v = forged(fc, forge.milan_report(chip_id=bytes(64), vlek=True))
    assert v.reason == "report signed by VLEK but certificate is a VCEK"
    bad_name = forge.chain(product_name="Genoa")
    assert forged(bad_name, forge.milan_report()).reason.startswith(
        "chain: leaf productName 'Genoa' does not match chain product Milan")
    expired = forge.chain(leaf_na=AT - timedelta(days=1))
    assert forged(expired, forge.milan_report()).reason == "chain: VCEK certificate expired"


def test_forged_mask_chip_id() -> None:
    fc = forge.chain()
    rep = forge.milan_report(chip_id=bytes(64))
    rep[0x48] |= 0x02  # MASK_CHIP_ID: no hwID binding possible, the VCEK signature still binds
    v = forged(fc, rep)
    assert v.accepted, v.reason
    assert v.claims is not None and v.claims.extra["mask_chip_id"] is True


def test_forged_vlek() -> None:
    fc = forge.chain(kind="VLEK")
    v = forged(fc, forge.milan_report(chip_id=bytes(64), vlek=True))
    assert v.accepted, v.reason
    assert v.claims is not None and v.claims.extra["signing_key"] == "vlek"


def test_report_layout_constants() -> None:
    b = read(GOOGLE)
    assert struct.unpack_from("<I", b, 0)[0] == 2 and len(b) == REPORT_SIZE


def test_chain_failure_still_shows_claims_but_rejects() -> None:
    v = verify(read(VLEK_REPORT), VLEK_CERTS, at=TODAY)
    assert not v.accepted and v.claims is not None
    assert v.claims.measurement == read(VLEK_REPORT)[0x90:0xC0]
    assert v.claims.extra["product"] is None
    assert v.to_json()["verdict"] == "reject"


def test_constructor_default_certs() -> None:
    sv = SnpVerifier(vcek=read("google-go-sev-guest/vcek.testcer"),
                     chain=read("google-go-sev-guest/milan.testcer"))
    assert sv.verify(Evidence(TeeKind.SEV_SNP, read(GOOGLE)), at=AT).accepted
    # Evidence-supplied certificates take precedence over the defaults.
    e = ev(read(GOOGLE), ("virtee-sev/vcek_milan.der",))
    assert sv.verify(e, at=AT).reason == "VCEK hwID does not match CHIP_ID"


@pytest.mark.parametrize(
    "bad", ["snp__test-vcek-invalid-legacy.der", "snp__test-vcek-invalid-new.der"])
def test_tampered_vceks_from_trustee(bad: str) -> None:
    v = verify(read("confidential-containers-trustee/snp__test-report.bin"),
               (f"confidential-containers-trustee/{bad}", "google-go-sev-guest/milan.testcer"))
    assert v.reason == "chain: VCEK not signed by ASK: signature invalid"


def test_swapped_turin_vcek() -> None:
    v = verify(read(TURIN), ("virtee-sev/vcek_turin.der", "virtee-sev/cert_chain_turin"))
    assert v.reason == "VCEK hwID does not match CHIP_ID"
