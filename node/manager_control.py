"""The manager role's operator surface: its control commands (``manager-info``,
``manager-transfer``, ``leave``, ``dissolve``, ``check-perf``) and the load check behind
``check-perf``, kept apart from the role itself (node/manager.py)."""

from __future__ import annotations

import collections
from typing import Any

import trio

from consensus.raft import ProposalDropped
from consensus.state import CORE_REGISTRY, RecordScore
from node.control import register_command
from node.manager import ManagerRole, role_of, shutdown_node
from node.manager_wire import DissolveOrder


async def check_perf(role: ManagerRole, n: int, window: int, timeout_s: float) -> dict[str, Any]:
    """Commit ``n`` harmless score records (our own score, rising epochs) through the
    council, ``window`` proposals at a time, and time it (``etcdctl check perf`` style)."""
    if not role.is_leader():
        return {"ok": False, "error": f"not the manager (manager is {role.leader_peer()})"}
    me = role.state.member(role.me)
    if me is None:
        return {"ok": False, "error": "the manager is not a member yet"}
    role._perf_epoch = max(role._perf_epoch, me.score_epoch)
    start = trio.current_time()
    done = proposed = 0
    pending: collections.deque[int] = collections.deque()  # our indexes not yet applied
    term = role.node.raft.term if role.node is not None else 0
    with trio.move_on_after(timeout_s):
        while done < n:
            # Refill in large chunks (half a window): one big batch costs one fsync and
            # one append per follower, many small ones cost one each.
            k = min(window - len(pending), n - proposed)
            if k > 0 and (len(pending) <= window // 2 or proposed + k == n):
                async with role._lock:
                    node = role.node
                    if node is None or node.raft.role != "leader" or node.raft.term != term:
                        break
                    try:
                        for _ in range(k):
                            role._perf_epoch += 1
                            pending.append(node.propose(CORE_REGISTRY.encode(
                                RecordScore(role.me, me.score, role._perf_epoch))))
                            proposed += 1
                    except ProposalDropped:
                        break
                role._wake()
            with trio.move_on_after(role.settings.tick_s * role.settings.election_tick):
                await role._progress.wait()
            while pending and pending[0] <= role.state_index:
                pending.popleft()
                done += 1
            if role.node is None or role.node.raft.term != term:
                break  # leadership changed: what was not committed may be lost
    elapsed = trio.current_time() - start
    return {"ok": done == n, "committed": done, "elapsed_s": round(elapsed, 4),
            "commits_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
            "fsync": role.settings.fsync, "window": window,
            **({} if done == n else {"error": "leadership changed or timed out"})}


def attach(agent: Any, data_dir: Any = None) -> None:
    """node.runtime extension (after node.manager): the manager's control commands."""
    register_control_commands()


def register_control_commands() -> None:
    register_command("manager-info", _cmd_info)
    register_command("manager-transfer", _cmd_transfer)
    register_command("leave", _cmd_leave)
    register_command("dissolve", _cmd_dissolve)
    register_command("check-perf", _cmd_check_perf)


def _cmd_info(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, **role_of(agent).status()}
    except LookupError as exc:
        return {"ok": False, "error": str(exc)}


async def _cmd_transfer(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    to = req.get("to")
    if to is not None and (not isinstance(to, str) or not to):  # "" is no peer id, not "anyone"
        return {"ok": False, "error": "to must be a peer id"}
    role = role_of(agent)
    ok, err = await role.forward_transfer(to)
    return {"ok": ok, **({"error": err} if not ok else {}), "manager": role.leader_peer()}


async def _cmd_leave(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    role = role_of(agent)
    ok, err = await role.leave(str(req.get("reason") or "operator request")[:200])
    if ok:
        shutdown_node(agent)
        return {"ok": True}
    return {"ok": False, "error": err}


async def _cmd_dissolve(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        order = DissolveOrder(federation=str(req["federation"]), issued_at=int(req["issued_at"]),
                              signature=bytes.fromhex(str(req["signature"])))
    except (KeyError, ValueError, TypeError):
        return {"ok": False, "error": "expected federation, issued_at and a hex signature"}
    ok, err = await role_of(agent).dissolve(order)
    return {"ok": ok, **({"error": err} if not ok else {})}


async def _cmd_check_perf(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        n = int(req.get("n", 1000))
        window = int(req.get("window", 256))
        timeout_s = float(req.get("timeout_s", 60.0))
    except (TypeError, ValueError):
        return {"ok": False, "error": "n, window and timeout_s must be numbers"}
    if not 1 <= n <= 1_000_000 or not 1 <= window <= 4096 or not 0 < timeout_s <= 600:
        return {"ok": False, "error": "n 1..1e6, window 1..4096, timeout_s 0..600"}
    return await check_perf(role_of(agent), n, window, timeout_s)
