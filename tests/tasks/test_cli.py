"""The task commands' client side: usage errors (exit 2), invalid specs (exit 1, every problem
named), no node (exit 1), and the rendering of real replies. End to end through real node
processes: tests/tasks_net/test_processes.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

from node.cli import main
from node.tasks.cli import describe_text, failure_text, log_entry_text, ls_table, progress_line

EXAMPLES = Path(__file__).resolve().parents[2] / "node" / "workload" / "examples"


def _spec(tmp: Path, sha: str | None = None, extra: str = "") -> Path:
    wasm = EXAMPLES / "wordcount.wasm"
    (tmp / "in.txt").write_text("a b\n")
    p = tmp / "job.toml"
    p.write_text(f'version = 1\n[module]\npath = "{wasm}"\n'
                 f'sha256 = "{sha or hashlib.sha256(wasm.read_bytes()).hexdigest()}"\n'
                 f'[input]\npath = "{tmp / "in.txt"}"\n[aggregation]\nkind = "merge-counts"\n{extra}')
    return p


def test_usage_errors_exit_2(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert main(["submit", str(spec), "--input", "x", "--object", "y"]) == 2
    assert main(["submit", str(spec), "-o", str(tmp_path / "out")]) == 2  # -o without --wait
    assert main(["jobs"]) == 2
    assert main(["jobs", "describe"]) == 2


def test_an_invalid_spec_exits_1_naming_every_problem(tmp_path, capsys):
    spec = _spec(tmp_path, sha="00" * 32, extra="redundancy = 0\n")
    assert main(["submit", str(spec), "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "module.sha256" in err and "does not match" in err and "redundancy" in err


def test_no_node_running_exits_1(tmp_path, capsys):
    spec = _spec(tmp_path)
    for argv in (["submit", str(spec)], ["jobs", "ls"], ["jobs", "describe", "abc"],
                 ["jobs", "logs", "abc"], ["jobs", "cancel", "abc"]):
        assert main([*argv, "--data-dir", str(tmp_path / "nobody")]) == 1
        assert "no node is running" in capsys.readouterr().err


JOB = {"job_id": "0123456789abcdef", "name": "wc", "status": "failed", "reason": "1 of 2 replicas failed",
       "fragments": 2, "redundancy": 1, "done": 1, "failed": 1, "module": "ab" * 32,
       "aggregation": "merge-counts", "result_hash": "", "result_bytes": 0, "waiting": "",
       "replicas": [
           {"fragment": 0, "replica": 0, "state": "done", "node": "12D3KooWabcdefghijklmnop",
            "attempts": 1, "tried": ["12D3KooWabcdefghijklmnop"],
            "profile": {"fuel": 123456, "peak_memory_bytes": 2 << 20, "wall_ms": 12},
            "error": "", "output_hash": "cd" * 32},
           {"fragment": 1, "replica": 0, "state": "failed", "node": "12D3KooWzyxwvutsrqponmlk",
            "attempts": 2, "tried": ["n1", "12D3KooWzyxwvutsrqponmlk"],
            "profile": {"fuel": 10, "peak_memory_bytes": 65536, "wall_ms": 3},
            "error": "fuel: all fuel consumed", "output_hash": ""}]}


def test_rendering_of_real_replies():
    assert progress_line(JOB) == "job 0123456789abcdef: failed, fragments 1/2 done, 1 failed"
    text = describe_text(JOB)
    assert "2 x 1 replicas, 1/2 done, 1 failed" in text
    assert "123,456" in text and "2.0 MiB" in text and "fuel: all fuel consumed" in text
    fail = failure_text(JOB)
    assert fail.splitlines()[0] == "job 0123456789abcdef failed: 1 of 2 replicas failed"
    assert "fragment 1 replica 0 on 12D3KooWzyxwvutsrqponmlk: fuel: all fuel consumed" in fail
    assert "0123456789abcdef" in ls_table([JOB]) and ls_table([]) == "no jobs"
    assert log_entry_text({"fragment": 1, "replica": 0, "node": "n", "stderr": "boom\n"}) == \
        "== fragment 1 replica 0 on n\nboom"


def test_a_waiting_job_says_why():
    job = dict(JOB, status="queued", done=0, failed=0, waiting="3 candidates, capacity removed 3")
    assert progress_line(job).endswith("(waiting: 3 candidates, capacity removed 3)")


def test_describe_shows_the_quorum_and_its_findings():
    job = {**JOB, "status": "done", "redundancy": 2, "quorum": 2, "max_replicas": 3,
           "findings": [{"fragment": 1, "replica": 0, "node": "12D3KooWliarliarliar",
                         "output_hash": "ef" * 32}],
           "privacy": {"dataset": "census", "kind": "count", "epsilon_charged": 0.5}}
    text = describe_text(job)
    assert "quorum      2 agreeing replicas, up to 3" in text
    assert "finding     fragment 1 replica 0 on" in text and "efefefefefefefef… outvoted" in text
    assert "privacy     count of data set census, epsilon 0.5 charged" in text
    assert "quorum" not in describe_text({**JOB, "quorum": 1, "max_replicas": 1})


def test_describe_shows_how_an_adaptive_job_ran():
    job = {**JOB, "status": "done", "redundancy": 2, "quorum": 2, "max_replicas": 3,
           "adaptive": {"spot_check": 0.1, "modes": {"replicated": 1, "solo": 5, "spot": 2}}}
    assert "adaptive    spot-check 0.1; fragments 1 replicated, 5 solo, 2 spot" in describe_text(job)
    assert "adaptive" not in describe_text(JOB)
