"""The manager role on a real node: the trio driver of the Raft council and of the swarm state.

Theory of operation
-------------------
One :class:`ManagerRole` per :class:`~node.agent.Agent` (``attach`` is the runtime extension).

- **Raft driver.** Council members run a ``consensus.raft.RawNode``. One task owns it: it
  ticks every ``tick_s``, steps inbound messages and handles every ``Ready`` in the order the
  caller's duties demand: persist (``node/raftstore.py`` in ``<data dir>/raft/``, fsynced) ->
  send -> apply committed entries to the swarm state machine (``consensus/state.py``) ->
  advance. Other tasks touch the RawNode only under the same lock, never between a Ready and
  its advance. Raft messages travel on ``/enclave-swarm/raft/1.0.0``: one long-lived outbound
  stream per peer fed by a bounded queue (overflow = message loss, which Raft tolerates);
  a message is accepted only if its sender's raft id belongs to the authenticated,
  attested peer that sent it.
- **Bootstrapping.** Raft ids come from the replicated state (``Join`` hands out fresh ids;
  never reused). A node with no Raft state and no bootstrap address *founds* the federation:
  it is raft id 1, the single voter of the index-0 configuration every node starts from, and
  its first commands are ``Join(itself)``, ``SetCouncil`` and ``AnnounceManager``. Its peer id
  is the federation id. Every other node starts as a *follower*: it fetches the committed
  state over ``/enclave-swarm/state/1.0.0`` (see Followers) until a committed ``Join`` admits
  it, then starts its Raft node with the raft id it was given (kept in ``raft/id``) and asks
  again at once with that id, which tells the manager it is ready; only then does the manager
  propose its Raft ``add``.
- **Council** (leader's reconcile loop, every ``reconcile_s``): admit attested peers
  (``Join``), record changed scores, keep ``SetCouncil`` in line with ``choose_council``
  (top ``council_size`` admitted members by score, one per provider first, the sitting
  council with an incumbency margin; each peer is its own provider until providers are
  configured), then move the Raft voters towards the
  council one single-server change at a time (remove departed/revoked voters first, then add,
  then remove the surplus).
- **Term limit.** ``consensus.manager.decide`` on every reconcile: at ``term_limit_s`` the
  manager transfers leadership (TimeoutNow) to the best-scored reachable council member -- no
  election gap; revoked or below ``min_score``: it steps down at once the same way.
- **Followers** outside the council follow the committed state through the overlay. The
  manager publishes a signed ``manager`` gossip record (:class:`ManagerAnnounce`: term, commit
  index, applied index, state digest) whenever its term or commit index changes (at most every
  ``announce_min_interval_s``) and every ``announce_refresh_s``, once the committed state
  names it manager of its term. A node that receives one checks it against the committed
  state (the issuer must be the manager recorded for that term -- fetching the state from the
  issuer first when the term is newer than what it holds); a forged or stale announcement is
  dropped, logged and counted (``announce_rejected``). A verified announcement beyond the
  node's applied index makes it fetch the state (``/enclave-swarm/state/1.0.0``) with the
  manager's recent signed decisions, which it checks too. A slow timer poll
  (``follow_poll_s``) is the fallback when gossip is quiet. The code of this side (and of the
  manager's announcements) is ``node/manager_follow.py``, a collaborator holding the role.
- **Removed voters.** A voter removed from the council is not sent the entry that removes it
  once the removal has committed without it (Raft stops replicating to it), so it keeps its
  old configuration. It keeps running Raft as long as it may still be a voter, and learns the
  truth from the committed configuration of a manager that is ahead of it: an announcement
  beyond its own commit index from a manager that is not its Raft leader (or a poll while it
  has no leader) makes it ask; a reply saying its raft id is tombstoned in the *committed*
  configuration (removals are final) retires its Raft node (``raft/retired`` remembers it
  across restarts) and it follows the state like any other non-voter.
- **Lifecycle.** A failed attestation seen by the manager (any verdict against a member, at
  each re-attestation, not only the one that quarantines it), or a member score below policy,
  becomes a committed ``Revoke``; every node applying or following it
  calls ``Agent.revoke``. ``leave`` drains, commits ``Leave`` (through the manager), waits for
  the Raft removal and stops the node. ``dissolve``: a dissolve order signed by the owner key
  (verified against ``<data dir>/federation-owner.pub``) is flooded to attested peers; every
  node erases ``raft/``, ``shards/`` and ``sim-tee`` and stops (exit code 0).

Settings are :class:`ManagerSettings` (per profile; overridable in ``<data dir>/manager.toml``,
see docs/consensus.md).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import random
import secrets
import shutil
import statistics
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from consensus import cbor_strict, integrity
from consensus import messages as cm
from consensus.manager import (
    ManagerPolicy,
    decide,
    sign_decision,
)
from consensus.raft import Config, Persisted, ProposalDropped, RawNode
from consensus.state import (
    ADMITTED,
    LEFT,
    REVOKED,
    SUSPECT,
    AnnounceManager,
    Candidate,
    InvalidCommand,
    Join,
    Leave,
    Revoke,
    SetCouncil,
    SetLabels,
    SwarmState,
    apply_entry,
    choose_council,
    decode_state,
    encode_state,
)
from consensus.tasks import TASK_REGISTRY
from node.attestation.engine import Outcome
from node.keys.base import KeyUnavailable
from node.manager_cert import CertState
from node.manager_checks import (
    FOUNDER_RAFT_ID,
    _close,
    _peer_key,
    _reset,
    check_dissolve_order,
    federation_id,
    load_owner_key,
    verify_ed25519,
)
from node.manager_follow import RETIRED_FILE, Follower
from node.manager_settings import ManagerSettings
from node.manager_wire import (
    DISSOLVE_PROTOCOL,
    MAX_DECISION_ENTRY_BYTES,
    MAX_DECISIONS,
    MAX_STATE_BYTES,
    RAFT_PROTOCOL,
    STATE_PROTOCOL,
    STATE_REQUESTS,
    CertifyReply,
    CertifyRequest,
    DecisionRecord,
    DissolveOrder,
    LeaveRequest,
    ManagerAnnounce,
    ManagerReply,
    StateRequest,
    StateResponse,
    TransferRequest,
)
from node.raftstore import RaftStore, check_schema
from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, frame, read_message, write_message
from overlay.records import KIND_MANAGER
from overlay.wire import encode

log = logging.getLogger("enclave_swarm.manager")

INITIAL_STATE = encode_state(SwarmState())
#: Test-only: ``apply-before-commit`` makes a leader apply entries as it appends them, before
#: they commit -- the bug the chaos checkers (node/chaos/checkers.py) must be shown to catch;
#: it acts once ``<data dir>/plant-armed`` exists (the chaos run arms it after formation).
PLANT_ENV = "ENCLAVE_SWARM_TEST_PLANT"
INBOX = 4096                 # inbound raft messages buffered for the driver
OUTBOX = 2048                # outbound raft messages buffered per peer
STREAM_IDLE_S = 600.0        # an inbound raft stream with no frame for this long is closed
SEND_TIMEOUT_S = 1.0         # writing a batch on an open raft stream
# Opening a raft stream gets the network's request timeout instead (see _open_raft_stream).
LEAVE_TIMEOUT_S = 30.0
ANNOUNCE_QUEUE = 64          # received announcements awaiting the follower task
HINT_QUEUE = 16              # revocation hints awaiting a state fetch
DECISION_KINDS = frozenset({"join", "revoke", "leave", "set-council", "announce-manager",
                            "suspect", "reinstate", "set-labels",
                            # the scheduler's decisions (consensus/tasks.py), signed like the rest
                            "assign-fragments", "reassign-fragment", "job-failed",
                            # a privacy-budget charge (consensus/budgets.py)
                            "charge-budget"})


# =============================================================================== registry of roles
_ROLES: weakref.WeakKeyDictionary[Any, ManagerRole] = weakref.WeakKeyDictionary()


def role_of(agent: Any) -> ManagerRole:
    role = _ROLES.get(agent)
    if role is None:
        raise LookupError("this node runs no manager role")
    return role


# =============================================================================== the role
class ManagerRole:
    """The manager role of one node. Call :meth:`install` before ``agent.run``.

    Args:
        agent: the node.
        data_path: the node's data dir (``raft/`` and the owner key live there).
        settings: timing and policy (:meth:`ManagerSettings.load` for a real node).
    """

    def __init__(self, agent: Any, data_path: Path, settings: ManagerSettings) -> None:
        settings.validate()
        self.agent = agent
        self.data_path = Path(data_path)
        self.raft_dir = self.data_path / "raft"
        self.settings = settings
        self.policy = ManagerPolicy(
            term_limit_ticks=max(1, round(settings.term_limit_s / settings.tick_s)),
            min_score=min(1000, agent.engine.policy.min_score * 10))
        self.node: RawNode | None = None
        self.store: RaftStore | None = None
        self.state = SwarmState()          # applied through our own Raft node
        self.state_index = 0
        self.followed = SwarmState()       # fetched from a member (non-voters)
        self.followed_index = 0
        self.followed_term = 0
        self.followed_leader = ""
        self.ticks = 0
        self.term_start_tick = 0
        self.leader_since: float | None = None
        # For the metrics (node/telemetry): leaders seen change, and when each entry this node
        # proposed was proposed (popped when it applies: the commit latency; bounded).
        self.leader_changes = 0
        self._last_leader: object = None
        self._proposed_at: dict[int, float] = {}
        self.role_state = "joining"
        self.dissolved = False
        self.left = False
        self._lock = trio.Lock()
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[cm.Message | None](INBOX)
        self._senders: dict[str, trio.MemorySendChannel[cm.Message]] = {}
        self._raft_to_peer: dict[int, str] = {}
        self._ready_ids: dict[str, int] = {}
        self._rejoin_requests: set[str] = set()
        self._pending_revokes: dict[str, str] = {}
        self._decisions: collections.deque[DecisionRecord] = collections.deque(maxlen=MAX_DECISIONS)
        self._results: dict[int, tuple[int, bool, str]] = {}
        self._waited: set[int] = set()
        self._progress = trio.Event()
        self._control_pending: tuple[int, int] | None = None  # (term, index) awaiting apply
        self._nursery: trio.Nursery | None = None
        self._leaving = False
        self._perf_epoch = 0
        self.decisions_verified = 0
        self._digest_cache: tuple[int, int, str] = (-1, 0, "")
        # A planted bug for the chaos checkers to catch (node/chaos/, docs/reliability.md):
        # never set outside a test of the checkers themselves.
        # Honoured only by a node that admits the simulated TEE (a test federation): a
        # production node ignores the variable, saying so.
        from node.keys.stores import raft_seal_key

        self._raft_seal_key = raft_seal_key(agent)
        self._plant = os.environ.get(PLANT_ENV, "")
        self._plant_armed_at = 0.0
        if self._plant and not agent.config.simulated_allowed:
            log.error("ignoring %s: a planted bug is for test federations (simulated TEE) only",
                      PLANT_ENV)
            self._plant = ""
        if self._plant:
            log.warning("TEST ONLY: planted bug %r is active (%s)", self._plant, PLANT_ENV)
        self.decisions_rejected = 0
        # Following by gossip (see the module docstring).
        self._gossip: Any = None  # node.gossip.GossipService, when the node runs gossip
        self._announce_due = trio.Event()
        self._ann_send, self._ann_recv = trio.open_memory_channel[tuple[str, ManagerAnnounce]](
            ANNOUNCE_QUEUE)
        self._hint_send, self._hint_recv = trio.open_memory_channel[str](HINT_QUEUE)
        self._announced: tuple[str, ManagerAnnounce, float] | None = None  # latest verified
        self._refused: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._retired_id: int | None = None
        self._starting = False
        self._follow_via: str | None = None
        self._lead_idle = False  # the followed manager's last poll answer brought nothing new
        self.follow_updates = {"gossip": 0, "poll": 0}
        self.announcements = {"published": 0, "accepted": 0, "rejected": 0}
        self.drain_hooks: list[Callable[[], Awaitable[None]]] = []
        # Observers of every entry our Raft node applies: (index, payload, accepted).
        self.entry_hooks: list[Callable[[int, bytes, bool], None]] = []
        self.rng = random.Random(secrets.randbits(64))
        self.cert = CertState(self)
        self.public_key_of = _peer_key
        self.verify = verify_ed25519
        self._raft_allowed: tuple[Any, int, frozenset[int]] = (None, -1, frozenset())
        self.follow = Follower(self)  # node/manager_follow.py: following and announcements

    # ------------------------------------------------------------------ wiring
    def install(self) -> None:
        a = self.agent
        _ROLES[a] = self
        a.set_handler(RAFT_PROTOCOL, self._handle_raft)
        a.set_handler(STATE_PROTOCOL, self._handle_state)
        a.set_handler(DISSOLVE_PROTOCOL, self._handle_dissolve)
        a.add_service(self.run)
        a.on_outcome(self._on_outcome)
        a.add_status("manager", lambda: self.status()["manager"])
        a.add_status("term", lambda: self.status()["term"])
        a.add_status("council", lambda: self.status()["council"])
        a.add_status("commit_index", lambda: self.status()["commit_index"])
        a.add_status("role", lambda: self.status()["role"])
        a.add_status("consensus", lambda: self.status()["consensus"])
        # node.runtime attaches node.gossip before node.manager: announcements ride on it.
        g = getattr(a, "gossip", None)
        if g is not None:
            self._gossip = g
            g.subscribe(KIND_MANAGER, self.follow.on_manager_record)
            if hasattr(g, "on_revocation_hint"):  # the real service (tests may use a stand-in)
                g.is_manager = self.follow.is_committed_manager
                g.on_revocation_hint(self.follow.on_revocation_hint)

    @property
    def me(self) -> str:
        return str(self.agent.peer_id)

    # ------------------------------------------------------------------ views
    def view(self) -> tuple[SwarmState, int]:
        """The freshest committed state known here (own Raft or followed)."""
        if self.followed_index > self.state_index:
            return self.followed, self.followed_index
        return self.state, self.state_index

    def is_voter(self) -> bool:
        return self.node is not None and self.node.id in self.node.raft.conf.voters

    def is_leader(self) -> bool:
        return self.node is not None and self.node.raft.role == "leader"

    def leader_peer(self) -> str | None:
        if self.node is not None and self.is_voter():
            lead = self.node.raft.lead
            return self._raft_to_peer.get(lead) if lead else None
        return self.followed_leader or None

    def note_leader(self, leader: object) -> None:
        """The leader this node knows of is ``leader`` (a raft id or a peer id; falsy: none):
        counted as a change when it differs from the last one known."""
        if leader and leader != self._last_leader:
            if self._last_leader is not None:
                self.leader_changes += 1
            self._last_leader = leader

    def role_name(self) -> str:
        """This node's role (O(1): the metrics read it at every scrape)."""
        st, _ = self.view()
        me = st.member(self.me)
        if self.dissolved:
            return "dissolved"
        if me is not None and me.status == REVOKED:
            return "revoked"
        if self.left or (me is not None and me.status == LEFT):
            return "left"
        if self.is_leader():
            return "manager"
        if self.is_voter():
            return "council"
        return "follower" if me is not None else "joining"

    def term_and_commit(self) -> tuple[int, int]:
        """The Raft term and commit index this node knows (its own, or the followed ones)."""
        if self.node is not None and self.is_voter():
            r = self.node.raft
            return r.term, r.log.committed
        return self.followed_term, max(self.followed_index, self.state_index)

    def status(self) -> dict[str, Any]:
        st, idx = self.view()
        me = st.member(self.me)
        if self.dissolved:
            role = "dissolved"
        elif me is not None and me.status == REVOKED:
            role = "revoked"
        elif self.left or (me is not None and me.status == LEFT):
            role = "left"
        elif self.is_leader():
            role = "manager"
        elif self.is_voter():
            role = "council"
        elif me is not None:
            role = "follower"
        else:
            role = "joining"
        if self.node is not None and self.is_voter():
            r = self.node.raft
            term, commit = r.term, r.log.committed
        else:
            term, commit = self.followed_term, max(self.followed_index, self.state_index)
        raft = self.node.status() if self.node is not None else None
        return {
            "manager": self.leader_peer(),
            "term": term,
            "council": list(st.council),
            "commit_index": commit,
            "role": role,
            "consensus": {
                "raft_id": me.raft_id if me else (self.node.id if self.node else None),
                "applied_index": idx,
                "state_digest": self._state_digest(st, idx),
                "revoked": sorted(m.node_id for m in st.members.values() if m.status == REVOKED),
                "federation": federation_id(st),
                "members": {s: sum(1 for m in st.members.values() if m.status == s)
                            for s in (ADMITTED, SUSPECT, REVOKED, LEFT)},
                "voters": raft["voters"] if raft else [],
                "leader_for_s": (round(time.monotonic() - self.leader_since, 3)
                                 if self.leader_since is not None and role == "manager" else None),
                "announced": {"term": st.manager_term, "manager": st.manager_id or None},
                "decisions": {"verified": self.decisions_verified,
                              "rejected": self.decisions_rejected},
                "follow": self._follow_status(),
            },
        }

    def _plant_active(self) -> bool:
        """The planted bug acts once ``<data dir>/plant-armed`` exists (looked for at most once a
        second), so that a test arms it after the federation formed."""
        if self._plant != "apply-before-commit":
            return False
        if self._plant_armed_at == 0.0 or (
                self._plant_armed_at < 0 and time.monotonic() + self._plant_armed_at > 1.0):
            armed = (self.data_path / "plant-armed").exists()
            self._plant_armed_at = 1.0 if armed else -time.monotonic()
        return self._plant_armed_at > 0

    def _state_digest(self, st: SwarmState, idx: int) -> str:
        """SHA-256 of the canonical encoding of the state applied at ``idx`` (cached per state:
        a status poll must not re-encode an unchanged state)."""
        c_idx, c_id, digest = self._digest_cache
        if (c_idx, c_id) != (idx, id(st)):
            digest = hashlib.sha256(encode_state(st)).hexdigest()
            self._digest_cache = (idx, id(st), digest)
        return digest

    def _follow_status(self) -> dict[str, Any]:
        ann = None
        if self._announced is not None:
            issuer, a, at = self._announced
            ann = {"term": a.term, "manager": issuer, "commit_index": a.commit_index,
                   "applied_index": a.applied_index, "age_s": round(time.monotonic() - at, 3)}
        return {"via": self._follow_via, "updates": dict(self.follow_updates),
                "announcement": ann, "announcements": dict(self.announcements),
                "retired_raft_id": self._retired_id}

    # ------------------------------------------------------------------ service
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                raft_id = self._stored_raft_id()
                if raft_id is not None and self._stored_retired_id() == raft_id:
                    self._retired_id = raft_id
                    log.info("raft id %d was removed from the council: following the state", raft_id)
                elif raft_id is not None:
                    await self._start_raft(raft_id)
                elif self._is_founder():
                    log.info("no federation to join: founding one (raft id %d)", FOUNDER_RAFT_ID)
                    await self._start_raft(FOUNDER_RAFT_ID)
                nursery.start_soon(self._reconcile_loop)
                nursery.start_soon(self._certify_loop)
                nursery.start_soon(self.follow.follow_loop)
                if self._gossip is not None:
                    nursery.start_soon(self.follow.announce_loop)
                    nursery.start_soon(self.follow.announcement_loop)
                    nursery.start_soon(self.follow.hint_loop)
                task_status.started()
                await trio.sleep_forever()
        finally:
            # After the nursery: its tasks have ended, the driver's last WAL write (a worker
            # thread, which cancellation does not interrupt) included. Closing the store in the
            # nursery's body raced it ("write to closed file").
            if self.store is not None:
                self.store.close()

    def _is_founder(self) -> bool:
        if self.settings.founder != "auto":
            return self.settings.founder == "yes"
        return not self.agent.config.network.bootstrap

    def _stored_raft_id(self, name: str = "id") -> int | None:
        path = self.raft_dir / name
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{path}: corrupt raft id {text!r}")
        return int(text)

    def _stored_retired_id(self) -> int | None:
        return self._stored_raft_id(RETIRED_FILE)

    async def _start_raft(self, raft_id: int) -> None:
        """Open (or create) the durable store and start the Raft node as ``raft_id``."""
        if self.node is not None or self._starting or raft_id == self._retired_id:
            return  # running, being started by another task (poll and announcement), or retired
        self._starting = True
        try:
            await self._open_raft(raft_id)
        finally:
            self._starting = False

    async def _open_raft(self, raft_id: int) -> None:
        stored = self._stored_raft_id()
        if stored is not None and stored != raft_id:
            # We left and were re-admitted under a fresh id: the old log belongs to a
            # tombstoned id and must not be reused.
            log.warning("raft id changed %d -> %d: discarding the old Raft log", stored, raft_id)
            await trio.to_thread.run_sync(shutil.rmtree, self.raft_dir)
            self._retired_id = None
        from node.datadir import write_atomic

        def open_store() -> RaftStore:
            check_schema(self.raft_dir)  # a newer store is refused before `id` is written
            self.raft_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stored != raft_id:
                write_atomic(self.raft_dir / "id", f"{raft_id}\n".encode())
            # Sealed with a key from the node's storage secret (TEE, token or identity: docs/keys.md),
            # read when the role was made (the node's start, token present): the store opens
            # later, on admission, when a token may be gone for a while.
            return RaftStore(self.raft_dir, Persisted.initial([FOUNDER_RAFT_ID], INITIAL_STATE),
                             seal_key=self._raft_seal_key)

        self.store = await trio.to_thread.run_sync(open_store)
        persisted = self.store.load()
        if self.store.repaired_bytes:
            self.agent.counters.inc("raft_wal_repaired")
        s = self.settings
        cfg = Config(id=raft_id, election_tick=s.election_tick, heartbeat_tick=s.heartbeat_tick,
                     max_entries_per_msg=s.max_entries_per_msg,
                     max_inflight_msgs=s.max_inflight_msgs, pre_vote=True, check_quorum=True)
        try:
            self.state = decode_state(persisted.snapshot.data)
        except InvalidCommand as exc:
            raise ValueError(f"{self.raft_dir}: snapshot holds no valid state ({exc})") from None
        self.state_index = persisted.snapshot.meta.index
        self.node = RawNode(cfg, self.rng, persisted, logger=self._raft_log)
        self.cert.remember(self.state_index, self.state)
        self._raft_to_peer[raft_id] = self.me
        self._refresh_ids()
        log.info("raft node %d started (term %d, %d entries after snapshot %d)", raft_id,
                 persisted.hard_state.term, len(persisted.entries), self.state_index)
        assert self._nursery is not None
        self._nursery.start_soon(self._driver)

    @staticmethod
    def _raft_log(level: str, text: str) -> None:
        log.log(logging.DEBUG if level == "debug" else logging.INFO, "raft %s", text)

    def _refresh_ids(self) -> None:
        for st in (self.state, self.followed):
            for m in st.members.values():
                self._raft_to_peer[m.raft_id] = m.node_id

    def _wake(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._inbox_send.send_nowait(None)

    # ------------------------------------------------------------------ the driver
    async def _driver(self) -> None:
        tick = self.settings.tick_s
        next_tick = trio.current_time() + tick
        while True:
            batch: list[cm.Message] = []
            with trio.move_on_at(next_tick):
                m = await self._inbox_recv.receive()
                if m is not None:
                    batch.append(m)
                for _ in range(1024):
                    try:
                        m = self._inbox_recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if m is not None:
                        batch.append(m)
            async with self._lock:
                node = self.node
                if node is None:
                    return  # left or dissolved: the Raft node is gone
                for m in batch:
                    node.step(m)
                now = trio.current_time()
                if now >= next_tick:
                    node.tick()
                    self.ticks += 1
                    next_tick += tick
                    if next_tick < now - 10 * tick:  # we were starved: do not tick in a burst
                        next_tick = now + tick
                await self._handle_readies()

    async def _handle_readies(self) -> None:
        node, store = self.node, self.store
        assert node is not None and store is not None
        while node.has_ready():
            rd = node.ready()
            # 1. persist (fsync before anything that depends on it leaves)
            if rd.snapshot is not None:
                await trio.to_thread.run_sync(store.save_snapshot, rd.snapshot)
            if rd.entries or rd.hard_state is not None:
                sync = self.settings.fsync and rd.must_sync
                if sync:
                    await trio.to_thread.run_sync(store.save, rd.hard_state, rd.entries, True)
                else:
                    store.save(rd.hard_state, rd.entries, sync=False)
            if self._plant_active() and node.raft.role == "leader":
                for e in rd.entries:  # the planted bug: applied at append, committed or not
                    if e.index > self.state_index:
                        self._apply(e)
            # 2. send
            self._send_all(rd.messages)
            # 3. apply
            if rd.snapshot is not None:
                try:
                    self.state = decode_state(rd.snapshot.data)
                except InvalidCommand:
                    log.error("snapshot %d holds no valid state", rd.snapshot.meta.index)
                    raise
                self.state_index = rd.snapshot.meta.index
                self.cert.remember(self.state_index, self.state)
            applied = False
            for e in rd.committed_entries:
                if self._plant_active() and e.index <= self.state_index:
                    continue  # the planted bug's other half: "already applied"
                self._apply(e)
                applied = True
            # 4. advance
            node.advance(rd)
            if rd.soft_state is not None:
                self._on_soft_state(rd.soft_state.role, rd.soft_state.lead)
            if rd.entries or rd.snapshot is not None:
                self._warm_streams()
            if applied or rd.snapshot is not None:
                self._refresh_ids()
                self._after_apply(self.state)
                if node.raft.role == "leader":
                    self._announce_due.set()
                self._progress.set()
                self._progress = trio.Event()
                await self._maybe_compact()

    def _apply(self, e: cm.Entry) -> None:
        ok, error = True, ""
        if e.kind == cm.ENTRY_NORMAL and e.data:
            self.state, res = apply_entry(self.state, e.data, TASK_REGISTRY)
            ok, error = res.ok, res.error
            if not ok:
                log.debug("entry %d rejected by the state machine: %s", e.index, error)
        self.state_index = e.index
        self.cert.remember(e.index, self.state)
        proposed = self._proposed_at.pop(e.index, None)
        if proposed is not None:
            self.agent.timings.observe("raft_commit", "exchange", time.monotonic() - proposed)
        for hook in self.entry_hooks:
            try:
                hook(e.index, e.data, ok)
            except Exception:  # an observer's bug must never stop the state machine
                log.exception("entry hook %r failed at index %d", hook, e.index)
        if e.index in self._waited:
            self._waited.discard(e.index)
            self._results[e.index] = (e.term, ok, error)

    async def _maybe_compact(self) -> None:
        node, store = self.node, self.store
        assert node is not None and store is not None
        if self.state_index - store.snapshot.meta.index < self.settings.snapshot_every:
            return
        data = encode_state(self.state)
        if len(data) > cm.MAX_SNAPSHOT_BYTES:
            log.error("state of %d bytes exceeds one snapshot message; not compacting", len(data))
            return
        snap = node.compact(self.state_index, data)
        await trio.to_thread.run_sync(store.save_snapshot, snap)

    def _on_soft_state(self, role: str, lead: int | None) -> None:
        node = self.node
        assert node is not None
        self.note_leader(self._raft_to_peer.get(lead, lead) if lead else None)  # a peer id when known
        if role == "leader":
            self.term_start_tick = self.ticks
            self.leader_since = time.monotonic()
            self._control_pending = None
            self._proposed_at.clear()  # what an earlier term proposed commits under another
            log.info("became the manager (term %d)", node.raft.term,
                     extra={"term": node.raft.term})
        else:
            self.leader_since = None

    def _after_apply(self, st: SwarmState) -> None:
        """Side effects of committed state, on every node (council or follower): a committed
        revocation is applied (and, by the manager, hinted through gossip so that followers
        fetch the proven state at once). Only state applied by our Raft node or adopted with
        its proof gets here: nothing else revokes anyone."""
        for m in st.members.values():
            if m.status == REVOKED and m.node_id != self.me and not self.agent.peers.is_revoked(m.node_id):
                self.agent.revoke(m.node_id, m.reason or "revoked by the federation")
                if self._gossip is not None and self.is_leader() and st.manager_id == self.me:
                    publish = getattr(self._gossip, "publish_revocation_hint", None)
                    if publish is not None:
                        publish(m.node_id, m.reason or "revoked by the federation")
        me = st.member(self.me)
        if me is not None and me.status == REVOKED and self.role_state != "revoked":
            self.role_state = "revoked"
            log.error("this node was revoked by the federation: %s", me.reason)

    # ------------------------------------------------------------------ transport
    def _sender_for(self, pid: str) -> trio.MemorySendChannel[cm.Message] | None:
        """The outbox towards ``pid``; None (counted) for a member id that names no libp2p peer,
        which only a forged or corrupt committed state can hold: never a crash of the role."""
        ch = self._senders.get(pid)
        if ch is None:
            try:
                ID.from_base58(pid)
            except ValueError:
                self.agent.counters.inc("raft_dropped", "bad-peer-id")
                return None
            send, recv = trio.open_memory_channel[cm.Message](OUTBOX)
            self._senders[pid] = ch = send
            assert self._nursery is not None
            self._nursery.start_soon(self._sender, pid, recv)
        return ch

    def _warm_streams(self) -> None:
        """Open a raft stream to every voter ahead of need: a follower that campaigns (e.g.
        after a TimeoutNow) must not pay stream negotiation to peers it never spoke to."""
        node = self.node
        if node is None:
            return
        for v in node.raft.conf.voters:
            pid = self._raft_to_peer.get(v)
            if pid is not None and pid != self.me:
                self._sender_for(pid)

    def _send_all(self, msgs: tuple[cm.Message, ...]) -> None:
        for m in msgs:
            pid = self._raft_to_peer.get(m.to)
            if pid is None or pid == self.me:
                self.agent.counters.inc("raft_dropped", "unknown-peer")
                continue
            ch = self._sender_for(pid)
            if ch is None:
                continue
            try:
                ch.send_nowait(m)
            except trio.WouldBlock:
                self.agent.counters.inc("raft_dropped", "queue-full")
                assert self.node is not None
                self.node.report_unreachable(m.to)

    async def _open_raft_stream(self, peer: ID) -> Any | None:
        """A new raft stream to ``peer``, or None (counted) if it cannot be opened in time.

        Opening is bounded by the network's request timeout, not by SEND_TIMEOUT_S. With our
        fixes to py-libp2p a stream open is a yamux SYN plus one pipelined multistream-select
        round trip (p99 2-8 ms on loopback, idle or busy: docs/benchmarks.md), but it still
        waits behind every frame already queued on the connection, and a node's loop can stall
        for longer than a second (many nodes in one process on a loaded machine; a large seal).
        Before the fixes (two round trips) a one-second bound cancelled every attempt half-way
        and started the next from scratch, so the link to a peer with no stream yet -- a newly
        added voter -- never came up; the request timeout, which every other request already
        has, keeps that from coming back under a stall. A failed open costs nothing more: the
        next message tries again."""
        try:
            with trio.fail_after(self.agent.config.network.request_timeout_s):
                return await self.agent._open_stream(peer, RAFT_PROTOCOL)
        except Exception as exc:  # TooSlowError, RemoteProtocolError
            self.agent.counters.inc("raft_send_failed", f"open:{type(exc).__name__}")
            return None

    async def _sender(self, pid: str, recv: trio.MemoryReceiveChannel[cm.Message]) -> None:
        stream = None
        peer = ID.from_base58(pid)
        try:
            if self.agent.peers.is_attested(pid):
                stream = await self._open_raft_stream(peer)
            async for m in recv:
                batch = [m]
                while len(batch) < 256:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        # EndOfChannel: retiring closed our channel with messages still in it;
                        # the loop ends after this batch instead of raising into the role.
                        break
                if not self.agent.peers.is_attested(pid):
                    self.agent.counters.inc("raft_dropped", "unattested", len(batch))
                    continue
                data = b"".join(frame(encode(x)) for x in batch)
                for _attempt in (1, 2):
                    if stream is None:
                        stream = await self._open_raft_stream(peer)
                        if stream is None:
                            break  # the batch is lost; Raft retransmits what matters
                    try:
                        with trio.fail_after(SEND_TIMEOUT_S):
                            await stream.write(data)
                        break
                    except Exception as exc:  # TooSlowError, libp2p errors
                        await _reset(stream)
                        stream = None
                        self.agent.counters.inc("raft_send_failed", type(exc).__name__)
        finally:
            if stream is not None:
                await _reset(stream)

    async def _handle_raft(self, stream: Any, pid: str) -> None:
        reader = FrameReader(stream)
        while True:
            try:
                m = await read_message(reader, cm.MESSAGE_TYPES, timeout_s=STREAM_IDLE_S)
            except RemoteProtocolError as exc:
                if exc.reason in ("timeout", "stream"):
                    await _reset(stream)
                    return  # idle or closed: the sender reopens when it has something to say
                raise
            if not self.agent.peers.is_attested(pid):
                # Quarantined since the stream opened: its Raft traffic ends here.
                self.agent.counters.inc("raft_dropped", "from-unattested")
                await _reset(stream)
                return
            node = self.node
            if node is None or m.to != node.id:
                self.agent.counters.inc("raft_dropped", "not-for-us")
                continue
            if m.sender not in self._raft_senders():
                # Raft only from the voters we know of: our own configuration's, and those of
                # the certified state we adopted (a joining node's configuration is still the
                # founder's alone). A non-voter's higher term must not depose anyone.
                self.agent.counters.inc("raft_dropped", "not-a-voter")
                continue
            if self._raft_to_peer.get(m.sender) != pid:
                # A raft id speaks only through the peer the committed state gave it to.
                self.agent.counters.inc("raft_dropped", "sender-mismatch")
                continue
            try:
                self._inbox_send.send_nowait(m)
            except trio.WouldBlock:
                self.agent.counters.inc("raft_dropped", "inbox-full")

    def _raft_senders(self) -> frozenset[int]:
        """Raft ids whose messages we accept: the voters of our Raft node's configuration and
        of our latest certificate (cached until either changes)."""
        node = self.node
        latest = self.cert.chain.latest
        conf = node.raft.conf if node is not None else None
        at = latest.checkpoint.index if latest is not None else -1
        if self._raft_allowed[0] is conf and self._raft_allowed[1] == at:
            return self._raft_allowed[2]
        ids = set(conf.voters) if conf is not None else set()
        if latest is not None:
            st, _ = self.view()
            for pid in latest.checkpoint.voters:
                m = st.member(pid)
                if m is not None:
                    ids.add(m.raft_id)
        allowed = frozenset(ids)
        self._raft_allowed = (conf, at, allowed)
        return allowed

    # ------------------------------------------------------------------ proposals
    async def propose(self, data: bytes, *, sign: bool | None = None) -> tuple[int, int]:
        """Propose a command on this node (must be the manager). Returns (term, index).
        Raises ProposalDropped."""
        async with self._lock:
            node = self.node
            if node is None:
                raise ProposalDropped("this node runs no Raft node")
            index = node.propose(data)
            term = node.raft.term
            self._waited.add(index)
            if len(self._proposed_at) < 10_000:
                self._proposed_at[index] = time.monotonic()
        if sign is None:
            sign = _kind_of(data) in DECISION_KINDS
        if sign and len(data) <= MAX_DECISION_ENTRY_BYTES:
            try:
                d = sign_decision(self.agent._identity.sign, self.me, term, index, data)
            except KeyUnavailable:
                # Our token is gone (node/keys): the entry stands, its decision stays unsigned.
                self.agent.counters.inc("sign_unavailable", "decision")
            else:
                self._decisions.append(DecisionRecord(term, index, data, self.me, d.signature))
        self._wake()
        return term, index

    async def wait_applied(self, term: int, index: int, timeout_s: float) -> tuple[bool, str]:
        """Wait until (term, index) is applied. Returns (ok, error); ok False when the state
        machine rejected it, it was overwritten by another leader, or the wait timed out."""
        with trio.move_on_after(timeout_s):
            while self.state_index < index:
                await self._progress.wait()
            got = self._results.pop(index, None)
            if got is None:
                return False, "entry applied from a snapshot; outcome unknown"
            t, ok, err = got
            if t != term:
                return False, "lost: leadership changed before it committed"
            return ok, err
        self._waited.discard(index)
        self._results.pop(index, None)
        return False, f"not committed within {timeout_s}s"

    async def command(self, cmd: Any, timeout_s: float = 10.0) -> tuple[bool, str]:
        """Propose a swarm-state command and wait for its outcome (manager only)."""
        try:
            term, index = await self.propose(TASK_REGISTRY.encode(cmd))
        except ProposalDropped as exc:
            return False, str(exc)
        return await self.wait_applied(term, index, timeout_s)

    async def _control(self, cmd: Any) -> None:
        """One control-plane proposal at a time from the reconcile loop."""
        try:
            self._control_pending = await self.propose(TASK_REGISTRY.encode(cmd))
        except ProposalDropped as exc:
            log.debug("control proposal dropped: %s", exc)

    # ------------------------------------------------------------------ reconcile (manager)
    async def _reconcile_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.reconcile_s)
            if self.is_leader() and not self.dissolved:
                try:
                    await self._reconcile()
                except ProposalDropped as exc:
                    log.debug("reconcile: %s", exc)

    async def _reconcile(self) -> None:
        node = self.node
        assert node is not None
        r = node.raft
        if self._control_pending is not None:
            term, index = self._control_pending
            if term == r.term and self.state_index < index:
                return  # previous control command not applied yet
            self._control_pending = None
            self._results.pop(index, None)
            self._waited.discard(index)
        st = self.state
        me = st.member(self.me)
        if me is None:
            if r.id == FOUNDER_RAFT_ID and st.next_raft_id == FOUNDER_RAFT_ID:
                await self._control(self._join_cmd(self.me, self._own_score()))
            return
        if self.me not in st.council and me.status == ADMITTED and not st.council:
            await self._control(SetCouncil(self.settings.council_size))
            return
        # term limit / step-down first: a revoked manager must not keep deciding
        if await self._term_policy(st):
            return
        if st.manager_term != r.term and self.me in st.council:
            await self._control(AnnounceManager(r.term, self.me))
            return
        for pid, reason in list(self._pending_revokes.items()):
            m = st.member(pid)
            if m is None or m.status not in (ADMITTED, SUSPECT, LEFT):
                # done (revoked, or no longer a member): kept queued until then, so that a
                # proposal dropped by a lost term is made again if this node leads again
                self._pending_revokes.pop(pid)
            else:
                log.warning("revoking %s through consensus: %s", pid, reason, extra={"peer": pid})
                await self._control(Revoke(pid, reason[:200]))
                return
        min_score = self.policy.min_score
        for p in self.agent.peers.attested():
            m = st.member(p.peer_id)
            if p.score is None or self.agent.peers.is_revoked(p.peer_id):
                continue
            if m is None or (m.status == LEFT and p.peer_id in self._rejoin_requests):
                # the federation's score: attestation less the committed integrity penalty
                score = integrity.member_score(st, p.peer_id, p.score)
                if score >= min_score:
                    await self._control(self._join_cmd(p.peer_id, score, p.tee or ""))
                    return
            elif m.status in (ADMITTED, SUSPECT):
                # the one rule the simulator applies too (consensus/integrity.py)
                cmd = integrity.review_member(st, p.peer_id, p.score, min_score)
                if isinstance(cmd, Revoke):
                    log.warning("revoking %s through consensus: %s", p.peer_id, cmd.reason,
                                extra={"peer": p.peer_id})
                if cmd is not None:
                    await self._control(cmd)
                    return
        for m in sorted(st.members.values(), key=lambda m: m.node_id):
            labels = self._labels_of(m.node_id)
            if m.status in (ADMITTED, SUSPECT) and labels is not None and labels != (m.provider, m.region):
                await self._control(SetLabels(m.node_id, *labels))
                return
        cands = [Candidate(m.node_id, m.score, m.provider, m.region)
                 for m in st.members.values() if m.status == ADMITTED]
        if tuple(st.council) != choose_council(cands, self.settings.council_size, sitting=st.council):
            await self._control(SetCouncil(self.settings.council_size))
            return
        self._reconcile_voters(st)

    def _labels_of(self, pid: str) -> tuple[str, str] | None:
        """(provider, region) as ``pid`` declares them in its capability record (provider: its
        peer id when it declares none), or None while we hold no record of it."""
        offers = getattr(self.agent, "offers", None)
        cap = offers.record(pid) if offers is not None else None
        if cap is None:
            return None
        return (cap.provider or pid), cap.region

    def _join_cmd(self, pid: str, score: int, tee: str = "") -> Join:
        if pid == self.me:
            tee = str(self.agent.provider.kind)
        provider, region = self._labels_of(pid) or (pid, "")
        return Join(node_id=pid, provider=provider, region=region, tee_kind=tee or "unknown",
                    score=max(0, min(1000, score)), attested=True)

    def _own_score(self) -> int:
        """The score this node joins with when it founds the federation (nobody else has
        attested it yet): the median of its peers' signed records about it, if any. From then
        on its score is only ever recorded by the manager that attested it, never by itself:
        one source of truth per score."""
        recs = [r.score for r in self.agent.records_about_us.values()]
        if recs:
            return max(0, min(1000, int(statistics.median(recs)) * 10))
        return 1000

    def _conf_certified(self) -> bool:
        """Is our committed Raft configuration the one our latest certificate names? The next
        voter change waits for it, so that followers can chain every configuration from the
        previous one while that one's majority is alive (consensus/certificate.py)."""
        latest = self.cert.chain.latest
        return latest is not None and set(latest.checkpoint.voters) == set(self.cert.own_voters())

    def _reconcile_voters(self, st: SwarmState) -> None:
        node = self.node
        assert node is not None
        r = node.raft
        if not self._conf_certified():
            self.agent.counters.inc("conf_change_deferred", "uncertified")
            return
        voters = set(r.conf.voters)
        council_ids = {}
        for n in st.council:
            m = st.member(n)
            if m is not None:
                council_ids[m.raft_id] = n
        # 1. voters that are gone for good
        for v in sorted(voters):
            m = st.by_raft_id(v)
            if v != r.id and (m is None or m.status in (REVOKED, LEFT, SUSPECT)):
                self._conf("remove", v)
                return
        # 2. council members that run their Raft node and are reachable
        for rid, pid in sorted(council_ids.items()):
            if rid in voters or rid in r.conf.removed:
                continue
            if self._ready_ids.get(pid) == rid and self.agent.peers.is_attested(pid):
                self._conf("add", rid)
                return
        # 3. surplus voters no longer on the council (never ourselves: we hand over first)
        if len(voters) > len(council_ids) or not voters <= set(council_ids):
            for v in sorted(voters):
                if v not in council_ids and v != r.id:
                    self._conf("remove", v)
                    return

    def _conf(self, op: str, rid: int) -> None:
        node = self.node
        assert node is not None
        try:
            node.propose_conf_change(op, rid)
        except ProposalDropped as exc:
            log.debug("conf change %s %d dropped: %s", op, rid, exc)
            return
        log.info("council change: %s raft id %d (%s)", op, rid, self._raft_to_peer.get(rid, "?"),
                 extra={"peer": self._raft_to_peer.get(rid, "?")})
        self._wake()

    async def _term_policy(self, st: SwarmState) -> bool:
        """Hand over at the term limit, step down at once if revoked or below policy.
        Returns True when a transfer was started."""
        node = self.node
        assert node is not None
        r = node.raft
        if r.lead_transferee is not None:
            return True
        scores: dict[str, int] = {}
        revoked: set[str] = set()
        for n in st.council:
            m = st.member(n)
            if m is None or m.raft_id not in r.conf.voters:
                continue
            if n == self.me or self.agent.peers.is_attested(n):
                scores[n] = m.score
            if m.status == REVOKED:
                revoked.add(n)
        me = st.member(self.me)
        if me is not None and me.status == REVOKED:
            revoked.add(self.me)
        scores.setdefault(self.me, me.score if me else 0)
        if st.council and self.me not in st.council and self.me not in revoked:
            # Outranked off the council (or it shrank): a non-member does not manage.
            others = {n: sc for n, sc in scores.items() if n != self.me}
            if others:
                to = sorted(others, key=lambda n: (-others[n], n))[0]
                target = st.member(to)
                assert target is not None
                log.info("stepping down to %s: no longer on the council", to, extra={"peer": to})
                await self.transfer(target.raft_id)
                return True
        d = decide(self.policy, self_id=self.me, now_tick=self.ticks,
                   term_start_tick=min(self.term_start_tick, self.ticks), scores=scores,
                   revoked=revoked)
        if d.action == "stay" or d.to is None:
            if d.action != "stay":
                log.warning("should %s (%s) but no eligible successor", d.action, d.reason)
            return False
        target = st.member(d.to)
        assert target is not None
        log.info("%s to %s: %s", "handing over" if d.action == "handover" else "stepping down",
                 d.to, d.reason, extra={"peer": d.to})
        await self.transfer(target.raft_id)
        return True

    async def transfer(self, raft_id: int) -> None:
        async with self._lock:
            assert self.node is not None
            self.node.transfer_leader(raft_id)
        self._wake()

    async def _request(self, pid: str, msg: Any, reply_type: Any) -> Any:
        """One request/response on ``/enclave-swarm/state/1.0.0`` with ``pid``, within the
        network's request timeout. Raises RemoteProtocolError (reason ``timeout`` when the
        whole exchange ran out of time)."""
        timeout = self.agent.config.network.request_timeout_s
        try:
            with trio.fail_after(timeout):
                stream = await self.agent._open_stream(ID.from_base58(pid), STATE_PROTOCOL)
                try:
                    await write_message(stream, msg, timeout_s=timeout)
                    return await read_message(FrameReader(stream), reply_type, timeout_s=timeout)
                finally:
                    await _reset(stream)
        except trio.TooSlowError:
            raise RemoteProtocolError("timeout", f"no answer from {pid} in {timeout:g}s") from None

    async def _handle_state(self, stream: Any, pid: str) -> None:
        timeout = self.agent.config.network.request_timeout_s
        req = await read_message(FrameReader(stream), STATE_REQUESTS, timeout_s=timeout)
        if isinstance(req, StateRequest):
            reply: Any = self._state_reply(pid, req)
        elif isinstance(req, CertifyRequest):
            sig, why = await self.cert.vouch(pid, req.checkpoint, req.prev)
            reply = CertifyReply(sig, why)
        elif isinstance(req, LeaveRequest):
            reply = await self._serve_leave(pid, req)
        else:
            reply = await self._serve_transfer(pid, req)
        await write_message(stream, reply, timeout_s=timeout)
        await _close(stream)

    def _state_reply(self, pid: str, req: StateRequest) -> StateResponse:
        st, _ = self.view()
        m = st.member(pid)
        if m is not None and req.raft_id == m.raft_id:
            self._ready_ids[pid] = req.raft_id
        if m is not None and m.status == LEFT and req.raft_id == 0 and len(self._rejoin_requests) < 4096:
            # A node that left comes back with no Raft state: it asks to be admitted again
            # (under a fresh raft id). One on its way out still has its old id and is not.
            self._rejoin_requests.add(pid)
        at, data, proof = self.cert.serve(req.have_index)
        if len(data) > MAX_STATE_BYTES:
            log.error("state of %d bytes is too large to serve", len(data))
            at, data, proof = 0, b"", ()
        s = self.status()
        return StateResponse(term=s["term"], commit_index=s["commit_index"],
                             leader=s["manager"] or "", state_index=at, state=data,
                             decisions=tuple(self._decisions),
                             removed=self._tombstoned(req.raft_id), proof=proof)

    def _tombstoned(self, raft_id: int) -> bool:
        """Is ``raft_id`` removed in our *committed* configuration? (Our current one applies
        changes on append, so it may hold a removal that a new leader could still undo.)"""
        node = self.node
        if not raft_id or node is None or raft_id not in node.raft.conf.removed:
            return False
        log_ = node.raft.log
        return raft_id in log_.conf_at(log_.committed).removed

    async def _certify_loop(self) -> None:
        """The manager's side of certification (node/manager_cert.py): certify the applied
        state whenever it moved, at most every ``certify_interval_s`` (each round is one stream
        per voter); a new certificate is announced at once."""
        s = self.settings
        while True:
            # A configuration change is certified at once: the next change waits for it.
            await trio.sleep(s.certify_interval_s if self._conf_certified()
                             else s.announce_min_interval_s)
            if not self.is_leader() or self.dissolved:
                continue
            latest = self.cert.chain.latest
            if latest is not None and latest.checkpoint.index >= self.state_index:
                with trio.move_on_after(s.announce_refresh_s):
                    await self._progress.wait()
                continue
            if await self.cert.certify() is not None:
                self._announce_due.set()

    async def ask_vouch(self, pid: str, cp: Any, prev: Any) -> bytes:
        """Ask voter ``pid`` to vouch for checkpoint ``cp``; its signature, or b"" on refusal
        or failure (counted: ``certify_ask_failed{reason}``)."""
        try:
            reply = await self._request(pid, CertifyRequest(cp, prev), CertifyReply)
        except RemoteProtocolError as exc:
            self.agent.counters.inc("certify_ask_failed", exc.reason)
            return b""
        if not reply.signature:
            self.agent.counters.inc("certify_ask_failed", f"refused-{reply.reason}"[:40])
        return bytes(reply.signature)

    # ------------------------------------------------------------------ manager requests
    async def _serve_leave(self, pid: str, req: LeaveRequest) -> ManagerReply:
        if not self.is_leader():
            return ManagerReply(False, "not the manager", self.leader_peer() or "")
        m = self.state.member(pid)
        if m is None or m.status not in (ADMITTED, SUSPECT):
            return ManagerReply(m is not None and m.status == LEFT, "not an active member", "")
        log.info("member %s leaves: %s", pid, req.reason, extra={"peer": pid})
        ok, err = await self.command(Leave(pid), timeout_s=5.0)
        return ManagerReply(ok, err, "")

    async def _serve_transfer(self, pid: str, req: TransferRequest) -> ManagerReply:
        # Only a council member may ask the manager to hand over: any attested peer could
        # otherwise churn terms at will (issue 19). An operator elsewhere asks a council node.
        if pid not in self.state.council:
            self.agent.counters.inc("transfer_refused", "not-council")
            log.warning("refused a transfer request from %s: not a council member", pid,
                        extra={"peer": pid})
            return ManagerReply(False, "only a council member may request a transfer",
                                self.leader_peer() or "")
        ok, err = await self.request_transfer(req.to or None)
        return ManagerReply(ok, err, self.leader_peer() or "")

    async def request_transfer(self, to: str | None) -> tuple[bool, str]:
        """Hand leadership over now (to ``to``, or the next by score). Manager only."""
        if not self.is_leader():
            return False, f"not the manager (manager is {self.leader_peer()})"
        st = self.state
        assert self.node is not None
        if to is None:
            scores = {n: m.score for n in st.council if (m := st.member(n)) is not None
                      and n != self.me and m.raft_id in self.node.raft.conf.voters
                      and self.agent.peers.is_attested(n)}
            if not scores:
                return False, "no reachable council member to hand over to"
            to = sorted(scores, key=lambda n: (-scores[n], n))[0]
        m = st.member(to)
        if m is None or m.raft_id not in self.node.raft.conf.voters:
            return False, f"{to} is not a council voter"
        try:
            await self.transfer(m.raft_id)
        except ProposalDropped as exc:
            return False, str(exc)
        with trio.move_on_after(self.settings.tick_s * self.settings.election_tick * 2):
            while self.is_leader():
                await trio.sleep(self.settings.tick_s)
        if self.is_leader():
            return False, "transfer did not complete in time"
        return True, ""

    async def _ask_manager(self, msg: Any) -> ManagerReply:
        lead = self.leader_peer()
        if lead is None or lead == self.me:
            return ManagerReply(False, "no manager known", "")
        try:
            reply: ManagerReply = await self._request(lead, msg, ManagerReply)
        except RemoteProtocolError as exc:
            if exc.reason == "timeout":
                return ManagerReply(False, "manager did not answer in time", "")
            return ManagerReply(False, f"manager unreachable: {exc}", "")
        return reply

    async def forward_transfer(self, to: str | None) -> tuple[bool, str]:
        if self.is_leader():
            return await self.request_transfer(to)
        r = await self._ask_manager(TransferRequest(to or ""))
        return r.ok, r.error

    # ------------------------------------------------------------------ leave
    async def leave(self, reason: str = "operator request") -> tuple[bool, str]:
        """Graceful leave: drain, commit ``Leave``, wait for the Raft removal, stop the node."""
        if self._leaving:
            return False, "already leaving"
        self._leaving = True
        try:
            for hook in self.drain_hooks:
                await hook()
            with trio.move_on_after(LEAVE_TIMEOUT_S) as scope:
                while True:
                    st, _ = self.view()
                    me = st.member(self.me)
                    if me is None:
                        return False, "not a member of the federation"
                    if me.status == LEFT:
                        break
                    if self.is_leader():
                        ok, _err = await self.request_transfer(None)
                        if not ok:
                            if self.node is None or len(self.node.raft.conf.voters) == 1:
                                return False, "the last council member cannot leave"
                            await trio.sleep(0.2)
                        continue
                    reply = await self._ask_manager(LeaveRequest(reason))
                    if not reply.ok:
                        await trio.sleep(0.2)
                        if self.node is None or not self.is_voter():
                            await self.follow.poll_once()
                        continue
                    if self.node is None or not self.is_voter():
                        await self.follow.poll_once()
                    await trio.sleep(0.05)
                # The manager now removes our Raft vote; wait until that change commits.
                while self.node is not None and self.is_voter():
                    await trio.sleep(0.05)
            if scope.cancelled_caught:
                return False, f"leave did not complete within {LEAVE_TIMEOUT_S:.0f}s"
            self.left = True
            await self._drop_raft()
            log.info("left the federation")
            return True, ""
        finally:
            self._leaving = False

    async def _drop_raft(self) -> None:
        """After a committed departure: our raft id is tombstoned, so its log is useless;
        remove it so that a later start asks to be admitted afresh."""
        async with self._lock:
            if self.store is not None:
                self.store.close()
                self.store = None
            self.node = None
            await trio.to_thread.run_sync(shutil.rmtree, self.raft_dir, True)

    # ------------------------------------------------------------------ revocation
    def _on_outcome(self, peer_id: str, outcome: Outcome) -> None:
        """Every verdict the manager reaches, not only the one that quarantines: a peer the
        manager had already quarantined as unreachable (its record lapsed) before its evidence
        began to fail, or whose failure the manager saw while it was still a follower, is
        revoked at its next failed re-attestation. Reconcile skips members already revoked.
        An attestation with no verdict (timeout, stream failure, an expired record) fires no
        outcome: a crash or a slow link is not misbehaviour; the council rides it out and
        shards repair after their grace."""
        if not outcome.accepted and self.is_leader():
            self._pending_revokes.setdefault(peer_id, f"failed attestation: {outcome.reason}")

    def request_revoke(self, peer_id: str, reason: str) -> None:
        """Queue a revocation for the reconcile rounds (manager only): proposed until committed
        while this node leads."""
        if not reason:
            raise ValueError("a revocation needs a reason")
        self._pending_revokes[peer_id] = reason

    # ------------------------------------------------------------------ dissolve
    async def dissolve(self, order: DissolveOrder) -> tuple[bool, str]:
        """Verify the owner's order, pass it on to attested peers, erase sealed data, stop."""
        if self.dissolved:
            return True, "already dissolving"
        try:
            owner = load_owner_key(self.data_path)
        except ValueError as exc:
            return False, str(exc)
        st, _ = self.view()
        why = check_dissolve_order(order, owner, federation_id(st), time.time())
        if why is not None:
            log.error("refused a dissolve order: %s", why)
            return False, why
        self.dissolved = True
        log.warning("federation %s dissolved by its owner: erasing sealed data", order.federation)
        async with trio.open_nursery() as n:
            for p in self.agent.peers.attested():
                n.start_soon(self._pass_order, p.peer_id, order)
        assert self._nursery is not None
        self._nursery.start_soon(self._erase_and_stop)
        return True, ""

    async def _pass_order(self, pid: str, order: DissolveOrder) -> None:
        with contextlib.suppress(trio.TooSlowError, RemoteProtocolError), trio.fail_after(3):
            stream = await self.agent._open_stream(ID.from_base58(pid), DISSOLVE_PROTOCOL)
            try:
                await write_message(stream, order, timeout_s=2)
                await read_message(FrameReader(stream), ManagerReply, timeout_s=2)
            finally:
                await _reset(stream)

    async def _handle_dissolve(self, stream: Any, pid: str) -> None:
        order = await read_message(FrameReader(stream), DissolveOrder,
                                   timeout_s=self.agent.config.network.request_timeout_s)
        ok, err = await self.dissolve(order)
        if not ok:
            self.agent.counters.inc("dissolve_refused", err)
        await write_message(stream, ManagerReply(ok, err, ""), timeout_s=2)
        await _close(stream)

    async def _erase_and_stop(self) -> None:
        async with self._lock:  # the driver is parked: nothing writes the store any more
            if self.store is not None:
                self.store.close()
                self.store = None
            self.node = None
            for name in ("raft", "shards", "sim-tee"):
                path = self.data_path / name
                if path.is_dir():
                    await trio.to_thread.run_sync(shutil.rmtree, path)
                elif path.exists():
                    path.unlink()
            log.warning("sealed data erased; stopping")
            shutdown_node(self.agent)
            # Keep the lock: the driver must never touch the erased store again.
            await trio.sleep_forever()


def shutdown_node(agent: Any) -> None:
    """Stop the node for good (after a leave or a dissolution); ``enclave-swarm run`` exits
    when its agent has stopped."""
    agent.stop()


def _kind_of(data: bytes) -> str:
    """The command kind of an entry payload ("" if it is not a command)."""
    try:
        raw = cbor_strict.loads(data)
    except Exception:  # not a command (or not even strict CBOR): no kind
        return ""
    return raw[0] if isinstance(raw, list) and raw and isinstance(raw[0], str) else ""


# =============================================================================== extension
def attach(agent: Any, data_dir: Any) -> ManagerRole:
    """node.runtime extension: give the node its manager role (its control commands are the
    next extension's, node/manager_control.py)."""
    settings = ManagerSettings.load(Path(data_dir.path), agent.config.profile)
    role = ManagerRole(agent, Path(data_dir.path), settings)
    role.install()
    return role
