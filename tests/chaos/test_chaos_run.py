"""Whole chaos runs on node processes in network namespaces (root): a short seeded run passes
every checker, and the checkers catch the planted bug (a manager that applies entries before
they commit, ENCLAVE_SWARM_TEST_PLANT). Slow: each run is 1-2 minutes of five processes."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest

from node.chaos.netns import unavailable_reason
from node.chaos.run import ChaosRun, RunConfig
from node.chaos.schedule import Fault, ScheduleConfig

pytestmark = [
    pytest.mark.process,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

SHORT = ScheduleConfig(warmup_s=8.0, fault_s=(8.0, 10.0), calm_s=(6.0, 8.0), final_calm_s=15.0)


def checks(verdict):
    return {c["name"]: c for c in verdict["checks"]}


def test_short_seeded_run_passes_every_checker(tmp_path):
    cfg = RunConfig(nodes=5, seed=3, duration_s=95.0, faults=("partition", "kill", "pause", "attest"),
                    schedule=SHORT, clients=2, plot=True)
    run = ChaosRun(cfg, tmp_path / "out")
    assert [f.kind for f in run.schedule][:4] == ["partition", "kill", "pause", "attest"]
    verdict = run.run()
    by = checks(verdict)
    assert verdict["ok"], json.dumps(verdict["checks"], indent=1)
    assert by["revocation"]["figures"]["injected"] is True
    assert by["managers"]["figures"]["terms"] >= 2  # the manager was hit: a new term at least
    assert verdict["operations"]["put"].get("ok", 0) > 0 and by["puts"]["figures"]["acknowledged"] > 0
    for name in ("history.jsonl", "schedule.json", "verdict.json", "timeline.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


class ProposingWhileIsolated(ChaosRun):
    """Once the manager is cut off, ask it for a few harmless commands (``check-perf``: score
    records through the council, as ``etcdctl check perf``), so that it surely proposes while
    isolated: whether it would by itself depends on timing (once it did, once it did not)."""

    def _start_fault(self, kind, p):
        out = super()._start_fault(kind, p)
        i = out.get("target_index")
        if i is not None:
            threading.Thread(target=self._propose, args=(i,), daemon=True).start()
        return out

    def _propose(self, i):
        with contextlib.suppress(Exception):  # it cannot commit: the reply is a timeout
            self.cluster.ctl(i, {"cmd": "check-perf", "n": 5, "window": 5, "timeout_s": 8.0}, timeout_s=15.0)


def test_checkers_catch_the_planted_apply_before_commit_bug(tmp_path):
    """The manager is isolated; with the planted bug it applies what it proposes alone, which
    never commits: after the heal its state differs from everyone's at the same index."""
    # (asked to propose while cut off: ProposingWhileIsolated)
    isolate = Fault("partition", 8.0, 20.0, {"shape": "isolate-manager", "groups": [], "target": "manager"})
    cfg = RunConfig(nodes=5, seed=1, duration_s=45.0, faults=("partition",), clients=2, plot=False,
                    faults_override=(isolate,), recovery_bound_s=30.0,
                    env={"ENCLAVE_SWARM_TEST_PLANT": "apply-before-commit"})
    verdict = ProposingWhileIsolated(cfg, tmp_path / "out").run()
    assert verdict["planted"] == "apply-before-commit"
    assert not verdict["ok"]
    assert not checks(verdict)["state-digest"]["ok"], json.dumps(verdict["checks"], indent=1)
