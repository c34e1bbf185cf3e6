"""The shard network layer: put / get / repair / rm of k-of-n objects between attested peers.

Theory of operation
-------------------
One libp2p stream protocol, :data:`SHARD_PROTOCOL`, served behind the agent's attestation gate
(unattested peers have their stream reset before any byte is read) and its remote-error
boundary. The first frame of a stream says what it is for (the ``shard-*`` messages of
:mod:`node.shards.messages`, whose flows are documented there and in docs/shards.md):

* ``shard-offer``      owner → holder: store one shard (chunked, windowed, resumable);
* ``shard-request``    requester → holder: fetch one shard after a signed fresh challenge;
* ``shard-erase``      owner → holder: crypto-shred one shard, signed receipt back;
* ``shard-reshare-invite``        owner → helper: take part in a key-share regeneration;
* ``shard-reshare-mask-seed`` / ``shard-reshare-contribution``: helper → helper / new holder,
  dropped into a bounded per-session mailbox and acknowledged.

Every wait on the network has a timeout (``message_timeout_s``); every queue is bounded
(mailboxes, parked partial transfers, jobs, the chunk window). Memory is constant in the
object size: the owner seals and splits to staging files on its own disk (the manifest with
every fragment hash must exist before a holder will take a byte), sends each fragment from its
file, and a get (node/shards/fetch.py) fetches k fragments to staging files, verifying each,
while it combines and opens them into a temporary file that is renamed over the output.

Roles on one node:

* **holder** - a :class:`~node.shards.store.ShardStore` in ``<data dir>/shards``, sealed with a
  secret derived (HKDF, label :data:`_SEALING_INFO`) from the node identity key. That is the
  simulated TEE's sealing secret; a hardware TEE would derive it from its sealing key (SEV-SNP
  ``MSG_KEY_REQ``, SGX ``EGETKEY``, TDX via a TD-bound key service) so shards cannot be
  unsealed outside the enclave.
* **owner** - signed manifests in ``<data dir>/objects/<id>.manifest``, last-verified times in
  ``<id>.health.json``, staging in ``objects/tmp`` (emptied at start). The node's identity key
  is the owner key of the objects it puts.

Placement: the n holders are n distinct attested peers with score ≥ the policy minimum, never
the owner itself (a shard on the owner adds no independence from the owner's own failure); too
few such peers → the put is refused. Providers and regions are not configured yet, so every
peer id is treated as its own provider and region.

Placement and repair under a manager (the normal case: every ``enclave-swarm run`` runs the
manager role) are in :mod:`node.shards.managed`: the placement is committed to the replicated
swarm state, the manager schedules the repair of a lost holder, and the new holder rebuilds
its shard from k settled holders without the owner. A put replaces a holder that fails for
good by another eligible peer (next manifest revision). Without a manager, the owner's node
watches its objects' holders and repairs on its own (the fallback kept here): a revoked
holder at once, one quarantined or disconnected for longer than ``repair_grace_s`` after
that. Either way the fragment is regenerated from k fragments (ciphertext) and the key share
by the masked resharing protocol, k helper holders sending masked Lagrange contributions
directly to the new holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from libp2p.peer.id import ID

from node.datadir import write_atomic
from node.shards.crypto import (
    IntegrityError,
    seal_and_split,
)
from node.shards.errors import ALREADY_STORED, HolderFailure, ShardServiceError
from node.shards.fetch import FETCH_WINDOW_BYTES, Fetcher
from node.shards.gf256 import KeyShare, ShareError
from node.shards.managed import ManagedShards
from node.shards.manifest import (
    Manifest,
    SignedManifest,
    build_manifest,
    open_manifest,
    raw_public_key,
    sign_manifest,
    verify_ed25519,
)
from node.shards.messages import (
    MAX_CHUNK_DATA_BYTES,
    MAX_REASON_CHARS,
    RepairInvite,
    ReshareContribution,
    ReshareInvite,
    ReshareMaskSeed,
    ShardAck,
    ShardChallenge,
    ShardChallengeResponse,
    ShardChunk,
    ShardDrop,
    ShardErase,
    ShardEraseReceipt,
    ShardKeyShare,
    ShardManifestGet,
    ShardOffer,
    ShardOfferReply,
    ShardPlace,
    ShardRepairDone,
    ShardRequest,
    erase_transcript,
    fetch_transcript,
    invite_transcript,
    verify_receipt,
)
from node.shards.placement import Candidate, PlacementError, choose_holders
from node.shards.repair import Repairer
from node.shards.resharing import (
    combine_contributions,
)
from node.shards.store import (
    DEFAULT_OWNER_SHARE,
    OwnerQuotaExceeded,
    QuotaExceeded,
    ShardExists,
    ShardNotFound,
    ShardStore,
    ShardWriter,
    StoredShardCorrupt,
    StoreError,
    check_schema,
)
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.framing import FrameReader, close_stream, read_message, write_message
from overlay.host import public_key_of_peer
from overlay.wire import decode, encode

if TYPE_CHECKING:
    from node.agent import Agent

log = logging.getLogger("enclave_swarm.shards")

SHARD_PROTOCOL = "/enclave-swarm/shard/1.1.0"
CHUNK_BYTES = MAX_CHUNK_DATA_BYTES  # 256 KiB per shard-chunk
WINDOW_CHUNKS = 8  # un-acknowledged chunks in flight per store transfer (2 MiB)
STORE_ATTEMPTS = 3  # a broken store transfer is resumed this many times in all
MAX_PARKED_TRANSFERS = 16  # interrupted incoming transfers kept for resumption
MAX_PARKED_PER_PEER = 4  # of which one owner may hold this many (it cannot take every slot)
PARKED_TTL_S = 120.0
MAX_MAILBOXES = 64  # concurrent reshare sessions this node takes part in
# A session mailbox a peer's message opens before this node has joined that session (a mask
# seed may overtake our own invite) is charged to that peer until we claim it: one peer cannot
# take every session slot. In a session a peer sends us one message (a helper holds one x: one
# seed to each higher helper, one contribution to the new holder); a little slack for retries.
MAX_UNCLAIMED_MAILBOXES_PER_PEER = 4
MAX_MAILBOX_MESSAGES_PER_PEER = 2
MAILBOX_TTL_S = 120.0
MAX_JOBS = 64
DEFAULT_QUOTA_FRACTION = 0.5  # of the disk's free space at start, when no quota is given
PLACEMENT_WAIT_S = 10.0  # a put waits this long for n attested peers before it gives up
_SEALING_INFO = b"enclave-swarm/shard-store/sealing-secret/v1"
_Finish = Callable[[Any, bytes], Awaitable[None]]
_FIRST = (ShardOffer, ShardRequest, ShardErase, ReshareInvite, ReshareMaskSeed, ReshareContribution,
          ShardPlace, ShardDrop, ShardRepairDone, ShardManifestGet, RepairInvite)


@dataclasses.dataclass
class Job:
    """A long control-socket operation; the CLI polls it (``shard-job``) for progress."""

    id: str
    kind: str
    phase: str = "starting"
    done: int = 0
    total: int = 0
    state: str = "running"  # running | done | failed
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_at: float | None = None
    holders: list[str] = dataclasses.field(default_factory=list)  # a put's current placement

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "kind": self.kind,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "state": self.state,
            "result": self.result,
            "error": self.error,
            "holders": list(self.holders),
        }


@dataclasses.dataclass
class _Parked:
    writer: ShardWriter
    owner_pid: str
    expires_at: float


class _Mailbox:
    """Bounded inbox of one reshare session: (sender peer id, message). ``opened_by`` is the
    peer whose message created it while this node has not claimed it (None once claimed);
    ``sent`` counts messages per sender (each bounded, so no peer crowds out another)."""

    def __init__(self, opened_by: str | None = None) -> None:
        self.send, self.recv = trio.open_memory_channel[tuple[str, Any]](
            MAX_MAILBOX_MESSAGES_PER_PEER * 255
        )
        self.created = trio.current_time()
        self.opened_by = opened_by
        self.sent: dict[str, int] = {}


def sealing_secret_from_identity(identity: Any) -> bytes:
    """The simulated TEE's sealing secret: HKDF of the identity key with a distinct label.

    Raises:
        LocalProtocolError: the identity is in a token (node/keys): its secret is storage.key,
            sealed by the token, which only a data dir has.
    """
    if not callable(getattr(identity, "private_bytes", None)):
        raise LocalProtocolError("an identity key in a token needs a data dir (its storage.key) "
                                 "for the shard storage secret")
    raw = identity.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEALING_INFO).derive(raw)


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _short(pid: str) -> str:
    return pid if len(pid) <= 16 else "…" + pid[-12:]


class ShardService:
    """Holder and owner sides of the shard protocol on one agent (see module docstring)."""

    def __init__(
        self,
        agent: Agent,
        root: Path,
        *,
        quota_bytes: int | None = None,
        owner_share: float = DEFAULT_OWNER_SHARE,
        repair_grace_s: float = 30.0,
        message_timeout_s: float = 20.0,
        repair_tick_s: float = 1.0,
    ) -> None:
        self.agent = agent
        self.root = Path(root)
        # A store newer than this release (or garbled) is refused before staging is cleared.
        check_schema(self.root / "shards")
        self.objects_dir = self.root / "objects"
        self.staging = self.objects_dir / "tmp"
        for d in (self.root, self.objects_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(mode=0o700)
        if quota_bytes is None:
            st = os.statvfs(self.root)
            quota_bytes = int(st.f_bavail * st.f_frsize * DEFAULT_QUOTA_FRACTION)
        self._key = agent._identity
        self.public_key = raw_public_key(self._key)
        # The storage secret sealed to the enclave's measurement where the TEE offers a sealing
        # key (node/attestation/sealing.py); else derived from the identity key.
        sealed = agent.data_dir.storage_secret(agent.keys) if agent.data_dir is not None else None
        self.store = ShardStore(
            self.root / "shards",
            sealed or sealing_secret_from_identity(self._key),
            quota_bytes=quota_bytes,
            receipt_key=self._key,
            holder_peer_id=agent.peer_id,
            owner_share=owner_share,
        )
        self.repair_grace_s = repair_grace_s
        self.timeout_s = message_timeout_s
        self.repair_tick_s = repair_tick_s
        self._parked: dict[bytes, _Parked] = {}
        self._mailboxes: dict[bytes, _Mailbox] = {}
        self._jobs: dict[str, Job] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._down_since: dict[str, float] = {}
        self._repair_backoff: dict[tuple[bytes, str], float] = {}
        self._objects: dict[bytes, tuple[bytes, Manifest]] = {}
        self._health: dict[bytes, dict[int, float]] = {}
        self._object_locks: dict[bytes, trio.Lock] = {}
        self._load_objects()
        self.managed = ManagedShards(self)
        self.repairer = Repairer(self)  # node/shards/repair.py: resharing, holder and owner side
        self.fetcher = Fetcher(self)  # node/shards/fetch.py: fetches, fail-over, the owner's get

    # ================================================================== lifecycle

    def _load_objects(self) -> None:
        for p in sorted(self.objects_dir.glob("*.manifest")):
            try:
                frame = p.read_bytes()
                m = open_manifest(frame, owner=self.public_key)
            except (OSError, RemoteProtocolError) as exc:
                log.error("ignoring manifest %s: %s", p.name, exc)
                continue
            self._objects[m.object_id] = (frame, m)
            try:
                raw = json.loads((self.objects_dir / f"{m.object_id.hex()}.health.json").read_text())
                self._health[m.object_id] = {int(k): float(v) for k, v in raw.items()}
            except (OSError, ValueError, AttributeError):
                self._health[m.object_id] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The service task: parked-transfer and mailbox sweeping, and the repair monitor."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._managed_loop)
            nursery.start_soon(self._owner_loop)
            task_status.started()
            try:
                while True:
                    with trio.move_on_after(self.repair_tick_s):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    self._sweep()
                    await self.repairer.tick()
            finally:
                for parked in self._parked.values():
                    parked.writer.abort()
                self._parked.clear()

    async def _managed_loop(self) -> None:
        """Manager: schedule repairs; every node: rebuild shards the committed state assigns it."""
        while True:
            await trio.sleep(self.repair_tick_s)
            try:
                await self.managed.manager_tick()
                self.managed.holder_tick()
                await self.managed.stale_tick()
            except (ShardServiceError, RemoteProtocolError, OSError, StoreError) as exc:
                log.error("shard placement monitor: %s", exc)

    async def _owner_loop(self) -> None:
        """Owner: register unregistered objects, adopt placements a repair changed."""
        while True:
            await trio.sleep(self.repair_tick_s)
            try:
                await self.managed.owner_tick()
            except (ShardServiceError, RemoteProtocolError, OSError) as exc:
                log.error("shard owner monitor: %s", exc)

    def _sweep(self) -> None:
        now = trio.current_time()
        for tid, parked in list(self._parked.items()):
            if parked.expires_at <= now:
                parked.writer.abort()
                del self._parked[tid]
        for sid, box in list(self._mailboxes.items()):
            if now - box.created > MAILBOX_TTL_S:
                box.send.close()
                del self._mailboxes[sid]
        done = [j for j in self._jobs.values() if j.finished_at is not None]
        for j in sorted(done, key=lambda j: j.finished_at or 0)[: max(0, len(self._jobs) - MAX_JOBS // 2)]:
            self._jobs.pop(j.id, None)

    def on_quarantine(self, peer_id: str, reason: str) -> None:
        """Agent hook: look at our objects now (a revocation is repaired at once)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        h = self.store.health()
        return {
            "shards_held": h.shards,
            "store_used_bytes": h.used_bytes,
            "store_quota_bytes": h.quota_bytes,
            "store_owner_quota_bytes": h.owner_quota_bytes,
            "objects_owned": len(self._objects),
            "transfers_parked": len(self._parked),
            "reshare_sessions": len(self._mailboxes),
            **self.managed.status(),
        }

    # ================================================================== shared helpers

    async def _open(self, pid: str) -> tuple[Any, FrameReader]:
        stream = await self.agent._open_stream(ID.from_base58(pid), SHARD_PROTOCOL)
        return stream, FrameReader(stream)

    async def _send(self, stream: Any, msg: Any) -> None:
        await write_message(stream, msg, timeout_s=self.timeout_s)

    async def _recv(self, reader: FrameReader, types: Any) -> Any:
        return await read_message(reader, types, timeout_s=self.timeout_s)

    def _candidate_holders(self, exclude: set[str]) -> list[Candidate]:
        """Every connected peer but us and ``exclude``; unattested ones are listed as such so
        that a placement error counts them."""
        out = []
        managed = self.managed.active()
        for p in self.agent.peers.connected():
            if (
                p.peer_id in exclude
                or p.peer_id == self.agent.peer_id
                or self.agent.peers.is_revoked(p.peer_id)
            ):
                continue
            # Under a manager the committed state must admit a holder (the placement is
            # committed there) and gives its provider and region; without one, each peer is
            # its own provider and region.
            admitted, provider, region = self.managed.is_admitted(p.peer_id) if managed else (True, "", "")
            out.append(
                Candidate(
                    peer_id=p.peer_id,
                    score=float(p.score or 0),
                    provider=provider or p.peer_id,
                    region=region or p.peer_id,
                    attested=self.agent.peers.is_attested(p.peer_id) and admitted,
                    free_bytes=2**62,
                )
            )
        return out

    async def _place(self, n: int, exclude: set[str], seed: bytes, wait_s: float) -> tuple[str, ...]:
        """choose_holders over the current peers, waiting up to ``wait_s`` for enough of them to
        be attested (a peer re-attesting late drops out for a moment)."""
        min_score = float(self.agent.engine.policy.min_score)
        deadline = trio.current_time() + wait_s
        while True:
            try:
                return choose_holders(
                    self._candidate_holders(exclude), n, min_score=min_score, need_bytes=0, seed=seed
                )
            except PlacementError as exc:
                if trio.current_time() >= deadline:
                    raise ShardServiceError(
                        f"placement: {exc} (the owner never holds its own shards)"
                    ) from None
            await trio.sleep(0.5)

    def _rtt(self, pid: str) -> float:
        p = self.agent.peers.get(pid)
        return p.rtt_ms if p is not None and p.rtt_ms is not None else math.inf

    def _holder_problem(self, pid: str) -> str | None:
        p = self.agent.peers.get(pid)
        if p is None:
            return "unknown peer (never connected)"
        if self.agent.peers.is_revoked(pid):
            return f"revoked ({p.quarantine_reason})" if p.quarantine_reason else "revoked"
        if not p.connected:
            return "not connected"
        if not p.attested:
            return f"not attested ({p.quarantine_reason})"
        return None

    def _lock(self, oid: bytes) -> trio.Lock:
        return self._object_locks.setdefault(oid, trio.Lock())

    def _save_object(self, frame: bytes, m: Manifest) -> None:
        write_atomic(self.objects_dir / f"{m.object_id.hex()}.manifest", frame)
        self._objects[m.object_id] = (frame, m)
        self._save_health(m.object_id)

    def _save_health(self, oid: bytes) -> None:
        data = json.dumps({str(k): v for k, v in self._health.get(oid, {}).items()}).encode()
        write_atomic(self.objects_dir / f"{oid.hex()}.health.json", data)

    def _verified(self, oid: bytes, index: int) -> None:
        self._health.setdefault(oid, {})[index] = time.time()

    def _tmp_path(self, tag: str) -> Path:
        return self.staging / f"{secrets.token_hex(8)}.{tag}"

    # ================================================================== holder side

    async def handle(self, stream: Any, pid: str) -> None:
        """The gated stream handler (the agent has checked that ``pid`` is attested)."""
        reader = FrameReader(stream)
        try:
            first = await self._recv(reader, _FIRST)
            if isinstance(first, ShardOffer):
                await self._serve_store(stream, reader, pid, first)
            elif isinstance(first, ShardRequest):
                await self._serve_fetch(stream, reader, pid, first)
            elif isinstance(first, ShardErase):
                await self._serve_erase(stream, pid, first)
            elif isinstance(first, ReshareInvite):
                await self.repairer.serve_invite(stream, pid, first)
            elif isinstance(first, (ShardPlace, ShardDrop, ShardRepairDone)):
                await self._send(stream, await self.managed.serve(pid, first))
            elif isinstance(first, ShardManifestGet):
                await self.managed.serve_manifest(stream, pid, first)
            elif isinstance(first, RepairInvite):
                await self.managed.serve_repair_invite(stream, pid, first)
            else:
                await self._serve_mailbox(stream, pid, first)
        finally:
            await close_stream(stream)

    async def _refuse_offer(self, stream: Any, pid: str, offer: ShardOffer, reason: str) -> None:
        self.agent.counters.inc("shard_store_refused", reason.split(":")[0][:40])
        log.warning(
            "refused shard %s.%d from %s: %s",
            offer.manifest.manifest.object_id.hex(),
            offer.index,
            pid,
            reason,
            extra={"peer": pid},
        )
        await self._send(stream, ShardOfferReply(offer.transfer_id, False, _clip(reason), 0))

    async def _serve_store(self, stream: Any, reader: FrameReader, pid: str, offer: ShardOffer) -> None:
        m = offer.manifest.manifest
        frame = encode(offer.manifest)
        if public_key_of_peer(pid) != m.owner:
            await self._refuse_offer(stream, pid, offer, "only the manifest's owner may store shards")
            return
        if m.holder_of(offer.index) != self.agent.peer_id:
            await self._refuse_offer(stream, pid, offer, "the placement does not name this node")
            return
        parked = self._parked.pop(offer.transfer_id, None)
        if parked is not None and (
            parked.owner_pid != pid or parked.writer.index != offer.index or parked.writer.manifest != m
        ):
            parked.writer.abort()
            await self._refuse_offer(stream, pid, offer, "transfer id reused for another shard")
            return
        if parked is not None:
            writer = parked.writer
        else:
            try:
                writer = await trio.to_thread.run_sync(self.store.begin_put, frame, offer.index)
            except ShardExists:
                # Same manifest: a retried transfer whose ack was lost. A newer revision of it:
                # the owner tells us the placement after a repair; keep our data, take the manifest.
                try:
                    same = await trio.to_thread.run_sync(self.store.manifest_frame, m.object_id, offer.index)
                    if same != frame:
                        await trio.to_thread.run_sync(self.store.update_manifest, frame, offer.index)
                        same = await trio.to_thread.run_sync(
                            self.store.manifest_frame, m.object_id, offer.index
                        )
                except StoreError as exc:
                    await self._refuse_offer(stream, pid, offer, f"a different shard is stored here: {exc}")
                    return
                if same != frame:
                    await self._refuse_offer(
                        stream, pid, offer, "a newer manifest of this shard is stored here"
                    )
                    return
                await self._send(stream, ShardOfferReply(offer.transfer_id, False, ALREADY_STORED, 0))
                return
            except OwnerQuotaExceeded as exc:
                await self._refuse_offer(stream, pid, offer, f"owner quota: {exc}")
                return
            except QuotaExceeded as exc:
                await self._refuse_offer(stream, pid, offer, f"quota: {exc}")
                return
            except StoreError as exc:
                await self._refuse_offer(stream, pid, offer, f"store: {exc}")
                return
        park = True
        try:
            await self._send(stream, ShardOfferReply(offer.transfer_id, True, "", writer.received_bytes))
            await self._receive_fragment(stream, reader, offer, writer)
            park = False
            final = await self._recv(reader, (ShardKeyShare, ReshareInvite))
            if isinstance(final, ShardKeyShare):
                if (
                    final.transfer_id != offer.transfer_id
                    or final.object_id != m.object_id
                    or final.index != offer.index
                ):
                    raise RemoteProtocolError("invalid", "key share of another shard")
                share = KeyShare(offer.index + 1, final.share)
            else:
                share = await self._collect_contributions(pid, m, offer.index, final)
            await trio.to_thread.run_sync(writer.commit, share)
        except RemoteProtocolError:
            if (
                park
                and writer.received_bytes > 0
                and len(self._parked) < MAX_PARKED_TRANSFERS
                and sum(p.owner_pid == pid for p in self._parked.values()) < MAX_PARKED_PER_PEER
            ):
                self._parked[offer.transfer_id] = _Parked(writer, pid, trio.current_time() + PARKED_TTL_S)
                log.info(
                    "transfer of %s.%d from %s interrupted at %d bytes; kept for resumption",
                    m.object_id.hex(),
                    offer.index,
                    pid,
                    writer.received_bytes,
                extra={"peer": pid})
            else:
                writer.abort()
            raise
        except (IntegrityError, ShareError, StoreError) as exc:
            writer.abort()
            reason = f"{type(exc).__name__}: {exc}"
            self.agent.counters.inc("shard_store_failed", type(exc).__name__)
            log.warning(
                "shard %s.%d from %s not stored: %s",
                m.object_id.hex(),
                offer.index,
                pid,
                reason,
                extra={"peer": pid},
            )
            with contextlib.suppress(RemoteProtocolError):
                await self._send(
                    stream, ShardAck(offer.transfer_id, False, _clip(reason), writer.received_bytes)
                )
            return
        except BaseException:
            writer.abort()
            raise
        self.agent.counters.inc("shard_stored")
        log.info("stored shard %s.%d for %s", m.object_id.hex(), offer.index, pid, extra={"peer": pid})
        await self._send(stream, ShardAck(offer.transfer_id, True, "", writer.received_bytes))

    async def _receive_fragment(
        self, stream: Any, reader: FrameReader, offer: ShardOffer, writer: ShardWriter
    ) -> None:
        size = offer.manifest.manifest.fragment_size
        while writer.received_bytes < size:
            chunk = await self._recv(reader, ShardChunk)
            if chunk.transfer_id != offer.transfer_id or chunk.offset != writer.received_bytes:
                raise RemoteProtocolError("invalid", "chunk out of order")
            if chunk.last != (chunk.offset + len(chunk.data) == size) or not chunk.data:
                raise RemoteProtocolError("invalid", "chunk length or last flag wrong")
            # FragmentCorrupt (too long) aborts the writer and is reported by the caller.
            await trio.to_thread.run_sync(writer.write, chunk.data)
            await self._send(stream, ShardAck(offer.transfer_id, True, "", writer.received_bytes))

    async def _collect_contributions(
        self, pid: str, m: Manifest, index: int, invite: ReshareInvite
    ) -> KeyShare:
        """New holder: the owner's invite arrived instead of a key share; combine the helpers'
        masked contributions (each from the holder the manifest names for that point)."""
        transcript = invite_transcript(
            invite.session_id, invite.object_id, invite.target_x, invite.helpers_x, invite.new_holder_peer_id
        )
        if (
            invite.object_id != m.object_id
            or invite.target_x != index + 1
            or invite.new_holder_peer_id != self.agent.peer_id
            or len(invite.helpers_x) != m.k
            or not verify_ed25519(m.owner, invite.signature, transcript)
        ):
            raise RemoteProtocolError("invalid", "reshare invite does not match this shard")
        box = self._mailbox(invite.session_id)
        got: dict[int, bytes] = {}

        def contribution(sender: str, msg: Any) -> tuple[int, bytes] | None:
            if (
                not isinstance(msg, ReshareContribution)
                or msg.object_id != m.object_id
                or msg.target_x != invite.target_x
                or msg.helper_x not in invite.helpers_x
                or m.holder_of(msg.helper_x - 1) != sender
                or msg.helper_x in got
            ):
                return None
            return msg.helper_x, msg.value

        complete = await self._collect(box, contribution, got, lambda: len(got) >= len(invite.helpers_x),
                                       "contribution")
        self._drop_mailbox(invite.session_id)
        if not complete:
            raise ShareError(
                f"only {len(got)} of {len(invite.helpers_x)} reshare contributions arrived "
                f"within {self.timeout_s}s"
            )
        return combine_contributions(got, invite.helpers_x, invite.target_x)

    def _mailbox(self, session_id: bytes, opened_by: str | None = None) -> _Mailbox:
        """The session's mailbox, created if need be; ``opened_by`` is the peer whose message
        creates it, None when this node itself takes part (which claims it)."""
        box = self._mailboxes.get(session_id)
        if box is None:
            if len(self._mailboxes) >= MAX_MAILBOXES:
                raise RemoteProtocolError("overload", "too many reshare sessions")
            box = self._mailboxes[session_id] = _Mailbox(opened_by)
        elif opened_by is None:
            box.opened_by = None
        return box

    async def _collect(self, box: Any, accept: Callable[[str, Any], tuple[int, bytes] | None],
                       into: dict[int, bytes], done: Callable[[], bool], what: str) -> bool:
        """Take reshare messages from ``box`` into ``into`` until ``done()``; ``accept`` returns
        ``(index, value)`` for a valid one, None otherwise (logged, counted, dropped). False when
        ``timeout_s`` ran out first."""
        with trio.move_on_after(self.timeout_s):
            while not done():
                sender, msg = await box.recv.receive()
                item = accept(sender, msg)
                if item is None:
                    self.agent.counters.inc("remote_error", f"{SHARD_PROTOCOL}:reshare-{what}")
                    log.warning("dropped a reshare message from %s: not a valid %s for this session",
                                sender, what, extra={"peer": sender})
                    continue
                into[item[0]] = item[1]
        return done()

    def _drop_mailbox(self, session_id: bytes) -> None:
        box = self._mailboxes.pop(session_id, None)
        if box is not None:
            box.send.close()

    async def _serve_mailbox(self, stream: Any, pid: str, msg: ReshareMaskSeed | ReshareContribution) -> None:
        box = self._mailboxes.get(msg.session_id)
        if box is None:
            unclaimed = sum(b.opened_by == pid for b in self._mailboxes.values())
            if unclaimed >= MAX_UNCLAIMED_MAILBOXES_PER_PEER:
                self.agent.counters.inc("shard_mailbox_refused", "sessions-per-peer")
                raise RemoteProtocolError(
                    "overload", f"{unclaimed} reshare sessions opened by this peer are pending"
                )
            box = self._mailbox(msg.session_id, opened_by=pid)
        if box.sent.get(pid, 0) >= MAX_MAILBOX_MESSAGES_PER_PEER:
            self.agent.counters.inc("shard_mailbox_refused", "messages-per-peer")
            raise RemoteProtocolError("overload", "too many reshare messages from this peer")
        try:
            box.send.send_nowait((pid, msg))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.agent.counters.inc("shard_mailbox_refused", "full-or-closed")
            raise RemoteProtocolError("overload", "reshare mailbox full or closed") from None
        box.sent[pid] = box.sent.get(pid, 0) + 1
        await self._send(stream, ShardAck(msg.session_id, True, "", 0))

    async def _serve_fetch(self, stream: Any, reader: FrameReader, pid: str, req: ShardRequest) -> None:
        oid, index = req.object_id, req.index
        name = f"{oid.hex()}.{index}"

        async def refuse(reason: str) -> None:
            self.agent.counters.inc("shard_fetch_refused", reason.split(":")[0][:40])
            log.warning(
                "refused to release shard %s to %s: %s",
                name,
                pid,
                reason,
                extra={"peer": pid, "reason": reason},
            )
            await self._send(stream, ShardAck(req.request_id, False, _clip(reason), 0))

        try:
            m = await trio.to_thread.run_sync(self.store.manifest, oid, index)
        except ShardNotFound:
            await refuse("no such shard here")
            return
        except StoredShardCorrupt as exc:
            await refuse(f"stored shard corrupt: {exc}")
            return
        if public_key_of_peer(pid) != req.requester:
            await refuse("the requester key is not the attested peer's key")
            return
        if not m.may_fetch(req.requester):
            # A repairing holder may have the ciphertext fragment, never the key share, and only
            # when our own view of the committed placement names it (docs/shards.md).
            if req.want_share:
                await refuse("not the owner or a principal the manifest authorises")
                return
            if await self.managed.named_for_repair(pid, oid, m.owner) is None:
                self.managed.refused(pid, f"fragment {name}", "not named by the committed placement")
                await refuse("not the owner or a principal the manifest authorises, nor a repairing "
                             "holder named by the committed placement")
                return
        nonce = os.urandom(32)
        await self._send(stream, ShardChallenge(req.request_id, nonce))
        resp = await self._recv(reader, ShardChallengeResponse)
        if resp.request_id != req.request_id or not verify_ed25519(
            req.requester, resp.signature, fetch_transcript(req, nonce, self.agent.peer_id)
        ):
            await refuse("challenge signature invalid")
            return
        if not self.agent.peers.is_attested(pid):  # attestation may have lapsed meanwhile
            await refuse("requester no longer attested")
            return
        try:
            share = (
                await trio.to_thread.run_sync(self.store.read_share, oid, index) if req.want_share else None
            )
            it = await trio.to_thread.run_sync(self.store.read_fragment, oid, index)
        except StoreError as exc:
            await refuse(f"stored shard unreadable: {exc}")
            return
        if share is not None:  # first, so that the requester can open chunks as they arrive
            await self._send(stream, ShardKeyShare(req.request_id, oid, index, share.value))
        offset = acked = 0
        while True:
            try:
                block = await trio.to_thread.run_sync(next, it, None)
            except StoreError as exc:  # at-rest tamper or rot, or the fragment hash at the end
                self.agent.counters.inc("shard_corrupt_at_rest")
                log.error("stored shard %s is corrupt: %s", name, exc)
                await refuse(f"stored shard corrupt: {exc}")
                return
            if block is None:
                break
            while offset - acked >= FETCH_WINDOW_BYTES:
                acked = await self._expect_fetch_ack(reader, req.request_id, acked, offset)
            last = offset + len(block) == m.fragment_size
            await self._send(stream, ShardChunk(req.request_id, offset, block, last))
            offset += len(block)
        while acked < offset:
            acked = await self._expect_fetch_ack(reader, req.request_id, acked, offset)
        await self._send(stream, ShardAck(req.request_id, True, "", offset))
        self.agent.counters.inc("shard_released")
        log.info(
            "released shard %s to %s%s",
            name,
            pid,
            " with its key share" if share else "",
            extra={"peer": pid},
        )

    async def _expect_ack(self, reader: FrameReader, tid: bytes) -> ShardAck:
        ack = await self._recv(reader, ShardAck)
        if ack.transfer_id != tid:
            raise RemoteProtocolError("invalid", "ack of another transfer")
        if not ack.ok:
            raise RemoteProtocolError("refused", ack.reason)
        result: ShardAck = ack
        return result

    async def _expect_fetch_ack(self, reader: FrameReader, tid: bytes, acked: int, sent: int) -> int:
        """A fetch's acknowledgements are cumulative: the bytes received so far, which only grow
        and never pass what was sent."""
        ack = await self._expect_ack(reader, tid)
        if not acked < ack.received_bytes <= sent:
            raise RemoteProtocolError("invalid", "acknowledged bytes out of order")
        return int(ack.received_bytes)

    async def _serve_erase(self, stream: Any, pid: str, req: ShardErase) -> None:
        receipt = await trio.to_thread.run_sync(self.store.erase_request, req)
        log.info(
            "erased shard %s.%d on request of %s (existed: %s)",
            req.object_id.hex(),
            req.index,
            pid,
            receipt.existed,
            extra={"peer": pid},
        )
        self.agent.counters.inc("shard_erased")
        await self._send(stream, receipt)

    # ================================================================== owner: store

    async def _store_shard(
        self,
        holder: str,
        frame: bytes,
        m: Manifest,
        index: int,
        path: Path,
        finish: _Finish,
        progress: Callable[[int], None],
        *,
        attempts: int = STORE_ATTEMPTS,
    ) -> None:
        """Send fragment ``index`` (from ``path``) to ``holder``, resuming after broken streams;
        ``finish`` sends what closes the transfer (the key share, or a reshare invite)."""
        tid = os.urandom(16)
        signed = decode(frame, SignedManifest)
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                await trio.sleep(0.5 * attempt)
            try:
                await self._store_attempt(holder, signed, m, index, path, tid, finish, progress)
                return
            except ShardServiceError:
                raise
            except RemoteProtocolError as exc:
                last_error = str(exc)
                log.info(
                    "store of %s.%d on %s broke (%s); attempt %d/%d",
                    m.object_id.hex(),
                    index,
                    holder,
                    exc,
                    attempt + 1,
                    attempts,
                extra={"peer": holder})
        raise ShardServiceError(f"shard {index} on {holder}: {last_error}")

    async def _store_attempt(
        self,
        holder: str,
        signed: SignedManifest,
        m: Manifest,
        index: int,
        path: Path,
        tid: bytes,
        finish: _Finish,
        progress: Callable[[int], None],
    ) -> None:
        stream, reader = await self._open(holder)
        try:
            await self._send(stream, ShardOffer(tid, signed, index))
            reply = await self._recv(reader, ShardOfferReply)
            if not reply.accepted:
                if reply.reason == ALREADY_STORED:
                    return
                raise ShardServiceError(f"shard {index} on {holder}: refused: {reply.reason}")
            offset = reply.resume_offset
            if offset > m.fragment_size or reply.transfer_id != tid:
                raise RemoteProtocolError("invalid", "bad offer reply")
            acked = offset
            progress(acked)
            with open(path, "rb") as f:
                f.seek(offset)
                in_flight = 0
                while offset < m.fragment_size:
                    while in_flight >= WINDOW_CHUNKS:
                        acked = await self._store_ack(reader, tid, acked, progress)
                        in_flight -= 1
                    data = await trio.to_thread.run_sync(f.read, min(CHUNK_BYTES, m.fragment_size - offset))
                    if not data:
                        raise ShardServiceError(f"staging file of fragment {index} is short")
                    await self._send(
                        stream, ShardChunk(tid, offset, data, offset + len(data) == m.fragment_size)
                    )
                    offset += len(data)
                    in_flight += 1
                while in_flight:
                    acked = await self._store_ack(reader, tid, acked, progress)
                    in_flight -= 1
            await finish(stream, tid)
            ack = await self._recv(reader, ShardAck)
            if not ack.ok:
                raise ShardServiceError(f"shard {index} on {holder}: not stored: {ack.reason}")
        finally:
            await close_stream(stream)

    async def _store_ack(
        self, reader: FrameReader, tid: bytes, acked: int, progress: Callable[[int], None]
    ) -> int:
        ack = await self._recv(reader, ShardAck)
        if ack.transfer_id != tid:
            raise RemoteProtocolError("invalid", "ack of another transfer")
        if not ack.ok:
            raise ShardServiceError(f"holder refused: {ack.reason}")
        received: int = ack.received_bytes
        progress(received - acked)
        return received

    # ================================================================== owner: put

    async def put(
        self, path: Path, *, n: int, k: int, authorised: tuple[bytes, ...] = (), job: Job | None = None
    ) -> dict[str, Any]:
        """Seal, split and place ``path`` on n attested holders; returns the object summary."""
        job = job or Job("-", "put")
        path = Path(path)
        try:
            size = (await trio.to_thread.run_sync(path.stat)).st_size
        except OSError as exc:
            raise ShardServiceError(f"cannot read {path}: {exc.strerror}") from None
        if not 1 <= k <= n <= 255:
            raise ShardServiceError(f"need 1 <= k <= n <= 255 (got k={k}, n={n})")
        oid = os.urandom(16)
        holders = list(await self._place(n, set(), oid, PLACEMENT_WAIT_S))
        paths = [self._tmp_path(f"put{i}") for i in range(n)]
        try:
            job.phase, job.done, job.total = "sealing", 0, size
            sealed = await trio.to_thread.run_sync(self._seal_to_files, path, paths, n, k, oid, job)
            m = build_manifest(sealed, self._key, holders, authorised=authorised)
            current = (sign_manifest(m, self._key), m)
            job.phase, job.done, job.total, job.holders = "sending", 0, n * m.fragment_size, list(holders)
            failures: list[str] = []
            stored: dict[int, bytes] = {}  # index -> the manifest frame its holder stored
            tried = set(holders)
            lock = trio.Lock()

            async def replace(i: int, error: str) -> bool:
                """Holder i failed for good: move shard i to another eligible peer (a new
                manifest revision names it), if one is left."""
                nonlocal current
                async with lock:
                    try:
                        (new,) = await self._place(1, tried, oid + bytes([i]), 0)
                    except ShardServiceError as exc:
                        failures.append(f"{error} (no other holder to take it: {exc})")
                        return False
                    tried.add(new)
                    old = holders[i]
                    holders[i] = new
                    job.holders = list(holders)
                    new_m = current[1].with_placement(list(enumerate(holders)))
                    current = (sign_manifest(new_m, self._key), new_m)
                self.agent.counters.inc("shard_put_replaced")
                log.warning("put %s: holder %s of shard %d failed (%s); sending it to %s instead",
                            oid.hex(), old, i, error, new)
                return True

            async def send_one(i: int) -> None:
                while True:
                    frame, cur = current
                    mine = [0]

                    def bump(nbytes: int, mine: list[int] = mine) -> None:
                        mine[0] += nbytes
                        job.done += nbytes

                    try:
                        await self._store_shard(
                            holders[i], frame, cur, i, paths[i],
                            self._finish_with_share(oid, i, sealed.shares[i]), bump,
                        )
                        stored[i] = frame
                        return
                    except ShardServiceError as exc:
                        job.done -= mine[0]
                        if not await replace(i, str(exc)):
                            return

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(send_one, i)
            frame, m = current
            if failures:
                await self._erase_indices(m, sorted(stored))
                raise ShardServiceError("put failed, nothing kept: " + "; ".join(sorted(failures)))
            # A replacement re-signed the manifest: holders stored before it get the last revision.
            async with trio.open_nursery() as nursery:
                for i, got in stored.items():
                    if got != frame:
                        nursery.start_soon(self.repairer.push_manifest_quietly, holders[i], frame, m, i)
            now = time.time()
            self._health[oid] = {i: now for i in range(n)}
            self._save_object(frame, m)
        finally:
            for p in paths:
                p.unlink(missing_ok=True)
        committed: bool | str = False
        if self.managed.role() is not None:
            with trio.move_on_after(PLACEMENT_WAIT_S):
                while not self.managed.active():
                    await trio.sleep(0.2)
            if self.managed.active():
                reply = await self.managed.register(frame, 0)
                committed = True if reply.ok else reply.reason
            if committed is not True:
                self.managed._unregistered.add(oid)  # the owner's monitor registers it later
                log.warning("put %s: placement not committed yet (%s); will retry", oid.hex(), committed)
        log.info("put %s: %d bytes as %d-of-%d on %s", oid.hex(), size, k, n, ", ".join(holders),
                 extra={"peers": list(holders)})
        return {"object_id": oid.hex(), "size": size, "k": k, "n": n, "holders": list(holders),
                "revision": m.revision, "placement_committed": committed is True}

    def _finish_with_share(self, oid: bytes, index: int, share: KeyShare) -> _Finish:
        async def finish(stream: Any, tid: bytes) -> None:
            await self._send(stream, ShardKeyShare(tid, oid, index, share.value))

        return finish

    def _seal_to_files(self, src: Path, paths: list[Path], n: int, k: int, oid: bytes, job: Job) -> Any:
        files: list[BinaryIO] = []
        try:
            for p in paths:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                files.append(os.fdopen(fd, "wb"))
            with open(src, "rb") as plain:
                reader = _CountingReader(plain, job)
                return seal_and_split(reader, files, k=k, n=n, object_id=oid)
        finally:
            for sink in files:
                sink.close()

    # ================================================================== owner: get

    async def get(
        self, oid: bytes, out: Path, *, job: Job | None = None, manifest_frame: bytes | None = None
    ) -> dict[str, Any]:
        """Rebuild object ``oid`` into ``out`` atomically (temp file + rename), or raise with the
        failed holders named and no output file (node/shards/fetch.py, ``Fetcher.get``)."""
        return await self.fetcher.get(oid, out, job or Job("-", "get"), manifest_frame)

    # ================================================================== owner: rm

    async def rm(self, oid: bytes) -> dict[str, Any]:
        """Every holder crypto-shreds its shard and returns a signed receipt, which is verified.
        The manifest is removed only when every receipt checks out."""
        if oid not in self._objects:
            raise ShardServiceError(f"unknown object {oid.hex()} (no manifest on this node)")
        async with self._lock(oid):
            m = self._objects[oid][1]
            committed = self.managed.owned_placement(m)
            targets = None
            if committed is not None:  # a repair may have moved shards since the manifest
                targets = [(h.index, h.holder) for h in committed.holders]
                targets += [(e.index, e.peer_id) for e in m.placement if (e.index, e.peer_id) not in targets
                            and not self._holder_problem(e.peer_id)]
            receipts, failures = await self._erase_indices(m, list(range(m.n)), targets=targets)
            if failures:
                raise ShardServiceError(
                    f"rm {oid.hex()}: {len(failures)} holder(s) gave no valid receipt, "
                    f"the manifest is kept (run rm again): " + "; ".join(map(str, failures))
                )
            if committed is not None:
                reply = await self.managed.ask(ShardDrop(os.urandom(16), oid))
                if not reply.ok:
                    raise ShardServiceError(
                        f"rm {oid.hex()}: every shard is erased but the manager did not drop the "
                        f"placement ({reply.reason}); run rm again"
                    )
            (self.objects_dir / f"{oid.hex()}.manifest").unlink(missing_ok=True)
            (self.objects_dir / f"{oid.hex()}.health.json").unlink(missing_ok=True)
            self._objects.pop(oid, None)
            self._health.pop(oid, None)
        log.info("rm %s: %d receipts verified", oid.hex(), len(receipts))
        return {"object_id": oid.hex(), "receipts": receipts}

    async def _erase_indices(
        self, m: Manifest, indices: list[int], *, targets: list[tuple[int, str]] | None = None
    ) -> tuple[list[dict[str, Any]], list[HolderFailure]]:
        """Erase shards ``indices`` on the manifest's holders, or on every (index, peer) of
        ``targets`` (a committed placement, plus any old holder still reachable)."""
        receipts: list[dict[str, Any]] = []
        failures: list[HolderFailure] = []
        if targets is None:
            targets = [(i, m.holder_of(i)) for i in indices]

        async def one(i: int, pid: str) -> None:
            try:
                r = await self.erase_on(pid, m.object_id, i)
                receipts.append(
                    {"index": i, "holder": pid, "existed": r.existed, "signature": r.signature.hex()}
                )
            except (RemoteProtocolError, ShardServiceError) as exc:
                failures.append(HolderFailure(i, pid, str(exc)))

        async with trio.open_nursery() as nursery:
            for i, pid in targets:
                nursery.start_soon(one, i, pid)
        receipts.sort(key=lambda r: (r["index"], r["holder"]))
        return receipts, failures

    async def erase_on(self, pid: str, oid: bytes, index: int) -> ShardEraseReceipt:
        problem = self._holder_problem(pid)
        if problem:
            raise ShardServiceError(problem)
        nonce = os.urandom(32)
        sig = self._key.sign(erase_transcript(oid, index, pid, nonce))
        stream, reader = await self._open(pid)
        try:
            await self._send(stream, ShardErase(oid, index, pid, nonce, sig))
            receipt: ShardEraseReceipt = await self._recv(reader, ShardEraseReceipt)
        finally:
            await close_stream(stream)
        key = public_key_of_peer(pid)
        if (
            key is None
            or not verify_receipt(receipt, key)
            or receipt.nonce != nonce
            or receipt.object_id != oid
            or receipt.index != index
            or receipt.holder_peer_id != pid
        ):
            raise ShardServiceError("erase receipt invalid")
        return receipt

    # ================================================================== owner: repair

    async def repair(self, oid: bytes, lost: str, reason: str) -> dict[str, Any]:
        """Regenerate the shard ``lost`` held onto a new attested holder and re-sign the
        manifest (node/shards/repair.py)."""
        return await self.repairer.repair(oid, lost, reason)

    # ================================================================== ls

    def ls(self) -> list[dict[str, Any]]:
        out = []
        for oid, (_, m) in sorted(self._objects.items(), key=lambda kv: kv[0]):
            verified = self._health.get(oid, {})
            holders = []
            committed = self.managed.owned_placement(m)
            where = (
                [(h.index, h.holder, h.pending) for h in committed.holders]
                if committed is not None
                else [(e.index, e.peer_id, False) for e in m.placement]
            )
            for index, pid, pending in sorted(where):
                problem = "being repaired" if pending else self._holder_problem(pid)
                holders.append(
                    {
                        "index": index,
                        "peer_id": pid,
                        "attested": problem is None,
                        "problem": problem,
                        "last_verified": verified.get(index),
                    }
                )
            healthy = sum(1 for h in holders if h["attested"])
            state = "healthy" if healthy == m.n else ("degraded" if healthy >= m.k else "unavailable")
            out.append(
                {
                    "object_id": oid.hex(),
                    "size": m.plaintext_size,
                    "k": m.k,
                    "n": m.n,
                    "revision": m.revision,
                    "placement": f"committed (epoch {committed.epoch})" if committed else "manifest",
                    "healthy_holders": healthy,
                    "health": state,
                    "holders": holders,
                }
            )
        return out

    # ================================================================== control commands


class _CountingReader:
    def __init__(self, f: BinaryIO, job: Job) -> None:
        self._f, self._job = f, job

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._job.done += len(data)
        return data


_SERVICES: dict[str, ShardService] = {}


def service_of(agent: Agent) -> ShardService:
    return _SERVICES[agent.peer_id]


def attach(agent: Agent, data_dir: Any, **options: Any) -> ShardService:
    """Runtime extension hook: serve the shard protocol (its control commands are
    node/shards/control.py, the next extension).

    ``data_dir`` is a :class:`node.datadir.DataDir` or a path; options go to :class:`ShardService`.
    Operators may set ``ENCLAVE_SWARM_SHARD_REPAIR_GRACE_S`` (default 30),
    ``ENCLAVE_SWARM_SHARD_QUOTA_BYTES`` (default half the disk's free space at start) and
    ``ENCLAVE_SWARM_SHARD_OWNER_SHARE`` (the fraction of that quota one owner may use, default
    0.25; 1 lets one owner fill the holder).
    """
    root = Path(getattr(data_dir, "path", data_dir))
    for key, env in (
        ("repair_grace_s", "ENCLAVE_SWARM_SHARD_REPAIR_GRACE_S"),
        ("quota_bytes", "ENCLAVE_SWARM_SHARD_QUOTA_BYTES"),
        ("owner_share", "ENCLAVE_SWARM_SHARD_OWNER_SHARE"),
    ):
        if key not in options and os.environ.get(env):
            raw = os.environ[env]
            options[key] = int(raw) if key == "quota_bytes" else float(raw)
    svc = ShardService(agent, root, **options)
    _SERVICES[agent.peer_id] = svc
    agent.set_handler(SHARD_PROTOCOL, svc.handle, gated=True)
    agent.add_service(svc.run)
    agent.add_status("shards", svc.status)
    agent.on_quarantine(svc.on_quarantine)
    return svc
