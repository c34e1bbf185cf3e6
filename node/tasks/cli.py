"""``enclave-swarm submit | jobs ls | describe | logs | cancel | budget show | set``: the task
flow's commands, done by the running node (its owner part, node/tasks/owner.py) over the control
socket.

``submit`` validates the spec here first (every problem named, exit 1), then has the node read
the input, split it and get the job committed; it prints the job id. With ``--wait`` it shows
the fragments done (one updating line on a terminal, a line per change otherwise) and writes the
result (``-o OUT``, or stdout). A job that failed or was cancelled exits 1 with its reason and
each failed fragment: it is never reported as done. Exit codes: 0 ok, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from node.shards.cli import CliError, _cli

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
POLL_S = 0.5
TERMINAL = ("done", "failed", "cancelled")


def request(args: argparse.Namespace, cmd: dict[str, Any], *, timeout_s: float = 10.0) -> dict[str, Any]:
    """One control request; a refusal raises CliError (exit 1) with the node's reason."""
    from node.control import BadAnswer, NotRunning
    from node.control import request as control_request

    dd = _cli()._data_dir(args)
    try:
        reply: dict[str, Any] = control_request(dd.socket_path, cmd, timeout_s=timeout_s)
    except NotRunning:
        raise CliError(f"no node is running on {dd.path}") from None
    except BadAnswer as exc:
        raise CliError(f"cannot talk to a node on {dd.path}: {exc}") from None
    except OSError as exc:  # socket timeout
        raise CliError(f"the node on {dd.path} did not answer: {exc}") from None
    if not reply.get("ok"):
        raise CliError(str(reply.get("error", "the node refused the request")))
    return reply


def add_parsers(sub: Any) -> dict[str, Any]:
    data_dir_arg = _cli()._data_dir_arg
    p = sub.add_parser("submit", help="run a WebAssembly job across the federation; prints its id")
    p.add_argument("spec", type=Path, metavar="JOB.toml", help="the job spec (TOML, or JSON by suffix)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", type=Path, metavar="FILE", help="input file (or directory), "
                     "instead of the spec's")
    src.add_argument("--object", metavar="ID", help="a stored object as input (the id `put` printed)")
    p.add_argument("--wait", action="store_true", help="show progress and write the result")
    p.add_argument("-o", "--output", type=Path, metavar="OUT", help="with --wait: write the result here "
                   "(default: stdout)")
    data_dir_arg(p)
    p = sub.add_parser("jobs", help="list, describe, follow or cancel jobs submitted from this node")
    jsub = p.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)
    q = jsub.add_parser("ls", help="the jobs submitted from this node")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    data_dir_arg(q)
    q = jsub.add_parser("describe", help="a job and every fragment: where it ran, attempts, profile, verdict")
    q.add_argument("job_id")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    data_dir_arg(q)
    q = jsub.add_parser("logs", help="each fragment's stderr (bounded)")
    q.add_argument("job_id")
    q.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    data_dir_arg(q)
    q = jsub.add_parser("cancel", help="cancel a queued or running job")
    q.add_argument("job_id")
    q.add_argument("--reason", default="", help="recorded with the job")
    data_dir_arg(q)
    p = sub.add_parser("budget", help="differential-privacy budgets of data sets (show, or set "
                       "one this node owns)")
    bsub = p.add_subparsers(dest="budget_command", metavar="SUBCOMMAND", required=True)
    q = bsub.add_parser("show", help="every data set's budget, spent and remaining epsilon")
    q.add_argument("dataset", nargs="?", help="only this data set")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    data_dir_arg(q)
    q = bsub.add_parser("set", help="open or change a budget (signed by this node, its owner)")
    q.add_argument("dataset")
    q.add_argument("--epsilon", type=float, required=True, help="total epsilon every private "
                   "release from the data set may spend")
    q.add_argument("--delta", type=float, default=0.0, help="total delta (default 0: the "
                   "Laplace releases here are pure epsilon-DP)")
    data_dir_arg(q)
    return {"submit": cmd_submit, "jobs": cmd_jobs, "budget": cmd_budget}


def cmd_budget(args: argparse.Namespace) -> int:
    if args.budget_command == "set":
        request(args, {"cmd": "budget-set", "dataset": args.dataset, "epsilon": args.epsilon,
                       "delta": args.delta}, timeout_s=60.0)
        print(f"budget of {args.dataset}: epsilon {args.epsilon:g}, delta {args.delta:g}",
              file=sys.stderr)
        return EXIT_OK
    cmd: dict[str, Any] = {"cmd": "budget-show"}
    if args.dataset:
        cmd["dataset"] = args.dataset
    rows = request(args, cmd)["budgets"]
    print(json.dumps(rows, indent=2, sort_keys=True) if args.json else budget_table(rows))
    return EXIT_OK


def budget_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no privacy budgets"
    out = [("DATASET", "OWNER", "EPSILON", "SPENT", "REMAINING", "QUERIES")]
    for r in rows:
        out.append((r["dataset"], _short(r["owner"]), f"{r['epsilon']:.6g}",
                    f"{r['spent_epsilon']:.6g}", f"{r['remaining_epsilon']:.6g}", str(r["charges"])))
    widths = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in out)


# --------------------------------------------------------------------------- submit


def cmd_submit(args: argparse.Namespace) -> int:
    from node.tasks.spec import SpecError, load_spec

    if args.output is not None and not args.wait:
        raise CliError("-o/--output goes with --wait", EXIT_USAGE)
    override = args.input is not None or args.object is not None
    try:  # the input is the node's to read when overridden: check the rest here
        load_spec(args.spec, check_files=not override)
    except SpecError as exc:
        raise CliError(str(exc)) from None
    out = args.output.expanduser().absolute() if args.output is not None else None
    if out is not None and not out.parent.is_dir():
        raise CliError(f"{out.parent}: no such directory", EXIT_FAIL)
    cmd = {"cmd": "task-submit", "spec": str(args.spec.expanduser().absolute()),
           "input": str(args.input.expanduser().absolute()) if args.input is not None else None,
           "object": args.object}
    job_id = str(request(args, cmd, timeout_s=120.0)["job_id"])
    print(job_id, flush=True)
    if not args.wait:
        return EXIT_OK
    try:
        job = _follow(args, job_id)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; job {job_id} goes on "
                       f"(enclave-swarm jobs describe {job_id})") from None
    if job["status"] != "done":
        raise CliError(failure_text(job))
    _write_result(args, job_id, out)
    return EXIT_OK


def _follow(args: argparse.Namespace, job_id: str) -> dict[str, Any]:
    tty = sys.stderr.isatty()
    last = ""
    while True:
        job: dict[str, Any] = request(args, {"cmd": "task-describe", "job_id": job_id})["job"]
        line = progress_line(job)
        if line != last:
            if tty:
                print(f"\r\x1b[2K{line}", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)
            last = line
        if job["status"] in TERMINAL:
            if tty:
                print(file=sys.stderr)
            return job
        time.sleep(POLL_S)


def _write_result(args: argparse.Namespace, job_id: str, out: Path | None) -> None:
    if out is not None:
        r = request(args, {"cmd": "task-result", "job_id": job_id, "out": str(out)}, timeout_s=120.0)
        print(f"{r['bytes']} bytes written to {out}", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="enclave-swarm-result-") as tmp:
        path = Path(tmp) / "result"
        os.chmod(tmp, 0o700)
        request(args, {"cmd": "task-result", "job_id": job_id, "out": str(path)}, timeout_s=120.0)
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


# --------------------------------------------------------------------------- jobs


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.jobs_command == "ls":
        jobs = request(args, {"cmd": "task-list"})["jobs"]
        print(json.dumps(jobs, indent=2, sort_keys=True) if args.json else ls_table(jobs))
        return EXIT_OK
    if args.jobs_command == "describe":
        job = request(args, {"cmd": "task-describe", "job_id": args.job_id})["job"]
        print(json.dumps(job, indent=2, sort_keys=True) if args.json else describe_text(job))
        return EXIT_OK
    if args.jobs_command == "logs":
        return _logs(args)
    request(args, {"cmd": "task-cancel", "job_id": args.job_id, "reason": args.reason}, timeout_s=60.0)
    print(f"job {args.job_id} cancelled", file=sys.stderr)
    return EXIT_OK


def _logs(args: argparse.Namespace) -> int:
    seen: set[tuple[int, int, str]] = set()
    while True:
        reply = request(args, {"cmd": "task-logs", "job_id": args.job_id}, timeout_s=60.0)
        for e in reply["logs"]:
            key = (e["fragment"], e["replica"], e["node"])
            if key not in seen:
                seen.add(key)
                print(log_entry_text(e), flush=True)
        if not args.follow or reply["status"] in TERMINAL:
            return EXIT_OK
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- rendering (pure)


def progress_line(job: dict[str, Any]) -> str:
    total = job["fragments"] * job["redundancy"]
    extra = f", {job['failed']} failed" if job.get("failed") else ""
    wait = f" (waiting: {job['waiting']})" if job.get("waiting") and job["status"] == "queued" else ""
    return f"job {job['job_id']}: {job['status']}, fragments {job.get('done', 0)}/{total} done{extra}{wait}"


def failure_text(job: dict[str, Any]) -> str:
    lines = [f"job {job['job_id']} {job['status']}: {job['reason'] or 'no reason given'}"]
    for r in job.get("replicas", []):
        if r["state"] == "failed":
            lines.append(f"  fragment {r['fragment']} replica {r['replica']} on {r['node']}: {r['error']}")
    return "\n".join(lines)


def ls_table(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("JOB", "NAME", "STATUS", "FRAGMENTS", "DONE", "FAILED", "REASON")]
    for j in jobs:
        total = j["fragments"] * j["redundancy"]
        rows.append((j["job_id"], j.get("name") or "-", j["status"], str(j["fragments"]),
                     f"{j.get('done', 0)}/{total}", str(j.get("failed", 0)), (j.get("reason") or "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def describe_text(job: dict[str, Any]) -> str:
    total = job["fragments"] * job["redundancy"]
    head = [f"job {job['job_id']}" + (f" ({job['name']})" if job.get("name") else ""),
            f"  status      {job['status']}" + (f": {job['reason']}" if job.get("reason") else ""),
            f"  fragments   {job['fragments']} x {job['redundancy']} replicas, "
            f"{job.get('done', 0)}/{total} done, {job.get('failed', 0)} failed",
            f"  module      {job['module']}",
            f"  aggregation {job['aggregation']}"]
    if job.get("quorum") and (job["quorum"] != job["redundancy"] or job["max_replicas"] != job["redundancy"]):
        head.append(f"  quorum      {job['quorum']} agreeing replicas, up to {job['max_replicas']} "
                    "a fragment on disagreement")
    ad = job.get("adaptive")
    if ad:
        head.append(f"  adaptive    spot-check {ad['spot_check']:g}; fragments "
                    + ", ".join(f"{n} {m}" for m, n in ad["modes"].items()))
    for x in job.get("findings", []):
        head.append(f"  finding     fragment {x['fragment']} replica {x['replica']} on {_short(x['node'])}: "
                    f"output {x['output_hash'][:16]}… outvoted")
    for x in job.get("integrity", []):
        if x["kind"] != "minority":  # those are the lines above
            head.append(f"  finding     fragment {x['fragment']} replica {x['replica']} on "
                        f"{_short(x['node'])}: {x['kind']}: {x['detail']}")
    dp = job.get("privacy")
    if dp:
        charged = dp.get("epsilon_charged")
        head.append(f"  privacy     {dp['kind']} of data set {dp['dataset']}, epsilon "
                    + (f"{charged:.6g} charged" if charged is not None else "not charged yet"))
    if job.get("waiting"):
        head.append(f"  waiting     {job['waiting']}")
    if job.get("result_hash"):
        head.append(f"  result      {job['result_bytes']} bytes, sha256 {job['result_hash']}")
    rows = [("FRAG", "REP", "STATE", "NODE", "ATTEMPTS", "FUEL", "MEMORY", "WALL", "VERDICT")]
    for r in job.get("replicas", []):
        p = r["profile"]
        verdict = r["error"] or (f"output {r['output_hash'][:16]}…" if r["output_hash"] else "")
        rows.append((str(r["fragment"]), str(r["replica"]), r["state"], _short(r["node"]),
                     str(r["attempts"]), f"{p['fuel']:,}", _mib(p["peak_memory_bytes"]),
                     f"{p['wall_ms']} ms", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([*head, "", *table]) if len(rows) > 1 else "\n".join(head)


def log_entry_text(e: dict[str, Any]) -> str:
    body = e["stderr"].rstrip("\n") or "(no stderr)"
    return f"== fragment {e['fragment']} replica {e['replica']} on {e['node']}\n{body}"


def _short(node: str) -> str:
    return f"…{node[-12:]}" if len(node) > 13 else (node or "-")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
