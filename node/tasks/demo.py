"""The task part of ``enclave-swarm demo``: a word count across the federation, one agent
SIGKILLed mid-job, the result identical to a local count.

``run_task_demo(nodes, console)`` takes a running federation (at least three live node
processes; the manager step before it has already killed the first manager) and, through the
real CLI (``submit --wait``; the job is watched over the control socket, as ``jobs
describe`` does, to catch it mid-run):

1. writes a text and a job spec (the committed example ``wordcount.wasm``, split by records
   into :data:`FRAGMENTS` fragments, ``merge-counts``), and submits it from the first live node
   with ``enclave-swarm submit --wait``;
2. watches ``enclave-swarm jobs describe --json`` until a node other than the owner and the
   manager runs a replica, and SIGKILLs it;
3. checks that the job still completes, that the killed node's replicas were reassigned, and
   that the result is bit for bit the JSON of a local count.

The killed node stays dead (its ``NodeProcess.wait`` reports -SIGKILL).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from node.control import NotRunning, request
from node.demo import NodeProcess
from node.tasks.spec import render_spec

FRAGMENTS = 48
LINES = 120_000
_CLI_TIMEOUT_S = 300.0
_EXAMPLE = Path(__file__).resolve().parents[1] / "workload" / "examples" / "wordcount.wasm"


def _describe(owner: NodeProcess, job_id: str) -> dict[str, Any] | None:
    """What ``jobs describe --json`` prints, asked over the control socket directly (the demo
    polls it every 50 ms to catch the job mid-run)."""
    try:
        reply = request(owner.data_dir / "control.sock", {"cmd": "task-describe", "job_id": job_id},
                        timeout_s=10)
    except (NotRunning, OSError, ValueError):
        return None
    job = reply.get("job")
    return job if reply.get("ok") and isinstance(job, dict) else None


def _text() -> bytes:
    words = ("enclave", "swarm", "attested", "fragment", "manager", "council", "shard", "gossip",
             "seal", "quorum", "wasm", "fuel")
    return b"".join(" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(i % 9 + 1)).encode()
                    + b"\n" for i in range(LINES))


def local_count(text: bytes) -> bytes:
    """What ``merge-counts`` of the word counts gives, computed here: the JSON object of every
    word's count, keys sorted, compact, one line (node/tasks/aggregate.py)."""
    counts = Counter(text.decode().split())
    return (json.dumps(dict(sorted(counts.items())), separators=(",", ":")) + "\n").encode()


def run_task_demo(nodes: list[NodeProcess], console: Console) -> bool:
    """Run the demo on ``nodes`` (≥ 3 live); True when every step behaved as it should."""
    by_peer: dict[str, NodeProcess] = {}
    manager = ""
    for p in nodes:
        st = p.status()
        if st is not None:
            by_peer[st["peer_id"]] = p
            manager = manager or (st.get("manager") or "")
    owner = nodes[0]
    owner_id = next(k for k, v in by_peer.items() if v is owner)
    with tempfile.TemporaryDirectory(prefix="enclave-swarm-tasks-") as tmp:
        text = _text()
        src, out, spec = Path(tmp) / "corpus.txt", Path(tmp) / "counts.json", Path(tmp) / "wordcount.toml"
        src.write_bytes(text)
        spec.write_text(render_spec(_EXAMPLE, src, fragments=FRAGMENTS, split="records",
                                    aggregation="merge-counts", name="demo-wordcount"))
        console.print(f"[bold]Tasks[/bold]: a word count over {len(text):,} bytes, {FRAGMENTS} fragments "
                      f"(wordcount.wasm, merge-counts), submitted from {owner.name}")
        t0 = time.monotonic()
        submit = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "submit", str(spec), "--wait", "-o", str(out),
             "--data-dir", str(owner.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        job_id = (submit.stdout.readline() if submit.stdout else "").strip()
        if not job_id:
            _, err = submit.communicate(timeout=_CLI_TIMEOUT_S)
            console.print(f"[red]submit failed:[/red] {err.strip()}")
            return False
        console.print(f"  job {job_id} committed")
        victim = _pick_victim(owner, job_id, exclude={owner_id, manager}, timeout_s=120)
        if victim is None:
            console.print("[red]no agent other than the owner and the manager ran a fragment[/red]")
            submit.kill()
            return False
        node_id, fragment = victim
        p = by_peer[node_id]
        p.signal(signal.SIGKILL)
        p.wait(10)
        console.print(f"  [red]SIGKILL[/red] {p.name} while it ran fragment {fragment}")
        _, err = submit.communicate(timeout=_CLI_TIMEOUT_S)
        if submit.returncode != 0:
            console.print(f"[red]the job did not complete (exit {submit.returncode}):[/red] {err.strip()}")
            return False
        took = time.monotonic() - t0
        job = _describe(owner, job_id) or {}
        moved = [r for r in job.get("replicas", []) if node_id in r["tried"] and r["node"] != node_id]
        nodes_used = {r["node"] for r in job.get("replicas", [])}
        names = sorted(by_peer[n].name for n in nodes_used if n in by_peer)
        console.print(f"  done in {took:.1f}s on {len(nodes_used)} nodes ({', '.join(names)}); "
                      f"{len(moved)} fragment(s) of {p.name} reassigned: "
                      + ", ".join(f"{r['fragment']} → {by_peer[r['node']].name}" for r in moved
                                  if r["node"] in by_peer))
        same = out.read_bytes() == local_count(text)
        console.print("  result against a local count: "
                      + ("[green]identical[/green]" if same else "[red]DIFFERENT[/red]"))
        return same and bool(moved)


def _pick_victim(owner: NodeProcess, job_id: str, *, exclude: set[str],
                 timeout_s: float) -> tuple[str, int] | None:
    """A node outside ``exclude`` running a replica of the job now, once some replicas are done
    (so that the kill lands mid-job)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _describe(owner, job_id)
        if job is not None:
            if job["status"] not in ("queued", "running"):
                return None
            reps = job.get("replicas", [])
            if any(r["state"] == "done" for r in reps):
                for r in reps:
                    if r["state"] == "assigned" and r["node"] not in exclude:
                        return r["node"], r["fragment"]
        time.sleep(0.05)
    return None
