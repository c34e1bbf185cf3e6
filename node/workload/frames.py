"""Framing between the engine and its worker processes: a 4-byte big-endian length, then CBOR.

Shared by ``engine.py`` and ``worker.py`` (which must not import each other: the worker runs as
``python -m node.workload.worker``)."""

from __future__ import annotations

import struct
from typing import Any

import cbor2

MAX_FRAME = 1024**3
TEST_HOOKS_ENV = "ENCLAVE_SWARM_WORKLOAD_TEST_HOOKS"
PARENT_ENV = "ENCLAVE_SWARM_WORKLOAD_PARENT"  # the engine's pid: the worker dies with it
DIR_ENV = "ENCLAVE_SWARM_WORKLOAD_DIR"  # the engine's fragment directory, removed if it dies
LEN = struct.Struct(">I")


def encode_frame(body: dict[str, Any]) -> bytes:
    """One frame; raises ValueError above ``MAX_FRAME``."""
    data = cbor2.dumps(body)
    if len(data) > MAX_FRAME:
        raise ValueError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return LEN.pack(len(data)) + data
