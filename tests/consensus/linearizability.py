"""A Wing–Gong linearizability checker for a key-value store of registers (Porcupine-style).

Theory of operation
-------------------
A history is a list of operations, each with a call time, a return time (``inf`` when the
outcome is unknown: a write that timed out may or may not have taken effect) and its
input/output. The history is linearizable iff there is a total order of the operations that
(1) respects real time -- if a returned before b was called, a comes first -- and (2) is a
legal sequential history of the model (a read returns the last value written, or None).

Keys are independent registers, so the history is split per key (P-compositionality, as
in Porcupine) and each part searched alone. The search is Wing & Gong's: repeatedly pick a
*minimal* pending operation (called before every pending operation returned), apply it to
the model, recurse, backtrack on failure; Lowe's memoization of (set linearized, model
state) prunes revisits. An unknown-outcome write is allowed to be ordered last, i.e. to have
no visible effect.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import defaultdict
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class HistOp:
    kind: str           # "put" | "get"
    key: str
    value: int | None   # put: written; get: observed
    call: float
    ret: float = math.inf


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    key: str | None = None
    detail: str = ""


def _check_register(ops: list[HistOp]) -> bool:
    ops = sorted(ops, key=lambda o: (o.call, o.ret))
    n = len(ops)
    full = (1 << n) - 1
    seen: set[tuple[int, int | None]] = set()

    def search(done: int, state: int | None) -> bool:
        if done == full:
            return True
        if (done, state) in seen:
            return False
        seen.add((done, state))
        pending = [i for i in range(n) if not done >> i & 1]
        horizon = min(ops[i].ret for i in pending)
        for i in pending:
            op = ops[i]
            if op.call > horizon:
                break  # sorted by call: no later op is minimal either
            if op.kind == "put":
                if search(done | 1 << i, op.value):
                    return True
            elif op.value == state and search(done | 1 << i, state):
                return True
        return False

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * n + 100))
    try:
        return search(0, None)
    finally:
        sys.setrecursionlimit(limit)


def check(history: Iterable[HistOp]) -> Verdict:
    """Is the history linearizable for a map of independent registers (initially None)?"""
    by_key: dict[str, list[HistOp]] = defaultdict(list)
    for op in history:
        if op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
        by_key[op.key].append(op)
    for key in sorted(by_key):
        if not _check_register(by_key[key]):
            return Verdict(False, key, f"no linearization of {len(by_key[key])} operations")
    return Verdict(True)
