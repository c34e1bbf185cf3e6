"""SEV-SNP launch rules of the policy (issue 19, item 5): VMPL and HOST_DATA, on real reports."""

from __future__ import annotations

import dataclasses

import pytest

from node.attestation.base import Claims, TeeKind, Verdict
from node.attestation.policy import Policy, PolicyError, evaluate, load_policy, policy_from_mapping
from node.attestation.sevsnp import SnpVerifier
from tests.attestation.vectors import snp_rows

ROWS = {r.evidence: r for r in snp_rows()}
GOOGLE = ROWS["google-go-sev-guest/attestation.bin"]
VLEK = ROWS["confidential-containers-trustee/snp__test-vlek-report.bin"]
ANY = Policy(allowed_kinds=("sev-snp",), measurements=(), forbid_debug=False)


def verdict(row) -> Verdict:
    v = SnpVerifier().verify(row.to_evidence(), at=row.verify_at)
    assert v.accepted, v.reason
    return v


def decide(policy: Policy, row):
    return evaluate(policy, verdict(row), at=row.verify_at)


@pytest.mark.parametrize("row", snp_rows(), ids=lambda r: r.id)
def test_every_real_report_is_judged_on_its_vmpl(row):
    v = verdict(row)
    vmpl = v.claims.extra["vmpl"]
    d = decide(ANY, row)
    assert d.allowed is (vmpl == 0)
    assert d.allowed or any(r.startswith("snp_vmpl:") for r in d.failed_rules)


def test_vlek_report_at_vmpl_1_is_refused_by_default_and_named():
    assert verdict(VLEK).claims.extra["vmpl"] == 1
    d = decide(ANY, VLEK)
    assert not d.allowed
    assert d.failed_rules == ("snp_vmpl: report requested at VMPL 1 > snp_vmpl_max 0",)
    assert decide(dataclasses.replace(ANY, snp_vmpl_max=1), VLEK).allowed


def test_host_data_allow_list():
    assert verdict(GOOGLE).claims.extra["host_data"] == bytes(32)
    assert decide(dataclasses.replace(ANY, snp_host_data=("00" * 32,)), GOOGLE).allowed
    d = decide(dataclasses.replace(ANY, snp_host_data=("11" * 32, "22" * 32)), GOOGLE)
    assert not d.allowed and len(d.failed_rules) == 1
    assert d.failed_rules[0].startswith("snp_host_data: 0000000000000000")


def test_every_failed_rule_is_named_together():
    strict = Policy(allowed_kinds=("sev-snp",), measurements=("ab" * 48,), forbid_debug=True,
                    snp_host_data=("11" * 32,))
    d = decide(strict, VLEK)
    names = [r.split(":")[0] for r in d.failed_rules]
    assert names == ["measurement", "snp_vmpl", "snp_host_data"]
    d = decide(strict, GOOGLE)  # the Google report is a debug guest at VMPL 0
    assert [r.split(":")[0] for r in d.failed_rules] == ["measurement", "debug", "snp_host_data"]


def test_missing_snp_claims_fail_closed():
    claims = Claims(kind=TeeKind.SEV_SNP, measurement=bytes(48), report_data=bytes(64), debug=False)
    d = evaluate(dataclasses.replace(ANY, snp_host_data=("00" * 32,)), Verdict.accept(claims),
                 at=VLEK.verify_at)
    assert [r.split(":")[0] for r in d.failed_rules] == ["snp_vmpl", "snp_host_data"]


def test_rules_apply_to_snp_only():
    claims = Claims(kind=TeeKind.TDX, measurement=bytes(48), report_data=bytes(64), debug=False,
                    extra={"vmpl": 3})
    pol = Policy(allowed_kinds=("tdx",), measurements=(), snp_host_data=("11" * 32,))
    assert evaluate(pol, Verdict.accept(claims), at=VLEK.verify_at).allowed


@pytest.mark.parametrize("data,match", [
    ({"snp_vmpl_max": 4}, "0..3"),
    ({"snp_vmpl_max": True}, "integer"),
    ({"snp_host_data": ["zz"]}, "not hex"),
    ({"snp_host_data": ["00" * 31]}, "32 bytes"),
    ({"snp_host_data": "00"}, "list of strings"),
])
def test_bad_snp_rules_are_refused(data, match):
    with pytest.raises(PolicyError, match=match):
        policy_from_mapping(data)


def test_snp_rules_round_trip_through_toml(tmp_path):
    pol = dataclasses.replace(Policy.production(), snp_vmpl_max=2, snp_host_data=("ab" * 32,))
    p = tmp_path / "p.toml"
    p.write_text(pol.to_toml())
    assert load_policy(p) == pol
