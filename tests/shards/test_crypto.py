"""seal/split/combine/open: exact round trips from any k of n, and every tampering detected."""

from __future__ import annotations

import io
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.shards.crypto import (
    FragmentCorrupt,
    IntegrityError,
    Layout,
    combine_and_open,
    open_chunks,
    seal_and_split,
    seal_chunks,
)
from node.shards.gf256 import KeyShare

from .helpers import Trickle, flip, seal_bytes


def rebuild(sealed, fragments, frag_idx, share_idx) -> bytes:
    out = io.BytesIO()
    combine_and_open(
        sealed.params,
        {i: io.BytesIO(fragments[i]) for i in frag_idx},
        [sealed.shares[i] for i in share_idx],
        out,
    )
    return out.getvalue()


@given(
    data=st.binary(max_size=3000),
    chunk_size=st.sampled_from([64, 100, 257, 4096]),
    kn=st.integers(1, 6).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 8))),
    draw=st.data(),
)
@settings(deadline=None, max_examples=80)
def test_any_k_fragments_and_any_k_shares_rebuild_exactly(data, chunk_size, kn, draw) -> None:
    k, n = kn
    sealed, fragments = seal_bytes(data, k, n, chunk_size)
    layout = sealed.layout
    assert layout.plaintext_size == len(data)
    assert all(len(f) == layout.fragment_size for f in fragments)
    # storage cost is n/k of the ciphertext, up to per-stripe padding (< k bytes per stripe)
    assert n * layout.fragment_size <= n * (layout.ciphertext_size + layout.chunk_count * k) / k
    frag_idx = draw.draw(st.permutations(range(n)).map(lambda p: p[:k]))
    share_idx = draw.draw(st.permutations(range(n)).map(lambda p: p[:k]))
    assert rebuild(sealed, fragments, frag_idx, share_idx) == data


def test_every_k_subset_small_exhaustive() -> None:
    data = os.urandom(1000)
    sealed, fragments = seal_bytes(data, 3, 6, 128)
    for idx in itertools.combinations(range(6), 3):
        assert rebuild(sealed, fragments, idx, idx[::-1]) == data


def test_fewer_than_k_is_refused() -> None:
    sealed, fragments = seal_bytes(b"hello", 3, 5)
    with pytest.raises(ValueError):
        rebuild(sealed, fragments, (0, 1), (0, 1, 2))
    with pytest.raises(ValueError):
        rebuild(sealed, fragments, (0, 1, 2), (0, 1))


def test_short_reads_and_empty_objects() -> None:
    data = os.urandom(777)
    sinks = [io.BytesIO() for _ in range(4)]
    sealed = seal_and_split(Trickle(data, 7), sinks, k=2, n=4, chunk_size=64)
    frags = [s.getvalue() for s in sinks]
    out = io.BytesIO()
    combine_and_open(sealed.params, {i: Trickle(frags[i], 5) for i in (1, 3)}, sealed.shares[:2], out)
    assert out.getvalue() == data
    sealed, frags = seal_bytes(b"", 2, 3)
    assert sealed.layout.chunk_count == 1 and rebuild(sealed, frags, (1, 2), (0, 2)) == b""
    # exactly one full chunk, and an exact multiple of chunks
    for size in (64, 640):
        d = os.urandom(size)
        sealed, frags = seal_bytes(d, 2, 3)
        assert sealed.layout.chunk_count == size // 64
        assert rebuild(sealed, frags, (0, 2), (1, 2)) == d


def test_fresh_key_and_ids_per_object() -> None:
    a, fa = seal_bytes(b"same plaintext" * 10, 2, 3)
    b, fb = seal_bytes(b"same plaintext" * 10, 2, 3)
    assert a.params.object_id != b.params.object_id and fa[0] != fb[0]
    assert not any(x.matches(y) for x, y in zip(a.shares, b.shares, strict=True))


def test_every_flipped_fragment_byte_is_detected() -> None:
    """Flip each byte of each fragment (padding included) and rebuild from a k-set using it."""
    sealed, fragments = seal_bytes(os.urandom(200), 2, 4, 64)
    for victim in range(4):
        others = [i for i in range(4) if i != victim]
        for pos in range(len(fragments[victim])):
            bad = list(fragments)
            bad[victim] = flip(bad[victim], pos, 0x80)
            with pytest.raises(IntegrityError):
                rebuild(sealed, bad, (victim, others[pos % 3]), (0, 1))


def test_truncated_or_extended_fragment_is_detected() -> None:
    sealed, fragments = seal_bytes(os.urandom(300), 2, 3)
    for bad in (fragments[0][:-1], fragments[0] + b"\x00", b""):
        with pytest.raises(FragmentCorrupt) as err:
            rebuild(sealed, [bad, fragments[1], fragments[2]], (0, 1), (0, 1))
        assert err.value.index == 0


def test_every_flipped_share_byte_is_detected() -> None:
    sealed, fragments = seal_bytes(os.urandom(100), 2, 3)
    for victim in range(3):
        raw = sealed.shares[victim].to_bytes()
        for pos in range(len(raw)):
            forged = flip(raw, pos)
            shares = list(sealed.shares)
            try:
                shares[victim] = KeyShare.from_bytes(forged)
            except ValueError:
                continue  # x became 0: not even a share
            with pytest.raises(IntegrityError):
                out = io.BytesIO()
                combine_and_open(
                    sealed.params,
                    {0: io.BytesIO(fragments[0]), 1: io.BytesIO(fragments[1])},
                    [shares[victim], shares[(victim + 1) % 3]],
                    out,
                )


def test_wrong_key_fails_authentication_even_without_share_hashes() -> None:
    sealed, fragments = seal_bytes(b"x" * 300, 2, 3)
    from node.shards.crypto import combine_chunks

    chunks = combine_chunks({0: io.BytesIO(fragments[0]), 1: io.BytesIO(fragments[1])}, sealed.layout)
    with pytest.raises(IntegrityError):
        list(
            open_chunks(
                chunks,
                os.urandom(32),
                sealed.params.nonce_prefix,
                sealed.params.object_id,
                sealed.layout,
            )
        )


def sealed_stream(data: bytes, key: bytes, prefix: bytes, oid: bytes) -> list[bytes]:
    return list(seal_chunks(io.BytesIO(data), key, prefix, oid, 64))


def test_stream_reordering_truncation_duplication_and_splicing_are_detected() -> None:
    key, prefix, oid = os.urandom(32), os.urandom(7), os.urandom(16)
    data = os.urandom(64 * 4 + 10)
    chunks = sealed_stream(data, key, prefix, oid)
    layout = Layout(len(data), 64, 1, 1)
    assert b"".join(open_chunks(chunks, key, prefix, oid, layout)) == data
    variants = {
        "swap": [chunks[1], chunks[0], *chunks[2:]],
        "drop last": chunks[:-1],
        "drop middle": [*chunks[:2], *chunks[3:]],
        "duplicate": [chunks[0], *chunks],
        "extra": [*chunks, chunks[-1]],
    }
    for name, variant in variants.items():
        with pytest.raises(IntegrityError):
            list(open_chunks(variant, key, prefix, oid, layout))
        del name
    # truncation at a chunk boundary: the last surviving chunk was not sealed as final
    short = Layout(64 * 2, 64, 1, 1)
    with pytest.raises(IntegrityError):
        list(open_chunks(chunks[:2], key, prefix, oid, short))
    # a chunk of another object under the same key (misuse) still fails: the id is in the AAD
    other = sealed_stream(data, key, prefix, os.urandom(16))
    with pytest.raises(IntegrityError):
        list(open_chunks([other[0], *chunks[1:]], key, prefix, oid, layout))


def test_secrets_never_in_repr() -> None:
    sealed, _ = seal_bytes(b"abc", 2, 3)
    text = repr(sealed) + str(sealed)
    for s in sealed.shares:
        assert s.value.hex() not in text and repr(s.value)[2:-1] not in text


def test_bad_parameters() -> None:
    for k, n, c in ((0, 1, 64), (3, 2, 64), (1, 256, 64), (1, 1, 8)):
        with pytest.raises(ValueError):
            seal_and_split(io.BytesIO(b""), [io.BytesIO() for _ in range(max(n, 1))], k=k, n=n, chunk_size=c)
    with pytest.raises(ValueError):
        seal_and_split(io.BytesIO(b""), [io.BytesIO()], k=1, n=2)
