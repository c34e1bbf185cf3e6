"""Helpers to build real in-process nodes on loopback for integration tests.

They live in node/testing.py (shared with the benchmarks, which must not import tests/); its
module docstring has the table of the intervals these tests run with and why.
"""

from __future__ import annotations

from node.testing import (
    crash_in_process,
    federation,
    fully_attested,
    local_config,
    make_agent,
    run_in_process,
    wait_until,
)

__all__ = [
    "crash_in_process",
    "federation",
    "fully_attested",
    "local_config",
    "make_agent",
    "run_in_process",
    "wait_until",
]
