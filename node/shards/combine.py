"""Combine while fetching: a get decodes and opens each stripe as soon as k fragments hold it.

A get fetches k fragments in parallel into staging files. Rather than waiting for all of them
and only then erasure-decoding and decrypting (which serialised the two costs), a
:class:`FragmentFeed` is shared between the fetchers (trio tasks, which report what they wrote)
and :func:`combine_streaming` (run in a worker thread, which reads each stripe's blocks from the
staging files as soon as any k of them hold it, decodes and opens it, and writes the plaintext).

Correctness does not depend on the fetchers' hash checks, which only end with each fragment:
every chunk is opened with STREAM AEAD (node/shards/crypto.py), so a block forged by a holder
makes its chunk fail authentication, and nothing forged ever reaches the sink. The combiner
then waits until every fragment it used for that stripe has *settled* (its whole-fragment hash
verified, or its fetch failed), drops the failed ones and decodes the stripe again from others.
If all k used fragments verified and the chunk still does not open, the object itself is
corrupt (:class:`IntegrityError`). A fetch that fails part-way is replaced by another holder's
fragment, which the combiner uses once it has reached the current stripe.

The feed is the only state both sides touch; it is guarded by one condition variable. Nothing
here imports trio: the fetch side calls the feed's methods from trio (they never block), and
the combine side blocks on the condition in its thread.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

import zfec

from node.shards.crypto import (
    IntegrityError,
    ObjectParams,
    ShareCorrupt,
    StreamOpener,
    Writable,
    check_shares,
    decode_stripe,
)
from node.shards.gf256 import KeyShare, ShareError, combine_shares

FETCHING, VERIFIED, FAILED = "fetching", "verified", "failed"
WAIT_SLICE_S = 0.5  # the combiner re-checks for an abort at least this often


class NotEnoughFragments(Exception):
    """Every fetch has ended and fewer than k fragments (or key shares) can serve a stripe."""


class CombineAborted(Exception):
    """The get was cancelled or failed on the fetch side."""


@dataclasses.dataclass
class _Source:
    path: Path
    generation: int
    written: int = 0
    state: str = FETCHING


class FragmentFeed:
    """What the fetchers have written so far, for the combiner; thread-safe.

    Fetch side (never blocks): :meth:`started`, :meth:`wrote`, :meth:`share`, :meth:`verified`,
    :meth:`failed`, :meth:`fetching_done`, :meth:`abort`. Combine side (blocks):
    :meth:`wait_shares`, :meth:`wait_ready`, :meth:`wait_settled`.
    """

    def __init__(self, k: int, fragment_size: int) -> None:
        self.k = k
        self.fragment_size = fragment_size
        self._cv = threading.Condition()
        self._sources: dict[int, _Source] = {}
        self._shares: dict[int, KeyShare] = {}
        self._generation = 0
        self._fetching_done = False
        self._abort: str | None = None

    # ------------------------------------------------------------------ fetch side

    def started(self, index: int, path: Path) -> None:
        """A fetch of fragment ``index`` into ``path`` begins (replacing any failed one)."""
        with self._cv:
            self._generation += 1
            self._sources[index] = _Source(path, self._generation)
            self._cv.notify_all()

    def wrote(self, index: int, written: int) -> None:
        """``written`` bytes of fragment ``index`` are in its file (readable by another fd)."""
        with self._cv:
            src = self._sources.get(index)
            if src is not None and src.state == FETCHING:
                src.written = written
                self._cv.notify_all()

    def share(self, share: KeyShare) -> None:
        """A key share, already checked against the manifest."""
        with self._cv:
            self._shares[share.x] = share
            self._cv.notify_all()

    def verified(self, index: int) -> None:
        with self._cv:
            src = self._sources.get(index)
            if src is not None:
                src.state = VERIFIED
                self._cv.notify_all()

    def failed(self, index: int) -> None:
        with self._cv:
            src = self._sources.get(index)
            if src is not None and src.state != VERIFIED:
                src.state = FAILED
                self._cv.notify_all()

    def fetching_done(self) -> None:
        """No fetch is running or will start: what the feed holds is all there will be."""
        with self._cv:
            self._fetching_done = True
            self._cv.notify_all()

    def abort(self, reason: str) -> None:
        with self._cv:
            self._abort = reason
            self._cv.notify_all()

    # ------------------------------------------------------------------ combine side

    def _wait(self, ready: Callable[[], object], what: str) -> object:
        """Block until ``ready()`` is truthy (returning it); NotEnoughFragments when fetching
        has ended without it, CombineAborted on an abort. Caller holds no lock."""
        with self._cv:
            while True:
                if self._abort is not None:
                    raise CombineAborted(self._abort)
                got = ready()
                if got:
                    return got
                if self._fetching_done:
                    raise NotEnoughFragments(what)
                self._cv.wait(WAIT_SLICE_S)

    def wait_shares(self) -> list[KeyShare]:
        def ready() -> list[KeyShare] | None:
            return list(self._shares.values()) if len(self._shares) >= self.k else None

        got = self._wait(ready, f"fewer than {self.k} key shares")
        assert isinstance(got, list)
        return got

    def wait_ready(self, end: int, exclude: set[tuple[int, int]]) -> list[tuple[int, Path, int]]:
        """k fragments whose files hold bytes up to ``end``, as (index, path, generation),
        lowest indices first (primary fragments decode without arithmetic); never a failed one
        nor a (index, generation) in ``exclude``. Blocks until k such exist."""

        def ready() -> list[tuple[int, Path, int]] | None:
            usable = sorted(
                (i, s.path, s.generation)
                for i, s in self._sources.items()
                if s.state != FAILED and s.written >= end and (i, s.generation) not in exclude
            )
            return usable[: self.k] if len(usable) >= self.k else None

        got = self._wait(ready, f"fewer than {self.k} fragments reach byte {end}")
        assert isinstance(got, list)
        return got

    def wait_settled(self, used: list[tuple[int, Path, int]]) -> list[tuple[int, int]]:
        """Block until each used fragment's fetch has verified or failed; return those that did
        not verify (failed, or since replaced by another fetch of the same index)."""

        def state(i: int, gen: int) -> str:
            s = self._sources.get(i)
            return s.state if s is not None and s.generation == gen else FAILED

        def ready() -> list[tuple[int, int]] | None:
            states = [(i, g, state(i, g)) for i, _, g in used]
            if any(st == FETCHING for _, _, st in states):
                return None
            return [(i, g) for i, g, st in states if st != VERIFIED] or [(-1, -1)]

        with self._cv:
            if self._abort is not None:
                raise CombineAborted(self._abort)
            while (got := ready()) is None:
                self._cv.wait(WAIT_SLICE_S)
                if self._abort is not None:
                    raise CombineAborted(self._abort)
        return [x for x in got if x != (-1, -1)]


def _read_blocks(files: dict[tuple[int, int], int], use: list[tuple[int, Path, int]], blen: int,
                 offset: int, bad: set[tuple[int, int]]) -> list[bytes] | None:
    """Each used fragment's block at ``offset`` (files opened once, kept in ``files``). None
    when a fragment's file is gone: its fetch failed and removed it between the feed's answer
    and our open (found by a fresh-clone ``make test`` run: the get ended with
    FileNotFoundError instead of taking another holder's fragment); it joins ``bad``."""
    blocks = []
    for i, path, gen in use:
        fd = files.get((i, gen))
        if fd is None:
            try:
                fd = files[(i, gen)] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                bad.add((i, gen))
                return None
        block = os.pread(fd, blen, offset)
        if len(block) != blen:  # cannot happen while the fetcher tells the truth
            raise IntegrityError(f"fragment {i} shorter than reported")
        blocks.append(block)
    return blocks


def combine_streaming(
    feed: FragmentFeed,
    params: ObjectParams,
    sink: Writable,
) -> int:
    """Rebuild the plaintext into ``sink`` as the feed's fragments arrive; returns its size.

    Raises NotEnoughFragments, CombineAborted, or IntegrityError / ShareCorrupt when the
    object cannot be authenticated from verified fragments (anything written to ``sink`` is
    then an authentic prefix and must be discarded).
    """
    layout = params.layout
    try:
        shares = check_shares(params, feed.wait_shares())
        key = combine_shares(shares, params.k)
    except ShareError as exc:
        raise ShareCorrupt(0, str(exc)) from None
    opener = StreamOpener(key, params.nonce_prefix, params.object_id, layout.chunk_size)
    del key
    decoder = zfec.Decoder(layout.k, layout.n)
    files: dict[tuple[int, int], int] = {}
    bad: set[tuple[int, int]] = set()
    last = layout.chunk_count - 1
    offset = written = 0
    try:
        for c in range(layout.chunk_count):
            blen = layout.block_len(c)
            while True:
                use = feed.wait_ready(offset + blen, bad)
                blocks = _read_blocks(files, use, blen, offset, bad)
                if blocks is None:
                    continue  # a fragment failed, its file removed, after it was ready
                sealed = decode_stripe(decoder, blocks, [i for i, _, _ in use], layout.stripe_len(c))
                try:
                    plain = opener.open(sealed, final=c == last)
                except IntegrityError:
                    culprits = feed.wait_settled(use)
                    if not culprits:
                        raise IntegrityError(
                            f"chunk {c} fails authentication from verified fragments "
                            f"{[i for i, _, _ in use]}"
                        ) from None
                    bad.update(culprits)
                    continue
                break
            sink.write(plain)
            written += len(plain)
            offset += blen
    finally:
        for fd in files.values():
            os.close(fd)
    if not opener.done:
        raise IntegrityError("stream truncated")
    return written
