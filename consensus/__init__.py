"""Rotating elected manager + replicated swarm state, as pure state machines.

- :mod:`consensus.raft` -- Raft (``RawNode``: step/tick/propose/ready/advance); read its
  docstring for the caller's duties.
- :mod:`consensus.messages` -- Raft records and messages (``ALL_MESSAGES``/``WIRE_NAMES`` for
  registration with the wire codec at the edge).
- :mod:`consensus.quorum` -- vote and commit arithmetic.
- :mod:`consensus.log` -- the in-memory log.
- :mod:`consensus.state` -- the swarm state machine and its command registry.
- :mod:`consensus.manager` -- term-limited manager policy and signed decisions.

This package imports nothing from ``node/``, ``overlay/`` or ``sim/``; it reads no clock and
uses no global random generator.
"""

from consensus.raft import Config, Persisted, ProposalDropped, RawNode, Ready, SoftState

__all__ = ["Config", "Persisted", "ProposalDropped", "RawNode", "Ready", "SoftState"]
