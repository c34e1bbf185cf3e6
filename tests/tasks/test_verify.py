"""Re-running a committed placement (node/tasks/verify.py): the scheduler's own decision is
verified, a placement the scheduler would not make is a mismatch, different inputs are
unverifiable; over random federations and jobs (hypothesis)."""

from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from consensus import tasks as ct
from consensus import trust
from consensus.scheduler import Measurements, Offer, inputs_digest, schedule
from consensus.state import apply
from node.tasks.verify import check_assignment, check_draw, free_capacity
from overlay.host import peer_id_of
from tests.consensus.test_adaptive import adaptive, drawn, with_trust
from tests.consensus.test_tasks import ok, result, submit, swarm


def _decide(s, offers, job_id="j"):
    req = ct.job_request(s, job_id)
    free = free_capacity(s, offers)
    d = schedule(s, offers, req, 42, free, Measurements())
    assert d.ok, d.explain()
    return ct.AssignFragments(job_id, 42, tuple(ct.Assignment(p.fragment, p.replica, p.node_id)
                                                for p in d.placements),
                              inputs_digest(offers, req, free, Measurements()))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 9), providers=st.integers(2, 4), frags=st.integers(1, 4),
       r=st.integers(1, 2), cores=st.integers(1, 4))
def test_the_schedulers_own_decision_verifies_and_a_swapped_node_does_not(n, providers, frags, r, cores):
    s = ok(swarm(n, providers), submit(n=frags, r=r))
    offers = {f"n{i}": Offer(f"n{i}", cores, 4096) for i in range(n)}
    req = ct.job_request(s, "j")
    assume(schedule(s, offers, req, 42, free_capacity(s, offers), Measurements()).ok)
    cmd = _decide(s, offers)
    assert check_assignment(cmd, s, offers, Measurements()) == ("verified", "")
    # the manager puts the first replica elsewhere (a node the scheduler did not pick)
    first = cmd.assignments[0]
    other = next((f"n{i}" for i in range(n) if f"n{i}" != first.node_id), None)
    forged = dataclasses.replace(cmd, assignments=(dataclasses.replace(first, node_id=other),
                                                   *cmd.assignments[1:]))
    verdict, why = check_assignment(forged, s, offers, Measurements())
    assert verdict == "mismatch" and "placements differ" in why


def test_other_offers_make_it_unverifiable_not_a_mismatch():
    s = ok(swarm(6, 3), submit(n=2, r=1))
    offers = {f"n{i}": Offer(f"n{i}", 2, 4096) for i in range(6)}
    cmd = _decide(s, offers)
    fewer = {k: v for k, v in offers.items() if k != "n5"}
    assert check_assignment(cmd, s, fewer, Measurements())[0] == "unverifiable"
    assert check_assignment(cmd, ok(swarm(6, 3), submit("k")), offers, Measurements())[0] == "unverifiable"


def test_a_wave_is_checked_against_the_first_pending_replicas():
    s = ok(swarm(4, 4), submit(n=6, r=1))
    offers = {f"n{i}": Offer(f"n{i}", 1, 4096) for i in range(4)}
    req = ct.job_request(s, "j")
    sub = dataclasses.replace(req, wants=tuple(req.wants)[:4])
    free = free_capacity(s, offers)
    d = schedule(s, offers, sub, 9, free, Measurements())
    assert d.ok and len(d.placements) == 4
    cmd = ct.AssignFragments("j", 9, tuple(ct.Assignment(p.fragment, p.replica, p.node_id)
                                           for p in d.placements),
                             inputs_digest(offers, sub, free, Measurements()))
    assert check_assignment(cmd, s, offers, Measurements()) == ("verified", "")


# --------------------------------------------------------------------------- spot-check draws


def test_a_members_check_of_a_spot_check_draw() -> None:
    """A solo result's draw must be the committing manager's signature over the result: a
    draw signed by another key (a manager choosing which solo results go unchecked, or
    forging the manager's word) is a mismatch."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    s = with_trust(swarm(), {"n1": trust.CV_CAP})
    s = dataclasses.replace(s, manager_term=1, manager_id=peer_id_of(key))
    s = ok(s, adaptive(n=1, r=2))
    s = ok(s, ct.AssignFragments("j", 1, (ct.Assignment(0, 0, "n1"),)))
    good, forged = drawn(s, result(0, 0, "n1"), key), drawn(s, result(0, 0, "n1"), other)
    after, res = apply(s, good, ct.TASK_REGISTRY)
    assert res.ok
    assert check_draw(good, after) == ("verified", "")
    verdict, why = check_draw(forged, after)
    assert verdict == "mismatch" and "signature" in why
    assert check_draw(good, dataclasses.replace(after, manager_id="not-a-peer-id"))[0] == "unverifiable"
