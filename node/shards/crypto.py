"""The one safe entry point for shard crypto: seal, split, combine, open.

Theory of operation
-------------------
``seal_and_split`` takes a plaintext stream and n fragment sinks:

1. **seal** - a fresh 256-bit data key (``os.urandom``) and a random 7-byte nonce prefix per
   object. The plaintext is cut into chunks of ``chunk_size`` bytes and each chunk is sealed
   with AES-256-GCM (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár):
   nonce = prefix ‖ 40-bit chunk counter, AAD = domain ‖ object id ‖ chunk size ‖ counter ‖
   final-flag. Reordering, dropping, duplicating or truncating chunks, or moving a chunk into
   another object, fails authentication. An empty object is one empty final chunk.
2. **split** - every ciphertext chunk is one *stripe*: zero-padded to a multiple of k, cut into
   k primary blocks and zfec (Reed-Solomon) coded into n blocks, any k of which rebuild the
   stripe. Fragment i is block i of every stripe, concatenated. The stripe layout is a pure
   function of (plaintext size, chunk size, k), so fragments carry no header.
3. the data key is **Shamir-split** k-of-n over GF(2^8) (:mod:`node.shards.gf256`); share i has
   x = i + 1 and travels with fragment i. The key itself is never returned.

``combine_and_open`` is the reverse: verify the shares against the manifest's hashes, rebuild
the key, **combine** any k fragments stripe by stripe, and **open** every chunk. Every byte
given to the sink has been authenticated by AES-GCM; the fragment SHA-256 hashes are checked
incrementally and a mismatch is raised at the end (it names the fragment, so its holder can be
blamed even when the bad bytes were only padding). Output written before an exception is an
authentic *prefix*: discard it on error.

Memory is bounded by a few stripes whatever the object size (one chunk read ahead to know
which chunk is final). Storage is n/k of the ciphertext, plus 16 bytes of tag per chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import zfec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.shards.gf256 import MAX_SHARES, KeyShare, ShareError, combine_shares, split_secret

AEAD_NAME = "AES-256-GCM-STREAM-v1"
ERASURE_NAME = "zfec-stripe-v1"
SHARING_NAME = "shamir-gf256-v1"

KEY_BYTES = 32
NONCE_PREFIX_BYTES = 7
COUNTER_BYTES = 5  # 12-byte GCM nonce = prefix (7) + counter (5)
TAG_BYTES = 16
OBJECT_ID_BYTES = 16
HASH_BYTES = 32
DEFAULT_CHUNK_BYTES = 1024 * 1024
MIN_CHUNK_BYTES = 64
MAX_CHUNK_BYTES = 64 * 1024 * 1024
MAX_CHUNKS = 2**32  # far below the 2^40 counter space and GCM's per-key limits

_STREAM_DOMAIN = b"enclave-swarm/stream/v1\x00"
_SHARE_DOMAIN = b"enclave-swarm/shard-share/v1\x00"


class IntegrityError(Exception):
    """Data failed authentication or did not match its manifest hash (tampering or rot)."""


class FragmentCorrupt(IntegrityError):
    """Fragment ``index`` does not match the manifest (wrong hash, wrong length)."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"fragment {index}: {detail}")
        self.index = index


class ShareCorrupt(IntegrityError):
    """Key share with evaluation point ``x`` does not match the manifest hash."""

    def __init__(self, x: int, detail: str) -> None:
        super().__init__(f"key share x={x}: {detail}")
        self.x = x


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


# --------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Layout:
    """The stripe layout of one object: a pure function of its sizes and k, n."""

    plaintext_size: int
    chunk_size: int
    k: int
    n: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n <= MAX_SHARES:
            raise ValueError(f"need 1 <= k <= n <= {MAX_SHARES}, got k={self.k} n={self.n}")
        if not MIN_CHUNK_BYTES <= self.chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_size {self.chunk_size} outside [{MIN_CHUNK_BYTES}, {MAX_CHUNK_BYTES}]")
        if self.plaintext_size < 0 or self.chunk_count > MAX_CHUNKS:
            raise ValueError("plaintext_size out of range")

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.plaintext_size // self.chunk_size))

    def chunk_plain_len(self, i: int) -> int:
        if i < self.chunk_count - 1:
            return self.chunk_size
        return self.plaintext_size - self.chunk_size * (self.chunk_count - 1)

    def stripe_len(self, i: int) -> int:
        """Ciphertext bytes of chunk ``i`` (= its stripe before padding)."""
        return self.chunk_plain_len(i) + TAG_BYTES

    def block_len(self, i: int) -> int:
        return -(-self.stripe_len(i) // self.k)

    @property
    def ciphertext_size(self) -> int:
        return self.plaintext_size + TAG_BYTES * self.chunk_count

    @property
    def fragment_size(self) -> int:
        full = self.chunk_count - 1
        return full * self.block_len(0) + self.block_len(self.chunk_count - 1) if full else self.block_len(0)


# --------------------------------------------------------------------------- STREAM AEAD


def _aad(context: bytes, chunk_size: int, counter: int, final: bool) -> bytes:
    return b"".join(
        (
            _STREAM_DOMAIN,
            len(context).to_bytes(2, "big"),
            context,
            chunk_size.to_bytes(8, "big"),
            counter.to_bytes(8, "big"),
            b"\x01" if final else b"\x00",
        )
    )


class _Stream:
    """State shared by both directions of STREAM: the AEAD, nonce prefix, AAD context and the
    chunk counter. The key never appears in a repr."""

    def __init__(self, key: bytes, nonce_prefix: bytes, context: bytes, chunk_size: int) -> None:
        if len(key) != KEY_BYTES or len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("bad key or nonce prefix length")
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix
        self._context = context
        self._chunk_size = chunk_size
        self._counter = 0
        self._done = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(counter={self._counter}, done={self._done})"


class StreamSealer(_Stream):
    """STREAM encryption, one chunk at a time; the last call must say ``final=True``.

    ``context`` is bound into every chunk's AAD (the object id, or object id + index at rest).
    """



    def seal(self, chunk: bytes, *, final: bool) -> bytes:
        if self._done:
            raise ValueError("stream already finalised")
        if len(chunk) > self._chunk_size or (not final and len(chunk) != self._chunk_size):
            raise ValueError("non-final chunks must be exactly chunk_size bytes")
        if self._counter >= MAX_CHUNKS:
            raise ValueError("too many chunks for one key")
        nonce = self._prefix + self._counter.to_bytes(COUNTER_BYTES, "big")
        out = self._aead.encrypt(nonce, chunk, _aad(self._context, self._chunk_size, self._counter, final))
        self._counter += 1
        self._done = final
        return out


class StreamOpener(_Stream):
    """STREAM decryption; raises :class:`IntegrityError` on any forgery or misuse of order."""



    @property
    def done(self) -> bool:
        return self._done

    def open(self, sealed: bytes, *, final: bool) -> bytes:
        if self._done:
            raise IntegrityError("data after the final chunk")
        nonce = self._prefix + self._counter.to_bytes(COUNTER_BYTES, "big")
        try:
            out = self._aead.decrypt(
                nonce, sealed, _aad(self._context, self._chunk_size, self._counter, final)
            )
        except InvalidTag:
            raise IntegrityError(f"chunk {self._counter} failed authentication") from None
        self._counter += 1
        self._done = final
        return out


def read_full(reader: Readable, size: int) -> bytes:
    """Read exactly ``size`` bytes unless EOF comes first (short reads are retried)."""
    first = reader.read(size)
    if len(first) == size or not first:
        return first
    parts = [first]
    got = len(first)
    while got < size:
        more = reader.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# --------------------------------------------------------------------------- the four stages


def seal_chunks(
    reader: Readable, key: bytes, nonce_prefix: bytes, object_id: bytes, chunk_size: int
) -> Iterator[bytes]:
    """**seal**: yield one sealed chunk per ``chunk_size`` bytes of ``reader`` (STREAM)."""
    sealer = StreamSealer(key, nonce_prefix, object_id, chunk_size)
    current = read_full(reader, chunk_size)
    while True:
        nxt = read_full(reader, chunk_size) if len(current) == chunk_size else b""
        final = not nxt
        yield sealer.seal(current, final=final)
        if final:
            return
        current = nxt


def split_chunks(
    sealed_chunks: Iterable[bytes], k: int, n: int, sinks: Sequence[Writable]
) -> tuple[list[bytes], int]:
    """**split**: erasure-code every sealed chunk as one stripe and append block i to sink i.

    Returns:
        (SHA-256 of every fragment, total ciphertext bytes).
    """
    if len(sinks) != n:
        raise ValueError(f"need {n} sinks, got {len(sinks)}")
    encoder = zfec.Encoder(k, n)
    hashes = [hashlib.sha256() for _ in range(n)]
    total = 0
    for stripe in sealed_chunks:
        total += len(stripe)
        for i, block in enumerate(encode_stripe(encoder, stripe, k)):
            hashes[i].update(block)
            sinks[i].write(block)
    return [h.digest() for h in hashes], total


def encode_stripe(encoder: zfec.Encoder, stripe: bytes, k: int) -> list[bytes]:
    block = -(-len(stripe) // k)
    padded = memoryview(stripe if len(stripe) == block * k else stripe + bytes(block * k - len(stripe)))
    return list(encoder.encode(tuple(padded[i * block : (i + 1) * block] for i in range(k))))


def decode_stripe(
    decoder: zfec.Decoder, blocks: Sequence[bytes], indices: Sequence[int], stripe_len: int
) -> bytes:
    primary = decoder.decode(tuple(blocks), tuple(indices))
    return b"".join(primary)[:stripe_len]


def _pick_sources(sources: Mapping[int, Readable], layout: Layout) -> list[int]:
    indices = sorted(i for i in sources if 0 <= i < layout.n)
    if len(indices) < layout.k:
        raise ValueError(f"need {layout.k} fragments, have {len(indices)}")
    # Primary fragments (index < k) decode with no arithmetic at all: prefer them.
    return indices[: layout.k]


def combine_chunks(
    sources: Mapping[int, Readable],
    layout: Layout,
    fragment_hashes: Sequence[bytes] | None = None,
) -> Iterator[bytes]:
    """**combine**: yield the sealed chunks rebuilt from any k fragment readers.

    ``sources`` maps fragment index (0-based) to a reader positioned at the fragment's start;
    the first k (lowest indices) are used. With ``fragment_hashes`` every used fragment is
    hashed on the fly and checked when it ends (FragmentCorrupt); a fragment that is too short
    or too long is refused as well.
    """
    use = _pick_sources(sources, layout)
    decoder = zfec.Decoder(layout.k, layout.n)
    hashes = {i: hashlib.sha256() for i in use}
    for c in range(layout.chunk_count):
        blen = layout.block_len(c)
        blocks = []
        for i in use:
            block = read_full(sources[i], blen)
            if len(block) != blen:
                raise FragmentCorrupt(i, "truncated")
            hashes[i].update(block)
            blocks.append(block)
        yield decode_stripe(decoder, blocks, use, layout.stripe_len(c))
    for i in use:
        if sources[i].read(1):
            raise FragmentCorrupt(i, "trailing bytes")
        if fragment_hashes is not None and not hmac.compare_digest(hashes[i].digest(), fragment_hashes[i]):
            raise FragmentCorrupt(i, "hash mismatch")


def open_chunks(
    sealed_chunks: Iterable[bytes],
    key: bytes,
    nonce_prefix: bytes,
    object_id: bytes,
    layout: Layout,
) -> Iterator[bytes]:
    """**open**: authenticate and decrypt every sealed chunk; refuse truncation/extension."""
    opener = StreamOpener(key, nonce_prefix, object_id, layout.chunk_size)
    last = layout.chunk_count - 1
    for c, sealed in enumerate(sealed_chunks):
        if c > last:
            raise IntegrityError("more chunks than the layout allows")
        yield opener.open(sealed, final=c == last)
    if not opener.done:
        raise IntegrityError("stream truncated")


# --------------------------------------------------------------------------- the safe entry


def share_hash(object_id: bytes, share: KeyShare) -> bytes:
    """The manifest's hash of a key share, domain-separated and bound to the object."""
    return hashlib.sha256(_SHARE_DOMAIN + object_id + share.to_bytes()).digest()


def fragment_hash_of(reader: Readable, read_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[bytes, int]:
    """SHA-256 and length of a whole fragment, streamed."""
    h = hashlib.sha256()
    size = 0
    while chunk := reader.read(read_bytes):
        h.update(chunk)
        size += len(chunk)
    return h.digest(), size


@dataclasses.dataclass(frozen=True)
class ObjectParams:
    """Everything needed to rebuild an object (all of it lives in the signed manifest)."""

    object_id: bytes
    plaintext_size: int
    chunk_size: int
    k: int
    n: int
    nonce_prefix: bytes
    fragment_hashes: tuple[bytes, ...]
    share_hashes: tuple[bytes, ...]

    @property
    def layout(self) -> Layout:
        return Layout(self.plaintext_size, self.chunk_size, self.k, self.n)


@dataclasses.dataclass(frozen=True)
class SealedObject:
    """What :func:`seal_and_split` produced. ``shares`` are secret: hand share i only to the
    holder of fragment i, over an attested channel. ``repr`` redacts them."""

    params: ObjectParams
    shares: tuple[KeyShare, ...]

    def __repr__(self) -> str:
        return f"SealedObject(params={self.params!r}, shares=<{len(self.shares)} redacted>)"

    @property
    def layout(self) -> Layout:
        return self.params.layout


def seal_and_split(
    reader: Readable,
    sinks: Sequence[Writable],
    *,
    k: int,
    n: int,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    object_id: bytes | None = None,
) -> SealedObject:
    """Encrypt a stream under a fresh key, erasure-code it into ``n`` fragments, share the key.

    Args:
        reader: the plaintext (anything with ``read(size)``); read once, in ``chunk_size`` bytes.
        sinks: n writables; sink i receives fragment i.
        k, n: any k of the n fragments + shares rebuild the object; 1 <= k <= n <= 255.
        chunk_size: plaintext bytes per AEAD chunk and stripe.
        object_id: 16 bytes; random when omitted. Bound into every chunk's AAD.

    Returns:
        The object's parameters (for the manifest) and the n key shares.

    Raises:
        ValueError: bad parameters. Exceptions from the reader or sinks propagate.
    """
    Layout(0, chunk_size, k, n)  # parameter check before any work
    if object_id is None:
        object_id = os.urandom(OBJECT_ID_BYTES)
    if len(object_id) != OBJECT_ID_BYTES:
        raise ValueError(f"object_id must be {OBJECT_ID_BYTES} bytes")
    key = os.urandom(KEY_BYTES)
    nonce_prefix = os.urandom(NONCE_PREFIX_BYTES)
    fragment_hashes, ct_size = split_chunks(
        seal_chunks(reader, key, nonce_prefix, object_id, chunk_size), k, n, sinks
    )
    shares = tuple(split_secret(key, k, n))
    del key  # best effort: CPython cannot wipe immutable bytes
    chunks = max(1, -(-(ct_size - TAG_BYTES) // (chunk_size + TAG_BYTES)))
    plaintext_size = ct_size - TAG_BYTES * chunks
    params = ObjectParams(
        object_id=object_id,
        plaintext_size=plaintext_size,
        chunk_size=chunk_size,
        k=k,
        n=n,
        nonce_prefix=nonce_prefix,
        fragment_hashes=tuple(fragment_hashes),
        share_hashes=tuple(share_hash(object_id, s) for s in shares),
    )
    assert params.layout.ciphertext_size == ct_size
    return SealedObject(params, shares)


def check_shares(params: ObjectParams, shares: Iterable[KeyShare]) -> list[KeyShare]:
    """Return the shares after checking each against the manifest hash (ShareCorrupt)."""
    good = []
    for s in shares:
        if not 1 <= s.x <= params.n or len(s.value) != KEY_BYTES:
            raise ShareCorrupt(s.x, "not a share of this object")
        if not hmac.compare_digest(share_hash(params.object_id, s), params.share_hashes[s.x - 1]):
            raise ShareCorrupt(s.x, "hash mismatch")
        good.append(s)
    return good


def combine_and_open(
    params: ObjectParams,
    sources: Mapping[int, Readable],
    shares: Iterable[KeyShare],
    sink: Writable,
) -> int:
    """Rebuild the plaintext from any k fragments and any k key shares into ``sink``.

    Args:
        params: from the verified manifest (:meth:`node.shards.manifest.Manifest.params`).
        sources: fragment index (0-based) → reader; any k suffice (lowest indices used).
        shares: at least k key shares; each is checked against the manifest first.
        sink: receives the plaintext, chunk by chunk.

    Returns:
        Plaintext bytes written.

    Raises:
        ShareCorrupt, FragmentCorrupt, IntegrityError: tampering or corruption; anything
            already written to ``sink`` is an authentic prefix and must be discarded.
        ValueError: fewer than k fragments or shares.
    """
    layout = params.layout
    try:
        key = combine_shares(check_shares(params, shares), params.k)
    except ShareError as exc:
        raise ValueError(str(exc)) from None
    written = 0
    ct = combine_chunks(sources, layout, params.fragment_hashes)
    for pt in open_chunks(ct, key, params.nonce_prefix, params.object_id, layout):
        sink.write(pt)
        written += len(pt)
    del key
    return written
