"""Shards under the manager: placement in the replicated swarm state, manager-scheduled repair.

Theory of operation
-------------------
When the node runs a :class:`~node.manager.ManagerRole` and a manager (Raft leader) is known,
every object's placement lives in the replicated swarm state (``consensus/state.py``:
``place``, ``repair-shard``, ``shard-repaired``, ``drop-placement``). Only the manager
proposes; other nodes ask it over :data:`~node.shards.service.SHARD_PROTOCOL`
(``shard-place`` / ``shard-drop`` / ``shard-repair-done`` → ``shard-manager-reply``).

* **Owner.** After a put, the owner sends its signed manifest (``shard-place``); the manager
  checks the sender *is* the manifest's owner and commits the placement (owner, k, n, holders,
  manifest revision and SHA-256 digest). ``get`` / ``ls`` / ``rm`` use the committed holders.
  When a repair has moved a shard, the owner (whenever it is online) signs the next manifest
  revision naming the committed holders, re-registers it (compare-and-set on the placement
  epoch), pushes it to the holders and erases the shard left on a reachable old holder.
* **Manager** (the Raft leader only, every tick): a holder that is revoked or left is lost at
  once; one that is suspect, or not attested as seen from the manager, for longer than the
  grace period is lost too. For a lost holder it picks a new one with
  :func:`~node.shards.placement.choose_holders` (admitted, attested, score ≥ policy, not the
  owner, not already a holder, spread away from the providers/regions of the holders that
  stay) and commits ``RepairShard`` (the new holder is *pending*).
* **New holder** (every node, every tick): a committed pending entry naming this node starts a
  rebuild that needs nobody but k live holders: fetch an owner-signed manifest of the object
  (``shard-manifest-get``), fetch k fragments (``shard-request`` with ``want_share=False``:
  ciphertext only), regenerate the lost fragment, and regenerate the key share with the
  masked-Lagrange protocol (``shard-repair-invite`` to k helpers, mask seeds between helpers,
  masked contributions to this node). The shard is stored under the owner-signed manifest
  (its hashes check fragment and share) and reported (``shard-repair-done``); the manager
  commits ``ShardRepaired``.
* **Every holder** (every ``max(tick, min(10 s, grace / 2))``) marks each stored shard the
  committed placement names it for (``placed/`` in the store: federation and state index), and
  erases a shard the committed state no longer places here once that has held for the grace
  period: its index moved to another holder whose rebuild is done (a holder replaced while
  unreachable, back after the owner's adoption could not reach it), or its placement was
  dropped after this holder saw it (an ``rm`` that raced a repair to this holder: the owner's
  erase found nothing there yet). A drop is judged only from a view newer than the mark, in
  the same federation, so a restarted node's empty or older view erases nothing. Counted as
  ``shard_swept{replaced|dropped}``.
* **Holders** release a fragment without the key share, their manifest, or a reshare
  contribution to a peer that is not the owner or authorised only when *their own view* of
  the committed state names that peer as the pending holder of the object (waiting up to
  :data:`VIEW_WAIT_S` for their view to catch up). Anything else is refused and counted
  (``shard_repair_refused``). Key shares are never released for a repair.

The trust argument is in docs/shards.md ("Manager repair: who may do what").
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from consensus.state import (
    DropPlacement,
    Placement,
    PlaceShards,
    ShardHolder,
    ShardRepaired,
    SwarmState,
)
from node.shards.errors import ShardServiceError
from node.shards.gf256 import KeyShare
from node.shards.holder_loss import first_lost, holder_loss, plan_repair
from node.shards.manifest import Manifest, SignedManifest, open_manifest, sign_manifest
from node.shards.messages import (
    NOT_MANAGER,
    RepairInvite,
    ReshareContribution,
    ShardAck,
    ShardDrop,
    ShardManagerReply,
    ShardManifestGet,
    ShardPlace,
    ShardRepairDone,
)
from node.shards.placement import PlacementError
from node.shards.resharing import combine_contributions
from node.shards.store import ShardNotFound, StoreError
from node.shards.sweep import plan_sweep
from overlay.errors import RemoteProtocolError
from overlay.framing import close_stream
from overlay.host import public_key_of_peer
from overlay.wire import encode

if TYPE_CHECKING:
    from node.manager import ManagerRole
    from node.shards.service import ShardService

log = logging.getLogger("enclave_swarm.shards")

VIEW_WAIT_S = 5.0  # a holder waits this long for its committed view to show a repair it is asked about
MANAGER_ASK_S = 30.0  # a request to the manager is retried (leader changes) for this long
REBUILD_BACKOFF_S = 5.0
MAX_REBUILDS = 4  # concurrent rebuilds on one node
MAX_REPAIRS_PER_TICK = 8  # RepairShard commands the manager proposes per tick
RECENT_REBUILDS = 16


def placement_digest(frame: bytes) -> bytes:
    """What the committed placement records of the owner-signed manifest frame."""
    return hashlib.sha256(frame).digest()


class ManagedShards:
    """The manager-facing half of one node's shard service (see module docstring)."""

    def __init__(self, svc: ShardService) -> None:
        self.svc = svc
        self.agent = svc.agent
        self.me = str(svc.agent.peer_id)
        self._down_since: dict[str, float] = {}
        self._backoff: dict[tuple[str, int], float] = {}
        self._rebuilding: set[tuple[str, int]] = set()
        self._unregistered: set[bytes] = set(svc._objects)
        self._adopting: set[bytes] = set()
        self.rebuilds: list[dict[str, Any]] = []
        self._stale_since: dict[tuple[str, int], float] = {}
        self._next_stale_check = -math.inf

    # ================================================================== views

    def role(self) -> ManagerRole | None:
        from node.manager import role_of

        try:
            return role_of(self.agent)
        except LookupError:
            return None

    def active(self) -> bool:
        """A manager runs here and a leader is known: placements go through consensus."""
        role = self.role()
        return role is not None and role.leader_peer() is not None

    def state(self) -> SwarmState | None:
        role = self.role()
        return role.view()[0] if role is not None else None

    def placement(self, oid: bytes) -> Placement | None:
        st = self.state()
        return st.placements.get(oid.hex()) if st is not None else None

    def owned_placement(self, m: Manifest) -> Placement | None:
        """The committed placement of ``m``'s object, if it is registered by ``m``'s owner."""
        p = self.placement(m.object_id)
        if p is None or len(p.holders) != m.n or public_key_of_peer(p.owner) != m.owner:
            return None
        return p

    def holders_for(self, m: Manifest) -> list[tuple[int, str]]:
        """Where to fetch: the committed, settled holders when the object is registered, else
        the manifest's placement."""
        p = self.owned_placement(m)
        if p is None:
            return [(e.index, e.peer_id) for e in m.placement]
        return [(h.index, h.holder) for h in p.holders if not h.pending]

    def is_admitted(self, pid: str) -> tuple[bool, str, str]:
        """(admitted, provider, region) of ``pid`` in the committed state."""
        st = self.state()
        m = st.member(pid) if st is not None else None
        if m is None or m.status != "admitted":
            return False, pid, pid
        return True, m.provider or pid, m.region or pid

    async def wait_placement(self, oid: bytes, pred: Callable[[Placement], bool],
                             timeout_s: float = VIEW_WAIT_S) -> Placement | None:
        """The committed placement of ``oid`` once ``pred`` holds in our view (≤ ``timeout_s``)."""
        if self.role() is None:
            return None
        with trio.move_on_after(timeout_s):
            while True:
                p = self.placement(oid)
                if p is not None and pred(p):
                    return p
                await trio.sleep(0.1)
        return None

    async def named_for_repair(self, pid: str, oid: bytes, owner: bytes) -> Placement | None:
        """The committed placement if it names ``pid`` as a pending holder of ``oid`` (whose
        owner key is ``owner``), else None."""
        return await self.wait_placement(
            oid,
            lambda p: public_key_of_peer(p.owner) == owner
            and any(h.holder == pid and h.pending for h in p.holders),
        )

    def refused(self, pid: str, what: str, reason: str) -> None:
        self.agent.counters.inc("shard_repair_refused", reason.split(":")[0][:40])
        log.warning("refused %s from %s: %s", what, pid, reason, extra={"peer": pid, "reason": reason})

    # ================================================================== asking the manager

    async def ask(self, msg: ShardPlace | ShardDrop | ShardRepairDone) -> ShardManagerReply:
        """Send ``msg`` to the manager (ourselves included), following leader changes."""
        role = self.role()
        if role is None:
            return ShardManagerReply(msg.request_id, False, "no manager role on this node")
        last = "no manager known"
        with trio.move_on_after(MANAGER_ASK_S):
            while True:
                lead = role.leader_peer()
                if lead == self.me:
                    reply = await self.serve(self.me, msg)
                elif lead is None:
                    reply = ShardManagerReply(msg.request_id, False, NOT_MANAGER)
                else:
                    try:
                        stream, reader = await self.svc._open(lead)
                        try:
                            await self.svc._send(stream, msg)
                            reply = await self.svc._recv(reader, ShardManagerReply)
                        finally:
                            await close_stream(stream)
                    except RemoteProtocolError as exc:
                        reply = ShardManagerReply(msg.request_id, False, f"{NOT_MANAGER}: {exc}")
                if reply.ok or not reply.reason.startswith((NOT_MANAGER, "not committed", "lost")):
                    return reply
                last = reply.reason
                await trio.sleep(0.3)
        return ShardManagerReply(msg.request_id, False, f"manager unavailable: {last}")

    async def register(self, frame: bytes, base_epoch: int) -> ShardManagerReply:
        """Commit the placement of owner-signed ``frame`` through the manager. A retry after a
        commit whose answer was lost is rejected; the committed digest then says it is ours."""
        reply = await self.ask(ShardPlace(os.urandom(16), _signed(frame), base_epoch))
        if not reply.ok:
            m = open_manifest(frame)
            p = await self.wait_placement(m.object_id, lambda p: p.manifest_digest == placement_digest(frame),
                                         timeout_s=2.0)
            if p is not None:
                return ShardManagerReply(reply.request_id, True, "")
        return reply

    # ================================================================== the manager's side

    async def serve(self, pid: str, msg: Any) -> ShardManagerReply:
        """A request to the manager (from ``pid``): validate, commit, answer."""
        role = self.role()
        rid = msg.request_id
        if role is None or not role.is_leader():
            return ShardManagerReply(rid, False, NOT_MANAGER)
        owner_key = public_key_of_peer(pid)
        if isinstance(msg, ShardPlace):
            m = msg.manifest.manifest
            if owner_key != m.owner:
                return self._refuse(rid, pid, "only the manifest's owner registers its placement")
            cmd: Any = PlaceShards(
                m.object_id.hex(),
                tuple(ShardHolder(e.index, e.peer_id) for e in m.placement),
                owner=pid,
                k=m.k,
                manifest_revision=m.revision,
                manifest_digest=placement_digest(encode(msg.manifest)),
                base_epoch=msg.base_epoch,
            )
        elif isinstance(msg, ShardDrop):
            p = role.view()[0].placements.get(msg.object_id.hex())
            if p is None:
                return ShardManagerReply(rid, True, "no placement")
            if p.owner != pid:
                return self._refuse(rid, pid, "only the owner drops a placement")
            cmd = DropPlacement(p.object_id)
        else:
            p = role.view()[0].placements.get(msg.object_id.hex())
            h = p.holder_of(msg.index) if p is not None else None
            if h is not None and h.holder == pid and not h.pending:
                return ShardManagerReply(rid, True, "already recorded")
            if h is None or h.holder != pid:
                return self._refuse(rid, pid, "repair report from a node the placement does not name")
            cmd = ShardRepaired(msg.object_id.hex(), msg.index, pid)
        ok, err = await role.command(cmd, timeout_s=self.svc.timeout_s)
        if not ok:
            log.info("shard placement command %s from %s not committed: %s", type(cmd).__name__, pid, err,
                     extra={"peer": pid})
        return ShardManagerReply(rid, ok, _clip(err if ok else err or "rejected"))

    def _refuse(self, rid: bytes, pid: str, reason: str) -> ShardManagerReply:
        self.agent.counters.inc("shard_manager_refused", reason[:40])
        log.warning("manager refused a shard request from %s: %s", pid, reason, extra={"peer": pid})
        return ShardManagerReply(rid, False, reason)

    def _lost(self, st: SwarmState, pid: str, now: float) -> str | None:
        """Why holder ``pid`` counts as lost now, or None (rules in node/shards/holder_loss.py)."""
        loss = holder_loss(st.member(pid), is_me=pid == self.me, attested=self.agent.peers.is_attested(pid),
                           down_since=self._down_since.get(pid), now=now, grace_s=self.svc.repair_grace_s)
        if loss.down_since is None:
            self._down_since.pop(pid, None)
        else:
            self._down_since[pid] = loss.down_since
        return loss.reason

    async def manager_tick(self) -> None:
        """Manager only: schedule the repair of every lost holder of every placement."""
        role = self.role()
        if role is None or not role.is_leader():
            self._down_since.clear()
            return
        st, _ = role.view()
        now = trio.current_time()
        proposed = 0
        for p in list(st.placements.values()):
            if proposed >= MAX_REPAIRS_PER_TICK:
                break
            due = first_lost(p, lambda pid: self._lost(st, pid, now), self._backoff, now)
            if due is None:
                continue
            h, reason = due
            proposed += 1
            if not await self._schedule(role, st, p, h, reason):
                self._backoff[(p.object_id, h.index)] = now + max(REBUILD_BACKOFF_S, self.svc.repair_grace_s)

    async def _schedule(self, role: ManagerRole, st: SwarmState, p: Placement, h: ShardHolder,
                        reason: str) -> bool:
        try:
            cmd = plan_repair(st, p, h, reason, me=self.me, attested=self.agent.peers.is_attested,
                              min_score=float(self.agent.engine.policy.min_score))
        except (PlacementError, ValueError) as exc:
            log.error("cannot repair shard %d of %s (holder %s %s): no new holder: %s",
                      h.index, p.object_id, h.holder, reason, exc, extra={"peer": h.holder})
            self.agent.counters.inc("shard_repair_failed", "no new holder")
            return False
        ok, err = await role.command(cmd, timeout_s=self.svc.timeout_s)
        if not ok:
            log.info("repair of %s.%d not committed: %s", p.object_id, h.index, err)
            return False
        # The holder's down clock keeps running: its other shards are just as lost (resetting
        # it here made an unreachable holder's N shards wait N grace periods, one by one).
        self.agent.counters.inc("shard_repair_scheduled")
        log.warning("manager: shard %d of %s moves from %s (%s) to %s", h.index, p.object_id, h.holder,
                    reason, cmd.new_holder, extra={"peer": h.holder, "peers": [h.holder, cmd.new_holder]})
        return True

    # ================================================================== the new holder's side

    def holder_tick(self) -> None:
        """Start a rebuild for every committed pending entry that names this node."""
        view = self._federation_view()
        nursery = self.svc._nursery
        if view is None or nursery is None:
            return
        st, seen_at, fed = view
        now = trio.current_time()
        for p in st.placements.values():
            for h in p.holders:
                key = (p.object_id, h.index)
                if (h.holder != self.me or not h.pending or key in self._rebuilding
                        or len(self._rebuilding) >= MAX_REBUILDS or self._backoff.get(key, -math.inf) > now):
                    continue
                self._rebuilding.add(key)
                nursery.start_soon(self._rebuild_and_report, p, h.index, fed, seen_at)

    async def _rebuild_and_report(self, p: Placement, index: int, fed: str, seen_at: int) -> None:
        key = (p.object_id, index)
        oid = bytes.fromhex(p.object_id)
        try:
            # Marked before the shard exists: if an rm drops the placement while this rebuild
            # runs, the shard it leaves is recognised as dropped and erased (stale_tick).
            await trio.to_thread.run_sync(self.svc.store.note_placed, oid, index, fed, seen_at)
            try:
                await trio.to_thread.run_sync(self.svc.store.manifest, oid, index)
            except ShardNotFound:
                await self.rebuild(p, index)
            reply = await self.ask(ShardRepairDone(os.urandom(16), oid, index))
            if not reply.ok:
                raise RemoteProtocolError("refused", f"manager: {reply.reason}")
        except (RemoteProtocolError, OSError, StoreError, ShardServiceError) as exc:
            self._backoff[key] = trio.current_time() + REBUILD_BACKOFF_S
            self.agent.counters.inc("shard_rebuild_failed")
            log.error("rebuild of shard %d of %s failed: %s (retrying)", index, p.object_id, exc)
        except Exception:  # a bug of ours: loud, but the node stays up
            self._backoff[key] = trio.current_time() + REBUILD_BACKOFF_S
            self.agent.counters.inc("internal_error", "shard-rebuild")
            log.exception("internal error rebuilding shard %d of %s", index, p.object_id)
        finally:
            self._rebuilding.discard(key)

    async def rebuild(self, p: Placement, j: int) -> dict[str, Any]:
        """Regenerate shard ``j`` of ``p`` here from k settled holders (see module docstring)."""
        svc = self.svc
        oid = bytes.fromhex(p.object_id)
        start = trio.current_time()
        owner = public_key_of_peer(p.owner)
        if owner is None:
            raise ShardServiceError(f"placement owner {p.owner} has no Ed25519 key")
        sources = [(h.index, h.holder) for h in p.holders if not h.pending and h.holder != self.me]
        frame, m = await self._fetch_manifest(oid, owner, sources)
        log.info("rebuilding shard %d of %s from %d settled holders", j, p.object_id, len(sources))
        got, failures = await svc.fetcher.fetch_k(m, want_share=False, exclude=set(), job=None,
                                                  holders=sources)
        regen = svc._tmp_path(f"rebuild{j}")
        try:
            if len(got) < m.k:
                raise svc.fetcher.not_enough("repair", m, len(got), failures)
            await trio.to_thread.run_sync(svc.repairer.regenerate, m, got, j, regen)
            by_x = {i + 1: pid for i, pid in sources}
            helpers_x = tuple(sorted(i + 1 for i in got))
            share = await self._reshare(oid, j, helpers_x, by_x)
            writer = await trio.to_thread.run_sync(svc.store.begin_put, frame, j)
            try:
                with open(regen, "rb") as f:
                    while block := await trio.to_thread.run_sync(f.read, 1 << 20):
                        await trio.to_thread.run_sync(writer.write, block)
                await trio.to_thread.run_sync(writer.commit, share)
            except BaseException:
                writer.abort()
                raise
        finally:
            regen.unlink(missing_ok=True)
            for dest, _ in got.values():
                dest.unlink(missing_ok=True)
        took = trio.current_time() - start
        self.agent.counters.inc("shard_rebuilt")
        info = {"object_id": p.object_id, "index": j, "seconds": round(took, 3),
                "fragment_bytes": m.fragment_size, "helpers_x": list(helpers_x), "at": time.time()}
        self.rebuilds = [*self.rebuilds[-(RECENT_REBUILDS - 1):], info]
        log.warning("rebuilt shard %d of %s here in %.2fs (helpers x=%s)", j, p.object_id, took,
                    list(helpers_x))
        return info

    async def _fetch_manifest(self, oid: bytes, owner: bytes, sources: list[tuple[int, str]]
                              ) -> tuple[bytes, Manifest]:
        errors = []
        for _, pid in sorted(sources, key=lambda s: self.svc._rtt(s[1])):
            if self.svc._holder_problem(pid):
                continue
            try:
                stream, reader = await self.svc._open(pid)
                try:
                    await self.svc._send(stream, ShardManifestGet(os.urandom(16), oid))
                    got = await self.svc._recv(reader, (SignedManifest, ShardAck))
                finally:
                    await close_stream(stream)
            except RemoteProtocolError as exc:
                errors.append(f"{pid}: {exc}")
                continue
            if isinstance(got, ShardAck):
                errors.append(f"{pid}: refused: {got.reason}")
                continue
            frame = encode(got)
            try:
                m = open_manifest(frame, owner=owner)
            except RemoteProtocolError as exc:
                errors.append(f"{pid}: {exc}")
                continue
            if m.object_id == oid:
                return frame, m
            errors.append(f"{pid}: manifest of another object")
        listing = "; ".join(errors) or "none reachable"
        raise ShardServiceError(f"no holder gave the owner-signed manifest: {listing}")

    async def _reshare(self, oid: bytes, j: int, helpers_x: tuple[int, ...],
                       by_x: dict[int, str]) -> KeyShare:
        """Coordinate the masked-Lagrange regeneration of our share at x = j + 1."""
        svc = self.svc
        session = os.urandom(16)
        target = j + 1
        invite = RepairInvite(session, oid, target, helpers_x, self.me)
        box = svc._mailbox(session)
        got: dict[int, bytes] = {}
        errors: list[str] = []

        def contribution(sender: str, msg: Any) -> tuple[int, bytes] | None:
            if (not isinstance(msg, ReshareContribution) or msg.object_id != oid or msg.target_x != target
                    or msg.helper_x not in helpers_x or by_x.get(msg.helper_x) != sender
                    or msg.helper_x in got):
                return None
            return msg.helper_x, msg.value

        async def invite_helper(x: int) -> None:
            pid = by_x[x]
            try:
                hs, hr = await svc._open(pid)
                try:
                    await svc._send(hs, invite)
                    await svc._expect_ack(hr, session)
                finally:
                    await close_stream(hs)
            except RemoteProtocolError as exc:
                errors.append(f"helper {pid} (x={x}): {exc}")

        complete = False
        try:
            async with trio.open_nursery() as nursery:
                for x in helpers_x:
                    nursery.start_soon(invite_helper, x)
                complete = await svc._collect(box, contribution, got, lambda: len(got) >= len(helpers_x),
                                              "contribution")
        finally:
            svc._drop_mailbox(session)
        if errors or not complete:
            raise ShardServiceError("key share regeneration failed: "
                                    + ("; ".join(errors) or f"{len(got)} of {len(helpers_x)} contributions"))
        return combine_contributions(got, helpers_x, target)

    # ================================================================== holder: serving a rebuild

    async def serve_manifest(self, stream: Any, pid: str, req: ShardManifestGet) -> None:
        svc = self.svc
        frame = None
        for info in await trio.to_thread.run_sync(svc.store.list_shards):
            if info.object_id == req.object_id:
                with contextlib.suppress(StoreError):
                    frame = await trio.to_thread.run_sync(svc.store.manifest_frame, req.object_id, info.index)
                    break
        reason = ""
        if frame is None:
            reason = "no shard of this object here"
        else:
            m = open_manifest(frame)
            key = public_key_of_peer(pid)
            if not (key is not None and m.may_fetch(key)) and await self.named_for_repair(
                    pid, req.object_id, m.owner) is None:
                reason = "not the owner, authorised, or named by the committed placement"
        if reason:
            self.refused(pid, f"manifest of {req.object_id.hex()}", reason)
            await svc._send(stream, ShardAck(req.request_id, False, reason, 0))
            return
        assert frame is not None
        await svc._send(stream, _signed(frame))

    async def serve_repair_invite(self, stream: Any, pid: str, inv: RepairInvite) -> None:
        """Helper: take part in the regeneration of ``pid``'s share if the committed placement
        names ``pid`` as the pending holder of that point and us as a settled helper."""
        svc = self.svc

        async def refuse(reason: str) -> None:
            self.refused(pid, f"reshare for {inv.object_id.hex()}", reason)
            await svc._send(stream, ShardAck(inv.session_id, False, _clip(reason), 0))

        if inv.new_holder_peer_id != pid:
            await refuse("the invite names another new holder than its sender")
            return
        target = inv.target_x - 1
        p = await self.wait_placement(
            inv.object_id, lambda p: (h := p.holder_of(target)) is not None and h.holder == pid and h.pending)
        if p is None:
            await refuse("not named by the committed placement as the pending holder")
            return
        helpers = {x: p.holder_of(x - 1) for x in inv.helpers_x}
        if len(inv.helpers_x) != p.k or any(h is None or h.pending for h in helpers.values()):
            await refuse("helpers inconsistent with the committed placement")
            return
        mine = [x for x, h in helpers.items() if h is not None and h.holder == self.me]
        if len(mine) != 1:
            await refuse("this node is not one of the invited helpers")
            return
        my_x = mine[0]
        try:
            m = await trio.to_thread.run_sync(svc.store.manifest, inv.object_id, my_x - 1)
        except StoreError as exc:
            await refuse(f"no usable shard here: {exc}")
            return
        if public_key_of_peer(p.owner) != m.owner:
            await refuse("the committed placement's owner is not the manifest's")
            return

        def holder_of(x: int) -> str:
            h = helpers.get(x) if x in helpers else p.holder_of(x - 1)
            return h.holder if h is not None else ""

        await svc.repairer.help_reshare(stream, inv.session_id, inv.object_id, my_x, inv.target_x,
                                        inv.helpers_x, pid, holder_of)

    # ================================================================== the holder's clean-up

    async def stale_tick(self) -> None:
        """Mark the shards the committed placement names this node for; erase the ones it no
        longer places here (see the module docstring)."""
        now = trio.current_time()
        if now < self._next_stale_check:
            return
        svc = self.svc
        self._next_stale_check = now + max(svc.repair_tick_s, min(10.0, svc.repair_grace_s / 2))
        view = self._federation_view()
        if view is None:
            return
        st, idx, fed = view
        store = svc.store
        infos, marks = await trio.to_thread.run_sync(lambda: (store.list_shards(), store.marks()))
        plan = plan_sweep(st, idx, fed, self.me, [(i.object_id, i.index) for i in infos], marks,
                          self._rebuilding, self._stale_since, now, svc.repair_grace_s)
        self._stale_since = plan.stale_since
        for oid, index in plan.mark:
            await trio.to_thread.run_sync(store.note_placed, oid, index, fed, idx)
        for e in plan.erase:
            await trio.to_thread.run_sync(store.erase, e.object_id, e.index, os.urandom(16))
            # Only now: an erase that failed keeps its clock, so the next sweep retries it.
            self._stale_since.pop((e.object_id.hex(), e.index), None)
            self.agent.counters.inc("shard_swept", e.kind)
            log.info("erased shard %d of %s, which the committed state no longer places here: "
                     "%s, %s", e.index, e.object_id.hex(), e.kind, e.detail)

    def _federation_view(self) -> tuple[SwarmState, int, str] | None:
        """This node's committed view, its index and its federation id (None before it has one)."""
        from node.manager_checks import federation_id

        role = self.role()
        if role is None:
            return None
        st, idx = role.view()
        fed = federation_id(st)
        return None if fed is None else (st, idx, fed)

    # ================================================================== the owner's side

    async def owner_tick(self) -> None:
        """Register objects put while no manager was reachable; adopt repaired placements."""
        if not self.active():
            return
        for oid, (frame, m) in list(self.svc._objects.items()):
            p = self.owned_placement(m)
            if p is None:
                if oid in self._unregistered:
                    reply = await self.register(frame, 0)
                    if reply.ok or "not after" in reply.reason:
                        self._unregistered.discard(oid)
                        log.info("registered the placement of %s with the manager", oid.hex())
                continue
            self._unregistered.discard(oid)
            settled = [h.holder for h in p.holders]
            same = settled == [m.holder_of(i) for i in range(m.n)] and p.manifest_revision == m.revision
            if any(h.pending for h in p.holders) or oid in self._adopting or same:
                continue
            self._adopting.add(oid)
            try:
                await self.adopt(oid, p)
            finally:
                self._adopting.discard(oid)

    async def adopt(self, oid: bytes, p: Placement) -> None:
        """Sign the next manifest revision naming the committed holders, register it (CAS on
        the epoch), push it to the holders, erase what is left on reachable old holders."""
        svc = self.svc
        async with svc._lock(oid):
            if oid not in svc._objects:
                return
            _, m = svc._objects[oid]
            new_m = dataclasses.replace(
                m.with_placement([(h.index, h.holder) for h in p.holders]),
                revision=max(m.revision, p.manifest_revision) + 1)
            new_frame = sign_manifest(new_m, svc._key)
            reply = await self.register(new_frame, p.epoch)
            if not reply.ok:
                log.info("manifest revision %d of %s not registered: %s", new_m.revision, oid.hex(),
                         reply.reason)
                return
            old = m
            svc._save_object(new_frame, new_m)
        log.info("adopted the committed placement of %s as manifest revision %d", oid.hex(), new_m.revision)
        async with trio.open_nursery() as nursery:
            for e in new_m.placement:
                if not svc._holder_problem(e.peer_id):
                    nursery.start_soon(svc.repairer.push_manifest_quietly, e.peer_id, new_frame, new_m,
                                       e.index)
            for e in old.placement:
                if e.peer_id != new_m.holder_of(e.index) and not svc._holder_problem(e.peer_id):
                    nursery.start_soon(self._erase_quietly, e.peer_id, oid, e.index)

    async def _erase_quietly(self, pid: str, oid: bytes, index: int) -> None:
        try:
            await self.svc.erase_on(pid, oid, index)
            log.info("erased the replaced shard %s.%d on %s", oid.hex(), index, pid, extra={"peer": pid})
        except (RemoteProtocolError, ShardServiceError) as exc:
            log.info("replaced shard %s.%d on %s not erased: %s", oid.hex(), index, pid, exc,
                     extra={"peer": pid})

    def committed_listing(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The committed placements in this node's view (for operators and tests)."""
        st = self.state()
        if st is None:
            return []
        return [
            {"object_id": p.object_id, "owner": p.owner, "k": p.k, "n": len(p.holders), "epoch": p.epoch,
             "manifest_revision": p.manifest_revision,
             "holders": [{"index": h.index, "peer_id": h.holder, "pending": h.pending} for h in p.holders]}
            for p in sorted(st.placements.values(), key=lambda p: p.object_id)[:limit]
        ]

    def status(self) -> dict[str, Any]:
        st = self.state()
        return {
            "placements_committed": len(st.placements) if st is not None else None,
            "rebuilds_running": len(self._rebuilding),
            "recent_rebuilds": list(self.rebuilds),
        }


def _signed(frame: bytes) -> SignedManifest:
    from overlay.wire import decode

    signed: SignedManifest = decode(frame, SignedManifest)
    return signed


def _clip(reason: str) -> str:
    return reason if len(reason) <= 200 else reason[:199] + "…"
