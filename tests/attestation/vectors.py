"""Access to the real evidence vectors copied into tests/vectors/ (see its README.md)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from node.attestation import _certs
from node.attestation.base import Evidence, TeeKind
from node.attestation.detect import detect_kind

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def read(rel: str) -> bytes:
    return (VECTORS / rel).read_bytes()


def ders(rel: str) -> list[bytes]:
    return [_certs.der(c) for c in _certs.load_any(read(rel))]


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclasses.dataclass(frozen=True)
class Row:
    kind: str
    evidence: str
    endorsement: str | None
    chain: str
    expected: str
    verify_at: datetime

    @property
    def id(self) -> str:
        e = self.endorsement.rsplit("/", 1)[-1] if self.endorsement else "-"
        return f"{self.evidence}+{e}+{self.chain.rsplit('/', 1)[-1]}->{self.expected}"

    def to_evidence(self) -> Evidence:
        blob = read(self.evidence)
        if self.kind == "snp":
            certs = ders(self.endorsement or "") + ders(self.chain)
            return Evidence(TeeKind.SEV_SNP, blob, tuple(certs))
        kind = detect_kind(blob)
        assert kind in (TeeKind.TDX, TeeKind.SGX)
        return Evidence(kind, blob)


def manifest() -> list[Row]:
    rows = []
    for line in (VECTORS / "MANIFEST.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, ev, endo, chain, expected, at = line.split("\t")
        rows.append(Row(kind, ev, None if endo == "-" else endo, chain, expected, ts(at)))
    return rows


def snp_rows(expected: str = "ACCEPT") -> list[Row]:
    return [r for r in manifest() if r.kind == "snp" and r.expected == expected]


def dcap_rows(expected: str = "ACCEPT") -> list[Row]:
    return [r for r in manifest() if r.kind == "dcap" and r.expected == expected]
