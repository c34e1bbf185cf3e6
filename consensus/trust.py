"""Adaptive replication, as BOINC does it: which fragments a trusted node runs alone.

Theory of operation
-------------------
Every node has a count ``CV`` of its consecutive valid results, kept in the replicated task
state (``consensus/tasks.py`` stores the map; this module holds the rules, pure). A fragment of
an adaptive job is first placed once, on one node (its *primary*). When the state machine
applies that assignment it decides, from committed data only, whether the fragment runs alone:

- the node is **trusted** for this fragment when ``CV >= CV_MIN`` (10) and a draw ``u`` in
  [0, 1) keyed on (job id, the job's submission number, fragment, attempt, node) is at least
  ``1 / CV``: probability ``1 - 1/CV`` (BOINC: "trusted with probability 1 - 1/CV, never below
  CV = 10");
- the fragment is **spot-checked** when a second draw, keyed on (job id, submission number,
  fragment, attempt), falls below the job's spot-check rate;
- it runs **alone** (``SOLO``) when the node is trusted and the fragment is not spot-checked;
  otherwise it is replicated to the job's redundancy (``SPOT`` when a trusted node is checked,
  ``REPLICATED`` when the node is not trusted), and the job's quorum decides it as for any
  replicated fragment.

The counters move when a job's verdicts are committed (``job-done``): a done replica that voted
for its fragment's agreed output, in a fragment that was replicated, is *valid*; a done replica
outside the agreed output (a finding), or a failed replica of a fragment that agreed, is
*invalid*. Per node and per job: any invalid result resets ``CV`` to 0, otherwise ``CV`` grows
by the valid ones. A fragment run alone teaches nothing (its result was compared with none):
unlike BOINC, whose validator counts an unreplicated result as valid, only checked results earn
trust here.

Rules
-----
- Integers only: a draw is the first 64 bits of a SHA-256; ``u >= 1/CV`` is
  ``u64 * CV >= 2**64`` and ``u < rate`` is ``u64 * 10**6 < rate_ppm * 2**64``. Every member
  reaches the same decision on every machine.
- Nothing the manager chooses enters a draw: not the log index, not a clock. The manager only
  chooses the node, and that choice is the scheduler's, verifiable (``check_decision``).
- Bounded: at most :data:`MAX_TRUST_NODES` counters (a reset deletes its entry; a node beyond
  the bound is not counted, so never trusted: the safe side), each at most :data:`CV_CAP`.

What it does not guarantee (docs/tasks.md, "Adaptive replication"): the draws are public, so a
node that reads the committed state knows which of its fragments run alone. Adaptive mode
catches nodes that fail or lie without that calculation (BOINC's threat model) and bounds what
the others gain: a result accepted alone is never re-checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import cbor2

CV_MIN = 10                 # BOINC: never trusted below ten consecutive valid results
CV_CAP = 1_000_000          # a counter stops growing here (trust probability 0.999999)
MAX_TRUST_NODES = 4096      # as consensus.tasks.MAX_INTEGRITY_NODES
PPM = 1_000_000             # rates are integers in parts per million
SOLO, SPOT, REPLICATED = "solo", "spot", "replicated"
MODES = (SOLO, SPOT, REPLICATED)
_TWO64 = 1 << 64
_TRUST_DOMAIN = b"enclave-swarm/trust-draw/v1"
_SPOT_DOMAIN = b"enclave-swarm/spot-check-draw/v1"


def draw(domain: bytes, *key: object) -> int:
    """A 64-bit number, uniform over [0, 2**64), from ``key`` (canonical CBOR, SHA-256)."""
    digest = hashlib.sha256(domain + b"\0" + cbor2.dumps(list(key), canonical=True)).digest()
    return int.from_bytes(digest[:8], "big")


def trusted(cv: int, job_id: str, seq: int, fragment: int, attempt: int, node: str) -> bool:
    """Whether ``node``, with ``cv`` consecutive valid results, is trusted with this fragment:
    ``cv >= CV_MIN`` and a draw in [0, 1) at least ``1/cv`` (probability ``1 - 1/cv``)."""
    if cv < CV_MIN:
        return False
    return draw(_TRUST_DOMAIN, job_id, seq, fragment, attempt, node) * cv >= _TWO64


def spot_checked(rate_ppm: int, job_id: str, seq: int, fragment: int, attempt: int) -> bool:
    """Whether this fragment is replicated anyway (probability ``rate_ppm / 10**6``)."""
    if not 0 <= rate_ppm <= PPM:
        raise ValueError(f"spot-check rate {rate_ppm} ppm outside 0..{PPM}")
    return draw(_SPOT_DOMAIN, job_id, seq, fragment, attempt) * PPM < rate_ppm * _TWO64


def mode(cv: int, rate_ppm: int, job_id: str, seq: int, fragment: int, attempt: int,
         node: str) -> str:
    """SOLO (run once), SPOT (a trusted node, checked) or REPLICATED (not trusted)."""
    if not trusted(cv, job_id, seq, fragment, attempt, node):
        return REPLICATED
    return SPOT if spot_checked(rate_ppm, job_id, seq, fragment, attempt) else SOLO


def update(counters: Mapping[str, int], valid: Iterable[str], invalid: Iterable[str]) -> dict[str, int]:
    """The counters after one job's verdicts: ``valid`` lists a node once per valid result,
    ``invalid`` once per invalid one. A node with any invalid result is reset (its entry
    removed); the others grow by their valid results, capped at :data:`CV_CAP`; a node not yet
    counted is added only while fewer than :data:`MAX_TRUST_NODES` are."""
    out = dict(counters)
    bad = set(invalid)
    gained: dict[str, int] = {}
    for node in valid:
        if node not in bad:
            gained[node] = gained.get(node, 0) + 1
    for node in sorted(bad):
        out.pop(node, None)
    for node in sorted(gained):
        if node in out or len(out) < MAX_TRUST_NODES:
            out[node] = min(CV_CAP, out.get(node, 0) + gained[node])
    return out


def rate_ppm(rate: float | str) -> int:
    """A spot-check rate in [0, 1] (a number or a decimal string, at most six decimal places)
    in parts per million. Raises ValueError naming what is wrong."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(str(rate))
    except InvalidOperation:
        raise ValueError(f"{rate!r} is not a number") from None
    if not d.is_finite() or not 0 <= d <= 1:
        raise ValueError(f"{rate} outside 0..1")
    ppm = d * PPM
    if ppm != ppm.to_integral_value():
        raise ValueError(f"{rate}: at most six decimal places")
    return int(ppm)
