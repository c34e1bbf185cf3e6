"""The measurement of the installed agent: what a TEE launch digest would cover.

On real hardware the launch measurement (SNP MEASUREMENT, TDX MRTD, SGX MRENCLAVE) is taken by
the platform over the guest image. The simulated TEE stands in for that with a SHA-384 over the
agent's own Python sources (every ``.py`` file of the ``node``, ``overlay``, ``consensus`` and
``sim`` packages, in sorted path order, each prefixed by its relative path and length), so two
nodes running the same code report the same measurement and any code change shows.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path

PACKAGES = ("node", "overlay", "consensus", "sim")


@functools.cache
def agent_measurement(build_tag: str = "") -> bytes:
    """SHA-384 over the installed agent sources (48 bytes).

    Args:
        build_tag: mixed into the digest; a non-empty tag models a *different build* of the
            agent (used by tests and demos to show a node falling off the allow-list).
    """
    h = hashlib.sha384(b"enclave-swarm agent measurement v1\0")
    for pkg in PACKAGES:
        root = Path(importlib.import_module(pkg).__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            rel = f"{pkg}/{path.relative_to(root).as_posix()}".encode()
            data = path.read_bytes()
            h.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big"))
            h.update(data)
    if build_tag:
        h.update(b"\0build-tag\0" + build_tag.encode())
    return h.digest()
