"""The compiled simulator engine runs the same code: same seed, same trace, same report."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import accel
from sim.cli import add_arguments


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


@pytest.mark.parametrize("argv", [
    [],
    ["--nodes", "250", "--seed", "7", "--scenario", "partition-heal", "--partition-shape", "bridge"],
    ["--no-lifeguard", "--loss", "0.05", "--duration-s", "12.5", "--json", "-", "--no-progress"],
    ["--profile", "wan", "--wire", "--slow-nodes", "3", "--engine", "mypyc"],
])
def test_the_child_command_line_parses_back_to_the_same_arguments(argv: list[str]) -> None:
    p = _parser()
    args = p.parse_args(argv)
    again = p.parse_args([*accel._argv_of(args), "--engine", args.engine])
    assert vars(again) == vars(args)


def test_cpython_engine_never_delegates() -> None:
    args = _parser().parse_args(["--engine", "cpython"])
    assert accel.delegate(args) is None


def test_a_child_that_did_not_load_the_snapshot_refuses_instead_of_recursing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENCLAVE_SWARM_SIM_SNAPSHOT", "/nonexistent")
    args = _parser().parse_args(["--engine", "mypyc"])
    assert accel.delegate(args) == 1  # a failed build, not a usage error: exit 2 is for flags
    assert "did not load" in capsys.readouterr().err


def test_the_snapshot_name_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_SWARM_CACHE", str(tmp_path))
    assert accel.snapshot_dir() is None  # nothing built in an empty cache
    d1 = accel.digest()
    assert d1 == accel.digest()
    fake = tmp_path / "sim-accel" / d1
    fake.mkdir(parents=True)
    assert accel.snapshot_dir() is None  # a directory without its marker is not a snapshot
    (fake / "DIGEST").write_text(d1 + "\n")
    assert accel.snapshot_dir() == fake


def _sim(argv: list[str], env: dict[str, str], out: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-P", "-m", "sim", *argv, "--json", str(out),
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("SEED=")
    report: dict[str, object] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_compiled_and_interpreted_engines_give_identical_runs(tmp_path: Path) -> None:
    env = dict(os.environ, ENCLAVE_SWARM_CACHE=str(tmp_path / "cache"))
    snap = subprocess.run([sys.executable, "-m", "sim.accel"], env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert snap.returncode == 0, snap.stderr
    assert list(Path(snap.stdout.strip()).glob("overlay/membership.*.so"))
    common = ["--nodes", "150", "--seed", "11", "--scenario", "churn", "--duration-s", "8"]
    fast = _sim([*common, "--engine", "mypyc"], env, tmp_path / "a.json")
    slow = _sim([*common, "--engine", "cpython"], env, tmp_path / "b.json")
    assert fast.pop("engine") == "mypyc"
    assert slow.pop("engine") == "cpython"
    for r in (fast, slow):
        for k in ("wall_time_s", "speedup_x", "cpu_time_s", "speedup_cpu_x", "setup_s", "peak_rss_mib"):
            r.pop(k)
    assert fast == slow  # trace digest, every latency, every counter
