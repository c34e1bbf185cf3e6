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
- it runs **alone** (``SOLO``) when the node is trusted; otherwise it is replicated to the
  job's redundancy at once (``REPLICATED``) and the job's quorum decides it;
- a fragment run alone is **spot-checked** (``SPOT``: widened to the job's redundancy, its
  primary's result one vote among them) when a second draw falls below the job's spot-check
  rate. That draw is made *after* the primary's result is in, and is keyed on the manager's
  Ed25519 signature over :func:`spot_transcript` (job, submission number, fragment, attempt,
  node, the output hash the node returned), which the manager commits with the result
  (``FragmentResult.draw``). The node cannot compute it: it cannot tell, when it answers,
  whether its answer will be checked, so lying on the fragments it runs alone is caught at the
  job's rate. Ed25519 signatures are deterministic (RFC 8032), and council members check the
  committed one (``task_decision``, node/tasks/verify.py).

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
- Nothing the manager chooses enters the trust draw: not the log index, not a clock. The manager
  only chooses the node, and that choice is the scheduler's, verifiable (``check_decision``).
  The spot-check draw is its signature: an honest manager's is deterministic; a compromised
  manager could sign with another nonce (Ed25519 verifies those too) and so choose which
  solo results go unchecked, as it could already by other means. A verifiable random function
  (RFC 9381) would close that; none is in the libraries this project uses.
- Bounded: at most :data:`MAX_TRUST_NODES` counters (a reset deletes its entry; a node beyond
  the bound is not counted, so never trusted: the safe side), each at most :data:`CV_CAP`.

What it does not guarantee (docs/tasks.md, "Adaptive replication"): the trust draw is public,
so a node knows which of its fragments run alone, but not which of those will be checked. A
liar lying on a share ``p`` of its solo fragments goes unseen on each with probability
``1 - rate`` and is caught (its counter reset, the fragment re-run by a quorum) at the rate; a
result accepted alone and not checked is never re-checked.
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


DRAW_BYTES = 64             # an Ed25519 signature


def spot_transcript(job_id: str, seq: int, fragment: int, attempt: int, node: str,
                    output_hash: bytes) -> bytes:
    """What the manager signs to draw the spot-check of a fragment run alone."""
    return _SPOT_DOMAIN + b"\0" + cbor2.dumps([job_id, seq, fragment, attempt, node, output_hash],
                                               canonical=True)


def spot_checked(rate_ppm: int, signature: bytes) -> bool:
    """Whether a solo fragment whose result drew ``signature`` (the manager's, over
    :func:`spot_transcript`) is checked: probability ``rate_ppm / 10**6``."""
    if not 0 <= rate_ppm <= PPM:
        raise ValueError(f"spot-check rate {rate_ppm} ppm outside 0..{PPM}")
    return draw(_SPOT_DOMAIN, signature) * PPM < rate_ppm * _TWO64


def mode(cv: int, job_id: str, seq: int, fragment: int, attempt: int, node: str) -> str:
    """SOLO (a trusted node runs it once, spot-checked later) or REPLICATED (not trusted)."""
    return SOLO if trusted(cv, job_id, seq, fragment, attempt, node) else REPLICATED


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
