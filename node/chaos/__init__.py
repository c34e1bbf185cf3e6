"""Chaos testing on real node processes: a Jepsen-style nemesis over network namespaces.

Pure parts (no trio, no I/O): ``schedule`` (faults from a seed), ``history`` (the operation
log and its reader), ``checkers``. Drivers: ``netns`` (test hosts), ``cluster`` (node
processes and process faults), ``run`` (clients, nemesis, final state, verdict), ``plot``,
``cli`` (``enclave-swarm chaos``), ``scenarios`` (``make chaos``). docs/reliability.md.
"""
