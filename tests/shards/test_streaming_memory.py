"""A 200 MiB object through seal+split and combine+open in a fresh process: memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.process
def test_200_mib_round_trip_in_bounded_memory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.shards.memprobe", "200", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["round_trip"] is True
    # Holding the object (200 MiB) or its ciphertext would blow far past this; the pipeline
    # needs a few 1 MiB stripes.
    growth = max(report["after_seal_rss"], report["after_combine_rss"]) - report["baseline_rss"]
    assert growth < 32 * MIB, report
