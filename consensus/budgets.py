"""The privacy-budget ledger: how much differential privacy each data set may still spend.

Theory of operation
-------------------
A data set (a stored object id, or a name its owner chose) has a budget: a total epsilon and a
total delta that every private release computed from it may spend together. The ledger lives in
the replicated swarm state (``SwarmState.ext["budgets"]``, plain CBOR values like the task
state), so a manager that fails over hands its successor exactly what was spent.

- :class:`SetBudget` opens or changes a data set's budget. The first one names the owner; later
  ones must name the same owner. It carries the owner's Ed25519 signature over
  :func:`grant_payload` and the ledger version it was signed against (compare-and-set: a grant
  signed against an older version, i.e. replayed, is rejected). This module imports no crypto
  (like ``consensus/certificate.py``): the manager checks the signature before it proposes
  (:func:`check_grant` with the node's verifier), the state keeps it so anyone can audit it.
- :class:`ChargeBudget` spends. It names the spent totals the proposer read (compare-and-set):
  two managers across a failover that both read the same totals can never both commit, and the
  second one re-reads and sees the first's charge (a query is charged once: a second charge of
  the same query id is rejected, which the proposer takes as "already charged"). A charge that
  would take the spent totals past the budget is rejected: the query is refused before any data
  is read.
- Units are integers, so every replica computes the same thing: epsilon in micro-units
  (:data:`EPS_UNIT` = 1e-6) and delta in 1e-12 units (:data:`DELTA_UNIT`). A charge is the
  privacy loss OpenDP's own map reports for the query's measurement, rounded *up* to the unit
  (node/tasks/privacy.py); the ledger composes charges by adding them (basic sequential
  composition, the bound OpenDP's sequential compositor and privacy filter also use for these
  measures), never rounding down.

Rules
-----
- Spent never exceeds the budget, and never decreases; a budget is never lowered below what was
  spent. Every rejection names its reason.
- Bounded: :data:`MAX_DATASETS` data sets, :data:`KEEP_CHARGES` charges kept per data set (the
  totals count every charge ever made).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from consensus.state import MAX_ID_LEN, CommandRegistry, Rejected, SwarmState

SECTION = "budgets"
EPS_UNIT = 1e-6            # epsilon is stored in micro-units
DELTA_UNIT = 1e-12         # delta in 1e-12 units
MAX_EPSILON = 10**9        # 1,000 epsilon: a total no sane budget reaches
MAX_DELTA = 10**12         # delta 1.0
MAX_DATASETS = 4096
KEEP_CHARGES = 256
SIGNATURE_BYTES = 64
GRANT_DOMAIN = "enclave-swarm/privacy-budget/v1"
# How a charge's rejection starts, for a proposer that must tell them apart (node/tasks/budget.py).
MOVED = "the spent totals moved since they were read"
OVER_BUDGET = "over budget"


@dataclasses.dataclass(frozen=True)
class SetBudget:
    """Open or change ``dataset``'s budget to ``epsilon``/``delta`` (units above). ``version``
    is the ledger's version of the data set the owner signed against (0 for a new one)."""

    dataset: str
    owner: str
    epsilon: int
    delta: int
    version: int
    signature: bytes


@dataclasses.dataclass(frozen=True)
class ChargeBudget:
    """Spend ``epsilon``/``delta`` of ``dataset`` for query ``query`` (a job id), given the
    spent totals the proposer read (``spent_epsilon``/``spent_delta``)."""

    dataset: str
    query: str
    epsilon: int
    delta: int
    spent_epsilon: int
    spent_delta: int


def grant_payload(dataset: str, owner: str, epsilon: int, delta: int, version: int) -> bytes:
    """What the owner signs to set a budget (canonical CBOR with a domain tag)."""
    return cbor2.dumps([GRANT_DOMAIN, dataset, owner, epsilon, delta, version], canonical=True)


def check_grant(c: SetBudget, public_key_of: Callable[[str], bytes | None],
                verify: Callable[[bytes, bytes, bytes], bool]) -> str | None:
    """None when ``c`` carries its owner's good signature, else the reason."""
    key = public_key_of(c.owner)
    if key is None:
        return f"owner {c.owner[:64]!r} names no key"
    if len(c.signature) != SIGNATURE_BYTES or not verify(
            key, grant_payload(c.dataset, c.owner, c.epsilon, c.delta, c.version), c.signature):
        return "the owner's signature does not verify"
    return None


def to_units(epsilon: float, delta: float = 0.0) -> tuple[int, int]:
    """A privacy loss in ledger units, rounded up (never under-charge)."""
    if not (epsilon > 0 and math.isfinite(epsilon)) or not (delta >= 0 and math.isfinite(delta)):
        raise ValueError("epsilon must be positive and delta non-negative, both finite")
    return math.ceil(epsilon / EPS_UNIT - 1e-9), math.ceil(delta / DELTA_UNIT - 1e-9)


# --------------------------------------------------------------------------- state


def _all(s: SwarmState) -> Mapping[str, Any]:
    sec = s.ext.get(SECTION)
    return sec if isinstance(sec, Mapping) else {}


def _with(s: SwarmState, dataset: str, rec: Mapping[str, Any]) -> SwarmState:
    ext = dict(s.ext)
    ext[SECTION] = {**_all(s), dataset: rec}
    return dataclasses.replace(s, ext=ext)


def _id(v: str, what: str) -> None:
    if not v or len(v) > MAX_ID_LEN:
        raise Rejected(f"{what}: 1..{MAX_ID_LEN} characters")


def _set(s: SwarmState, c: SetBudget) -> SwarmState:
    _id(c.dataset, "data set")
    _id(c.owner, "owner")
    if not 0 < c.epsilon <= MAX_EPSILON or not 0 <= c.delta <= MAX_DELTA:
        raise Rejected(f"budget outside epsilon 1..{MAX_EPSILON}, delta 0..{MAX_DELTA} (units)")
    if len(c.signature) != SIGNATURE_BYTES:
        raise Rejected("a budget carries its owner's signature")
    held = _all(s).get(c.dataset)
    if held is None:
        if len(_all(s)) >= MAX_DATASETS:
            raise Rejected(f"{MAX_DATASETS} data sets in the ledger")
        if c.version != 0:
            raise Rejected(f"data set {c.dataset} has no budget yet: sign against version 0")
        rec: dict[str, Any] = {"owner": c.owner, "eps": c.epsilon, "delta": c.delta,
                               "spent_eps": 0, "spent_delta": 0, "version": 1, "charges": [],
                               "n": 0, "sig": c.signature}
        return _with(s, c.dataset, rec)
    if c.owner != held["owner"]:
        raise Rejected(f"data set {c.dataset} belongs to another owner")
    if c.version != held["version"]:
        raise Rejected(f"signed against version {c.version}, the ledger is at {held['version']}")
    if c.epsilon < held["spent_eps"] or c.delta < held["spent_delta"]:
        raise Rejected("a budget cannot be lowered below what was spent")
    return _with(s, c.dataset, {**held, "eps": c.epsilon, "delta": c.delta,
                                "version": held["version"] + 1, "sig": c.signature})


def _charge(s: SwarmState, c: ChargeBudget) -> SwarmState:
    _id(c.dataset, "data set")
    _id(c.query, "query")
    held = _all(s).get(c.dataset)
    if held is None:
        raise Rejected(f"data set {c.dataset} has no privacy budget")
    if not 0 < c.epsilon <= MAX_EPSILON or not 0 <= c.delta <= MAX_DELTA:
        raise Rejected("a charge spends a positive epsilon and a non-negative delta")
    if charge_of(s, c.dataset, c.query) is not None:
        raise Rejected(f"query {c.query} is already charged")
    if (c.spent_epsilon, c.spent_delta) != (held["spent_eps"], held["spent_delta"]):
        raise Rejected(f"{MOVED}: read again")
    eps, delta = held["spent_eps"] + c.epsilon, held["spent_delta"] + c.delta
    if eps > held["eps"] or delta > held["delta"]:
        raise Rejected(f"{OVER_BUDGET}: epsilon {eps * EPS_UNIT:.6g} of {held['eps'] * EPS_UNIT:.6g}, "
                       f"delta {delta * DELTA_UNIT:.3g} of {held['delta'] * DELTA_UNIT:.3g}")
    charges = [*held["charges"], [c.query, c.epsilon, c.delta]][-KEEP_CHARGES:]
    return _with(s, c.dataset, {**held, "spent_eps": eps, "spent_delta": delta,
                                "charges": charges, "n": held["n"] + 1})


BUDGET_COMMANDS: tuple[tuple[str, type, Any], ...] = (
    ("set-budget", SetBudget, _set),
    ("charge-budget", ChargeBudget, _charge),
)


def extend(registry: CommandRegistry) -> CommandRegistry:
    """``registry`` plus the budget commands."""
    return registry.extended_all(BUDGET_COMMANDS)


# --------------------------------------------------------------------------- readers


def budget(s: SwarmState, dataset: str) -> Mapping[str, Any] | None:
    """The ledger record of ``dataset`` (read-only plain values), or None."""
    return _all(s).get(dataset)


def datasets(s: SwarmState) -> list[str]:
    return sorted(_all(s))


def charge_of(s: SwarmState, dataset: str, query: str) -> int | None:
    """The epsilon (units) ``query`` was charged to ``dataset``, or None if it was not (among
    the last :data:`KEEP_CHARGES` charges)."""
    rec = budget(s, dataset)
    if rec is None:
        return None
    return next((e for q, e, _ in rec["charges"] if q == query), None)


def charged(s: SwarmState, dataset: str, query: str) -> bool:
    return charge_of(s, dataset, query) is not None


def check_ledger(s: SwarmState) -> list[str]:
    """Every violated invariant of the ledger (empty when sound)."""
    out = []
    for name, r in _all(s).items():
        if not 0 <= r["spent_eps"] <= r["eps"] or not 0 <= r["spent_delta"] <= r["delta"]:
            out.append(f"{name}: spent beyond the budget")
        kept = r["charges"]
        if len(kept) > KEEP_CHARGES or r["n"] < len(kept):
            out.append(f"{name}: charge history out of bounds")
        if r["n"] == len(kept) and (sum(e for _, e, _ in kept), sum(d for _, _, d in kept)) != (
                r["spent_eps"], r["spent_delta"]):
            out.append(f"{name}: the totals are not the sum of the charges")
    return out
