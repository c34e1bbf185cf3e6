"""The tasks run report (JSON-serialisable) and its human summary.

``tasks`` holds the figures issue 11 asks for: ``jobs``, ``fragments``, ``completed``,
``reassigned``, ``lost``, ``duplicated``, ``makespan_p50_s``, ``makespan_p99_s`` (a job's
makespan: submission to ``JobDone``, virtual seconds); ``invariants`` the checks and the
violations; ``liveness`` whether every job ended (done or failed) within ``duration_s``.

``integrity`` (issue 13): ``findings`` (committed, by kind), ``false_findings`` (against honest
nodes: neither liars nor slow), ``slow_findings``, ``liar_findings``, ``detected_liars`` (liars
revoked by the score rule) of ``liars``, ``time_to_revoke_s`` (per liar, virtual time from its
first wrong result accepted to its revocation: median and max), ``wrong_results_delivered``
(jobs whose committed result differs from the true one), ``honest_revoked``, ``slow_revoked``
and ``false_findings_per_10k_fragments`` (per agreed fragment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consensus.tasks import DONE, FAILED
from sim.report import percentile

if TYPE_CHECKING:
    from sim.tasks.world import TasksWorld

REPORT_VERSION = 1


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def makespans(w: TasksWorld) -> list[float]:
    """Submission to completion of every completed job, in job order."""
    return [t - w.submitted[jid] for jid, (st, t) in sorted(w.finished.items()) if st == "done"]


def integrity_block(w: TasksWorld) -> dict[str, Any]:
    """The integrity figures of a run (see the module docstring)."""
    slow = {s.node_id for s in w.specs if s.slow}
    kinds: dict[str, int] = {}
    against = {"liar": 0, "slow": 0, "honest": 0}
    for f in w.findings:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        who = "liar" if f["node"] in w.liars else "slow" if f["node"] in slow else "honest"
        against[who] += 1
    revoked = w.integrity_revoked
    ttr = sorted(revoked[n] - w.first_lie[n] for n in sorted(w.liars) if n in revoked and n in w.first_lie)
    wrong = sum(1 for jid, h in w.delivered.items() if h != w.truth[jid])
    per_10k = 1e4 * against["honest"] / w.fragments_agreed if w.fragments_agreed else None
    return {
        "liars": len(w.liars),
        "lie_rate": w.cfg.lie_rate,
        "lies_accepted": w.lies,
        "findings": dict(sorted(kinds.items())),
        "findings_total": len(w.findings),
        "false_findings": against["honest"],
        "slow_findings": against["slow"],
        "liar_findings": against["liar"],
        "detected_liars": sum(1 for n in w.liars if n in revoked),
        "liars_lying": len(w.first_lie),
        "time_to_revoke_s": {"median": _r(percentile(ttr, 0.5)), "max": _r(max(ttr)) if ttr else None,
                             "samples": len(ttr)},
        "wrong_results_delivered": wrong,
        "jobs_delivered": len(w.delivered),
        "honest_revoked": sum(1 for n in revoked if n not in w.liars and n not in slow),
        "slow_revoked": sum(1 for n in revoked if n not in w.liars and n in slow),
        "fragments_agreed": w.fragments_agreed,
        "false_findings_per_10k_fragments": _r(per_10k, 3),
        "score_records": w.counts["score_records"],
        "replicas_added": w.counts["replicas_added"],
    }


def build(w: TasksWorld, wall_s: float) -> dict[str, Any]:
    cfg, inv = w.cfg, w.inv
    spans = makespans(w)
    statuses = [st for st, _ in w.finished.values()]
    log = w.manager.log
    decisions = w.manager.decisions
    ended = len(w.finished) == len(w.job_specs)
    return {
        "report_version": REPORT_VERSION,
        "kind": "tasks",
        "seed": cfg.seed,
        "scenario": cfg.scenario,
        "nodes": cfg.nodes,
        "bug": cfg.bug,
        "virtual_time_s": _r(w.now),
        "wall_time_s": round(wall_s, 3),
        "speedup_x": round(w.now / wall_s, 1) if wall_s > 0 else None,
        "trace_digest": w.trace_digest(),
        "tasks": {
            "jobs": cfg.jobs,
            "fragments": cfg.jobs * cfg.fragments,
            "redundancy": cfg.redundancy,
            "quorum": cfg.quorum or cfg.redundancy,
            "completed": statuses.count(DONE),
            "failed": statuses.count(FAILED),
            "reassigned": w.counts["reassigned"],
            "lost": inv.lost_fragments(),
            "duplicated": inv.duplicated,
            "makespan_p50_s": _r(percentile(spans, 0.5)),
            "makespan_p99_s": _r(percentile(spans, 0.99)),
            "makespan_max_s": _r(max(spans)) if spans else None,
        },
        "faults": {
            "crashes": w.counts["crashes"],
            "revocations": w.counts["revocations"],
            "timeouts": w.counts["timeouts"],
            "traps": w.counts["traps"],
            "late_results_rejected": w.late_rejected,
        },
        "log": {
            "entries": len(log),
            "rejected": sum(1 for e in log if not e.ok),
            "decisions": len(decisions),
            "decisions_unplaceable": sum(1 for d in decisions if not d.decision.ok),
        },
        "scheduler": {
            "placements": sum(1 for d in decisions if d.decision.ok),
            "unplaceable": sum(1 for d in decisions if not d.decision.ok),
            "reassigned_by_reason": dict(sorted(w.reassigned_by.items())),
            "failed_by_reason": dict(sorted(w.failed_by.items())),
            "replicas_added": w.counts["replicas_added"],
        },
        "integrity": integrity_block(w),
        "invariants": {
            "checked": inv.checked,
            "violation_count": inv.violation_count,
            "violations": list(inv.violations),
        },
        "liveness": {"converged": ended, "jobs_ended": len(w.finished)},
    }


def summary(r: dict[str, Any]) -> str:
    """The lines printed after a run."""
    t, f, inv, g = r["tasks"], r["faults"], r["invariants"], r["integrity"]

    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}s"

    return "\n".join([
        f"scenario={r['scenario']} nodes={r['nodes']} virtual={r['virtual_time_s']}s "
        f"wall={r['wall_time_s']}s ({r['speedup_x']}x) trace={r['trace_digest']}",
        f"jobs={t['jobs']} fragments={t['fragments']} x{t['redundancy']} completed={t['completed']} "
        f"failed={t['failed']} reassigned={t['reassigned']} lost={t['lost']} "
        f"duplicated={t['duplicated']} makespan p50={s(t['makespan_p50_s'])} "
        f"p99={s(t['makespan_p99_s'])} | crashes={f['crashes']} revocations={f['revocations']} "
        f"timeouts={f['timeouts']} traps={f['traps']} late_rejected={f['late_results_rejected']}",
        f"integrity: findings={g['findings_total']} {g['findings']} false={g['false_findings']} "
        f"({g['false_findings_per_10k_fragments']}/10k fragments) slow={g['slow_findings']} "
        f"liars detected={g['detected_liars']}/{g['liars']} time_to_revoke median="
        f"{s(g['time_to_revoke_s']['median'])} max={s(g['time_to_revoke_s']['max'])} "
        f"wrong_results={g['wrong_results_delivered']}/{g['jobs_delivered']}",
        f"scheduler: placements={r['scheduler']['placements']} unplaceable="
        f"{r['scheduler']['unplaceable']} reassigned={r['scheduler']['reassigned_by_reason']} "
        f"failed={r['scheduler']['failed_by_reason']}",
        f"invariants checked={inv['checked']} violations={inv['violation_count']} "
        f"liveness converged={r['liveness']['converged']}",
    ])


def plot(w: TasksWorld, path: str) -> None:
    """Replicas running over virtual time with the crashes and revocations marked, and each
    completed job's makespan, as a PNG (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from consensus.tasks import ASSIGNED, jobs

    m = w.manager
    xs, running = [], []
    for e in m.log:
        xs.append(e.time_s)
        running.append(sum(1 for j in jobs(m.states[e.index]).values()
                           for frag in j["frags"] for rep in frag if rep["st"] == ASSIGNED))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7))
    ax1.step(xs, running, where="post", color="tab:blue", label="replicas running")
    for i, (t, kind, node) in enumerate(w.fault_times):
        color = {"revoke": "tab:red", "integrity": "tab:purple"}.get(kind, "tab:orange")
        ax1.axvline(t, color=color, linestyle="--", linewidth=1,
                    label=None if i else "crash (orange) / revocation (red) / integrity (purple)")
        ax1.annotate(f"{kind} {node}", (t, max(running, default=1)), rotation=90, fontsize=7,
                     va="top", ha="right")
    ax1.set_xlabel("virtual time (s)")
    ax1.set_ylabel("replicas assigned")
    ax1.set_title(f"tasks, {w.cfg.nodes} nodes, {w.cfg.jobs} jobs x {w.cfg.fragments} fragments "
                  f"x {w.cfg.redundancy}, seed {w.cfg.seed}")
    ax1.legend(loc="upper right")
    done = sorted((w.submitted[j], t - w.submitted[j], j)
                  for j, (st, t) in w.finished.items() if st == "done")
    ax2.barh(range(len(done)), [d for _, d, _ in done], left=[s for s, _, _ in done], color="tab:green")
    ax2.set_yticks(range(len(done)), [j for _, _, j in done], fontsize=6)
    ax2.set_xlabel("virtual time (s): submission to JobDone")
    ax2.set_title("makespan of each completed job")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
