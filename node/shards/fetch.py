"""Fetching shards: one fragment from a holder, k of them in parallel with fail-over, and the
owner's get, which combines while it fetches.

A fetch (``shard-request``, node/shards/messages.py) proves the requester's key with a signed
fresh challenge; the holder then sends the key share (when asked) and the fragment in chunks,
which the requester hashes and writes to a staging file as they arrive, acknowledging
cumulatively every half window, and checks against the signed manifest at the end.
:meth:`Fetcher.fetch_k` runs k such fetches in parallel from the fastest healthy holders,
taking the next holder when one fails; the repair paths use it without key shares.
:meth:`Fetcher.get` feeds every write to a :class:`~node.shards.combine.FragmentFeed`, so that a
worker thread decodes and opens each stripe as soon as k staging files hold it, and renames the
finished file over the output (docs/shards.md, "get").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.shards.combine import FragmentFeed, NotEnoughFragments, combine_streaming
from node.shards.crypto import FragmentCorrupt, IntegrityError, ShareCorrupt, check_shares
from node.shards.errors import FetchFailed, HolderFailure, ShardServiceError
from node.shards.gf256 import KeyShare
from node.shards.manifest import Manifest, open_manifest
from node.shards.messages import (
    MAX_CHUNK_DATA_BYTES,
    ShardAck,
    ShardChallenge,
    ShardChallengeResponse,
    ShardChunk,
    ShardKeyShare,
    ShardRequest,
    fetch_transcript,
)
from overlay.errors import RemoteProtocolError
from overlay.framing import close_stream

if TYPE_CHECKING:
    from node.shards.service import Job, ShardService

log = logging.getLogger("enclave_swarm.shards")

# A fetch's holder keeps at most this many unacknowledged bytes in flight (8 chunks); the
# requester acknowledges (cumulatively) every half window, as yamux credits its window
# (libp2p.md, fix 2).
FETCH_WINDOW_BYTES = 8 * MAX_CHUNK_DATA_BYTES
FETCH_ACK_BYTES = FETCH_WINDOW_BYTES // 2


class Fetcher:
    """The fetching duties of one :class:`~node.shards.service.ShardService`."""

    def __init__(self, svc: ShardService) -> None:
        self.svc = svc

    async def fetch_fragment(
        self,
        holder: str,
        m: Manifest,
        index: int,
        dest: Path,
        *,
        want_share: bool,
        progress: Callable[[int], None] = lambda _n: None,
        feed: FragmentFeed | None = None,
    ) -> KeyShare | None:
        """Fetch fragment ``index`` from ``holder`` into ``dest``, verified against ``m``; with
        ``want_share`` also its key share (checked against the manifest). ``feed`` (a get's
        combiner) learns the share, each write and the verdict as they happen. Raises
        FetchFailed."""
        try:
            share = await self._fetch_attempt(holder, m, index, dest, want_share, progress, feed)
        except (RemoteProtocolError, IntegrityError, OSError) as exc:
            if feed is not None:
                feed.failed(index)
            dest.unlink(missing_ok=True)
            raise FetchFailed(index, holder, str(exc)) from None
        except BaseException:
            if feed is not None:
                feed.failed(index)
            dest.unlink(missing_ok=True)
            raise
        if feed is not None:
            feed.verified(index)
        return share

    async def _fetch_attempt(
        self,
        holder: str,
        m: Manifest,
        index: int,
        dest: Path,
        want_share: bool,
        progress: Callable[[int], None],
        feed: FragmentFeed | None,
    ) -> KeyShare | None:
        rid = os.urandom(16)
        req = ShardRequest(rid, m.object_id, index, self.svc.public_key, want_share)
        stream, reader = await self.svc._open(holder)
        try:
            await self.svc._send(stream, req)
            first = await self.svc._recv(reader, (ShardChallenge, ShardAck))
            if isinstance(first, ShardAck):
                raise FetchFailed(index, holder, f"refused: {first.reason}")
            if first.request_id != rid:
                raise RemoteProtocolError("invalid", "challenge for another request")
            sig = self.svc._key.sign(fetch_transcript(req, first.nonce, holder))
            await self.svc._send(stream, ShardChallengeResponse(rid, sig))
            share = None
            if want_share:  # the holder sends the key share before the fragment
                msg = await self.svc._recv(reader, (ShardKeyShare, ShardAck))
                if isinstance(msg, ShardAck):
                    raise FetchFailed(index, holder, f"refused: {msg.reason}")
                if msg.transfer_id != rid or msg.object_id != m.object_id or msg.index != index:
                    raise RemoteProtocolError("invalid", "key share of another request")
                share = KeyShare(index + 1, msg.share)
                try:
                    check_shares(m.params(), [share])
                except ShareCorrupt as exc:
                    raise FetchFailed(index, holder, f"key share: {exc}") from None
            h = hashlib.sha256()
            got = acked = 0
            began = trio.current_time()
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if feed is not None:
                    if share is not None:
                        feed.share(share)
                    feed.started(index, dest)
                while got < m.fragment_size:
                    msg = await self.svc._recv(reader, (ShardChunk, ShardAck))
                    if isinstance(msg, ShardAck):
                        raise FetchFailed(index, holder, f"refused: {msg.reason}")
                    if msg.transfer_id != rid or msg.offset != got or not msg.data:
                        raise RemoteProtocolError("invalid", "chunk out of order")
                    if got + len(msg.data) > m.fragment_size or msg.last != (
                        got + len(msg.data) == m.fragment_size
                    ):
                        raise RemoteProtocolError("invalid", "chunk length or last flag wrong")
                    # Hashing and the write both release the GIL: one thread hop for the two.
                    await trio.to_thread.run_sync(_hash_and_write, h, fd, msg.data)
                    got += len(msg.data)
                    progress(len(msg.data))
                    if feed is not None:
                        feed.wrote(index, got)
                    if got - acked >= FETCH_ACK_BYTES or got == m.fragment_size:
                        await self.svc._send(stream, ShardAck(rid, True, "", got))
                        acked = got
            finally:
                os.close(fd)
            if not hmac.compare_digest(h.digest(), m.fragment_hashes[index]):
                raise FragmentCorrupt(index, "hash mismatch on receipt")
            self.svc.agent.peers.on_transfer(holder, got, trio.current_time() - began)
            done = await self.svc._recv(reader, ShardAck)
            if not done.ok:
                raise FetchFailed(index, holder, f"refused: {done.reason}")
            return share
        finally:
            await close_stream(stream)

    async def fetch_k(
        self,
        m: Manifest,
        *,
        want_share: bool,
        exclude: set[str],
        job: Job | None,
        holders: list[tuple[int, str]] | None = None,
        feed: FragmentFeed | None = None,
    ) -> tuple[dict[int, tuple[Path, KeyShare | None]], list[HolderFailure]]:
        """Fetch k verified fragments (and shares) from the fastest healthy holders in parallel,
        failing over to the next holder when one fails. ``holders`` ((index, peer id), default
        the manifest's placement) says where to look; ``feed`` is told everything as it
        arrives. Returns what was had and every failure."""
        failures: list[HolderFailure] = []
        ready: list[tuple[float, int, str]] = []
        for index, pid in holders if holders is not None else [(p.index, p.peer_id) for p in m.placement]:
            if pid in exclude:
                continue
            problem = self.svc._holder_problem(pid)
            if problem:
                failures.append(HolderFailure(index, pid, problem))
            else:
                ready.append((self.svc._rtt(pid), index, pid))
        ready.sort()
        queue = list(ready)
        got: dict[int, tuple[Path, KeyShare | None]] = {}

        async def worker() -> None:
            while queue and len(got) < m.k:
                _, index, pid = queue.pop(0)
                dest = self.svc._tmp_path(f"get{index}")
                mine = [0]

                def bump(nbytes: int, mine: list[int] = mine) -> None:
                    mine[0] += nbytes
                    if job is not None:
                        job.done += nbytes

                try:
                    share = await self.fetch_fragment(
                        pid, m, index, dest, want_share=want_share, progress=bump, feed=feed
                    )
                except FetchFailed as exc:
                    if job is not None:
                        job.done -= mine[0]
                    failures.append(exc.failure)
                    log.warning(
                        "fetch of %s.%d from %s failed: %s; trying another holder",
                        m.object_id.hex(),
                        index,
                        pid,
                        exc.failure.reason,
                        extra={"peer": pid},
                    )
                    continue
                if len(got) >= m.k:
                    dest.unlink(missing_ok=True)
                    return
                got[index] = (dest, share)
                if m.object_id in self.svc._objects:
                    self.svc._verified(m.object_id, index)

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(min(m.k, len(ready))):
                    nursery.start_soon(worker)
        except BaseException:  # cancelled (a get whose combiner failed): no staging left behind
            for dest, _ in got.values():
                dest.unlink(missing_ok=True)
            raise
        return got, failures

    def not_enough(
        self, what: str, m: Manifest, got: int, failures: list[HolderFailure]
    ) -> ShardServiceError:
        listing = "; ".join(str(f) for f in sorted(failures, key=lambda f: f.index)) or "none"
        return ShardServiceError(
            f"cannot {what} {m.object_id.hex()}: only {got} of the {m.k} needed shards "
            f"could be had; failed holders: {listing}"
        )

    async def get(
        self, oid: bytes, out: Path, job: Job, manifest_frame: bytes | None = None
    ) -> dict[str, Any]:
        """Rebuild object ``oid`` into ``out`` atomically (temp file + rename), or raise with the
        failed holders named and no output file. The stripes are decoded and opened while the
        fragments arrive (node/shards/combine.py), not after."""
        if manifest_frame is not None:
            m = open_manifest(manifest_frame)
        elif oid in self.svc._objects:
            m = self.svc._objects[oid][1]
        else:
            raise ShardServiceError(f"unknown object {oid.hex()} (no manifest on this node)")
        out = Path(out)
        if not out.parent.is_dir():
            raise ShardServiceError(f"output directory {out.parent} does not exist")
        job.phase, job.done, job.total = "fetching", 0, m.k * m.fragment_size
        feed = FragmentFeed(m.k, m.fragment_size)
        fetched: dict[int, tuple[Path, KeyShare | None]] = {}
        failures: list[HolderFailure] = []
        tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.partial"

        async def fetch_all() -> None:
            try:
                got, failed = await self.fetch_k(
                    m, want_share=True, exclude=set(), job=job, holders=self.svc.managed.holders_for(m),
                    feed=feed,
                )
                fetched.update(got)
                failures.extend(failed)
            finally:
                feed.fetching_done()

        watcher = trio.CancelScope()

        async def abort_on_cancel() -> None:
            # The combiner's thread cannot be cancelled: a cancelled get (or a failed fetch
            # task) aborts the feed, which ends it at its next wait.
            with watcher:
                try:
                    await trio.sleep_forever()
                finally:
                    feed.abort("get cancelled")

        error: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_all)
                nursery.start_soon(abort_on_cancel)
                try:
                    written = await trio.to_thread.run_sync(self._combine_to, m, feed, tmp)
                except Exception as exc:  # raised below, once the fetches are stopped
                    error = exc
                    nursery.cancel_scope.cancel()
                watcher.cancel()  # on success the fetches end with their hash checks and acks
            if isinstance(error, NotEnoughFragments):
                raise self.not_enough("rebuild", m, len(fetched), failures)
            if error is not None:
                raise error
            await trio.to_thread.run_sync(os.replace, tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            for dest, _ in fetched.values():
                dest.unlink(missing_ok=True)
        if self.svc._objects.get(oid):
            self.svc._save_health(oid)
        log.info("get %s: %d bytes from shards %s", oid.hex(), written, sorted(fetched))
        return {
            "object_id": oid.hex(),
            "size": written,
            "out": str(out),
            "from": sorted(fetched),
            "failed": [str(f) for f in failures],
        }

    def _combine_to(self, m: Manifest, feed: FragmentFeed, tmp: Path) -> int:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                written = combine_streaming(feed, m.params(), out)
            except IntegrityError as exc:
                raise ShardServiceError(f"object {m.object_id.hex()} failed authentication: {exc}") from None
            out.flush()
            os.fsync(out.fileno())
        return written


def _hash_and_write(h: Any, fd: int, data: bytes) -> None:
    h.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
