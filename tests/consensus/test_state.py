"""The replicated swarm state machine: validation, determinism, snapshots, council choice."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import state as S
from consensus.state import (
    CORE_REGISTRY,
    INCUMBENT_MARGIN,
    Candidate,
    Join,
    Leave,
    PlaceShards,
    RecordScore,
    Reinstate,
    Revoke,
    SetCouncil,
    ShardHolder,
    Suspect,
    SwarmState,
    apply,
    apply_entry,
    choose_council,
    decode_state,
    encode_state,
)


def joined(*names: str) -> SwarmState:
    s = SwarmState()
    for i, n in enumerate(names):
        s, r = apply(s, Join(n, f"p{i % 3}", f"r{i % 2}", "sim", 800 - i, True))
        assert r.ok, r.error
    return s


def test_join_requires_attestation_and_assigns_fresh_raft_ids() -> None:
    s = joined("a", "b")
    assert [s.members[n].raft_id for n in ("a", "b")] == [1, 2]
    s2, r = apply(s, Join("c", "p", "r", "sim", 500, attested=False))
    assert not r.ok and r.error == "attestation failed" and s2 is s
    s, r = apply(s, Leave("a"))
    assert r.ok and s.members["a"].status == S.LEFT
    s, r = apply(s, Join("a", "p", "r", "sim", 500, True))
    assert r.ok and s.members["a"].raft_id == 3  # never reused


def test_lifecycle_and_rejections_leave_state_unchanged() -> None:
    s = joined("a", "b", "c")
    s, r = apply(s, SetCouncil(3))
    assert r.ok and set(s.council) == {"a", "b", "c"}
    s, r = apply(s, Suspect("b", "late heartbeat"))
    assert r.ok and "b" not in s.council and s.members["b"].status == S.SUSPECT
    s, r = apply(s, Reinstate("b"))
    assert r.ok and s.members["b"].status == S.ADMITTED
    s, r = apply(s, Revoke("c", "integrity alarm"))
    assert r.ok and s.members["c"].status == S.REVOKED and "c" not in s.council
    for bad in (Revoke("c", "again"), Revoke("a", ""), Join("c", "p", "r", "sim", 1, True),
                Suspect("zz", "x"), RecordScore("c", 100, 5), RecordScore("a", 1001, 5),
                Reinstate("a"), Leave("c"), SetCouncil(0)):
        s2, r = apply(s, bad)
        assert not r.ok and s2 is s, bad


def test_labels_change_only_for_an_active_member_within_bounds() -> None:
    s = joined("a", "b")
    s, r = apply(s, S.SetLabels("a", "aws", "eu-west"))
    assert r.ok and (s.members["a"].provider, s.members["a"].region) == ("aws", "eu-west")
    s, r = apply(s, Revoke("b", "integrity alarm"))
    for bad in (S.SetLabels("a", "aws", "eu-west"), S.SetLabels("a", "", "x"),
                S.SetLabels("a", "p" * 65, ""), S.SetLabels("a", "p", "r" * 65),
                S.SetLabels("b", "gcp", ""), S.SetLabels("zz", "gcp", "")):
        s2, r = apply(s, bad)
        assert not r.ok and s2 is s, bad


def test_scores_need_increasing_epochs() -> None:
    s = joined("a")
    s, r = apply(s, RecordScore("a", 300, 1))
    assert r.ok and s.members["a"].score == 300
    s2, r = apply(s, RecordScore("a", 900, 1))
    assert not r.ok and s2.members["a"].score == 300


def test_placements() -> None:
    s = joined("a", "b", "c")
    holders = (ShardHolder(1, "b"), ShardHolder(0, "a"), ShardHolder(2, "c"))
    s, r = apply(s, PlaceShards("obj", holders))
    assert r.ok and [h.holder for h in s.placements["obj"].holders] == ["a", "b", "c"]
    for bad in ((ShardHolder(0, "a"), ShardHolder(0, "b")), (ShardHolder(0, "a"), ShardHolder(1, "a")),
                (ShardHolder(0, "zz"),), (), (ShardHolder(0, "a", pending=True),)):
        s2, r = apply(s, PlaceShards("obj2", bad))
        assert not r.ok and s2 is s
    s, r = apply(s, S.DropPlacement("obj"))
    assert r.ok and not s.placements


def placed() -> SwarmState:
    s = joined("own", "a", "b", "c", "d", "e")
    s, r = apply(s, PlaceShards("o", (ShardHolder(0, "a"), ShardHolder(1, "b"), ShardHolder(2, "c")),
                                owner="own", k=2, manifest_revision=0, manifest_digest=b"\x01" * 32))
    assert r.ok, r.error
    return s


def test_place_registers_owner_k_manifest_and_refuses_bad_registrations() -> None:
    s = placed()
    p = s.placements["o"]
    assert (p.owner, p.k, p.manifest_revision, p.epoch) == ("own", 2, 0, 0)
    three = (ShardHolder(0, "a"), ShardHolder(1, "b"), ShardHolder(2, "c"))
    for bad in (
        PlaceShards("x", (ShardHolder(0, "own"), ShardHolder(1, "a")), owner="own", k=1),  # owner holds
        PlaceShards("x", three, owner="own", k=4),                      # k > n
        PlaceShards("x", three, owner="own", k=0),
        PlaceShards("x", three, owner="own", k=2, base_epoch=3),        # new object, epoch != 0
        PlaceShards("o", three, owner="own", k=2, manifest_revision=0),  # revision not newer
        PlaceShards("o", three, owner="zz", k=2, manifest_revision=1),  # another owner
        PlaceShards("o", three, owner="own", k=3, manifest_revision=1),  # another k
        PlaceShards("o", three, owner="own", k=2, manifest_revision=1, base_epoch=7),  # stale view
    ):
        s2, r = apply(s, bad)
        assert not r.ok and s2 is s, bad
    s, r = apply(s, PlaceShards("o", (ShardHolder(0, "d"), ShardHolder(1, "b"), ShardHolder(2, "c")),
                                owner="own", k=2, manifest_revision=1, base_epoch=0))
    assert r.ok and s.placements["o"].epoch == 1 and s.placements["o"].holders[0].holder == "d"


def test_repair_moves_one_shard_to_a_pending_new_holder_then_repaired() -> None:
    s = placed()
    for bad in (
        S.RepairShard("o", 0, "a", "d", 1, "lost"),      # wrong epoch
        S.RepairShard("o", 0, "b", "d", 0, "lost"),      # b does not hold shard 0
        S.RepairShard("o", 0, "a", "b", 0, "lost"),      # already a holder
        S.RepairShard("o", 0, "a", "own", 0, "lost"),    # the owner
        S.RepairShard("o", 0, "a", "zz", 0, "lost"),     # not a member
        S.RepairShard("o", 0, "a", "d", 0, ""),          # no reason
        S.RepairShard("o", 5, "a", "d", 0, "lost"),      # no such index
        S.RepairShard("nope", 0, "a", "d", 0, "lost"),
    ):
        s2, r = apply(s, bad)
        assert not r.ok and s2 is s, bad
    s, r = apply(s, Revoke("d", "integrity alarm"))
    s2, r = apply(s, S.RepairShard("o", 0, "a", "d", 0, "lost"))  # revoked new holder
    assert not r.ok and s2 is s
    s, r = apply(s, S.RepairShard("o", 0, "a", "e", 0, "a revoked"))
    assert r.ok and s.placements["o"].holders[0] == ShardHolder(0, "e", pending=True)
    assert s.placements["o"].epoch == 1
    # only the pending holder may report, once
    for bad in (S.ShardRepaired("o", 0, "a"), S.ShardRepaired("o", 1, "b"), S.ShardRepaired("x", 0, "e")):
        s2, r = apply(s, bad)
        assert not r.ok and s2 is s, bad
    s, r = apply(s, S.ShardRepaired("o", 0, "e"))
    assert r.ok and s.placements["o"].holders[0] == ShardHolder(0, "e") and s.placements["o"].epoch == 2
    assert not apply(s, S.ShardRepaired("o", 0, "e"))[1].ok
    # a pending holder that is lost in turn is replaced the same way
    s, r = apply(s, S.RepairShard("o", 1, "b", "a", 2, "b left"))
    assert r.ok and s.placements["o"].holders[1].pending
    assert decode_state(encode_state(s)) == s


def test_undecodable_entries_are_rejected_deterministically() -> None:
    s = joined("a")
    for raw in (b"\xff\xff", b"\x80", CORE_REGISTRY.encode(Leave("a"))[:-1],
                __import__("cbor2").dumps(["join", {"node_id": 5}]),
                __import__("cbor2").dumps(["nope", {}])):
        s2, r = apply_entry(s, raw)
        assert not r.ok and s2 is s
    s2, r = apply_entry(s, b"")
    assert r.ok and s2 is s  # the leader's no-op


def test_commands_round_trip_through_the_registry() -> None:
    cmds = [Join("a", "p", "r", "tdx", 7, True, b"\x01"), Suspect("a", "x"), Revoke("a", "y"),
            RecordScore("a", 5, 6), SetCouncil(5), PlaceShards("o", (ShardHolder(0, "a"),)),
            PlaceShards("o", (ShardHolder(0, "a"),), "b", 1, 2, b"\x07" * 32, 4),
            S.RepairShard("o", 0, "a", "c", 4, "lost"), S.ShardRepaired("o", 0, "c"),
            S.AnnounceManager(3, "a"), S.SetLabels("a", "aws", "eu-west")]
    for c in cmds:
        assert CORE_REGISTRY.decode(CORE_REGISTRY.encode(c)) == c


def test_extension_registry() -> None:
    @dataclasses.dataclass(frozen=True)
    class SpendBudget:
        dataset: str
        epsilon_milli: int

    def spend(s: SwarmState, c: SpendBudget) -> SwarmState:
        budgets = dict(s.ext.get("budgets", {}))
        left = budgets.get(c.dataset, 1000) - c.epsilon_milli
        if left < 0:
            raise S.Rejected("privacy budget exhausted")
        budgets[c.dataset] = left
        return dataclasses.replace(s, ext={**s.ext, "budgets": budgets})

    reg = CORE_REGISTRY.extended("spend-budget", SpendBudget, spend)
    s = SwarmState()
    s, r = apply_entry(s, reg.encode(SpendBudget("d", 600)), reg)
    assert r.ok
    s2, r = apply_entry(s, reg.encode(SpendBudget("d", 600)), reg)
    assert not r.ok and r.error == "privacy budget exhausted" and s2 is s
    assert decode_state(encode_state(s)) == s
    # The core registry does not know the extension: rejected, deterministically.
    assert not apply_entry(s, reg.encode(SpendBudget("d", 1)))[1].ok


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32))
def test_random_command_streams_are_deterministic_and_snapshot_exactly(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(6)]
    cmds = []
    for _ in range(40):
        n = rng.choice(names)
        cmds.append(rng.choice([
            Join(n, f"p{rng.randrange(3)}", f"r{rng.randrange(2)}", "sim", rng.randrange(1001),
                 rng.random() < 0.9),
            Suspect(n, "s"), Reinstate(n), Revoke(n, "r"), Leave(n),
            RecordScore(n, rng.randrange(1001), rng.randrange(5)), SetCouncil(rng.randrange(1, 5)),
            PlaceShards("o", tuple(ShardHolder(i, h) for i, h in enumerate(rng.sample(names, 2)))),
            S.RepairShard("o", rng.randrange(2), rng.choice(names), n, rng.randrange(3), "lost"),
            S.ShardRepaired("o", rng.randrange(2), n),
            S.SetLabels(n, f"q{rng.randrange(3)}", f"r{rng.randrange(2)}"),
        ]))
    a = b = SwarmState()
    for c in cmds:
        a, ra = apply(a, c)
        b, rb = apply_entry(b, CORE_REGISTRY.encode(c))
        assert ra == rb
        assert encode_state(a) == encode_state(b)
        assert decode_state(encode_state(a)) == a
        for m in a.council:
            assert a.members[m].status == S.ADMITTED


def test_choose_council_prefers_score_then_provider_diversity() -> None:
    c = [Candidate("a", 900, "aws", "eu"), Candidate("b", 890, "aws", "us"),
         Candidate("c", 800, "gcp", "eu"), Candidate("d", 700, "azure", "us"),
         Candidate("e", 950, "aws", "eu", revoked=True), Candidate("f", 600, "ovh", "eu")]
    assert choose_council(c, 3) == ("a", "c", "d")  # one per provider first
    assert choose_council(c, 5) == ("a", "b", "c", "d", "f")
    assert choose_council(c, 10) == ("a", "b", "c", "d", "f")  # never the revoked one
    assert choose_council(c, 0) == ()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(Candidate, node_id=st.text("abcdef", min_size=1, max_size=3),
                          score=st.integers(0, 1000), provider=st.sampled_from("xyz"),
                          region=st.sampled_from("uv"), revoked=st.booleans()),
                unique_by=lambda c: c.node_id, max_size=10),
       st.integers(0, 8))
def test_choose_council_properties(cands: list[Candidate], size: int) -> None:
    chosen = choose_council(cands, size)
    eligible = [c for c in cands if not c.revoked]
    assert len(chosen) == min(size, len(eligible))
    assert len(set(chosen)) == len(chosen)
    by_id = {c.node_id: c for c in cands}
    assert not any(by_id[n].revoked for n in chosen)
    providers = {c.provider for c in eligible}
    assert len({by_id[n].provider for n in chosen}) == min(len(providers), len(chosen))
    assert choose_council(list(reversed(cands)), size) == chosen  # order-independent
    # a council in office that nothing has changed keeps its seats (the incumbency margin
    # never reshuffles an unchanged pool), and with no margin the rule is the plain ranking
    assert choose_council(cands, size, sitting=chosen) == chosen
    assert choose_council(cands, size, sitting=[c.node_id for c in cands], margin=0) == chosen
    # With a margin no score can overcome, a sitting member loses its seat only to other
    # incumbents (too few seats) or to provider diversity: its own provider sits already, and
    # whoever took a seat from outside the council brings a provider no eligible incumbent offers.
    sitting = [c.node_id for c in cands[::2]]
    eligible_sitting = {n for n in sitting if not by_id[n].revoked}
    kept = choose_council(cands, size, sitting=sitting, margin=1001)
    kept_providers = {by_id[n].provider for n in kept}
    incumbent_providers = {by_id[n].provider for n in eligible_sitting}
    ousted = eligible_sitting - set(kept)
    for n in ousted:
        assert by_id[n].provider in kept_providers or set(kept) <= eligible_sitting
    if ousted:
        for n in set(kept) - eligible_sitting:
            assert by_id[n].provider not in incumbent_providers
    assert list(kept) == sorted(kept, key=lambda n: (-by_id[n].score, n))  # rank order


def test_a_sitting_member_keeps_its_seat_against_a_challenger_within_the_margin() -> None:
    # one provider each: pure ranking, no diversity pass effect
    def pool(b_score: int) -> list[Candidate]:
        return [Candidate("a", 900, "p1", "r"), Candidate("b", b_score, "p2", "r"),
                Candidate("c", 850, "p3", "r")]

    assert choose_council(pool(800), 2) == ("a", "c")  # no one in office: c outranks b
    # b sits; c is 50 better (less than one missed re-attestation, 150): b stays
    assert choose_council(pool(800), 2, sitting=("a", "b")) == ("a", "b")
    # b missed two re-attestations (-300): c beats it by more than the margin and takes the seat
    assert choose_council(pool(600), 2, sitting=("a", "b")) == ("a", "c")
    # exactly the margin is not enough; one more point is
    assert choose_council(pool(850 - INCUMBENT_MARGIN), 2, sitting=("a", "b")) == ("a", "b")
    assert choose_council(pool(849 - INCUMBENT_MARGIN), 2, sitting=("a", "b")) == ("a", "c")
    # a revoked incumbent never sits, margin or not
    revoked = [Candidate("a", 900, "p1", "r"), Candidate("b", 1000, "p2", "r", revoked=True),
               Candidate("c", 100, "p3", "r")]
    assert choose_council(revoked, 2, sitting=("a", "b")) == ("a", "c")
    with pytest.raises(ValueError):
        choose_council(pool(800), 2, margin=-1)


def test_set_council_applies_the_incumbency_margin() -> None:
    s = SwarmState()
    for i, (name, score) in enumerate([("a", 900), ("b", 800), ("c", 700)]):
        s, r = apply(s, Join(name, f"p{i}", "r", "sim", score, True))
        assert r.ok, r.error
    s, r = apply(s, SetCouncil(2))
    assert r.ok and s.council == ("a", "b")
    # c overtakes b by 50: the council stays
    s, r = apply(s, RecordScore("c", 850, 1))
    assert r.ok
    s, r = apply(s, SetCouncil(2))
    assert r.ok and s.council == ("a", "b")
    # b falls 300 behind c: c takes the seat, in rank order
    s, r = apply(s, RecordScore("b", 550, 1))
    assert r.ok
    s, r = apply(s, SetCouncil(2))
    assert r.ok and s.council == ("a", "c")
