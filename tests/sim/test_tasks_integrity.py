"""The tasks scenario with lying and slow nodes (issue 13): liars outvoted, flagged and revoked
through the manager's one score rule (consensus.integrity.review_member), honest nodes kept,
no wrong result while an honest quorum exists, the same report from the same seed, and a
planted bug in the manager's aggregation caught by the checker."""

from __future__ import annotations

from typing import Any

import pytest

from consensus import integrity
from consensus.state import REVOKED, Revoke
from sim.tasks import TasksConfig, TasksWorld

# 3 liars among 30 nodes, each lying on half its runs; r = 3, q = 2; no injected faults, so
# every revocation is the score rule's.
LIARS = dict(nodes=30, jobs=40, redundancy=3, quorum=2, liar_fraction=0.1, lie_rate=0.5,
             crashes=0, revocations=0, submit_window_s=400.0)
STRIP = ("wall_time_s", "speedup_x")


@pytest.fixture(scope="module")
def liars() -> tuple[TasksWorld, dict[str, Any]]:
    w = TasksWorld(TasksConfig(seed=1, **LIARS))
    return w, w.run()


def test_liars_are_revoked_and_honest_nodes_are_not(liars):
    w, r = liars
    g = r["integrity"]
    assert r["invariants"]["violations"] == [] and r["liveness"]["converged"]
    assert g["liars"] == 3 and g["detected_liars"] == 3 and g["time_to_revoke_s"]["samples"] == 3
    assert 0 < g["time_to_revoke_s"]["median"] <= g["time_to_revoke_s"]["max"]
    assert g["honest_revoked"] == 0 and g["slow_revoked"] == 0
    assert g["findings"]["minority"] == g["liar_findings"] > 0
    s = w.manager.state
    assert sorted(n for n, m in s.members.items() if m.status == REVOKED) == sorted(w.liars)
    # each revocation is the committed Revoke the shared rule wrote, naming the findings
    revokes = [e.command for e in w.manager.log if isinstance(e.command, Revoke) and e.ok]
    assert sorted(c.node_id for c in revokes) == sorted(w.liars)
    assert all("below policy 600; integrity: penalty" in c.reason for c in revokes)
    for c in revokes:
        before = next(w.manager.states[e.index - 1] for e in w.manager.log if e.command is c)
        assert integrity.review_member(before, c.node_id, w.by_id[c.node_id].attestation, 600) == c


def test_no_wrong_result_while_an_honest_quorum_exists(liars):
    w, r = liars
    g = r["integrity"]
    assert g["lies_accepted"] > 0 and g["wrong_results_delivered"] == 0
    assert all(w.delivered[j] == w.truth[j] for j in w.delivered)
    assert r["invariants"]["checked"] > 10_000


def test_same_seed_same_integrity_report(liars):
    _, a = liars
    b = TasksWorld(TasksConfig(seed=1, **LIARS)).run()
    assert {k: v for k, v in a.items() if k not in STRIP} == {k: v for k, v in b.items() if k not in STRIP}


def test_checker_catches_a_manager_that_delivers_an_outvoted_output():
    r = TasksWorld(TasksConfig(seed=1, bug="first-replica", **LIARS)).run()
    v = r["invariants"]["violations"]
    assert any("not the digest of the agreed outputs" in x for x in v), v[:3]
    assert r["integrity"]["wrong_results_delivered"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_more_seeds_with_faults_keep_the_invariants(seed):
    r = TasksWorld(TasksConfig(seed=seed, **{**LIARS, "crashes": 2, "revocations": 1})).run()
    assert r["invariants"]["violations"] == [] and r["liveness"]["converged"]
    assert r["integrity"]["detected_liars"] >= 1
