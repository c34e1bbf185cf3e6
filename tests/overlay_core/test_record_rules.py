"""Who may write which record, and the bounds: no issuer displaces another, no record revokes,
versions and lifetimes are bounded, and a hostile record never costs its batch the valid ones."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.dissemination import Dissemination, DisseminationConfig
from overlay.messages_gossip import GossipPush
from overlay.records import (
    KIND_MANAGER,
    KIND_MEMBERSHIP,
    KIND_REVOCATION,
    KIND_SCORE,
    VERSION_MAX,
    Record,
    SimSigner,
    SimVerifier,
    kind_violation,
    order_key,
    record_key,
)

SECRETS = {i: i.encode().ljust(16, b"k") for i in ("honest", "hostile", "mgr", "outsider")}
SIGN = {k: SimSigner(k, v) for k, v in SECRETS.items()}
TRUSTED = {"honest", "hostile", "mgr"}
VALID_IDS = set(SECRETS) | {"x", "y"}
NOW = 1000.0  # local clock of the receiver in these tests
CFG = DisseminationConfig.lan()
VERSION_CAP = (NOW + CFG.clock_skew_s) * 1000 + CFG.version_lead_max


class Peers:
    def sample(self, k: int) -> list[str]:
        return ["p1", "p2"][:k]

    def num_members(self) -> int:
        return 3


def make(cfg: DisseminationConfig = CFG) -> Dissemination:
    return Dissemination("self", cfg, random.Random(0), NOW, verify=SimVerifier(SECRETS),
                         issuer_trusted=TRUSTED.__contains__, peers=Peers(),
                         is_manager="mgr".__eq__, valid_id=VALID_IDS.__contains__)


def sign(issuer: str, kind: str, subject: str, version: int, at: float = NOW,
         ttl: float = 100.0, payload: bytes = b"p") -> Record:
    return SIGN[issuer].sign(kind, subject, version, at, at + ttl, payload)


kinds = st.sampled_from([KIND_SCORE, KIND_MANAGER, KIND_MEMBERSHIP, KIND_REVOCATION, "other"])
subjects = st.sampled_from(["honest", "hostile", "mgr", "x", "y"])
honest_versions = st.integers(0, int(VERSION_CAP))
any_versions = st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([int(VERSION_CAP) + 1,
                                                                     VERSION_MAX, 2**63 - 1]))


def honest_records(draw_kind: str, subject: str, versions: list[int]) -> list[Record]:
    if draw_kind in (KIND_MANAGER, KIND_MEMBERSHIP):
        subject = "honest"  # its own statement
    kind = KIND_SCORE if draw_kind == KIND_REVOCATION else draw_kind  # honest is no manager
    return [sign("honest", kind, subject, v, at=NOW - 1 + i * 0.001)
            for i, v in enumerate(versions)]


@settings(max_examples=150)
@given(kind=kinds, subject=subjects,
       versions=st.lists(honest_versions, min_size=1, max_size=5),
       hostile=st.lists(st.tuples(kinds, subjects, any_versions, st.floats(-50, 50),
                                  st.floats(1, 10**7)), max_size=12),
       rnd=st.randoms(use_true_random=False))
def test_no_issuer_can_displace_another_issuers_record(kind, subject, versions, hostile, rnd):
    mine = honest_records(kind, subject, versions)
    theirs = [sign("hostile", k, s, v, at=NOW + dt, ttl=ttl) for k, s, v, dt, ttl in hostile]
    mixed = mine + theirs
    rnd.shuffle(mixed)
    d = make()
    for r in mixed:
        d.publish(r, NOW)
    # The honest issuer's slot holds exactly what it would hold with no hostile record around.
    alone = make()
    for r in mine:
        alone.publish(r, NOW)
    key = record_key(mine[0])
    assert d.get(*key) == alone.get(*key) == max(mine, key=order_key)
    # Nothing the hostile issuer holds is keyed to anyone else, or breaks its kind's rule.
    for r in d.records():
        if r.issuer == "hostile":
            assert kind_violation(r) is None and r.kind != KIND_REVOCATION
            assert r.version <= VERSION_CAP and r.expires_at <= NOW + CFG.clock_skew_s + CFG.max_ttl_s


@given(version=st.integers(int(VERSION_CAP) + 1, 2**63 - 1))
def test_versions_beyond_the_window_are_refused(version):
    d = make()
    assert not d.publish(sign("hostile", KIND_SCORE, "honest", version), NOW)
    assert d.stats.out_of_bounds == 1
    assert [why for _, why, _ in d.ready().refused] == ["version-too-far"]
    assert d.publish(sign("hostile", KIND_SCORE, "honest", int(VERSION_CAP)), NOW)


def test_the_version_window_follows_the_receivers_clock_and_never_passes_version_max():
    # A millisecond-based issuer's version is accepted now and after a restart (a later clock).
    d = make()
    assert d.publish(sign("honest", KIND_SCORE, "x", int(NOW * 1000)), NOW)
    assert d.publish(sign("honest", KIND_SCORE, "x", int(NOW * 1000) + 1), NOW)
    later = 10**13  # far future clock: the window would pass VERSION_MAX
    d2 = make()
    ok = sign("honest", KIND_SCORE, "x", VERSION_MAX, at=later)
    assert d2.publish(ok, later)
    assert not d2.publish(sign("honest", KIND_SCORE, "y", VERSION_MAX + 1, at=later), later)


@given(extra=st.floats(1e-3, 1e12))
def test_lifetimes_beyond_max_ttl_are_refused(extra):
    d = make()
    ttl = CFG.clock_skew_s + CFG.max_ttl_s + extra
    assert not d.publish(sign("hostile", KIND_SCORE, "x", 1, ttl=ttl), NOW)
    assert d.stats.out_of_bounds == 1
    assert [why for _, why, _ in d.ready().refused] == ["expiry-too-far"]
    assert d.publish(sign("hostile", KIND_SCORE, "x", 1, ttl=CFG.max_ttl_s), NOW)


def test_a_self_kind_about_someone_else_is_refused_and_the_owner_keeps_its_slot():
    d = make()
    squat = sign("hostile", KIND_MANAGER, "honest", 10**6)  # in the window, wrong subject
    assert not d.publish(squat, NOW)
    real = sign("honest", KIND_MANAGER, "honest", 5)
    assert d.publish(real, NOW)
    assert d.about(KIND_MANAGER, "honest") == [real]
    assert d.stats.not_permitted == 1


def test_one_issuer_cannot_fill_the_store():
    d = make(dataclasses.replace(CFG, max_records_per_issuer=2))
    assert d.publish(sign("hostile", KIND_SCORE, "x", 1), NOW)
    assert d.publish(sign("hostile", KIND_SCORE, "y", 1), NOW)
    assert not d.publish(sign("hostile", KIND_SCORE, "honest", 1), NOW)
    assert d.publish(sign("hostile", KIND_SCORE, "y", 2), NOW)  # its own slots still update
    assert d.publish(sign("honest", KIND_SCORE, "x", 1), NOW)
    assert [why for _, why, _ in d.ready().refused] == ["issuer-full"]


def _hostile(kind: int, i: int) -> tuple[Record, str]:
    r = sign("hostile", KIND_SCORE, "x", 10 + i)
    if kind == 0:
        return sign("hostile", KIND_SCORE, "not a node id", 1), "invalid-subject"
    if kind == 1:
        return dataclasses.replace(r, payload=b"tampered"), "bad-signature"
    if kind == 2:
        return sign("hostile", KIND_REVOCATION, "honest", 1 + i), "revocation-not-manager"
    if kind == 3:
        return sign("hostile", KIND_MANAGER, "mgr", 1 + i), "subject-not-issuer"
    if kind == 4:
        return sign("hostile", KIND_SCORE, "y", 2**62 + i), "version-too-far"
    if kind == 5:
        return sign("outsider", KIND_SCORE, "x", 1 + i), "untrusted"
    if kind == 6:
        return sign("hostile", KIND_SCORE, "y", 1 + i, at=NOW - 10, ttl=5), "expired"
    return sign("hostile", KIND_SCORE, "y", 1 + i, ttl=10**9), "expiry-too-far"


@given(valid=st.lists(st.tuples(st.sampled_from(["honest", "mgr"]), st.sampled_from(
           [KIND_SCORE, "other"]), st.sampled_from(["x", "y", "hostile"])), max_size=20,
           unique=True),
       hostile=st.lists(st.integers(0, 7), max_size=20),
       rnd=st.randoms(use_true_random=False))
def test_a_batch_with_hostile_records_keeps_every_valid_one(valid, hostile, rnd):
    good = [sign(i, k, s, 7) for i, k, s in valid]
    bad = [_hostile(kind, n) for n, kind in enumerate(hostile)]
    batch = good + [r for r, _ in bad]
    rnd.shuffle(batch)
    d = make()
    for at in range(0, len(batch), 64):
        d.step("hostile", GossipPush(tuple(batch[at:at + 64])), NOW)
    out = d.ready()
    assert sorted(out.accepted, key=record_key) == sorted(good, key=record_key)
    assert sorted((why, r.signature) for _, why, r in out.refused) == \
        sorted((why, r.signature) for r, why in bad)
    assert all(src == "hostile" for src, _, _ in out.refused)
