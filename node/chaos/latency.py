"""Client latencies of a chaos run, inside its fault windows against its calm stretches.

    python -m node.chaos.latency DIR     # DIR: a run's output (history.jsonl, verdict.json)

For each operation (put, get, submit, status), the clients' operations (not the monitor's, not
the final read-back) are split three ways by when they were invoked: on the fault's target
node inside a window, on the other nodes inside a window, and calm (outside every window and
the ``settle_s`` after it, and after the warm-up). Each group: how many, how many succeeded,
and the median and maximum latency of those that completed. Faults without a target node
(partitions, link faults) count every node as "other".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from node.chaos.history import Op, pair, parse_lines

FUNCTIONS = ("put", "get", "submit", "status")
GROUPS = ("target, in a window", "others, in a window", "calm")


def group_of(op: Op, windows: Sequence[tuple[float, float, int | None]], *, settle_s: float,
             warmup_s: float) -> str | None:
    """Which group ``op`` falls in; None when in a settling stretch or the warm-up."""
    for start, end, target in windows:
        if start <= op.invoke_s < end:
            return GROUPS[0] if target is not None and op.node == target else GROUPS[1]
    if op.invoke_s < warmup_s or any(end <= op.invoke_s < end + settle_s for _, end, _ in windows):
        return None
    return GROUPS[2]


def summarize(ops: Iterable[Op], windows: Sequence[tuple[float, float, int | None]], *,
              settle_s: float = 5.0, warmup_s: float = 5.0) -> dict[str, dict[str, dict[str, Any]]]:
    """``{function: {group: {"n", "ok", "median_s", "max_s"}}}`` for the clients' operations."""
    lat: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for op in ops:
        if op.f not in FUNCTIONS or op.process in ("monitor", "final"):
            continue
        g = group_of(op, windows, settle_s=settle_s, warmup_s=warmup_s)
        if g is None:
            continue
        c = counts.setdefault((op.f, g), [0, 0])
        c[0] += 1
        c[1] += op.type == "ok"
        if op.latency_s is not None:
            lat.setdefault((op.f, g), []).append(op.latency_s)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (f, g), (n, ok) in sorted(counts.items()):
        xs = lat.get((f, g), [])
        out.setdefault(f, {})[g] = {"n": n, "ok": ok,
                                    "median_s": statistics.median(xs) if xs else None,
                                    "max_s": max(xs) if xs else None}
    return out


def windows_of(verdict: dict[str, Any]) -> list[tuple[float, float, int | None]]:
    """(start, end, target node index or None) of each fault in a run's verdict."""
    out = []
    for f in verdict.get("schedule", []):
        target = f.get("params", {}).get("target_index")
        out.append((float(f["start_s"]), float(f["end_s"]), None if target is None else int(target)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m node.chaos.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a chaos run's output directory")
    args = ap.parse_args(argv)
    try:
        verdict = json.loads((args.run / "verdict.json").read_text())
        with open(args.run / "history.jsonl") as fh:
            ops = pair(parse_lines(fh).events)
    except (OSError, ValueError) as exc:
        print(f"node.chaos.latency: cannot read the run in {args.run}: {exc}", file=sys.stderr)
        return 1
    table = summarize(ops, windows_of(verdict))
    for f in FUNCTIONS:
        for g in GROUPS:
            r = table.get(f, {}).get(g)
            if r is None:
                continue
            med = "-" if r["median_s"] is None else f"{r['median_s'] * 1000:.1f} ms"
            top = "-" if r["max_s"] is None else f"{r['max_s'] * 1000:.1f} ms"
            print(f"{f:7s} {g:20s} n={r['n']:4d} ok={r['ok']:4d} median {med:>10s} max {top:>10s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
