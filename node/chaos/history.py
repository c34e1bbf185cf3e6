"""The history of a chaos run: every operation's invocation and outcome, as JSON lines.

Theory of operation
-------------------
As in Jepsen, an operation is two events: an ``invoke`` line when a client starts it and a
completion line when it ends, whose ``type`` is ``ok`` (it happened), ``fail`` (it certainly
did not happen) or ``info`` (unknown: a timeout, a node that died mid-way). An invocation with
no completion at all (the run itself was cut short) is read back as ``info``. The nemesis
writes its faults into the same history (process ``nemesis``), so the checkers and the plot
see clients and faults on one time axis.

A line is ``{"index", "process", "type", "f", "time_s", "node", "value"}``: ``index`` pairs an
invocation with its completion, ``time_s`` is seconds since the run started (monotonic),
``node`` the node index the client talked to (or null), ``value`` the operation's argument or
result (JSON, bounded). :func:`parse_lines` is the only reader: a line that is too long, not
JSON or not of this schema is refused with a reason and counted, never a crash.

Pure: no I/O, no clock. The driver (node/chaos/run.py) writes the lines.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

MAX_LINE_BYTES = 64 * 1024
TYPES = ("invoke", "ok", "fail", "info")
FUNCTIONS = ("put", "get", "status", "submit", "fault-start", "fault-stop", "final-read",
             "final-state", "recovered")


@dataclasses.dataclass(frozen=True)
class Event:
    index: int
    process: str
    type: str
    f: str
    time_s: float
    node: int | None
    value: Any

    def to_line(self) -> str:
        line = json.dumps({"index": self.index, "process": self.process, "type": self.type,
                           "f": self.f, "time_s": round(self.time_s, 4), "node": self.node,
                           "value": self.value}, sort_keys=True, separators=(",", ":"))
        if len(line.encode()) > MAX_LINE_BYTES:
            raise ValueError(f"history line of {len(line)} bytes exceeds {MAX_LINE_BYTES}")
        return line


@dataclasses.dataclass(frozen=True)
class Op:
    """An invocation paired with its completion."""

    index: int
    process: str
    f: str
    node: int | None
    invoke_s: float
    complete_s: float | None
    type: str  # ok | fail | info
    arg: Any
    result: Any

    @property
    def latency_s(self) -> float | None:
        return None if self.complete_s is None else self.complete_s - self.invoke_s


@dataclasses.dataclass
class Parsed:
    events: list[Event]
    refused: dict[str, int]


def _event(raw: Any) -> Event:
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    keys = {"index", "process", "type", "f", "time_s", "node", "value"}
    if set(raw) != keys:
        raise ValueError("wrong keys")
    index, process, typ, f, t, node = (raw[k] for k in ("index", "process", "type", "f", "time_s", "node"))
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError("bad index")
    if not isinstance(process, str) or not 0 < len(process) <= 64:
        raise ValueError("bad process")
    if typ not in TYPES:
        raise ValueError("bad type")
    if f not in FUNCTIONS:
        raise ValueError("bad f")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1e7:
        raise ValueError("bad time_s")
    if node is not None and (not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < 1024):
        raise ValueError("bad node")
    return Event(index, process, typ, f, float(t), node, raw["value"])


def parse_lines(lines: Iterable[str | bytes]) -> Parsed:
    """Every valid event of ``lines``; the refused ones counted by reason."""
    events: list[Event] = []
    refused: dict[str, int] = {}
    for line in lines:
        if isinstance(line, bytes):
            if len(line) > MAX_LINE_BYTES:
                refused["too-long"] = refused.get("too-long", 0) + 1
                continue
            try:
                line = line.decode()
            except UnicodeDecodeError:
                refused["not-utf8"] = refused.get("not-utf8", 0) + 1
                continue
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            refused["too-long"] = refused.get("too-long", 0) + 1
            continue
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            refused["not-json"] = refused.get("not-json", 0) + 1
            continue
        try:
            events.append(_event(raw))
        except ValueError as exc:
            refused[str(exc)] = refused.get(str(exc), 0) + 1
    return Parsed(events, refused)


def pair(events: Iterable[Event]) -> list[Op]:
    """Invocations paired with their completions, in invocation order. A completion with no
    invocation is dropped; an invocation with none becomes ``info`` with no completion time."""
    invoked: dict[int, Event] = {}
    ops: dict[int, Op] = {}
    for e in events:
        if e.type == "invoke":
            invoked.setdefault(e.index, e)
        elif e.index in invoked and e.index not in ops:
            inv = invoked[e.index]
            ops[e.index] = Op(e.index, inv.process, inv.f, inv.node, inv.time_s, e.time_s, e.type,
                              inv.value, e.value)
    for idx, inv in invoked.items():
        if idx not in ops:
            ops[idx] = Op(idx, inv.process, inv.f, inv.node, inv.time_s, None, "info", inv.value, None)
    return sorted(ops.values(), key=lambda o: (o.invoke_s, o.index))


class Recorder:
    """Hands out indices and builds events; the caller writes ``Event.to_line()`` somewhere.

    Not thread-safe by itself: the driver serialises ``invoke``/``complete`` under its lock."""

    def __init__(self) -> None:
        self._next = 0

    def invoke(self, process: str, f: str, time_s: float, node: int | None, value: Any) -> Event:
        e = Event(self._next, process, "invoke", f, time_s, node, value)
        self._next += 1
        return e

    @staticmethod
    def complete(inv: Event, typ: str, time_s: float, value: Any) -> Event:
        if typ not in TYPES[1:]:
            raise ValueError(f"completion type must be ok, fail or info, not {typ!r}")
        return Event(inv.index, inv.process, typ, inv.f, time_s, inv.node, value)
