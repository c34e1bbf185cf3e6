"""Same seed + code gives the same trace digest; a different seed gives a different one, also
across processes with different hash randomisation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sim.world import SimConfig, World

CFG = dict(nodes=30, duration_s=10.0, liveness_deadline_s=20.0)


@pytest.mark.parametrize("scenario", ["steady", "churn", "lossy"])
def test_same_seed_same_digest(scenario):
    a = World(SimConfig(seed=11, scenario=scenario, **CFG)).run()
    b = World(SimConfig(seed=11, scenario=scenario, **CFG)).run()
    assert a["trace_digest"] == b["trace_digest"]
    strip = ("wall_time_s", "speedup_x", "cpu_time_s", "speedup_cpu_x", "setup_s", "peak_rss_mib")
    assert {k: v for k, v in a.items() if k not in strip} == \
        {k: v for k, v in b.items() if k not in strip}


def test_different_seed_different_digest():
    a = World(SimConfig(seed=11, **CFG)).run()
    b = World(SimConfig(seed=12, **CFG)).run()
    assert a["trace_digest"] != b["trace_digest"]


def _digest_in_subprocess(hashseed: str) -> str:
    code = ("from sim.world import World, SimConfig;"
            "print(World(SimConfig(seed=5, scenario='churn', nodes=20, duration_s=8.0,"
            " liveness_deadline_s=10.0)).run()['trace_digest'])")
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    return out.stdout.strip()


def test_digest_does_not_depend_on_hash_randomisation():
    assert _digest_in_subprocess("1") == _digest_in_subprocess("2")
