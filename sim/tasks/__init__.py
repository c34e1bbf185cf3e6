"""The tasks scenario of the deterministic simulator (docs/simulator.md, "Tasks"; issue 11).

Modules: ``world`` (nodes of mixed capability and price, jobs, crashes and revocations
mid-job, the event loop), ``driver`` (the manager: one replicated log over the real
``consensus.tasks`` state machine, decisions by the real ``consensus.scheduler``),
``invariants`` (checked after every step), ``report`` (the JSON report and its summary),
``cli`` (``enclave-swarm sim --scenario tasks``).
"""

from sim.tasks.world import BUGS, SCENARIOS, TasksConfig, TasksWorld

__all__ = ["BUGS", "SCENARIOS", "TasksConfig", "TasksWorld"]
