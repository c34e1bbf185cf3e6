"""Dissemination core: queue limits, record order, the acceptance pipeline, anti-entropy."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.dissemination import (
    Dissemination,
    DisseminationConfig,
    TransmitLimitedQueue,
)
from overlay.errors import LocalProtocolError
from overlay.messages_gossip import GossipDigest, GossipPush
from overlay.records import (
    KIND_REVOCATION,
    KIND_SCORE,
    Ed25519Signer,
    Ed25519Verifier,
    Record,
    SimSigner,
    SimVerifier,
    order_key,
    supersedes,
)
from tests.overlay_core.harness import Cluster


class Peers:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def sample(self, k: int) -> list[str]:
        return self.ids[:k]

    def num_members(self) -> int:
        return len(self.ids) + 1


SECRETS = {"a": b"a" * 16, "b": b"b" * 16, "mgr": b"m" * 16, "outsider": b"o" * 16}
SIGN = {k: SimSigner(k, v) for k, v in SECRETS.items()}


def make(trusted=("a", "b", "mgr"), verify=None, cfg=None, calls=None, is_manager=None,
         valid_id=None) -> Dissemination:
    def issuer_trusted(i: str) -> bool:
        if calls is not None:
            calls.append(i)
        return i in trusted

    return Dissemination("self", cfg or DisseminationConfig.lan(), random.Random(0), 0.0,
                         verify=verify or SimVerifier(SECRETS), issuer_trusted=issuer_trusted,
                         peers=Peers(["p1", "p2", "p3", "p4"]),
                         is_manager=None if is_manager is None else is_manager.__eq__,
                         valid_id=valid_id)


def score(issuer="a", subject="x", version=1, at=1.0, ttl=100.0, payload=b"s") -> Record:
    return SIGN[issuer].sign(KIND_SCORE, subject, version, at, at + ttl, payload)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("profile", [DisseminationConfig.lan, DisseminationConfig.wan,
                                     DisseminationConfig.local_test])
def test_profiles_validate(profile):
    profile().validate()


def test_bad_config_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(DisseminationConfig.lan(), gossip_fanout=0).validate()


# --------------------------------------------------------------------------- queue


@given(
    ops=st.lists(st.tuples(st.integers(0, 5), st.integers(10, 300), st.booleans()),
                 min_size=1, max_size=30),
    limit=st.integers(1, 8),
    budget=st.integers(50, 2000),
    takes=st.integers(1, 40),
)
def test_queue_never_exceeds_limit_or_budget(ops, limit, budget, takes):
    q = TransmitLimitedQueue()
    version = {}
    for key, size, prio in ops:
        version[key] = version.get(key, 0) + 1
        q.put(key, (key, version[key]), size, priority=int(prio))
    sizes = {key: size for key, size, _ in ops}  # last size wins, like the queue
    sent: dict[tuple[int, int], int] = {}
    for _ in range(takes):
        batch = q.take(budget, 64, limit)
        assert sum(sizes[k] for k, _ in batch) <= budget
        for item in batch:
            sent[item] = sent.get(item, 0) + 1
    assert all(v <= limit for v in sent.values())
    # only the latest version of a key is ever sent
    assert all(v == version[k] for k, v in sent)


def test_queue_priority_then_fewest_sent():
    q = TransmitLimitedQueue()
    q.put("old", "old", 10)
    q.take(1000, 64, 10)
    q.put("new", "new", 10)
    q.put("rev", "rev", 10, priority=1)
    assert q.take(1000, 64, 10) == ["rev", "new", "old"]


# --------------------------------------------------------------------------- order


_recs = st.lists(st.tuples(st.integers(0, 4), st.floats(0, 10), st.sampled_from(["a", "b"])),
                 min_size=1, max_size=12)


@given(_recs, st.randoms(use_true_random=False))
def test_final_record_is_the_max_whatever_the_arrival_order(specs, rnd):
    recs = [score(issuer=i, version=v, at=t) for v, t, i in specs]
    # each issuer keeps its own slot: the winner per issuer, whatever the others sent
    winners = {i: max((r for r in recs if r.issuer == i), key=order_key)
               for i in {r.issuer for r in recs}}
    rnd.shuffle(recs)
    d = make()
    for r in recs:
        d.publish(r, 5.0)
    for issuer in ("a", "b"):
        assert d.get(KIND_SCORE, "x", issuer) == winners.get(issuer)
    assert sorted(d.about(KIND_SCORE, "x"), key=order_key) == sorted(winners.values(), key=order_key)


@given(_recs)
def test_supersedes_is_a_strict_order(specs):
    recs = [score(issuer=i, version=v, at=t) for v, t, i in specs]
    for a in recs:
        assert not supersedes(a, a)
        for b in recs:
            assert not (supersedes(a, b) and supersedes(b, a))


# --------------------------------------------------------------------------- acceptance


def test_signature_is_checked_before_trust():
    calls: list[str] = []
    d = make(calls=calls)
    forged = dataclasses.replace(score(), signature=b"\x00" * 16)
    assert not d.publish(forged, 2.0)
    assert calls == []  # the trust predicate never saw the forged record
    assert d.stats.bad_signature == 1


def test_untrusted_issuer_is_refused_and_never_forwarded():
    d = make()
    assert not d.publish(score(issuer="outsider"), 2.0)
    assert d.stats.untrusted == 1
    d.tick(10.0)
    assert d.ready().messages == [] or all(
        not m.records for _, m in d.ready().messages if type(m) is GossipPush)


def test_a_revocation_record_revokes_nobody_and_only_the_manager_may_issue_one():
    d = make(is_manager="mgr")
    assert d.publish(score(issuer="b", subject="y"), 2.0)
    forged = SIGN["a"].sign(KIND_REVOCATION, "b", 1, 3.0, 100.0, b"")
    assert not d.publish(forged, 3.0)
    hint = SIGN["mgr"].sign(KIND_REVOCATION, "b", 1, 3.0, 100.0, b"")
    assert d.publish(hint, 3.0)  # the manager's hint is kept and spread...
    assert not d.is_revoked("b") and d.trusted("b")  # ...but revokes nobody
    assert d.get(KIND_SCORE, "y", "b") is not None
    assert d.stats.not_permitted == 1
    assert [(why, r) for _, why, r in d.ready().refused] == [("revocation-not-manager", forged)]


def test_revocation_records_are_refused_when_nobody_is_the_manager():
    d = make()  # no is_manager: the default names nobody
    assert not d.publish(SIGN["mgr"].sign(KIND_REVOCATION, "b", 1, 3.0, 100.0, b""), 3.0)


def test_applied_revocation_purges_the_issuers_records_and_refuses_new_ones():
    d = make()
    assert d.publish(score(issuer="b", subject="y"), 2.0)
    assert d.publish(score(issuer="b", subject="z"), 2.0)
    assert d.publish(score(issuer="a", subject="b"), 2.0)  # about b, by a: stays
    assert d.revoke("b") == 2
    assert d.is_revoked("b") and not d.trusted("b")
    assert d.get(KIND_SCORE, "y", "b") is None and d.get(KIND_SCORE, "b", "a") is not None
    assert not d.publish(score(issuer="b", subject="w", at=4.0), 4.0)
    assert d.stats.purged_revoked == 2
    assert [why for _, why, _ in d.ready().refused] == ["revoked-issuer"]
    d.tick(10.0)
    sent = [r for _, m in d.ready().messages if type(m) is GossipPush for r in m.records]
    assert sent and all(r.issuer != "b" for r in sent)


def test_expired_and_far_future_records_are_refused():
    d = make()
    assert not d.publish(score(at=1.0, ttl=1.0), 5.0)
    assert not d.publish(score(at=100.0), 5.0)  # > clock_skew_s in the future
    assert d.stats.expired == 2


def test_records_expire_from_the_store():
    d = make()
    assert d.publish(score(at=1.0, ttl=10.0), 2.0)
    d.tick(12.0)
    assert len(d) == 0


def test_store_bound():
    d = make(cfg=dataclasses.replace(DisseminationConfig.lan(), max_records=2))
    for s in ("x", "y", "z"):
        d.publish(score(subject=s), 2.0)
    assert len(d) == 2 and d.stats.store_full == 1


def test_gossip_round_sends_to_fanout_and_stops_at_retransmit_limit():
    d = make()
    d.publish(score(), 1.0)
    t = 1.0
    pushes = 0
    for _ in range(50):
        t += d.config.gossip_interval_s
        d.tick(t)
        pushes += sum(1 for _, m in d.ready().messages if type(m) is GossipPush and m.records)
    limit = d.config.retransmit_mult * 1  # n = 5: ceil(log10(6)) = 1
    assert pushes == limit
    assert d.pending_broadcasts() == 0


def test_delegate_payloads_ride_on_pushes():
    got = []

    class Delegate:
        def get_broadcasts(self, limit_bytes):
            return [b"hello"]

        def notify_user(self, from_id, data, now):
            got.append((from_id, data))

    d = make()
    d.delegate = Delegate()
    d.tick(1.0)
    msgs = d.ready().messages
    assert msgs and all(m.user == (b"hello",) for _, m in msgs)
    d.step("p1", GossipPush((), (b"hi",)), 2.0)
    assert got == [("p1", b"hi")]


def test_anti_entropy_exchanges_what_each_side_lacks():
    a, b = make(), make()
    a.publish(score(subject="x"), 1.0)
    b.publish(score(subject="y"), 1.0)
    b.publish(score(subject="x", version=0), 1.0)  # older than a's
    a._send_digest("b", reply=True)
    frames = [("a", "b", m) for _, m in a.ready().messages]
    for _ in range(4):
        nxt = []
        for src, dst, m in frames:
            node = b if dst == "b" else a
            node.step(src, m, 2.0)
            nxt += [(dst, src, x) for _, x in node.ready().messages
                    if type(x) in (GossipDigest, GossipPush)]
        frames = nxt
    assert {(r.subject, r.version) for r in a.records()} == {("x", 1), ("y", 1)}
    assert {(r.subject, r.version) for r in b.records()} == {("x", 1), ("y", 1)}


def test_ed25519_signer_and_verifier():
    s = Ed25519Signer.from_seed("issuer", b"\x01" * 32)
    keys = {"issuer": s.public_key}
    v = Ed25519Verifier(keys.get)
    r = s.sign(KIND_SCORE, "x", 1, 1.0, 2.0, b"p")
    assert v(r)
    assert not v(dataclasses.replace(r, payload=b"q"))
    assert not v(dataclasses.replace(r, issuer="other"))
    assert not v(dataclasses.replace(r, signature=b"\x00" * 64))
    d = make(trusted=("issuer",), verify=v)
    assert d.publish(r, 1.5)


def test_records_spread_over_membership_in_a_cluster():
    c = Cluster(8)
    c.run(1.0)
    r = c.signers["m3"].sign(KIND_SCORE, "m5", 1, c.now, c.now + 100, b"x")
    c.d["m3"].publish(r, c.now)
    c._drain("m3")
    c.run(3.0)
    assert all(c.d[i].get(KIND_SCORE, "m5", "m3") == r for i in c.ids)
    bad = c.signers["outsider"].sign(KIND_SCORE, "m5", 9, c.now, c.now + 100, b"x")
    c.d["m1"].publish(bad, c.now)
    c._drain("m1")
    c.run(3.0)
    assert all(c.d[i].about(KIND_SCORE, "m5") == [r] for i in c.ids)


def test_anti_entropy_with_equal_sized_disjoint_stores():
    """Regression: a size shortcut skipped sending what the peer lacked."""
    a, b = make(), make()
    a.publish(score(subject="x"), 1.0)
    b.publish(score(subject="y"), 1.0)
    a._send_digest("b", reply=True)
    (_, digest), = a.ready().messages
    b.step("a", digest, 2.0)
    pushed = [r.subject for _, m in b.ready().messages if type(m) is GossipPush for r in m.records]
    assert pushed == ["y"]


def test_records_are_not_relayed_once_the_issuer_loses_attestation():
    trusted = {"a", "b", "mgr"}
    d = Dissemination("self", DisseminationConfig.lan(), random.Random(0), 0.0,
                      verify=SimVerifier(SECRETS), issuer_trusted=trusted.__contains__,
                      peers=Peers(["p1", "p2", "p3"]))
    assert d.publish(score(issuer="b"), 1.0)
    trusted.discard("b")
    d.tick(2.0)
    assert all(not m.records for _, m in d.ready().messages if type(m) is GossipPush)
    assert d.get_piggyback(1000) == ()


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"]),
                          st.integers(1, 3)), max_size=8),
       st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"]),
                          st.integers(1, 3)), min_size=1, max_size=4))
def test_holds_all_is_true_exactly_when_a_push_would_only_count_duplicates(held, pushed):
    """holds_all (the simulator's test for a delivery it may skip) agrees with what a push of
    the same records does: nothing accepted, nothing refused, no message, only duplicates."""
    d = make()
    for issuer, subject, v in held:
        d.step("p1", GossipPush((score(issuer, subject, v),)), 2.0)
    d.ready()
    recs = tuple(score(issuer, subject, v) for issuer, subject, v in pushed)
    predicted = d.holds_all(recs)
    before = d.stats.duplicates
    d.step("p2", GossipPush(recs), 2.0)
    out = d.ready()
    only_duplicates = (not out.accepted and not out.messages and not out.refused
                       and d.stats.duplicates - before == len(recs))
    assert predicted == only_duplicates
