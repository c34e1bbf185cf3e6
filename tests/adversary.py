"""A compromised member for the attack tests (issue 19, item 8): a real, attested in-process
node (its TEE evidence verifies, it holds a raft id, it may even be a voter) whose code sends
whatever the wire allows instead of what the protocol says.

It never bypasses a receiver's checks: everything it sends goes through a real libp2p stream
to the honest node's real handlers, so a test that uses it shows what one compromised member
can and cannot do (docs/architecture.md, "Threat model")."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from libp2p.peer.id import ID

from consensus.certificate import Certificate, Checkpoint, Vouch, checkpoint_payload, state_digest
from consensus.state import REVOKED, SwarmState, encode_state
from overlay.framing import FrameReader, frame, read_message, write_message
from overlay.wire import encode


class Adversary:
    """Wraps a running node: a ``tests.manager.helpers.Member`` (agent + manager role) or a
    bare agent (gossip-only federations, ``tests.netutil.federation``)."""

    def __init__(self, member: Any) -> None:
        self.member = member
        self.agent = getattr(member, "agent", member)
        self.role = getattr(member, "role", None)
        self.peer_id: str = self.agent.peer_id

    # ------------------------------------------------------------------ gossip
    def forge_record(self, kind: str, subject: str, *, version: int | None = None,
                     payload: bytes = b"forged", ttl_s: float = 600.0) -> Any:
        """A record signed with its own (attested) identity: any slot, any version."""
        now = time.time()
        v = int(now * 1000) if version is None else version
        return self.agent.gossip.signer.sign(kind, subject, v, now, now + ttl_s, payload)

    def push_records(self, targets: Any, records: tuple[Any, ...]) -> None:
        """Send ``records`` straight down its gossip streams to each target (past its own
        dissemination core's checks)."""
        from overlay.messages_gossip import GossipPush

        for a in targets:
            self.agent.gossip._send(a.peer_id, GossipPush(records))
        self.agent.gossip._poke()

    def send_gossip(self, targets: Any, *messages: Any) -> None:
        """Send raw gossip-protocol messages (e.g. SWIM claims) to each target."""
        for a in targets:
            for m in messages:
                self.agent.gossip._send(a.peer_id, m)

    # ------------------------------------------------------------------ what it serves
    def serve_state(self, response: Any) -> None:
        """Answer every state request with ``response`` (a StateResponse of its choosing)."""
        assert self.role is not None, "a node without a manager role serves no state"
        self.role._state_reply = lambda pid, req: response

    # ------------------------------------------------------------------ what it sends
    async def send(self, victim: Any, proto: str, *messages: Any) -> None:
        """Open ``proto`` to ``victim`` and write ``messages``, framed, then close."""
        stream = await self.agent._open_stream(ID.from_base58(victim.agent.peer_id), proto)
        await stream.write(b"".join(frame(encode(m)) for m in messages))
        await stream.close()

    async def ask(self, victim: Any, proto: str, message: Any, reply_type: Any,
                  timeout_s: float = 10.0) -> Any:
        """One request/response on ``proto``; returns the decoded reply."""
        stream = await self.agent._open_stream(ID.from_base58(victim.agent.peer_id), proto)
        await write_message(stream, message, timeout_s=timeout_s)
        return await read_message(FrameReader(stream), reply_type, timeout_s=timeout_s)

    # ------------------------------------------------------------------ forgeries
    def forged_takeover(self, honest: SwarmState) -> SwarmState:
        """``honest`` rewritten: the adversary manages a later term alone, everyone else is
        revoked."""
        members = {k: (m if k == self.peer_id
                       else dataclasses.replace(m, status=REVOKED, reason="forged"))
                   for k, m in honest.members.items()}
        return dataclasses.replace(honest, members=members, council=(self.peer_id,),
                                   manager_term=honest.manager_term + 5, manager_id=self.peer_id)

    def self_certified(self, st: SwarmState, index: int, voters: tuple[str, ...]) -> Certificate:
        """A certificate for ``st`` at ``index`` naming ``voters``, vouched by itself alone."""
        from node.manager_checks import federation_id

        cp = Checkpoint(federation_id(st) or "", index, state_digest(encode_state(st)),
                        tuple(sorted(voters)), st.manager_term, st.manager_id)
        return Certificate(cp, (Vouch(self.peer_id, self.agent._identity.sign(checkpoint_payload(cp))),))
