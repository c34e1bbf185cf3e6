"""The timeline of a chaos run (matplotlib, the ``plot`` extra): faults against manager terms
and operation latencies, on the history's time axis."""

from __future__ import annotations

import json
from pathlib import Path

from node.chaos.history import pair, parse_lines

COLOURS = {"partition": "tab:red", "netem": "tab:orange", "kill": "tab:purple", "pause": "tab:brown",
           "skew": "tab:olive", "disk": "tab:gray", "attest": "tab:pink", "slow": "tab:cyan"}
MARKERS = {"ok": "o", "fail": "x", "info": "^"}


def timeline(history: Path, schedule: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history) as fh:
        ops = pair(parse_lines(fh).events)
    faults = [(op.invoke_s, op.arg) for op in ops if op.f == "fault-start"]
    ends = {op.arg.get("kind"): op.invoke_s for op in ops if op.f == "fault-stop"}
    sched = json.loads(schedule.read_text())
    fig, (ax_f, ax_t, ax_l) = plt.subplots(3, 1, sharex=True, figsize=(12, 8),
                                           gridspec_kw={"height_ratios": [1, 2, 3]})
    for start, arg in faults:
        end = float(arg.get("end_s", ends.get(arg.get("kind"), start + 1)))
        kind = str(arg.get("kind"))
        for ax in (ax_f, ax_t, ax_l):
            ax.axvspan(start, end, color=COLOURS.get(kind, "tab:blue"), alpha=0.15 if ax is not ax_f else 0.6)
        label = kind if kind != "partition" else f"partition {arg.get('params', {}).get('shape', '')}"
        ax_f.text(start, 0.5, label, fontsize=7, rotation=20, va="center")
    ax_f.set_yticks([])
    ax_f.set_title(f"chaos run: seed {sched['seed']}, {sched['nodes']} nodes")
    managers: dict[str, int] = {}
    for op in ops:
        if op.f == "status" and op.type == "ok" and isinstance(op.result, dict) and op.result.get("manager"):
            m = op.result["manager"]
            colour = managers.setdefault(m, len(managers))
            ax_t.scatter(op.complete_s, op.result.get("term") or 0, s=4, color=f"C{colour % 10}")
    ax_t.set_ylabel("manager term\n(colour: manager)")
    for fn, tint in (("put", "tab:blue"), ("get", "tab:green"), ("submit", "tab:purple"),
                     ("status", "tab:gray")):
        for typ, marker in MARKERS.items():
            pts = [(op.invoke_s, op.latency_s) for op in ops
                   if op.f == fn and op.type == typ and op.latency_s is not None and op.process != "monitor"]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax_l.scatter(xs, ys, s=8, marker=marker, color=tint, label=f"{fn} {typ}")
    ax_l.set_yscale("symlog", linthresh=0.1)
    ax_l.set_ylabel("latency (s)")
    ax_l.set_xlabel("seconds since the federation formed")
    ax_l.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
