"""Membership core: formulas (Hypothesis), rules of precedence, and small in-memory clusters."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from overlay.dissemination import retransmit_limit
from overlay.errors import LocalProtocolError
from overlay.membership import (
    UNADMITTED_SAMPLE,
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
    SwimNack,
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


# --------------------------------------------------------------------------- one hostile member

INC_MAX = 2**63 - 1
_incs = st.one_of(st.integers(0, 5), st.integers(INC_MAX - 5, INC_MAX), st.integers(0, INC_MAX))
_claims = st.lists(
    st.tuples(st.sampled_from(["h", "v"]),  # whom the attacker tells
              st.sampled_from(["gossip", "sync", "ping", "ack"]),
              st.lists(st.tuples(st.sampled_from(["v", "h", "a", "x1"]),
                                 st.sampled_from([ALIVE, SUSPECT, DEAD, LEFT]), _incs,
                                 st.sampled_from(["v", "h", "a", "x1"])), min_size=1, max_size=4)),
    min_size=1, max_size=25,
)


def _wrap(kind: str, dest: str, ups: tuple[SwimUpdate, ...]):
    if kind == "sync":
        return SwimSync(members=ups)
    if kind == "ping":
        return SwimPing(99, dest, ups)
    if kind == "ack":
        return SwimAck(99, ups)
    return SwimGossip(ups)


def _pump(cores: dict, t: float) -> None:
    """Deliver what the honest cores send each other (through the codec), drop what goes to
    the attacker; until quiet."""
    from overlay.wire import decode, encode

    for _ in range(50):
        moved = False
        for name, core in cores.items():
            for dst, msg in core.ready().messages:
                data = encode(msg)  # a refutation past INCARNATION_MAX would not even encode
                if dst in cores:
                    cores[dst].step(name, decode(data, type(msg)), t)
                    moved = True
        if not moved:
            return


@settings(deadline=None)  # a minute of two cores talking per example
@given(_claims)
@example([("h", "gossip", [("v", LEFT, 0, "v")]), ("v", "gossip", [("h", LEFT, 0, "h")])])
@example([("v", "gossip", [("v", DEAD, 2**63 - 1, "a")]), ("h", "sync", [("v", SUSPECT, 3, "a")])])
def test_a_victim_can_always_refute_what_one_peer_claims(claims):
    """Whatever a single peer "a" tells the honest node "h" and the victim "v" about anyone,
    at any incarnation up to 2^63 - 1 and with any origin, once it stops and h and v talk, h
    sees v alive at v's own incarnation, and v never needed an incarnation it cannot send."""
    ids = ["h", "v", "a"]  # "a" is the attacker: it has no core, it only sends
    cores = {i: Membership(i, FAST, random.Random(k), 0.0, initial_members=Snapshot(ids))
             for k, i in enumerate(["h", "v"])}
    t = 0.0
    for dest, kind, raw in claims:
        ups = tuple(SwimUpdate(n, s_, inc, n if s_ == LEFT else o) for n, s_, inc, o in raw)
        cores[dest].step("a", _wrap(kind, dest, ups), t)
        _pump(cores, t)
        t += 0.05
        for c in cores.values():
            c.tick(t)
        _pump(cores, t)
    assert cores["v"].incarnation <= INC_MAX
    for _ in range(int(60 / 0.1)):  # a minute of h and v talking (a stays silent)
        t += 0.1
        for c in cores.values():
            c.tick(t)
        _pump(cores, t)
    assert cores["h"].state_of("v") == (ALIVE, cores["v"].incarnation)
    assert cores["v"].incarnation <= FAST.incarnation_window * len(claims) * 4


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["gossip", "sync", "ping"]),
                          st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 5)),
                                   min_size=1, max_size=64)), max_size=40))
def test_one_peer_cannot_grow_the_member_table_beyond_its_cap(batches):
    cfg = dataclasses.replace(FAST, max_introduced_per_peer=16)
    m = Membership("h", cfg, random.Random(1), 0.0, initial_members=Snapshot(["h", "a", "b"]))
    for t, (kind, raw) in enumerate(batches):
        ups = tuple(SwimUpdate(f"fake{i}", ALIVE, inc, f"fake{i}") for i, inc in raw)
        m.step("a", _wrap(kind, "h", ups), float(t))
    assert len(list(m.members())) <= 3 + 16
    # another peer may still introduce a real newcomer
    m.step("b", SwimGossip((SwimUpdate("newcomer", ALIVE, 0, "newcomer"),)), 99.0)
    assert m.state_of("newcomer") == (ALIVE, 0)


def test_only_admitted_members_enter_and_a_join_seed_may_introduce_everyone():
    cfg = dataclasses.replace(FAST, max_introduced_per_peer=2)
    real = {f"r{i}" for i in range(10)} | {"h", "seed"}
    m = Membership("h", cfg, random.Random(1), 0.0, admit=real.__contains__)
    m.join(["seed"], 0.0)
    m.ready()
    members = (*(SwimUpdate(i, ALIVE, 0, i) for i in sorted(real - {"h"})),
               SwimUpdate("invented", ALIVE, 0, "invented"))
    m.step("seed", SwimSync(members=members), 1.0)  # the answer to our join: not capped
    assert {n for n, _, _ in m.members()} == real
    assert ("seed", "not-admitted") in m.ready().refused
    m.step("seed", SwimSync(members=(SwimUpdate("r99", ALIVE, 0, "r99"),)), 2.0)
    assert m.state_of("r99") is None  # not attested: never a member


def test_members_not_admitted_yet_are_reported_under_the_peer_that_named_them():
    # The join path (node/gossip.py): a seed's full state names members this node has not
    # attested yet; the driver is told whom to ask about them, once per sender and batch.
    attested = {"h", "seed", "b"}
    m = Membership("h", FAST, random.Random(1), 0.0, admit=lambda n: n in attested)
    m.join(["seed"], 0.0)
    assert m.ready().unadmitted == {}
    state = tuple(SwimUpdate(n, ALIVE, 0, n) for n in ("seed", "b", "c", "d"))
    m.step("seed", SwimSync(members=state), 1.0)
    m.step("b", SwimGossip((SwimUpdate("c", ALIVE, 0, "c"),)), 1.5)
    assert m.has_output()
    r = m.ready()
    assert r.unadmitted == {"seed": ["c", "d"], "b": ["c"]}
    assert m.state_of("c") is None and m.state_of("b") == (ALIVE, 0)
    assert m.ready().unadmitted == {}  # drained
    attested.add("c")  # now attested here: it enters, and nobody is reported
    m.step("b", SwimGossip((SwimUpdate("c", ALIVE, 1, "c"),)), 2.0)
    assert m.state_of("c") == (ALIVE, 1) and m.ready().unadmitted == {}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20_000)),
                max_size=30))
def test_unadmitted_reports_are_bounded_by_the_senders_whatever_they_name(batches):
    m = Membership("h", FAST, random.Random(1), 0.0, admit={"h", "a", "b", "c"}.__contains__)
    m.join(["a", "b", "c"], 0.0)
    named: dict[str, list[str]] = {}
    for t, (sender, k) in enumerate(batches):
        ups = tuple(SwimUpdate(f"fake{sender}{i}", ALIVE, 0, f"fake{sender}{i}")
                    for i in range(k % 300))
        m.step(sender, SwimSync(members=ups), float(t))
        named.setdefault(sender, []).extend(u.node for u in ups)
    r = m.ready()
    assert set(r.unadmitted) <= {"a", "b", "c"}
    assert r.unadmitted == {s: ids[:UNADMITTED_SAMPLE] for s, ids in named.items() if ids}
    assert m.num_members() <= 4


def test_claims_are_checked_against_the_sender():
    m = _solo()
    bad = [
        ("m1", SwimGossip((SwimUpdate("m2", ALIVE, 1, "m3"),)), "origin"),  # alive by another
        ("m1", SwimGossip((SwimUpdate("m2", SUSPECT, 0, "m2"),)), "origin"),  # self-accusation
        ("m1", SwimGossip((SwimUpdate("m1", DEAD, 0, "m3"),)), "origin"),  # accusing itself
        ("m1", SwimSync(members=(SwimUpdate("m2", DEAD, 0, "m3"),)), "origin"),  # not its view
        ("m1", SwimGossip((SwimUpdate("m2", DEAD, 5000, "m1"),)), "incarnation-jump"),
        ("m1", SwimGossip((SwimUpdate("m2", ALIVE, 2**63 - 1, "m2"),)), "incarnation-jump"),
        ("m1", SwimPingReq(3, "nobody"), "ping-req-target"),
        ("m1", SwimPingReq(3, "m1"), "ping-req-target"),
    ]
    for sender, msg, reason in bad:
        m.step(sender, msg, 1.0)
        r = m.ready()
        assert r.refused == [(sender, reason)], (msg, r.refused)
        assert m.state_of("m2") == (ALIVE, 0) and m.state_of("m1") == (ALIVE, 0)
    # m2 itself may announce any incarnation of its own
    m.step("m2", SwimGossip((SwimUpdate("m2", ALIVE, 2**40, "m2"),)), 2.0)
    assert m.state_of("m2") == (ALIVE, 2**40)
    for _ in range(6):
        m.step("m1", SwimPingReq(4, "m3"), 3.0)
    assert m.ready().refused.count(("m1", "ping-req-limit")) == 2


def test_an_accusation_at_the_top_incarnation_is_refused_and_a_refutation_can_reach_it():
    m = _solo()
    m.step("m2", SwimGossip((SwimUpdate("m2", ALIVE, 2**63 - 2, "m2"),)), 1.0)
    m.step("m1", SwimGossip((SwimUpdate("m2", SUSPECT, 2**63 - 1, "m1"),)), 1.0)
    assert m.ready().refused == [("m1", "incarnation-cap")]
    m.step("m1", SwimGossip((SwimUpdate("m2", SUSPECT, 2**63 - 2, "m1"),)), 1.0)
    assert m.state_of("m2") == (SUSPECT, 2**63 - 2)
    m.step("m3", SwimGossip((SwimUpdate("m2", ALIVE, 2**63 - 1, "m2"),)), 1.0)  # relayed refutation
    assert m.state_of("m2") == (ALIVE, 2**63 - 1)
    # a prober's own suspicion at the top is refuted by the node's own word, heard from it
    m._apply(SwimUpdate("m2", SUSPECT, 2**63 - 1, "m0"), 2.0)
    m.step("m2", SwimAck(77, (SwimUpdate("m2", ALIVE, 2**63 - 1, "m2"),)), 2.0)
    assert m.state_of("m2") == (ALIVE, 2**63 - 1)
    # and the node itself never passes the top, whatever it hears
    v = Membership("v", FAST, random.Random(2), 0.0, initial_members=Snapshot(["v", "a"]),
                   incarnation=2**63 - 1)
    v.step("a", SwimGossip((SwimUpdate("v", DEAD, 2**63 - 1, "a"),)), 1.0)
    assert v.incarnation == 2**63 - 1


def test_acks_and_nacks_count_only_from_whom_we_asked():
    m = _solo(cfg=dataclasses.replace(FAST, indirect_checks=2))
    m.tick(m._next_probe_at)
    (target, ping), = [(d, x) for d, x in m.ready().messages if type(x) is SwimPing]
    liar = next(i for i in ("m1", "m2", "m3", "m4") if i != target)
    m.step(liar, SwimAck(ping.seq), m._now)  # a forged ack would hide the target's failure
    assert m.ready().refused == [(liar, "ack-sender")] and m._probe is not None
    m.step(liar, SwimNack(ping.seq), m._now)
    assert m.ready().refused == [(liar, "nack-sender")]
    m.tick(m._probe.indirect_at)
    helpers = sorted(d for d, x in m.ready().messages if type(x) is SwimPingReq)
    m.step(helpers[0], SwimNack(ping.seq), m._now)
    m.step(helpers[0], SwimNack(ping.seq), m._now)  # twice: counts once
    assert m._probe.nacks == 1
    m.step(helpers[1], SwimAck(ping.seq), m._now)  # an indirect ack comes from a helper
    assert m._probe is None and m.state_of(target)[0] == ALIVE


def test_one_peer_relaying_invented_confirmations_counts_once():
    """Lifeguard shortens a suspicion with each independent confirmation: one peer inventing
    origins adds its own accusation and one relayed confirmation, no more."""
    m = _solo(8, cfg=dataclasses.replace(FAST, suspicion_mult=8))
    m.step("m1", SwimGossip((SwimUpdate("m2", SUSPECT, 0, "m1"),)), 1.0)
    forged = tuple(SwimUpdate("m2", SUSPECT, 0, f"m{i}") for i in (3, 4, 5, 6, 7))
    m.step("m1", SwimGossip(forged), 1.0)
    m.step("m1", SwimGossip(forged[::-1]), 1.0)
    s = m._suspicions["m2"]
    assert s.k >= 5 and len(s.confirmers) == 2
    m.step("m3", SwimGossip(forged), 1.0)  # another peer relaying: one more
    assert len(m._suspicions["m2"].confirmers) == 3
