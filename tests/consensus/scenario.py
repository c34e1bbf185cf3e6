"""Scenario files for Raft, in the manner of etcd-io/raft's ``testdata/*.txt``.

File format
-----------
A file is a sequence of blocks::

    # comments and blank lines between blocks are ignored
    command arg1 key=value ...
    ----
    expected output, line by line
    (ends at the first blank line)

The harness runs each command against an in-memory cluster of real ``RawNode``s and compares
its output with the expected text. ``REWRITE=1`` in the environment rewrites the files with
the actual output instead (review the diff!).

Commands
--------
``add-nodes N [voters=1,2,3] [pre-vote=true|false] [check-quorum=true|false]
[election=10] [heartbeat=1] [max-entries=64] [inflight=256]``
    create N nodes with the next free ids; ``voters`` is their bootstrap configuration
    (default: the new nodes themselves). Nodes outside ``voters`` start empty (to be added).
``campaign ID``                      node ID starts an election (pre-vote if enabled).
``propose ID DATA``                  propose an entry.
``propose-conf-change ID add|remove NODE``
``transfer-leadership from=ID to=ID``
``tick-election ID...`` / ``tick-heartbeat ID...`` / ``tick ID N``
``process-ready ID...``              handle one Ready on each node (persist, queue messages,
                                     apply, advance), printing it.
``deliver-msgs [drop=ID,...] [ID...]`` deliver queued messages addressed to the IDs (all by
                                     default), dropping those addressed to ``drop`` IDs.
``stabilize [ID...]``                process-ready and deliver-msgs until nothing changes.
``isolate ID`` / ``recover``         drop every message to or from ID / stop dropping.
``compact ID INDEX``                 snapshot node ID's applied state at INDEX, compact its log.
``raft-state``                       role, term and leader of every node.
``raft-log ID``                      node ID's log.
``log-level debug|info|none``        which Raft log lines are printed (Ready dumps and
                                     deliveries are printed unless ``none``).
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

from consensus.messages import (
    ENTRY_NORMAL,
    Entry,
    HardState,
    Message,
    Snapshot,
    describe_entry,
    describe_message,
)
from consensus.raft import Config, Persisted, ProposalDropped, RawNode

LEVELS = {"debug": 0, "info": 1, "warn": 2, "none": 9}


@dataclasses.dataclass
class Node:
    rn: RawNode
    cfg: Config
    applied: list[bytes]
    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry]


class Env:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.outbox: list[Message] = []
        self.out: list[str] = []
        self.level = LEVELS["info"]
        self.isolated: set[int] = set()

    def log(self, level: str, text: str) -> None:
        if LEVELS[level] >= self.level:
            self.out.append(f"{level.upper():5} {text}")

    def say(self, text: str) -> None:
        if self.level < LEVELS["none"]:
            self.out.append(text)

    # ------------------------------------------------------------------ commands

    def cmd_add_nodes(self, args: list[str], kw: dict[str, str]) -> None:
        n = int(args[0])
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + n))
        voters = [int(v) for v in kw["voters"].split(",")] if "voters" in kw else ids
        for i in ids:
            cfg = Config(
                id=i,
                election_tick=int(kw.get("election", 10)),
                heartbeat_tick=int(kw.get("heartbeat", 1)),
                pre_vote=kw.get("pre-vote", "true") == "true",
                check_quorum=kw.get("check-quorum", "true") == "true",
                max_entries_per_msg=int(kw.get("max-entries", 64)),
                max_inflight_msgs=int(kw.get("inflight", 256)),
            )
            init = Persisted.initial(voters if i in voters else [])
            rn = RawNode(cfg, random.Random(i), init, logger=self.log)
            self.nodes[i] = Node(rn, cfg, [], init.hard_state, init.snapshot, [])

    def cmd_campaign(self, args: list[str], kw: dict[str, str]) -> None:
        self.nodes[int(args[0])].rn.campaign()

    def cmd_propose(self, args: list[str], kw: dict[str, str]) -> None:
        try:
            idx = self.nodes[int(args[0])].rn.propose(args[1].encode())
        except ProposalDropped as exc:
            self.out.append(f"dropped: {exc}")
        else:
            self.out.append(f"proposed at index {idx}")

    def cmd_propose_conf_change(self, args: list[str], kw: dict[str, str]) -> None:
        try:
            idx = self.nodes[int(args[0])].rn.propose_conf_change(args[1], int(args[2]))
        except ProposalDropped as exc:
            self.out.append(f"dropped: {exc}")
        else:
            self.out.append(f"proposed at index {idx}")

    def cmd_transfer_leadership(self, args: list[str], kw: dict[str, str]) -> None:
        try:
            self.nodes[int(kw["from"])].rn.transfer_leader(int(kw["to"]))
        except ProposalDropped as exc:
            self.out.append(f"dropped: {exc}")

    def _ticks(self, args: list[str], attr: str) -> None:
        for a in args:
            node = self.nodes[int(a)]
            for _ in range(getattr(node.cfg, attr)):
                node.rn.tick()

    def cmd_tick_election(self, args: list[str], kw: dict[str, str]) -> None:
        self._ticks(args, "election_tick")

    def cmd_tick_heartbeat(self, args: list[str], kw: dict[str, str]) -> None:
        self._ticks(args, "heartbeat_tick")

    def cmd_tick(self, args: list[str], kw: dict[str, str]) -> None:
        for _ in range(int(args[1])):
            self.nodes[int(args[0])].rn.tick()

    def cmd_isolate(self, args: list[str], kw: dict[str, str]) -> None:
        self.isolated.add(int(args[0]))

    def cmd_recover(self, args: list[str], kw: dict[str, str]) -> None:
        self.isolated.clear()

    def cmd_log_level(self, args: list[str], kw: dict[str, str]) -> None:
        self.level = LEVELS[args[0]]

    def cmd_compact(self, args: list[str], kw: dict[str, str]) -> None:
        node = self.nodes[int(args[0])]
        index = int(args[1])
        snap = node.rn.compact(index, b",".join(node.applied))
        node.snapshot = snap
        node.entries = [e for e in node.entries if e.index > index]

    def cmd_raft_state(self, args: list[str], kw: dict[str, str]) -> None:
        for i, node in sorted(self.nodes.items()):
            r = node.rn.raft
            kind = "Voter" if i in r.voters else ("Removed" if r.is_removed() else "NonVoter")
            self.out.append(f"{i}: {r.role} ({kind}) Term:{r.term} Lead:{r.lead or 0}")

    def cmd_raft_log(self, args: list[str], kw: dict[str, str]) -> None:
        r = self.nodes[int(args[0])].rn.raft
        if r.log.offset:
            self.out.append(f"snapshot at {r.log.snap_term}/{r.log.offset}")
        if not r.log.entries:
            self.out.append("log is empty")
        for e in r.log.entries:
            self.out.append(describe_entry(e))

    def cmd_process_ready(self, args: list[str], kw: dict[str, str]) -> None:
        for a in args:
            self.process_ready(int(a))

    def cmd_deliver_msgs(self, args: list[str], kw: dict[str, str]) -> None:
        drop = {int(x) for x in kw["drop"].split(",")} if "drop" in kw else set()
        targets = {int(a) for a in args} or set(self.nodes)
        self.deliver(targets | drop, drop)

    def cmd_stabilize(self, args: list[str], kw: dict[str, str]) -> None:
        ids = [int(a) for a in args] or sorted(self.nodes)
        while True:
            progress = False
            for i in ids:
                if self.nodes[i].rn.has_ready():
                    self.process_ready(i)
                    progress = True
            if self.deliver(set(ids), set()):
                progress = True
            if not progress:
                return

    # ------------------------------------------------------------------ the Ready cycle

    def process_ready(self, i: int) -> None:
        node = self.nodes[i]
        if not node.rn.has_ready():
            return
        rd = node.rn.ready()
        self.say(f"> {i} handling Ready")
        if rd.soft_state is not None:
            self.say(f"  Lead:{rd.soft_state.lead or 0} State:{rd.soft_state.role}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            self.say(f"  HardState Term:{hs.term} Vote:{hs.vote or 0} Commit:{hs.commit}")
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            self.say(f"  Snapshot Index:{meta.index} Term:{meta.term} Voters:{list(meta.conf.voters)}")
            node.snapshot = rd.snapshot
            node.entries = []
            node.applied = [x for x in rd.snapshot.data.split(b",") if x]
        if rd.entries:
            self.say("  Entries:")
            for e in rd.entries:
                self.say(f"  {describe_entry(e)}")
            first = rd.entries[0].index
            node.entries = [e for e in node.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            node.hard_state = rd.hard_state
        if rd.committed_entries:
            self.say("  CommittedEntries:")
            for e in rd.committed_entries:
                self.say(f"  {describe_entry(e)}")
                if e.kind == ENTRY_NORMAL and e.data:
                    node.applied.append(e.data)
        if rd.messages:
            self.say("  Messages:")
            for m in rd.messages:
                self.say(f"  {describe_message(m)}")
            self.outbox.extend(rd.messages)
        node.rn.advance(rd)

    def deliver(self, targets: set[int], drop: set[int]) -> bool:
        keep: list[Message] = []
        todo: list[Message] = []
        for m in self.outbox:
            (todo if m.to in targets else keep).append(m)
        self.outbox = keep
        if not todo:
            return False
        for m in todo:
            lost = m.to in drop or m.to in self.isolated or m.sender in self.isolated
            if lost:
                self.say(f"  dropped: {describe_message(m)}")
        by_node: dict[int, list[Message]] = {}
        for m in todo:
            if not (m.to in drop or m.to in self.isolated or m.sender in self.isolated):
                by_node.setdefault(m.to, []).append(m)
        for to in sorted(by_node):
            self.say(f"> {to} receiving messages")
            for m in by_node[to]:
                self.say(f"  {describe_message(m)}")
                self.nodes[to].rn.step(m)
        return True


# --------------------------------------------------------------------------- files


@dataclasses.dataclass
class Block:
    command: str
    expected: list[str]


def parse(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line or line.startswith("#"):
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1].rstrip() != "----":
            raise ValueError(f"line {i + 1}: command {line!r} lacks a ---- separator")
        i += 2
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i].rstrip())
            i += 1
        blocks.append(Block(line, expected))
    return blocks


def run_command(env: Env, command: str) -> list[str]:
    words = command.split()
    name, rest = words[0], words[1:]
    args = [w for w in rest if "=" not in w]
    kw = dict(w.split("=", 1) for w in rest if "=" in w)
    handler = getattr(env, "cmd_" + name.replace("-", "_"), None)
    if handler is None:
        raise ValueError(f"unknown command {name!r}")
    env.out = []
    handler(args, kw)
    return env.out or ["ok"]


def run_file(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """Run a scenario; return (command, expected, actual) per block. With REWRITE=1 in the
    environment the file is rewritten with the actual output."""
    blocks = parse(path.read_text())
    env = Env()
    results = [(b.command, b.expected, run_command(env, b.command)) for b in blocks]
    if os.environ.get("REWRITE") == "1":
        chunks = []
        comments = _comments_before(path.read_text())
        for (cmd, _, actual), note in zip(results, comments, strict=True):
            chunks.append("\n".join([*note, cmd, "----", *actual]))
        path.write_text("\n\n".join(chunks) + "\n")
        return [(cmd, actual, actual) for cmd, _, actual in results]
    return results


def _comments_before(text: str) -> list[list[str]]:
    """The comment lines preceding each block, so a rewrite keeps them."""
    out: list[list[str]] = []
    pending: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("#"):
            pending.append(line)
            i += 1
        elif not line:
            i += 1
        else:
            out.append(pending)
            pending = []
            i += 2
            while i < len(lines) and lines[i].strip():
                i += 1
    return out
