"""The holder's store: sealed at rest, atomic, quota and ENOSPC safe, tamper-evident, shreddable."""

from __future__ import annotations

import errno
import io
import itertools
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as hst

from node.shards import store as store_mod
from node.shards.crypto import FragmentCorrupt, ShareCorrupt, combine_and_open
from node.shards.gf256 import KeyShare
from node.shards.messages import ShardErase, erase_transcript, verify_receipt
from node.shards.store import (
    QuotaExceeded,
    ShardExists,
    ShardNotFound,
    ShardStore,
    StoredShardCorrupt,
    StoreError,
    StoreFull,
)
from overlay.errors import RemoteProtocolError

from .helpers import flip, signed_object

SECRET = b"s" * 32
PEER = "12D3KooWholder"


def make_store(root: Path, quota: int = 10**7, secret: bytes = SECRET) -> ShardStore:
    return ShardStore(
        root,
        secret,
        quota_bytes=quota,
        receipt_key=_RECEIPT_KEY,
        holder_peer_id=PEER,
        chunk_bytes=1024,
    )


_RECEIPT_KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def obj():
    return signed_object(os.urandom(5000), k=2, n=4, chunk_size=512)


def put_all(st: ShardStore, obj) -> None:
    _, sealed, fragments, _, frame = obj
    for i in range(4):
        st.put(frame, i, io.BytesIO(fragments[i]), sealed.shares[i])


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_layout_and_permissions(tmp_path: Path, obj) -> None:
    _, sealed, fragments, manifest, frame = obj
    st = make_store(tmp_path)
    put_all(st, obj)
    oid = manifest.object_id
    assert [s.index for s in st.list_shards()] == [0, 1, 2, 3]
    for i in range(4):
        assert b"".join(st.read_fragment(oid, i)) == fragments[i]
        assert st.read_share(oid, i).matches(sealed.shares[i])
        assert st.manifest(oid, i) == manifest and st.manifest_frame(oid, i) == frame
    for p in tmp_path.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), p
    # nothing secret in the clear at rest
    blob = b"".join(snapshot(tmp_path).values())
    assert fragments[0][:64] not in blob and sealed.shares[0].value not in blob
    out = io.BytesIO()
    combine_and_open(
        manifest.params(),
        {i: io.BytesIO(b"".join(st.read_fragment(oid, i))) for i in (2, 3)},
        [st.read_share(oid, 0), st.read_share(oid, 3)],
        out,
    )
    assert len(out.getvalue()) == 5000
    health = st.health(scrub=True)
    assert health.shards == 4 and health.corrupt == () and 0 < health.used_bytes <= health.quota_bytes
    # restart: same accounting, same contents
    again = make_store(tmp_path)
    assert again.health().used_bytes == health.used_bytes
    assert b"".join(again.read_fragment(oid, 1)) == fragments[1]


def test_bad_input_is_refused_and_nothing_stored(tmp_path: Path, obj) -> None:
    _, sealed, fragments, manifest, frame = obj
    st = make_store(tmp_path)
    cases = [
        (
            FragmentCorrupt,
            lambda: st.put(frame, 0, io.BytesIO(flip(fragments[0], 10)), sealed.shares[0]),
        ),
        (
            FragmentCorrupt,
            lambda: st.put(frame, 0, io.BytesIO(fragments[0][:-1]), sealed.shares[0]),
        ),
        (
            FragmentCorrupt,
            lambda: st.put(frame, 0, io.BytesIO(fragments[0] + b"x"), sealed.shares[0]),
        ),
        (
            ShareCorrupt,
            lambda: st.put(frame, 0, io.BytesIO(fragments[0]), KeyShare(1, flip(sealed.shares[0].value, 3))),
        ),
        (ValueError, lambda: st.put(frame, 0, io.BytesIO(fragments[0]), sealed.shares[1])),
        (
            RemoteProtocolError,
            lambda: st.put(flip(frame, 100), 0, io.BytesIO(fragments[0]), sealed.shares[0]),
        ),
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
        assert st.list_shards() == [] and not any((tmp_path / "tmp").iterdir())
        assert st.health().used_bytes == 0
    st.put(frame, 0, io.BytesIO(fragments[0]), sealed.shares[0])
    with pytest.raises(ShardExists):
        st.put(frame, 0, io.BytesIO(fragments[0]), sealed.shares[0])
    with pytest.raises(ShardNotFound):
        st.read_share(manifest.object_id, 1)


def test_quota_is_checked_before_writing(tmp_path: Path, obj) -> None:
    _, sealed, fragments, _, frame = obj
    st = _store_owner_share(tmp_path, quota=9_000, share=1.0)  # the holder's quota, one owner
    st.put(frame, 0, io.BytesIO(fragments[0]), sealed.shares[0])
    before = snapshot(tmp_path)
    with pytest.raises(QuotaExceeded, match="quota"):
        st.put(frame, 1, io.BytesIO(fragments[1]), sealed.shares[1])
    assert snapshot(tmp_path) == before
    st.verify(sealed.params.object_id, 0)


@pytest.mark.parametrize("fail_at", [0, 1, 2, 3, 5])
@pytest.mark.parametrize(
    ("code", "exc"), [(errno.ENOSPC, StoreFull), (errno.EDQUOT, StoreFull), (errno.EIO, StoreError)]
)
def test_disk_full_leaves_the_store_intact(tmp_path: Path, obj, monkeypatch, fail_at, code, exc) -> None:
    _, sealed, fragments, manifest, frame = obj
    st = make_store(tmp_path)
    st.put(frame, 0, io.BytesIO(fragments[0]), sealed.shares[0])
    before, used = snapshot(tmp_path), st.health().used_bytes
    real = store_mod._write_all
    calls = {"n": 0}

    def failing(fd: int, data: bytes) -> None:
        if calls["n"] == fail_at:
            raise OSError(code, os.strerror(code))
        calls["n"] += 1
        real(fd, data)

    monkeypatch.setattr(store_mod, "_write_all", failing)
    with pytest.raises(exc):
        st.put(frame, 1, io.BytesIO(fragments[1]), sealed.shares[1])
    monkeypatch.setattr(store_mod, "_write_all", real)
    assert snapshot(tmp_path) == before and st.health().used_bytes == used
    st.verify(manifest.object_id, 0)
    st.put(frame, 1, io.BytesIO(fragments[1]), sealed.shares[1])  # space back: works again
    st.verify(manifest.object_id, 1)


def test_every_flipped_byte_at_rest_is_detected(tmp_path: Path) -> None:
    _, sealed, fragments, manifest, frame = signed_object(os.urandom(600), k=2, n=3, chunk_size=128)
    st = make_store(tmp_path)
    st.put(frame, 1, io.BytesIO(fragments[1]), sealed.shares[1])
    shard_dir = next((tmp_path / "shards").iterdir())
    for name in ("fragment", "key", "share", "manifest"):
        path = shard_dir / name
        original = path.read_bytes()
        for pos in range(len(original)):
            path.write_bytes(flip(original, pos))
            with pytest.raises(StoredShardCorrupt):
                st.verify(manifest.object_id, 1)
        for cut in (0, len(original) - 1):
            path.write_bytes(original[:cut])
            with pytest.raises(StoredShardCorrupt):
                st.verify(manifest.object_id, 1)
        path.write_bytes(original + b"\x00")
        with pytest.raises(StoredShardCorrupt):
            st.verify(manifest.object_id, 1)
        path.write_bytes(original)
    st.verify(manifest.object_id, 1)
    assert st.health(scrub=True).corrupt == ()


def test_files_cannot_be_swapped_between_shards_and_other_enclaves_cannot_read(tmp_path: Path, obj) -> None:
    _, _, _, manifest, _ = obj
    st = make_store(tmp_path)
    put_all(st, obj)
    d0, d1 = (tmp_path / "shards" / f"{manifest.object_id.hex()}.{i}" for i in (0, 1))
    for name in ("key", "share", "fragment"):
        a, b = (d0 / name).read_bytes(), (d1 / name).read_bytes()
        (d0 / name).write_bytes(b)
        with pytest.raises(StoredShardCorrupt):
            st.verify(manifest.object_id, 0)
        (d0 / name).write_bytes(a)
    other = make_store(tmp_path, secret=b"t" * 32)
    with pytest.raises(StoredShardCorrupt):
        other.read_share(manifest.object_id, 0)
    assert other.health(scrub=True).corrupt == tuple((manifest.object_id, i) for i in range(4))


def test_erase_is_crypto_shredding_with_a_signed_receipt(tmp_path: Path, obj, monkeypatch) -> None:
    owner, _, _, manifest, _ = obj
    st = make_store(tmp_path)
    put_all(st, obj)
    used = st.health().used_bytes
    order: list[str] = []
    real_unlink, real_rmtree = Path.unlink, store_mod.shutil.rmtree
    monkeypatch.setattr(
        Path,
        "unlink",
        lambda self, *a, **kw: (order.append(self.name), real_unlink(self, *a, **kw)),
    )
    monkeypatch.setattr(
        store_mod.shutil,
        "rmtree",
        lambda p, *a, **kw: (order.append("data"), real_rmtree(p, *a, **kw)),
    )
    nonce = os.urandom(32)
    receipt = st.erase(manifest.object_id, 2, nonce)
    monkeypatch.undo()
    # the wrapped key goes first, then the data, then the placement mark
    assert order == ["key", "data", f"{manifest.object_id.hex()}.2"]
    assert receipt.existed and receipt.nonce == nonce and receipt.holder_peer_id == PEER
    assert verify_receipt(receipt, receipt.holder_key)
    assert not verify_receipt(receipt, os.urandom(32))
    with pytest.raises(ShardNotFound):
        st.read_share(manifest.object_id, 2)
    assert st.health().used_bytes < used and len(st.list_shards()) == 3
    again = st.erase(manifest.object_id, 2, nonce)
    assert not again.existed and verify_receipt(again, again.holder_key)
    # signed erase requests: only the owner, only addressed to us
    n2 = os.urandom(32)
    good = ShardErase(
        manifest.object_id,
        1,
        PEER,
        n2,
        owner.sign(erase_transcript(manifest.object_id, 1, PEER, n2)),
    )
    forged = ShardErase(
        manifest.object_id,
        3,
        PEER,
        n2,
        Ed25519PrivateKey.generate().sign(erase_transcript(manifest.object_id, 3, PEER, n2)),
    )
    elsewhere = ShardErase(
        manifest.object_id,
        3,
        "other",
        n2,
        owner.sign(erase_transcript(manifest.object_id, 3, "other", n2)),
    )
    for bad in (forged, elsewhere):
        with pytest.raises(RemoteProtocolError):
            st.erase_request(bad)
    assert st.erase_request(good).existed
    assert [s.index for s in st.list_shards()] == [0, 3]


def test_interrupted_write_and_erase_debris_is_cleaned_at_start(tmp_path: Path, obj) -> None:
    _, _, _, manifest, _ = obj
    st = make_store(tmp_path)
    put_all(st, obj)
    (tmp_path / "tmp" / "deadbeef").mkdir()
    (tmp_path / "tmp" / "deadbeef" / "fragment").write_bytes(b"partial")
    (tmp_path / "shards" / f"{manifest.object_id.hex()}.3" / "key").unlink()  # crash mid-erase
    again = make_store(tmp_path)
    h = again.health(scrub=True)
    assert h.debris_removed == 2 and h.shards == 3 and h.corrupt == ()
    assert not any((tmp_path / "tmp").iterdir())


@given(
    cuts=hst.lists(hst.integers(0, 4000), max_size=12), size=hst.sampled_from([0, 1, 1023, 1024, 2048, 5000])
)
@settings(deadline=None, max_examples=40)
def test_incremental_writer_any_slicing(cuts: list[int], size: int) -> None:
    """Chunks as they arrive off the wire, in any slicing, key share last."""
    _, sealed, fragments, manifest, frame = signed_object(os.urandom(size), k=1, n=2, chunk_size=64)
    fragment = fragments[0]
    with tempfile.TemporaryDirectory() as d:
        st_ = make_store(Path(d))
        points = sorted({c % (len(fragment) + 1) for c in cuts} | {0, len(fragment)})
        with st_.begin_put(frame, 0) as writer:
            for a, b in itertools.pairwise(points):
                writer.write(fragment[a:b])
            writer.commit(sealed.shares[0])
        assert b"".join(st_.read_fragment(manifest.object_id, 0)) == fragment


def test_writer_aborts_cleanly(tmp_path: Path, obj) -> None:
    _, sealed, fragments, manifest, frame = obj
    st_ = make_store(tmp_path)
    with st_.begin_put(frame, 0) as writer:
        writer.write(fragments[0][:100])
        assert writer.received_bytes == 100
    # left without commit: aborted
    assert st_.list_shards() == [] and not any((tmp_path / "tmp").iterdir())
    assert st_.health().used_bytes == 0
    with st_.begin_put(frame, 0) as writer:
        with pytest.raises(FragmentCorrupt):
            writer.write(fragments[0] + b"x")
        with pytest.raises(StoreError):
            writer.write(b"")  # closed after the error
    with st_.begin_put(frame, 0) as writer:
        writer.write(fragments[0])
        with pytest.raises(ShareCorrupt):
            writer.commit(sealed.shares[1])
    assert st_.list_shards() == [] and st_.health().used_bytes == 0
    with st_.begin_put(frame, 0) as writer:
        writer.write(fragments[0])
        writer.commit(sealed.shares[0])
    st_.verify(manifest.object_id, 0)


def test_concurrent_writers_respect_the_quota(tmp_path: Path) -> None:
    objects = [signed_object(os.urandom(3000), k=1, n=1, chunk_size=512) for _ in range(12)]
    one = 3000 + 16 * 6 + 1024  # roughly one sealed shard + manifest
    st_ = make_store(tmp_path, quota=5 * (one + 4096 + 64))
    outcomes: list[str] = []

    def put(o) -> None:
        _, sealed, fragments, _, frame = o
        try:
            st_.put(frame, 0, io.BytesIO(fragments[0]), sealed.shares[0])
            outcomes.append("ok")
        except QuotaExceeded:
            outcomes.append("quota")

    threads = [threading.Thread(target=put, args=(o,)) for o in objects]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h = st_.health(scrub=True)
    assert outcomes.count("ok") == h.shards >= 1 and "quota" in outcomes
    assert h.used_bytes <= h.quota_bytes and h.corrupt == ()
    assert h.used_bytes == sum(s.stored_bytes for s in st_.list_shards())


# ----------------------------------------------------------------- placement marks


def test_placement_marks_round_trip_and_go_with_the_shard(tmp_path: Path, obj) -> None:
    st = make_store(tmp_path)
    put_all(st, obj)
    oid = obj[3].object_id
    assert st.placed(oid, 0) is None
    st.note_placed(oid, 0, "12D3KooWfounder", 41)
    assert st.placed(oid, 0) == ("12D3KooWfounder", 41)
    st.note_placed(oid, 0, "12D3KooWother", 57)  # a newer mark replaces it
    assert st.placed(oid, 0) == ("12D3KooWother", 57)
    assert st.marks() == {(oid, 0): ("12D3KooWother", 57)}  # the whole directory in one scan
    mark = tmp_path / "placed" / f"{oid.hex()}.0"
    assert stat.S_IMODE(mark.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "placed").stat().st_mode) == 0o700
    st.erase(oid, 0, os.urandom(16))
    assert st.placed(oid, 0) is None and not mark.exists()
    assert st.placed(oid, 1) is None  # other shards were never marked


def test_placement_marks_are_validated(tmp_path: Path, obj) -> None:
    st = make_store(tmp_path)
    put_all(st, obj)
    oid = obj[3].object_id
    for fed, idx in (("", 1), ("has space", 1), ("a/b", 1), ("x" * 129, 1), ("ok", -1)):
        with pytest.raises(ValueError):
            st.note_placed(oid, 0, fed, idx)
    for garbage in (b"", b"fed", b"fed notanumber", b"../x 3", b"\xff\xfe 3", b"fed -1"):
        (tmp_path / "placed" / f"{oid.hex()}.1").write_bytes(garbage)
        assert st.placed(oid, 1) is None, garbage
        assert st.marks() == {}, garbage
    (tmp_path / "placed" / "not-hex.x").write_bytes(b"fed 3")
    assert st.marks() == {}


def test_marks_without_a_shard_and_torn_marks_are_debris_at_start(tmp_path: Path, obj) -> None:
    st = make_store(tmp_path)
    put_all(st, obj)
    oid = obj[3].object_id
    st.note_placed(oid, 0, "fed", 3)
    st.note_placed(oid, 1, "fed", 3)
    placed = tmp_path / "placed"
    (placed / f"{oid.hex()}.1.abcd1234.tmp").write_bytes(b"fed 3")   # torn write
    (placed / f"{os.urandom(16).hex()}.2").write_bytes(b"fed 3")      # its shard is gone
    again = make_store(tmp_path)
    assert sorted(p.name for p in placed.iterdir()) == [f"{oid.hex()}.0", f"{oid.hex()}.1"]
    assert again.placed(oid, 0) == ("fed", 3)


# ----------------------------------------------------------------- per-owner quota, growing reservations


def _store_owner_share(root: Path, quota: int, share: float) -> ShardStore:
    return ShardStore(root, SECRET, quota_bytes=quota, receipt_key=_RECEIPT_KEY, holder_peer_id=PEER,
                      chunk_bytes=1024, owner_share=share)


def test_one_owner_fills_only_its_share_and_others_still_fit(tmp_path: Path) -> None:
    greedy = signed_object(os.urandom(8000), k=1, n=8, chunk_size=512)  # 8 shards of one owner
    other = signed_object(os.urandom(8000), k=1, n=2, chunk_size=512)
    one = 8000 + 1024 + 4096 + 256  # roughly one sealed shard + manifest + metadata
    st_ = _store_owner_share(tmp_path, quota=8 * one, share=0.25)
    _, sealed, fragments, manifest, frame = greedy
    stored = 0
    with pytest.raises(store_mod.OwnerQuotaExceeded, match="share of the quota"):
        for i in range(8):
            st_.put(frame, i, io.BytesIO(fragments[i]), sealed.shares[i])
            stored += 1
    assert 1 <= stored < 8 and st_.owner_bytes(manifest.owner) <= st_.owner_quota_bytes
    _, sealed2, fragments2, manifest2, frame2 = other
    for i in range(2):  # another owner is not starved by the first one's attempts
        st_.put(frame2, i, io.BytesIO(fragments2[i]), sealed2.shares[i])
    again = _store_owner_share(tmp_path, quota=8 * one, share=0.25)  # accounting survives a restart
    assert again.owner_bytes(manifest.owner) == st_.owner_bytes(manifest.owner)
    assert again.owner_bytes(manifest2.owner) == st_.owner_bytes(manifest2.owner) > 0
    st_.erase(manifest.object_id, 0, os.urandom(16))
    assert st_.owner_bytes(manifest.owner) < again.owner_bytes(manifest.owner)


def test_a_stalled_writer_reserves_what_it_received_not_what_it_declared(tmp_path: Path) -> None:
    big = signed_object(os.urandom(200_000), k=1, n=1, chunk_size=4096)
    _, sealed, fragments, manifest, frame = big
    st_ = _store_owner_share(tmp_path, quota=1_000_000, share=0.5)
    writer = st_.begin_put(frame, 0)  # the whole 200 kB fits, so the offer is accepted...
    assert st_.owner_bytes(manifest.owner) < len(frame) + 4096 + 1024  # ...but not reserved up front
    writer.write(fragments[0][:10_000])
    held = st_.owner_bytes(manifest.owner)
    assert 10_000 < held < 10_000 + len(frame) + 4096 + 1024
    writer.abort()  # a stalled transfer reaped by its timeout: everything it held comes back
    assert st_.owner_bytes(manifest.owner) == 0 and st_.health().used_bytes == 0
    with st_.begin_put(frame, 0) as w:
        w.write(fragments[0])
        w.commit(sealed.shares[0])
    assert st_.owner_bytes(manifest.owner) == st_.health().used_bytes > 200_000


def test_an_offer_that_cannot_fit_is_refused_early_and_one_squeezed_out_midway(tmp_path: Path) -> None:
    a = signed_object(os.urandom(60_000), k=1, n=1, chunk_size=4096)
    b = signed_object(os.urandom(60_000), k=1, n=1, chunk_size=4096)
    st_ = _store_owner_share(tmp_path, quota=100_000, share=1.0)
    huge = signed_object(os.urandom(120_000), k=1, n=1, chunk_size=4096)
    with pytest.raises(QuotaExceeded, match="quota"):
        st_.begin_put(huge[4], 0)  # can never fit: refused before a byte moves
    wa, wb = st_.begin_put(a[4], 0), st_.begin_put(b[4], 0)  # each fits alone: both accepted
    wa.write(a[2][0])
    with pytest.raises(QuotaExceeded):
        wb.write(b[2][0])  # no room left for the second once the first took it
    assert st_.owner_bytes(b[3].owner) == 0  # the refused writer released what it held
    wa.commit(a[1].shares[0])
    h = st_.health(scrub=True)
    assert h.shards == 1 and h.used_bytes <= h.quota_bytes and h.corrupt == ()
