"""What every node offers for tasks, on a real node: publish ours, keep each node's newest.

Theory of operation
-------------------
- **Publish.** At start, every :data:`REFRESH_S`, and early (at most every
  :data:`CHECK_S`) when its measurements moved (a peer measured or gone, a figure doubled or
  halved: ``capability.links_moved``), the node publishes its capability record
  (``node/tasks/capability.py``: built from the ``[tasks]`` config and what the host has,
  signed with the node's identity key, ``seq`` = milliseconds of the wall clock so that a
  restarted node's record supersedes its old one, ``links`` = the RTT and transfer rate its
  peer table measured toward its attested peers) as a gossip record of kind ``capability``
  (``overlay/records.py``: a self kind, subject = issuer), living :data:`TTL_S`.
- **Receive.** The dissemination core has already checked the gossip record (its signature,
  an attested and unrevoked issuer, subject = issuer, bounds). The payload is then decoded
  with the wire schema and kept only if it names its issuer (``node_id``), carries that
  peer's key, its own signature verifies, and its ``seq`` is newer than the one held.
  Anything else is dropped, logged and counted (``capability_rejected{reason}``).
- **Read.** :meth:`Offers.offers` gives the scheduler the newest offer of every node that is
  attested and unrevoked here now (ours included), as ``consensus.scheduler.Offer``;
  :meth:`Offers.measurements` the links of those same records as the scheduler's
  ``Measurements`` (so every node that holds the same records holds the same table, which a
  council member needs to re-run a placement). Status shows them under ``capabilities``.

A node can lie about its own resources and prices (nothing measures them yet): the scheduler
takes TEE kind, provider and region from the attested, committed member record instead, and
the task flow's results are checked, not trusted (docs/tasks.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from consensus.scheduler import Measurements, Offer
from node.keys.base import KeyUnavailable
from node.tasks.capability import (
    CapabilityRecord,
    Link,
    build_capability,
    choose_links,
    detect,
    links_moved,
    measurements_of,
    sign_capability,
    to_offer,
    verify_capability,
)
from overlay.errors import RemoteProtocolError
from overlay.host import public_key_of_peer
from overlay.records import KIND_CAPABILITY, Record
from overlay.wire import decode, encode

log = logging.getLogger("enclave_swarm.tasks")

REFRESH_S = 60.0     # republish this often (a changed config shows within one period)
CHECK_S = 2.0        # look this often whether the measurements moved enough to republish
TTL_S = 3 * REFRESH_S
MAX_OFFERS = 65536   # nodes whose offer we keep (one each; attested peers only)
AGENT_VERSION = "0.1.0"


class Offers:
    """The capability records of one node's federation (see the module docstring)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._held: dict[str, CapabilityRecord] = {}
        self.published = 0

    # ------------------------------------------------------------------ publish
    def own_record(self, now: float | None = None) -> CapabilityRecord:
        a = self.agent
        seq = int((time.time() if now is None else now) * 1000)
        rec = build_capability(a.config.tasks, detect(), node_id=a.peer_id,
                               tee_kind=str(a.provider.kind), seq=seq, agent_version=AGENT_VERSION,
                               links=self.links())
        return sign_capability(a._identity, rec)

    def links(self) -> tuple[Link, ...]:
        """What this node measured toward its attested, unrevoked peers (its peer table)."""
        peers = self.agent.peers
        return choose_links(self.agent.peer_id, ((p.peer_id, p.rtt_ms, p.kib_s)
                                                 for p in peers.attested()
                                                 if not peers.is_revoked(p.peer_id)))

    def publish(self) -> bool:
        try:
            rec = self.own_record()
        except KeyUnavailable:  # our token is gone (node/keys): publish when it is back
            self.agent.counters.inc("sign_unavailable", "capability")
            return False
        ok = bool(self.agent.gossip.publish(KIND_CAPABILITY, self.agent.peer_id, encode(rec),
                                            ttl_s=TTL_S))
        if ok:
            self.published += 1
            self._keep(rec)
        else:
            self.agent.counters.inc("capability_publish_refused")
        return ok

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Publish at start, then every :data:`REFRESH_S`, or sooner when the links moved."""
        task_status.started()
        while True:
            self.publish()
            last = trio.current_time()
            while trio.current_time() - last < REFRESH_S:
                await trio.sleep(CHECK_S)
                held = self._held.get(self.agent.peer_id)
                if held is None or links_moved(held.links, self.links()):
                    self.agent.counters.inc("capability_republished", "links-moved")
                    break

    # ------------------------------------------------------------------ receive
    def on_record(self, rec: Record) -> None:
        """Gossip callback (in the gossip loop: decode and check only)."""
        if rec.issuer == self.agent.peer_id:
            return
        try:
            cap = decode(rec.payload, CapabilityRecord)
        except RemoteProtocolError as exc:
            self._refuse(rec.issuer, f"payload-{exc.reason}")
            return
        why = self.check(rec.issuer, cap)
        if why is not None:
            self._refuse(rec.issuer, why)
            return
        self._keep(cap)

    @staticmethod
    def check(issuer: str, cap: CapabilityRecord) -> str | None:
        """None if ``cap`` may be kept as ``issuer``'s offer, else a short reason."""
        if cap.node_id != issuer:
            return "not-its-own"
        try:
            key = public_key_of_peer(issuer)
        except Exception:  # a peer id that embeds no key cannot have signed anything
            return "no-key"
        if cap.issuer != key:
            return "key-mismatch"
        if not verify_capability(cap):
            return "bad-signature"
        return None

    def _keep(self, cap: CapabilityRecord) -> None:
        held = self._held.get(cap.node_id)
        if held is not None and held.seq >= cap.seq:
            return
        if held is None and len(self._held) >= MAX_OFFERS:
            self.agent.counters.inc("capability_dropped", "table-full")
            return
        self._held[cap.node_id] = cap

    def _refuse(self, issuer: str, reason: str) -> None:
        self.agent.counters.inc("capability_rejected", reason)
        log.warning("refused the capability record of %s: %s", issuer, reason,
                    extra={"peer": issuer, "reason": reason})

    # ------------------------------------------------------------------ read
    def _live(self, node_id: str) -> bool:
        peers = self.agent.peers
        return node_id == self.agent.peer_id or (peers.is_attested(node_id)
                                                 and not peers.is_revoked(node_id))

    def record(self, node_id: str) -> CapabilityRecord | None:
        """The newest capability record of ``node_id`` while it is live here (else None)."""
        cap = self._held.get(node_id)
        return cap if cap is not None and self._live(node_id) else None

    def offers(self) -> dict[str, Offer]:
        """The newest offer of every node attested and unrevoked here now (ours included)."""
        return {n: to_offer(c) for n, c in self._held.items() if self._live(n)}

    def measurements(self) -> Measurements:
        """The links of the offers :meth:`offers` returns, as the scheduler's table."""
        return measurements_of(c for n, c in self._held.items() if self._live(n))

    def status(self) -> dict[str, Any]:
        return {n: {"cores": c.cores, "memory_mib": c.memory_mib, "tee": c.tee_kind,
                    "accelerators": list(c.accelerators), "region": c.region,
                    "provider": c.provider, "price_core_s": c.price_core_s,
                    "price_gib": c.price_gib, "seq": c.seq,
                    "links": {lk.peer: {"rtt_ms": lk.rtt_ms, "kib_s": lk.kib_s} for lk in c.links}}
                for n, c in sorted(self._held.items()) if self._live(n)}


def attach(agent: Any, data_dir: Any = None) -> Offers:
    """node.runtime extension (after node.gossip): publish and collect capability records."""
    offers = Offers(agent)
    g = getattr(agent, "gossip", None)
    if g is None:
        return offers  # no gossip, no offers: the node runs no tasks
    g.subscribe(KIND_CAPABILITY, offers.on_record)
    agent.add_service(offers.run)
    agent.add_status("capabilities", offers.status)
    agent.offers = offers
    return offers
