"""Evidence providers against fake configfs-tsm and Gramine trees (no TEE on CI machines)."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from node.attestation.base import AttestationUnavailable, EvidenceProvider, TeeKind
from node.attestation.providers import (
    SNP_GUID_ARK,
    SNP_GUID_ASK,
    SNP_GUID_VCEK,
    GramineSgxProvider,
    TsmProvider,
    detect_tee,
    parse_snp_cert_table,
    provider_for,
)
from tests.attestation.vectors import ders, read

SNP_REPORT = read("google-go-sev-guest/attestation.bin")
SNP_RD = SNP_REPORT[0x50:0x90]
TDX_QUOTE = read("confidential-containers-trustee/tdx_quote_4.dat")
TDX_RD = TDX_QUOTE[48 + 520:48 + 584]
SGX_QUOTE = read("confidential-containers-trustee/occlum_quote.dat")
SGX_RD = SGX_QUOTE[48 + 320:48 + 384]


def cert_table(entries: dict[uuid.UUID, bytes]) -> bytes:
    head = 24 * (len(entries) + 1)
    table, data = b"", b""
    for guid, blob in entries.items():
        table += guid.bytes_le + struct.pack("<II", head + len(data), len(blob))
        data += blob
    return table + bytes(24) + data


class FakeKernel(TsmProvider):
    """Emulates the configfs-tsm side: a new entry is populated like the kernel would."""

    def __init__(self, *a, outblob: bytes, provider: str, auxblob: bytes | None = None,
                 bump_generation: bool = False, **kw) -> None:
        super().__init__(*a, **kw)
        self.outblob, self.provider, self.auxblob = outblob, provider, auxblob
        self.bump_generation = bump_generation
        self.entries: list[Path] = []
        self.written: dict[str, bytes] = {}

    def _make_entry(self, path: Path) -> None:
        super()._make_entry(path)
        self.entries.append(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "outblob").write_bytes(self.outblob)
        for name in ("inblob", "privlevel"):
            (path / name).write_bytes(b"")
        if self.auxblob is not None:
            (path / "auxblob").write_bytes(self.auxblob)

    def _write(self, path: Path, data: bytes) -> None:
        super()._write(path, data)
        self.written[path.name] = data
        gen = path.parent / "generation"
        gen.write_text(str(int(gen.read_text()) + 1))

    def _read(self, path: Path) -> bytes:
        data = super()._read(path)
        if path.name == "outblob" and self.bump_generation:
            gen = path.parent / "generation"
            gen.write_text(str(int(gen.read_text()) + 1))  # another writer raced us
        return data

    def rmdir_all(self) -> None:
        for e in self.entries:
            for f in e.iterdir():
                f.unlink()


@pytest.fixture
def tsm(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


def _run(p: FakeKernel, rd: bytes):
    # os.rmdir fails on a non-empty plain directory, unlike configfs: clean files first by
    # hooking rmdir through the fake's entries after the call.
    try:
        return p.get_evidence(rd)
    finally:
        p.rmdir_all()


def test_snp_through_configfs(tsm: Path) -> None:
    vcek, ask, ark = ders("google-go-sev-guest/vcek.testcer") + ders(
        "google-go-sev-guest/milan.testcer")
    aux = cert_table({SNP_GUID_ASK: ask, SNP_GUID_VCEK: vcek, SNP_GUID_ARK: ark})
    p = FakeKernel(TeeKind.SEV_SNP, root=tsm, outblob=SNP_REPORT, provider="sev_guest",
                   auxblob=aux, privlevel=0)
    assert isinstance(p, EvidenceProvider)
    ev = _run(p, SNP_RD)
    assert ev.kind is TeeKind.SEV_SNP and ev.blob == SNP_REPORT
    assert ev.certs == (vcek, ask, ark)
    assert p.written == {"privlevel": b"0", "inblob": SNP_RD}


def test_tdx_through_configfs(tsm: Path) -> None:
    p = FakeKernel(TeeKind.TDX, root=tsm, outblob=TDX_QUOTE, provider="tdx_guest")
    ev = _run(p, TDX_RD)
    assert ev.kind is TeeKind.TDX and ev.blob == TDX_QUOTE and ev.certs == ()


def test_wrong_provider(tsm: Path) -> None:
    p = FakeKernel(TeeKind.TDX, root=tsm, outblob=TDX_QUOTE, provider="sev_guest")
    with pytest.raises(AttestationUnavailable, match="provider is 'sev_guest'"):
        _run(p, TDX_RD)


def test_generation_race_detected(tsm: Path) -> None:
    p = FakeKernel(TeeKind.TDX, root=tsm, outblob=TDX_QUOTE, provider="tdx_guest",
                   bump_generation=True)
    with pytest.raises(AttestationUnavailable, match="generation changed"):
        _run(p, TDX_RD)


def test_report_data_mismatch(tsm: Path) -> None:
    p = FakeKernel(TeeKind.SEV_SNP, root=tsm, outblob=SNP_REPORT, provider="sev_guest")
    with pytest.raises(AttestationUnavailable, match="requested report_data"):
        _run(p, bytes(64))


def test_empty_outblob(tsm: Path) -> None:
    p = FakeKernel(TeeKind.TDX, root=tsm, outblob=b"", provider="tdx_guest")
    with pytest.raises(AttestationUnavailable, match="empty outblob"):
        _run(p, TDX_RD)


def test_entry_removed(tsm: Path) -> None:
    class Clean(FakeKernel):
        def _read(self, path: Path) -> bytes:
            data = super()._read(path)
            if path.name == "generation" and self.reads == 1:
                self.rmdir_all()  # configfs rmdir works on populated entries; emulate that
            if path.name == "generation":
                self.reads += 1
            return data

    p = Clean(TeeKind.TDX, root=tsm, outblob=TDX_QUOTE, provider="tdx_guest")
    p.reads = 0
    p.get_evidence(TDX_RD)
    assert list(tsm.iterdir()) == []


def test_configfs_absent(tmp_path: Path) -> None:
    p = TsmProvider(TeeKind.SEV_SNP, root=tmp_path / "nope")
    with pytest.raises(AttestationUnavailable, match="configfs-tsm not available"):
        p.get_evidence(bytes(64))


def test_local_misuse() -> None:
    with pytest.raises(ValueError):
        TsmProvider(TeeKind.SGX)
    with pytest.raises(ValueError):
        TsmProvider(TeeKind.TDX, privlevel=1)
    with pytest.raises(ValueError):
        TsmProvider(TeeKind.TDX).get_evidence(b"short")
    with pytest.raises(ValueError):
        provider_for(TeeKind.SIM)


def test_cert_table_parsing() -> None:
    t = cert_table({SNP_GUID_VCEK: b"abc"})
    assert parse_snp_cert_table(t) == {SNP_GUID_VCEK: b"abc"}
    with pytest.raises(AttestationUnavailable, match="terminator"):
        parse_snp_cert_table(t[:20])
    bad = bytearray(t)
    struct.pack_into("<II", bad, 16, 1000, 5)
    with pytest.raises(AttestationUnavailable, match="out of bounds"):
        parse_snp_cert_table(bytes(bad))


def gramine(tmp_path: Path, quote: bytes, att_type: bytes = b"dcap") -> Path:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_bytes(att_type)
    (root / "user_report_data").write_bytes(b"")
    (root / "quote").write_bytes(quote)
    return root


def test_gramine_sgx(tmp_path: Path) -> None:
    root = gramine(tmp_path, SGX_QUOTE)
    ev = GramineSgxProvider(root=root).get_evidence(SGX_RD)
    assert ev.kind is TeeKind.SGX and ev.blob == SGX_QUOTE
    assert (root / "user_report_data").read_bytes() == SGX_RD
    with pytest.raises(AttestationUnavailable, match="requested report_data"):
        GramineSgxProvider(root=root).get_evidence(bytes(64))


def test_gramine_absent_or_not_dcap(tmp_path: Path) -> None:
    with pytest.raises(AttestationUnavailable, match="Gramine attestation not available"):
        GramineSgxProvider(root=tmp_path / "none").get_evidence(bytes(64))
    root = gramine(tmp_path, SGX_QUOTE, b"epid")
    with pytest.raises(AttestationUnavailable, match="need 'dcap'"):
        GramineSgxProvider(root=root).get_evidence(SGX_RD)


def test_detect_tee(tmp_path: Path, tsm: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    kw = {"tsm_root": tsm, "dev_root": dev, "gramine_root": tmp_path / "noattest"}
    assert detect_tee(**kw) is None
    (dev / "sev-guest").touch()
    assert detect_tee(**kw) is TeeKind.SEV_SNP
    (dev / "sev-guest").unlink()
    (dev / "tdx_guest").touch()
    assert detect_tee(**kw) is TeeKind.TDX
    assert detect_tee(**{**kw, "tsm_root": tmp_path / "missing"}) is None
    kw["gramine_root"] = gramine(tmp_path, SGX_QUOTE)
    assert detect_tee(**kw) is TeeKind.SGX


def test_detect_tee_on_this_machine_does_not_raise() -> None:
    assert detect_tee() in (None, TeeKind.SEV_SNP, TeeKind.TDX, TeeKind.SGX)
