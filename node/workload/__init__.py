"""The agent's workload engine: WASI preview 1 modules run per fragment under limits.

Public API (the task driver's entry points)::

    async with WorkloadEngine(EngineConfig(slots=2)) as engine:
        outcome = await engine.run(module_bytes, module_sha256, fragment_bytes, Limits(...),
                                   Grants(clock=False, random=False))
        if outcome.ok: outcome.output, outcome.profile  # fuel, memory, wall time, hashes
        else: outcome.error (ErrorKind), outcome.message
    payload = result_digest_payload(job_id, index, module_sha256,
                                    outcome.profile.input_sha256, outcome.profile.output_sha256)

See docs/tasks.md, "Workload engine".
"""

from node.workload.engine import (
    RESULT_DOMAIN,
    EngineConfig,
    EngineStatistics,
    Outcome,
    Profile,
    WorkloadEngine,
    result_digest_payload,
)
from node.workload.limits import Capability, ErrorKind, Grants, Limits

__all__ = [
    "RESULT_DOMAIN",
    "Capability",
    "EngineConfig",
    "EngineStatistics",
    "ErrorKind",
    "Grants",
    "Limits",
    "Outcome",
    "Profile",
    "WorkloadEngine",
    "result_digest_payload",
]
