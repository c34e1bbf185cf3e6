"""Length-prefixed framing: varints, bounds before reads, partial reads."""

from __future__ import annotations

import contextlib

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, decode_uvarint, encode_uvarint, frame, read_message
from overlay.messages import AttestChallenge, Goodbye
from overlay.wire import encode


@given(st.integers(0, 2**63))
def test_uvarint_round_trip(n):
    enc = encode_uvarint(n)
    assert decode_uvarint(enc + b"tail") == (n, len(enc))


@given(st.binary(max_size=12))
def test_uvarint_garbage_is_clean(data):
    with contextlib.suppress(RemoteProtocolError):
        decode_uvarint(data)


def test_non_minimal_varint_refused():
    with pytest.raises(RemoteProtocolError):
        decode_uvarint(b"\x80\x00")


class ChunkStream:
    """A fake stream that returns the given bytes a few at a time, then EOF."""

    def __init__(self, data: bytes, chunk: int = 3) -> None:
        self.data, self.chunk, self.reads = data, chunk, 0

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        out, self.data = self.data[: self.chunk], self.data[self.chunk:]
        return out

    async def write(self, data: bytes) -> None:
        raise AssertionError("not used")


async def test_reads_frames_across_partial_reads():
    a, b = encode(AttestChallenge(bytes(32))), encode(Goodbye("x"))
    reader = FrameReader(ChunkStream(frame(a) + frame(b)))
    assert await read_message(reader, AttestChallenge, timeout_s=1) == AttestChallenge(bytes(32))
    assert await read_message(reader, Goodbye, timeout_s=1) == Goodbye("x")


async def test_oversized_length_refused_without_reading_payload():
    s = ChunkStream(encode_uvarint(10**9) + b"x" * 100, chunk=4096)
    with pytest.raises(RemoteProtocolError) as e:
        await read_message(FrameReader(s), AttestChallenge, timeout_s=1)
    assert e.value.reason == "size"


async def test_truncated_frame_is_a_stream_error():
    s = ChunkStream(frame(encode(Goodbye("hello")))[:-2])
    with pytest.raises(RemoteProtocolError) as e:
        await read_message(FrameReader(s), Goodbye, timeout_s=1)
    assert e.value.reason == "stream"


async def test_silent_peer_times_out(autojump_clock):
    class Silent:
        async def read(self, n=None):
            await trio.sleep_forever()

    with pytest.raises(RemoteProtocolError) as e:
        await read_message(FrameReader(Silent()), Goodbye, timeout_s=5)
    assert e.value.reason == "timeout"


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.integers(1, 64))
def test_consumed_counts_the_bytes_of_the_frames_returned(payloads, chunk):
    """FrameReader.consumed (the gossip layer's bytes-in metric) is exactly the wire size of
    the frames read so far, however the stream cuts them, and never counts a frame not yet
    returned."""
    wire = b"".join(frame(p) for p in payloads)

    async def main() -> None:
        reader = FrameReader(ChunkStream(wire, chunk))
        total = 0
        for p in payloads:
            assert await reader.read_frame(1 << 20) == p
            total += len(frame(p))
            assert reader.consumed == total
        assert reader.consumed == len(wire)

    trio.run(main)
