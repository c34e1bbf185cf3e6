"""Integrity findings on a real node: signed by the manager that committed them, gossiped, and
adopted by every node only once checked against its own committed state (trio driver).

Theory of operation
-------------------
Findings are decided by the replicated state (consensus/integrity.py): every member replays
the same job-done and reaches the same findings, each logged with the manager term and the
manager id that committed it. That manager (or, after a failover, the manager the state names
now) signs each one as a :class:`~overlay.messages_gossip.FindingRecord` and publishes it as a
``finding`` gossip record about the node found against, so every node learns of it within a
few gossip rounds, like a score.

**Issuer.** The committing manager, not the replicas that ran beside the subject: it is the one
node that saw every replica's signed result and proposed the verdict, and the state names it,
so a receiver knows the one legitimate issuer of each finding. A replica only knows its own
output.

**Adoption.** A received finding is adopted only when, in this order:

1. its payload decodes (size-bounded, schema-checked) — else ``payload``;
2. its own signature verifies under the key it names, that key is the gossip record's issuer's,
   and it names the record's subject — else ``bad-signature`` / ``issuer-mismatch``;
3. the committed state holds a finding with its id — else ``not-committed`` (a finding ahead
   of our applied state waits, bounded, up to :data:`PENDING_TTL_S`);
4. its issuer committed it, or is the manager our state names — else ``not-a-witness`` (the
   issuer did not even run a replica of that fragment) or ``not-the-committer``;
5. every field equals the committed finding (subject, kind, job, fragment, replica, term,
   evidence) — else ``forged``.

A refusal is counted (``finding_rejected{reason}``) and logged; nothing it says is kept. The
score never reads the gossip: the penalty is the committed state's (node/attestation/score.py),
so a finding that never arrives changes nothing but what ``status`` shows. Gossip keeps one
record per (kind, subject, issuer), so a subject's newer finding supersedes an older one in
flight: a node may adopt only the newest of a burst; the state holds them all.

**Bad signatures.** A result whose signature does not verify is refused by the manager
(node/tasks/duty.py); :meth:`FindingsService.report_bad_signature` commits it as a
``report-bad-signature`` finding (once per replica assignment).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import cbor2
import trio

from consensus import integrity
from consensus.state import SwarmState
from node.keys.base import IdentityKey, KeyUnavailable
from node.manager_checks import _peer_key, verify_ed25519
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.messages_gossip import FindingRecord
from overlay.records import KIND_FINDING, Record
from overlay.wire import decode, encode

log = logging.getLogger("enclave_swarm.findings")

PUBLISH_PER_ROUND = 16      # findings signed and published per round by the manager
MAX_PENDING = 256           # findings ahead of our applied state, waiting for it
PENDING_TTL_S = 60.0        # how long such a finding may wait before it is refused
MAX_ADOPTED = 4096          # adopted findings kept for status (oldest forgotten)
RECORD_TTL_S = 3600.0


def evidence_bytes(ev: Mapping[str, Any]) -> bytes:
    """The canonical CBOR of a committed finding's evidence map (what the record carries)."""
    return cbor2.dumps(dict(ev), canonical=True)


def _signed_bytes(rec: FindingRecord) -> bytes:
    return b"enclave-swarm/finding/v1" + encode(dataclasses.replace(rec, signature=bytes(64)))


def sign_finding(key: IdentityKey, f: Mapping[str, Any], issued_at: float) -> FindingRecord:
    """The signed record of committed finding ``f`` (an entry of ``integrity.findings_log``)."""
    unsigned = FindingRecord(
        issuer=key.public_key().public_bytes_raw(), subject=f["node"], finding_id=int(f["id"]),
        kind=f["kind"], job=f["job"], fragment=int(f["frag"]), replica=int(f["rep"]),
        term=int(f["term"]), evidence=evidence_bytes(f["ev"]), issued_at=issued_at,
        signature=bytes(64))
    return dataclasses.replace(unsigned, signature=key.sign(_signed_bytes(unsigned)))


def verify_finding(rec: FindingRecord) -> bool:
    """True when the record's signature verifies under the key it names."""
    return verify_ed25519(rec.issuer, _signed_bytes(rec), rec.signature)


AHEAD = "ahead"


def detail(f: Mapping[str, Any]) -> str:
    """One line of a committed finding's evidence, for ``jobs describe``."""
    ev = f["ev"]
    if f["kind"] == integrity.MINORITY:
        return f"output {ev['out'].hex()[:16]}… outvoted by {ev['agreed'].hex()[:16]}…"
    if f["kind"] == integrity.OUTLIER:
        return (f"{ev['metric']} {ev['x']} against median {ev['median']} (MAD {ev['mad']}): "
                f"robust z {ev['z_milli'] / 1000:.1f}")
    if f["kind"] == integrity.BAD_SIGNATURE:
        return "its result's signature does not verify"
    return str(ev.get("err", ""))[:200]


def job_findings(state: SwarmState, job_id: str) -> list[dict[str, Any]]:
    """Every committed finding of every kind about a job still in the log, in id order."""
    return [{"id": f["id"], "fragment": f["frag"], "replica": f["rep"], "node": f["node"],
             "kind": f["kind"], "detail": detail(f)}
            for f in integrity.findings_log(state) if f["job"] == job_id]


def check_finding(rec: FindingRecord, issuer: str, subject: str, state: SwarmState) -> tuple[str, str]:
    """Why the finding ``rec``, received in a gossip record by ``issuer`` about ``subject``, is
    not adopted against ``state``: ``("", "")`` to adopt, ``(AHEAD, ...)`` to wait for a later
    state, else ``(reason, detail)`` (the module docstring's order)."""
    if not verify_finding(rec):
        return "bad-signature", "the finding's signature does not verify"
    key = _peer_key(issuer)
    if key is None or key != rec.issuer or rec.subject != subject:
        return "issuer-mismatch", "the finding's signer or subject is not the gossip record's"
    committed = integrity.finding(state, rec.finding_id)
    if committed is None:
        if rec.finding_id > integrity.last_id(state):
            return AHEAD, f"finding {rec.finding_id} is beyond our state ({integrity.last_id(state)})"
        return "not-committed", f"no committed finding {rec.finding_id}"
    if issuer not in (committed["by"], state.manager_id):
        sec = state.ext.get("tasks")
        job = sec["jobs"].get(committed["job"]) if isinstance(sec, Mapping) else None
        ran = job is not None and committed["frag"] < len(job["frags"]) and any(
            issuer == rep["node"] or issuer in rep["tried"] for rep in job["frags"][committed["frag"]])
        if not ran:
            return "not-a-witness", (f"{issuer} neither committed finding {rec.finding_id} nor ran "
                                     f"a replica of its fragment")
        return "not-the-committer", f"finding {rec.finding_id} was committed by {committed['by']}"
    mine = (committed["node"], committed["kind"], committed["job"], committed["frag"],
            committed["rep"], committed["term"], evidence_bytes(committed["ev"]))
    theirs = (rec.subject, rec.kind, rec.job, rec.fragment, rec.replica, rec.term, rec.evidence)
    if mine != theirs:
        return "forged", f"finding {rec.finding_id} differs from the committed one"
    return "", ""


class FindingsService:
    """Publishes the committed findings (on the manager) and adopts others' (on every node)."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.agent = svc.agent
        self.published = 0                  # the newest finding id we published
        self.adopted: dict[int, tuple[str, str, str]] = {}   # id -> (subject, kind, issuer)
        self.pending: dict[tuple[str, int], tuple[float, str, str, FindingRecord]] = {}
        self.stats = {"published": 0, "adopted": 0, "refused": 0}
        self._subscribed = False
        self._reporting: set[tuple[str, int, int, str]] = set()  # bad-signature reports in flight

    # ------------------------------------------------------------------ receive
    def subscribe(self) -> None:
        gossip = getattr(self.agent, "gossip", None)
        if gossip is not None and not self._subscribed:
            gossip.subscribe(KIND_FINDING, self.on_record)
            self._subscribed = True

    def on_record(self, rec: Record) -> None:
        """Gossip callback (must not block): check and adopt, hold, or refuse."""
        if rec.issuer == self.svc.me:
            return  # our own publication
        try:
            fr = decode(rec.payload, FindingRecord)
        except RemoteProtocolError as exc:
            self._refuse(rec.issuer, "payload", f"{exc.reason}: {exc.detail}")
            return
        self._judge(time.monotonic(), rec.issuer, rec.subject, fr)

    def _judge(self, now: float, issuer: str, subject: str, fr: FindingRecord) -> None:
        reason, detail = check_finding(fr, issuer, subject, self.svc.view())
        key = (issuer, fr.finding_id)
        if reason == AHEAD:
            if key not in self.pending:
                if len(self.pending) >= MAX_PENDING:
                    oldest = min(self.pending, key=lambda k: self.pending[k][0])
                    del self.pending[oldest]
                    self.agent.counters.inc("finding_rejected", "pending-full")
                self.pending[key] = (now, issuer, subject, fr)
            return
        self.pending.pop(key, None)
        if reason:
            self._refuse(issuer, reason, detail)
            return
        if fr.finding_id in self.adopted:
            return
        self.adopted[fr.finding_id] = (fr.subject, fr.kind, issuer)
        if len(self.adopted) > MAX_ADOPTED:
            del self.adopted[min(self.adopted)]
        self.stats["adopted"] += 1
        self.agent.counters.inc("finding_adopted", fr.kind)
        log.info("adopted finding %d (%s) against %s for job %s fragment %d, by %s", fr.finding_id,
                 fr.kind, fr.subject, fr.job[:64], fr.fragment, issuer,
                 extra={"peer": fr.subject, "peers": [fr.subject, issuer], "job": fr.job[:64]})

    def _refuse(self, issuer: str, reason: str, detail: str) -> None:
        self.stats["refused"] += 1
        self.agent.counters.inc("finding_rejected", reason)
        log.warning("refused a finding from %s: %s (%s)", issuer, reason, detail[:200],
                    extra={"peer": issuer, "reason": reason})

    def recheck(self, now: float) -> None:
        """Judge again the findings that were ahead of our state; refuse the expired ones."""
        for key, (since, issuer, subject, fr) in list(self.pending.items()):
            if now - since > PENDING_TTL_S:
                del self.pending[key]
                self._refuse(issuer, "not-committed", f"finding {fr.finding_id} never committed here")
            else:
                self._judge(since, issuer, subject, fr)

    # ------------------------------------------------------------------ publish (manager)
    def publish_new(self) -> int:
        """On the manager our state names: sign and gossip the committed findings we have not
        published yet (at most :data:`PUBLISH_PER_ROUND`). Returns how many."""
        role, gossip = self.svc.role, getattr(self.agent, "gossip", None)
        st = self.svc.view()
        if gossip is None or role is None or not role.is_leader() or st.manager_id != self.svc.me:
            return 0
        n = 0
        for f in integrity.findings_log(st):
            if f["id"] <= self.published or n >= PUBLISH_PER_ROUND:
                continue
            try:
                payload = encode(sign_finding(self.agent._identity, f, time.time()))
            except KeyUnavailable:  # our token is gone (node/keys): publish when it is back
                break
            except LocalProtocolError as exc:  # a finding our schema cannot carry: a bug of ours
                log.error("cannot publish finding %d: %s", f["id"], exc)
                self.published = int(f["id"])
                continue
            if gossip.publish(KIND_FINDING, f["node"], payload, ttl_s=RECORD_TTL_S):
                n += 1
                self.stats["published"] += 1
            self.published = int(f["id"])
        return n

    async def report_bad_signature(self, job_id: str, fragment: int, replica: int, node: str,
                                   payload: bytes, signature: bytes) -> None:
        """Commit a ``bad-signature`` finding (the manager's duty; refused by the state unless
        the replica is assigned to ``node``, and once per assignment)."""
        role = self.svc.role
        if role is None or not role.is_leader():
            return
        # A node that keeps sending bad results must not make us propose an entry each time:
        # one report per replica assignment, checked here before anything reaches the log.
        key = (job_id, fragment, replica, node)
        if key in self._reporting or any(
                (f["kind"], f["job"], f["frag"], f["rep"], f["node"]) == (integrity.BAD_SIGNATURE, *key)
                for f in integrity.findings_log(self.svc.view())):
            return
        self._reporting.add(key)
        try:
            ok, _ = await role.command(integrity.ReportBadSignature(
                job_id, fragment, replica, node, hashlib.sha256(payload).digest(),
                signature[:integrity.MAX_SIG]))
        finally:
            self._reporting.discard(key)
        if ok:
            log.warning("finding: a result of %s for job %s fragment %d does not verify", node,
                        job_id[:64], fragment, extra={"peer": node, "job": job_id[:64]})

    # ------------------------------------------------------------------ service
    async def run(self) -> None:
        while True:
            self.subscribe()
            self.publish_new()
            self.recheck(time.monotonic())
            await trio.sleep(self.svc.probe_s)

    def status(self) -> dict[str, Any]:
        """The committed standing of every node with one (penalty in points, findings by kind)
        and what this node adopted from gossip, by subject and kind."""
        st = self.svc.view()
        adopted: dict[str, dict[str, int]] = {}
        for subject, kind, _ in self.adopted.values():
            by = adopted.setdefault(subject, {})
            by[kind] = by.get(kind, 0) + 1
        return {
            "committed": {node: {"penalty": integrity.penalty_points(int(s["pen"])),
                                 "findings": dict(s["n"]), "good_results": s["good"]}
                          for node, s in sorted(integrity.standings(st).items())},
            "last_finding": integrity.last_id(st),
            "adopted": adopted,
            "pending": len(self.pending),
            "counts": dict(self.stats),
        }
