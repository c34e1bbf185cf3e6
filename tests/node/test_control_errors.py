"""The control socket of a real running node: every bad request gets a JSON error reply, is
counted, and the node keeps answering ``status`` (``'[' * 60000`` used to stop the node)."""

from __future__ import annotations

import contextlib
import json
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from node import control
from node.datadir import DataDir
from tests.netutil import make_agent


def _raw(path: Path, payload: bytes, *, timeout_s: float = 15.0) -> dict[str, Any]:
    """Send raw bytes (from a thread, so a large payload cannot block reading the reply)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    s.connect(str(path))

    def send() -> None:
        with contextlib.suppress(OSError):  # the node stops reading a too-large request
            s.sendall(payload)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    buf = b""
    try:
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        sender.join(timeout_s)
        s.close()
    reply: dict[str, Any] = json.loads(buf)
    return reply


def _boom(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a bug in a command")


async def _async_boom(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    await trio.sleep(0)
    raise KeyError("a bug in an async command")


def _not_a_dict(agent: Any, req: dict[str, Any]) -> Any:
    return ["not", "an", "object"]


def _unserialisable(agent: Any, req: dict[str, Any]) -> Any:
    loop: dict[str, Any] = {"ok": True}
    loop["self"] = loop
    return loop


BAD_REQUESTS = [
    (b"[" * 60000 + b"\n", "too-deep"),
    (b'{"cmd": "status", "x": ' + b"{" * 33 + b"}" * 33 + b"}\n", "too-deep"),
    (b'{"cmd": "' + b"x" * (200 * 1024) + b'"}\n', "too-large"),
    (b"x" * (4 * 1024 * 1024), "too-large"),  # no newline at all
    (b"{not json\n", "not-json"),
    (b"\xff\xfe\n", "not-json"),
    (b"\n", "not-json"),
    (b"[1, 2]\n", "bad-request"),
    (b'{"cmd": 7}\n', "bad-request"),
    (b'{"cmd": "no-such-command"}\n', "unknown-command"),
    (b'{"cmd": "test-boom"}\n', "handler-error"),
    (b'{"cmd": "test-async-boom"}\n', "handler-error"),
    (b'{"cmd": "test-not-a-dict"}\n', "handler-error"),
    (b'{"cmd": "test-unserialisable"}\n', "reply-error"),
]


@pytest.fixture
def commands(monkeypatch):
    monkeypatch.setitem(control._COMMANDS, "test-boom", _boom)
    monkeypatch.setitem(control._COMMANDS, "test-async-boom", _async_boom)
    monkeypatch.setitem(control._COMMANDS, "test-not-a-dict", _not_a_dict)
    monkeypatch.setitem(control._COMMANDS, "test-unserialisable", _unserialisable)


async def test_bad_requests_get_error_replies_and_the_node_keeps_serving(tmp_path, commands):
    agent = make_agent(tmp_path, "node")
    data_dir = tmp_path / "dd"
    data_dir.mkdir(mode=0o700)
    agent.data_dir = DataDir(data_dir)
    sock = agent.data_dir.socket_path
    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            await n.start(agent.run)
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            for payload, reason in BAD_REQUESTS:
                before = agent.counters.get("control_error", reason)
                reply = await trio.to_thread.run_sync(_raw, sock, payload)
                assert reply["ok"] is False, (reason, reply)
                assert isinstance(reply["error"], str) and reply["error"]
                assert agent.counters.get("control_error", reason) == before + 1, reason
                status = await trio.to_thread.run_sync(_raw, sock, b'{"cmd": "status"}\n')
                assert status["ok"] is True and status["status"]["peer_id"] == agent.peer_id
            # A deeply nested string is not nesting: brackets inside strings do not count.
            reply = await trio.to_thread.run_sync(
                _raw, sock, json.dumps({"cmd": "status", "note": "[" * 1000}).encode() + b"\n")
            assert reply["ok"] is True
            assert agent.counters.get("control_error") == len(BAD_REQUESTS)
            assert not agent.stopping
            agent.stop()
