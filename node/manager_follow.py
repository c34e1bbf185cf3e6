"""Following the committed state (the manager role's non-voter side), and the manager's
announcements that drive it: a collaborator of :class:`node.manager.ManagerRole`, which owns the
state it reads and writes (``followed``, ``_announced``, ``follow_updates``...). The theory is in
``node/manager.py`` ("Followers", "Removed voters"); this module is its code.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

import trio

from consensus.state import ADMITTED, SUSPECT, InvalidCommand, decode_state
from node.manager_checks import check_announcement, federation_id, verify_decision
from node.manager_settings import ANNOUNCE_TTL_S
from node.manager_wire import ManagerAnnounce, StateRequest, StateResponse
from overlay.errors import RemoteProtocolError
from overlay.records import KIND_MANAGER, Record
from overlay.wire import decode, encode

if TYPE_CHECKING:
    from node.manager import ManagerRole

log = logging.getLogger("enclave_swarm.manager")

REFUSED_MEMORY = 256         # issuers whose refused announcement terms we remember
RETIRED_FILE = "retired"     # in raft/: our raft id was removed from the council for good


class Follower:
    """The follow and announcement duties of one :class:`ManagerRole`."""

    def __init__(self, role: ManagerRole) -> None:
        self.role = role

    # ------------------------------------------------------------------ followers
    async def follow_loop(self) -> None:
        """The fallback poll. Gossiped announcements normally tell a non-voter when to fetch;
        this covers quiet gossip (or a node without it) and voters without a leader (a voter
        removed while it could not hear it may never hear from a leader again)."""
        while True:
            period = self.role.settings.follow_poll_s
            await trio.sleep(period * (0.75 + 0.5 * self.role.rng.random()))
            if self.role.dissolved or self.role.left:
                continue
            node = self.role.node
            if node is not None and self.role.is_voter():
                if node.raft.lead is not None:
                    continue  # Raft keeps us up to date
            elif self.role._announced is not None and time.monotonic() - self.role._announced[2] < period:
                continue  # gossip is not quiet
            await self.poll_once()

    def _poll_target(self) -> str | None:
        """Whom the next poll asks: the manager we follow, unless its last answer brought
        nothing new; then another admitted member, at random. A manager can be replaced
        without our hearing it (revoked while we were behind, so that our own view still
        shows it attested and answering with its last, stale state): asking only it would keep
        us on its term for ever, while any other member would serve the proven successor's
        state."""
        attested = [p.peer_id for p in self.role.agent.peers.attested()]
        if not attested:
            return None
        lead = self.role.followed_leader
        if lead and lead in attested and not self.role._lead_idle:
            return lead
        st, _ = self.role.view()
        members = [p for p in attested if (m := st.member(p)) is not None and m.status == ADMITTED]
        others = [p for p in members or attested if p != lead]
        choice: str = self.role.rng.choice(others or members or attested)
        return choice

    async def poll_once(self) -> bool:
        """Fetch the committed state from a member if we are behind. Returns True on an answer."""
        pid = self._poll_target()
        if pid is None:
            return False
        asked_lead, before = pid == self.role.followed_leader, self.role.view()[1]
        answered = await self.fetch(pid, "poll")
        # After a poll of the manager we follow that brought nothing new, the next asks
        # another member; after that one, the manager again.
        self.role._lead_idle = asked_lead and self.role.view()[1] <= before
        return answered

    async def fetch(self, pid: str, via: str) -> bool:
        """Ask ``pid`` for the committed state (sent only if we are behind), the manager's
        signed decisions, and whether our raft id is tombstoned; take in the answer. ``via``
        ("gossip" or "poll") is what made us ask. Returns True on an answer."""
        _, idx = self.role.view()
        rid = self.role.node.id if self.role.node is not None else 0
        try:
            resp = await self.role._request(pid, StateRequest(rid, idx), StateResponse)
        except RemoteProtocolError as exc:
            self.role.agent.counters.inc("state_poll_failed", exc.reason)
            return False
        self._on_state_response(pid, resp, via)
        if resp.removed and rid and self._proven_removed(rid):
            await self._retire_raft(rid, pid)
        st, _ = self.role.view()
        me = st.member(self.role.me)
        if (me is not None and me.status in (ADMITTED, SUSPECT) and self.role.node is None
                and me.raft_id != self.role._retired_id and not self.role.left and not self.role.dissolved):
            log.info("admitted to the federation as raft id %d", me.raft_id)
            await self.role._start_raft(me.raft_id)
            # Ask again at once with our raft id: that tells the manager our Raft node runs
            # (it adds a council member as a voter only then).
            await self.fetch(pid, via)
        return True

    def _on_state_response(self, pid: str, resp: StateResponse, via: str = "poll") -> None:
        """Adopt a served state only with its proof (consensus/certificate.py): a chain of
        quorum certificates from what we hold to exactly these bytes. Anything else is refused,
        logged with the sender and counted; nothing in the reply is trusted before that."""
        if resp.state and resp.state_index > self.role.view()[1]:
            ann = self.role._announced
            if (ann is not None and ann[1].applied_index == resp.state_index
                    and hashlib.sha256(resp.state).digest() != ann[1].state_digest):
                self._reject(ann[0], ann[1], "digest-mismatch",
                             f"state {resp.state_index} from {pid} is not what the manager announced")
                return
            cert, problem = self.role.cert.verify_served(resp.proof, resp.state_index, resp.state)
            if cert is None:
                self._refuse_state(pid, "unproven", problem)
                return
            try:
                st = decode_state(resp.state)
            except InvalidCommand as exc:
                self._refuse_state(pid, "invalid", str(exc))
                return
            cp = cert.checkpoint
            if federation_id(st) != cp.federation or (st.manager_term, st.manager_id) != (
                    cp.manager_term, cp.manager):
                self._refuse_state(pid, "unproven", "state does not match its checkpoint")
                return
            self.role.cert.adopted(resp.proof, resp.state)
            self.role.followed, self.role.followed_index = st, resp.state_index
            self.role._follow_via = via
            self.role.follow_updates[via] += 1
            if st.manager_term >= self.role.followed_term:
                self.role.followed_term, self.role.followed_leader = st.manager_term, st.manager_id
                self.role.note_leader(st.manager_id)
            self.role._refresh_ids()
            self.role._after_apply(st)
        st, _ = self.role.view()
        for rec in resp.decisions:
            if rec.term != st.manager_term:
                continue  # the state records only the latest term's manager
            why = verify_decision(rec, st)
            if why is None:
                self.role.decisions_verified += 1
            else:
                self.role.decisions_rejected += 1
                self.role.agent.counters.inc("decision_rejected", why)
                log.warning("decision %d/%d from %s does not verify: %s", rec.term, rec.index,
                            pid, why, extra={"peer": pid})

    def _refuse_state(self, pid: str, reason: str, detail: str) -> None:
        """A served state we will not adopt: counted, logged with the sender (reported)."""
        self.role.cert.stats["rejected"] += 1
        self.role.agent.counters.inc("state_rejected", reason)
        log.warning("refused the state served by %s: %s (%s)", pid, reason, detail,
                    extra={"peer": pid, "reason": reason})

    def _proven_removed(self, rid: int) -> bool:
        """Does a certified state beyond our own commit index leave us out of the voters?
        (A removal is final; a responder's word that we are removed is not enough.)"""
        latest = self.role.cert.chain.latest
        node = self.role.node
        return (latest is not None and node is not None and node.id == rid
                and latest.checkpoint.index > node.raft.log.committed
                and self.role.me not in latest.checkpoint.voters)

    async def _retire_raft(self, rid: int, pid: str) -> None:
        """``rid`` (ours) is tombstoned in a committed configuration: removals are final, so
        stop our Raft node for good (``raft/retired`` keeps it stopped across restarts) and
        follow the state like any non-voter."""
        from node.datadir import write_atomic

        async with self.role._lock:
            node = self.role.node
            if node is None or node.id != rid or node.raft.role == "leader":
                return
            await trio.to_thread.run_sync(write_atomic, self.role.raft_dir / RETIRED_FILE,
                                          f"{rid}\n".encode())
            if self.role.store is not None:
                self.role.store.close()
                self.role.store = None
            self.role.node = None
            self.role.cert.forget()
            self.role._retired_id = rid
            for ch in self.role._senders.values():
                ch.close()
            self.role._senders.clear()
        self.role._wake()  # the driver sees that the Raft node is gone and ends
        log.warning("removed from the council (raft id %d is tombstoned in the configuration "
                    "committed by %s); now following the committed state", rid, pid,
                    extra={"peer": pid})

    # ------------------------------------------------------------------ announcements
    def announcement(self) -> ManagerAnnounce | None:
        """What we announce now, if anything: only as the leader that the committed state
        names manager of our term (so that every receiver can check it)."""
        node = self.role.node
        if node is None or node.raft.role != "leader" or self.role.dissolved:
            return None
        st = self.role.state
        if st.manager_term != node.raft.term or st.manager_id != self.role.me:
            return None
        # What we announce is our latest certified state: the one a follower can fetch and
        # adopt (with its proof) from us or from anyone who has it.
        latest = self.role.cert.chain.latest
        if (latest is None or latest.checkpoint.index > node.raft.log.committed
                or (latest.checkpoint.manager_term, latest.checkpoint.manager)
                != (node.raft.term, self.role.me)):
            return None  # not certified yet in our own term: nothing a follower could check
        return ManagerAnnounce(term=node.raft.term, commit_index=node.raft.log.committed,
                               applied_index=latest.checkpoint.index,
                               state_digest=latest.checkpoint.digest,
                               federation=federation_id(st) or "")

    async def announce_loop(self) -> None:
        """The manager's side: publish on every change of term or commit index (at most every
        ``announce_min_interval_s``) and every ``announce_refresh_s`` regardless."""
        s = self.role.settings
        last: tuple[int, int, int] | None = None
        last_at = float("-inf")
        while True:
            with trio.move_on_after(s.announce_refresh_s):
                await self.role._announce_due.wait()
            self.role._announce_due = trio.Event()
            ann = self.announcement()
            if ann is None:
                last = None
                continue
            key = (ann.term, ann.commit_index, ann.applied_index)
            now = trio.current_time()
            if key == last and now - last_at < s.announce_refresh_s:
                continue
            if self.role._gossip.publish(KIND_MANAGER, self.role.me, encode(ann), ttl_s=ANNOUNCE_TTL_S):
                self.role.announcements["published"] += 1
                last, last_at = key, now
            else:
                self.role.agent.counters.inc("announce_publish_refused")
            await trio.sleep(s.announce_min_interval_s)

    def on_manager_record(self, rec: Record) -> None:
        """Gossip callback for an accepted ``manager`` record (signature and issuer
        attestation already checked by the dissemination core). Runs in the gossip loop:
        decode and queue only."""
        if rec.issuer == self.role.me:
            return
        if rec.subject != rec.issuer:
            self._reject(rec.issuer, None, "subject-not-issuer")
            return
        try:
            ann = decode(rec.payload, ManagerAnnounce)
        except RemoteProtocolError as exc:
            self._reject(rec.issuer, None, f"payload-{exc.reason}", str(exc))
            return
        try:
            self.role._ann_send.send_nowait((rec.issuer, ann))
        except trio.WouldBlock:
            self.role.agent.counters.inc("announce_dropped", "queue-full")

    def is_committed_manager(self, peer_id: str) -> bool:
        """The gossip layer's ``is_manager``: the manager our committed (proven) state names."""
        st, _ = self.role.view()
        return bool(st.manager_id) and peer_id == st.manager_id

    def on_revocation_hint(self, subject: str, issuer: str) -> None:
        """Gossip callback: the committed manager says ``subject`` was revoked. A hint only:
        fetch the proven state from the issuer (the revocation takes effect when it applies)."""
        if issuer == self.role.me:
            return
        try:
            self.role._hint_send.send_nowait(issuer)
        except trio.WouldBlock:
            self.role.agent.counters.inc("revocation_hint_dropped", "queue-full")

    async def hint_loop(self) -> None:
        async for issuer in self.role._hint_recv:
            node = self.role.node
            if self.role.dissolved or self.role.left or (node is not None and self.role.is_voter()
                                               and node.raft.lead is not None):
                continue  # a voter with a leader learns the revocation through Raft
            await self.fetch(issuer, "gossip")

    async def announcement_loop(self) -> None:
        async for issuer, ann in self.role._ann_recv:
            if not (self.role.dissolved or self.role.left):
                await self._on_announcement(issuer, ann)

    def _raft_led_by(self, issuer: str, term: int) -> bool:
        """Whether our own Raft node, a voter, follows ``issuer`` as the leader of ``term``."""
        node = self.role.node
        return (node is not None and self.role.is_voter() and node.raft.term == term
                and node.raft.lead is not None and self.role._raft_to_peer.get(node.raft.lead) == issuer)

    def _check_announcement(self, issuer: str, ann: ManagerAnnounce) -> str | None:
        if self._raft_led_by(issuer, ann.term):
            return None  # our own Raft follows the issuer as the leader of that very term
        st, _ = self.role.view()
        return check_announcement(ann.term, issuer, st)

    async def _on_announcement(self, issuer: str, ann: ManagerAnnounce) -> None:
        """Judge an announcement, then catch up if it shows that we are behind."""
        st, _ = self.role.view()
        fed = federation_id(st)
        if fed is not None and ann.federation != fed:
            self._reject(issuer, ann, "other-federation")
            return
        if self.role._announced is not None and ann.term < self.role._announced[1].term:
            self._reject(issuer, ann, "stale-term")
            return
        refused = self.role._refused.get(issuer)
        if refused is not None and ann.term <= refused:
            self._reject(issuer, ann, "refused-before")
            return
        why = self._check_announcement(issuer, ann)
        fetched = False
        if why == "term-not-committed":
            # The committed state we hold predates that term: fetch the issuer's (as we would
            # to catch up anyway) and judge the claim against it.
            fetched = await self.fetch(issuer, "gossip")
            if not fetched:
                self.role.agent.counters.inc("announce_unverified", "fetch-failed")
                return  # judge it on the next announcement
            why = self._check_announcement(issuer, ann)
        if why is not None:
            self._reject(issuer, ann, why)
            return
        self.role._announced = (issuer, ann, time.monotonic())
        self.role.announcements["accepted"] += 1
        if ann.term >= self.role.followed_term:
            self.role.followed_term, self.role.followed_leader = ann.term, issuer
            self.role.note_leader(issuer)
        node = self.role.node
        if node is not None and self.role.is_voter():
            if ann.commit_index > node.raft.log.committed and not self._raft_led_by(issuer, ann.term):
                # A manager we do not follow is ahead of our log: we may have been removed
                # without hearing it. Its reply says whether our raft id is tombstoned.
                await self.fetch(issuer, "gossip")
        elif ann.applied_index > self.role.view()[1]:
            await self.fetch(issuer, "gossip")

    def _reject(self, issuer: str, ann: ManagerAnnounce | None, reason: str, detail: str = "") -> None:
        self.role.announcements["rejected"] += 1
        self.role.agent.counters.inc("announce_rejected", reason)
        if ann is not None and reason not in ("stale-term", "refused-before", "digest-mismatch"):
            self.role._refused[issuer] = max(ann.term, self.role._refused.get(issuer, 0))
            self.role._refused.move_to_end(issuer)
            while len(self.role._refused) > REFUSED_MEMORY:
                self.role._refused.popitem(last=False)
        level = logging.DEBUG if reason in ("stale-term", "refused-before") else logging.WARNING
        log.log(level, "refused a manager announcement from %s (term %s): %s%s", issuer,
                ann.term if ann is not None else "?", reason, f" ({detail})" if detail else "",
                extra={"peer": issuer})
