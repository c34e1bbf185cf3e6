"""node/chaos/checkers.py: each checker passes a good history and names what is wrong in a bad
one; the manager checker agrees with a naive reference on random samples."""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chaos import checkers
from node.chaos.checkers import StoreEntry
from node.chaos.history import Op


def op(index, f, typ, arg=None, result=None, node=0, t=0.0, done=1.0):
    return Op(index, "c0", f, node, t, done, typ, arg, result)


def announce(index, term, who, committed=True):
    data = cbor2.dumps(["announce-manager", {"term": term, "node_id": who}], canonical=True)
    return StoreEntry(index, term, "normal", data, committed)


# ------------------------------------------------------------------ managers


def test_one_manager_per_term_passes():
    samples = [{"term": 1, "manager": "A", "role": "follower", "peer_id": "B"},
               {"term": 1, "manager": "A", "role": "manager", "peer_id": "A"},
               {"term": 2, "manager": "C", "role": "council", "peer_id": "B"}]
    stores = {0: [announce(1, 1, "A"), announce(5, 2, "C")], 1: [announce(1, 1, "A")]}
    ch = checkers.check_managers(samples, stores)
    assert ch.ok, ch.violations
    assert ch.figures["terms"] == 2


def test_two_managers_in_one_term_from_samples():
    samples = [{"term": 3, "manager": "A", "role": "follower", "peer_id": "X", "time_s": 1},
               {"term": 3, "manager": None, "role": "manager", "peer_id": "B", "time_s": 2}]
    ch = checkers.check_managers(samples, {})
    assert not ch.ok and "term 3: 2 managers" in ch.violations[0]


def test_two_managers_in_one_term_from_stores_even_uncommitted():
    stores = {0: [announce(4, 2, "A")], 1: [announce(4, 2, "B", committed=False)]}
    ch = checkers.check_managers([], stores)
    assert not ch.ok and "term 2" in ch.violations[0]


def test_an_announcement_in_another_terms_entry_is_named():
    ch = checkers.check_managers([], {0: [StoreEntry(3, 5, "normal", cbor2.dumps(
        ["announce-manager", {"term": 4, "node_id": "A"}]), True)]})
    assert not ch.ok and "entry term 5 announces term 4" in ch.violations


def test_undecodable_entries_are_no_evidence():
    assert checkers.announced(StoreEntry(1, 1, "normal", b"\xff\x00garbage", True)) is None
    assert checkers.announced(StoreEntry(1, 1, "conf", b"", True)) is None
    assert checkers.announced(StoreEntry(1, 1, "normal", cbor2.dumps(["join", {}]), True)) is None


samples_st = st.lists(st.fixed_dictionaries({
    "term": st.integers(0, 4), "manager": st.sampled_from([None, "A", "B", "C"]),
    "role": st.sampled_from(["manager", "follower", "council"]),
    "peer_id": st.sampled_from(["A", "B", "C"])}),
    max_size=30)


@settings(max_examples=300, deadline=None)
@given(samples_st)
def test_manager_checker_matches_a_naive_reference(samples):
    seen: dict[int, set[str]] = {}
    for s in samples:
        if s["term"] > 0:
            if s["manager"]:
                seen.setdefault(s["term"], set()).add(s["manager"])
            if s["role"] == "manager":
                seen.setdefault(s["term"], set()).add(s["peer_id"])
    expected_ok = all(len(v) <= 1 for v in seen.values())
    assert checkers.check_managers(samples, {}).ok == expected_ok


# ------------------------------------------------------------------ logs


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.binary(max_size=8)), min_size=1, max_size=20),
       st.integers(0, 19), st.integers(1, 3))
def test_committed_prefixes_must_agree(entries, flip, nodes):
    log = [StoreEntry(i + 1, t, "normal", d, True) for i, (t, d) in enumerate(entries)]
    stores = {n: list(log) for n in range(nodes + 1)}
    assert checkers.check_logs(stores).ok
    k = flip % len(log)
    e = log[k]
    stores[nodes] = [*log[:k], StoreEntry(e.index, e.term + 1, e.kind, e.data, True), *log[k + 1:]]
    bad = checkers.check_logs(stores)
    assert not bad.ok and f"index {e.index}" in bad.violations[0]
    stores[nodes][k] = StoreEntry(e.index, e.term + 1, e.kind, e.data, False)  # uncommitted: allowed
    assert checkers.check_logs(stores).ok


# ------------------------------------------------------------------ data


def test_puts_acknowledged_read_back_and_strays():
    ops = [op(0, "put", "ok", {"sha256": "aa"}, {"object_id": "o1"}, node=1),
           op(1, "put", "ok", {"sha256": "bb"}, {"object_id": "o2"}, node=1),
           op(2, "put", "fail", {"sha256": "cc"}, {"error": "x"}, node=2),
           op(3, "put", "info", {"sha256": "dd"}, None, node=3)]
    good = checkers.check_puts(ops, {"o1": "aa", "o2": "bb"}, {1: ["o1", "o2"], 3: ["o9"]})
    assert good.ok, good.violations
    assert good.figures["unacknowledged_visible"] == 1  # allowed: one indeterminate put on node 3
    bad = checkers.check_puts(ops, {"o1": "aa", "o2": "ff"}, {1: ["o1", "o2"], 2: ["o7"]})
    assert not bad.ok
    text = " ".join(bad.violations)
    assert "o2" in text and "other bytes" in text and "node 2 lists 1 object" in text
    lost = checkers.check_puts(ops, {"o1": None}, {})
    assert "cannot be read" in lost.violations[0] and "never read back" in lost.violations[1]


def test_reads_must_return_what_was_put():
    ok = op(0, "get", "ok", {}, {"object_id": "o", "sha256": "a", "expected": "a"})
    bad = op(1, "final-read", "ok", {}, {"object_id": "o", "sha256": "b", "expected": "a"})
    assert checkers.check_reads([ok]).ok
    assert not checkers.check_reads([ok, bad]).ok


def test_jobs_result_and_fragments_counted_once():
    sub = op(0, "submit", "ok", {"expected_sha256": "e"}, {"job_id": "j"})
    assert checkers.check_jobs([sub], {"j": {"status": "done", "result_sha256": "e", "fragments": 3,
                                             "done_fragments": [2, 0, 1]}}).ok
    twice = checkers.check_jobs([sub], {"j": {"status": "done", "result_sha256": "e", "fragments": 3,
                                              "done_fragments": [0, 1, 1, 2]}})
    assert not twice.ok and "counted twice [1]" in twice.violations[0]
    wrong = checkers.check_jobs([sub], {"j": {"status": "done", "result_sha256": "x", "fragments": 1,
                                              "done_fragments": [0]}})
    assert not wrong.ok and "local computation" in wrong.violations[0]
    assert not checkers.check_jobs([sub], {}).ok  # acknowledged, then forgotten
    lost = checkers.check_jobs([sub], {"j": {"status": "done", "result_error": "timeout", "fragments": 1,
                                             "done_fragments": [0]}})
    assert "gives no result: timeout" in lost.violations[0]
    assert checkers.check_jobs([sub], {"j": {"status": "failed"}}).ok  # not completed: no claim
    # jobs left unchecked are counted by why, so that a run that checked nothing says so
    subs = [op(i, "submit", "ok", {"expected_sha256": "e"}, {"job_id": f"j{i}"}) for i in range(4)]
    mixed = checkers.check_jobs(subs, {"j0": {"status": "forgotten"}, "j1": {"status": None},
                                       "j2": {"status": "failed"},
                                       "j3": {"status": "done", "result_sha256": "e", "fragments": 1,
                                              "done_fragments": [0]}})
    assert mixed.ok
    assert mixed.figures == {"submitted": 4, "completed": 1, "forgotten": 1, "no-end-seen": 1, "failed": 1}


# ------------------------------------------------------------------ state


def test_digests_converge_or_are_named():
    assert checkers.check_digests({0: {"applied_index": 9, "digest": "d"},
                                   1: {"applied_index": 10, "digest": "d"}}).ok
    split = checkers.check_digests({0: {"applied_index": 9, "digest": "d"},
                                    1: {"applied_index": 9, "digest": "e"}})
    assert not split.ok and "applied index 9: 2 different states" in split.violations[0]
    behind = checkers.check_digests({0: {"applied_index": 9, "digest": "d"},
                                     1: {"applied_index": 12, "digest": "e"}})
    assert not behind.ok and "did not converge" in behind.violations[0]


def test_revoked_node_never_takes_part_again():
    base = {"peer_id": "B", "role": "follower", "manager": "A", "council": ["A"], "attested": ["A"]}
    samples = [{**base, "time_s": 1, "revoked": []},
               {**base, "time_s": 5, "revoked": ["X"]},
               {**base, "time_s": 6, "revoked": ["X"]}]
    final = {1: {"peer_id": "B", "revoked": ["X"]}}
    ch = checkers.check_revoked("X", 2.0, samples, final)
    assert ch.ok and ch.figures["revoked_after_s"] == 3.0
    back = [*samples, {**base, "time_s": 7, "revoked": ["X"], "manager": "X", "council": ["X"],
                       "attested": ["X"]}]
    stale_self = [*samples, {**base, "peer_id": "X", "time_s": 8, "revoked": [], "council": ["X"],
                             "role": "council", "attested": []}]
    assert checkers.check_revoked("X", 2.0, stale_self, final).ok  # its own stale view
    bad = checkers.check_revoked("X", 2.0, back, final)
    assert not bad.ok and len(bad.violations) == 3
    never = checkers.check_revoked("X", 2.0, samples[:1], {1: {"peer_id": "B", "revoked": []}})
    assert "never revoked" in never.violations[-1] and "does not hold" in never.violations[0]
    assert checkers.check_revoked(None, None, samples, final).ok


def test_recovery_bound():
    assert checkers.check_recovery(100.0, {"manager": 110.0, "attested": 120.0}, 30).ok
    late = checkers.check_recovery(100.0, {"manager": 150.0, "repairs": None}, 30)
    assert not late.ok and len(late.violations) == 2 and late.figures["manager"] == 50.0


def test_manager_gap_and_availability_figures():
    faults = [{"kind": "kill", "start_s": 10.0, "end_s": 20.0,
               "params": {"target": "manager", "resolved_target": {"peer_id": "A", "term": 1}}},
              {"kind": "pause", "start_s": 30.0, "end_s": 40.0, "params": {"target": 2}}]
    samples = [{"time_s": 11, "peer_id": "B", "manager": "A", "term": 1},
               {"time_s": 13.5, "peer_id": "B", "manager": "C", "term": 2}]
    assert checkers.manager_gaps(samples, faults) == [
        {"fault": "kill", "start_s": 10.0, "new_manager_after_s": 3.5}]
    ops = [op(0, "get", "ok", node=0, t=5), op(1, "get", "fail", node=1, t=6),
           op(2, "status", "ok", node=4, t=6), op(3, "get", "ok", node=0, t=50)]
    av = checkers.availability(ops, [(0.0, 10.0, {0, 1})])
    assert av["get"] == {"ok": 1, "total": 2, "fraction": 0.5}
    assert av["status"]["total"] == 0
