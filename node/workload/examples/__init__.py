"""The example workloads: their built modules and the committed hashes they are checked against.

Sources (``*.c``, ``*.wat``) sit beside the modules; ``make workloads`` rebuilds every ``.wasm``
and rewrites ``SHA256SUMS``. The modules are committed, so running them needs no compiler.

* ``wordcount``: text in, ``{"word": count}`` (sorted, lower-cased ASCII alphanumerics) out,
  for the ``merge-counts`` aggregation.
* ``sum``: one number per line in, ``{"sum": S, "count": N}`` out (``sum``/``mean``).
* ``forever`` (never ends), ``hog`` (allocates without bound), ``flood`` (writes without end),
  ``noisy`` (1 MiB of stderr), ``trap`` (``unreachable``): the limits at work.
* ``slowcat`` (a run time chosen by the input's size, then the input back) and ``noop``
  (reads its input, writes nothing): the task flow's tests and benchmark.
* ``clock``, ``random``, ``open``: import a WASI function of a capability (clock, random,
  filesystem) that a job must grant, or that is never granted.
* ``slowcat``: burns 65,536 loop iterations per input byte, then echoes its input (tests kill
  agents while it runs).
* ``bytecount`` and ``u64sum``: a mapper (input length, 8-byte little-endian) and its reducer
  module (aggregation ``wasm``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def hashes() -> dict[str, bytes]:
    """Module name (without ``.wasm``) to its committed sha256, from ``SHA256SUMS``."""
    out: dict[str, bytes] = {}
    for line in (HERE / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.endswith(".wasm"):
            out[name.removesuffix(".wasm")] = bytes.fromhex(digest)
    return out


def load(name: str) -> tuple[bytes, bytes]:
    """The module ``name`` and its committed sha256. The bytes are not checked here: the
    engine refuses them if they differ. Raises KeyError for an unknown name."""
    expected = hashes()[name]
    return (HERE / f"{name}.wasm").read_bytes(), expected


def check() -> list[str]:
    """Names of the modules whose bytes differ from SHA256SUMS (empty when all match)."""
    return [name for name, digest in hashes().items()
            if hashlib.sha256((HERE / f"{name}.wasm").read_bytes()).digest() != digest]
