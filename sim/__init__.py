"""Deterministic discrete-event simulation of the swarm (docs/simulator.md).

Modules: ``world`` (event loop, nodes, metrics), ``net`` (links, faults, partitions),
``scenarios`` (fault schedules), ``invariants`` (safety and liveness checks), ``report``
(JSON report and plot), ``sizes`` (cached wire sizes), ``cli`` (``enclave-swarm sim``).
Never imports trio or libp2p (DESIGN.md rule 3).
"""
