"""The ``sim`` command: SEED first, JSON report schema, plot, exit status."""

from __future__ import annotations

import argparse
import json

from sim import cli

REQUIRED = {"seed", "nodes", "scenario", "virtual_time_s", "wall_time_s", "trace_digest",
            "dissemination", "detection", "revocation", "messages_per_node_per_s",
            "bytes_per_node_per_s", "invariants"}


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(["--engine", "cpython", *argv])  # in-process: capsys sees the output


def test_run_writes_report_and_prints_seed_first(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = cli.run(parse("--nodes", "20", "--seed", "4", "--duration-s", "5", "--json", str(out),
                       "--no-progress"))
    assert rc == 0
    assert capsys.readouterr().out.splitlines()[0] == "SEED=4"
    r = json.loads(out.read_text())
    assert set(r) >= REQUIRED
    assert {"p50_s", "p99_s", "p999_s", "coverage"} <= set(r["dissemination"])
    assert {"first_detection_p50_s", "first_detection_p99_s", "false_positives"} <= \
        set(r["detection"])
    assert {"p999_s", "coverage"} <= set(r["revocation"])
    assert {"checked", "violations"} <= set(r["invariants"])


def test_random_seed_is_printed(capsys):
    assert cli.run(parse("--nodes", "10", "--duration-s", "3", "--no-progress")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("SEED=") and int(first[5:]) >= 0


def test_plot(tmp_path):
    # matplotlib is in the test extra (make test installs it): without it this fails, not skips
    png = tmp_path / "p.png"
    assert cli.run(parse("--nodes", "15", "--seed", "2", "--duration-s", "4", "--plot", str(png),
                         "--scenario", "revocation", "--no-progress")) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments(capsys):
    assert cli.run(parse("--nodes", "1", "--seed", "1", "--no-progress")) == 2


def test_reattest_workload_from_the_command_line(tmp_path):
    out = tmp_path / "r.json"
    assert cli.run(parse("--nodes", "6", "--seed", "2", "--duration-s", "6", "--workload", "reattest",
                         "--reattest-interval-s", "2", "--json", str(out), "--no-progress")) == 0
    r = json.loads(out.read_text())
    # 6 nodes x 5 peers, rounds every 2 s from [1, 3) until 6 s: 2 or 3 rounds each
    assert 6 * 5 * 2 <= r["dissemination"]["records"] <= 6 * 5 * 3
    assert r["invariants"]["violations"] == []
    assert cli.run(parse("--nodes", "6", "--seed", "2", "--reattest-interval-s", "0",
                         "--no-progress")) == 2
