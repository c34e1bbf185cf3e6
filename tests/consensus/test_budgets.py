"""The privacy-budget ledger (consensus/budgets.py): each rule as a scenario, then managers that
read and charge in any interleaving, fail over and retry, through the registry's wire form:
spent never passes the budget, no query is charged twice, the totals are the charges' sum."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import budgets as B
from consensus.budgets import ChargeBudget, SetBudget
from consensus.state import SwarmState, apply_entry, decode_state, encode_state
from consensus.tasks import TASK_REGISTRY
from node.manager_checks import verify_ed25519 as verify  # the node's verifier, as it checks grants

OWNER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
KEYS = {"owner": OWNER_KEY.public_key().public_bytes_raw(),
        "other": OTHER_KEY.public_key().public_bytes_raw()}


def run(state: SwarmState, cmd: Any) -> tuple[SwarmState, str]:
    """Apply through the wire form, as a replica does; check the ledger's invariants."""
    data = TASK_REGISTRY.encode(cmd)
    assert TASK_REGISTRY.decode(data) == cmd
    new, res = apply_entry(state, data, TASK_REGISTRY)
    assert B.check_ledger(new) == []
    assert decode_state(encode_state(new)) == new  # snapshots carry the ledger
    return new, "" if res.ok else res.error


def grant(dataset: str = "census", eps: float = 1.0, delta: float = 0.0, version: int = 0,
          key: Ed25519PrivateKey = OWNER_KEY, owner: str = "owner") -> SetBudget:
    e, d = int(eps / B.EPS_UNIT), int(delta / B.DELTA_UNIT)
    sig = key.sign(B.grant_payload(dataset, owner, e, d, version))
    return SetBudget(dataset, owner, e, d, version, sig)


def charge(s: SwarmState, query: str, eps: float, dataset: str = "census") -> ChargeBudget:
    rec = B.budget(s, dataset)
    spent = (rec["spent_eps"], rec["spent_delta"]) if rec else (0, 0)
    e, d = B.to_units(eps)
    return ChargeBudget(dataset, query, e, d, *spent)


def test_a_budget_is_opened_by_its_owner_and_spent_to_the_end_never_past_it():
    s, err = run(SwarmState(), grant(eps=1.0))
    assert err == "" and B.budget(s, "census")["owner"] == "owner"
    assert B.check_grant(grant(eps=1.0), KEYS.get, verify) is None
    for q in ("q1", "q2"):
        s, err = run(s, charge(s, q, 0.5))
        assert err == ""
    assert B.budget(s, "census")["spent_eps"] == 1_000_000 and B.charged(s, "census", "q1")
    s2, err = run(s, charge(s, "q3", 1e-6))
    assert "over budget" in err and s2 == s  # refused, nothing charged


@pytest.mark.parametrize(("cmd_of", "why"), [
    (lambda s: charge(s, "q1", 0.1, dataset="unknown"), "has no privacy budget"),
    (lambda s: ChargeBudget("census", "q9", 0, 0, 0, 0), "positive epsilon"),
    (lambda s: ChargeBudget("census", "q9", -5, 0, 0, 0), "positive epsilon"),
    (lambda s: ChargeBudget("census", "q9", 1, 0, 7, 0), "moved since they were read"),
    (lambda s: charge(s, "q0", 0.1), "already charged"),
    (lambda s: grant(eps=2.0, version=0), "signed against version 0"),
    (lambda s: grant(eps=2.0, version=1, key=OTHER_KEY, owner="other"), "another owner"),
    (lambda s: grant(eps=0.0001, version=1), "below what was spent"),
    (lambda s: grant(dataset="new", eps=1.0, version=3), "sign against version 0"),
    (lambda s: grant(dataset="new", eps=0.0), "budget outside"),
    (lambda s: SetBudget("new", "owner", 10, 0, 0, b"short"), "signature"),
    (lambda s: grant(dataset=""), "data set"),
])
def test_each_rejection_names_its_reason_and_changes_nothing(cmd_of, why):
    s, _ = run(SwarmState(), grant(eps=1.0))
    s, _ = run(s, charge(s, "q0", 0.25))
    new, err = run(s, cmd_of(s))
    assert why in err and new == s


def test_the_owner_raises_a_budget_against_the_current_version_and_a_replay_is_refused():
    s, _ = run(SwarmState(), grant(eps=1.0))
    raise_it = grant(eps=3.0, version=1)
    s, err = run(s, raise_it)
    assert err == "" and B.budget(s, "census")["eps"] == 3_000_000
    assert "version" in run(s, raise_it)[1]  # the same signed grant, replayed


def test_a_grant_with_another_signature_is_refused_by_the_check():
    forged = grant(eps=1000.0, key=OTHER_KEY)  # names "owner", signed by someone else
    assert B.check_grant(forged, KEYS.get, verify) == "the owner's signature does not verify"
    assert "names no key" in (B.check_grant(grant(owner="ghost"), KEYS.get, verify) or "")


def test_units_round_up_and_refuse_nonsense():
    assert B.to_units(1.0) == (1_000_000, 0)
    assert B.to_units(1.0000001) == (1_000_001, 0)  # never under-charge
    assert B.to_units(0.5, 1e-9) == (500_000, 1000)
    for eps, delta in ((0.0, 0.0), (-1.0, 0.0), (float("nan"), 0.0), (1.0, -1e-9),
                       (float("inf"), 0.0)):
        with pytest.raises(ValueError):
            B.to_units(eps, delta)


# Managers (a few, as after failovers) each read the ledger at some moment and later propose a
# charge from what they read; any interleaving, any retries of the same query.
_steps = st.lists(st.tuples(st.sampled_from(["read", "propose"]), st.integers(0, 2),
                            st.integers(0, 5), st.integers(1, 400_000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_steps, st.integers(1, 2_000_000))
def test_no_interleaving_of_managers_spends_past_the_budget_or_twice(steps, total):
    s, _ = run(SwarmState(), SetBudget("d", "owner", total, 0, 0, bytes(64)))
    seen: dict[int, tuple[int, int]] = {}
    accepted: list[tuple[str, int]] = []
    for op, mgr, q, eps in steps:
        if op == "read":
            rec = B.budget(s, "d")
            seen[mgr] = (rec["spent_eps"], rec["spent_delta"])
            continue
        spent = seen.get(mgr, (0, 0))
        new, err = run(s, ChargeBudget("d", f"q{q}", eps, 0, *spent))
        if not err:
            accepted.append((f"q{q}", eps))
        s = new
    rec = B.budget(s, "d")
    assert rec["spent_eps"] == sum(e for _, e in accepted) <= total
    assert len({q for q, _ in accepted}) == len(accepted)  # each query charged once
