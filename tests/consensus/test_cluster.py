"""Randomized cluster runs: safety after every event, liveness after healing,
linearizability of the client history. ``SEED=`` in a failure replays the run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sim.council.cluster import Cluster, SimConfig
from tests.consensus.linearizability import HistOp, check


def config_for(seed: int, chaos_ms: int) -> SimConfig:
    # Vary the shape of the run with the seed: revocations, no pre-vote/check-quorum,
    # tighter flow control, lossier networks.
    return SimConfig(
        chaos_ms=chaos_ms,
        revoke_at_ms=400 + seed % 7 * 100 if seed % 3 == 0 else None,
        term_limit_ms=300 + seed % 5 * 50 if seed % 4 == 2 else None,
        pre_vote=seed % 5 != 1,
        check_quorum=seed % 5 != 1,
        max_inflight_msgs=1 + seed % 4,
        loss=(0.02, 0.05, 0.15)[seed % 3],
    )


def run_seed(seed: int, chaos_ms: int) -> Cluster:
    c = Cluster(seed, config_for(seed, chaos_ms))
    c.run()
    history = [HistOp(op.kind, op.key, op.value, op.call_ms,
                      math.inf if op.return_ms is None else op.return_ms)
               for op in c.history
               if op.kind == "put" or op.return_ms is not None]  # unanswered reads say nothing
    verdict = check(history)
    assert verdict.ok, f"SEED={seed}: history not linearizable on {verdict.key}: {verdict.detail}"
    return c


BATCH = 10


@pytest.mark.parametrize("batch", range(20))
def test_random_clusters(batch: int) -> None:
    for seed in range(batch * BATCH, (batch + 1) * BATCH):
        run_seed(seed, chaos_ms=1500)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(20, 120))
def test_random_clusters_long(batch: int) -> None:
    for seed in range(batch * BATCH, (batch + 1) * BATCH):
        run_seed(seed, chaos_ms=4000)


def test_random_clusters_on_the_real_store(tmp_path: Path) -> None:
    """Same runs, but every node persists through node/raftstore.py and every restart
    replays its WAL and snapshot from the files."""
    restarts = 0
    for seed in (3, 11, 12, 13):
        c = Cluster(seed, config_for(seed, 1500), store_dir=tmp_path / str(seed))
        try:
            c.run()
        finally:
            c.close()
        restarts += sum(n.incarnation for n in c.nodes.values())
    assert restarts > 0


def test_same_seed_same_run() -> None:
    a, b = Cluster(7, config_for(7, 800)), Cluster(7, config_for(7, 800))
    a.run()
    b.run()
    assert a.elections == b.elections and a.events == b.events
    assert [(o.call_ms, o.return_ms, o.value) for o in a.history] == \
        [(o.call_ms, o.return_ms, o.value) for o in b.history]


def test_runs_do_real_work() -> None:
    """Guard against a vacuous harness: clients complete operations, leaders change,
    snapshots and revocations happen."""
    completed = elections = removed = snapshots = transfers = 0
    for seed in (0, 3, 6, 9):
        c = run_seed(seed, chaos_ms=1500)
        completed += sum(op.return_ms is not None for op in c.history)
        elections += len(c.elections)
        removed += len(c.removed_committed)
        snapshots += sum(n.rn.raft.log.offset > 0 for n in c.nodes.values())
        transfers += c.transfers
    assert completed > 50 and elections > 4 and removed >= 1 and snapshots >= 4
    assert transfers >= 1


@pytest.mark.slow
def test_random_clusters_on_the_real_store_long(tmp_path: Path) -> None:
    for seed in range(2000, 2060):
        c = Cluster(seed, config_for(seed, 3000), store_dir=tmp_path / str(seed))
        try:
            c.run()
        finally:
            c.close()
