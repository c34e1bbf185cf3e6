"""The simulator's event and action codes, shared by the world (which schedules and runs them)
and the scenarios (which plant them). Their own module so that neither imports the other at
run time."""

from __future__ import annotations

from typing import Final

EV_DELIVER: Final = 0
EV_TICK: Final = 1
EV_ACTION: Final = 2

# Actions (EV_ACTION's ``a``).
A_PUBLISH: Final = 0  # b: kind (0 score, 1 revocation about node c)
A_CRASH: Final = 1  # b: node
A_RESTART: Final = 2  # b: node
A_PAUSE: Final = 3  # b: node, c: duration
A_LEAVE: Final = 4  # b: node
A_PARTITION: Final = 5  # b: shape name
A_HEAL: Final = 6
A_SLOW: Final = 7  # b: node, c: max extra inbound delay
A_INJECT: Final = 8  # b: 0 forged signature, 1 unattested issuer, 2 revoked issuer
A_SAMPLE: Final = 9  # periodic sampler (progress, convergence)
A_CHURN: Final = 10  # one churn step (b: None, or the crash scenario's victim to check on)
A_WORKLOAD: Final = 11  # recurring score update
A_REATTEST: Final = 12  # b: node; the reattest workload's round of one node (SimConfig.workload)
A_SCORE: Final = 13  # b: issuer, c: subject; one record of a reattest round
