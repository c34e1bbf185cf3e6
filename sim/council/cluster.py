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

The simulated disk, the manager's duties (term-limit hand-over through
``consensus.manager.decide``, removal of revoked voters) and the invariant checker are the
simulator's (``sim/council/``): the council world runs the same checks over many more seeds.
Invariants, checked after every event (:class:`SafetyViolation` at the first failure; the
full list is in ``sim/council/invariants.py``): election safety, log matching, committed
entries never change, state machine safety, leader completeness, and the revocation rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consensus.messages import ENTRY_NORMAL, Entry, Message, Snapshot
from consensus.raft import LEADER, Config, Persisted, ProposalDropped, RawNode, Ready
from consensus.state import (
    CORE_REGISTRY,
    Revoke,
    SwarmState,
    apply_entry,
    decode_state,
    encode_state,
)
from sim.council.driver import Disk, handover_target, initial_state, revoked_voter
from sim.council.invariants import RaftInvariants, SafetyViolation

__all__ = ["REGISTRY", "Cluster", "Disk", "KvGet", "KvPut", "Op", "SafetyViolation", "SimConfig",
           "StoreDisk", "initial_state"]

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


# --------------------------------------------------------------------------- nodes


class StoreDisk:
    """The same contract on the real ``node/raftstore.py`` (fsync off: the simulated crash
    happens between Readys, so every completed write is whole). A crash closes the store; a
    restart reopens it, so every restart replays the WAL from the real files."""

    def __init__(self, directory: Path, initial: Persisted) -> None:
        from node.raftstore import RaftStore

        def open_store() -> RaftStore:
            return RaftStore(directory, initial)

        self._open = open_store
        self.store = open_store()

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.store.save_snapshot(rd.snapshot)
        self.store.save(rd.hard_state, rd.entries, sync=False)

    def compact(self, snap: Snapshot) -> None:
        self.store.save_snapshot(snap)

    @property
    def entries(self) -> list[Entry]:
        return list(self.store.entries)

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
        # invariant bookkeeping (shared with the council simulator)
        self.inv = RaftInvariants(fail_fast=True, prefix=f"SEED={seed}: ")
        self.leaders = self.inv.leaders
        self.committed = self.inv.committed
        self.removed_committed = self.inv.removed_committed
        self.elections = self.inv.elections  # (time, term, leader)
        self.events = 0
        self.transfers = 0
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
            if rd.entries:
                self.inv.persisted(n.id, rd.entries, n.disk.entries)
            n.disk.persist(rd)                      # 1. persist
            for m in rd.messages:                   # 2. send
                self.inv.sent(n.id, rn.raft, m)
                self.send(m)
            if rd.snapshot is not None:             # 3. apply
                n.state = decode_state(rd.snapshot.data)
                n.applied = rd.snapshot.meta.index
                self.inv.restored(n.id, n.applied, n.state)
            for e in rd.committed_entries:
                self._apply(n, e)
            rn.advance(rd)                          # 4. advance
            if self.inv.after_ready(n.id, rn.raft, self.now):
                n.leader_since = self.now
            self._drive(n)

    def _apply(self, n: SimNode, e: Entry) -> None:
        prev = n.applied
        n.applied = e.index
        if e.kind == ENTRY_NORMAL:
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
        self.inv.applied(n.id, prev, e, n.state, self.now)

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
            victim = revoked_voter(n.state, r)
            if victim is not None:
                with contextlib.suppress(ProposalDropped):
                    rn.propose_conf_change("remove", victim)

    def _rotate(self, n: SimNode) -> None:
        """Term-limited manager: hand over through consensus/manager.py's policy."""
        r = n.rn.raft
        if r.lead_transferee is not None or self.cfg.term_limit_ms is None:
            return
        got = handover_target(n.state, r, now_tick=self.now // self.cfg.tick_ms,
                              term_start_tick=n.leader_since // self.cfg.tick_ms,
                              term_limit_ticks=self.cfg.term_limit_ms // self.cfg.tick_ms)
        if got is not None:
            self.transfers += 1
            r.transfer_leader(got[1])
