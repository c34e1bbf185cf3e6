"""Many seeded runs of the council world, on one or more processes, folded into one report
(``report.aggregate``). Its own module so that the world and its report do not import each
other."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from sim.council.report import aggregate
from sim.council.world import CouncilConfig, CouncilWorld


def run_one(cfg: CouncilConfig) -> dict[str, Any]:
    """One seeded run (a top-level function, so worker processes can run it)."""
    return CouncilWorld(cfg).run()


def run_many(cfg: CouncilConfig, runs: int, *, jobs: int = 1,
             progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """``runs`` seeded runs (seeds ``cfg.seed + k``) on ``jobs`` processes, aggregated.
    Results are folded in seed order, so the report does not depend on ``jobs``."""
    if runs < 1 or jobs < 1:
        raise ValueError("runs and jobs must be >= 1")
    base = dataclasses.replace(cfg, progress=None)
    cfgs = (dataclasses.replace(base, seed=cfg.seed + k) for k in range(runs))
    wall0 = time.perf_counter()
    reports: list[dict[str, Any]] = []
    if jobs == 1:
        for r in map(run_one, cfgs):
            reports.append(r)
            if progress is not None:
                progress(len(reports), runs)
    else:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            for r in pool.map(run_one, cfgs, chunksize=8):
                reports.append(r)
                if progress is not None:
                    progress(len(reports), runs)
    return aggregate(cfg, reports, time.perf_counter() - wall0)
