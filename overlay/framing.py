"""Length-prefixed frames on a libp2p stream: ``uvarint(len) ‖ payload``.

The length is checked against the caller's bound *before* any payload byte is read, so an
oversized frame costs the reader at most 10 bytes. Every wait has a timeout. Errors from the
stream (resets, EOF, libp2p exceptions) are translated into :class:`RemoteProtocolError` here,
at the edge, so protocol code sees one error family.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.wire import decode, encode, spec_of

MAX_VARINT_BYTES = 10
# How much one read asks for: a reader takes whatever the stream has buffered, up to this.
# Over yamux every read sends a window update back, so fewer, larger reads mean fewer frames.
READ_CHUNK = 65536
log = logging.getLogger(__name__)


class ByteStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


def encode_uvarint(n: int) -> bytes:
    if n < 0:
        raise LocalProtocolError("uvarint of a negative number")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_uvarint(data: bytes) -> tuple[int, int]:
    """Decode a uvarint at the start of ``data``: returns (value, bytes used).

    Raises:
        RemoteProtocolError: truncated, over-long or non-minimal encoding.
    """
    value = 0
    for i, b in enumerate(data[:MAX_VARINT_BYTES]):
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i > 0 and b == 0:
                raise RemoteProtocolError("framing", "non-minimal varint")
            return value, i + 1
    if len(data) >= MAX_VARINT_BYTES:
        raise RemoteProtocolError("framing", "varint too long")
    raise RemoteProtocolError("framing", "truncated varint")


def frame(payload: bytes) -> bytes:
    return encode_uvarint(len(payload)) + payload


async def _read_some(stream: ByteStream, n: int) -> bytes:
    try:
        data = await stream.read(n)
    except trio.Cancelled:
        raise
    except RemoteProtocolError:
        raise
    except Exception as exc:  # libp2p raises many types (StreamEOF, StreamReset, MuxedStreamError...)
        raise RemoteProtocolError("stream", f"{type(exc).__name__}") from None
    if not data:
        raise RemoteProtocolError("stream", "closed by peer")
    return data


class FrameReader:
    """Reads frames from one stream, keeping any bytes read past the current frame."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.consumed = 0  # bytes of the frames returned so far, length prefixes included

    async def _fill(self, want: int) -> None:
        while len(self._buf) < want:
            self._buf += await _read_some(self._stream, max(want - len(self._buf), READ_CHUNK))

    async def read_frame(self, max_bytes: int) -> bytes:
        # The varint is at most 10 bytes; read until it terminates.
        while True:
            try:
                length, used = decode_uvarint(bytes(self._buf[:MAX_VARINT_BYTES]))
                break
            except RemoteProtocolError as exc:
                if "truncated" not in exc.detail:
                    raise
                self._buf += await _read_some(self._stream, READ_CHUNK)
        if length > max_bytes:
            raise RemoteProtocolError("size", f"frame of {length} bytes > {max_bytes}")
        await self._fill(used + length)
        payload = bytes(self._buf[used : used + length])
        del self._buf[: used + length]
        self.consumed += used + length
        return payload


async def read_message(
    reader: FrameReader, expected: type[Any] | tuple[type[Any], ...], *, timeout_s: float
) -> Any:
    """Read one frame and decode it as one of ``expected`` within ``timeout_s``.

    Raises:
        RemoteProtocolError: timeout, stream failure, or any invalid input.
    """
    types = expected if isinstance(expected, tuple) else (expected,)
    bound = max(spec_of(t)[2] for t in types)
    with trio.move_on_after(timeout_s) as scope:
        payload = await reader.read_frame(bound)
    if scope.cancelled_caught:
        raise RemoteProtocolError("timeout", f"no {'/'.join(t.__name__ for t in types)} within {timeout_s}s")
    return decode(payload, expected)


async def write_message(stream: ByteStream, msg: Any, *, timeout_s: float) -> None:
    """Encode ``msg`` and write it as one frame within ``timeout_s``."""
    data = frame(encode(msg))
    with trio.move_on_after(timeout_s) as scope:
        try:
            await stream.write(data)
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise RemoteProtocolError("stream", f"write failed: {type(exc).__name__}") from None
    if scope.cancelled_caught:
        raise RemoteProtocolError("timeout", f"write of {type(msg).__name__} took over {timeout_s}s")


async def reset_stream(stream: Any) -> None:
    """Reset ``stream`` within 1 s, shielded from cancellation; a stream that is already gone is
    fine (the failure is logged at debug level)."""
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.reset()
        except Exception as exc:  # libp2p raises several types for an already closed stream
            log.debug("stream reset: %s", exc)


async def close_stream(stream: Any) -> None:
    """Close ``stream`` gracefully within 2 s, shielded; errors are logged at debug level."""
    with trio.move_on_after(2) as scope:
        scope.shield = True
        try:
            await stream.close()
        except Exception as exc:  # libp2p raises several types for an already closed stream
            log.debug("stream close: %s", exc)
