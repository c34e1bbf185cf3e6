"""Raft as a pure state machine (after etcd-io/raft), and the RawNode the caller drives.

Caller's duties
---------------
The caller owns all I/O. It feeds inputs and, whenever ``has_ready()`` is true, takes one
``Ready`` and handles it *in this order*:

1. **persist** ``rd.snapshot`` (if any), then ``rd.entries`` (overwriting any stored entries
   from the first new index on) and ``rd.hard_state`` (if any) -- and fsync;
2. **send** ``rd.messages`` (best effort; Raft tolerates loss, duplication, reordering);
3. **apply** ``rd.snapshot`` (restore the state machine) then ``rd.committed_entries`` in
   order; ``conf`` entries need no action (configuration applies on append);
4. **advance**: ``node.advance(rd)``.

Inputs are ``step(message)`` for every message received, ``tick()`` at a fixed interval
(abstract time: every timeout is a number of ticks), and the proposals ``propose``,
``propose_conf_change`` and ``transfer_leader``. Nothing here blocks, reads a clock or uses a
global random generator: election jitter comes from the injected ``Rng`` (a seeded ``random.Random``).

Rules implemented (Raft paper, Figure 2, and the dissertation)
--------------------------------------------------------------
- One vote per term, persisted before the response leaves (HardState in the same Ready).
- Election restriction: votes only for candidates whose log is at least as up-to-date.
- Commit by counting only entries of the leader's current term (the Figure 8 rule); earlier
  entries commit indirectly. A new leader appends an empty entry to get there quickly.
- Pre-vote: a would-be candidate first asks at term+1 without bumping its term, so a node
  coming back from a partition does not disrupt a healthy leader.
- Randomized election timeout in ``[election_tick, 2 * election_tick)`` ticks.
- Check-quorum: a leader that has not heard from a quorum within an election timeout steps
  down. Leader lease: a node that heard from a leader within the (base) election timeout
  ignores vote requests of a higher term, unless they carry the transfer flag.
- Replication: per-follower progress in probe (one append per heartbeat until a match),
  replicate (pipelined, bounded by ``max_inflight_msgs``) or snapshot state; appends are
  batched by ``max_entries_per_msg`` / ``max_bytes_per_msg``; rejections carry a
  (index, term) hint so the leader skips a whole conflicting term per round trip.
- Snapshots: a follower missing compacted entries gets InstallSnapshot.
- Single-server membership changes, applied on append, one at a time: a new change is
  refused until the previous one committed and the leader committed an entry of its own
  term. A removed id is tombstoned: it never votes or campaigns again. A leader that
  removes itself keeps leading until the change commits, then steps down.
- Leadership transfer: the leader stops accepting proposals, brings the target up to date,
  sends TimeoutNow; the target campaigns at once. Aborted after an election timeout.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, Literal, Protocol

from consensus import quorum
from consensus.log import RaftLog, apply_conf_entries
from consensus.messages import (
    CONF_ADD,
    CONF_REMOVE,
    ENTRY_CONF,
    ENTRY_NORMAL,
    MAX_ENTRY_BYTES,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

Role = Literal["follower", "pre-candidate", "candidate", "leader"]
FOLLOWER: Final = "follower"
PRE_CANDIDATE: Final = "pre-candidate"
CANDIDATE: Final = "candidate"
LEADER: Final = "leader"

LogFn = Callable[[str, str], None]  # (level, text), level in "debug", "info", "warn"

_pylog = logging.getLogger("consensus.raft")


class Rng(Protocol):
    """The injected randomness (a seeded ``random.Random`` in practice): election jitter only."""

    def randrange(self, stop: int, /) -> int: ...


def _default_log(level: str, text: str) -> None:
    _pylog.log(getattr(logging, level.upper(), logging.INFO), "%s", text)


class ProposalDropped(Exception):
    """A proposal was not appended: not the leader, transfer in progress, or a
    membership change that must wait. Retry elsewhere or later."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Raft tuning. Every timeout is in ticks; the caller picks the tick length.

    Attributes:
        id: this node's raft id (>= 1).
        election_tick: base election timeout; the effective one is drawn from
            ``[election_tick, 2 * election_tick)``. Also the check-quorum period, the lease
            length and the leadership-transfer deadline. Must exceed ``heartbeat_tick``.
        heartbeat_tick: leader heartbeat interval.
        max_entries_per_msg / max_bytes_per_msg: batching bound of one AppendEntries.
        max_inflight_msgs: appends in flight per follower in replicate state (flow control).
        pre_vote: run the pre-vote phase before campaigning.
        check_quorum: leader steps down without a quorum of contact; followers honour the
            leader lease.
        applied: the index the caller's state machine already reflects at start.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_entries_per_msg: int = 64
    max_bytes_per_msg: int = 1024 * 1024
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    applied: int = 0

    def validate(self) -> None:
        if self.id < 1:
            raise ValueError("id must be >= 1")
        if self.heartbeat_tick < 1:
            raise ValueError("heartbeat_tick must be >= 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must exceed heartbeat_tick")
        if self.max_entries_per_msg < 1 or self.max_bytes_per_msg < 1:
            raise ValueError("batching bounds must be >= 1")
        if self.max_inflight_msgs < 1:
            raise ValueError("max_inflight_msgs must be >= 1")


# --------------------------------------------------------------------------- progress


class Progress:
    """The leader's view of one follower (etcd's tracker.Progress)."""

    __slots__ = ("inflight", "match", "max_inflight", "next", "pending_snapshot", "probe_sent",
                 "recent_active", "snapshot_ticks", "state")

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = "probe"
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.probe_sent = False
        self.max_inflight = max_inflight
        self.inflight: deque[int] = deque()

    def become_probe(self) -> None:
        if self.state == "snapshot":
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = "probe"
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = "replicate"
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = "snapshot"
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.inflight.clear()

    def maybe_update(self, n: int) -> bool:
        updated = n > self.match
        if updated:
            self.match = n
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        if self.state == "replicate":
            if rejected <= self.match:
                return False  # stale rejection
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale: not the probe we are waiting for
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == "probe":
            return self.probe_sent
        if self.state == "replicate":
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, n_entries: int, last_index: int) -> None:
        if self.state == "replicate":
            if n_entries:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state == "probe":
            self.probe_sent = True

    def free_le(self, index: int) -> None:
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()


# --------------------------------------------------------------------------- raft


def _has_conf(entries: Sequence[Entry]) -> bool:
    return any(e.kind == ENTRY_CONF for e in entries)


class Raft:
    """The protocol core. Use it through :class:`RawNode`; tests poke it directly."""

    def __init__(self, config: Config, rng: Rng, log: RaftLog, hard_state: HardState,
                 logger: LogFn | None = None) -> None:
        config.validate()
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.log = log
        self._logf = logger or _default_log
        self.term = hard_state.term
        self.vote: int | None = hard_state.vote
        if hard_state.commit:
            log.commit_to(hard_state.commit)
        self.role: Role = FOLLOWER
        self.lead: int | None = None
        self.msgs: list[Message] = []
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee: int | None = None
        self.pending_conf_index = 0
        self.conf = ConfState(voters=())
        self.conf_index = 0
        self._recompute_conf()
        self.become_follower(self.term, None)

    # ------------------------------------------------------------------ helpers

    def _emit(self, level: str, text: str) -> None:
        self._logf(level, f"{self.id} {text}")

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    @property
    def voters(self) -> tuple[int, ...]:
        return self.conf.voters

    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def is_removed(self, node: int | None = None) -> bool:
        return (self.id if node is None else node) in self.conf.removed

    def _recompute_conf(self) -> None:
        """Configuration = snapshot's + every conf entry in the log (applied on append)."""
        old = self.conf
        self.conf = apply_conf_entries(self.log.snapshot.meta.conf, self.log.entries)
        self.conf_index = self.log.offset
        for e in self.log.entries:
            if e.kind == ENTRY_CONF:
                self.conf_index = e.index
        if self.conf != old and old.voters:
            self._emit("info", f"switched to configuration voters={list(self.conf.voters)}")
        if self.role == LEADER:
            for v in self.conf.voters:
                if v not in self.progress:
                    pr = Progress(self.log.last_index(), self.cfg.max_inflight_msgs)
                    pr.recent_active = True
                    self.progress[v] = pr
            self._prune_progress()
            if self.lead_transferee is not None and self.lead_transferee not in self.conf.voters:
                self._abort_transfer("transferee removed")

    def _prune_progress(self) -> None:
        # A removed follower keeps receiving appends until its removal commits, so that it
        # learns it was removed (and stops campaigning) instead of timing out in the dark.
        if self.log.committed < self.conf_index:
            return
        for v in list(self.progress):
            if v not in self.conf.voters and v != self.id:
                del self.progress[v]

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_tick
        self.randomized_election_timeout = e + self.rng.randrange(e)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = None
        self.votes = {}
        self.progress = {}
        last = self.log.last_index()
        for v in self.conf.voters:
            pr = Progress(last + 1, self.cfg.max_inflight_msgs)
            if v == self.id:
                pr.match = last
            self.progress[v] = pr
        self.pending_conf_index = 0

    # ------------------------------------------------------------------ role changes

    def become_follower(self, term: int, lead: int | None) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self.lead = lead
        self._emit("info", f"became follower at term {self.term}")

    def become_pre_candidate(self) -> None:
        if self.role == LEADER:
            raise AssertionError("invalid transition leader -> pre-candidate")
        # Pre-vote changes neither term nor vote: only the role and the tally.
        self.role = PRE_CANDIDATE
        self.votes = {}
        self.lead = None
        self._emit("info", f"became pre-candidate at term {self.term}")

    def become_candidate(self) -> None:
        if self.role == LEADER:
            raise AssertionError("invalid transition leader -> candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE
        self._emit("info", f"became candidate at term {self.term}")

    def become_leader(self) -> None:
        if self.role == FOLLOWER:
            raise AssertionError("invalid transition follower -> leader")
        self._reset(self.term)
        self.lead = self.id
        self.role = LEADER
        self.progress[self.id].become_replicate()
        for pr in self.progress.values():
            pr.recent_active = True
        # Conservative: any conf entry not yet committed may still be pending.
        self.pending_conf_index = self.log.last_index()
        self._append([Entry(term=0, index=1, kind=ENTRY_NORMAL, data=b"")])
        self._emit("info", f"became leader at term {self.term}")

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        if self.role == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for pr in self.progress.values():
            if pr.state == "snapshot":
                # No ack within an election timeout: the snapshot (one message) was lost.
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.cfg.election_tick:
                    pr.pending_snapshot = 0
                    pr.become_probe()
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = [v for v, pr in self.progress.items() if pr.recent_active or v == self.id]
                for v, pr in self.progress.items():
                    if v != self.id:
                        pr.recent_active = False
                if not quorum.is_quorum(self.conf.voters, active):
                    self._emit("warn", "stepped down to follower since quorum is not active")
                    self.become_follower(self.term, None)
                    return
            if self.lead_transferee is not None:
                self._abort_transfer("election timeout elapsed")
        if self.role != LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    # ------------------------------------------------------------------ elections

    def hup(self, transfer: bool = False) -> None:
        """Start an election (etcd's MsgHup)."""
        if self.role == LEADER:
            return
        if not self.promotable():
            self._emit("warn", "is unpromotable and can not campaign")
            return
        self._emit("info", f"is starting a new election at term {self.term}")
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        if self._poll(self.id, True, pre) == quorum.VoteResult.WON:
            # A single-voter configuration wins at once.
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self.become_leader()
                self._bcast_append()
            return
        kind = "pre-vote" if pre else "vote"
        for v in self.conf.voters:
            if v == self.id:
                continue
            self._emit("debug", f"[logterm: {self.log.last_term()}, index: {self.log.last_index()}] "
                                f"sent {kind} request to {v} at term {self.term}")
            self._send(VoteRequest(sender=self.id, to=v, term=term,
                                   last_log_index=self.log.last_index(),
                                   last_log_term=self.log.last_term(), pre=pre,
                                   transfer=transfer))

    def _poll(self, node: int, granted: bool, pre: bool) -> quorum.VoteResult:
        if node != self.id:
            kind = "pre-vote" if pre else "vote"
            verdict = "granted" if granted else "rejected"
            self._emit("debug", f"received {kind} {verdict} from {node} at term {self.term}")
        self.votes.setdefault(node, granted)
        return quorum.vote_result(self.conf.voters, self.votes)

    # ------------------------------------------------------------------ step

    def step(self, m: Message) -> None:
        """Handle one message from a peer (the single input besides tick and proposals)."""
        if m.to != self.id:
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                in_lease = (self.cfg.check_quorum and self.lead is not None
                            and self.election_elapsed < self.cfg.election_tick)
                if in_lease and not m.transfer:
                    self._emit("debug", f"[term: {self.term}] ignored {'pre-vote' if m.pre else 'vote'}"
                                        f" from {m.sender} at term {m.term}: lease is not expired")
                    return
            if isinstance(m, VoteRequest) and m.pre:
                pass  # a pre-vote never changes our term
            elif isinstance(m, VoteResponse) and m.pre and not m.reject:
                pass  # granted pre-votes come back at term+1; we move there on winning
            else:
                self._emit("debug", f"[term: {self.term}] received a {type(m).__name__} with "
                                    f"higher term {m.term} from {m.sender}")
                if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                    self.become_follower(m.term, m.sender)
                else:
                    self.become_follower(m.term, None)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and isinstance(m, (AppendEntries, Heartbeat)):
                # A stale leader (e.g. after a partition) learns our term and steps down; without
                # this it would never hear a higher term once pre-vote keeps us from campaigning.
                self._send(AppendResponse(sender=self.id, to=m.sender, term=self.term,
                                          index=0, reject=True))
            elif isinstance(m, VoteRequest) and m.pre:
                self._send(VoteResponse(sender=self.id, to=m.sender, term=self.term,
                                        reject=True, pre=True))
            return

        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role in (CANDIDATE, PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: VoteRequest) -> None:
        kind = "pre-vote" if m.pre else "vote"
        can_vote = (self.vote == m.sender
                    or (self.vote is None and self.lead is None)
                    or (m.pre and m.term > self.term))
        why = ""
        if self.is_removed():
            why = "we were removed"
        elif self.is_removed(m.sender):
            why = "candidate was removed"
        elif not can_vote:
            why = f"already voted for {self.vote}" if self.vote else f"have leader {self.lead}"
        elif not self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            why = "candidate's log is not up to date"
        if why:
            self._emit("debug", f"[logterm: {self.log.last_term()}, index: {self.log.last_index()}, "
                                f"vote: {self.vote}] rejected {kind} from {m.sender} at term "
                                f"{self.term}: {why}")
            self._send(VoteResponse(sender=self.id, to=m.sender, term=self.term, reject=True,
                                    pre=m.pre))
            return
        self._emit("debug", f"[logterm: {self.log.last_term()}, index: {self.log.last_index()}, "
                            f"vote: {self.vote}] cast {kind} for {m.sender} at term {m.term}")
        # A granted pre-vote answers at the candidate's future term, so it can tell it apart.
        self._send(VoteResponse(sender=self.id, to=m.sender, term=m.term, reject=False, pre=m.pre))
        if not m.pre:
            self.election_elapsed = 0
            self.vote = m.sender

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.sender)
        if pr is None:
            return  # not (or no longer) a member
        if isinstance(m, AppendResponse):
            pr.recent_active = True
            if m.reject:
                hint = m.reject_hint
                if m.hint_term > 0:
                    hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.hint_term)
                if pr.maybe_decr_to(m.index, hint):
                    self._emit("debug", f"decreased progress of {m.sender} to next={pr.next}")
                    if pr.state == "replicate":
                        pr.become_probe()
                    self._send_append(m.sender)
                return
            was_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == "probe":
                    pr.become_replicate()
                elif pr.state == "snapshot" and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                elif pr.state == "replicate":
                    pr.free_le(m.index)
                if self._maybe_commit():
                    self._bcast_append()
                elif was_paused:
                    self._send_append(m.sender)
                while self._send_append(m.sender, send_empty=False):
                    pass
                if m.sender == self.lead_transferee and pr.match == self.log.last_index():
                    self._emit("info", f"sent TimeoutNow to {m.sender} after it caught up")
                    self._send(TimeoutNow(sender=self.id, to=m.sender, term=self.term))
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == "replicate" and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()  # a heartbeat round trip frees one slot (lost acks)
            if pr.match < self.log.last_index():
                self._send_append(m.sender)

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.become_follower(m.term, m.sender)
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.become_follower(m.term, m.sender)
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self.become_follower(m.term, m.sender)
            self._handle_snapshot(m)
        elif isinstance(m, VoteResponse):
            if m.pre != (self.role == PRE_CANDIDATE):
                return  # a leftover from the other phase
            res = self._poll(m.sender, not m.reject, m.pre)
            if res == quorum.VoteResult.WON:
                if self.role == PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self.become_leader()
                    self._bcast_append()
            elif res == quorum.VoteResult.LOST:
                self.become_follower(self.term, None)

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.sender
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.sender
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lead = m.sender
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow) and self.promotable():
            self._emit("info", f"received TimeoutNow from {m.sender}, campaigning at once")
            self.hup(transfer=True)

    # ------------------------------------------------------------------ follower handlers

    def _handle_append(self, m: AppendEntries) -> None:
        if m.prev_index < self.log.committed:
            self._send(AppendResponse(sender=self.id, to=m.sender, term=self.term,
                                      index=self.log.committed))
            return
        res = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if res is not None:
            last, truncated = res
            if truncated or _has_conf(m.entries):
                self._recompute_conf()
            self._send(AppendResponse(sender=self.id, to=m.sender, term=self.term, index=last))
            return
        hint = min(m.prev_index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.prev_term)
        self._emit("debug", f"rejected append [index {m.prev_index}, term {m.prev_term}] from "
                            f"{m.sender}: hint {hint}/{hint_term}")
        self._send(AppendResponse(sender=self.id, to=m.sender, term=self.term, index=m.prev_index,
                                  reject=True, reject_hint=hint, hint_term=hint_term))

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(HeartbeatResponse(sender=self.id, to=m.sender, term=self.term))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        meta = m.snapshot.meta
        if meta.index <= self.log.committed:
            pass
        elif self.log.match_term(meta.index, meta.term):
            # We already have the entries: fast-forward the commit instead of restoring.
            self.log.commit_to(meta.index)
        else:
            self._emit("info", f"restored snapshot [index: {meta.index}, term: {meta.term}]")
            self.log.restore(m.snapshot)
            self._recompute_conf()
        # Either way everything up to our commit index is known to match the leader's log.
        self._send(AppendResponse(sender=self.id, to=m.sender, term=self.term,
                                  index=self.log.committed))

    # ------------------------------------------------------------------ leader side

    def _append(self, entries: Sequence[Entry]) -> None:
        last = self.log.last_index()
        stamped = [dataclasses.replace(e, term=self.term, index=last + 1 + i)
                   for i, e in enumerate(entries)]
        self.log.append(stamped)
        if _has_conf(stamped):
            self._recompute_conf()
        if self.id in self.progress:
            self.progress[self.id].maybe_update(self.log.last_index())
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        matched = {v: pr.match for v, pr in self.progress.items()}
        mci = quorum.committed_index(self.conf.voters, matched)
        # Figure 8: only an entry of the current term commits by counting replicas.
        if mci > self.log.committed and self.log.term(mci) == self.term:
            self.log.commit_to(mci)
            self._prune_progress()
            if not self.promotable() and self.log.committed >= self.conf_index:
                # Our own removal committed: hand the cluster to the remaining voters.
                self._emit("info", "stepping down: removal from the configuration committed")
                self._bcast_append()
                self.become_follower(self.term, None)
            return True
        return False

    def _send_append(self, to: int, send_empty: bool = True) -> bool:
        if to == self.id or self.role != LEADER:
            return False
        pr = self.progress.get(to)
        if pr is None or pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        ents = self.log.slice(pr.next, self.log.last_index() + 1, self.cfg.max_bytes_per_msg,
                              self.cfg.max_entries_per_msg)
        if prev_term is None or ents is None:
            snap = self.log.snapshot
            self._emit("debug", f"sent snapshot [index: {snap.meta.index}, term: "
                                f"{snap.meta.term}] to {to}")
            self._send(InstallSnapshot(sender=self.id, to=to, term=self.term, snapshot=snap))
            pr.become_snapshot(snap.meta.index)
            return True
        if not ents and not send_empty:
            return False
        self._send(AppendEntries(sender=self.id, to=to, term=self.term, prev_index=prev,
                                 prev_term=prev_term, entries=tuple(ents),
                                 commit=self.log.committed))
        pr.sent(len(ents), ents[-1].index if ents else prev)
        return True

    def _bcast_append(self) -> None:
        for v in list(self.progress):
            if v != self.id:
                self._send_append(v)

    def _bcast_heartbeat(self) -> None:
        for v, pr in self.progress.items():
            if v != self.id:
                self._send(Heartbeat(sender=self.id, to=v, term=self.term,
                                     commit=min(pr.match, self.log.committed)))

    def _abort_transfer(self, why: str) -> None:
        self._emit("info", f"aborted leadership transfer to {self.lead_transferee}: {why}")
        self.lead_transferee = None

    # ------------------------------------------------------------------ proposals

    def propose(self, data: bytes) -> int:
        if self.role != LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.lead})")
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        if len(data) > MAX_ENTRY_BYTES:
            raise ProposalDropped("entry too large")
        self._append([Entry(term=self.term, index=1, kind=ENTRY_NORMAL, data=data)])
        self._bcast_append()
        return self.log.last_index()

    def propose_conf_change(self, op: str, node_id: int) -> int:
        if self.role != LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.lead})")
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        if self.pending_conf_index > self.log.committed:
            raise ProposalDropped("a membership change is still pending")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("leader has not committed an entry of its term yet")
        if op == CONF_ADD:
            if node_id in self.conf.voters or node_id in self.conf.removed:
                raise ProposalDropped(f"{node_id} is already a voter or was removed")
        elif op == CONF_REMOVE:
            if node_id not in self.conf.voters:
                raise ProposalDropped(f"{node_id} is not a voter")
            if len(self.conf.voters) == 1:
                raise ProposalDropped("cannot remove the last voter")
        else:
            raise ValueError(f"unknown conf change op {op!r}")
        self._append([Entry(term=self.term, index=1, kind=ENTRY_CONF,
                            data=ConfChange(op, node_id).encode())])
        self.pending_conf_index = self.log.last_index()
        self._bcast_append()
        return self.log.last_index()

    def transfer_leader(self, to: int) -> None:
        if self.role != LEADER:
            raise ProposalDropped("only the leader can transfer leadership")
        if to == self.id or to not in self.conf.voters:
            raise ProposalDropped(f"cannot transfer to {to}")
        if self.lead_transferee == to:
            return
        if self.lead_transferee is not None:
            self._abort_transfer(f"new transfer to {to}")
        self._emit("info", f"starts to transfer leadership to {to}")
        self.lead_transferee = to
        # The transfer must finish within one election timeout, or it is aborted.
        self.election_elapsed = 0
        pr = self.progress[to]
        if pr.match == self.log.last_index():
            self._emit("info", f"sent TimeoutNow to {to} immediately as it already has up-to-date log")
            self._send(TimeoutNow(sender=self.id, to=to, term=self.term))
        else:
            self._send_append(to)

    def report_unreachable(self, to: int) -> None:
        pr = self.progress.get(to)
        if self.role == LEADER and pr is not None and pr.state == "replicate":
            pr.become_probe()

    def report_snapshot(self, to: int, ok: bool) -> None:
        pr = self.progress.get(to)
        if self.role != LEADER or pr is None or pr.state != "snapshot":
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for a heartbeat response before probing again


# --------------------------------------------------------------------------- RawNode


@dataclasses.dataclass(frozen=True)
class SoftState:
    """Volatile state worth reporting; not persisted."""

    lead: int | None
    role: str


@dataclasses.dataclass(frozen=True)
class Ready:
    """Everything the caller must do, in the order of the module docstring.

    Attributes:
        soft_state: new leader/role, if changed since the last Ready.
        hard_state: term/vote/commit to persist, if changed.
        entries: entries to persist (overwriting stored ones from ``entries[0].index`` on).
        snapshot: a snapshot received from the leader, to persist and apply.
        committed_entries: entries to apply to the state machine, in order.
        messages: messages to send after persisting.
        must_sync: whether the persistence step needs an fsync (new entries, term or vote).
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    must_sync: bool


@dataclasses.dataclass(frozen=True)
class Persisted:
    """What a node restarts from: exactly what it persisted from past Readys."""

    hard_state: HardState
    snapshot: Snapshot
    entries: tuple[Entry, ...] = ()

    @classmethod
    def initial(cls, voters: Sequence[int], data: bytes = b"") -> Persisted:
        """Bootstrap state of a brand-new cluster member: an empty log whose index-0
        snapshot holds the initial configuration (and the state machine's initial bytes)."""
        conf = ConfState(voters=tuple(sorted(set(voters))))
        return cls(HardState(), Snapshot(SnapshotMeta(index=0, term=0, conf=conf), data), ())


class RawNode:
    """The caller-facing handle: inputs, ``ready()`` and ``advance()``.

    Args:
        config: see :class:`Config`.
        rng: the only source of randomness (election jitter); seed it for replayable runs.
        persisted: what this node persisted before (``Persisted.initial`` for a new one).
        logger: receives ``(level, text)``; defaults to the ``consensus.raft`` logger.
    """

    def __init__(self, config: Config, rng: Rng, persisted: Persisted,
                 logger: LogFn | None = None) -> None:
        hs = persisted.hard_state
        committed = max(hs.commit, persisted.snapshot.meta.index)
        applied = min(max(config.applied, persisted.snapshot.meta.index), committed)
        log = RaftLog(persisted.snapshot, persisted.entries, committed=committed, applied=applied)
        self.raft = Raft(config, rng, log, persisted.hard_state, logger)
        self._prev_soft = SoftState(self.raft.lead, self.raft.role)
        self._prev_hard = self.raft.hard_state()
        self._outstanding: Ready | None = None

    # inputs ---------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.hup()

    def step(self, m: Message) -> None:
        self.raft.step(m)

    def propose(self, data: bytes) -> int:
        """Append ``data`` to the log. Returns the entry's index (it may still be lost if
        leadership changes before it commits). Raises ProposalDropped."""
        return self.raft.propose(data)

    def propose_conf_change(self, op: str, node_id: int) -> int:
        """Propose adding or removing one voter. Raises ProposalDropped."""
        return self.raft.propose_conf_change(op, node_id)

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to ``to``. Raises ProposalDropped on a non-leader."""
        self.raft.transfer_leader(to)

    def report_unreachable(self, to: int) -> None:
        self.raft.report_unreachable(to)

    def report_snapshot(self, to: int, ok: bool) -> None:
        self.raft.report_snapshot(to, ok)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` and drop the log before it.
        Persist the returned snapshot (and then compact storage) before calling again."""
        conf = self.raft.log.conf_at(index)
        return self.raft.log.compact(index, data, conf)

    # queries ---------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    def status(self) -> dict[str, object]:
        r = self.raft
        return {"id": r.id, "term": r.term, "vote": r.vote, "role": r.role, "lead": r.lead,
                "commit": r.log.committed, "applied": r.log.applied,
                "last_index": r.log.last_index(), "voters": list(r.conf.voters),
                "transferee": r.lead_transferee}

    # the Ready cycle ----------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        return bool(
            SoftState(r.lead, r.role) != self._prev_soft
            or r.hard_state() != self._prev_hard
            or r.msgs
            or r.log.unstable_snapshot is not None
            or r.log.stable < r.log.last_index()
            or r.log.has_next_committed()
        )

    def ready(self) -> Ready:
        """Collect the pending work. Call ``advance`` with it before the next ``ready``."""
        if self._outstanding is not None:
            raise AssertionError("ready() called twice without advance()")
        r = self.raft
        soft = SoftState(r.lead, r.role)
        hard = r.hard_state()
        entries = tuple(r.log.unstable_entries())
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=entries,
            snapshot=r.log.unstable_snapshot,
            committed_entries=tuple(r.log.next_committed()),
            messages=tuple(r.msgs),
            must_sync=bool(entries) or hard.term != self._prev_hard.term
            or hard.vote != self._prev_hard.vote,
        )
        r.msgs = []
        if rd.soft_state is not None:
            self._prev_soft = soft
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied."""
        if rd is not self._outstanding:
            raise AssertionError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        log = self.raft.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            if log.unstable_snapshot is rd.snapshot:
                log.unstable_snapshot = None
            log.applied = max(log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
