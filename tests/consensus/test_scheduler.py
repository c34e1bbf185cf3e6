"""The scheduler: every chosen node qualifies, replicas are distinct and anti-affine, the same
inputs give the same decision, the numpy engine equals the pure-Python reference, and a failed
decision says which filter removed whom."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.scheduler import (
    FILTERS,
    CandidateTable,
    Decision,
    JobRequest,
    Measurements,
    Offer,
    Placement,
    Requirements,
    Want,
    Weights,
    check_decision,
    schedule,
    schedule_reference,
)
from consensus.state import ADMITTED, REVOKED, SUSPECT, Member, SwarmState

TEES = ("sev-snp", "tdx", "sgx")
STATUSES = (ADMITTED, ADMITTED, ADMITTED, SUSPECT, REVOKED, "left")


def world(seed: int, n: int) -> tuple[SwarmState, dict[str, Offer], Measurements]:
    rng = random.Random(seed)
    members, offers = {}, {}
    rtt: dict[str, dict[str, int]] = {}
    bw: dict[str, dict[str, int]] = {}
    for i in range(n):
        nid = f"n{i:03d}"
        members[nid] = Member(nid, i + 1, rng.choice(STATUSES), f"p{rng.randrange(4)}",
                              f"r{rng.randrange(3)}", rng.choice(TEES), rng.randrange(0, 1001, 50), 0)
        if rng.random() < 0.9:
            offers[nid] = Offer(nid, rng.choice([1, 2, 4, 8]), rng.choice([512, 1024, 4096]),
                                tuple(rng.sample(["gpu", "npu"], rng.randrange(3))),
                                rng.randrange(0, 3000, 500), rng.randrange(0, 3000, 500))
    ids = sorted(members)
    for a in ids:
        for b in ids:
            if rng.random() < 0.3:
                rtt.setdefault(a, {})[b] = rng.randrange(1, 200)
            if rng.random() < 0.2:
                bw.setdefault(a, {})[b] = rng.randrange(1, 50_000)
    return SwarmState(members=members), offers, Measurements(rtt, bw)


@st.composite
def jobs(draw: st.DrawFn, ids: list[str]) -> JobRequest:
    def some(values: list[str], k: int) -> tuple[str, ...]:
        # Mostly unconstrained, so that about half the decisions place something.
        return tuple(draw(st.sets(st.sampled_from(values), min_size=k, max_size=k))) if draw(
            st.integers(0, 3)) == 0 else ()

    req = Requirements(
        tee_kinds=some(list(TEES), 2),
        min_score=draw(st.sampled_from([0, 0, 300, 600])),
        cores=draw(st.sampled_from([1, 1, 2, 4])),
        memory_mib=draw(st.sampled_from([64, 512, 1024])),
        accelerators=some(["gpu", "npu", "tpu"], 1),
        regions=some(["r0", "r1", "r2"], 2),
        providers=some(["p0", "p1", "p2", "p3"], 3),
        max_price_core_s=draw(st.sampled_from([None, None, 0, 2500])),
        max_price_gib=draw(st.sampled_from([None, 1500])),
    )
    weights = draw(st.sampled_from([Weights(), Weights(1000, 0, 0, 0, 0), Weights(0, 0, 0, 1000, 0),
                                    Weights(10, 20, 30, 40, 50)]))
    return JobRequest(
        "job", draw(st.integers(1, 6)), draw(st.sampled_from([1, 1, 2, 3])), req, weights,
        client=draw(st.sampled_from(["", *ids[:5]])),
        input_holders=tuple(draw(st.lists(st.sampled_from(ids), max_size=3))),
        fragment_bytes=draw(st.sampled_from([0, 1 << 20, 5 << 30])))


WORLDS = {s: world(s, 40) for s in range(4)}


def _qualifies(state: SwarmState, offers: dict[str, Offer], nid: str, req: Requirements) -> bool:
    m, o = state.members[nid], offers.get(nid)
    return (m.status == ADMITTED and o is not None
            and (not req.tee_kinds or m.tee_kind in req.tee_kinds) and m.score >= req.min_score
            and (not req.regions or m.region in req.regions)
            and (not req.providers or m.provider in req.providers)
            and set(req.accelerators) <= set(o.accelerators)
            and (req.max_price_core_s is None or o.price_core_s <= req.max_price_core_s)
            and (req.max_price_gib is None or o.price_gib <= req.max_price_gib)
            and o.cores >= req.cores and o.memory_mib >= req.memory_mib)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(WORLDS)), st.data(), st.integers(0, 2**63))
def test_decisions_are_sound_deterministic_and_equal_to_the_reference(w: int, data: st.DataObject,
                                                                       seed: int) -> None:
    state, offers, meas = WORLDS[w]
    job = data.draw(jobs(sorted(state.members)))
    d = schedule(state, offers, job, seed, measurements=meas)
    assert d == schedule_reference(state, offers, job, seed, measurements=meas)
    assert d == schedule(state, offers, job, seed, measurements=meas)
    assert check_decision(d, state, offers, job, measurements=meas) == (True, "")
    if not d.ok:
        assert d.placements == () and d.reason
        assert sum(f.removed for f in d.filters) + d.feasible == d.candidates
        return
    assert sorted((p.fragment, p.replica) for p in d.placements) == [
        (f, r) for f in range(job.fragments) for r in range(job.redundancy)]
    for p in d.placements:
        assert _qualifies(state, offers, p.node_id, job.requirements), p
    for f in range(job.fragments):
        nodes = [p.node_id for p in d.placements if p.fragment == f]
        assert len(set(nodes)) == len(nodes)
        assert len({state.members[n].provider for n in nodes}) == len(nodes)
    per_node: dict[str, int] = {}
    for p in d.placements:
        per_node[p.node_id] = per_node.get(p.node_id, 0) + 1
    for nid, k in per_node.items():
        o = offers[nid]
        assert k * job.requirements.cores <= o.cores and k * job.requirements.memory_mib <= o.memory_mib


def _flat_world(n: int, providers: int = 4) -> tuple[SwarmState, dict[str, Offer]]:
    members = {f"n{i:02d}": Member(f"n{i:02d}", i + 1, ADMITTED, f"p{i % providers}", "eu", "sev-snp", 900, 0)
               for i in range(n)}
    return SwarmState(members=members), {k: Offer(k, 4, 4096) for k in members}


def test_fragments_spread_before_a_node_takes_a_second_one() -> None:
    state, offers = _flat_world(8)
    d = schedule(state, offers, JobRequest("j", 8, 1, Requirements(cores=1)), seed=7)
    assert d.ok and len({p.node_id for p in d.placements}) == 8
    d = schedule(state, offers, JobRequest("j", 12, 1, Requirements(cores=1)), seed=7)
    assert d.ok and len({p.node_id for p in d.placements}) == 8


def test_the_seed_breaks_ties_differently_but_reproducibly() -> None:
    state, offers = _flat_world(20)
    job = JobRequest("j", 1, 1)
    picks = {schedule(state, offers, job, seed).placements[0].node_id for seed in range(40)}
    assert len(picks) > 1
    assert schedule(state, offers, job, 3) == schedule(state, offers, job, 3)


def test_better_score_and_lower_price_win() -> None:
    state, offers = _flat_world(6)
    members = dict(state.members)
    members["n03"] = dataclasses.replace(members["n03"], score=1000)
    state = dataclasses.replace(state, members=members)
    d = schedule(state, offers, JobRequest("j", 1, 1), seed=1)
    assert d.placements == (Placement(0, 0, "n03"),)
    offers = {k: dataclasses.replace(o, price_core_s=0 if k == "n05" else 5000) for k, o in offers.items()}
    d = schedule(state, offers, JobRequest("j", 1, 1, weights=Weights(0, 0, 0, 1000, 0)), seed=1)
    assert d.placements == (Placement(0, 0, "n05"),)


def test_nearest_to_the_data_wins_on_latency() -> None:
    state, offers = _flat_world(6)
    meas = Measurements(rtt_ms={"n02": {"n00": 5}, "n00": {"n04": 300}})
    d = schedule(state, offers, JobRequest("j", 1, 1, weights=Weights(0, 1000, 0, 0, 0),
                                           input_holders=("n00",)), seed=1, measurements=meas)
    # n00 itself is unmeasured to itself (1000 ms): n02 at 5 ms is the nearest.
    assert d.placements == (Placement(0, 0, "n02"),)


def test_nothing_fits_names_each_filter_with_examples() -> None:
    state, offers = _flat_world(6)
    members = dict(state.members)
    members["n00"] = dataclasses.replace(members["n00"], status=REVOKED, reason="bad quote")
    members["n01"] = dataclasses.replace(members["n01"], tee_kind="tdx")
    members["n02"] = dataclasses.replace(members["n02"], score=100)
    state = dataclasses.replace(state, members=members)
    del offers["n03"]
    offers["n04"] = dataclasses.replace(offers["n04"], price_core_s=9000)
    req = Requirements(tee_kinds=("sev-snp",), min_score=500, cores=8, max_price_core_s=1000)
    d = schedule(state, offers, JobRequest("j", 1, 1, req), seed=1)
    assert not d.ok and d.feasible == 0
    by = {f.name: f for f in d.filters}
    assert [f.name for f in d.filters] == list(FILTERS)
    assert by["status"].removed == 1 and "revoked (bad quote)" in by["status"].examples[0]
    assert by["capability"].examples == ("n03: no capability record",)
    assert by["tee_kind"].examples == ("n01: tee tdx not in ['sev-snp']",)
    assert by["score"].examples == ("n02: score 100 < 500",)
    assert by["price"].removed == 1 and by["capacity"].removed == 1
    assert "n05: free 4 cores" in by["capacity"].examples[0]
    assert "status removed 1" in d.explain() and "0 feasible" in d.explain()
    assert d == schedule_reference(state, offers, JobRequest("j", 1, 1, req), seed=1)


def test_too_few_providers_for_the_replicas_is_explained() -> None:
    state, offers = _flat_world(6, providers=2)
    d = schedule(state, offers, JobRequest("j", 2, 3), seed=1)
    assert not d.ok and "3 distinct providers" in d.reason and "span 2" in d.reason


def test_a_reassignment_avoids_the_other_replicas_and_failed_nodes() -> None:
    state, offers = _flat_world(8)
    want = Want(0, 1, avoid_nodes=("n00", "n01"), avoid_providers=("p0",))
    d = schedule(state, offers, JobRequest("j", 1, 2, wants=(want,)), seed=5)
    assert d.ok and len(d.placements) == 1
    p = d.placements[0]
    assert (p.fragment, p.replica) == (0, 1)
    assert p.node_id not in ("n00", "n01") and state.members[p.node_id].provider != "p0"


def test_free_capacity_limits_placement() -> None:
    state, offers = _flat_world(4)
    free = {"n00": (0, 4096), "n01": (4, 100), "n02": (1, 4096), "n03": (4, 4096)}
    d = schedule(state, offers, JobRequest("j", 1, 1, Requirements(cores=2, memory_mib=1024)), 1, free)
    assert d.placements == (Placement(0, 0, "n03"),)
    d = schedule(state, offers, JobRequest("j", 3, 1, Requirements(cores=2, memory_mib=1024)), 1, free)
    assert not d.ok  # n03 holds two such fragments, nobody else one


def test_check_decision_refuses_a_tampered_decision() -> None:
    state, offers = _flat_world(8)
    job = JobRequest("j", 2, 2)
    d = schedule(state, offers, job, seed=9)
    other = next(n for n in sorted(state.members) if all(p.node_id != n for p in d.placements))
    forged = dataclasses.replace(d, placements=(Placement(0, 0, other), *d.placements[1:]))
    ok, why = check_decision(forged, state, offers, job)
    assert not ok and "placements differ" in why and other in why
    ok, why = check_decision(dataclasses.replace(d, ok=False, placements=()), state, offers, job)
    assert not ok and "ok=False" in why


def test_invalid_requests_are_refused_with_every_reason() -> None:
    state, offers = _flat_world(3)
    bad = JobRequest("j", 0, 9, Requirements(cores=0, min_score=2000), Weights(0, 0, 0, 0, 0))
    d: Decision = schedule(state, offers, bad, 1)
    assert not d.ok
    for part in ("fragments 0", "redundancy 9", "cores 0", "min_score 2000", "weight"):
        assert part in d.reason
    assert d == schedule_reference(state, offers, bad, 1)


def test_a_table_schedules_many_jobs_like_single_calls() -> None:
    state, offers, meas = WORLDS[1]
    table = CandidateTable(state, offers, None, meas)
    ids = sorted(state.members)
    for k in range(30):
        job = JobRequest(f"j{k}", 1 + k % 4, 1 + k % 2, Requirements(cores=1 + k % 2),
                         input_holders=(ids[k],), client=ids[-k - 1])
        assert table.schedule(job, k) == schedule(state, offers, job, k, measurements=meas)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([0, 1]), st.data())
def test_large_worlds_with_ties_match_the_reference(seed: int, flat: int, data: st.DataObject) -> None:
    """Hundreds of candidates, so the engine takes its sampled top-k path, including worlds where
    most scores tie (the prefix must still be the top of the full ranking)."""
    state, offers = _flat_world(300, providers=7) if flat else WORLD_300[:2]
    meas = Measurements() if flat else WORLD_300[2]
    job = data.draw(jobs(sorted(state.members)[:40]))
    d = schedule(state, offers, job, seed, measurements=meas)
    assert d == schedule_reference(state, offers, job, seed, measurements=meas)


WORLD_300 = world(99, 300)


def test_the_inputs_digest_binds_every_input_a_decision_reads() -> None:
    from consensus.scheduler import inputs_digest

    state, offers, meas = WORLDS[2]
    ids = sorted(state.members)
    job = JobRequest("j", 2, 2, client=ids[0], input_holders=(ids[1],))
    d0 = inputs_digest(offers, job, None, meas)
    assert d0 == inputs_digest(dict(reversed(list(offers.items()))), job, None, meas)
    first = sorted(offers)[0]
    dearer = dataclasses.replace(offers[first], price_core_s=offers[first].price_core_s + 1)
    changed = {**offers, first: dearer}
    assert inputs_digest(changed, job, None, meas) != d0
    assert inputs_digest(offers, job, {first: (1, 1)}, meas) != d0
    assert inputs_digest(offers, dataclasses.replace(job, redundancy=1), None, meas) != d0
    rtt = {a: dict(row) for a, row in meas.rtt_ms.items()}
    rtt.setdefault(ids[5], {})[ids[0]] = 1234  # a measurement toward the client
    assert inputs_digest(offers, job, None, Measurements(rtt, meas.bandwidth_kib_s)) != d0
    rtt = {a: dict(row) for a, row in meas.rtt_ms.items()}
    rtt.setdefault(ids[5], {})[ids[9]] = 1234  # between two nodes the job does not read
    assert inputs_digest(offers, job, None, Measurements(rtt, meas.bandwidth_kib_s)) == d0
