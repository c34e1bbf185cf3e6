"""The run report (a JSON-serialisable dict) and its plot.

Spread metrics are per published record: ``t_q`` is the virtual time from publish until a
fraction ``q`` of the nodes that were live at publish hold it. The report gives the median of
``t_q`` over records (``p50_s``, ``p99_s``, ``p999_s``) and the worst record (``*_max_s``);
``coverage`` is the mean final fraction. A record that never reached ``q`` counts as not
reached (``unreached_p999``), not as a time.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from overlay.messages_gossip import ALL_MESSAGES
from overlay.records import KIND_REVOCATION, KIND_SCORE
from sim import accel

if TYPE_CHECKING:
    from sim.world import Track, World

REPORT_VERSION = 1


def _t_q(tr: Track, q: float) -> float | None:
    need = max(1, math.ceil(q * tr.live - 1e-9))
    if len(tr.times) < need:
        return None
    return sorted(tr.times)[need - 1]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 1]); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def spread(tracks: list[Track]) -> dict[str, Any]:
    out: dict[str, Any] = {"records": len(tracks)}
    for name, q in (("p50_s", 0.5), ("p99_s", 0.99), ("p999_s", 0.999)):
        ts = [x for tr in tracks if (x := _t_q(tr, q)) is not None]
        out[name] = _r(statistics.median(ts)) if ts else None
        out[name.replace("_s", "_max_s")] = _r(max(ts)) if ts else None
        if q == 0.999:
            out["unreached_p999"] = len(tracks) - len(ts)
    cov = [min(1.0, len(tr.times) / tr.live) for tr in tracks if tr.live]
    out["coverage"] = _r(statistics.fmean(cov)) if cov else None
    return out


def build(w: World, wall_s: float, cpu_s: float | None = None) -> dict[str, Any]:
    cfg = w.cfg
    vt = w.now
    tracks = list(w.tracks.values())
    scores = [t for t in tracks if t.kind == KIND_SCORE]
    revs = [t for t in tracks if t.kind == KIND_REVOCATION]
    dis = spread(scores)
    gi = w.dcfg.gossip_interval_s
    if dis.get("p999_s") is not None:
        dis["p999_rounds"] = round(dis["p999_s"] / gi, 2)
    n = cfg.nodes
    dis["pittel_push_rounds_bound"] = round(math.log2(n) + math.log(n) + 2, 2)
    rev = spread(revs)
    det = w.detections
    period = w.mcfg.probe_interval_s
    swim = [max(1, math.ceil(x / period - 1e-9)) for x in w.first_probe_times]
    detection = {
        "crashes_detected": len(det),
        "first_detection_mean_s": _r(statistics.fmean(det)) if det else None,
        "first_detection_p50_s": _r(percentile(det, 0.5)),
        "first_detection_p99_s": _r(percentile(det, 0.99)),
        "first_detection_mean_probe_periods": _r(statistics.fmean(det) / period) if det else None,
        "first_probe_mean_probe_periods": (_r(statistics.fmean(w.first_probe_times) / period)
                                           if w.first_probe_times else None),
        # SWIM's e/(e-1) counts protocol periods from the failure to the end of the period in
        # which some member first picks the failed node as its ping target: the ordinal of
        # that period, ceil(first probe delay / period). first_detection_mean_probe_periods
        # also includes the probe's own window (direct + indirect, one whole period here as
        # in memberlist) and the failure's phase within a period.
        "first_detection_swim_periods": _r(statistics.fmean(swim)) if swim else None,
        # Its standard error (stdev / sqrt(samples)): with ~1 period of spread per crash, a few
        # hundred crashes are needed to tell 1.65 from 1.58.
        "first_detection_swim_periods_stderr": (_r(statistics.stdev(swim) / math.sqrt(len(swim)))
                                                if len(swim) > 1 else None),
        "false_positives": w.fp_dead,
        "false_suspicions": w.fp_suspect,
        "false_suspicions_raised": w.fp_raised,
    }
    suspicions_raised = sum(nd.m.stats["suspicions_raised"] for nd in w.nodes)
    detection["suspicions_raised"] = suspicions_raised
    bad = {"bad_signature": 0, "untrusted": 0, "purged_revoked": 0}
    for nd in w.nodes:
        st = nd.d.stats
        bad["bad_signature"] += st.bad_signature
        bad["untrusted"] += st.untrusted
        bad["purged_revoked"] += st.purged_revoked
    rev.update(bad)
    rev["injected_after_revocation"] = w.injected_after_revocation
    return {
        "report_version": REPORT_VERSION,
        "seed": cfg.seed,
        "nodes": n,
        "scenario": cfg.scenario,
        "profile": cfg.profile,
        "lifeguard": cfg.lifeguard,
        "loss": cfg.loss,
        "duration_s": cfg.duration_s,
        "virtual_time_s": round(vt, 3),
        "wall_time_s": round(wall_s, 3),
        "speedup_x": round(vt / wall_s, 2) if wall_s > 0 else None,
        # CPU seconds of this process for the run (the fair figure on a shared machine, where
        # the wall clock also counts other processes' turns) and the speed it gives; the
        # setup (building the nodes, before the clock starts) is apart.
        "cpu_time_s": None if cpu_s is None else round(cpu_s, 3),
        "speedup_cpu_x": round(vt / cpu_s, 3) if cpu_s else None,
        "setup_s": round(w.setup_s, 3),
        # Peak resident memory of this process so far (MiB; the interpreter's ~40 MiB included).
        "peak_rss_mib": peak_rss_mib(),
        "engine": accel.engine_name(),
        "events": w.events,
        "events_by_kind": events_by_kind(w),
        "event_order": cfg.event_order,
        # Event order 2: pushes sent (and counted in the load) but not delivered, because the
        # receiver already held every record in them (docs/simulator.md, "Event order").
        "elided_deliveries": w.elided,
        "trace_digest": w.trace_digest(),
        "dissemination": dis,
        "detection": detection,
        "revocation": rev,
        "messages_per_node_per_s": round(w.sent_msgs / (n * vt), 3) if vt else 0.0,
        "bytes_per_node_per_s": round(w.sent_bytes / (n * vt), 1) if vt else 0.0,
        "invariants": {"checked": w.invariants.checked,
                       "violations": list(w.invariants.violations)},
        "liveness": w.liveness,
        "decode_errors": w.decode_errors,
        "transport_dropped": dict(w.dropped),
    }


def plot(w: World, path: str) -> None:
    """Coverage over time (per record and median) and message load, as a PNG (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7))
    tracks = [t for t in w.tracks.values() if t.live]
    for kind, colour in ((KIND_SCORE, "tab:blue"), (KIND_REVOCATION, "tab:red")):
        sel = [t for t in tracks if t.kind == kind]
        for i, tr in enumerate(sel[:40]):
            xs = sorted(tr.times)
            ys = [(j + 1) / tr.live for j in range(len(xs))]
            ax1.plot(xs, ys, color=colour, alpha=0.25 if kind == KIND_SCORE else 0.9,
                     linewidth=1, label=f"{kind} records" if i == 0 else None)
    ax1.axhline(0.999, color="grey", linestyle=":", linewidth=1, label="99.9%")
    ax1.set_xlabel("virtual seconds after publish")
    ax1.set_ylabel("fraction of live nodes holding it")
    ax1.set_title(f"{w.cfg.scenario}, {w.cfg.nodes} nodes, seed {w.cfg.seed}: coverage")
    ax1.legend(loc="lower right")
    n = w.cfg.nodes
    xs2 = list(range(len(w.load_msgs)))
    ax2.plot(xs2, [m / n for m in w.load_msgs], color="tab:green", label="messages/node/s")
    ax2.set_xlabel("virtual time (s)")
    ax2.set_ylabel("messages per node per second")
    ax3 = ax2.twinx()
    ax3.plot(xs2, [b / n for b in w.load_bytes], color="tab:orange", alpha=0.6,
             label="bytes/node/s")
    ax3.set_ylabel("bytes per node per second")
    ax2.set_ylim(bottom=0)
    ax3.set_ylim(bottom=0)
    lines = ax2.get_lines() + ax3.get_lines()
    ax2.legend(lines, [str(ln.get_label()) for ln in lines], loc="lower right")
    ax2.axvline(w.cfg.duration_s, color="grey", linestyle="--", linewidth=1)
    ax2.set_title("message load (dashed: heal, start of the liveness phase)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def peak_rss_mib() -> float | None:
    """This process's peak resident set size in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def events_by_kind(w: World) -> dict[str, int]:
    """What the run's events were: timer ticks, deliveries by message type, world actions."""
    kc = w.kind_counts
    out = {"tick": kc[0]}
    for i, t in enumerate(ALL_MESSAGES):
        if kc[i + 1]:
            out[t.__name__] = kc[i + 1]
    out["action"] = kc[-1]
    return out
