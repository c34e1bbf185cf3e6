"""node/chaos/schedule.py: one seed, one schedule; windows well-formed whatever the seed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chaos.schedule import (
    FAULT_KINDS,
    MANAGER,
    PARTITION_SHAPES,
    SLOW_CPU_PCT,
    ScheduleConfig,
    ScheduleError,
    generate,
    last_heal_s,
    partition_groups,
)

kinds_st = st.lists(st.sampled_from(FAULT_KINDS), min_size=1, max_size=7, unique=True)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(3, 15), duration=st.floats(40, 900), kinds=kinds_st)
def test_schedule_is_replayable_and_well_formed(seed, n, duration, kinds):
    cfg = ScheduleConfig()
    faults = generate(seed, n, duration, kinds, cfg)
    assert faults == generate(seed, n, duration, kinds, cfg)  # replay: same seed, same faults
    assert faults, "a run with room for a window gets at least one"
    prev_end = 0.0
    for f in faults:
        assert f.kind in kinds
        assert cfg.warmup_s <= f.start_s < f.end_s
        assert f.start_s >= prev_end  # one fault at a time
        prev_end = f.end_s
        target = f.params.get("target")
        assert target is None or target == MANAGER or 0 <= target < n
        if f.kind == "partition":
            assert f.params["shape"] in PARTITION_SHAPES
            flat = [i for g in f.params["groups"] for i in g]
            assert len(flat) == len(set(flat)) and all(0 <= i < n for i in flat)
            if f.params["shape"] == "bridge":
                assert f.params["bridge"] not in flat and len(flat) == n - 1
            elif f.params["shape"] != "isolate-manager":
                assert sorted(flat) == list(range(n))
        if f.kind == "netem":
            assert f.params["nodes"] and all(0 <= i < n for i in f.params["nodes"])
        if f.kind == "attest":
            assert target != 0
        if f.kind == "slow":
            assert target is not None and f.params["cpu_pct"] in SLOW_CPU_PCT
    assert last_heal_s(faults) + cfg.final_calm_s <= duration
    assert sum(f.kind == "attest" for f in faults) <= 1


def test_first_windows_cover_every_requested_kind_in_order():
    faults = generate(7, 7, 300, ["partition", "netem", "kill", "pause", "skew", "disk"])
    assert [f.kind for f in faults[:6]] == ["partition", "netem", "kill", "pause", "skew", "disk"]


def test_different_seeds_differ():
    a = generate(1, 7, 300, FAULT_KINDS)
    b = generate(2, 7, 300, FAULT_KINDS)
    assert a != b


@pytest.mark.parametrize("shape", ["halves", "majority", "isolate"])
def test_partition_shapes_split_everyone(shape):
    import random

    groups = partition_groups(shape, 7, random.Random(1))
    assert sorted(i for g in groups for i in g) == list(range(7))
    if shape == "majority":
        assert len(groups[0]) > len(groups[1])
    if shape == "isolate":
        assert len(groups[1]) == 1


@pytest.mark.parametrize(("args", "msg"), [
    ((1, 7, 300, ["flood"]), "unknown fault kind"),
    ((1, 2, 300, ["kill"]), "at least 3"),
    ((1, 7, 20, ["kill"]), "no room"),
    ((1, 7, 300, []), "no fault kinds"),
])
def test_impossible_schedules_are_refused_with_a_reason(args, msg):
    with pytest.raises(ScheduleError, match=msg):
        generate(*args)


def test_bad_config_is_refused():
    with pytest.raises(ScheduleError):
        generate(1, 7, 300, ["kill"], ScheduleConfig(fault_s=(5.0, 1.0)))
