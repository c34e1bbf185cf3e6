"""Membership core: formulas (Hypothesis), rules of precedence, and small in-memory clusters."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.dissemination import retransmit_limit
from overlay.errors import LocalProtocolError
from overlay.membership import (
    Membership,
    MembershipConfig,
    Snapshot,
    push_pull_scale,
    suspicion_bounds,
    suspicion_timeout,
)
from overlay.messages_gossip import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    SwimAck,
    SwimGossip,
    SwimPing,
    SwimPingReq,
    SwimSync,
    SwimUpdate,
)
from tests.overlay_core.harness import Cluster

FAST = dataclasses.replace(MembershipConfig.local_test(), suspicion_mult=3)

# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("profile", [MembershipConfig.lan, MembershipConfig.wan,
                                     MembershipConfig.local_test])
def test_profiles_validate(profile):
    profile().validate()


@pytest.mark.parametrize("change", [
    {"probe_timeout_s": 2.0}, {"probe_timeout_s": 0.0}, {"suspicion_mult": 0},
    {"nack_ratio": 1.0}, {"retransmit_mult": 0}, {"max_members": 1}, {"gossip_interval_s": 0},
])
def test_bad_config_is_a_local_error(change):
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(MembershipConfig.lan(), **change).validate()


# --------------------------------------------------------------------------- formulas


@given(mult=st.integers(1, 10), n=st.integers(1, 10**6))
def test_retransmit_limit_formula(mult, n):
    lim = retransmit_limit(mult, n)
    assert lim == mult * max(1, math.ceil(math.log10(n + 1)))
    assert retransmit_limit(mult, n + 1) >= lim  # monotone in n


@given(mult=st.integers(1, 10), maxm=st.integers(1, 10), n=st.integers(1, 100_000),
       interval=st.floats(0.1, 10.0), c=st.integers(0, 50))
def test_suspicion_timeout_bounds_and_monotone(mult, maxm, n, interval, c):
    cfg = dataclasses.replace(MembershipConfig.lan(), suspicion_mult=mult,
                              suspicion_max_timeout_mult=maxm, probe_interval_s=interval,
                              probe_timeout_s=interval / 2)
    lo, hi, k = suspicion_bounds(cfg, n)
    assert lo == pytest.approx(mult * max(1.0, math.log10(n)) * interval)
    assert hi == pytest.approx(maxm * lo)
    assert 0 <= k <= max(0, mult - 2)
    t = suspicion_timeout(lo, hi, k, c)
    assert lo - 1e-9 <= t <= max(lo, hi) + 1e-9
    assert suspicion_timeout(lo, hi, k, c + 1) <= t + 1e-9  # more confirmations, never longer
    if k >= 1:
        assert suspicion_timeout(lo, hi, k, 0) == pytest.approx(max(lo, hi))
        assert suspicion_timeout(lo, hi, k, k) == pytest.approx(lo)


@given(n=st.integers(1, 100_000))
def test_push_pull_scale(n):
    s = push_pull_scale(30.0, n)
    assert s == 30.0 if n <= 32 else s >= 30.0
    # full-state bytes per node per second (∝ n / s) stop growing past 1024 members
    assert n / s <= 1024 / 30.0 + 1e-9


# --------------------------------------------------------------------------- precedence rules


def _solo(n_members: int = 5, cfg: MembershipConfig = FAST) -> Membership:
    ids = [f"m{i}" for i in range(n_members)]
    return Membership("m0", cfg, random.Random(1), 0.0, initial_members=Snapshot(ids))


_updates = st.lists(
    st.tuples(st.sampled_from(["m1", "m2"]), st.sampled_from([ALIVE, SUSPECT, DEAD]),
              st.integers(0, 5), st.sampled_from(["m3", "m4"])),
    max_size=40,
)


@given(_updates)
def test_incarnation_in_view_never_decreases(updates):
    m = _solo()
    seen = {"m1": 0, "m2": 0}
    for t, (node, state, inc, origin) in enumerate(updates):
        m.step("m3", SwimGossip((SwimUpdate(node, state, inc, origin),)), float(t))
        _, inc_now = m.state_of(node)
        assert inc_now >= seen[node]
        seen[node] = inc_now
        m.tick(float(t))


@given(_updates)
def test_dead_is_final_until_a_higher_incarnation(updates):
    m = _solo()
    for t, (node, state, inc, origin) in enumerate(updates):
        before = m.state_of(node)
        m.step("m3", SwimGossip((SwimUpdate(node, state, inc, origin),)), float(t))
        after = m.state_of(node)
        if before[0] == DEAD and after != before:
            assert after[0] == ALIVE and after[1] > before[1]


_view_changes = st.lists(
    st.tuples(st.sampled_from(["m0", "m1", "m2", "m7", "m8"]),
              st.sampled_from([ALIVE, SUSPECT, DEAD, LEFT]), st.integers(0, 4),
              st.sampled_from(["m3", "m4"]), st.booleans()),
    max_size=30,
)


@given(_view_changes)
def test_push_pull_state_is_always_the_current_view(changes):
    """Whatever changed between syncs (news about others, strangers joining, a refutation
    about ourselves), a push-pull reply carries the view as it is now."""
    m = _solo()
    for t, (node, state, inc, origin, sync) in enumerate(changes):
        if state == LEFT:
            origin = node  # only a node itself may announce its leave
        m.step("m3", SwimGossip((SwimUpdate(node, state, inc, origin),)), float(t))
        if sync:
            m.step("m4", SwimSync(members=(), reply=True), float(t))
            replies = [msg for dst, msg in m.ready().messages if type(msg) is SwimSync]
            assert len(replies) == 1
            got = {(u.node, u.state, u.incarnation) for u in replies[0].members}
            assert got == {(n, st_, inc_) for n, st_, inc_ in m.members()}
            assert ("m0", ALIVE, m.incarnation) in got


def test_suspicion_about_self_is_refuted_with_higher_incarnation():
    m = _solo()
    m.step("m1", SwimGossip((SwimUpdate("m0", SUSPECT, 0, "m1"),)), 1.0)
    assert m.incarnation == 1
    assert m.health == 1  # Lifeguard: having to refute is a sign we are slow
    m.tick(5.0)
    out = m.ready().messages
    sent = [u for _, msg in out for u in getattr(msg, "updates", ())]
    assert SwimUpdate("m0", ALIVE, 1, "m0") in sent


def test_ping_for_another_incarnation_of_the_address_is_ignored():
    m = _solo()
    m.step("m1", SwimPing(7, "someone-else"), 1.0)
    assert m.ready().messages == []
    m.step("m1", SwimPing(8, "m0"), 1.0)
    (dst, ack), = m.ready().messages
    assert dst == "m1" and type(ack) is SwimAck and ack.seq == 8


def test_ping_req_is_served_and_nacked_when_target_is_silent():
    m = _solo()
    m.step("m1", SwimPingReq(5, "m2", nack=True), 1.0)
    (dst, ping), = m.ready().messages
    assert dst == "m2" and type(ping) is SwimPing
    m.tick(1.0 + FAST.nack_ratio * FAST.probe_timeout_s + 1e-6)
    msgs = m.ready().messages
    to_requester = [(type(x).__name__, x.seq) for d, x in msgs if d == "m1"]
    assert to_requester == [("SwimNack", 5)]


def test_unknown_member_learned_from_alive_update_and_counted():
    m = _solo()
    assert m.num_members() == 5
    m.step("m1", SwimGossip((SwimUpdate("new", ALIVE, 3, "new"),)), 1.0)
    assert m.state_of("new") == (ALIVE, 3)
    assert m.num_members() == 6
    ev = m.ready().events
    assert [(e.node, e.state_name) for e in ev] == [("new", "alive")]


def test_leave_only_by_the_node_itself_on_the_wire():
    from overlay.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        SwimUpdate("m1", LEFT, 0, "m2").validate()


# --------------------------------------------------------------------------- clusters


def test_steady_cluster_has_no_suspicions():
    c = Cluster(6, FAST)
    c.run(20.0)
    assert not [e for _, e in c.events if e.state != ALIVE]
    assert all(c.m[i].health == 0 for i in c.ids)


def test_crashed_member_is_suspected_then_declared_dead_everywhere():
    c = Cluster(6, FAST)
    c.run(2.0)
    c.down.add("m5")
    c.run(40.0)
    for i in c.ids[:5]:
        assert c.view(i, "m5")[0] == DEAD
        assert c.view(i, "m4")[0] == ALIVE


def test_graceful_leave_then_rejoin_with_higher_incarnation():
    c = Cluster(5, FAST)
    c.run(2.0)
    c.m["m4"].leave(c.now)
    c._drain("m4")
    c.run(3.0)
    c.down.add("m4")
    assert all(c.view(i, "m4")[0] == LEFT for i in c.ids[:4])
    # Restart with no memory: incarnation 0, joins through a seed, learns it left, refutes.
    c.boot("m4", 99, snapshot=False)
    c.m["m4"].join(["m0"], c.now)
    c._drain("m4")
    c.run(10.0)
    assert c.m["m4"].incarnation >= 1
    assert all(c.view(i, "m4")[0] == ALIVE for i in c.ids[:4])
    assert c.m["m4"].num_members() == 5


def test_join_spreads_to_everyone():
    c = Cluster(5, FAST)
    c.ids.append("m9")
    c.boot("m9", 9, snapshot=False)
    c.m["m9"].join(["m1"], c.now)
    c._drain("m9")
    c.run(10.0)
    assert all(c.view(i, "m9") == (ALIVE, 0) for i in c.ids[:5])
    assert c.m["m9"].num_members() == 6


def test_lifeguard_local_health_rises_when_we_are_the_slow_one():
    c = Cluster(5, FAST)
    c.mute.add("m0")  # m0 hears nothing: no acks, no nacks
    c.run(30.0)
    assert c.m["m0"].health == FAST.awareness_max_multiplier - 1
    c.mute.clear()
    c.run(60.0)
    assert c.m["m0"].health < FAST.awareness_max_multiplier - 1


def test_lifeguard_off_keeps_health_at_zero():
    cfg = dataclasses.replace(FAST, lifeguard=False)
    c = Cluster(5, cfg)
    c.mute.add("m0")
    c.run(8.0)
    assert c.m["m0"].health == 0


def test_healed_partition_rejoins_through_reconnect():
    c = Cluster(6, FAST)
    a, b = c.ids[:3], c.ids[3:]
    c.drop = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
    c.run(40.0)
    assert c.view("m0", "m5")[0] == DEAD
    c.drop = set()
    c.run(60.0)
    for x in c.ids:
        for y in c.ids:
            if x != y:
                assert c.view(x, y)[0] == ALIVE, (x, y, c.view(x, y))
