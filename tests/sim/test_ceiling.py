"""The empty event loop behind the simulator's speed ceiling (sim/ceiling.py)."""

from __future__ import annotations

import json

import pytest

from sim import ceiling


def test_empty_loop_reports_a_rate():
    assert ceiling.empty_loop_events_per_s(pending=50, events=2_000) > 0


@pytest.mark.parametrize("pending,events", [(0, 10), (10, 0), (-1, 5)])
def test_empty_loop_refuses_nonsense(pending, events):
    with pytest.raises(ValueError):
        ceiling.empty_loop_events_per_s(pending, events)


def test_core_event_costs_run_the_production_cores():
    costs = ceiling.core_event_costs_us(nodes=50, rounds=200)
    assert set(costs) == {"duplicate_push", "idle_tick", "ping_answered"}
    assert all(v > 0 for v in costs.values())
    with pytest.raises(ValueError):
        ceiling.core_event_costs_us(nodes=3)


def test_main_prints_one_json_line(capsys):
    assert ceiling.main(["--pending", "20", "--events", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pending"] == 20 and out["events"] == 500
    assert out["events_per_s"] > 0 and out["engine"] == "cpython"
    assert set(out["core_event_costs_us"]) == {"duplicate_push", "idle_tick", "ping_answered"}
