"""The node's control API (node/control.py) for the operator's asyncio code.

The control socket is a Unix socket in the node's data dir, mode 0600: the operator reaches it
as the node's own user, from a container of the node's pod that mounts the same volume (the
StatefulSet's ``operator`` sidecar, deploy/kubernetes/base/statefulset.yaml). Each request is
the blocking client of node/control.py run in a worker thread, bounded by its timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from node.control import BadAnswer, NotRunning, request


class NodeUnavailable(Exception):
    """No node answers on the socket (starting, restarting, or gone): try again later."""


class NodeClient:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def call(self, cmd: dict[str, Any], *, timeout_s: float = 10.0) -> dict[str, Any]:
        """The node's reply (``ok`` false included: the caller reads ``error``).

        Raises:
            NodeUnavailable: nothing answers, or what answers is not a node.
        """
        try:
            return await asyncio.to_thread(request, self.socket_path, cmd, timeout_s=timeout_s)
        except (NotRunning, BadAnswer, OSError) as exc:
            raise NodeUnavailable(f"node control socket {self.socket_path}: {exc}") from None

    async def status(self) -> dict[str, Any]:
        reply = await self.call({"cmd": "status"})
        if not reply.get("ok"):
            raise NodeUnavailable(str(reply.get("error", "status refused")))
        status: dict[str, Any] = reply["status"]
        return status
