"""The manager council in the deterministic simulator (docs/simulator.md, docs/consensus.md).

Modules: ``world`` (the council world: production Raft, swarm state machine and manager
policy over :mod:`sim.net`, with crashes, torn writes, partitions, clock drift), ``driver``
(the simulated disk and the manager's duties, shared with ``sim/council/cluster.py``),
``invariants`` (Raft safety checks run on every event's outputs), ``report`` (one run's
report, and many runs' reports folded into one), ``runs`` (many seeded runs on processes).
"""

from sim.council.runs import run_many
from sim.council.world import PARTITION_SHAPES, SCENARIOS, CouncilConfig, CouncilWorld

__all__ = ["PARTITION_SHAPES", "SCENARIOS", "CouncilConfig", "CouncilWorld", "run_many"]
