"""The peer table: quarantine rules, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.peers import PeerTable


def ok(t: PeerTable, pid: str, now: float, accepted: bool = True) -> bool:
    return t.on_attest_result(pid, accepted=accepted, reason="ok" if accepted else "bad", now=now,
                              score=90 if accepted else 0, tee="sim", measurement=None,
                              record_expires_at=now + 10)


def test_new_connection_is_quarantined_until_attested():
    t = PeerTable()
    t.on_connected("a", [], 0)
    assert not t.is_attested("a")
    assert ok(t, "a", 1)
    assert t.is_attested("a")


def test_failure_quarantines_at_once_and_reconnect_starts_over():
    t = PeerTable()
    t.on_connected("a", [], 0)
    ok(t, "a", 1)
    assert ok(t, "a", 2, accepted=False)
    assert not t.is_attested("a")
    ok(t, "a", 3)
    t.on_disconnected("a", 4)
    t.on_connected("a", [], 5)
    assert not t.is_attested("a")


def test_missed_reattestations_quarantine_after_max():
    t = PeerTable()
    t.on_connected("a", [], 0)
    ok(t, "a", 1)
    assert not t.on_attest_missed("a", "timeout", 2, max_missed=2, penalty=15)
    assert t.is_attested("a") and t.get("a").score == 75
    assert t.on_attest_missed("a", "timeout", 3, max_missed=2, penalty=15)
    assert not t.is_attested("a")


def test_expired_record_quarantines():
    t = PeerTable()
    t.on_connected("a", [], 0)
    ok(t, "a", 1)
    assert t.expire_records(5) == []
    assert t.expire_records(12) == ["a"]
    assert not t.is_attested("a")


def test_deadline_and_due_lists():
    t = PeerTable()
    t.on_connected("a", [], 0)
    assert [p.peer_id for p in t.overdue_unattested(11, 10)] == ["a"]
    assert [p.peer_id for p in t.due_for_attestation(0, 5)] == ["a"]
    t.on_attest_started("a", 0)
    assert t.due_for_attestation(1, 5) == []


def test_bounded_and_evicts_disconnected_first():
    t = PeerTable(max_entries=2)
    t.on_connected("a", [], 0)
    t.on_connected("b", [], 0)
    t.on_disconnected("a", 1)
    t.on_connected("c", [], 2)
    assert t.get("a") is None and len(t) == 2
    with pytest.raises(OverflowError):
        t.on_connected("d", [], 3)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(
    ["conn", "disc", "ok", "bad", "miss", "bye"])), max_size=60))
def test_attested_implies_connected_and_success(events):
    t = PeerTable()
    for now, (pid, ev) in enumerate(events):
        if ev == "conn":
            t.on_connected(pid, [], now)
        elif ev == "disc":
            t.on_disconnected(pid, now)
        elif ev == "ok":
            ok(t, pid, now)
        elif ev == "bad":
            ok(t, pid, now, accepted=False)
        elif ev == "miss":
            t.on_attest_missed(pid, "x", now, max_missed=2, penalty=15)
        else:
            t.on_goodbye(pid)
        for p in t.all():
            if t.is_attested(p.peer_id):
                assert p.connected and p.last_attested_at is not None and p.state == "alive"


def test_revoked_peer_is_never_attested_again():
    t = PeerTable()
    t.on_connected("a", [], 0)
    ok(t, "a", 1)
    assert t.revoke("a", "score below policy")
    assert not t.is_attested("a") and t.is_revoked("a")
    ok(t, "a", 2)
    t.on_disconnected("a", 3)
    t.on_connected("a", [], 4)
    ok(t, "a", 5)
    assert not t.is_attested("a")


def test_rtt_and_rate_are_smoothed_and_small_transfers_ignored():
    from overlay.peers import MIN_TRANSFER_BYTES

    t = PeerTable()
    t.on_connected("a", [], 0)
    t.on_rtt("a", 8.0)
    t.on_rtt("a", 16.0)
    assert t.get("a").rtt_ms == 9.0  # 8 + (16 - 8) / 8
    assert not t.on_transfer("a", MIN_TRANSFER_BYTES - 1, 0.001)  # a round trip, not a rate
    assert not t.on_transfer("a", 1 << 20, 0.0) and not t.on_transfer("nobody", 1 << 20, 1.0)
    assert t.get("a").kib_s is None
    assert t.on_transfer("a", 1 << 20, 1.0)
    assert t.get("a").kib_s == 1024.0
    assert t.on_transfer("a", 1 << 20, 0.5)
    assert t.get("a").kib_s == 1024.0 + (2048.0 - 1024.0) / 4
    assert t.get("a").to_json(0)["kib_s"] == 1280
