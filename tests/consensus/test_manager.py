"""Term-limited manager policy and signed decisions."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from consensus.manager import (
    ManagerPolicy,
    check_decision,
    decide,
    decision_payload,
    next_candidate,
    sign_decision,
)

POLICY = ManagerPolicy(term_limit_ticks=100, min_score=500)
SCORES = {"a": 900, "b": 800, "c": 850, "d": 400}


def test_stays_within_term() -> None:
    d = decide(POLICY, self_id="a", now_tick=150, term_start_tick=100, scores=SCORES, revoked=set())
    assert d.action == "stay"


def test_hands_over_at_term_limit_to_best_other() -> None:
    d = decide(POLICY, self_id="a", now_tick=200, term_start_tick=100, scores=SCORES, revoked=set())
    assert (d.action, d.to) == ("handover", "c")


def test_steps_down_at_once_when_revoked_or_below_policy() -> None:
    d = decide(POLICY, self_id="a", now_tick=101, term_start_tick=100, scores=SCORES, revoked={"a"})
    assert (d.action, d.to, d.reason) == ("step-down", "c", "revoked")
    d = decide(POLICY, self_id="d", now_tick=101, term_start_tick=100, scores=SCORES, revoked=set())
    assert (d.action, d.to) == ("step-down", "a")


def test_no_eligible_successor() -> None:
    d = decide(POLICY, self_id="a", now_tick=500, term_start_tick=0, scores={"a": 900, "d": 10},
               revoked=set())
    assert d.action == "stay" and "no eligible" in d.reason
    assert next_candidate("a", SCORES, {"c", "b"}, 500) is None
    assert next_candidate("a", {"a": 1, "x": 700, "w": 700}, set(), 500) == "w"  # tie: id


def _keys() -> tuple[dict[str, bytes], object, object]:
    keys = {"a": b"ka", "b": b"kb"}

    def signer(name: str):
        return lambda msg: hmac.new(keys[name], msg, hashlib.sha256).digest()

    def verify(key: bytes, msg: bytes, sig: bytes) -> bool:
        return hmac.compare_digest(hmac.new(key, msg, hashlib.sha256).digest(), sig)

    return keys, signer, verify


def test_signed_decisions() -> None:
    keys, signer, verify = _keys()
    managers = {7: "a", 8: "b"}
    cmd = b"revoke node-3"
    d = sign_decision(signer("a"), "a", 7, 42, cmd)  # type: ignore[operator]
    ok = dict(manager_of_term=managers.get, public_key_of=keys.get, verify=verify)
    assert check_decision(d, entry_term=7, entry_data=cmd, **ok) is None  # type: ignore[arg-type]
    assert check_decision(d, entry_term=8, entry_data=cmd, **ok) == "entry is not of the decision's term"  # type: ignore[arg-type]
    assert check_decision(d, entry_term=7, entry_data=b"other", **ok) == "digest does not match the entry"  # type: ignore[arg-type]
    forged = sign_decision(signer("b"), "b", 7, 42, cmd)  # type: ignore[operator]
    why = check_decision(forged, entry_term=7, entry_data=cmd, **ok)  # type: ignore[arg-type]
    assert why == "signer is not the manager of that term"
    import dataclasses

    tampered = dataclasses.replace(d, index=43)
    assert check_decision(tampered, entry_term=7, entry_data=cmd, **ok) == "bad signature"  # type: ignore[arg-type]
    assert check_decision(d, entry_term=None, entry_data=None, **ok) == "entry unknown"  # type: ignore[arg-type]


def test_payload_is_domain_separated_and_fixed_layout() -> None:
    p = decision_payload(1, 2, b"\x00" * 32)
    assert p.startswith(b"enclave-swarm/manager-decision/v1\x00") and len(p) == 34 + 16 + 32
    with pytest.raises(ValueError):
        decision_payload(1, 0, b"\x00" * 32)
