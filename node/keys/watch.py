"""The key watch: a node service that notices a token going away and coming back.

Every ``interval_s`` it calls the provider's ``check()`` in a worker thread (PKCS#11 calls
block): a live token is probed with one signature, a lost one is re-opened
(node/keys/pkcs11.py). Transitions are logged once each; ``status`` shows the provider's
state (``keys``). While the token is gone the node signs nothing and withholds its evidence
(node/agent.py), so its peers quarantine it; when it is back they admit it again at their
next attestation, and nothing the node holds was lost (the keys never left the token, the
shard store and Raft state are on disk).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from node.agent import Agent

log = logging.getLogger("enclave_swarm.keys")

WATCH_INTERVAL_S = 2.0


def attach(agent: Agent, data_dir: object = None, interval_s: float = WATCH_INTERVAL_S) -> None:
    """Add the key watch to ``agent`` if its keys can go away (a token)."""
    keys = agent.keys
    if keys is None or not callable(getattr(keys, "check", None)) or keys.backend == "file":
        return

    async def watch(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        was = bool(keys.available)
        while True:
            await trio.sleep(interval_s)
            ok = await trio.to_thread.run_sync(keys.check)
            if was and not ok:
                agent.counters.inc("keys_lost")
                log.error("identity key unavailable: %s; not signing, evidence withheld until it is back",
                          keys.reason)
            elif ok and not was:
                agent.counters.inc("keys_recovered")
                log.warning("identity key available again (token %r); signing and attesting again",
                            getattr(getattr(keys, "config", None), "token", "?"))
            was = ok

    agent.add_service(watch)
