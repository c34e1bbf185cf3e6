"""The local loop-stall measure (node/loop_health.py) and what the agent does with it: a node
whose own loop stalls neither counts its peers' re-attestations as missed nor lets their records
lapse for time it lost itself; a failed verdict still quarantines at once."""

from __future__ import annotations

import contextlib
import dataclasses
import time

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.loop_health import NOISE_S, LoopHealth
from overlay.peers import PeerTable
from tests.netutil import federation, fully_attested, local_config, wait_until


def _health(**kw: float) -> LoopHealth:
    return LoopHealth(clock=time.time, **kw)


def test_stalls_are_summed_since_a_time_to_a_bucket_precision() -> None:
    h = _health(bucket_s=1.0)
    h.observe(10.2, 0.005)            # noise: ignored
    h.observe(10.4, 2.0 + NOISE_S)    # a 2 s stall ending at 10.4
    h.observe(12.5, 0.5 + NOISE_S)
    assert h.stalled_s(13.0) == 0.0
    assert h.stalled_s(12.0) == pytest.approx(0.5)
    assert h.stalled_s(11.0) == pytest.approx(0.5)
    assert h.stalled_s(10.9) == pytest.approx(2.5)   # the bucket [10, 11) counts whole
    assert h.stalled_s(0.0) == pytest.approx(2.5)
    assert h.worst_s == pytest.approx(2.0) and h.total_s == pytest.approx(2.5)


def test_old_stalls_fall_out_of_the_horizon_and_memory_is_bounded() -> None:
    h = _health(bucket_s=0.5, horizon_s=10.0)
    for i in range(10_000):
        h.observe(i * 0.1, 0.1)
    assert len(h._buckets) <= int(10.0 / 0.5) + 1
    per_sample = 0.1 - NOISE_S
    # only the horizon's buckets remain: about 10.5 s of samples, 10 per second
    assert h.stalled_s(0.0) <= (10.0 + 0.5) * 10 * per_sample + 1e-6
    # the last 6 s (samples at 994.0 … 999.9)
    assert h.stalled_s(994.0) == pytest.approx(60 * per_sample, abs=per_sample + 1e-6)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        _health(period_s=0)
    with pytest.raises(ValueError):
        _health(bucket_s=1.0, horizon_s=0.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 3)), max_size=60),
       st.floats(0, 200), st.floats(0, 200))
def test_stall_sums_are_bounded_monotone_and_never_undercount(
        steps: list[tuple[float, float]], s1: float, s2: float) -> None:
    h = _health(bucket_s=0.5, horizon_s=1000.0)
    at, seen = 0.0, []
    for gap, lag in steps:
        at += gap
        h.observe(at, lag)
        seen.append((at, max(0.0, lag - NOISE_S)))
    lo, hi = sorted((s1, s2))
    assert 0.0 <= h.stalled_s(hi) <= h.stalled_s(lo) + 1e-9  # later start, never more
    for since in (lo, hi):
        exact = sum(lost for t, lost in seen if t >= since)
        bucket_start = since - since % 0.5
        slack = sum(lost for t, lost in seen if bucket_start <= t < since)
        got = h.stalled_s(since)
        assert exact - 1e-9 <= got <= exact + slack + 1e-9
    assert h.stalled_s(-1.0) == pytest.approx(sum(lost for _, lost in seen))


async def test_the_measuring_task_sees_a_blocked_loop_even_before_it_runs_again() -> None:
    h = _health(period_s=0.05)
    async with trio.open_nursery() as n:
        await n.start(h.run)
        await trio.sleep(0.2)
        assert h.stalled_s(time.time() - 10) < 0.1
        before = time.time()
        time.sleep(0.6)  # the whole loop is blocked, as by a descheduled guest
        # nothing else ran yet: the stall still shows, as the overdue wake-up
        assert h.stalled_s(before) >= 0.5
        await trio.sleep(0.2)
        assert h.stalled_s(before) >= 0.5 and h.worst_s >= 0.5
        n.cancel_scope.cancel()


def test_expired_records_get_the_grace_the_caller_grants() -> None:
    t = PeerTable()
    t.on_connected("a", [], 0)
    t.on_connected("b", [], 0)
    for pid in ("a", "b"):
        t.on_attest_result(pid, accepted=True, reason="ok", now=1, score=90, tee="sim",
                           measurement=None, record_expires_at=11)
    grace = {"a": 5.0, "b": 0.0}
    assert t.expire_records(12, lambda p: grace[p.peer_id]) == ["b"]
    assert t.is_attested("a")
    assert t.expire_records(15, lambda p: grace[p.peer_id]) == []
    assert t.expire_records(16.5, lambda p: grace[p.peer_id]) == ["a"]


def test_a_deferred_attempt_is_held_against_no_one_and_retried_early() -> None:
    t = PeerTable()
    t.on_connected("a", [], 0)
    t.on_attest_result("a", accepted=True, reason="ok", now=1, score=90, tee="sim",
                       measurement=None, record_expires_at=200)
    t.on_attest_started("a", 2)
    assert [p.peer_id for p in t.due_for_attestation(2.5, 60)] == []
    t.on_attest_deferred("a", 12, retry_in_s=15, interval_s=60)
    p = t.get("a")
    assert p is not None and p.missed == 0 and p.score == 90 and t.is_attested("a")
    assert not p.attest_in_flight
    assert [q.peer_id for q in t.due_for_attestation(26.9, 60)] == []
    assert [q.peer_id for q in t.due_for_attestation(27.0, 60)] == ["a"]
    # never later than the usual interval
    t.on_attest_deferred("a", 30, retry_in_s=600, interval_s=60)
    assert [q.peer_id for q in t.due_for_attestation(90.0, 60)] == ["a"]


def _stall_config():  # type: ignore[no-untyped-def]
    cfg = local_config()
    # A 1 s exchange budget; pings and peer exchange every 5 s: this test is about the
    # attestation path alone.
    att = dataclasses.replace(cfg.attestation, handshake_timeout_s=1.0)
    net = dataclasses.replace(cfg.network, ping_interval_s=5.0, peer_exchange_interval_s=5.0)
    return dataclasses.replace(cfg, attestation=att, network=net)


@contextlib.asynccontextmanager
async def _stalled_pair(tmp_path, *, blind: bool):  # type: ignore[no-untyped-def]
    """Two attested nodes in this process. A re-attestation of each peer is started, then the
    whole process (both nodes' loop) is blocked for 4 s: past the 1 s exchange budget and the
    3 s record lifetime (3 × re-attest). ``blind`` makes the nodes' stall measure see nothing.
    Yields the nodes and the quarantines they reported."""
    quarantined: list[tuple[str, str]] = []
    async with federation(tmp_path, 2, config=_stall_config()) as agents:
        await wait_until(lambda: fully_attested(agents), 30)
        for a in agents:
            a.on_quarantine(lambda pid, why: quarantined.append((pid, why)))
            if blind:
                a.loop_health.stalled_s = lambda since: 0.0  # type: ignore[method-assign]
        async with trio.open_nursery() as n:
            for a in agents:
                for b in agents:
                    if b is not a:
                        n.start_soon(a.attest_peer, b.host.get_id())
            # block only once every exchange is under way (its timeout running)
            while not all(p.attest_in_flight for a in agents for p in a.peers.connected()):
                await trio.sleep(0)
            time.sleep(4.0)
        yield agents, quarantined


async def test_a_node_whose_own_loop_stalls_blames_no_peer(tmp_path) -> None:
    async with _stalled_pair(tmp_path, blind=False) as (agents, quarantined):
        for a in agents:
            assert a.counters.get("attest_deferred", "local-stall") >= 1, a.counters.to_json()
            assert a.counters.get("attest_missed", "timeout") == 0
            assert a.status()["loop"]["worst_s"] >= 3.5
        assert quarantined == []
        # the retried re-attestations renew the records; no one was ever quarantined
        first = {a.peer_id: a.counters.get("attest_ok") for a in agents}
        await wait_until(lambda: all(a.counters.get("attest_ok") > first[a.peer_id]
                                     for a in agents), 10)
        assert fully_attested(agents) and quarantined == []
        # a failed verdict is still acted on at once, stall or not
        bad = agents[1]
        bad.provider.debug = True
        await wait_until(lambda: not agents[0].peers.is_attested(bad.peer_id), 10)
        assert [pid for pid, _ in quarantined] == [bad.peer_id]
        assert "debug" in quarantined[0][1]


async def test_without_the_stall_measure_the_same_stall_quarantines_healthy_peers(tmp_path) -> None:
    """The control: the same stall, the measure blinded, and the healthy peers are blamed."""
    async with _stalled_pair(tmp_path, blind=True) as (agents, quarantined):
        await wait_until(lambda: len(quarantined) >= 2, 10)
        assert {pid for pid, _ in quarantined} == {a.peer_id for a in agents}
        assert all("expired" in why or "missed" in why for _, why in quarantined), quarantined
        assert sum(a.counters.get("attest_deferred", "local-stall") for a in agents) == 0
