"""The peer table: quarantine rules, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.peers import DialPlan, PeerTable


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


# ---------------------------------------------------------------------- DialPlan: learned peers

def test_dial_plan_skips_self_known_and_pending_peers_and_caps_addresses():
    t = PeerTable()
    t.on_connected("conn", [], 0)
    t.on_connected("gone", [], 0)
    t.on_goodbye("gone")
    t.on_disconnected("gone", 1)
    t.revoke("bad", "revoked by the council")
    plan = DialPlan("me", max_pending=10, max_per_answer=10, max_addrs=2)
    entries = [("me", ["/a"]), ("conn", ["/a"]), ("gone", ["/a"]), ("bad", ["/a"]), ("noaddr", []),
               ("x", ["/1", "/2", "/3"]), ("x", ["/4"])]
    dials, dropped = plan.offer(entries, t)
    assert dials == [("x", ["/1", "/2"])] and dropped == 0
    assert plan.pending == {"x"}
    assert plan.offer([("x", ["/1"])], t) == ([], 0)  # already being dialled
    plan.done("x")
    assert plan.offer([("x", ["/1"])], t) == ([("x", ["/1"])], 0)


def test_dial_plan_refuses_an_answer_over_the_asked_limit_whole():
    plan = DialPlan("me", max_pending=100, max_per_answer=3)
    with pytest.raises(ValueError, match="4 peers named, at most 3"):
        plan.offer([(f"p{i}", ["/a"]) for i in range(4)], PeerTable())
    assert plan.pending == frozenset()


@given(st.lists(st.lists(st.tuples(st.sampled_from([f"p{i}" for i in range(40)] + ["me"]),
                                   st.lists(st.sampled_from(["/a", "/b"]), max_size=3)),
                         max_size=12), max_size=30),
       st.lists(st.integers(0, 39), max_size=30))
def test_dial_plan_never_has_more_than_max_pending_whatever_members_name(answers, finished):
    # Hostile members may name anyone, any number of times: the dials pending at once stay
    # within the bound, none twice, never ourselves; what found no room is reported.
    t = PeerTable()
    plan = DialPlan("me", max_pending=5, max_per_answer=12)
    for k, entries in enumerate(answers):
        before = set(plan.pending)
        dials, dropped = plan.offer(entries, t)
        ids = [pid for pid, _ in dials]
        assert len(ids) == len(set(ids)) and "me" not in ids and not set(ids) & before
        assert len(plan.pending) <= 5 and plan.pending == before | set(ids)
        dialable = {pid for pid, addrs in entries if pid != "me" and addrs} - before
        assert dropped + len(ids) >= len(dialable) if len(plan.pending) == 5 else dropped == 0
        if k < len(finished):
            plan.done(f"p{finished[k]}")


def test_a_first_attestation_that_missed_is_retried_sooner_than_a_reattestation():
    t = PeerTable()
    t.on_connected("new", [], 0)
    t.on_connected("old", [], 0)
    ok(t, "old", 1)
    t.on_attest_started("old", 1)
    ok(t, "old", 1)
    t.on_attest_started("new", 1)
    t.on_attest_missed("new", "stream: StreamEOF", 1, max_missed=3, penalty=10)
    due = lambda now: {p.peer_id for p in t.due_for_attestation(now, 60, first_retry_s=5)}  # noqa: E731
    assert due(5.9) == set()
    assert due(6.0) == {"new"}  # never attested on this connection: 5 s, not 60 s
    assert due(61.0) == {"new", "old"}
    assert {p.peer_id for p in t.due_for_attestation(6.0, 60)} == set()  # without: the interval
