"""Garbage on the shard protocol: the first-frame dispatcher raises RemoteProtocolError only,
and a real node drops hostile streams, counts them, and keeps serving."""

from __future__ import annotations

import contextlib
import os

import cbor2
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from node.shards.service import _FIRST, SHARD_PROTOCOL
from overlay.errors import RemoteProtocolError
from overlay.framing import FrameReader, frame, read_message
from overlay.wire import spec_of
from tests.netutil import wait_until
from tests.shards_net.helpers import shard_federation, write_random
from tests.strategies import cbor_values

NAMES = [spec_of(t)[0] for t in _FIRST]


class _Bytes:
    """A stream that yields fixed bytes, then EOF."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int | None = None) -> bytes:
        out, self._data = self._data[: n or 4096], self._data[n or 4096 :]
        return out

    async def write(self, data: bytes) -> None:  # pragma: no cover - never written
        raise AssertionError


async def _decode_first(data: bytes) -> None:
    try:
        await read_message(FrameReader(_Bytes(data)), _FIRST, timeout_s=5)
    except RemoteProtocolError:
        return


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_raw_garbage_frames(data: bytes) -> None:
    trio.run(_decode_first, frame(data))
    trio.run(_decode_first, data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(NAMES), st.integers(0, 3), st.dictionaries(st.text(max_size=20), cbor_values, max_size=8)
)
def test_structured_envelopes(name: str, version: int, body: dict) -> None:
    trio.run(_decode_first, frame(cbor2.dumps([name, version, body])))


async def test_hostile_streams_are_dropped_and_the_node_keeps_serving(tmp_path):
    async with shard_federation(tmp_path, 4) as (agents, svcs, _):
        owner, attacker = svcs[0], agents[1]
        data = write_random(tmp_path / "in.bin", 200_000)
        res = await owner.put(tmp_path / "in.bin", n=3, k=2)
        target = agents[2]
        payloads = [
            os.urandom(64),
            frame(os.urandom(300)),
            frame(cbor2.dumps(["shard-offer", 1, {}])),
            frame(cbor2.dumps(["shard-chunk", 1, {"x": 1}])),
            b"\xff" * 12,
        ]
        for p in payloads:
            stream = await attacker.host.new_stream(ID.from_base58(target.peer_id), [SHARD_PROTOCOL])
            await stream.write(p)
            # the node resets the stream: libp2p raises StreamEOF/StreamReset on our side
            with trio.move_on_after(5), contextlib.suppress(StreamError):
                while await stream.read(4096):
                    pass
        await wait_until(lambda: target.counters.get("remote_error") >= len(payloads), 30)
        assert target.counters.get("internal_error") == 0
        await owner.get(bytes.fromhex(res["object_id"]), tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
