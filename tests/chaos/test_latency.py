"""node/chaos/latency.py: operations split by fault window, pure."""

from __future__ import annotations

import json

import pytest

from node.chaos.history import Op
from node.chaos.latency import GROUPS, main, summarize, windows_of


def op(f: str, node: int, at: float, took: float | None, typ: str = "ok", process: str = "client0") -> Op:
    return Op(0, process, f, node, at, None if took is None else at + took, typ, None, None)


def test_operations_fall_in_the_target_others_or_calm_groups():
    windows = [(10.0, 20.0, 0), (30.0, 40.0, None)]
    ops = [
        op("put", 0, 12.0, 2.0),           # the target, in its window
        op("put", 1, 12.0, 0.5),           # another node, in a window
        op("put", 0, 35.0, 0.4),           # a window without a target: "others"
        op("put", 2, 50.0, 0.3),           # calm
        op("put", 2, 21.0, 9.0),           # settling after a window: left out
        op("put", 2, 1.0, 9.0),            # warm-up: left out
        op("get", 1, 50.0, None, "info"),  # no completion: counted, no latency
        op("status", 1, 50.0, 0.01, process="monitor"),  # the monitor's: left out
        op("get", 1, 51.0, 0.2, "fail"),
    ]
    t = summarize(ops, windows)
    assert t["put"][GROUPS[0]] == {"n": 1, "ok": 1, "median_s": 2.0, "max_s": 2.0}
    assert t["put"][GROUPS[1]]["n"] == 2 and t["put"][GROUPS[1]]["max_s"] == 0.5
    assert t["put"][GROUPS[2]]["n"] == 1
    assert t["get"][GROUPS[2]] == {"n": 2, "ok": 0, "median_s": pytest.approx(0.2),
                                   "max_s": pytest.approx(0.2)}
    assert "status" not in t


def test_the_command_reads_a_run_and_refuses_a_missing_one(tmp_path, capsys):
    (tmp_path / "verdict.json").write_text(json.dumps({"schedule": [
        {"kind": "slow", "start_s": 10.0, "end_s": 20.0, "params": {"target_index": 0}}]}))
    lines = [{"index": 0, "process": "client0", "type": "invoke", "f": "put", "time_s": 12.0, "node": 0,
              "value": None},
             {"index": 0, "process": "client0", "type": "ok", "f": "put", "time_s": 13.5, "node": 0,
              "value": None}]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert windows_of(json.loads((tmp_path / "verdict.json").read_text())) == [(10.0, 20.0, 0)]
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "put     target, in a window  n=   1 ok=   1 median  1500.0 ms max  1500.0 ms" in out
    assert main([str(tmp_path / "nope")]) == 1
