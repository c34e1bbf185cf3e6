"""A deterministic simulated Raft cluster: one seeded event loop, virtual milliseconds.

Theory of operation
-------------------
Every source of non-determinism is drawn from one ``random.Random(seed)``: tick phases,
message delay (which reorders), loss, duplication, partitions, crashes and restarts, client
operations and election jitter (each node's RNG is seeded from the master). The same seed
replays the same run, event for event.

Each node is a real :class:`consensus.raft.RawNode` driven exactly as the module docstring of
``consensus/raft.py`` says: persist to its simulated disk, send, apply to a real
``SwarmState``, advance. A crash throws away everything but the disk; a restart rebuilds the
node from it. The state machine is the production one, extended (through the command
registry) with a tiny key-value section used by the clients whose histories the
linearizability checker reads.

Invariants, checked after every event (:class:`SafetyViolation` on failure):
- election safety: at most one leader per term;
- log matching: two logs holding an entry with the same (index, term) hold the same data;
- state machine safety: every replica applies the same entry at each index, and reaches the
  same state bytes at each applied index; committed entries never change;
- leader completeness: a new leader's log holds every entry committed so far;
- revocation: once the removal of a revoked node is committed, it never leads again, no
  vote of it counts toward an election, and once it knows it was removed it grants none;
  the replicated council never contains a revoked member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consensus.manager import ManagerPolicy, decide
from consensus.messages import (
    ENTRY_CONF,
    ENTRY_NORMAL,
    ConfChange,
    Entry,
    HardState,
    Message,
    Snapshot,
    VoteResponse,
)
from consensus.raft import LEADER, Config, Persisted, ProposalDropped, RawNode, Ready
from consensus.state import (
    CORE_REGISTRY,
    REVOKED,
    Join,
    Revoke,
    SetCouncil,
    SwarmState,
    apply,
    apply_entry,
    decode_state,
    encode_state,
)

# --------------------------------------------------------------------------- KV extension


@dataclasses.dataclass(frozen=True)
class KvPut:
    client: int
    seq: int
    key: str
    value: int


@dataclasses.dataclass(frozen=True)
class KvGet:
    client: int
    seq: int
    key: str


def _kv_put(s: SwarmState, c: KvPut) -> SwarmState:
    kv = dict(s.ext.get("kv", {}))
    kv[c.key] = c.value
    return dataclasses.replace(s, ext={**s.ext, "kv": kv})


def _kv_get(s: SwarmState, c: KvGet) -> tuple[SwarmState, Any]:
    return s, s.ext.get("kv", {}).get(c.key)


REGISTRY = CORE_REGISTRY.extended("kv-put", KvPut, _kv_put).extended("kv-get", KvGet, _kv_get)


def initial_state(n: int) -> SwarmState:
    s = SwarmState()
    for i in range(1, n + 1):
        s, r = apply(s, Join(f"node-{i}", f"provider-{i % 3}", f"region-{i % 2}", "sim",
                             900 - i, True))
        assert r.ok
    s, r = apply(s, SetCouncil(n))
    assert r.ok
    return s


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Knobs of one run. Times are virtual milliseconds."""

    nodes: int = 5
    tick_ms: int = 10
    election_tick: int = 15          # 150 ms base, randomized in [150, 300) ms
    heartbeat_tick: int = 5          # 50 ms
    delay_ms: tuple[int, int] = (1, 8)
    loss: float = 0.05
    dup: float = 0.02
    partition_every_ms: int = 700    # mean interval between partition changes; 0 disables
    crash_every_ms: int = 900        # mean interval between crashes; 0 disables
    downtime_ms: tuple[int, int] = (50, 600)
    clients: int = 3
    client_think_ms: tuple[int, int] = (5, 60)
    client_timeout_ms: int = 400
    revoke_at_ms: int | None = None  # revoke one council member through consensus
    term_limit_ms: int | None = None  # rotate the manager (leadership transfer) this often
    snapshot_every: int = 12         # entries applied between snapshots
    max_entries_per_msg: int = 8
    max_inflight_msgs: int = 4
    pre_vote: bool = True
    check_quorum: bool = True
    chaos_ms: int = 3000
    heal_ms: int = 3000              # liveness budget after healing


class SafetyViolation(AssertionError):
    pass


# --------------------------------------------------------------------------- nodes


class Disk:
    """What survives a crash: everything a Ready asked to persist."""

    def __init__(self, initial: Persisted) -> None:
        self.hard_state: HardState = initial.hard_state
        self.snapshot: Snapshot = initial.snapshot
        self.entries: list[Entry] = list(initial.entries)

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]

    def load(self) -> Persisted:
        return Persisted(self.hard_state, self.snapshot, tuple(self.entries))


class StoreDisk:
    """The same contract on the real ``node/raftstore.py`` (fsync off: the simulated crash
    happens between Readys, so every completed write is whole). A crash closes the store; a
    restart reopens it, so every restart replays the WAL from the real files."""

    def __init__(self, directory: Path, initial: Persisted) -> None:
        from node.raftstore import RaftStore

        self._open = lambda: RaftStore(directory, initial)
        self.store = self._open()

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.store.save_snapshot(rd.snapshot)
        self.store.save(rd.hard_state, rd.entries, sync=False)

    def compact(self, snap: Snapshot) -> None:
        self.store.save_snapshot(snap)

    def close(self) -> None:
        self.store.close()

    def load(self) -> Persisted:
        self.store.close()
        self.store = self._open()
        return self.store.load()


class SimNode:
    def __init__(self, cluster: Cluster, node_id: int, disk: Disk | StoreDisk) -> None:
        self.cluster = cluster
        self.id = node_id
        self.disk = disk
        self.alive = True
        self.incarnation = 0
        self.boot()

    def boot(self) -> None:
        c = self.cluster
        cfg = Config(id=self.id, election_tick=c.cfg.election_tick,
                     heartbeat_tick=c.cfg.heartbeat_tick,
                     max_entries_per_msg=c.cfg.max_entries_per_msg,
                     max_inflight_msgs=c.cfg.max_inflight_msgs,
                     pre_vote=c.cfg.pre_vote, check_quorum=c.cfg.check_quorum)
        persisted = self.disk.load()
        self.rn = RawNode(cfg, random.Random(c.rng.getrandbits(64)), persisted,
                          logger=c.logger)
        self.state = decode_state(persisted.snapshot.data)
        self.applied = persisted.snapshot.meta.index
        self.pending_clients: dict[tuple[int, int], int] = {}
        self.was_leader_term = -1
        self.leader_since = 0


# --------------------------------------------------------------------------- cluster


@dataclasses.dataclass
class Op:
    """One client operation, for the linearizability checker."""

    client: int
    seq: int
    kind: str          # "put" | "get"
    key: str
    value: int | None  # put: the value written; get: the value read (when completed)
    call_ms: int
    return_ms: int | None = None  # None: unknown outcome (timed out)
    abandoned: bool = dataclasses.field(default=False, compare=False)


class Cluster:
    def __init__(self, seed: int, cfg: SimConfig | None = None,
                 logger: Callable[[str, str], None] | None = None,
                 store_dir: Path | None = None) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig()
        self.rng = random.Random(seed)
        self.logger = logger or (lambda level, text: None)
        self.now = 0
        self._q: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self.ids = list(range(1, self.cfg.nodes + 1))
        init = Persisted.initial(self.ids, encode_state(initial_state(self.cfg.nodes)))
        self.nodes = {
            i: SimNode(self, i, Disk(init) if store_dir is None else StoreDisk(store_dir / str(i), init))
            for i in self.ids}
        self.blocked: set[frozenset[int]] = set()
        self.faults_on = True
        # invariant bookkeeping
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.state_digest: dict[int, bytes] = {}
        self.seen: dict[tuple[int, int], bytes] = {}
        self.removed_committed: dict[int, int] = {}
        self.revoked_ids: set[int] = set()
        self.events = 0
        self.transfers = 0
        self.elections: list[tuple[int, int, int]] = []  # (time, term, leader)
        self.history: list[Op] = []
        self._client_seq = [0] * self.cfg.clients
        self._client_target = [self.rng.choice(self.ids) for _ in range(self.cfg.clients)]
        for i in self.ids:
            self._schedule(self.rng.randrange(self.cfg.tick_ms), "tick", (i, 0))
        for c in range(self.cfg.clients):
            self._schedule(self.rng.randrange(50, 200), "client", c)
        if self.cfg.partition_every_ms:
            self._schedule(self._exp(self.cfg.partition_every_ms), "partition", None)
        if self.cfg.crash_every_ms:
            self._schedule(self._exp(self.cfg.crash_every_ms), "crash", None)
        if self.cfg.revoke_at_ms is not None:
            self._schedule(self.cfg.revoke_at_ms, "revoke", None)

    # ------------------------------------------------------------------ plumbing

    def _exp(self, mean: int) -> int:
        return max(1, int(self.rng.expovariate(1.0 / mean)))

    def _schedule(self, delay: int, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._q, (self.now + delay, self._seq, kind, payload))

    def connected(self, a: int, b: int) -> bool:
        return frozenset((a, b)) not in self.blocked

    def send(self, m: Message) -> None:
        if not self.connected(m.sender, m.to):
            return
        if self.faults_on and self.rng.random() < self.cfg.loss:
            return
        copies = 2 if self.faults_on and self.rng.random() < self.cfg.dup else 1
        for _ in range(copies):
            self._schedule(self.rng.randint(*self.cfg.delay_ms), "deliver", m)

    # ------------------------------------------------------------------ running

    def run_until(self, t_ms: int, stop: Callable[[], bool] | None = None) -> None:
        while self._q and self._q[0][0] <= t_ms:
            self.now, _, kind, payload = heapq.heappop(self._q)
            getattr(self, f"_on_{kind}")(payload)
            self.events += 1
            if stop is not None and stop():
                return
        self.now = max(self.now, t_ms)

    def run(self) -> None:
        """Safety phase with faults, then heal and require convergence (liveness)."""
        self.run_until(self.cfg.chaos_ms)
        self.heal()
        deadline = self.now + self.cfg.heal_ms
        self.run_until(deadline, stop=self.converged)
        if not self.converged():
            raise SafetyViolation(f"SEED={self.seed}: no convergence {self.cfg.heal_ms} ms after "
                                  f"healing: {self.describe()}")

    def close(self) -> None:
        for n in self.nodes.values():
            if isinstance(n.disk, StoreDisk):
                n.disk.close()

    def heal(self) -> None:
        self.faults_on = False
        self.blocked.clear()
        for i, n in self.nodes.items():
            if not n.alive:
                self._on_restart((i, n.incarnation))

    def leader(self) -> int | None:
        best = None
        for i, n in self.nodes.items():
            r = n.rn.raft
            if n.alive and r.role == LEADER and (best is None or r.term > self.nodes[best].rn.raft.term):
                best = i
        return best

    def converged(self) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        members = [n for n in self.nodes.values() if n.alive and n.id in self.nodes[lead].rn.raft.voters]
        commit = self.nodes[lead].rn.raft.log.committed
        if self.nodes[lead].rn.raft.log.term(commit) != self.nodes[lead].rn.raft.term:
            return False
        return all(n.applied >= commit for n in members)

    def describe(self) -> str:
        return "; ".join(
            f"{i}:{'up' if n.alive else 'down'} {n.rn.raft.role} t{n.rn.raft.term} "
            f"c{n.rn.raft.log.committed} a{n.applied} l{n.rn.raft.log.last_index()} "
            f"v{list(n.rn.raft.voters)}" for i, n in self.nodes.items())

    # ------------------------------------------------------------------ events

    def _on_tick(self, payload: tuple[int, int]) -> None:
        i, inc = payload
        n = self.nodes[i]
        if not n.alive or n.incarnation != inc:
            return
        n.rn.tick()
        self.process(n)
        self._schedule(self.cfg.tick_ms, "tick", (i, inc))

    def _on_deliver(self, m: Message) -> None:
        n = self.nodes[m.to]
        if not n.alive or not self.connected(m.sender, m.to):
            return
        n.rn.step(m)
        self.process(n)

    def _on_partition(self, _: Any) -> None:
        if not self.faults_on:
            return
        shape = self.rng.random()
        self.blocked.clear()
        ids = list(self.ids)
        self.rng.shuffle(ids)
        if shape < 0.3:
            pass  # healed
        elif shape < 0.6:  # minority/majority split
            k = self.rng.randint(1, len(ids) // 2)
            self._split(ids[:k], ids[k:])
        elif shape < 0.8:  # isolate the leader
            lead = self.leader()
            if lead is not None:
                self._split([lead], [i for i in ids if i != lead])
        else:  # a bridge node: two halves that both reach one node
            bridge, rest = ids[0], ids[1:]
            half = len(rest) // 2
            self._split(rest[:half], rest[half:])
            del bridge
        self._schedule(self._exp(self.cfg.partition_every_ms), "partition", None)

    def _split(self, a: list[int], b: list[int]) -> None:
        for x in a:
            for y in b:
                self.blocked.add(frozenset((x, y)))

    def _on_crash(self, _: Any) -> None:
        if not self.faults_on:
            return
        alive = [i for i, n in self.nodes.items() if n.alive]
        # Keep a majority up most of the time, but sometimes take it down too.
        if len(alive) > self.cfg.nodes // 2 + (0 if self.rng.random() < 0.2 else 1):
            victim = self.nodes[self.rng.choice(alive)]
            self.crash(victim.id)
            self._schedule(self.rng.randint(*self.cfg.downtime_ms), "restart",
                           (victim.id, victim.incarnation))
        self._schedule(self._exp(self.cfg.crash_every_ms), "crash", None)

    def crash(self, i: int) -> None:
        n = self.nodes[i]
        n.alive = False
        n.incarnation += 1

    def _on_restart(self, payload: tuple[int, int]) -> None:
        i, inc = payload
        n = self.nodes[i]
        if n.alive or n.incarnation != inc:
            return
        n.alive = True
        n.incarnation += 1
        n.boot()
        self._schedule(self.rng.randrange(1, self.cfg.tick_ms + 1), "tick", (i, n.incarnation))
        self.process(n)

    def _on_revoke(self, _: Any) -> None:
        lead = self.leader()
        if lead is None:
            self._schedule(50, "revoke", None)
            return
        n = self.nodes[lead]
        victims = sorted(n.state.council)
        victim = victims[self.rng.randrange(len(victims))]
        try:
            n.rn.propose(REGISTRY.encode(Revoke(victim, "integrity alarm")))
        except ProposalDropped:
            self._schedule(50, "revoke", None)
            return
        self.process(n)

    # ------------------------------------------------------------------ clients

    def _on_client(self, c: int) -> None:
        self._client_seq[c] += 1
        seq = self._client_seq[c]
        key = f"k{self.rng.randrange(2)}"
        if self.rng.random() < 0.5:
            op = Op(c, seq, "put", key, c * 1_000_000 + seq, self.now)
        else:
            op = Op(c, seq, "get", key, None, self.now)
        self.history.append(op)
        self._submit(op, 0)

    def _submit(self, op: Op, attempt: int) -> None:
        self._schedule(self.rng.randint(*self.cfg.delay_ms), "client_arrive", (op, attempt))

    def _on_client_arrive(self, payload: tuple[Op, int]) -> None:
        op, attempt = payload
        target = self._client_target[op.client]
        n = self.nodes[target]
        cmd: Any = (KvPut(op.client, op.seq, op.key, op.value or 0) if op.kind == "put"
                    else KvGet(op.client, op.seq, op.key))
        if n.alive:
            try:
                n.rn.propose(REGISTRY.encode(cmd))
            except ProposalDropped:
                pass
            else:
                n.pending_clients[(op.client, op.seq)] = n.incarnation
                self._schedule(self.cfg.client_timeout_ms, "client_timeout", op)
                self.process(n)
                return
        # Not proposed anywhere: safe to retry elsewhere (no duplicate can commit).
        lead = n.rn.raft.lead if n.alive else None
        self._client_target[op.client] = lead if lead is not None else self.rng.choice(self.ids)
        if attempt < 50:
            self._schedule(self.rng.randint(5, 20), "client_retry", (op, attempt + 1))
        else:
            self.history.remove(op)
            self._next_op(op.client)

    def _on_client_retry(self, payload: tuple[Op, int]) -> None:
        self._submit(*payload)

    def _on_client_timeout(self, op: Op) -> None:
        if op.return_ms is not None or op.abandoned:
            return
        op.abandoned = True
        if op.kind == "get":
            self.history.remove(op)  # a read with no answer constrains nothing
        self._client_target[op.client] = self.rng.choice(self.ids)
        self._next_op(op.client)

    def _on_client_reply(self, payload: tuple[Op, Any]) -> None:
        op, value = payload
        if op.return_ms is not None or op.abandoned:
            return
        op.return_ms = self.now
        if op.kind == "get":
            op.value = value
        self._next_op(op.client)

    def _next_op(self, c: int) -> None:
        if self.faults_on or self.now < self.cfg.chaos_ms + 500:
            self._schedule(self.rng.randint(*self.cfg.client_think_ms), "client", c)

    # ------------------------------------------------------------------ the Ready loop

    def process(self, n: SimNode) -> None:
        rn = n.rn
        while rn.has_ready():
            rd = rn.ready()
            self._check_entries(n, rd)
            n.disk.persist(rd)                      # 1. persist
            for m in rd.messages:                   # 2. send
                self._check_vote(n, m)
                self.send(m)
            if rd.snapshot is not None:             # 3. apply
                n.state = decode_state(rd.snapshot.data)
                n.applied = rd.snapshot.meta.index
            for e in rd.committed_entries:
                self._apply(n, e)
            rn.advance(rd)                          # 4. advance
            self._check_leader(n)
            self._drive(n)

    def _apply(self, n: SimNode, e: Entry) -> None:
        if e.index != n.applied + 1:
            raise SafetyViolation(f"SEED={self.seed}: node {n.id} applied {e.index} after {n.applied}")
        known = self.committed.get(e.index)
        if known is None:
            self.committed[e.index] = (e.term, e.data)
        elif known != (e.term, e.data):
            raise SafetyViolation(f"SEED={self.seed}: node {n.id} applied a different entry at "
                                  f"{e.index}: {known[0]} vs {e.term}")
        n.applied = e.index
        if e.kind == ENTRY_CONF:
            cc = ConfChange.decode(e.data)
            if cc.op == "remove":
                self.removed_committed.setdefault(cc.node_id, self.now)
        elif e.kind == ENTRY_NORMAL:
            n.state, result = apply_entry(n.state, e.data, REGISTRY)
            if e.data and result.ok:
                cmd = REGISTRY.decode(e.data)
                if isinstance(cmd, (KvPut, KvGet)):
                    inc = n.pending_clients.pop((cmd.client, cmd.seq), None)
                    if inc == n.incarnation:
                        op = self._find_op(cmd.client, cmd.seq)
                        if op is not None:
                            self._schedule(self.rng.randint(*self.cfg.delay_ms), "client_reply",
                                           (op, result.value))
                if isinstance(cmd, Revoke):
                    m = n.state.member(cmd.node_id)
                    assert m is not None
                    self.revoked_ids.add(m.raft_id)
        digest = hashlib.sha256(encode_state(n.state)).digest()
        if self.state_digest.setdefault(e.index, digest) != digest:
            raise SafetyViolation(f"SEED={self.seed}: state diverged at index {e.index} on {n.id}")
        for member in n.state.council:
            rec = n.state.member(member)
            if rec is not None and rec.status == REVOKED:
                raise SafetyViolation(f"SEED={self.seed}: revoked {member} still on the council")

    def _find_op(self, client: int, seq: int) -> Op | None:
        for op in reversed(self.history):
            if op.client == client and op.seq == seq:
                return op
        return None

    def _drive(self, n: SimNode) -> None:
        """The manager's duties after applying: snapshot, and remove revoked voters."""
        rn = n.rn
        if n.applied - rn.raft.log.offset >= self.cfg.snapshot_every:
            snap = rn.compact(n.applied, encode_state(n.state))
            n.disk.compact(snap)
        r = rn.raft
        if r.role == LEADER and self.cfg.term_limit_ms is not None:
            self._rotate(n)
        if r.role == LEADER and r.pending_conf_index <= r.log.committed:
            for v in r.voters:
                m = n.state.by_raft_id(v)
                if m is not None and m.status == REVOKED:
                    with contextlib.suppress(ProposalDropped):
                        rn.propose_conf_change("remove", v)
                    break

    def _rotate(self, n: SimNode) -> None:
        """Term-limited manager: hand over through consensus/manager.py's policy."""
        r = n.rn.raft
        if r.lead_transferee is not None or self.cfg.term_limit_ms is None:
            return
        me = n.state.by_raft_id(n.id)
        if me is None:
            return
        council = [n.state.members[c] for c in n.state.council]
        d = decide(ManagerPolicy(term_limit_ticks=self.cfg.term_limit_ms // self.cfg.tick_ms,
                                 min_score=0),
                   self_id=me.node_id, now_tick=self.now // self.cfg.tick_ms,
                   term_start_tick=n.leader_since // self.cfg.tick_ms,
                   scores={m.node_id: m.score for m in council} | {me.node_id: me.score},
                   revoked={m.node_id for m in n.state.members.values() if m.status == REVOKED})
        if d.action == "stay" or d.to is None:
            return
        target = n.state.members[d.to].raft_id
        if target in r.voters:
            self.transfers += 1
            r.transfer_leader(target)

    # ------------------------------------------------------------------ invariants

    def _check_entries(self, n: SimNode, rd: Ready) -> None:
        for e in rd.entries:
            prev = self.seen.setdefault((e.index, e.term), e.data)
            if prev != e.data:
                raise SafetyViolation(f"SEED={self.seed}: log matching broken at {e.index}/{e.term}")

    def _check_vote(self, n: SimNode, m: Message) -> None:
        if isinstance(m, VoteResponse) and not m.reject and not m.pre and n.rn.raft.is_removed():
            raise SafetyViolation(f"SEED={self.seed}: removed node {n.id} granted a vote")

    def _check_leader(self, n: SimNode) -> None:
        r = n.rn.raft
        if r.role != LEADER or n.was_leader_term == r.term:
            return
        n.was_leader_term = r.term
        n.leader_since = self.now
        other = self.leaders.setdefault(r.term, n.id)
        if other != n.id:
            raise SafetyViolation(f"SEED={self.seed}: two leaders in term {r.term}: {other}, {n.id}")
        self.elections.append((self.now, r.term, n.id))
        if n.id in self.removed_committed:
            raise SafetyViolation(f"SEED={self.seed}: removed node {n.id} became leader")
        for voter, granted in r.votes.items():
            if granted and voter in self.removed_committed and voter != n.id:
                raise SafetyViolation(f"SEED={self.seed}: vote of removed {voter} counted")
        log = r.log
        for idx, (term, data) in self.committed.items():
            if idx > log.offset and (log.term(idx) != term or log.entry(idx).data != data):
                raise SafetyViolation(f"SEED={self.seed}: leader {n.id} (term {r.term}) lacks "
                                      f"committed entry {idx}")
