"""Combine while fetching (node/shards/combine.py): the combiner opens each stripe as soon as k
fragments hold it, survives a fetch replaced part-way and a forged fragment, and never writes a
byte that did not authenticate.

A "fetcher" here is a thread that copies a real fragment (from seal_and_split) into a staging
file in steps and reports to the feed as the node's fetch does.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards.combine import CombineAborted, FragmentFeed, NotEnoughFragments, combine_streaming
from node.shards.crypto import IntegrityError, seal_and_split

CHUNK = 1024


def _sealed(size: int, k: int = 3, n: int = 5, seed: int = 1):
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    data = bytes((b + seed) % 256 for b in data)
    sinks = [io.BytesIO() for _ in range(n)]
    obj = seal_and_split(io.BytesIO(data), sinks, k=k, n=n, chunk_size=CHUNK)
    return data, obj, [s.getvalue() for s in sinks]


def _write(feed: FragmentFeed, path: Path, index: int, blob: bytes, upto: int, fd: int) -> None:
    """Append blob[written:upto] to the file and report it."""
    cur = os.fstat(fd).st_size
    os.write(fd, blob[cur:upto])
    feed.wrote(index, upto)


class Fetch:
    """A fragment arriving in steps into ``tmp / f"f{index}"``."""

    def __init__(self, feed: FragmentFeed, tmp: Path, index: int, blob: bytes, tag: str = "") -> None:
        self.feed, self.index, self.blob = feed, index, blob
        self.path = tmp / f"f{index}{tag}"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        feed.started(index, self.path)

    def to(self, upto: int) -> None:
        _write(self.feed, self.path, self.index, self.blob, min(upto, len(self.blob)), self.fd)

    def finish(self, ok: bool = True) -> None:
        self.to(len(self.blob))
        os.close(self.fd)
        (self.feed.verified if ok else self.feed.failed)(self.index)


class Combiner(threading.Thread):
    def __init__(self, feed: FragmentFeed, params) -> None:
        super().__init__(daemon=True)
        self.feed, self.params = feed, params
        self.sink = io.BytesIO()
        self.error: BaseException | None = None
        self.size: int | None = None

    def run(self) -> None:
        try:
            self.size = combine_streaming(self.feed, self.params, self.sink)
        except BaseException as exc:  # reported to the test
            self.error = exc


def _wait_for(pred, what: str) -> None:
    for _ in range(2000):
        if pred():
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"timed out: {what}")


def test_stripes_are_opened_while_the_fragments_are_still_arriving(tmp_path):
    data, obj, frags = _sealed(20 * CHUNK)
    feed = FragmentFeed(3, len(frags[0]))
    for i in range(3):
        feed.share(obj.shares[i])
    fetches = [Fetch(feed, tmp_path, i, frags[i]) for i in range(3)]
    comb = Combiner(feed, obj.params)
    comb.start()
    block = obj.params.layout.block_len(0)
    for f in fetches:
        f.to(4 * block)
    # 4 of the 20 stripes are in every file: the combiner has already written 4 chunks of
    # plaintext, with most of every fragment still to come
    _wait_for(lambda: len(comb.sink.getvalue()) == 4 * CHUNK, "four chunks combined")
    assert comb.is_alive()
    assert comb.sink.getvalue() == data[: 4 * CHUNK]
    for f in fetches:
        f.finish()
    feed.fetching_done()
    comb.join(10)
    assert comb.error is None and comb.size == len(data) and comb.sink.getvalue() == data


def test_a_fetch_that_fails_part_way_is_replaced_by_another_fragment(tmp_path):
    data, obj, frags = _sealed(12 * CHUNK)
    feed = FragmentFeed(3, len(frags[0]))
    for i in (0, 1, 2, 3):
        feed.share(obj.shares[i])
    f0, f1, f2 = (Fetch(feed, tmp_path, i, frags[i]) for i in range(3))
    comb = Combiner(feed, obj.params)
    comb.start()
    block = obj.params.layout.block_len(0)
    for f in (f0, f1, f2):
        f.to(5 * block)
    _wait_for(lambda: len(comb.sink.getvalue()) == 5 * CHUNK, "five chunks")
    f0.to(7 * block)
    os.close(f0.fd)
    feed.failed(0)  # its holder vanished: fragment 3 from another holder takes over
    f3 = Fetch(feed, tmp_path, 3, frags[3])
    f1.finish()
    f2.finish()
    f3.finish()
    feed.fetching_done()
    comb.join(10)
    assert comb.error is None and comb.sink.getvalue() == data


def test_a_fragment_whose_file_is_removed_before_it_is_opened_is_replaced(tmp_path):
    """The fetcher fails a fragment and removes its file between the feed's answer and the
    combiner's open: the combiner takes another fragment, it does not end with
    FileNotFoundError."""
    data, obj, frags = _sealed(6 * CHUNK)
    feed = FragmentFeed(3, len(frags[0]))
    for i in (0, 1, 2, 3):
        feed.share(obj.shares[i])
    f0, f1, f2 = (Fetch(feed, tmp_path, i, frags[i]) for i in range(3))
    for f in (f0, f1, f2):
        f.to(len(frags[0]))
    os.close(f2.fd)
    f2.path.unlink()  # gone, the feed not told (yet): the race the combiner must survive
    comb = Combiner(feed, obj.params)
    comb.start()
    f3 = Fetch(feed, tmp_path, 3, frags[3])
    f0.finish()
    f1.finish()
    f3.finish()
    feed.fetching_done()
    comb.join(10)
    assert comb.error is None, repr(comb.error)
    assert comb.sink.getvalue() == data


def test_a_forged_fragment_never_reaches_the_sink_and_is_replaced(tmp_path):
    data, obj, frags = _sealed(8 * CHUNK)
    forged = bytearray(frags[1])
    forged[obj.params.layout.block_len(0) * 2 + 7] ^= 0x40  # in stripe 2
    feed = FragmentFeed(3, len(frags[0]))
    for i in range(4):
        feed.share(obj.shares[i])
    f0, f2 = Fetch(feed, tmp_path, 0, frags[0]), Fetch(feed, tmp_path, 2, frags[2])
    bad = Fetch(feed, tmp_path, 1, bytes(forged))
    comb = Combiner(feed, obj.params)
    comb.start()
    for f in (f0, f2, bad):
        f.to(len(frags[0]))
    # stripe 2 does not open: the combiner waits for the fragments' verdicts, writing nothing
    _wait_for(lambda: len(comb.sink.getvalue()) == 2 * CHUNK, "two good chunks")
    threading.Event().wait(0.05)
    assert len(comb.sink.getvalue()) == 2 * CHUNK
    f0.finish()
    f2.finish()
    bad.finish(ok=False)  # its whole-fragment hash did not match
    Fetch(feed, tmp_path, 3, frags[3]).finish()
    feed.fetching_done()
    comb.join(10)
    assert comb.error is None and comb.sink.getvalue() == data


def test_a_chunk_that_fails_from_verified_fragments_is_an_integrity_error(tmp_path):
    # fragments that pass their (here: claimed) verification but whose stripe does not open:
    # the object is corrupt, and nothing of the bad chunk is written
    _data, obj, frags = _sealed(4 * CHUNK)
    forged = bytearray(frags[0])
    forged[3] ^= 1
    feed = FragmentFeed(3, len(frags[0]))
    for i in range(3):
        feed.share(obj.shares[i])
    for i, blob in enumerate((bytes(forged), frags[1], frags[2])):
        Fetch(feed, tmp_path, i, blob).finish()
    feed.fetching_done()
    comb = Combiner(feed, obj.params)
    comb.run()
    assert isinstance(comb.error, IntegrityError) and "chunk 0" in str(comb.error)
    assert comb.sink.getvalue() == b""


def test_too_few_fragments_or_shares_end_with_not_enough(tmp_path):
    _data, obj, frags = _sealed(4 * CHUNK)
    feed = FragmentFeed(3, len(frags[0]))
    for i in range(3):
        feed.share(obj.shares[i])
    Fetch(feed, tmp_path, 0, frags[0]).finish()
    Fetch(feed, tmp_path, 1, frags[1]).finish()
    feed.fetching_done()
    comb = Combiner(feed, obj.params)
    comb.run()
    assert isinstance(comb.error, NotEnoughFragments)
    feed2 = FragmentFeed(3, len(frags[0]))
    feed2.share(obj.shares[0])
    feed2.fetching_done()
    comb2 = Combiner(feed2, obj.params)
    comb2.run()
    assert isinstance(comb2.error, NotEnoughFragments) and "key shares" in str(comb2.error)


def test_an_abort_ends_a_waiting_combiner(tmp_path):
    _data, obj, frags = _sealed(4 * CHUNK)
    feed = FragmentFeed(3, len(frags[0]))
    for i in range(3):
        feed.share(obj.shares[i])
    comb = Combiner(feed, obj.params)
    comb.start()
    threading.Event().wait(0.05)
    feed.abort("get cancelled")
    comb.join(5)
    assert not comb.is_alive() and isinstance(comb.error, CombineAborted)


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(0, 9 * CHUNK),
    steps=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    order=st.permutations([0, 1, 2, 3, 4]),
)
def test_any_arrival_order_and_pace_rebuilds_the_object(tmp_path_factory, size, steps, order):
    """Whatever k fragments arrive, in whatever increments, the output is the object."""
    tmp = tmp_path_factory.mktemp("c")
    data, obj, frags = _sealed(size, seed=size % 7)
    feed = FragmentFeed(3, len(frags[0]))
    use = order[:3]
    for i in use:
        feed.share(obj.shares[i])
    fetches = [Fetch(feed, tmp, i, frags[i]) for i in use]
    comb = Combiner(feed, obj.params)
    comb.start()
    pos = 0
    for j, step in enumerate(steps):
        pos += step
        fetches[j % 3].to(pos)
    for f in fetches:
        f.finish()
    feed.fetching_done()
    comb.join(10)
    assert comb.error is None, comb.error
    assert comb.sink.getvalue() == data

