"""Every MANIFEST.tsv row gives its expected verdict at its verify_at."""

from __future__ import annotations

import pytest

from node.attestation.dcap import DcapVerifier
from node.attestation.detect import verifier_for
from node.attestation.sevsnp import SnpVerifier
from tests.attestation.vectors import VECTORS, Row, manifest, read

ROWS = manifest()


def test_manifest_is_complete() -> None:
    assert len(ROWS) == 17
    assert {r.kind for r in ROWS} == {"snp", "dcap"}
    for r in ROWS:
        assert (VECTORS / r.evidence).is_file()
        assert r.verify_at.tzinfo is not None


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_manifest_row(row: Row) -> None:
    ev = row.to_evidence()
    verifier = SnpVerifier() if row.kind == "snp" else DcapVerifier(ev.kind)
    if row.kind == "dcap":
        # The chain column is the pinned root: the built-in pin must be that very file.
        assert read(row.chain) == read("google-go-tdx-guest/trusted_root.pem")
    verdict = verifier.verify(ev, at=row.verify_at)
    assert verdict.accepted is (row.expected == "ACCEPT"), verdict.reason
    if verdict.accepted:
        assert verdict.reason == "ok"
        c = verdict.claims
        assert c is not None and c.kind is ev.kind
        assert len(c.report_data) == 64
        assert len(c.measurement) in (32, 48)
        assert c.tcb
        verdict.to_json()  # JSON-able
    else:
        assert verdict.reason != "ok" and not verdict.reason.startswith("internal")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_manifest_row_warm_cache_same_verdict(row: Row) -> None:
    ev = row.to_evidence()
    v = verifier_for(ev.kind)
    first = v.verify(ev, at=row.verify_at)
    second = v.verify(ev, at=row.verify_at)
    assert (first.accepted, first.reason) == (second.accepted, second.reason)


def test_manifest_reject_reasons_are_specific() -> None:
    reasons = {}
    for row in ROWS:
        if row.expected == "REJECT":
            reasons[row.id] = SnpVerifier().verify(row.to_evidence(), at=row.verify_at).reason
    assert sorted(reasons.values()) == sorted([
        "VCEK hwID does not match CHIP_ID",
        "chain: VCEK not signed by ASK: issuer name mismatch",
    ])
