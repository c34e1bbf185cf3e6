"""Checkers over a chaos run's history and the nodes' final state, in the manner of Jepsen's.

Each checker is a pure function returning a :class:`Check`: its name, whether it passed, the
violations it found (each a sentence naming what and where), and a few figures. Inputs are the
paired operations of node/chaos/history.py, the nodes' final state (a dict per node, gathered
by the driver after the heal) and the committed Raft entries read from every node's store.

What each one holds the federation to:

- :func:`check_managers`: never two managers in one term -- not in any status sample (the
  manager a node names for a term, and nodes that call themselves manager), not in the Raft
  stores (every ``AnnounceManager`` a leader records in its term, committed or not; an entry of
  term T is only ever written by T's leader).
- :func:`check_logs`: the committed prefixes of all stores agree (State Machine Safety).
- :func:`check_puts`: every acknowledged ``put`` reads back bit-exact after the heal; an object
  no put acknowledged is visible only if some put to that owner ended indeterminate.
- :func:`check_reads`: every successful ``get`` returned the bytes that were put.
- :func:`check_jobs`: every job that completed has the result computed locally, and every
  fragment counted once.
- :func:`check_digests`: after the heal every node applied the same index with the same state
  digest.
- :func:`check_revoked`: a node whose TEE failed attestation is revoked, and after its
  revocation never manages, never sits on the council, and no node holds it attested.
- :func:`check_recovery`: after the last heal a manager, every node attested and every repair
  done within the bound.

Pure: no I/O; the only decoding is of Raft entry bytes (strict CBOR, hostile-safe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from consensus import cbor_strict
from node.chaos.history import Op


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    violations: tuple[str, ...] = ()
    figures: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "violations": list(self.violations[:50]),
                "violation_count": len(self.violations), "figures": dict(self.figures)}


def _check(name: str, violations: list[str], **figures: Any) -> Check:
    return Check(name, not violations, tuple(violations), figures)


# --------------------------------------------------------------------------- managers


@dataclasses.dataclass(frozen=True)
class StoreEntry:
    """One entry of a node's Raft store: ``committed`` when at or below its commit index."""

    index: int
    term: int
    kind: str
    data: bytes
    committed: bool


def announced(entry: StoreEntry) -> tuple[int, str] | None:
    """``(term, manager)`` of an ``AnnounceManager`` entry, else None (also for bytes that do
    not decode: a torn or hostile entry is not evidence of anything)."""
    if entry.kind != "normal" or not entry.data:
        return None
    try:
        raw = cbor_strict.loads(entry.data)
    except cbor_strict.CborRefused:
        return None
    if not (isinstance(raw, list) and len(raw) == 2 and raw[0] == "announce-manager"
            and isinstance(raw[1], dict)):
        return None
    term, node_id = raw[1].get("term"), raw[1].get("node_id")
    if isinstance(term, int) and not isinstance(term, bool) and isinstance(node_id, str):
        return term, node_id
    return None


def check_managers(samples: Iterable[Mapping[str, Any]],
                   stores: Mapping[int, Sequence[StoreEntry]]) -> Check:
    """``samples``: status samples with ``term``, ``manager``, ``role`` and ``peer_id``."""
    by_term: dict[int, set[str]] = {}
    where: dict[tuple[int, str], str] = {}
    n_samples = 0
    for s in samples:
        n_samples += 1
        term = s.get("term")
        if not isinstance(term, int) or term <= 0:
            continue
        for who, src in ((s.get("manager"), "named by"), (s.get("peer_id") if s.get("role") == "manager"
                                                           else None, "claimed by")):
            if isinstance(who, str) and who:
                by_term.setdefault(term, set()).add(who)
                where.setdefault((term, who), f"{src} {str(s.get('peer_id'))[-8:]} at {s.get('time_s')}")
    store_terms: dict[int, set[str]] = {}
    for node, entries in stores.items():
        for e in entries:
            a = announced(e)
            if a is None:
                continue
            term, who = a
            store_terms.setdefault(term, set()).add(who)
            by_term.setdefault(term, set()).add(who)
            where.setdefault((term, who), f"announced in node {node}'s store at index {e.index}")
            if e.term != term:
                store_terms.setdefault(-1, set()).add(f"entry term {e.term} announces term {term}")
    violations = []
    for term, who in sorted(by_term.items()):
        if len(who) > 1:
            violations.append(f"term {term}: {len(who)} managers: " + "; ".join(
                f"{w[-8:]} ({where[(term, w)]})" for w in sorted(who)))
    violations += sorted(store_terms.get(-1, ()))
    return _check("managers", violations, terms=len(by_term), samples=n_samples,
                  announced_terms=len([t for t in store_terms if t >= 0]))


def check_logs(stores: Mapping[int, Sequence[StoreEntry]]) -> Check:
    """Committed entries at one index are the same entry in every store that holds them."""
    seen: dict[int, tuple[int, bytes, int]] = {}
    violations = []
    compared = 0
    for node, entries in sorted(stores.items()):
        for e in entries:
            if not e.committed:
                continue
            prior = seen.get(e.index)
            if prior is None:
                seen[e.index] = (e.term, e.data, node)
                continue
            compared += 1
            if (prior[0], prior[1]) != (e.term, e.data):
                violations.append(f"index {e.index}: node {prior[2]} committed term {prior[0]}, "
                                  f"node {node} committed term {e.term}"
                                  + ("" if prior[0] != e.term else " with other data"))
    return _check("raft-logs", violations, committed_indices=len(seen), compared=compared)


# --------------------------------------------------------------------------- data


def check_puts(ops: Sequence[Op], final_reads: Mapping[str, str | None],
               visible: Mapping[int, Iterable[str]]) -> Check:
    """``final_reads``: object id -> SHA-256 hex of what a get after the heal returned (None:
    the get failed). ``visible``: node index -> object ids its owner lists after the heal.

    A put's ``arg`` carries ``sha256`` (of what was put) and its ok ``result`` the
    ``object_id``."""
    acked: dict[str, tuple[str, Op]] = {}
    uncertain_by_node: dict[int | None, int] = {}
    failed_by_node: dict[int | None, int] = {}
    for op in ops:
        if op.f != "put":
            continue
        if op.type == "ok" and isinstance(op.result, dict) and isinstance(op.result.get("object_id"), str):
            acked[op.result["object_id"]] = (str(op.arg.get("sha256")), op)
        elif op.type == "info":
            uncertain_by_node[op.node] = uncertain_by_node.get(op.node, 0) + 1
        else:
            failed_by_node[op.node] = failed_by_node.get(op.node, 0) + 1
    violations = []
    for oid, (digest, op) in sorted(acked.items()):
        got = final_reads.get(oid, "missing")
        if got == "missing":
            violations.append(f"acknowledged put {oid} (op {op.index}, node {op.node}) was never read back")
        elif got is None:
            violations.append(f"acknowledged put {oid} (op {op.index}, node {op.node}) cannot be read "
                              "after the heal")
        elif got != digest:
            violations.append(f"acknowledged put {oid} (op {op.index}) reads back other bytes "
                              f"(sha256 {got[:16]}… instead of {digest[:16]}…)")
    strays = 0
    for node, ids in sorted(visible.items()):
        extra = sorted(set(ids) - set(acked))
        strays += len(extra)
        if len(extra) > uncertain_by_node.get(node, 0):
            violations.append(f"node {node} lists {len(extra)} object(s) no put acknowledged "
                              f"({', '.join(x[:12] for x in extra[:5])}) but only "
                              f"{uncertain_by_node.get(node, 0)} put(s) there ended indeterminate")
    return _check("puts", violations, acknowledged=len(acked),
                  failed=sum(failed_by_node.values()), indeterminate=sum(uncertain_by_node.values()),
                  unacknowledged_visible=strays)


def check_reads(ops: Sequence[Op]) -> Check:
    """Every ``get`` (during the run and after) that succeeded returned the bytes that were
    put: its result's ``sha256`` is the ``expected`` one."""
    violations = []
    n = 0
    for op in ops:
        if op.f not in ("get", "final-read") or op.type != "ok" or not isinstance(op.result, dict):
            continue
        n += 1
        if op.result.get("sha256") != op.result.get("expected"):
            violations.append(f"{op.f} of {op.result.get('object_id')} (op {op.index}, node {op.node}) "
                              "returned other bytes than were put")
    return _check("reads", violations, reads_ok=n)


def check_jobs(ops: Sequence[Op], final_jobs: Mapping[str, Mapping[str, Any]]) -> Check:
    """``final_jobs``: job id -> ``{"status", "result_sha256", "fragments", "done_fragments"}``
    (``done_fragments``: the fragment index of every replica whose output was accepted, once
    per accepted replica counted into the result). A submit's ``arg`` carries the
    ``expected_sha256`` computed locally."""
    violations = []
    completed = 0
    submitted = 0
    unchecked: dict[str, int] = {}
    for op in ops:
        if op.f != "submit" or op.type != "ok" or not isinstance(op.result, dict):
            continue
        submitted += 1
        job_id = op.result.get("job_id")
        job = final_jobs.get(str(job_id))
        if job is None:
            violations.append(f"job {job_id} (op {op.index}) was acknowledged but is unknown after the heal")
            continue
        if job.get("status") != "done":
            # failed/cancelled: no claim to check; forgotten: dropped from the committed state
            # (it keeps the last 32 finished jobs) and from its restarted owner's memory; None:
            # no end seen in time. Counted, so that a run that checked nothing says so.
            key = str(job.get("status") or "no-end-seen")
            unchecked[key] = unchecked.get(key, 0) + 1
            continue
        completed += 1
        if job.get("result_sha256") is None:
            violations.append(f"job {job_id} is done but its owner gives no result: "
                              f"{str(job.get('result_error'))[:160]}")
        elif job.get("result_sha256") != op.arg.get("expected_sha256"):
            violations.append(f"job {job_id}: result sha256 {str(job.get('result_sha256'))[:16]}… is not "
                              f"the local computation's {str(op.arg.get('expected_sha256'))[:16]}…")
        n = job.get("fragments")
        done = list(job.get("done_fragments") or [])
        counted = sorted(done)
        if isinstance(n, int) and counted != list(range(n)):
            dup = sorted({f for f in counted if counted.count(f) > 1})
            missing = sorted(set(range(n)) - set(counted))
            violations.append(f"job {job_id}: fragments counted twice {dup}, missing {missing}")
    return _check("jobs", violations, submitted=submitted, completed=completed, **unchecked)


# --------------------------------------------------------------------------- state


def check_digests(final: Mapping[int, Mapping[str, Any]]) -> Check:
    """``final``: node index -> its final status (``applied_index``, ``digest``; revoked and
    dead nodes excluded by the caller)."""
    by_index: dict[int, dict[str, list[int]]] = {}
    for node, st in sorted(final.items()):
        idx, digest = st.get("applied_index"), st.get("digest")
        if isinstance(idx, int) and isinstance(digest, str):
            by_index.setdefault(idx, {}).setdefault(digest, []).append(node)
    violations = []
    for idx, digests in sorted(by_index.items()):
        if len(digests) > 1:
            violations.append(f"applied index {idx}: {len(digests)} different states: " + "; ".join(
                f"{d[:12]}… on nodes {nodes}" for d, nodes in sorted(digests.items())))
    # Entries that change nothing (Raft configuration changes, refused commands) move the
    # applied index without the state: one state at different indices has converged.
    states = {d for ds in by_index.values() for d in ds}
    if len(states) > 1 and not violations:
        violations.append(f"nodes did not converge on one state: {len(states)} states: " + "; ".join(
            f"index {idx}: {d[:12]}… on {nodes}" for idx, ds in sorted(by_index.items())
            for d, nodes in sorted(ds.items())))
    return _check("state-digest", violations, nodes=len(final), indices=sorted(by_index),
                  states=len(states))


def check_revoked(target: str | None, injected_s: float | None, samples: Iterable[Mapping[str, Any]],
                  final: Mapping[int, Mapping[str, Any]]) -> Check:
    """``target``: the peer id whose TEE was made to fail attestation at ``injected_s`` (None:
    no such fault in this run). Samples carry ``time_s``, ``peer_id``, ``role``, ``manager``,
    ``council``, ``attested`` (peer ids) and ``revoked`` (peer ids the committed state revokes).
    The revoked node's own samples are not held against it: cut off, it learns nothing more."""
    if target is None or injected_s is None:
        return _check("revocation", [], injected=False)
    violations = []
    revoked_at: float | None = None
    ordered = sorted(samples, key=lambda s: float(s.get("time_s") or 0.0))
    for s in ordered:
        if revoked_at is None and target in (s.get("revoked") or ()):
            revoked_at = float(s.get("time_s") or 0.0)
            continue
        if revoked_at is None:
            continue
        t = s.get("time_s")
        who = str(s.get("peer_id"))[-8:]
        if s.get("peer_id") == target:
            # Cut off, the revoked node is told nothing more: its own view may stay stale. It
            # takes part only if it still acts as manager (nobody follows it: others' samples).
            continue
        if s.get("manager") == target:
            violations.append(f"at {t}: {who} names the revoked node its manager")
        if target in (s.get("council") or ()):
            violations.append(f"at {t}: {who} has the revoked node on its council")
        if s.get("peer_id") != target and target in (s.get("attested") or ()) and \
                target in (s.get("revoked") or ()):
            violations.append(f"at {t}: {who} holds the revoked node attested")
    for node, st in final.items():
        if st.get("peer_id") == target:
            continue
        if target not in (st.get("revoked") or ()):
            violations.append(f"node {node} does not hold {target[-8:]} revoked at the end")
    if revoked_at is None:
        violations.append(f"{target[-8:]} failed attestation at {injected_s:g} s and was never revoked")
    return _check("revocation", violations[:200], injected=True,
                  revoked_after_s=None if revoked_at is None else round(revoked_at - injected_s, 2))


def check_recovery(healed_s: float, recovered_s: Mapping[str, float | None], bound_s: float) -> Check:
    """``recovered_s``: for each condition (``manager``, ``attested``, ``repairs``), when it
    first held after ``healed_s`` (None: never within the wait)."""
    violations = []
    figures: dict[str, Any] = {"bound_s": bound_s}
    for cond, t in sorted(recovered_s.items()):
        if t is None:
            violations.append(f"{cond}: not recovered after the heal at {healed_s:g} s")
            figures[cond] = None
            continue
        took = round(t - healed_s, 2)
        figures[cond] = took
        if took > bound_s:
            violations.append(f"{cond}: recovered {took} s after the heal, over the {bound_s:g} s bound")
    return _check("recovery", violations, **figures)


# --------------------------------------------------------------------------- figures


def manager_gaps(samples: Iterable[Mapping[str, Any]],
                 faults: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each fault that hit the manager (isolate-manager, kill or pause of ``"manager"``):
    seconds from the fault's start to the first status sample, on a node other than the old
    manager, naming another manager in a later term (None if none within the window + 60 s)."""
    ordered = sorted(samples, key=lambda s: float(s.get("time_s") or 0.0))
    out = []
    for f in faults:
        p = f.get("params") or {}
        hit = p.get("resolved_target")
        if not isinstance(hit, dict) or p.get("target") != "manager":
            continue
        old, old_term = hit.get("peer_id"), hit.get("term") or 0
        start = float(f["start_s"])
        took = None
        for s in ordered:
            t = float(s.get("time_s") or 0.0)
            if t < start or t > float(f["end_s"]) + 60:
                continue
            if (s.get("peer_id") != old and s.get("manager") and s.get("manager") != old
                    and int(s.get("term") or 0) > old_term):
                took = round(t - start, 2)
                break
        kind = f["kind"] if f["kind"] != "partition" else "isolate"
        out.append({"fault": kind, "start_s": start, "new_manager_after_s": took})
    return out


def availability(ops: Sequence[Op], windows: Sequence[tuple[float, float, set[int]]]) -> dict[str, Any]:
    """Of the ``get`` and ``status`` operations invoked on the majority side (``windows``: start,
    end and the majority's node indices of each minority partition), the fraction that
    succeeded, per function."""
    tally: dict[str, list[int]] = {"get": [0, 0], "status": [0, 0]}
    for op in ops:
        if op.f not in tally or op.node is None:
            continue
        for start, end, majority in windows:
            if start <= op.invoke_s < end and op.node in majority:
                tally[op.f][1] += 1
                tally[op.f][0] += op.type == "ok"
                break
    return {f: {"ok": ok, "total": total, "fraction": round(ok / total, 4) if total else None}
            for f, (ok, total) in tally.items()}
