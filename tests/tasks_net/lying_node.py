"""``python -m tests.tasks_net.lying_node run ...``: the real ``enclave-swarm`` CLI, in a process
whose workload engine lies (a compromised agent): after running a fragment it reports another
output (a flipped word count) with that output's hash, well signed, as such a node would. For
the process tests only (tests/tasks_net/test_integrity_processes.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import sys

from node.workload import engine as _engine

_real_run = _engine.WorkloadEngine.run


async def _lying_run(self, module, module_sha256, data, limits, grants, *args, **kwargs):  # type: ignore[no-untyped-def]
    outcome = await _real_run(self, module, module_sha256, data, limits, grants, *args, **kwargs)
    if not outcome.ok:
        return outcome
    forged = outcome.output + b' {"the": 1000000}'
    profile = dataclasses.replace(outcome.profile, output_sha256=hashlib.sha256(forged).digest())
    return dataclasses.replace(outcome, output=forged, profile=profile)


if __name__ == "__main__":
    _engine.WorkloadEngine.run = _lying_run  # type: ignore[method-assign]
    from node.cli import main

    sys.exit(main())
