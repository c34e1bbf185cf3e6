"""Runtime integrity monitoring in the replicated state (consensus/integrity.py): the robust
statistics against a naive reference, the outlier rule (threshold, MAD floor, minimum samples),
the findings a completed job yields (minority, outlier, limit, trap) and the bad-signature
report, all through the registry's wire form and replayable from a snapshot."""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import integrity as I
from consensus import tasks as T
from consensus.state import InvalidCommand, Revoke, SwarmState, apply, decode_state, encode_state
from consensus.tasks import AssignFragments, Assignment, FragmentResult, JobDone
from tests.consensus.test_tasks import H2, H, ok, refused, run, submit, swarm
from tests.strategies import cbor_values


def prof_result(f: int, r: int, node: str, *, out: bytes = H, fuel: int = 1_000_000,
                mem: int = 1 << 20, wall: int = 100, size: int = 3, job: str = "j") -> FragmentResult:
    return FragmentResult(job, f, r, node, True, out, size, fuel, mem, wall)


def failed(f: int, r: int, node: str, err: str, job: str = "j") -> FragmentResult:
    return FragmentResult(job, f, r, node, False, b"", 0, 10, 10, 1, err)


def one_job(s: SwarmState, job: str, nodes: tuple[str, ...], q: int = 0, most: int = 0,
            frag_bytes: int = 1000) -> SwarmState:
    s = ok(s, submit(job, n=1, r=len(nodes), quorum=q, max_replicas=most, fragment_bytes=frag_bytes))
    return ok(s, AssignFragments(job, 7, tuple(Assignment(0, i, n) for i, n in enumerate(nodes))))


def honest_history(s: SwarmState, jobs: int, node: str = "n1", **prof: Any) -> SwarmState:
    """``jobs`` single-replica jobs run by ``node`` with the same profile: the window fills."""
    for i in range(jobs):
        jid = f"h{i}"
        s = one_job(s, jid, (node,))
        s = ok(s, prof_result(0, 0, node, job=jid, **prof))
        s = ok(s, JobDone(jid, H, 3))
        s = ok(s, T.DropJob(jid))
    return s


# --------------------------------------------------------------------------- statistics


@given(st.lists(st.integers(-10**9, 10**9), min_size=1, max_size=64))
def test_median_and_mad_agree_with_the_reference(xs: list[int]) -> None:
    m = statistics.median(xs)
    assert I.median(xs) == int(m // 1) if len(xs) % 2 == 0 else I.median(xs) == m
    ref_mad = statistics.median([abs(x - I.median(xs)) for x in xs])
    assert I.mad(xs) == int(ref_mad // 1)


@given(st.lists(st.integers(0, 10**12), min_size=I.MIN_SAMPLES, max_size=I.WINDOW),
       st.integers(0, 10**12), st.sampled_from(I.METRICS))
def test_the_integer_z_score_matches_the_formula(window: list[int], x: int, metric: str) -> None:
    med = I.median(window)
    spread = max(I.mad(window), I.mad_floor(metric, med))
    exact = abs(x - med) / (1.4826 * spread)
    z = I.robust_z_milli(x, window, metric) / 1000
    assert abs(z - exact) <= 1e-3 + exact * 1e-9
    assert bool(I.outlier(x, window, metric)) == (I.robust_z_milli(x, window, metric) > I.Z_MAX_MILLI)


def test_no_outlier_before_the_minimum_sample_count() -> None:
    assert I.outlier(10**9, [100] * (I.MIN_SAMPLES - 1), "fuel") == 0
    assert I.outlier(10**9, [100] * I.MIN_SAMPLES, "fuel") > 0


@given(st.integers(10_000, 10**10), st.integers(0, 5))
def test_identical_samples_do_not_make_jitter_an_outlier(base: int, permille: int) -> None:
    """MAD = 0 over identical samples: the floor (15 % of the median for fuel) keeps a jitter of
    a few permille from being flagged; 2.5x is."""
    window = [base] * I.WINDOW
    assert I.outlier(base + base * permille // 1000, window, "fuel") == 0
    assert I.outlier(base * 5 // 2, window, "fuel") > 0


@given(st.integers(10, 40), st.integers(0, 2**20 - 1), st.integers(0, 2**20 - 1),
       st.sampled_from(["fuel", "memory", "output_bytes"]),
       st.lists(st.integers(-50, 50), min_size=I.WINDOW, max_size=I.WINDOW), st.integers(-50, 50))
def test_an_input_size_difference_inside_one_bucket_is_never_an_outlier(
        bit: int, a: int, b: int, metric: str, content: list[int], c: int) -> None:
    """Metrics that grow with the input (here in proportion, with +-5 % of content): a window
    of one job's fragments and a job of another size in the same power-of-two bucket."""
    size_a, size_b = ((1 << bit) + (x << bit) // 2**20 for x in (a, b))
    assert size_a.bit_length() == size_b.bit_length()
    window = [size_a * (1000 + k) // 1000 for k in content]
    assert I.outlier(size_b * (1000 + c) // 1000, window, metric) == 0


def test_wall_time_floor_tolerates_a_loaded_host() -> None:
    window = [100] * I.WINDOW               # 100 ms, every time
    assert I.outlier(250, window, "wall_ms") == 0    # 2.5x on a loaded host: not even an outlier
    assert I.outlier(1200, window, "wall_ms") > 0    # 12x is one, though not judged (below)


def test_a_slow_host_is_never_a_finding_but_extra_fuel_is() -> None:
    """Wall time measures the host: an honest node 1,000x slower than the rest draws no
    finding; the same node burning 10x the fuel does."""
    s = honest_history(swarm(), I.MIN_SAMPLES)
    s = one_job(s, "slow", ("n2",))
    s = ok(s, prof_result(0, 0, "n2", wall=100_000, job="slow"))
    s = ok(s, JobDone("slow", H, 3))
    assert I.findings_log(s) == []
    s = one_job(s, "greedy", ("n2",))
    s = ok(s, prof_result(0, 0, "n2", fuel=10_000_000, job="greedy"))
    s = ok(s, JobDone("greedy", H, 3))
    assert [(f["node"], f["kind"], f["ev"]["metric"]) for f in I.findings_log(s)] == [
        ("n2", I.OUTLIER, "fuel")]


# --------------------------------------------------------------------------- findings from jobs


def test_an_outlier_is_flagged_against_the_window_before_the_job() -> None:
    s = honest_history(swarm(), I.MIN_SAMPLES)
    assert I.findings_log(s) == [] and len(I.window(s, I.stats_key(submit().module_hash, 1000), "fuel")) == 8
    s = one_job(s, "x", ("n2",))
    s = ok(s, prof_result(0, 0, "n2", fuel=50_000_000, job="x"))  # 50x the fuel of its peers
    s = ok(s, JobDone("x", H, 3))
    (f,) = I.findings_log(s)
    assert (f["node"], f["kind"], f["job"], f["frag"], f["rep"]) == ("n2", I.OUTLIER, "x", 0, 0)
    assert f["ev"]["metric"] == "fuel" and f["ev"]["median"] == 1_000_000 and f["ev"]["z_milli"] > 6000
    assert I.penalty(s, "n2") == I.WEIGHTS[I.OUTLIER] and I.penalty(s, "n1") == 0
    assert I.check_invariants(s) == [] and decode_state(encode_state(s)) == s


def test_each_kind_of_failure_beside_an_agreed_output() -> None:
    """Seven replicas, quorum 4: four agree; a liar, a trap, a fuel limit beside them are
    findings; nothing else is."""
    s = swarm(8, providers=8)
    nodes = ("n1", "n2", "n3", "n4", "n5", "n6", "n7")
    s = one_job(s, "j", nodes, q=4, most=7)
    outcomes = [("n1", None), ("n2", "lie"), ("n3", "trap: unreachable"),
                ("n4", "out_of_fuel: fuel exhausted"), ("n5", None), ("n6", None), ("n7", None)]
    for r, (node, what) in enumerate(outcomes):
        if what is None:
            s = ok(s, prof_result(0, r, node))
        elif what == "lie":
            s = ok(s, prof_result(0, r, node, out=H2))
        else:
            s = ok(s, failed(0, r, node, what))
    s = ok(s, JobDone("j", H, 3))
    got = {(f["node"], f["kind"]) for f in I.findings_log(s)}
    assert got == {("n2", I.MINORITY), ("n3", I.TRAP), ("n4", I.LIMIT)}
    assert [f["id"] for f in I.findings_log(s)] == [1, 2, 3] and I.last_id(s) == 3
    by_id = {f["node"]: f for f in I.findings_log(s)}
    assert by_id["n2"]["ev"] == {"out": H2, "agreed": H}
    assert by_id["n4"]["ev"]["err"].startswith("out_of_fuel")
    assert I.penalty(s, "n2") == 20 and I.penalty(s, "n3") == 10 and I.penalty(s, "n4") == 10
    # the existing per-node minority count is kept as it was
    assert T.integrity_findings(s) == {"n2": 1}
    assert I.check_invariants(s) == []


def test_a_deadline_busy_or_worker_failure_is_not_a_finding() -> None:
    for err in ("deadline: slow", "busy: no slot", "worker_failed: died", "bad_module: x"):
        assert I.error_kind(err) == ""
    assert I.error_kind("memory_limit: 64 MiB") == I.LIMIT and I.error_kind("exit_code: 3") == I.TRAP


def test_a_revoked_nodes_replica_is_no_finding() -> None:
    s = swarm(8, providers=8)
    s = one_job(s, "j", ("n1", "n2", "n3"), q=2, most=3)
    s = ok(s, prof_result(0, 0, "n1"))
    s = ok(s, prof_result(0, 1, "n2", out=H2))
    s = ok(s, prof_result(0, 2, "n3"))
    s, r = apply(s, Revoke("n2", "bad quote"))
    assert r.ok
    s = ok(s, JobDone("j", H, 3))
    assert I.findings_log(s) == []


def test_good_results_decay_a_penalty_with_its_half_life() -> None:
    s = swarm(8, providers=8)
    s = one_job(s, "j", ("n1", "n2", "n3"), q=2, most=3)
    s = ok(ok(ok(s, prof_result(0, 0, "n1")), prof_result(0, 1, "n2", out=H2)), prof_result(0, 2, "n3"))
    s = ok(s, JobDone("j", H, 3))
    assert I.standing(s, "n2")["pen"] == 20_000
    s = honest_history(s, I.HALF_LIFE_RESULTS, node="n2")
    pen = I.standing(s, "n2")["pen"]
    assert 10_000 - I.HALF_LIFE_RESULTS <= pen <= 10_000  # at most one unit rounded down a step
    assert I.standing(s, "n2")["good"] == I.HALF_LIFE_RESULTS


def test_findings_name_the_manager_and_term_that_committed_them() -> None:
    from consensus.state import AnnounceManager, SetCouncil

    s = swarm(8, providers=8)
    s, _ = apply(s, SetCouncil(3))
    s, r = apply(s, AnnounceManager(4, s.council[0]))
    assert r.ok
    s = one_job(s, "j", ("n1", "n2", "n3"), q=2, most=3)
    s = ok(ok(ok(s, prof_result(0, 0, "n1")), prof_result(0, 1, "n2", out=H2)), prof_result(0, 2, "n3"))
    s = ok(s, JobDone("j", H, 3))
    (f,) = I.findings_log(s)
    assert (f["term"], f["by"]) == (4, s.council[0])
    assert I.finding(s, 1) == f and I.finding(s, 2) is None and I.finding(s, 0) is None


def test_a_bad_signature_is_reported_once_per_assigned_replica() -> None:
    s = one_job(swarm(), "j", ("n1", "n2"))
    cmd = I.ReportBadSignature("j", 0, 1, "n2", H, b"\x01" * 64)
    s2 = ok(s, cmd)
    (f,) = I.findings_log(s2)
    assert (f["node"], f["kind"], f["ev"]) == ("n2", I.BAD_SIGNATURE, {"digest": H, "sig": b"\x01" * 64})
    refused(s2, cmd, "already reported")
    refused(s, I.ReportBadSignature("j", 0, 1, "n1", H, b""), "not assigned to n1")
    refused(s, I.ReportBadSignature("j", 0, 5, "n2", H, b""), "no fragment")
    refused(s, I.ReportBadSignature("k", 0, 1, "n2", H, b""), "unknown job")
    refused(s, I.ReportBadSignature("j", 0, 1, "n2", b"short", b""), "bad evidence")
    refused(s, I.ReportBadSignature("j", 0, 1, "n2", H, b"x" * 65), "bad evidence")


def test_bounds_hold_over_many_jobs() -> None:
    s = swarm(8, providers=8)
    for i in range(40):
        jid = f"m{i}"
        s = ok(s, submit(jid, n=1, r=1, fragment_bytes=1 << (i % 20)))
        s = ok(s, AssignFragments(jid, 7, (Assignment(0, 0, "n1"),)))
        s = ok(s, prof_result(0, 0, "n1", job=jid))
        s = ok(s, JobDone(jid, H, 3))
        s = ok(s, T.DropJob(jid))
    assert I.check_invariants(s) == []
    sec = s.ext[I.SECTION]
    assert len(sec["stats"]) == 20 and all(len(w) <= I.WINDOW for e in sec["stats"].values() for w in e["s"])


def test_the_least_recently_updated_key_is_forgotten_beyond_the_bound() -> None:
    book = I._Book(SwarmState())
    for i in range(I.MAX_KEYS + 3):
        book.learn(f"k{i}", [[1, 2, 3, 4]] * (I.WINDOW + 5))
    assert len(book.stats) == I.MAX_KEYS and "k0" not in book.stats and "k2" not in book.stats
    assert all(len(w) == I.WINDOW for w in book.stats[f"k{I.MAX_KEYS + 2}"]["s"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "lie", "trap", "limit", "slow", "fat"]),
                          st.integers(0, 2)), min_size=1, max_size=30))
def test_any_history_keeps_the_invariants_and_replays(history: list[tuple[str, int]]) -> None:
    """Random outcomes over many jobs: bounds and contiguous ids hold; a snapshot round trip
    gives the same state (a successor holds the same statistics and penalties)."""
    s = swarm(8, providers=8)
    for i, (what, who) in enumerate(history):
        jid = f"r{i}"
        nodes = ("n1", "n2", "n3")
        s = one_job(s, jid, nodes, q=2, most=3)
        for r, node in enumerate(nodes):
            if r != who or what == "ok":
                s = ok(s, prof_result(0, r, node, job=jid))
            elif what == "lie":
                s = ok(s, prof_result(0, r, node, out=H2, job=jid))
            elif what == "trap":
                s = ok(s, failed(0, r, node, "trap: x", job=jid))
            elif what == "limit":
                s = ok(s, failed(0, r, node, "memory_limit: x", job=jid))
            elif what == "slow":
                s = ok(s, prof_result(0, r, node, wall=100_000, job=jid))
            else:
                s = ok(s, prof_result(0, r, node, mem=1 << 30, job=jid))
        s = ok(s, JobDone(jid, H, 3))
        s = ok(s, T.DropJob(jid))
        assert I.check_invariants(s) == []
    assert decode_state(encode_state(s)) == s
    lies = sum(1 for what, _ in history if what in ("lie", "trap", "limit"))
    assert sum(sum(st["n"].get(k, 0) for k in (I.MINORITY, I.TRAP, I.LIMIT))
               for st in I.standings(s).values()) == lies


@settings(max_examples=200, deadline=None)
@given(job=st.sampled_from(["j", "k", ""]), f=st.integers(-2, 2), r=st.integers(-2, 3),
       node=st.sampled_from(["n1", "n2", "n9", ""]), digest=st.binary(max_size=40),
       sig=st.binary(max_size=80))
def test_a_bad_signature_report_is_accepted_exactly_when_valid(job: str, f: int, r: int, node: str,
                                                                 digest: bytes, sig: bytes) -> None:
    s = one_job(swarm(), "j", ("n1", "n2"))
    valid = (job == "j" and f == 0 and r in (0, 1) and node == ("n1", "n2")[r]
             and len(digest) == 32 and len(sig) <= I.MAX_SIG)
    new, err = run(s, I.ReportBadSignature(job, f, r, node, digest, sig))
    assert (err == "") == valid, err
    assert I.check_invariants(new) == []


@settings(max_examples=300)
@given(cbor_values)
def test_a_garbage_report_decodes_to_invalid_command_only(body: object) -> None:
    with contextlib.suppress(InvalidCommand):
        cmd = T.TASK_REGISTRY.decode(cbor2.dumps(["report-bad-signature", body]))
        assert isinstance(cmd, I.ReportBadSignature)


# --------------------------------------------------------------------------- the manager's rule


def _liar_state(lies: int) -> SwarmState:
    """n2 outvoted ``lies`` times in a row (no good result between): 20 points each."""
    s = swarm(8, providers=8)
    for i in range(lies):
        jid = f"l{i}"
        s = one_job(s, jid, ("n1", "n2", "n3"), q=2, most=3)
        s = ok(ok(ok(s, prof_result(0, 0, "n1", job=jid)), prof_result(0, 1, "n2", out=H2, job=jid)),
               prof_result(0, 2, "n3", job=jid))
        s = ok(ok(s, JobDone(jid, H, 3)), T.DropJob(jid))
    return s


def test_review_records_the_score_less_the_penalty_then_revokes_below_policy() -> None:
    from consensus.state import RecordScore

    s = swarm(8, providers=8)  # every member committed at 900
    assert I.review_member(s, "n2", 90, 600) is None  # nothing changed
    assert I.review_member(s, "n2", 100, 600) == RecordScore("n2", 1000, 1)
    s = _liar_state(1)
    assert I.member_score(s, "n2", 100) == 800
    assert I.review_member(s, "n2", 100, 600) == RecordScore("n2", 800, 1)
    assert I.review_member(s, "n1", 90, 600) is None  # an honest node: untouched
    s = _liar_state(3)
    cmd = I.review_member(s, "n2", 100, 600)
    assert isinstance(cmd, Revoke) and cmd.node_id == "n2"
    assert cmd.reason == "score 400 below policy 600; integrity: penalty 60 (3 minority)"
    s2 = ok(s, cmd)
    assert I.review_member(s2, "n2", 100, 600) is None  # revoked: nothing more to decide
    assert I.review_member(s2, "n9", 100, 600) is None  # not a member


@given(att=st.integers(0, 100), lies=st.integers(0, 4), min_points=st.integers(0, 100))
@settings(max_examples=60, deadline=None)
def test_review_revokes_exactly_when_the_federation_score_is_below_policy(att: int, lies: int,
                                                                          min_points: int) -> None:
    s = _liar_state(lies)
    cmd = I.review_member(s, "n2", att, min_points * 10)
    fed = max(0, min(100, att - 20 * lies))
    assert I.federation_score(att, I.penalty(s, "n2")) == fed
    assert isinstance(cmd, Revoke) == (fed * 10 < min_points * 10)
    if not isinstance(cmd, Revoke):
        assert (cmd is None) == (fed * 10 == 900)
