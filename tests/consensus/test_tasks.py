"""The task state machine: each rejection as a scenario, then random (and hostile) command
sequences with the invariants checked after every step, through the registry's encode/decode."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import tasks as T
from consensus.scheduler import Offer, Requirements, Weights, check_decision, schedule
from consensus.state import Join, Revoke, Suspect, SwarmState, apply, apply_entry, decode_state, encode_state
from consensus.tasks import (
    TASK_REGISTRY,
    AssignFragments,
    Assignment,
    CancelJob,
    DropJob,
    FragmentResult,
    JobDelivered,
    JobDone,
    JobFailed,
    ReassignFragment,
    SubmitJob,
)

H = hashlib.sha256(b"out").digest()
H2 = hashlib.sha256(b"other").digest()


def run(state: SwarmState, cmd: Any) -> tuple[SwarmState, str]:
    """Apply through the wire form, as a replica does; check every invariant."""
    data = TASK_REGISTRY.encode(cmd)
    assert TASK_REGISTRY.decode(data) == cmd
    new, res = TASK_REGISTRY.apply(state, TASK_REGISTRY.decode(data))
    if not res.ok:
        assert new is state
    assert T.check_invariants(new) == []
    assert T.check_transition(state, new) == []
    return new, res.error


def ok(state: SwarmState, cmd: Any) -> SwarmState:
    new, err = run(state, cmd)
    assert err == "", err
    return new


def refused(state: SwarmState, cmd: Any, why: str) -> None:
    new, err = run(state, cmd)
    assert why in err, err
    assert new is state


def swarm(n: int = 6, providers: int = 3) -> SwarmState:
    s = SwarmState()
    for i in range(n):
        s, r = apply(s, Join(f"n{i}", f"p{i % providers}", "eu", "sev-snp", 900, True))
        assert r.ok
    return s


def submit(job_id: str = "j", n: int = 2, r: int = 2, owner: str = "n0", **kw: Any) -> SubmitJob:
    return SubmitJob(job_id, owner, hashlib.sha256(b"spec").digest(), hashlib.sha256(b"wasm").digest(),
                     n, r, kw.pop("req", Requirements()), Weights(), 10_000, **kw)


def result(f: int, r: int, node: str, out: bytes = H, job: str = "j") -> FragmentResult:
    return FragmentResult(job, f, r, node, True, out, 3, 100, 4096, 5)


def running() -> SwarmState:
    """Job j: 2 fragments x 2 replicas on n1..n4 (providers p1 p2 p0 p1)."""
    s = ok(swarm(), submit())
    return ok(s, AssignFragments("j", 7, (Assignment(0, 0, "n1"), Assignment(0, 1, "n2"),
                                          Assignment(1, 0, "n3"), Assignment(1, 1, "n4"))))


def test_happy_path_and_snapshot_round_trip() -> None:
    s = running()
    for f, r, node in ((0, 0, "n1"), (0, 1, "n2"), (1, 0, "n3"), (1, 1, "n4")):
        s = ok(s, result(f, r, node))
    refused(s, JobDelivered("j"), "running")  # only a finished job is delivered
    s = ok(s, JobDone("j", H2, 10))
    assert T.job(s, "j")["status"] == T.DONE
    assert "delivered" not in T.job(s, "j")  # older records keep their encoding
    s = ok(s, JobDelivered("j"))
    assert T.job(s, "j")["delivered"] is True
    refused(s, JobDelivered("j"), "delivered already")
    refused(s, JobDelivered("k"), "unknown job")
    assert decode_state(encode_state(s)) == s
    s = ok(s, DropJob("j"))
    assert T.jobs(s) == {}


def test_submit_rejections() -> None:
    s = ok(swarm(), submit())
    refused(s, submit(), "exists")
    refused(s, submit("k", n=0), "out of range")
    refused(s, submit("k", n=4096, r=2), "replicas >")
    refused(s, submit("k", max_attempts=0), "max_attempts")
    refused(s, submit("k", req=Requirements(cores=0)), "cores 0")
    refused(s, dataclasses.replace(submit("k"), spec_digest=b"x"), "32 bytes")
    full = s
    for i in range(T.MAX_JOBS - 1):
        full, _ = TASK_REGISTRY.apply(full, submit(f"x{i}"))
    refused(full, submit("one-more"), "jobs in the state")


def test_assignment_rejections() -> None:
    s = swarm()
    s = ok(s, submit(req=Requirements(min_score=500, tee_kinds=("sev-snp",))))
    s, _ = apply(s, Revoke("n5", "bad quote"))
    s, _ = apply(s, Suspect("n4", "missed"))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n5"),)), "n5 is revoked")
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n4"),)), "n4 is suspect")
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "ghost"),)), "not a member")
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"), Assignment(0, 1, "n1"))),
            "already holds fragment 0 replica 0")
    # n1 and n4 share provider p1: replicas are anti-affine by provider.
    s2 = ok(swarm(), submit())
    refused(s2, AssignFragments("j", 1, (Assignment(0, 0, "n1"), Assignment(0, 1, "n4"))), "provider p1")
    refused(s, AssignFragments("j", 1, (Assignment(2, 0, "n1"),)), "no fragment 2")
    refused(s, AssignFragments("nope", 1, (Assignment(0, 0, "n1"),)), "unknown job")
    refused(s, AssignFragments("j", 1, ()), "no assignments")
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),), b"short"), "inputs digest")
    s, _ = apply(s, Join("tdx1", "p9", "eu", "tdx", 900, True))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "tdx1"),)), "tee tdx not allowed")
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n2"),)), "is assigned, not pending")


def test_low_score_region_and_provider_are_refused() -> None:
    s = swarm()
    s = ok(s, submit(req=Requirements(min_score=950)))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)), "score 900 < 950")
    s = ok(swarm(), submit(req=Requirements(regions=("us",))))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)), "region eu")
    s = ok(swarm(), submit(req=Requirements(providers=("p0",))))
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)), "provider p1 not allowed")


def test_result_rejections() -> None:
    s = running()
    refused(s, result(0, 0, "n2"), "not assigned to n2")
    refused(s, result(0, 0, "n1", job="other"), "unknown job")
    refused(s, dataclasses.replace(result(0, 0, "n1"), output_hash=b"short"), "32 bytes")
    refused(s, FragmentResult("j", 0, 0, "n1", False, b"", 0, 0, 0, 0, ""), "carries an error")
    s1 = ok(s, result(0, 0, "n1"))
    refused(s1, result(0, 0, "n1"), "already has a result")
    refused(s1, result(0, 0, "n1", out=H2), "already has a result")
    revoked, _ = apply(s, Revoke("n2", "alarm"))
    refused(revoked, result(0, 1, "n2"), "n2 is not admitted")
    cancelled = ok(s, CancelJob("j", "n0"))
    refused(cancelled, result(0, 0, "n1"), "job j is cancelled")
    queued = ok(swarm(), submit())
    refused(queued, result(0, 0, "n1"), "job j is queued")


def test_a_failed_fragment_never_completes_the_job() -> None:
    s = running()
    s = ok(s, FragmentResult("j", 0, 0, "n1", False, b"", 0, 10**9, 0, 0, "fuel exhausted"))
    for f, r, node in ((0, 1, "n2"), (1, 0, "n3"), (1, 1, "n4")):
        s = ok(s, result(f, r, node))
    refused(s, JobDone("j", H2, 1), "failed on n1: fuel exhausted")
    s = ok(s, JobFailed("j", "fragment 0: fuel exhausted"))
    refused(s, JobDone("j", H2, 1), "job j is failed")


def test_disagreeing_replicas_and_revoked_results_block_completion() -> None:
    s = running()
    for f, r, node, out in ((0, 0, "n1", H), (0, 1, "n2", H2), (1, 0, "n3", H), (1, 1, "n4", H)):
        s = ok(s, result(f, r, node, out))
    refused(s, JobDone("j", H2, 1), "replicas of fragment 0 disagree")
    s = running()
    for f, r, node in ((0, 0, "n1"), (0, 1, "n2"), (1, 0, "n3"), (1, 1, "n4")):
        s = ok(s, result(f, r, node))
    s, _ = apply(s, Revoke("n3", "integrity alarm"))
    refused(s, JobDone("j", H2, 1), "computed by n3, revoked since")
    refused(s, ReassignFragment("j", 0, 0, "n1", "n5", "why not"), "done on a node in good standing")
    s = ok(s, ReassignFragment("j", 1, 0, "n3", "n5", "n3 revoked"))
    assert T.job(s, "j")["done"] == 3
    s = ok(s, result(1, 0, "n5"))
    s = ok(s, JobDone("j", H2, 1))


def test_reassignment_counts_attempts_and_is_bounded() -> None:
    s = ok(swarm(8, providers=8), submit(n=1, r=1, max_attempts=2))
    s = ok(s, AssignFragments("j", 1, (Assignment(0, 0, "n1"),)))
    refused(s, ReassignFragment("j", 0, 0, "n2", "n3", "dead"), "not on n2")
    refused(s, ReassignFragment("j", 0, 0, "n1", "n3", ""), "bad reason")
    refused(s, ReassignFragment("j", 0, 0, "n1", "n1", "timeout"), "already ran")
    s = ok(s, ReassignFragment("j", 0, 0, "n1", "n2", "timeout"))
    refused(s, ReassignFragment("j", 0, 0, "n2", "n3", "refused"), "2 attempts, the maximum")
    s = ok(s, ReassignFragment("j", 0, 0, "n2", "", "refused"))
    rep = T.job(s, "j")["frags"][0][0]
    assert rep["st"] == T.PENDING and rep["attempts"] == 2 and rep["tried"] == ["n1", "n2"]
    refused(s, AssignFragments("j", 1, (Assignment(0, 0, "n3"),)), "the maximum")


def test_cancel_and_fail_and_drop_rules() -> None:
    s = running()
    refused(s, CancelJob("j", "n3"), "may not cancel")
    refused(s, DropJob("j"), "job j is running")
    refused(s, JobFailed("j", ""), "bad reason")
    s = ok(s, CancelJob("j", "n0", "changed my mind"))
    refused(s, CancelJob("j", "n0"), "is cancelled")
    refused(s, JobFailed("j", "late"), "is cancelled")
    refused(s, ReassignFragment("j", 0, 0, "n1", "n5", "dead"), "is cancelled")
    s = ok(s, DropJob("j"))
    refused(s, DropJob("j"), "unknown job")


def test_readers_for_the_driver() -> None:
    s = running()
    assert T.replicas_on(s, "n1") == [("j", 0, 0)]
    assert T.used_capacity(s)["n1"] == (1, 64)
    s = ok(s, ReassignFragment("j", 0, 0, "n1", "", "n1 died"))
    req = T.job_request(s, "j")
    assert [(w.fragment, w.replica) for w in req.wants or ()] == [(0, 0)]
    w = (req.wants or ())[0]
    assert "n1" in w.avoid_nodes and "n2" in w.avoid_nodes and w.avoid_providers == ("p2",)
    offers = {m: Offer(m, 4, 4096) for m in s.members}
    d = schedule(s, offers, req, seed=42)
    assert d.ok and check_decision(d, s, offers, req) == (True, "")
    s = ok(s, AssignFragments("j", 42, tuple(T.Assignment(p.fragment, p.replica, p.node_id)
                                             for p in d.placements)))


def test_undecodable_or_mistyped_commands_are_rejected_by_every_replica() -> None:
    s = running()
    data = TASK_REGISTRY.encode(result(0, 0, "n1"))
    raw = cbor2.loads(data)
    raw[1]["fragment"] = "0"
    new, res = apply_entry(s, cbor2.dumps(raw), TASK_REGISTRY)
    assert not res.ok and "expected int" in res.error and new is s


# --------------------------------------------------------------------------- random sequences


NODES = [f"n{i}" for i in range(8)]


def random_command(rng: random.Random, s: SwarmState) -> Any:
    """A command a manager, a hostile member or a confused client might propose."""
    jobs = sorted(T.jobs(s)) or ["j0"]
    jid = rng.choice([*jobs, "j0", "j1", "ghost"])
    node = rng.choice([*NODES, "ghost"])
    f, r = rng.randrange(3), rng.randrange(3)
    k = rng.randrange(13)
    if k == 12:
        k = rng.choice([1, 3, 4])
    if k == 0:
        r_ = rng.randrange(1, 4)
        q_ = rng.choice([0, r_ // 2 + 1, rng.randrange(0, 4)])
        return submit(jid, n=rng.randrange(1, 4), r=r_, owner=rng.choice(NODES),
                      max_attempts=rng.randrange(1, 4), quorum=q_,
                      max_replicas=rng.choice([0, r_, r_ + 2, 9]))
    if k == 1:
        # A proper manager move: a pending replica to a node that qualifies now.
        for j_id in rng.sample(jobs, len(jobs)):
            j = T.job(s, j_id)
            if j is None or j["status"] not in T.LIVE_JOB:
                continue
            for f2, r2, rep in T.replicas(s, j_id):
                if rep["st"] == T.PENDING:
                    for cand in rng.sample(NODES, len(NODES)):
                        if not T.qualifies(s, j, f2, r2, cand):
                            return AssignFragments(j_id, rng.randrange(100), (Assignment(f2, r2, cand),))
    if k in (1, 2):
        return AssignFragments(jid, rng.randrange(100), tuple(
            Assignment(rng.randrange(3), rng.randrange(3), rng.choice(NODES))
            for _ in range(rng.randrange(1, 4))))
    if k in (3, 4, 5):
        # Often the right node (so results get accepted), sometimes anyone.
        j = T.job(s, jid)
        if j is not None and rng.random() < 0.7 and f < j["n"] and r < len(j["frags"][f]):
            node = j["frags"][f][r]["node"] or node
        good = rng.random() < 0.85
        return FragmentResult(jid, f, r, node, good, (H if rng.random() < 0.9 else H2) if good else b"",
                              1, 2, 3, 4, "" if good else "trap")
    if k == 6:
        j = T.job(s, jid)
        old = (j["frags"][f][r]["node"] if j is not None and f < j["n"] and r < len(j["frags"][f])
               else node)
        return ReassignFragment(jid, f, r, old or node, rng.choice(["", *NODES]), "timeout")
    if k == 7:
        return CancelJob(jid, rng.choice([*NODES, ""]))
    if k == 8:
        return JobDone(jid, H, 10)
    if k == 9:
        return JobFailed(jid, "gave up")
    if k == 10:
        return DropJob(jid) if rng.random() < 0.5 else T.AddReplica(jid, f)
    return rng.choice([Revoke(node, "alarm"), Suspect(node, "missed"),
                       Join(f"x{rng.randrange(50)}", f"p{rng.randrange(3)}", "eu", "sev-snp", 900, True)])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_random_sequences_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    s = swarm(8, providers=4)
    accepted = 0
    for step in range(150):
        cmd = random_command(rng, s)
        new, res = TASK_REGISTRY.apply(s, cmd)
        if res.ok:
            accepted += 1
        else:
            assert new is s
        assert T.check_invariants(new) == [], (step, cmd)
        assert T.check_transition(s, new) == [], (step, cmd)
        s = new
        if step % 50 == 49:
            assert decode_state(encode_state(s)) == s
    assert accepted > 0


def test_random_sequences_reach_completed_jobs() -> None:
    """The generator is not too hostile to exercise the whole life cycle."""
    finished = set()
    for seed in range(30):
        rng = random.Random(seed)
        s = swarm(8, providers=4)
        for _ in range(300):
            s, _ = TASK_REGISTRY.apply(s, random_command(rng, s))
            finished |= {j["status"] for j in T.jobs(s).values()}
    assert {T.DONE, T.FAILED, T.CANCELLED, T.RUNNING} <= finished


def test_the_transition_checker_catches_an_unqualified_assignment() -> None:
    """check_transition is the simulator's oracle: a state edited around the handlers (as a
    buggy handler would) is caught."""
    s = running()
    j = dict(T.job(s, "j"))
    frags = [list(fr) for fr in j["frags"]]
    frags[0][0] = dict(frags[0][0], node="n5", tried=["n5"])
    j["frags"] = frags
    revoked, _ = apply(s, Revoke("n5", "x"))
    bad = dataclasses.replace(revoked, ext={"tasks": {"jobs": {"j": j}}})
    assert any("did not qualify" in v for v in T.check_transition(revoked, bad))
    frags[0][1] = dict(frags[0][1], st=T.R_DONE, out=H, node="n6", tried=["n6"])
    j["done"] = 1
    bad = dataclasses.replace(revoked, ext={"tasks": {"jobs": {"j": j}}})
    assert any("unassigned" in v for v in T.check_transition(revoked, bad))
    j["done"] = 2
    assert any("counted twice" in v for v in T.check_invariants(bad))


@pytest.mark.parametrize("kind", [k for k, _, _ in T.TASK_COMMANDS])
def test_every_task_command_is_registered(kind: str) -> None:
    assert kind in TASK_REGISTRY.kinds()


# --------------------------------------------------------------------------- the job's newer fields

_hash = st.binary(min_size=32, max_size=32)
_any_bytes = st.binary(max_size=40)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 6), hashes=st.lists(_any_bytes, max_size=7),
       fuel=st.integers(-1, T.MAX_FUEL + 1), mem=st.integers(-1, 1 << 20),
       wall=st.integers(-1, 10**9), out=st.integers(-1, 1 << 40),
       agg=st.sampled_from([*T.AGGREGATION_KINDS, T.REDUCER, "median", ""]),
       reducer=st.one_of(st.just(b""), _hash, _any_bytes), bw=st.text(max_size=70),
       name=st.text(max_size=300))
def test_submit_accepts_exactly_the_valid_newer_fields(n, hashes, fuel, mem, wall, out, agg, reducer,
                                                       bw, name):
    """input_hashes, limits, aggregation, reducer_hash, bin_width and name: a job is committed
    exactly when each is valid (checked against an independent statement of the rules), and a
    committed job carries them through the wire form and a snapshot."""
    limits = T.JobLimits(fuel, mem, wall, out)
    cmd = submit("k", n=n, r=1, input_hashes=tuple(hashes), limits=limits, aggregation=agg,
                 reducer_hash=reducer, bin_width=bw, name=name)
    valid = ((not hashes or (len(hashes) == n and all(len(h) == 32 for h in hashes)))
             and limits.problems() == []
             and agg in (*T.AGGREGATION_KINDS, T.REDUCER)
             and (agg == T.REDUCER) == (len(reducer) == 32) and (not reducer or len(reducer) == 32)
             and len(bw) <= 64 and len(name) <= T.MAX_NAME)
    s = swarm()
    new, err = run(s, cmd)
    assert (err == "") == valid, err
    if valid:
        j = T.job(new, "k")
        assert (j["inputs"], j["agg"], j["reducer"], j["bw"], j["name"]) == (
            list(hashes), agg, reducer, bw, name)
        assert j["limits"] == dataclasses.asdict(limits)
        assert decode_state(encode_state(new)) == new


def test_a_done_replica_moves_only_with_its_output_lost_or_its_node_revoked() -> None:
    s = running()
    s = ok(s, result(0, 0, "n1"))
    refused(s, ReassignFragment("j", 0, 0, "n1", "", "probe failed"), "good standing")
    moved = ok(s, ReassignFragment("j", 0, 0, "n1", "", "its output is gone", output_lost=True))
    assert T.job(moved, "j")["frags"][0][0]["st"] == T.PENDING and T.job(moved, "j")["done"] == 0
    s2, r = apply(s, Revoke("n1", "integrity"), TASK_REGISTRY)
    assert r.ok
    moved = ok(s2, ReassignFragment("j", 0, 0, "n1", "", "n1 was revoked"))
    assert T.job(moved, "j")["frags"][0][0]["node"] == ""


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["done", "failed", "cancelled", "running"]), min_size=1, max_size=40),
       st.integers(0, 10))
def test_finished_jobs_beyond_keep_are_dropped_oldest_first(fates, keep) -> None:
    """``finished_to_drop`` names the finished jobs beyond the newest ``keep`` by submission
    order, oldest first, and never a live one."""
    s = swarm()
    for i, fate in enumerate(fates):
        jid = f"j{i}"
        s = ok(s, submit(jid, n=1, r=1))
        if fate == "done":
            s = ok(s, AssignFragments(jid, 1, (Assignment(0, 0, "n1"),)))
            s = ok(s, result(0, 0, "n1", job=jid))
            s = ok(s, JobDone(jid, H2, 1))
        elif fate == "failed":
            s = ok(s, JobFailed(jid, "no"))
        elif fate == "cancelled":
            s = ok(s, CancelJob(jid, "n0", "no"))
    finished = [f"j{i}" for i, fate in enumerate(fates) if fate != "running"]
    assert T.finished_to_drop(s, keep) == finished[:max(0, len(finished) - keep)]


# --------------------------------------------------------------------------- private jobs


def _budgeted(s: SwarmState, owner: str = "n0", eps_units: int = 1_000_000) -> SwarmState:
    from consensus import budgets as B

    return ok(s, B.SetBudget("ds", owner, eps_units, 0, 0, b"\x01" * 64))


def _private(job_id: str = "j", eps: int = 500_000, **kw: Any) -> SubmitJob:
    return submit(job_id, privacy=T.Privacy("ds", "count", eps, b"\x85query"), **kw)


def test_a_private_job_is_committed_only_after_its_own_charge() -> None:
    from consensus import budgets as B

    s = swarm()
    refused(s, _private(), "has no privacy budget")
    s = _budgeted(s)
    refused(s, _private(), "is not charged")                       # no charge yet
    s2 = ok(s, B.ChargeBudget("ds", "other-job", 500_000, 0, 0, 0))
    refused(s2, _private(), "is not charged")                      # another job's charge
    s = ok(s, B.ChargeBudget("ds", "j", 400_000, 0, 0, 0))
    refused(s, _private(eps=500_000), "is not charged")            # charged less than it says
    refused(s, _private(eps=400_000, owner="n1"), "another owner")  # not the data set's owner
    refused(s, _private(eps=400_000, aggregation="sum"), "aggregation concat")
    refused(s, submit(privacy=T.Privacy("ds", "median", 400_000, b"q")), "not one of")
    refused(s, submit(privacy=T.Privacy("ds", "count", 400_000, b"")), "private query is")
    s = ok(s, _private(eps=400_000))
    assert T.job(s, "j")["dp"] == {"ds": "ds", "kind": "count", "eps": 400_000, "q": b"\x85query"}


def test_a_private_job_ends_with_its_release_and_only_it_does() -> None:
    from consensus import budgets as B

    s = ok(_budgeted(swarm()), B.ChargeBudget("ds", "j", 500_000, 0, 0, 0))
    s = ok(s, _private())
    s = ok(s, AssignFragments("j", 7, (Assignment(0, 0, "n1"), Assignment(0, 1, "n2"),
                                       Assignment(1, 0, "n3"), Assignment(1, 1, "n4"))))
    for f, r, node in ((0, 0, "n1"), (0, 1, "n2"), (1, 0, "n3"), (1, 1, "n4")):
        s = ok(s, result(f, r, node))
    release = b'{"kind":"count","value":301}\n'
    digest = hashlib.sha256(release).digest()
    refused(s, JobDone("j", digest, len(release)), "release is 1..")
    refused(s, JobDone("j", H2, len(release), release), "does not match")
    refused(s, JobDone("j", digest, 3, release), "does not match")
    refused(s, JobDone("j", digest, len(release), b"x" * (T.MAX_RELEASE_BYTES + 1)), "release is 1..")
    done = ok(s, JobDone("j", digest, len(release), release))
    assert T.job(done, "j")["release"] == release
    assert decode_state(encode_state(done)) == done
    # a job that is not private never carries one
    plain = running()
    for f, r, node in ((0, 0, "n1"), (0, 1, "n2"), (1, 0, "n3"), (1, 1, "n4")):
        plain = ok(plain, result(f, r, node))
    refused(plain, JobDone("j", digest, len(release), release), "only a private job")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["charge", "submit", "both"]),
                          st.integers(1, 600_000)), max_size=8))
def test_no_private_job_exists_without_a_charge_at_least_its_own(ops) -> None:
    """Any order of charges and submits: every private job in the state has a charge of
    exactly its epsilon, and the ledger never passes the budget."""
    from consensus import budgets as B

    s = _budgeted(swarm())
    for i, (op, eps) in enumerate(ops):
        jid = f"j{i}"
        if op in ("charge", "both"):
            rec = B.budget(s, "ds")
            s, _ = run(s, B.ChargeBudget("ds", jid, eps, 0, rec["spent_eps"], rec["spent_delta"]))
        if op in ("submit", "both"):
            s, _ = run(s, _private(jid, eps))
    rec = B.budget(s, "ds")
    assert rec["spent_eps"] <= rec["eps"] and B.check_ledger(s) == []
    charges = {q: e for q, e, _ in rec["charges"]}
    for jid, j in T.jobs(s).items():
        assert j["dp"] is not None and charges.get(jid) == j["dp"]["eps"]


# --------------------------------------------------------------------------- quorum


def _quorum_job(r: int = 3, q: int = 2, most: int = 5) -> SwarmState:
    s = ok(swarm(8, providers=8), submit(n=1, r=r, quorum=q, max_replicas=most))
    return ok(s, AssignFragments("j", 7, tuple(Assignment(0, i, f"n{i + 1}") for i in range(r))))


def test_a_quorum_accepts_the_majority_and_records_the_minority() -> None:
    s = _quorum_job()
    s = ok(s, result(0, 0, "n1", H))
    refused(s, JobDone("j", H2, 10), "replica 1 is assigned")
    s = ok(s, result(0, 1, "n2", H2))   # the liar
    assert T.fragment_verdict(s, T.job(s, "j"), 0).state == T.OPEN
    s = ok(s, result(0, 2, "n3", H))
    v = T.fragment_verdict(s, T.job(s, "j"), 0)
    assert (v.state, v.output, v.votes, v.minority) == (T.AGREED, H, 2, ((1, "n2", H2),))
    done = ok(s, JobDone("j", H2, 10))
    assert T.job(done, "j")["findings"] == [[0, 1, "n2", H2]]
    # the per-node count outlives the job (jobs are dropped after delivery)
    assert T.integrity_findings(done) == {"n2": 1}
    gone = ok(done, DropJob("j"))
    assert T.integrity_findings(gone) == {"n2": 1} and decode_state(encode_state(gone)) == gone


def test_a_quorum_is_reached_before_every_replica_ran() -> None:
    s = _quorum_job()
    s = ok(ok(s, result(0, 0, "n1", H)), result(0, 2, "n3", H))
    done = ok(s, JobDone("j", H2, 10))              # replica 1 still assigned: not needed
    assert T.job(done, "j")["findings"] == []


def test_disagreement_adds_replicas_up_to_the_bound_then_fails() -> None:
    s = _quorum_job(r=3, q=2, most=4)
    refused(s, T.AddReplica("j", 0), "is open")     # nothing to decide yet
    s = ok(ok(ok(s, result(0, 0, "n1", H)), result(0, 1, "n2", H2)),
           FragmentResult("j", 0, 2, "n3", False, b"", 0, 1, 2, 3, "trap"))
    v = T.fragment_verdict(s, T.job(s, "j"), 0)
    assert v.state == T.NEEDS_REPLICA and "2 different outputs" in v.why and "trap" in v.why
    refused(s, JobDone("j", H2, 10), "replica 2 is failed")
    s = ok(s, T.AddReplica("j", 0))
    refused(s, T.AddReplica("j", 0), "is open")     # the new one could still decide it
    s = ok(s, AssignFragments("j", 8, (Assignment(0, 3, "n4"),)))
    s = ok(s, result(0, 3, "n4", H))                # the tie broken: H has its quorum
    assert T.fragment_verdict(s, T.job(s, "j"), 0).state == T.AGREED
    # three different outputs at the bound: no quorum, nothing more to add
    s2 = _quorum_job(r=3, q=2, most=3)
    s2 = ok(ok(ok(s2, result(0, 0, "n1", H)), result(0, 1, "n2", H2)), result(0, 2, "n3", b"\x07" * 32))
    assert T.fragment_verdict(s2, T.job(s2, "j"), 0).state == T.NO_QUORUM
    refused(s2, T.AddReplica("j", 0), "no-quorum")


def test_a_revoked_node_votes_for_nothing() -> None:
    s = _quorum_job()
    s = ok(ok(s, result(0, 0, "n1", H)), result(0, 2, "n3", H))
    s = ok(s, Revoke("n3", "alarm"))
    v = T.fragment_verdict(s, T.job(s, "j"), 0)
    assert v.state == T.OPEN and v.votes == 1        # n2 (still assigned) may yet decide it
    refused(s, JobDone("j", H2, 10), "revoked since")


def test_quorum_bounds_at_submit() -> None:
    refused(swarm(), submit(n=1, r=4, quorum=2), "more than half")
    refused(swarm(), submit(n=1, r=2, quorum=3), "quorum outside")
    refused(swarm(), submit(n=1, r=2, max_replicas=1), "max_replicas outside")
    refused(swarm(), submit(n=1, r=2, max_replicas=9), "max_replicas outside")


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.data())
def test_no_fragment_is_accepted_without_a_quorum_of_agreeing_votes(r, data) -> None:
    """Any outcome of any replicas (outputs, failures, revocations, still running): AGREED only
    with q votes for its output from nodes not revoked, and that output is the only one that
    has q (so two outputs can never both be accepted)."""
    q = data.draw(st.integers(r // 2 + 1, r))
    most = data.draw(st.integers(r, 8))
    s = ok(swarm(8, providers=8), submit(n=1, r=r, quorum=q, max_replicas=most))
    j = dict(T.job(s, "j"))
    frag = []
    for i in range(data.draw(st.integers(r, most))):
        kind = data.draw(st.sampled_from(["pending", "assigned", "done", "failed"]))
        out = data.draw(st.sampled_from([H, H2, b"\x07" * 32])) if kind == "done" else b""
        frag.append({"st": kind, "node": "" if kind == "pending" else f"n{i}", "attempts": 0,
                     "tried": [], "seed": 0, "out": out, "size": 0, "prof": [0, 0, 0], "err": ""})
    for i in data.draw(st.sets(st.integers(0, 7), max_size=3)):
        s, _ = apply(s, Revoke(f"n{i}", "alarm"))
    j["frags"] = [frag]
    v = T.fragment_verdict(s, j, 0)
    good = [rep["out"] for rep in frag if rep["st"] == "done" and s.members[rep["node"]].status != "revoked"]
    tally = {o: good.count(o) for o in set(good)}
    if v.state == T.AGREED:
        assert tally[v.output] >= q and all(c < tally[v.output] for o, c in tally.items() if o != v.output)
        assert {m[2] for m in v.minority} == set(tally) - {v.output}
    else:
        top = sorted(tally.values(), reverse=True)
        assert not top or top[0] < q or (len(top) > 1 and top[0] == top[1])
        undecided = sum(rep["st"] in ("pending", "assigned") for rep in frag)
        undecided += sum(rep["st"] == "done" and s.members[rep["node"]].status == "revoked"
                         for rep in frag)
        assert v.state != T.OPEN or undecided > 0  # nothing left to run decides nothing: no wait
        if v.state in (T.NO_QUORUM, T.NEEDS_REPLICA):
            assert undecided == 0 or max(tally.values(), default=0) + undecided < q
            assert (v.state == T.NO_QUORUM) == (len(frag) >= most)
