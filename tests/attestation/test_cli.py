"""``attest verify`` (cmd_verify): exit codes and JSON; plus kind detection."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.attestation.base import TeeKind
from node.attestation.cli import add_verify_arguments, cmd_verify, main
from node.attestation.detect import detect_kind, verifier_for
from node.attestation.simulated import SimulatedProvider
from tests.attestation.vectors import VECTORS, read

V = VECTORS
SNP = str(V / "google-go-sev-guest/attestation.bin")
VCEK = str(V / "google-go-sev-guest/vcek.testcer")
CHAIN = str(V / "google-go-sev-guest/milan.testcer")
TDX = str(V / "confidential-containers-trustee/tdx_quote_4.dat")
AT = "2026-06-01T00:00:00Z"


def run(*args, **kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cmd_verify(*args, stdout=out, stderr=err, **kw)
    return rc, out.getvalue(), err.getvalue()


def test_snp_accept_json() -> None:
    rc, out, err = run(SNP, vcek=VCEK, chain=CHAIN, at=AT)
    assert rc == 0 and err == ""
    j = json.loads(out)
    assert j["verdict"] == "accept" and j["kind"] == "sev-snp" and j["reason"] == "ok"
    assert len(j["measurement"]) == 96 and len(j["report_data"]) == 128
    assert j["tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert j["debug"] is True


def test_snp_reject_json() -> None:
    rc, out, _ = run(SNP, vcek=str(V / "virtee-sev/vcek_milan.der"), chain=CHAIN, at=AT)
    assert rc == 1
    j = json.loads(out)
    assert j["verdict"] == "reject" and j["reason"] == "VCEK hwID does not match CHIP_ID"
    rc, out, _ = run(SNP, at=AT)  # no VCEK at all
    assert rc == 1 and json.loads(out)["reason"] == "chain: no VCEK/VLEK certificate"


def test_expired_vlek_today() -> None:
    rc, out, _ = run(str(V / "confidential-containers-trustee/snp__test-vlek-report.bin"),
                     vcek=str(V / "confidential-containers-trustee/snp__test-vlek.der"),
                     chain=str(V / "google-go-sev-guest/milanvlek.testcer"),
                     at="2026-11-24T00:00:00Z")
    assert rc == 1 and json.loads(out)["reason"] == "chain: VLEK certificate expired"


def test_dcap_accept_and_root_override() -> None:
    rc, out, _ = run(TDX, at=AT)
    assert rc == 0 and json.loads(out)["kind"] == "tdx"
    rc, out, _ = run(TDX, at=AT, root=str(V / "google-go-tdx-guest/trusted_root.pem"))
    assert rc == 0
    rc, out, _ = run(TDX, at=AT, root=str(V / "google-go-sev-guest/ask_ark_genoa.pem"))
    assert rc == 1  # two certificates: not a single root (an input that does not parse)


def test_dcap_collateral_dir(tmp_path: Path) -> None:
    g = "google-go-tdx-guest/"
    for src, dst in (("sample_tcbInfo_response", "tcb_info.json"),
                     ("sample_qeIdentity_response", "qe_identity.json"),
                     ("tcb_signing_chain.pem", "tcb_signing_chain.pem"),
                     ("pckcrl", "pck_crl.der"), ("rootcrl.der", "root_crl.der")):
        (tmp_path / dst).write_bytes(read(g + src))
    rc, out, _ = run(TDX, at="2023-07-01T00:00:00Z", collateral_dir=str(tmp_path))
    assert rc == 0 and json.loads(out)["tcb_status"] == "UpToDate"


def test_human_output() -> None:
    rc, out, _ = run(SNP, vcek=VCEK, chain=CHAIN, at=AT, as_json=False)
    assert rc == 0 and out.startswith("ACCEPT sev-snp: ok") and "measurement" in out


@pytest.mark.parametrize("args,kw,msg", [
    ((SNP,), {"at": "yesterday"}, "--at: not an ISO 8601 time"),
    ((SNP,), {"collateral_dir": "/tmp"}, "--collateral applies to DCAP quotes only"),
    ((TDX,), {"vcek": VCEK}, "--vcek/--chain apply to SEV-SNP reports only"),
])
def test_usage_errors_exit_2(args, kw, msg) -> None:
    rc, out, err = run(*args, **kw)
    assert rc == 2 and out == ""
    assert err.startswith("enclave-swarm: ") and msg in err and err.count("\n") == 1


@pytest.mark.parametrize("args,kw,msg", [
    (("/nonexistent/evidence",), {}, "cannot read evidence"),
    ((SNP,), {"vcek": "/nonexistent"}, "cannot read VCEK"),
    ((TDX,), {"collateral_dir": "/nonexistent"}, "--collateral: collateral directory not found"),
])
def test_inputs_that_cannot_be_read_are_refused_with_exit_1(args, kw, msg) -> None:
    """A file that cannot be read is a failed input, not a usage error (exit 2 is usage only)."""
    rc, out, err = run(*args, **kw)
    assert rc == 1 and out == ""
    assert err.startswith("enclave-swarm: ") and msg in err and err.count("\n") == 1


@pytest.mark.parametrize("args,kw,msg", [
    ((str(V / "README.md"),), {}, "not an SEV-SNP report, DCAP quote"),
    ((SNP,), {"vcek": str(V / "README.md")}, "--vcek: not a DER certificate"),
])
def test_inputs_that_do_not_parse_exit_1(args, kw, msg) -> None:
    rc, out, err = run(*args, **kw)
    assert rc == 1 and out == ""
    assert err.startswith("enclave-swarm: ") and msg in err and err.count("\n") == 1


def test_a_corrupted_report_given_with_its_vcek_is_rejected_naming_the_field(tmp_path: Path) -> None:
    """The certificates say SEV-SNP: the report's own parser names what is wrong (exit 1), not
    a usage error (exit 2) saying it is no report at all."""
    blob = bytearray(read("google-go-sev-guest/attestation.bin"))
    blob[0:4] = (99).to_bytes(4, "little")  # the version field
    bad = tmp_path / "report.bin"
    bad.write_bytes(bytes(blob))
    rc, out, _ = run(str(bad), vcek=VCEK, chain=CHAIN, at=AT)
    assert rc == 1 and json.loads(out)["reason"] == "format: unsupported report version 99"


def test_policy_hook(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text('allowed_kinds = ["sev-snp"]\nforbid_debug = true\nmeasurements = []\n')
    rc, out, _ = run(SNP, vcek=VCEK, chain=CHAIN, at=AT, policy=str(p))
    j = json.loads(out)
    assert rc == 1 and j["verdict"] == "accept" and j["policy"]["allowed"] is False
    assert any("debug" in r for r in j["policy"]["failed_rules"])
    p.write_text('allowed_kinds = ["sev-snp"]\nforbid_debug = false\nmeasurements = []\n')
    rc, out, _ = run(SNP, vcek=VCEK, chain=CHAIN, at=AT, policy=str(p))
    assert rc == 0 and json.loads(out)["policy"] == {"allowed": True, "failed_rules": []}
    p.write_text("no_such_key = 1\n")
    rc, _, err = run(SNP, vcek=VCEK, chain=CHAIN, at=AT, policy=str(p))
    assert rc == 1 and err.startswith("enclave-swarm: --policy:")  # read, but does not parse


def test_argparse_wiring(capsys) -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_verify_arguments(p)
    a = p.parse_args([SNP, "--vcek", VCEK, "--chain", CHAIN, "--at", AT, "--json"])
    assert a.json and a.vcek == VCEK
    assert main([SNP, "--vcek", VCEK, "--chain", CHAIN, "--at", AT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "accept"


# -- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize("path,kind", [
    ("google-go-sev-guest/attestation.bin", TeeKind.SEV_SNP),
    ("project-oak/turin_report.bin", TeeKind.SEV_SNP),
    ("confidential-containers-trustee/tdx_quote_4.dat", TeeKind.TDX),
    ("google-go-tdx-guest/quote_v5_sample.dat", TeeKind.TDX),
    ("confidential-containers-trustee/occlum_quote.dat", TeeKind.SGX),
    ("google-go-tdx-guest/report.dat", None),  # a raw TDREPORT, not a quote
    ("README.md", None),
])
def test_detect_kind(path: str, kind: TeeKind | None) -> None:
    assert detect_kind(read(path)) is kind


def test_detect_sim_evidence_is_unknown(tmp_path: Path) -> None:
    ev = SimulatedProvider(tmp_path, bytes(48)).get_evidence(bytes(64))
    assert detect_kind(ev.blob) is None
    assert verifier_for(TeeKind.SIM).verify(ev, at=datetime.now(UTC)).kind is TeeKind.SIM


def test_verifier_for() -> None:
    for k in (TeeKind.SEV_SNP, TeeKind.TDX, TeeKind.SGX):
        assert verifier_for(k).kind is k
