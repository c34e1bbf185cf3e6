"""The control API: newline-delimited JSON over a Unix socket in the data dir (mode 0600).

Requests are one JSON object per line, at most ``MAX_REQUEST_BYTES``; the reply is one JSON
object per line. Commands:

- ``{"cmd": "status"}`` → the node's status (see ``Agent.status``);
- ``{"cmd": "reload-policy"}`` → re-read the policy file; peers are re-judged at their next
  re-attestation;
- ``{"cmd": "stop"}`` → graceful shutdown, as SIGTERM.

The socket's 0600 mode (and the 0700 data dir) limit it to the node's own user.

Errors: a request that is too large, nested deeper than ``MAX_NESTING``, not JSON, not a
``{"cmd": ...}`` object or an unknown command, and any exception a command raises, get a JSON
error reply ``{"ok": false, "error": ...}``; the error is logged with its reason and counted as
``control_error`` with that reason (``too-large``, ``too-deep``, ``not-json``, ``bad-request``,
``unknown-command``, ``handler-error``, ``reply-error``). One bad request never stops the
server or the node: :func:`_serve_one` is the single boundary that catches everything.
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
# Deepest JSON nesting of a request; ours nest at most 3 deep. Checked before json.loads, whose
# C scanner recurses per level ('[' * 60000 raised RecursionError and stopped the node).
MAX_NESTING = 32
REQUEST_TIMEOUT_S = 5.0
MAX_CLIENTS = 16
# After accept() fails (out of file descriptors, ...), wait this long before the next try.
ACCEPT_RETRY_S = 0.1


class RequestError(Exception):
    """A request we refuse; ``reason`` is the counter's reason, the message the reply's error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and friends: the server must outlive them
                    agent.counters.inc("control_error", "accept")
                    log.warning("control socket accept failed: %s", exc)
                    await trio.sleep(ACCEPT_RETRY_S)
                    continue
                nursery.start_soon(_serve_one, agent, stream, limiter)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        await listener.aclose()


async def _serve_one(agent: Agent, stream: trio.SocketStream, limiter: trio.CapacityLimiter) -> None:
    """Answer one request on ``stream``: the single error boundary of the control API."""
    async with limiter, stream:
        try:
            reply = await _answer(agent, stream)
        except RequestError as exc:
            agent.counters.inc("control_error", exc.reason)
            log.warning("control request refused (%s): %s", exc.reason, exc)
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a command: loud and counted, but the node stays up
            agent.counters.inc("control_error", "handler-error")
            log.exception("control command failed")
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        try:
            data = json.dumps(reply, default=str).encode() + b"\n"
        except Exception as exc:  # e.g. a reply with a circular reference
            agent.counters.inc("control_error", "reply-error")
            log.error("control reply not serialisable: %s", exc)
            data = b'{"ok": false, "error": "internal error: reply not serialisable"}\n'
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(data)


async def _answer(agent: Agent, stream: trio.SocketStream) -> dict[str, Any]:
    buf = b""
    with trio.move_on_after(REQUEST_TIMEOUT_S):
        while b"\n" not in buf and len(buf) <= MAX_REQUEST_BYTES:
            try:
                chunk = await stream.receive_some(4096)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0]
    reply = _dispatch(agent, line)
    if inspect.isawaitable(reply):
        reply = await reply
    if not isinstance(reply, dict):
        raise TypeError(f"command reply is a {type(reply).__name__}, not an object")
    return reply


def _check_nesting(line: bytes) -> None:
    """Refuse JSON nested deeper than MAX_NESTING, without recursion (brackets inside strings
    do not count)."""
    if line.count(b"[") + line.count(b"{") <= MAX_NESTING:
        return
    depth = 0
    in_string = escaped = False
    for c in line:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_NESTING:
                raise RequestError("too-deep", f"request nested deeper than {MAX_NESTING}")
        elif c in (0x5D, 0x7D):
            depth -= 1


def _dispatch(agent: Agent, line: bytes) -> Any:
    """The reply to one request line (a dict, or an awaitable of one from an async command).

    Raises:
        RequestError: the request is refused (too large, too deep, not JSON, unknown command...).
        Exception: whatever a command raises; :func:`_serve_one` turns it into an error reply.
    """
    if len(line) > MAX_REQUEST_BYTES:
        raise RequestError("too-large", f"request larger than {MAX_REQUEST_BYTES} bytes")
    _check_nesting(line)
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RequestError("not-json", "request is not JSON") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise RequestError("bad-request", "expected {\"cmd\": ...}")
    cmd = req["cmd"]
    if cmd == "status":
        return {"ok": True, "status": agent.status()}
    if cmd == "stop":
        agent.stop()
        return {"ok": True}
    handler = _COMMANDS.get(cmd)
    if handler is not None:
        return handler(agent, req)
    raise RequestError("unknown-command", f"unknown command {cmd[:40]!r}")


class BadAnswer(ValueError):
    """The control socket cannot be used, or what answers on it is not a node (a ValueError,
    as json.loads raised before: callers that catch ValueError keep working)."""


def request(path: Path, cmd: dict[str, Any], *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Blocking client for the CLI.

    Raises:
        NotRunning: nobody answers (its message is the path alone when no socket listens there).
        BadAnswer: the path cannot be used (too long for AF_UNIX, ...), or what answered did
            not send a JSON object: the CLI says so in one line instead of a traceback.
    """
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
    except OSError as exc:  # "AF_UNIX path too long", a reset connection, ...
        raise BadAnswer(f"{path}: {exc.strerror or exc}") from None
    finally:
        s.close()
    if not buf:
        raise NotRunning(f"{path}: closed without an answer")
    try:
        reply = json.loads(buf)
    except ValueError:
        raise BadAnswer(f"{path}: the answer is not JSON (not an enclave-swarm node?)") from None
    if not isinstance(reply, dict):
        raise BadAnswer(f"{path}: the answer is not a JSON object (not an enclave-swarm node?)")
    return reply
