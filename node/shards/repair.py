"""Repair of a lost shard by masked resharing: the holder's side (a helper that contributes
its masked share towards the new holder's) and the owner's (choosing the new holder, inviting
the helpers, re-signing the manifest), a collaborator of :class:`node.shards.service.ShardService`
which owns the state it uses. The protocol and its proofs are in docs/shards.md ("Repair") and
``node/shards/resharing.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.shards.crypto import FragmentCorrupt
from node.shards.errors import ALREADY_STORED, ShardServiceError
from node.shards.gf256 import KeyShare
from node.shards.manifest import Manifest, SignedManifest, sign_manifest, verify_ed25519
from node.shards.messages import (
    ReshareContribution,
    ReshareInvite,
    ReshareMaskSeed,
    ShardAck,
    ShardOffer,
    ShardOfferReply,
    invite_transcript,
)
from node.shards.placement import PlacementError, choose_holders
from node.shards.resharing import build_contribution, helper_mask, new_mask_seed, regenerate_fragment
from node.shards.store import ShardNotFound
from overlay.errors import RemoteProtocolError
from overlay.framing import close_stream
from overlay.wire import decode

if TYPE_CHECKING:
    from node.shards.service import ShardService, _Finish

log = logging.getLogger("enclave_swarm.shards")


class Repairer:
    """The resharing duties of one :class:`ShardService`."""

    def __init__(self, svc: ShardService) -> None:
        self.svc = svc

    async def serve_invite(self, stream: Any, pid: str, invite: ReshareInvite) -> None:
        """Helper: send mask seeds up, wait for seeds from below, send one contribution."""
        mine: tuple[int, Manifest] | None = None
        for x in invite.helpers_x:
            with contextlib.suppress(ShardNotFound):
                mine = (x, await trio.to_thread.run_sync(self.svc.store.manifest, invite.object_id, x - 1))
                break
        if mine is None:
            raise RemoteProtocolError("invalid", "invited as helper but holds no shard of the object")
        my_x, m = mine
        transcript = invite_transcript(
            invite.session_id, invite.object_id, invite.target_x, invite.helpers_x, invite.new_holder_peer_id
        )
        if not verify_ed25519(m.owner, invite.signature, transcript):
            raise RemoteProtocolError("invalid", "reshare invite not signed by the owner")
        if (
            len(invite.helpers_x) != m.k
            or invite.target_x > m.n
            or invite.new_holder_peer_id == self.svc.agent.peer_id
        ):
            raise RemoteProtocolError("invalid", "reshare invite inconsistent with the manifest")
        await self.help_reshare(stream, invite.session_id, invite.object_id, my_x, invite.target_x,
                                 invite.helpers_x, invite.new_holder_peer_id, lambda x: m.holder_of(x - 1))

    async def help_reshare(
        self,
        stream: Any,
        session_id: bytes,
        object_id: bytes,
        my_x: int,
        target_x: int,
        helpers_x: tuple[int, ...],
        new_holder: str,
        holder_of: Callable[[int], str],
    ) -> None:
        """Helper at ``my_x`` (authorised by the caller): send mask seeds up, wait for seeds from
        below (each only from the peer ``holder_of`` names for that x), send one masked
        contribution to ``new_holder``, acknowledge on ``stream``."""
        share = await trio.to_thread.run_sync(self.svc.store.read_share, object_id, my_x - 1)
        box = self.svc._mailbox(session_id)
        try:
            seeds: dict[int, bytes] = {}
            for b in sorted(x for x in helpers_x if x > my_x):
                seeds[b] = new_mask_seed()
                await self.deliver(holder_of(b), ReshareMaskSeed(session_id, my_x, b, seeds[b]))
            lower = {a for a in helpers_x if a < my_x}

            def seed(sender: str, msg: Any) -> tuple[int, bytes] | None:
                if (
                    not isinstance(msg, ReshareMaskSeed)
                    or msg.to_x != my_x
                    or msg.from_x not in lower
                    or holder_of(msg.from_x) != sender
                    or msg.from_x in seeds
                ):
                    return None
                return msg.from_x, msg.seed

            if not await self.svc._collect(box, seed, seeds, lambda: lower <= set(seeds), "seed"):
                raise RemoteProtocolError("timeout", "mask seeds from the other helpers did not arrive")
        finally:
            self.svc._drop_mailbox(session_id)
        mask = helper_mask(my_x, seeds, session_id, helpers_x)
        value = build_contribution(share, helpers_x, target_x, mask)
        await self.deliver(new_holder, ReshareContribution(session_id, object_id, my_x, target_x, value))
        log.info(
            "sent reshare contribution for %s (x=%d → x=%d on %s)",
            object_id.hex(), my_x, target_x, new_holder,
        extra={"peer": new_holder})
        await self.svc._send(stream, ShardAck(session_id, True, "", 0))

    async def deliver(self, pid: str, msg: ReshareMaskSeed | ReshareContribution) -> None:
        """Send one mailbox message to an attested peer and wait for its acknowledgement."""
        if not self.svc.agent.peers.is_attested(pid):
            raise RemoteProtocolError("unavailable", f"peer {pid} is not attested")
        await self._send_acked(pid, msg)

    async def _send_acked(self, pid: str, msg: ReshareMaskSeed | ReshareContribution | ReshareInvite) -> None:
        """One message on a new stream to ``pid``, then its session's acknowledgement."""
        stream, reader = await self.svc._open(pid)
        try:
            await self.svc._send(stream, msg)
            await self.svc._expect_ack(reader, msg.session_id)
        finally:
            await close_stream(stream)

    # ------------------------------------------------------------------ owner: repair

    async def tick(self) -> None:
        """Owner-side repair: the fallback for nodes without a manager (single-node dev runs,
        tests of this layer alone) and for objects not registered with the manager."""
        now = trio.current_time()
        for oid, (_, m) in list(self.svc._objects.items()):
            # Under a manager, only objects whose registration failed (a holder revoked between
            # placement and commit) are repaired here; once repaired they register.
            if self.svc.managed.owned_placement(m) is not None or (
                self.svc.managed.active() and oid not in self.svc.managed._unregistered
            ):
                continue
            for p in m.placement:
                pid = p.peer_id
                if self.svc.agent.peers.is_attested(pid):
                    self.svc._down_since.pop(pid, None)
                    continue
                since = self.svc._down_since.setdefault(pid, now)
                revoked = self.svc.agent.peers.is_revoked(pid)
                if not revoked and now - since < self.svc.repair_grace_s:
                    continue
                if self.svc._repair_backoff.get((oid, pid), -math.inf) > now:
                    continue
                reason = "revoked" if revoked else f"unavailable for {now - since:.0f}s"
                try:
                    await self.repair(oid, pid, reason)
                except (ShardServiceError, RemoteProtocolError, OSError) as exc:
                    self.svc._repair_backoff[(oid, pid)] = now + max(5.0, self.svc.repair_grace_s)
                    self.svc.agent.counters.inc("shard_repair_failed")
                    log.error("repair of %s (holder %s %s) failed: %s", oid.hex(), pid, reason, exc,
                              extra={"peer": pid})
                except Exception:  # a bug of ours: loud, but the node and the monitor stay up
                    self.svc._repair_backoff[(oid, pid)] = now + max(5.0, self.svc.repair_grace_s)
                    self.svc.agent.counters.inc("internal_error", "shard-repair")
                    log.exception("internal error repairing %s (holder %s)", oid.hex(), pid,
                                  extra={"peer": pid})
                break  # placement changed (or failed): look at the object afresh next tick

    async def repair(self, oid: bytes, lost: str, reason: str) -> dict[str, Any]:
        """Regenerate the shard ``lost`` held onto a new attested holder and re-sign the manifest."""
        async with self.svc._lock(oid):
            if oid not in self.svc._objects:
                raise ShardServiceError(f"unknown object {oid.hex()}")
            frame, m = self.svc._objects[oid]
            if lost not in {p.peer_id for p in m.placement}:
                return {"object_id": oid.hex(), "repaired": False}
            j = m.indices_held_by(lost)[0]
            start = trio.current_time()
            log.warning("repairing %s: shard %d on %s (%s)", oid.hex(), j, lost, reason, extra={"peer": lost})
            holders = {p.peer_id for p in m.placement}
            try:
                (new_holder,) = choose_holders(
                    self.svc._candidate_holders(holders),
                    1,
                    min_score=float(self.svc.agent.engine.policy.min_score),
                    need_bytes=0,
                    seed=oid + lost.encode(),
                )
            except PlacementError as exc:
                raise ShardServiceError(f"no new holder: {exc}") from None
            got, failures = await self.svc.fetcher.fetch_k(m, want_share=False, exclude={lost}, job=None)
            for i in got:  # helpers must resolve each other's points with the current placement
                await self.push_manifest(m.holder_of(i), frame, m, i)
            regen = self.svc._tmp_path(f"regen{j}")
            try:
                if len(got) < m.k:
                    raise self.svc.fetcher.not_enough("repair", m, len(got), failures)
                helpers_x = tuple(sorted(i + 1 for i in got))
                await trio.to_thread.run_sync(self.regenerate, m, got, j, regen)
                new_m = m.with_placement(
                    [(p.index, new_holder if p.index == j else p.peer_id) for p in m.placement]
                )
                new_frame = sign_manifest(new_m, self.svc._key)
                session = os.urandom(16)
                signature = self.svc._key.sign(invite_transcript(session, oid, j + 1, helpers_x, new_holder))
                invite = ReshareInvite(session, oid, j + 1, helpers_x, new_holder, signature)
                await self.svc._store_shard(
                    new_holder,
                    new_frame,
                    new_m,
                    j,
                    regen,
                    self.finish_with_reshare(m, invite),
                    lambda _n: None,
                    attempts=1,
                )
            finally:
                regen.unlink(missing_ok=True)
                for dest, _ in got.values():
                    dest.unlink(missing_ok=True)
            self.svc._health.setdefault(oid, {})[j] = time.time()
            self.svc._save_object(new_frame, new_m)
            async with trio.open_nursery() as nursery:
                for p in new_m.placement:
                    if p.index != j and not self.svc._holder_problem(p.peer_id):
                        nursery.start_soon(self.push_manifest_quietly, p.peer_id, new_frame, new_m, p.index)
            self.svc._down_since.pop(lost, None)
            self.svc.agent.counters.inc("shard_repaired")
            took = trio.current_time() - start
            log.warning(
                "repaired %s: shard %d moved from %s to %s in %.2fs (revision %d)",
                oid.hex(),
                j,
                lost,
                new_holder,
                took,
                new_m.revision,
                extra={"peer": lost, "peers": [lost, new_holder]},
            )
            return {
                "object_id": oid.hex(),
                "repaired": True,
                "index": j,
                "from": lost,
                "to": new_holder,
                "helpers_x": list(helpers_x),
                "seconds": took,
                "revision": new_m.revision,
            }

    async def push_manifest(self, pid: str, frame: bytes, m: Manifest, index: int) -> None:
        """Make holder ``pid`` (which stores ``index``) keep manifest ``frame`` (a newer revision)."""
        stream, reader = await self.svc._open(pid)
        try:
            await self.svc._send(stream, ShardOffer(os.urandom(16), decode(frame, SignedManifest), index))
            reply = await self.svc._recv(reader, ShardOfferReply)
        finally:
            await close_stream(stream)
        if reply.accepted or reply.reason != ALREADY_STORED:
            raise ShardServiceError(
                f"holder {pid} of shard {index} did not take the manifest: "
                f"{reply.reason or 'it has no such shard'}"
            )

    async def push_manifest_quietly(self, pid: str, frame: bytes, m: Manifest, index: int) -> None:
        try:
            await self.push_manifest(pid, frame, m, index)
        except (RemoteProtocolError, ShardServiceError) as exc:
            log.info(
                "manifest revision %d not pushed to %s: %s (pushed again before it helps a repair)",
                m.revision,
                pid,
                exc,
            extra={"peer": pid})

    def regenerate(
        self, m: Manifest, got: dict[int, tuple[Path, KeyShare | None]], j: int, dest: Path
    ) -> None:
        files = {i: open(p, "rb") for i, (p, _) in got.items()}  # noqa: SIM115 - closed below
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                regenerate_fragment(m.params().layout, files, j, out, m.fragment_hashes)
        except FragmentCorrupt as exc:
            raise ShardServiceError(f"fragment regeneration: {exc}") from None
        finally:
            for f in files.values():
                f.close()

    def finish_with_reshare(self, m: Manifest, invite: ReshareInvite) -> _Finish:
        async def finish(stream: Any, tid: bytes) -> None:
            await self.svc._send(stream, invite)  # the new holder now waits for the contributions
            errors: list[str] = []

            async def invite_helper(x: int) -> None:
                pid = m.holder_of(x - 1)
                try:
                    await self._send_acked(pid, invite)
                except RemoteProtocolError as exc:
                    errors.append(f"helper {pid} (x={x}): {exc}")

            async with trio.open_nursery() as nursery:
                for x in invite.helpers_x:
                    nursery.start_soon(invite_helper, x)
            if errors:
                raise ShardServiceError("key share regeneration failed: " + "; ".join(errors))

        return finish
