"""The control API: newline-delimited JSON over a Unix socket in the data dir (mode 0600).

Requests are one JSON object per line, at most ``MAX_REQUEST_BYTES``; the reply is one JSON
object per line. Commands:

- ``{"cmd": "status"}`` → the node's status (see ``Agent.status``);
- ``{"cmd": "reload-policy"}`` → re-read the policy file; peers are re-judged at their next
  re-attestation;
- ``{"cmd": "stop"}`` → graceful shutdown, as SIGTERM.

The socket's 0600 mode (and the 0700 data dir) limit it to the node's own user.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from node.agent import Agent

log = logging.getLogger("enclave_swarm.control")

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 5.0
MAX_CLIENTS = 16


# Commands added by components: name -> handler(agent, request) -> reply. A handler may be
# async (it then runs in the control connection's task) and must bound its own waits.
_COMMANDS: dict[str, Callable[[Agent, dict[str, Any]], Any]] = {}


def register_command(name: str, handler: Callable[[Agent, dict[str, Any]], Any]) -> None:
    """Add a control command (e.g. ``put``). Replies are JSON objects with ``ok``."""
    _COMMANDS[name] = handler


class NotRunning(Exception):
    """No node answers on this data dir's control socket."""


async def serve_control(agent: Agent, path: Path, *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the control API on ``path`` until cancelled; removes the socket on exit.

    A stale socket file (left by a killed node) is replaced: the caller holds the run lock, so
    no other live node can own it.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(MAX_CLIENTS)
    listener = trio.SocketListener(sock)
    limiter = trio.CapacityLimiter(MAX_CLIENTS)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, agent, stream, limiter)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        await listener.aclose()


async def _serve_one(agent: Agent, stream: trio.SocketStream, limiter: trio.CapacityLimiter) -> None:
    async with limiter, stream:
        buf = b""
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while b"\n" not in buf and len(buf) <= MAX_REQUEST_BYTES:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                buf += chunk
        line = buf.split(b"\n", 1)[0]
        reply = _dispatch(agent, line)
        if inspect.isawaitable(reply):
            reply = await reply
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")


def _dispatch(agent: Agent, line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST_BYTES:
        return {"ok": False, "error": "request too large"}
    try:
        req = json.loads(line)
    except ValueError:
        return {"ok": False, "error": "request is not JSON"}
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        return {"ok": False, "error": "expected {\"cmd\": ...}"}
    cmd = req["cmd"]
    if cmd == "status":
        return {"ok": True, "status": agent.status()}
    if cmd == "reload-policy":
        from node.runtime import reload_policy

        try:
            summary = reload_policy(agent)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "policy": summary}
    if cmd == "stop":
        agent.stop()
        return {"ok": True}
    handler = _COMMANDS.get(cmd)
    if handler is not None:
        result: dict[str, Any] = handler(agent, req)
        return result
    return {"ok": False, "error": f"unknown command {cmd[:40]!r}"}


def request(path: Path, cmd: dict[str, Any], *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Blocking client for the CLI. Raises NotRunning when nobody answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(str(path)) from None
        s.sendall(json.dumps(cmd).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise NotRunning(f"{path}: no answer within {timeout_s}s") from None
    finally:
        s.close()
    if not buf:
        raise NotRunning(f"{path}: closed without an answer")
    reply: dict[str, Any] = json.loads(buf)
    return reply
