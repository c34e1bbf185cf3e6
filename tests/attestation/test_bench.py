"""Smoke test: the attestation benchmark runs and its verifications all succeed."""

from __future__ import annotations

from bench import bench_attestation


def test_bench_measure_smoke() -> None:
    r = bench_attestation.measure(0.0)
    assert all(v > 0 for v in r.values())


def test_bench_main_json(capsys) -> None:
    assert bench_attestation.main(["--seconds", "0", "--json", "--no-pin"]) == 0
    assert '"snp_warm_per_s"' in capsys.readouterr().out
