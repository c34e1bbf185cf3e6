"""Certified state on a real node: voters vouch, the manager certifies, everyone else verifies.

Theory of operation
-------------------
The pure rules are in ``consensus/certificate.py``; this is their driver, one per
:class:`node.manager.ManagerRole`.

- **Voters remember** the states their Raft node applied (the last :data:`HISTORY` indices,
  by reference: states are immutable) and **vouch** on request. A ``CertifyRequest`` names a
  checkpoint; the voter waits (at most :data:`VOUCH_WAIT_S`) until it has applied that index,
  recomputes the checkpoint from its own state and its own log's configuration at that index,
  and signs only an exact match. It answers only the leader its own Raft node follows.
- **The manager certifies** its applied state at most every ``announce_min_interval_s``: it
  asks every voter of the configuration at that index, at once, and keeps the certificate when
  a majority of those voters, and of the previous certificate's voters, vouched (so that the
  chain stays verifiable for followers that hold the previous one). The request carries the
  previous certificate, so voters keep the chain too and a successor manager carries it on.
- **Everyone serves** its latest certified state with the chain that proves it
  (:meth:`Chain.proof_after`), and **adopts** a served state only when
  :func:`consensus.certificate.verify_chain` accepts its proof from the node's own anchor (the
  voters of its own Raft configuration, or of the certificate it adopted last) and the bytes
  hash to the certified digest. Anything else is refused, logged with the sender and counted
  (``state_rejected{reason}``).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import trio

from consensus.certificate import (
    Certificate,
    Chain,
    Checkpoint,
    Vouch,
    checkpoint_payload,
    state_digest,
    verify_certificate,
    verify_chain,
)
from consensus.state import SwarmState, encode_state
from node.keys.base import KeyUnavailable

log = logging.getLogger("enclave_swarm.manager")

HISTORY = 64            # applied states a voter keeps to vouch for (by reference)
VOUCH_WAIT_S = 2.0      # a voter waits this long to apply the index it is asked about


class CertState:
    """Certificates, the states they name, and the voter-side history of one node."""

    def __init__(self, role: Any) -> None:
        self.role = role
        self.chain = Chain()
        self.cert_state: tuple[int, bytes] | None = None  # (index, encoding) of chain.latest
        self.history: collections.OrderedDict[int, SwarmState] = collections.OrderedDict()
        self._digests: dict[int, bytes] = {}
        self.stats = {"certified": 0, "vouched": 0, "vouch_refused": 0, "adopted": 0,
                      "rejected": 0}

    # ------------------------------------------------------------------ voter side
    def remember(self, index: int, st: SwarmState) -> None:
        """Record the state our Raft node applied at ``index``."""
        self.history[index] = st
        self.history.move_to_end(index)
        while len(self.history) > HISTORY:
            old, _ = self.history.popitem(last=False)
            self._digests.pop(old, None)

    def forget(self) -> None:
        """Our Raft node is gone (retired, left): we can no longer vouch."""
        self.history.clear()
        self._digests.clear()

    def _encoded(self, index: int) -> bytes | None:
        st = self.history.get(index)
        return None if st is None else encode_state(st)

    def checkpoint_at(self, index: int) -> Checkpoint | None:
        """Our checkpoint of the state we applied at ``index`` (None if we cannot name it:
        not applied, forgotten, compacted past, or a voter we cannot map to a peer id)."""
        from node.manager_checks import federation_id

        node = self.role.node
        st = self.history.get(index)
        if node is None or st is None:
            return None
        lg = node.raft.log
        if index > lg.committed or index < lg.snapshot.meta.index:
            return None
        voters = []
        for rid in lg.conf_at(index).voters:
            m = st.by_raft_id(rid)
            if m is None:
                return None
            voters.append(m.node_id)
        fed = federation_id(st)
        if not fed or not voters:
            return None
        digest = self._digests.get(index)
        if digest is None:
            data = self._encoded(index)
            assert data is not None
            digest = self._digests[index] = state_digest(data)
        return Checkpoint(fed, index, digest, tuple(sorted(voters)), st.manager_term, st.manager_id)

    async def vouch(self, pid: str, cp: Checkpoint, prev: Certificate | None) -> tuple[bytes, str]:
        """Sign ``cp`` if it is exactly what we applied; ``(signature, "")`` or ``(b"", why)``."""
        role = self.role
        node = role.node
        if node is None or not role.is_voter():
            return self._refuse("not-a-voter")
        if role._raft_to_peer.get(node.raft.lead or 0) != pid:
            return self._refuse("not-my-leader")
        with trio.move_on_after(VOUCH_WAIT_S):
            while role.state_index < cp.index and role.node is node:
                await role._progress.wait()
        if prev is not None:
            self.take(prev)
        mine = self.checkpoint_at(cp.index)
        if mine is None:
            return self._refuse("index-unknown")
        if mine != cp:
            return self._refuse("mismatch")
        self.stats["vouched"] += 1
        try:
            return role.agent._identity.sign(checkpoint_payload(cp)), ""
        except KeyUnavailable:  # our token is gone (node/keys): no vouch until it is back
            return self._refuse("key-unavailable")

    def _refuse(self, why: str) -> tuple[bytes, str]:
        self.stats["vouch_refused"] += 1
        self.role.agent.counters.inc("vouch_refused", why)
        return b"", why

    def take(self, cert: Certificate) -> bool:
        """A voter keeps a certificate the manager sent it, if it verifies against what the
        voter holds (the chain it had, else its own configuration's voters)."""
        anchor = self.chain.latest.checkpoint.voters if self.chain.latest else self.own_voters()
        if verify_certificate(cert, anchor, self.role.public_key_of, self.role.verify) is not None:
            return False
        return self._keep(cert, self._encoded(cert.checkpoint.index))

    def _keep(self, cert: Certificate, data: bytes | None) -> bool:
        if not self.chain.add(cert):
            return False
        if data is not None and state_digest(data) == cert.checkpoint.digest:
            self.cert_state = (cert.checkpoint.index, data)
        return True

    def own_voters(self) -> tuple[str, ...]:
        """The peer ids of our own Raft node's committed configuration (empty if none)."""
        role = self.role
        node = role.node
        if node is None:
            return ()
        lg = node.raft.log
        out = []
        for rid in lg.conf_at(lg.committed).voters:
            pid = role._raft_to_peer.get(rid)
            if pid is None:
                return ()
            out.append(pid)
        return tuple(sorted(out))

    # ------------------------------------------------------------------ manager side
    async def certify(self) -> Certificate | None:
        """Certify our applied state (leader only). Returns the new certificate or None."""
        role = self.role
        index = role.state_index
        latest = self.chain.latest
        if latest is not None and latest.checkpoint.index >= index:
            return None
        cp = self.checkpoint_at(index)
        if cp is None:
            return None
        payload = checkpoint_payload(cp)
        try:
            vouches = [Vouch(role.me, role.agent._identity.sign(payload))] if role.me in cp.voters else []
        except KeyUnavailable:  # our token is gone (node/keys): others may still vouch
            vouches = []
        anchor = latest.checkpoint.voters if latest is not None else ()

        def enough() -> bool:
            return verify_certificate(Certificate(cp, tuple(vouches)), anchor, role.public_key_of,
                                      role.verify) is None

        async def ask(pid: str, done: trio.CancelScope) -> None:
            sig = await role.ask_vouch(pid, cp, latest)
            if sig:
                vouches.append(Vouch(pid, sig))
                if enough():
                    done.cancel()  # a quorum of both voter sets: stragglers cost nothing more

        # Only voters we can reach now are asked: a crashed voter would hold every round up
        # for the request timeout.
        reachable = [p for p in cp.voters if p != role.me and role.agent.peers.is_attested(p)]
        if not enough():
            async with trio.open_nursery() as nursery:
                for pid in reachable:
                    nursery.start_soon(ask, pid, nursery.cancel_scope)
        cert = Certificate(cp, tuple(vouches))
        why = verify_certificate(cert, anchor, role.public_key_of, role.verify)
        if why is not None:
            role.agent.counters.inc("certify_failed", "no-quorum")
            log.debug("could not certify index %d: %s", index, why)
            return None
        self._keep(cert, self._encoded(index))
        self.stats["certified"] += 1
        return cert

    # ------------------------------------------------------------------ follower side
    def anchor(self) -> tuple[str, int, tuple[str, ...]]:
        """(federation, index, voters) this node trusts, to verify a served chain from."""
        from node.manager_checks import federation_id

        role = self.role
        st, idx = role.view()
        fed = federation_id(st) or role.settings.federation
        latest = self.chain.latest
        if role.node is not None and role.is_voter() and role.state_index >= idx:
            voters = self.own_voters()
            if voters:
                return fed, role.state_index, voters
        if latest is not None:
            return fed, latest.checkpoint.index, latest.checkpoint.voters
        return fed, idx, self.own_voters()

    def verify_served(self, proof: tuple[Certificate, ...], index: int,
                      data: bytes) -> tuple[Certificate | None, str]:
        """Check a served state (``data`` at ``index``) and its proof from our anchor."""
        fed, at, voters = self.anchor()
        last, why = verify_chain(proof, federation=fed, anchor_index=at, anchor_voters=voters,
                                 public_key_of=self.role.public_key_of, verify=self.role.verify)
        if last is None:
            return None, why
        cp = last.checkpoint
        if cp.index != index:
            return None, "proof is for another index"
        if state_digest(data) != cp.digest:
            return None, "state does not hash to the certified digest"
        return last, ""

    def adopted(self, proof: tuple[Certificate, ...], data: bytes) -> None:
        """Keep the proof of a state we adopted (every certificate in it verified)."""
        for c in proof[:-1]:
            self.chain.add(c)
        self._keep(proof[-1], data)
        self.stats["adopted"] += 1

    def serve(self, have_index: int) -> tuple[int, bytes, tuple[Certificate, ...]]:
        """(index, state bytes, proof) of our latest certified state if newer than
        ``have_index``, else (0, b"", ())."""
        latest = self.chain.latest
        cs = self.cert_state
        if latest is None or cs is None or cs[0] != latest.checkpoint.index or cs[0] <= have_index:
            return 0, b"", ()
        return cs[0], cs[1], self.chain.proof_after(have_index)
