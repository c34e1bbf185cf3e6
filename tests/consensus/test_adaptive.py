"""Adaptive replication in the task state machine: each fragment placed once, run alone on a
trusted node, spot-checked after its result by the manager's draw, the counters moved by
committed verdicts, a node caught lying has its unchecked fragments of the job checked after
all."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import tasks as T
from consensus import trust
from consensus.state import Revoke, SwarmState, apply, decode_state, encode_state
from consensus.tasks import AddReplica, AssignFragments, Assignment, FragmentResult, JobDone, ReassignFragment
from tests.consensus.test_tasks import H2, H, ok, random_command, refused, result, submit, swarm

TRUSTED = trust.CV_CAP  # trusted with probability 1 - 1e-6: every draw below passes
MANAGER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # fixed: the draws reprint


def drawn(s: SwarmState, cmd: Any, key: Ed25519PrivateKey = MANAGER) -> Any:
    """``cmd`` as the manager commits it: an ok result of a fragment run alone carries its
    signature over the result (the spot-check draw); anything else is unchanged."""
    if not isinstance(cmd, FragmentResult) or not cmd.ok:
        return cmd
    j = T.job(s, cmd.job_id)
    if (j is None or j.get("modes") is None or not 0 <= cmd.fragment < len(j["modes"])
            or j["modes"][cmd.fragment] != trust.SOLO
            or not 0 <= cmd.replica < len(j["frags"][cmd.fragment])):
        return cmd
    rec = j["frags"][cmd.fragment][cmd.replica]
    return dataclasses.replace(cmd, draw=key.sign(trust.spot_transcript(
        cmd.job_id, j["seq"], cmd.fragment, rec["attempts"], cmd.node_id, cmd.output_hash)))


def checked(s: SwarmState, cmd: FragmentResult, ppm: int) -> bool:
    return trust.spot_checked(ppm, drawn(s, cmd).draw)


def with_trust(s: SwarmState, cvs: dict[str, int]) -> SwarmState:
    """``s`` with these counters, as earlier jobs would have left them."""
    sec = dict(s.ext.get(T.SECTION) or {"jobs": {}, "seq": 0})
    sec["trust"] = dict(cvs)
    return dataclasses.replace(s, ext={**s.ext, T.SECTION: sec})


def adaptive(n: int = 2, r: int = 2, ppm: int = 0, **kw: Any) -> Any:
    return submit(n=n, r=r, adaptive=True, spot_check_ppm=ppm, **kw)


def test_submit_rules() -> None:
    s = ok(swarm(), adaptive(n=3, r=3, quorum=2))
    j = T.job(s, "j")
    assert [len(fr) for fr in j["frags"]] == [1, 1, 1] and j["modes"] == ["", "", ""]
    assert j["adapt"] == 0 and j["q"] == 2
    refused(swarm(), adaptive(r=1), "redundancy of 2 or more")
    refused(swarm(), adaptive(ppm=trust.PPM + 1), "spot-check rate outside")
    refused(swarm(), adaptive(ppm=-1), "spot-check rate outside")
    refused(swarm(), submit(spot_check_ppm=5), "adaptive replication only")
    plain = ok(swarm(), submit())
    assert "modes" not in T.job(plain, "j")  # other jobs keep their record


def test_an_untrusted_node_gets_its_fragment_replicated() -> None:
    s = ok(swarm(), adaptive(ppm=0))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"), Assignment(1, 0, "n2"))))
    j = T.job(s, "j")
    assert j["modes"] == [trust.REPLICATED] * 2
    assert [[rep["st"] for rep in fr] for fr in j["frags"]] == [[T.ASSIGNED, T.PENDING]] * 2
    # the pending replicas avoid the primary's node and provider
    wants = T.job_request(s, "j").wants
    assert [(w.fragment, w.replica) for w in wants] == [(0, 1), (1, 1)]
    assert "n1" in wants[0].avoid_nodes and "p1" in wants[0].avoid_providers
    s = ok(s, AssignFragments("j", 2, (Assignment(0, 1, "n3"), Assignment(1, 1, "n4"))))
    s = ok(s, result(0, 0, "n1"))
    assert T.fragment_verdict(s, T.job(s, "j"), 0).state == T.OPEN  # the quorum is 2
    for f, r, node in ((0, 1, "n3"), (1, 0, "n2"), (1, 1, "n4")):
        s = ok(s, result(f, r, node))
    s = ok(s, JobDone("j", H2, 10))
    assert T.trust_counters(s) == {"n1": 1, "n2": 1, "n3": 1, "n4": 1}


def test_a_decision_places_only_replicas_that_existed_before_it() -> None:
    """The replicas a primary's assignment adds are placed by a later decision (one made on
    the state that holds them), never by the batch that created them."""
    s = ok(swarm(), adaptive(n=1))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"), Assignment(0, 1, "n2"))),
            "no fragment 0 replica 1 before this decision")
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    ok(s, AssignFragments("j", 2, (Assignment(0, 1, "n2"),)))


def test_a_trusted_node_runs_alone_and_earns_nothing_from_it() -> None:
    s = with_trust(swarm(), {"n1": TRUSTED - 1, "n2": 3})
    s = ok(s, adaptive(ppm=0))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"), Assignment(1, 0, "n2"))))
    j = T.job(s, "j")
    assert j["modes"] == [trust.SOLO, trust.REPLICATED]
    assert len(j["frags"][0]) == 1 and len(j["frags"][1]) == 2
    refused(s, result(0, 0, "n1"), "carries the manager's spot-check draw")
    refused(s, dataclasses.replace(result(1, 0, "n2"), draw=bytes(64)), "only a result run alone")
    s = ok(s, drawn(s, result(0, 0, "n1")))
    assert T.job(s, "j")["modes"][0] == trust.SOLO  # rate 0: never checked
    assert T.fragment_verdict(s, T.job(s, "j"), 0).state == T.AGREED  # one vote is enough alone
    refused(s, JobDone("j", H2, 10), "fragment 1 replica 0 is assigned")
    s = ok(s, AssignFragments("j", 2, (Assignment(1, 1, "n3"),)))
    s = ok(s, result(1, 0, "n2"))
    s = ok(s, result(1, 1, "n3"))
    s = ok(s, JobDone("j", H2, 10))
    # n1's solo result was compared with nothing: unchanged; n2 and n3 were checked
    assert T.trust_counters(s) == {"n1": TRUSTED - 1, "n2": 4, "n3": 1}
    assert decode_state(encode_state(s)) == s


def test_a_spot_check_catches_a_trusted_liar_and_rechecks_its_solo_fragments() -> None:
    """n1 is trusted and runs both fragments alone. It lies on both: on fragment 0 the
    manager's draw does not check it (accepted alone for now); on fragment 1 it does, the
    fragment is widened and the honest replicas outvote n1: its counter resets, and fragment 0
    is checked after all before the job may end, so its wrong output never reaches the
    result."""
    base = with_trust(swarm(), {"n1": TRUSTED, "n2": TRUSTED})

    def placed(jid: str) -> SwarmState:
        s = ok(base, adaptive(n=2, r=2, ppm=500_000, quorum=2, max_replicas=3, job_id=jid))
        return ok(s, AssignFragments(jid, 1, (Assignment(0, 0, "n1"), Assignment(1, 0, "n1"))))

    # a job (id) whose draws leave the lie on fragment 0 unchecked and check the one on 1
    jid = next(f"j{i}" for i in range(1000)
               if [checked(placed(f"j{i}"), result(f, 0, "n1", H2, job=f"j{i}"), 500_000)
                   for f in (0, 1)] == [False, True])
    s = placed(jid)
    assert T.job(s, jid)["modes"] == [trust.SOLO, trust.SOLO]
    s = ok(s, drawn(s, result(0, 0, "n1", H2, job=jid)))        # a lie, accepted alone for now
    s = ok(s, drawn(s, result(1, 0, "n1", H2, job=jid)))        # a lie, drawn for a check
    j = T.job(s, jid)
    assert j["modes"] == [trust.SOLO, trust.SPOT] and len(j["frags"][1]) == 2
    s = ok(s, AssignFragments(jid, 2, (Assignment(1, 1, "n2"),)))
    s = ok(s, result(1, 1, "n2", H, job=jid))
    v = T.verdicts(s, T.job(s, jid))
    assert v[1].state == T.NEEDS_REPLICA and v[0].state == T.AGREED  # not caught yet: a tie
    s = ok(s, AddReplica(jid, 1))
    s = ok(s, AssignFragments(jid, 3, (Assignment(1, 2, "n3"),)))
    s = ok(s, result(1, 2, "n3", H, job=jid))
    v = T.verdicts(s, T.job(s, jid))
    assert v[1].state == T.AGREED and v[1].minority == ((0, "n1", H2),)
    assert v[0].state == T.NEEDS_REPLICA and "caught" in v[0].why     # caught: check fragment 0
    assert T.fragment_verdict(s, T.job(s, jid), 0) == v[0]
    refused(s, JobDone(jid, H2, 10), "fragment 0")
    s = ok(s, AddReplica(jid, 0))                           # widened to r = 2, decided by q = 2
    j = T.job(s, jid)
    assert j["modes"][0] == trust.REPLICATED and len(j["frags"][0]) == 2
    s = ok(s, AssignFragments(jid, 4, (Assignment(0, 1, "n2"),)))
    s = ok(s, result(0, 1, "n2", H, job=jid))
    refused(s, JobDone(jid, H2, 10), "fragment 0")           # 1 against 1: one more decides
    s = ok(s, AddReplica(jid, 0))
    s = ok(s, AssignFragments(jid, 5, (Assignment(0, 2, "n3"),)))
    s = ok(s, result(0, 2, "n3", H, job=jid))
    s = ok(s, JobDone(jid, H2, 10))
    j = T.job(s, jid)
    assert sorted((f, node) for f, _, node, _ in j["findings"]) == [(0, "n1"), (1, "n1")]
    cvs = T.trust_counters(s)
    assert "n1" not in cvs and cvs["n2"] == TRUSTED and cvs["n3"] == 2


def test_a_failed_replica_beside_an_agreed_output_resets_its_node() -> None:
    s = with_trust(swarm(), {"n3": 40})
    s = ok(s, adaptive(n=1, r=3, quorum=2))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    s = ok(s, AssignFragments("j", 2, (Assignment(0, 1, "n2"), Assignment(0, 2, "n3"))))
    s = ok(s, result(0, 0, "n1"))
    s = ok(s, result(0, 1, "n2"))
    s = ok(s, FragmentResult("j", 0, 2, "n3", False, b"", 0, 1, 1, 1, "trap"))
    s = ok(s, JobDone("j", H2, 10))
    assert T.trust_counters(s) == {"n1": 1, "n2": 1}


def test_a_moved_primary_is_decided_again_for_its_new_node() -> None:
    s = with_trust(swarm(), {"n1": TRUSTED})
    s = ok(s, adaptive(n=1, r=2))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    assert T.job(s, "j")["modes"] == [trust.SOLO]
    s = ok(s, ReassignFragment("j", 0, 0, "n1", "n2", "timeout"))  # n2 has no record: untrusted
    j = T.job(s, "j")
    assert j["modes"] == [trust.REPLICATED] and len(j["frags"][0]) == 2


def test_a_revoked_solo_node_votes_for_nothing() -> None:
    s = with_trust(swarm(), {"n1": TRUSTED})
    s = ok(s, adaptive(n=1, r=2))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    s = ok(s, drawn(s, result(0, 0, "n1")))
    s, _ = apply(s, Revoke("n1", "alarm"))
    refused(s, JobDone("j", H2, 10), "revoked since")
    s = ok(s, ReassignFragment("j", 0, 0, "n1", "n2", "revoked"))
    assert T.job(s, "j")["modes"] == [trust.REPLICATED]  # n2 is not trusted


def test_a_failed_solo_fragment_is_replicated_not_accepted_alone() -> None:
    s = with_trust(swarm(), {"n1": TRUSTED})
    s = ok(s, adaptive(n=1, r=2, max_replicas=3))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    s = ok(s, FragmentResult("j", 0, 0, "n1", False, b"", 0, 1, 1, 1, "trap"))
    assert T.fragment_verdict(s, T.job(s, "j"), 0).state == T.NEEDS_REPLICA
    s = ok(s, AddReplica("j", 0))
    j = T.job(s, "j")
    assert j["modes"] == [trust.REPLICATED] and len(j["frags"][0]) == 2
    s = ok(s, AssignFragments("j", 2, (Assignment(0, 1, "n2"),)))
    s = ok(s, result(0, 1, "n2"))
    assert T.fragment_verdict(s, T.job(s, "j"), 0).state == T.NEEDS_REPLICA  # one vote of 2


def _trusted_swarm(rng: random.Random) -> SwarmState:
    s = swarm(8, providers=4)
    return with_trust(s, {f"n{i}": rng.choice([0, 5, 10, 50, TRUSTED]) for i in range(8)})


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_random_adaptive_sequences_keep_every_invariant(seed: int) -> None:
    """Random (and hostile) commands over adaptive jobs on nodes of every trust: every
    invariant after every step, and no fragment ever agreed alone unless it ran alone."""
    rng = random.Random(seed)
    s = _trusted_swarm(rng)
    for step in range(150):
        cmd = random_command(rng, s)
        if isinstance(cmd, T.SubmitJob) and cmd.redundancy >= 2 and rng.random() < 0.7:
            cmd = dataclasses.replace(cmd, adaptive=True,
                                      spot_check_ppm=rng.choice([0, 100_000, trust.PPM]))
        if rng.random() < 0.9:
            cmd = drawn(s, cmd)
        new, res = T.TASK_REGISTRY.apply(s, cmd)
        if not res.ok:
            assert new is s
        assert T.check_invariants(new) == [], (step, cmd)
        assert T.check_transition(s, new) == [], (step, cmd)
        for j in T.jobs(new).values():
            for f, v in enumerate(T.verdicts(new, j)):
                if v.state == T.AGREED and v.votes < j["q"]:
                    assert j.get("modes") is not None and j["modes"][f] == trust.SOLO
        s = new
    assert decode_state(encode_state(s)) == s


def test_random_adaptive_sequences_run_fragments_alone_and_widen_others() -> None:
    """The generator reaches every mode and completes adaptive jobs."""
    seen: set[str] = set()
    done: set[tuple[int, str]] = set()
    for seed in range(40):
        rng = random.Random(seed)
        s = _trusted_swarm(rng)
        for _ in range(300):
            cmd = random_command(rng, s)
            if isinstance(cmd, T.SubmitJob) and cmd.redundancy >= 2:
                cmd = dataclasses.replace(cmd, adaptive=True, spot_check_ppm=300_000)
            s, _ = T.TASK_REGISTRY.apply(s, drawn(s, cmd))
            for jid, j in T.jobs(s).items():
                seen.update(j.get("modes") or ())
                if j["status"] == T.DONE and "modes" in j:
                    done.add((seed, jid))
    assert {trust.SOLO, trust.SPOT, trust.REPLICATED} <= seen and done
