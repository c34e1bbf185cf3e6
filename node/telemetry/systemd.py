"""The service manager's notification protocol (``sd_notify``), without a dependency.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a path of an ``AF_UNIX``
datagram socket, or an abstract one written with a leading ``@``. Each notification is one
datagram of ``KEY=VALUE`` lines. The node sends:

* ``READY=1`` (with ``STATUS=``) once it listens, every service is up and the control socket
  is open: systemd's start job completes then, and units ordered after it start;
* ``STATUS=...`` (what ``systemctl status`` shows) whenever the summary changes, at most
  every ``STATUS_EVERY_S``: attested peers, role, term;
* ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` (set by ``WatchdogSec=``, and only for
  this process when ``$WATCHDOG_PID`` is unset or ours), but only while the event loop is
  healthy: it lost less than half the watchdog interval to stalls over the last interval
  (node/loop_health.py). A loop that stays stalled, or a task that never runs, stops the
  petting and systemd restarts the node after ``WatchdogSec``;
* ``STOPPING=1`` when the node begins to leave.

A send that fails (no listener, a full queue) is dropped and counted, never waited for.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import trio

log = logging.getLogger("enclave_swarm.telemetry")

STATUS_EVERY_S = 5.0
MAX_DATAGRAM = 4096


def socket_address(env: Mapping[str, str]) -> str | None:
    """``$NOTIFY_SOCKET`` as a socket address (``@name`` -> abstract ``\\0name``), or None
    when unset or of a kind we do not speak (``vsock:``)."""
    raw = env.get("NOTIFY_SOCKET", "")
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog interval systemd expects pets within, or None (no watchdog for us)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6


class Notifier:
    """Sends notifications to one socket address; never blocks, never raises."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier | None:
        addr = socket_address(os.environ if env is None else env)
        return None if addr is None else cls(addr)

    def notify(self, **fields: str | int) -> bool:
        text = "\n".join(f"{k.upper()}={_one_line(str(v))}" for k, v in fields.items())
        data = text.encode()[:MAX_DATAGRAM]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(data, self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed in (1, 10) or self.failed % 1000 == 0:
                log.warning("sd_notify to %r failed (%d so far): %s", self.address.replace("\0", "@"),
                            self.failed, exc)
            return False
        self.sent += 1
        return True


def _one_line(v: str) -> str:
    return v.replace("\n", " ")[:1000]


def status_line(agent: Any) -> str:
    st = agent.peers.attested()
    line = f"{len(st)} attested peers"
    try:
        from node.manager import role_of

        role = role_of(agent)
        term, _ = role.term_and_commit()
        line += f"; {role.role_name()}, term {term}"
    except LookupError:
        pass
    return line


def loop_healthy(agent: Any, interval_s: float) -> bool:
    """The loop lost less than half of the last watchdog interval to stalls."""
    return bool(agent.loop_health.stalled_s(agent._now() - interval_s) < interval_s / 2)


async def supervise(agent: Any, notifier: Notifier, *, watchdog_s: float | None,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run once the node is up (after ``agent.run`` started): READY, then STATUS and WATCHDOG
    until the node stops, then STOPPING."""
    last_status = status_line(agent)
    notifier.notify(ready=1, status=f"listening; {last_status}", mainpid=os.getpid())
    task_status.started()
    tick = min(1.0, watchdog_s / 2) if watchdog_s else 1.0
    next_pet = trio.current_time()
    next_status = trio.current_time() + STATUS_EVERY_S
    withheld = 0
    try:
        while not agent.stop_requested:
            now = trio.current_time()
            if watchdog_s is not None and now >= next_pet:
                if loop_healthy(agent, watchdog_s):
                    notifier.notify(watchdog=1)
                    withheld = 0
                else:
                    withheld += 1
                    agent.counters.inc("watchdog_withheld", "loop-stalled")
                    if withheld == 1:
                        log.warning("event loop lost over half the watchdog interval (%.1fs) to "
                                    "stalls: not petting the systemd watchdog", watchdog_s)
                next_pet = now + watchdog_s / 2
            if now >= next_status:
                line = status_line(agent)
                if line != last_status:
                    notifier.notify(status=line)
                    last_status = line
                next_status = now + STATUS_EVERY_S
            with trio.move_on_after(tick):
                await agent.wait_stop_requested()
    finally:
        # Sent even when cancelled (the node's nursery closing): a non-blocking datagram.
        notifier.notify(stopping=1, status="leaving the federation")
