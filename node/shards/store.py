"""A holder's shard store: shards sealed at rest, atomic streaming writes, crypto-shredding.

Theory of operation
-------------------
Keys. A store master key is derived with HKDF-SHA256 from the node's sealing secret (the TEE
sealing key; for the simulated TEE the identity secret), so shards are readable only inside the
enclave that wrote them. Every shard gets its own random 256-bit *shard key*, stored only
wrapped (AES-256-GCM) under the master key. The fragment and the key share are sealed with the
shard key, AAD = object id ‖ index, so files cannot be swapped between shards or objects.

Layout under ``root`` (directories 0700, files 0600)::

    shards/<object id hex>.<index>/manifest   the owner-signed manifest frame (public)
                                  /key        nonce ‖ AES-GCM(master, shard key)
                                  /share      nonce ‖ AES-GCM(shard key, key share)
                                  /fragment   header ‖ STREAM-sealed fragment chunks
    placed/<object id hex>.<index>            "<federation> <state index>": this holder saw the
                                              committed placement name it (node/shards/managed.py)
    tmp/                                      staging; anything here at start-up is debris
    schema-version                            this layout's version (node/schema.py): written
                                              when the store is created; stores made before
                                              versions existed have none and are version 1

The version is checked before anything else at open: a store newer than ``SCHEMA_VERSION``, or
one whose version is garbled, is refused (``SchemaError``) with nothing removed or created.

Writes are atomic: a shard is built in ``tmp/<random>/`` (each file fsynced), the directory is
fsynced and renamed into ``shards/``, then ``shards/`` is fsynced. A crash leaves either the
whole shard or debris in ``tmp/`` that the next start removes. A full disk (ENOSPC/EDQUOT)
while writing removes the staging copy and raises ``StoreFull``: the store is left as it was.

Quota. The bytes of stored shards plus the bytes reserved by writers in progress never exceed
``quota_bytes``, and those of one *owner* (the manifest's owner key) never exceed
``owner_share`` of it: one attested peer can only ever fill its own share of a holder, however
many transfers it opens or stalls. A new shard is refused before anything is written
(``QuotaExceeded``; ``OwnerQuotaExceeded`` for the owner's share) unless its whole declared
size fits now, but a writer *reserves* only what it has received so far (the sealed size of
those bytes, plus the manifest and a metadata allowance up front), chunk by chunk: a transfer
that stalls holds what it was sent, not what it declared, and releases it when it is aborted.
So a transfer that fitted when it began can still be refused mid-way if others took the room
meanwhile; the owner then places the shard elsewhere.

Reads stream and verify: every at-rest chunk is authenticated (so bit rot or tampering is
caught where it happens) and the fragment's SHA-256 is compared with the signed manifest when
the stream ends. Callers must drain the iterator before trusting what they forwarded.

Erase is crypto-shredding: the wrapped shard key is overwritten, fsynced and unlinked first;
from then on the data files are undecryptable even if their blocks survive on disk. Then the
data files go. The holder returns a receipt signed with its (injected) receipt key.

All I/O is plain blocking file I/O; the node runs the store in a worker thread. One lock guards
the byte accounting; different shards may be written concurrently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import hmac
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.keys.base import IdentityKey
from node.schema import read_version, write_version
from node.shards.crypto import (
    KEY_BYTES,
    NONCE_PREFIX_BYTES,
    OBJECT_ID_BYTES,
    TAG_BYTES,
    FragmentCorrupt,
    IntegrityError,
    Readable,
    ShareCorrupt,
    StreamOpener,
    StreamSealer,
    Writable,
    check_shares,
    read_full,
)
from node.shards.gf256 import KeyShare, ShareError
from node.shards.manifest import Manifest, open_manifest, raw_public_key, verify_ed25519
from node.shards.messages import ShardErase, ShardEraseReceipt, erase_transcript, receipt_transcript
from overlay.errors import RemoteProtocolError

DEFAULT_AT_REST_CHUNK_BYTES = 256 * 1024
_MAGIC = b"ESSHARD1"
_HEADER_BYTES = len(_MAGIC) + NONCE_PREFIX_BYTES + 4
_GCM_NONCE_BYTES = 12
_WRAP_DOMAIN = b"enclave-swarm/shard-store/wrap/v1\x00"
_SHARE_DOMAIN = b"enclave-swarm/shard-store/share/v1\x00"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_METADATA_ALLOWANCE = 4096  # per shard, on top of the sealed files, for the quota estimate
# No single owner may hold or reserve more than this fraction of a holder's quota unless the
# operator says otherwise: a compromised owner fills its share, never the whole holder.
DEFAULT_OWNER_SHARE = 0.25
# The on-disk layout above (files, headers, wrapping). Bump it, and read the old one, when it changes.
SCHEMA_VERSION = 1


def check_schema(root: Path) -> int:
    """The schema version of the shard store at ``root`` (1 when it has none, or when it does
    not exist yet). Reads only.

    Raises:
        SchemaError: newer than this release reads, or garbled.
    """
    return read_version(Path(root), what="shard store", supported=SCHEMA_VERSION)


class StoreError(Exception):
    """Base of the store's errors."""


class QuotaExceeded(StoreError):
    """Storing this shard would exceed the byte quota; nothing was written."""


class OwnerQuotaExceeded(QuotaExceeded):
    """Storing this shard would take its owner past its share of the quota."""


class StoreFull(StoreError):
    """The disk is full (ENOSPC/EDQUOT); the partial write was removed, the store is intact."""


class ShardExists(StoreError):
    """This (object, index) is already stored; erase it first to replace it."""


class ShardNotFound(StoreError):
    """No such (object, index) in this store."""


class StoredShardCorrupt(IntegrityError, StoreError):
    """A stored shard failed authentication or no longer matches its manifest."""


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    object_id: bytes
    index: int
    stored_bytes: int


@dataclasses.dataclass(frozen=True)
class StoreHealth:
    shards: int
    used_bytes: int
    quota_bytes: int
    disk_free_bytes: int
    debris_removed: int
    corrupt: tuple[tuple[bytes, int], ...] = ()
    owner_quota_bytes: int = 0


def _derive_master(sealing_secret: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=b"enclave-swarm/shard-store/v1",
        info=b"wrap-key",
    ).derive(sealing_secret)


def _aad(domain: bytes, object_id: bytes, index: int) -> bytes:
    return domain + object_id + index.to_bytes(2, "big")


def _open_new(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    os.fchmod(fd, _FILE_MODE)  # whatever the umask
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = _open_new(path)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_mark(raw: bytes) -> tuple[str, int] | None:
    fed, _, idx = raw.decode("ascii", "replace").strip().partition(" ")
    if not fed.isalnum() or not idx.isdigit():
        return None
    return fed, int(idx)


def sealed_fragment_size(fragment_size: int, chunk_bytes: int) -> int:
    chunks = max(1, -(-fragment_size // chunk_bytes))
    return _HEADER_BYTES + fragment_size + TAG_BYTES * chunks


class ShardStore:
    """The holder's store (see module docstring).

    Args:
        root: directory owned by this store (created 0700 if missing).
        sealing_secret: the enclave sealing secret (at least 32 bytes); never stored.
        quota_bytes: upper bound on the bytes of stored shards.
        receipt_key: signs erase receipts (normally the node identity key).
        holder_peer_id: this node's peer id, written into receipts.
        chunk_bytes: at-rest AEAD chunk size.
        owner_share: the fraction of ``quota_bytes`` one owner may hold and reserve, in (0, 1].

    Raises:
        SchemaError: the store's schema version is newer than this release reads, or garbled
            (nothing was removed or created).
    """

    def __init__(
        self,
        root: Path,
        sealing_secret: bytes,
        *,
        quota_bytes: int,
        receipt_key: IdentityKey,
        holder_peer_id: str,
        chunk_bytes: int = DEFAULT_AT_REST_CHUNK_BYTES,
        owner_share: float = DEFAULT_OWNER_SHARE,
    ) -> None:
        if len(sealing_secret) < 32:
            raise ValueError("sealing secret must be at least 32 bytes")
        if quota_bytes < 0 or not 1024 <= chunk_bytes <= 16 * 1024 * 1024:
            raise ValueError("bad quota or chunk size")
        if not 0 < owner_share <= 1:
            raise ValueError("owner_share must be in (0, 1]")
        self._root = Path(root)
        self.schema_version = check_schema(self._root)  # before debris removal touches anything
        new = not self._root.exists() or not any(self._root.iterdir())
        self._shards = self._root / "shards"
        self._placed = self._root / "placed"
        self._tmp = self._root / "tmp"
        self._master = AESGCM(_derive_master(sealing_secret))
        self._quota = quota_bytes
        self.owner_quota_bytes = int(quota_bytes * owner_share)
        self._receipt_key = receipt_key
        self._holder_key = raw_public_key(receipt_key)
        self._peer_id = holder_peer_id
        self._lock = threading.Lock()
        self._reserved = 0
        # Per owner key: bytes of stored shards, bytes reserved by open writers; and per stored
        # shard (directory name) its owner, to account an erase.
        self._owner_used: dict[bytes, int] = {}
        self._owner_reserved: dict[bytes, int] = {}
        self._owner_of: dict[str, bytes] = {}
        for d in (self._root, self._shards, self._placed, self._tmp):
            d.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(d, _DIR_MODE)
        if new:
            write_version(self._root, SCHEMA_VERSION)
            self.schema_version = SCHEMA_VERSION
        self._debris = self._remove_debris()
        self.chunk_bytes = chunk_bytes
        self._used = 0
        for p in self._shards.iterdir():
            size = self._dir_bytes(p)
            owner = self._stored_owner(p)
            self._used += size
            self._owner_of[p.name] = owner
            self._owner_used[owner] = self._owner_used.get(owner, 0) + size

    def __repr__(self) -> str:
        return f"ShardStore(root={str(self._root)!r}, used={self._used}, quota={self._quota})"

    # ----------------------------------------------------------------- helpers

    def _remove_debris(self) -> int:
        removed = 0
        for p in self._tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed += 1
        for p in self._shards.iterdir():
            if not (p / "key").exists():  # an erase interrupted after the key went: finish it
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        for p in self._placed.iterdir():  # a torn mark, or the mark of a shard already erased
            if p.name.endswith(".tmp") or not (self._shards / p.name).is_dir():
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    @staticmethod
    def _stored_owner(path: Path) -> bytes:
        """The owner key of a stored shard, b"" when its manifest does not open (the scrub
        reports it; its bytes still count against the holder's quota)."""
        try:
            return open_manifest((path / "manifest").read_bytes()).owner
        except (OSError, RemoteProtocolError):
            return b""

    @staticmethod
    def _dir_bytes(path: Path) -> int:
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())

    def _path(self, object_id: bytes, index: int) -> Path:
        if len(object_id) != OBJECT_ID_BYTES or not 0 <= index < 255:
            raise ValueError("bad object id or index")
        return self._shards / f"{object_id.hex()}.{index}"

    def _reserve(self, owner: bytes, nbytes: int, need: int) -> None:
        """Reserve ``nbytes`` for ``owner`` if ``need`` (>= nbytes: what must fit now) fits
        both the holder's quota and the owner's share; raise otherwise, reserving nothing."""
        with self._lock:
            if self._used + self._reserved + need > self._quota:
                raise QuotaExceeded(
                    f"shard needs {need} bytes; {self._used} used + {self._reserved} reserved "
                    f"of a {self._quota}-byte quota"
                )
            mine = self._owner_used.get(owner, 0) + self._owner_reserved.get(owner, 0)
            if mine + need > self.owner_quota_bytes:
                raise OwnerQuotaExceeded(
                    f"shard needs {need} bytes; its owner holds or reserves {mine} of its "
                    f"{self.owner_quota_bytes}-byte share of the quota"
                )
            self._reserved += nbytes
            self._owner_reserved[owner] = self._owner_reserved.get(owner, 0) + nbytes

    def owner_bytes(self, owner: bytes) -> int:
        """Bytes ``owner``'s shards hold plus those its open transfers reserve here."""
        with self._lock:
            return self._owner_used.get(owner, 0) + self._owner_reserved.get(owner, 0)

    def _unwrap(self, path: Path, object_id: bytes, index: int) -> bytes:
        try:
            blob = (path / "key").read_bytes()
        except FileNotFoundError:
            raise ShardNotFound(f"{object_id.hex()}.{index}") from None
        try:
            return self._master.decrypt(
                blob[:_GCM_NONCE_BYTES],
                blob[_GCM_NONCE_BYTES:],
                _aad(_WRAP_DOMAIN, object_id, index),
            )
        except (InvalidTag, ValueError):
            raise StoredShardCorrupt(f"{object_id.hex()}.{index}: wrapped key") from None

    # ----------------------------------------------------------------- write

    def put(self, manifest_frame: bytes, index: int, fragment: Readable, share: KeyShare) -> ShardInfo:
        """Verify and durably store fragment ``index`` and its key share, in one call.

        Args:
            manifest_frame: the owner-signed ``shard-manifest`` frame.
            index: fragment index (0-based); the share must have x = index + 1.
            fragment: reader of the fragment bytes (streamed in chunks).
            share: the key share.

        Raises:
            RemoteProtocolError: the manifest is invalid or badly signed.
            FragmentCorrupt, ShareCorrupt: the data does not match the manifest.
            QuotaExceeded, StoreFull, ShardExists, StoreError: nothing was stored.
        """
        if share.x != index + 1:
            raise ValueError("share of another index")
        with self.begin_put(manifest_frame, index) as writer:
            check_shares(writer.manifest.params(), [share])  # before the fragment is read
            while block := fragment.read(self.chunk_bytes):
                writer.write(block)
            return writer.commit(share)

    def begin_put(self, manifest_frame: bytes, index: int) -> ShardWriter:
        """Start storing fragment ``index``: verifies the manifest, reserves quota.

        Feed the fragment with :meth:`ShardWriter.write` as ``shard-chunk`` frames arrive, then
        :meth:`ShardWriter.commit` with the key share (which arrives last). Use it as a context
        manager: leaving the block without a commit aborts and releases everything.

        Raises:
            RemoteProtocolError: the manifest is invalid or badly signed.
            QuotaExceeded, ShardExists, StoreFull, StoreError: nothing was stored.
        """
        manifest = open_manifest(manifest_frame)
        if not 0 <= index < manifest.n:
            raise ValueError("index outside the manifest")
        final_path = self._path(manifest.object_id, index)
        if final_path.exists():
            raise ShardExists(final_path.name)
        base = len(manifest_frame) + _METADATA_ALLOWANCE
        need = base + sealed_fragment_size(manifest.fragment_size, self.chunk_bytes)
        # The whole shard must fit now (an offer that cannot is refused before a byte moves),
        # but only the manifest, the metadata and the empty fragment are reserved: the writer
        # reserves the rest as the bytes arrive.
        first = base + sealed_fragment_size(0, self.chunk_bytes)
        self._reserve(manifest.owner, first, need)
        return ShardWriter(self, manifest, manifest_frame, index, first, base)

    def _release(self, owner: bytes, reserved: int, stored: int, name: str | None = None) -> None:
        with self._lock:
            self._reserved -= reserved
            self._used += stored
            left = self._owner_reserved.get(owner, 0) - reserved
            if left:
                self._owner_reserved[owner] = left
            else:
                self._owner_reserved.pop(owner, None)
            if name is not None:
                self._owner_of[name] = owner
                self._owner_used[owner] = self._owner_used.get(owner, 0) + stored

    # ----------------------------------------------------------------- read

    def manifest(self, object_id: bytes, index: int) -> Manifest:
        """The stored manifest, re-verified (its signature and object id)."""
        path = self._path(object_id, index)
        try:
            frame = (path / "manifest").read_bytes()
        except FileNotFoundError:
            raise ShardNotFound(path.name) from None
        try:
            m = open_manifest(frame)
        except RemoteProtocolError as exc:
            raise StoredShardCorrupt(f"{path.name}: manifest: {exc}") from None
        if not hmac.compare_digest(m.object_id, object_id) or index >= m.n:
            raise StoredShardCorrupt(f"{path.name}: manifest of another object")
        return m

    def manifest_frame(self, object_id: bytes, index: int) -> bytes:
        self.manifest(object_id, index)
        return (self._path(object_id, index) / "manifest").read_bytes()

    def update_manifest(self, manifest_frame: bytes, index: int) -> bool:
        """Replace a stored shard's manifest by a newer revision of the same object (after a
        repair moved another index): same owner, sizes, algorithms, fragment and share hashes
        and authorised keys; only ``revision`` (strictly higher) and ``placement`` may differ.
        Atomic (temp file, fsync, rename). Returns False when the stored one is not older.

        Raises:
            RemoteProtocolError: the frame is invalid or badly signed.
            ShardNotFound, StoredShardCorrupt: nothing to update.
            StoreError: the new manifest is not a revision of the stored one, or I/O failed.
        """
        new = open_manifest(manifest_frame)
        old = self.manifest(new.object_id, index)
        if new.revision <= old.revision:
            return False
        same = dataclasses.replace(new, revision=old.revision, placement=old.placement)
        if same != old:
            raise StoreError("not a revision of the stored manifest")
        path = self._path(new.object_id, index)
        tmp = path / f"manifest.{secrets.token_hex(4)}.tmp"
        try:
            _write_file(tmp, manifest_frame)
            old_size = (path / "manifest").stat().st_size
            os.replace(tmp, path / "manifest")
            _fsync_dir(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"I/O error while updating {path.name}: {exc.strerror}") from exc
        with self._lock:
            delta = len(manifest_frame) - old_size
            self._used += delta
            owner = self._owner_of.get(path.name, b"")
            self._owner_used[owner] = self._owner_used.get(owner, 0) + delta
        return True

    def read_share(self, object_id: bytes, index: int) -> KeyShare:
        """The key share, authenticated at rest and checked against the manifest hash."""
        m = self.manifest(object_id, index)
        path = self._path(object_id, index)
        aead = AESGCM(self._unwrap(path, object_id, index))
        try:
            blob = (path / "share").read_bytes()
        except FileNotFoundError:
            raise StoredShardCorrupt(f"{path.name}: key share missing") from None
        try:
            share = KeyShare.from_bytes(
                aead.decrypt(
                    blob[:_GCM_NONCE_BYTES],
                    blob[_GCM_NONCE_BYTES:],
                    _aad(_SHARE_DOMAIN, object_id, index),
                )
            )
            check_shares(m.params(), [share])
        except (InvalidTag, ValueError, ShareError, IntegrityError):
            raise StoredShardCorrupt(f"{path.name}: key share") from None
        if share.x != index + 1:
            raise StoredShardCorrupt(f"{path.name}: key share of another index")
        return share

    def read_fragment(self, object_id: bytes, index: int) -> Iterator[bytes]:
        """Yield the fragment in chunks, each authenticated; the manifest hash is checked at
        the end (StoredShardCorrupt). Drain it before trusting what was forwarded."""
        m = self.manifest(object_id, index)
        path = self._path(object_id, index)
        key = self._unwrap(path, object_id, index)
        return self._fragment_iter(path, m, index, key)

    def _fragment_iter(self, path: Path, m: Manifest, index: int, key: bytes) -> Iterator[bytes]:
        try:
            f = open(path / "fragment", "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            raise StoredShardCorrupt(f"{path.name}: fragment missing") from None
        with f:
            header = f.read(_HEADER_BYTES)
            if len(header) != _HEADER_BYTES or not header.startswith(_MAGIC):
                raise StoredShardCorrupt(f"{path.name}: fragment header")
            prefix = header[len(_MAGIC) : len(_MAGIC) + NONCE_PREFIX_BYTES]
            chunk = int.from_bytes(header[-4:], "big")
            if not 1024 <= chunk <= 16 * 1024 * 1024:
                raise StoredShardCorrupt(f"{path.name}: fragment header")
            opener = StreamOpener(key, prefix, header + _aad(b"", m.object_id, index), chunk)
            h = hashlib.sha256()
            remaining = m.fragment_size
            try:
                while True:
                    want = min(chunk, remaining)
                    sealed = read_full(f, want + TAG_BYTES)
                    if len(sealed) != want + TAG_BYTES:
                        raise StoredShardCorrupt(f"{path.name}: fragment truncated")
                    remaining -= want
                    block = opener.open(sealed, final=remaining == 0)
                    h.update(block)
                    yield block
                    if remaining == 0:
                        break
            except IntegrityError as exc:
                if isinstance(exc, StoredShardCorrupt):
                    raise
                raise StoredShardCorrupt(f"{path.name}: {exc}") from None
            if f.read(1):
                raise StoredShardCorrupt(f"{path.name}: trailing bytes")
            if not hmac.compare_digest(h.digest(), m.fragment_hashes[index]):
                raise StoredShardCorrupt(f"{path.name}: fragment hash mismatch")

    def copy_fragment(self, object_id: bytes, index: int, sink: Writable) -> int:
        """Write the verified fragment to ``sink``; returns its size."""
        n = 0
        for block in self.read_fragment(object_id, index):
            sink.write(block)
            n += len(block)
        return n

    def verify(self, object_id: bytes, index: int) -> None:
        """Full scrub of one shard: manifest, wrapped key, share and every fragment chunk."""
        self.read_share(object_id, index)
        for _ in self.read_fragment(object_id, index):
            pass

    # ----------------------------------------------------------------- erase

    def erase(self, object_id: bytes, index: int, nonce: bytes) -> ShardEraseReceipt:
        """Crypto-shred one shard (wrapped key first, then data) and sign a receipt.

        Returns a receipt with ``existed=False`` when there was nothing to erase.
        """
        path = self._path(object_id, index)
        existed = path.exists()
        if existed:
            size = self._dir_bytes(path)
            key_path = path / "key"
            with contextlib.suppress(FileNotFoundError):
                length = key_path.stat().st_size
                fd = os.open(key_path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    _write_all(fd, bytes(length))  # best effort: flash/COW may keep old blocks
                    os.fsync(fd)
                finally:
                    os.close(fd)
                key_path.unlink()
            _fsync_dir(path)
            shutil.rmtree(path)
            _fsync_dir(self._shards)
            with self._lock:
                self._used -= size
                owner = self._owner_of.pop(path.name, b"")
                left = self._owner_used.get(owner, 0) - size
                if left > 0:
                    self._owner_used[owner] = left
                else:
                    self._owner_used.pop(owner, None)
        (self._placed / path.name).unlink(missing_ok=True)
        existed_flag = bool(existed)
        transcript = receipt_transcript(
            object_id, index, self._peer_id, nonce, existed_flag, self._holder_key
        )
        return ShardEraseReceipt(
            object_id=object_id,
            index=index,
            holder_peer_id=self._peer_id,
            nonce=nonce,
            existed=existed_flag,
            holder_key=self._holder_key,
            signature=self._receipt_key.sign(transcript),
        )

    def erase_request(self, request: ShardErase) -> ShardEraseReceipt:
        """Erase on a signed owner request; refuses (RemoteProtocolError) unless the request is
        signed by the stored manifest's owner and addressed to this holder."""
        if request.holder_peer_id != self._peer_id:
            raise RemoteProtocolError("invalid", "erase addressed to another holder")
        try:
            owner = self.manifest(request.object_id, request.index).owner
        except ShardNotFound:
            return self.erase(request.object_id, request.index, request.nonce)
        data = erase_transcript(request.object_id, request.index, request.holder_peer_id, request.nonce)
        if not verify_ed25519(owner, request.signature, data):
            raise RemoteProtocolError("invalid", "erase not signed by the owner")
        return self.erase(request.object_id, request.index, request.nonce)

    # ----------------------------------------------------------------- placement marks

    def note_placed(self, object_id: bytes, index: int, federation: str, state_index: int) -> None:
        """Record that the committed placement (in ``federation``, at ``state_index``) names
        this holder for the shard. Atomic; kept until the shard is erased."""
        if not federation or not federation.isalnum() or len(federation) > 128 or state_index < 0:
            raise ValueError("bad federation id or state index")
        name = self._path(object_id, index).name
        tmp = self._placed / f"{name}.{secrets.token_hex(4)}.tmp"
        try:
            _write_file(tmp, f"{federation} {state_index}\n".encode())
            os.replace(tmp, self._placed / name)
            _fsync_dir(self._placed)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"I/O error while marking {name}: {exc.strerror}") from exc

    def placed(self, object_id: bytes, index: int) -> tuple[str, int] | None:
        """The mark :meth:`note_placed` left (federation, state index), or None. A mark that
        does not parse counts as none."""
        try:
            raw = (self._placed / self._path(object_id, index).name).read_bytes()[:256]
        except FileNotFoundError:
            return None
        return _parse_mark(raw)

    def marks(self) -> dict[tuple[bytes, int], tuple[str, int]]:
        """Every mark that parses, by (object id, index): one directory scan for a sweep."""
        out = {}
        for p in self._placed.iterdir():
            oid_hex, _, idx = p.name.partition(".")
            try:
                key = (bytes.fromhex(oid_hex), int(idx))
                mark = _parse_mark(p.read_bytes()[:256])
            except (ValueError, FileNotFoundError):  # a torn write, or erased meanwhile
                continue
            if mark is not None and len(key[0]) == OBJECT_ID_BYTES:
                out[key] = mark
        return out

    # ----------------------------------------------------------------- inventory

    def usage(self) -> tuple[int, int]:
        """(bytes used, quota): kept as shards come and go, read without touching the disk."""
        with self._lock:
            return self._used, self._quota

    def list_shards(self) -> list[ShardInfo]:
        out = []
        for p in sorted(self._shards.iterdir()):
            oid_hex, _, idx = p.name.partition(".")
            try:
                oid, index = bytes.fromhex(oid_hex), int(idx)
            except ValueError:
                continue
            if len(oid) == OBJECT_ID_BYTES:
                out.append(ShardInfo(oid, index, self._dir_bytes(p)))
        return out

    def health(self, *, scrub: bool = False) -> StoreHealth:
        """Counts, bytes, quota, free disk; with ``scrub`` every shard is fully verified."""
        shards = self.list_shards()
        corrupt = []
        if scrub:
            for s in shards:
                try:
                    self.verify(s.object_id, s.index)
                except (StoredShardCorrupt, ShardNotFound):
                    corrupt.append((s.object_id, s.index))
        st = os.statvfs(self._root)
        with self._lock:
            used = self._used
        return StoreHealth(
            shards=len(shards),
            used_bytes=used,
            quota_bytes=self._quota,
            disk_free_bytes=st.f_bavail * st.f_frsize,
            debris_removed=self._debris,
            corrupt=tuple(corrupt),
            owner_quota_bytes=self.owner_quota_bytes,
        )


class ShardWriter:
    """One shard being stored (see :meth:`ShardStore.begin_put`); not thread-safe itself.

    Every error aborts: the staging directory is removed and the quota reservation released;
    ENOSPC/EDQUOT become :class:`StoreFull`, other ``OSError`` :class:`StoreError`.
    """

    def __init__(
        self, store: ShardStore, manifest: Manifest, frame: bytes, index: int, reserved: int,
        base: int,
    ) -> None:
        self.manifest = manifest
        self.index = index
        self._store = store
        self._reserved = reserved  # grows with the bytes received (ShardStore docstring)
        self._base = base
        self._name = f"{manifest.object_id.hex()}.{index}"
        self._final = store._shards / self._name
        self._staging = store._tmp / secrets.token_hex(16)
        self._key = os.urandom(KEY_BYTES)
        self._hash = hashlib.sha256()
        self._received = 0
        self._buffer = bytearray()
        self._fd: int | None = None
        self._state = "open"
        self._chunk = store.chunk_bytes
        prefix = os.urandom(NONCE_PREFIX_BYTES)
        header = _MAGIC + prefix + self._chunk.to_bytes(4, "big")
        ctx = header + _aad(b"", manifest.object_id, index)
        self._sealer = StreamSealer(self._key, prefix, ctx, self._chunk)
        with self._guard():
            self._staging.mkdir(mode=_DIR_MODE)
            _write_file(self._staging / "manifest", frame)
            self._fd = _open_new(self._staging / "fragment")
            _write_all(self._fd, header)

    def __repr__(self) -> str:
        return f"ShardWriter({self._name}, received={self._received}, state={self._state})"

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state == "open":
            self.abort()

    @property
    def received_bytes(self) -> int:
        return self._received

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                raise StoreFull(f"disk full while storing {self._name}") from exc
            if isinstance(exc, OSError):
                raise StoreError(f"I/O error while storing {self._name}: {exc.strerror}") from exc
            raise

    def write(self, data: bytes) -> None:
        """Append fragment bytes (any slicing); refuses more than the manifest's size."""
        if self._state != "open":
            raise StoreError("writer is closed")
        with self._guard():
            if len(data) > self.manifest.fragment_size - self._received:
                raise FragmentCorrupt(self.index, "longer than the manifest says")
            grow = self._base + sealed_fragment_size(self._received + len(data), self._chunk)
            if grow > self._reserved:
                # QuotaExceeded here aborts (the guard) and releases what this writer held.
                self._store._reserve(self.manifest.owner, grow - self._reserved, grow - self._reserved)
                self._reserved = grow
            self._received += len(data)
            self._hash.update(data)
            self._buffer += data
            assert self._fd is not None
            # hold the last chunk back until we know whether it is the final one
            while len(self._buffer) > self._chunk or (
                len(self._buffer) == self._chunk and self._received < self.manifest.fragment_size
            ):
                block = bytes(self._buffer[: self._chunk])
                del self._buffer[: self._chunk]
                _write_all(self._fd, self._sealer.seal(block, final=False))

    def commit(self, share: KeyShare) -> ShardInfo:
        """Check length, fragment hash and share against the manifest; make the shard durable.

        Raises:
            FragmentCorrupt, ShareCorrupt, ShardExists, StoreFull, StoreError: nothing stored.
        """
        if self._state != "open":
            raise StoreError("writer is closed")
        m, oid, index, store = self.manifest, self.manifest.object_id, self.index, self._store
        with self._guard():
            if self._received != m.fragment_size:
                raise FragmentCorrupt(index, "shorter than the manifest says")
            if not hmac.compare_digest(self._hash.digest(), m.fragment_hashes[index]):
                raise FragmentCorrupt(index, "hash mismatch")
            if share.x != index + 1:
                raise ShareCorrupt(share.x, "share of another index")
            check_shares(m.params(), [share])
            assert self._fd is not None
            _write_all(self._fd, self._sealer.seal(bytes(self._buffer), final=True))
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            share_nonce = os.urandom(_GCM_NONCE_BYTES)
            sealed_share = AESGCM(self._key).encrypt(
                share_nonce, share.to_bytes(), _aad(_SHARE_DOMAIN, oid, index)
            )
            _write_file(self._staging / "share", share_nonce + sealed_share)
            wrap_nonce = os.urandom(_GCM_NONCE_BYTES)
            wrapped = store._master.encrypt(wrap_nonce, self._key, _aad(_WRAP_DOMAIN, oid, index))
            _write_file(self._staging / "key", wrap_nonce + wrapped)
            _fsync_dir(self._staging)
            try:
                os.rename(self._staging, self._final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ShardExists(self._name) from None
                raise
            # The shard is in place: from here on it is accounted for even if the final
            # directory fsync fails (then StoreError says durability is not confirmed).
            self._state = "committed"
            self._key = b""
            size = store._dir_bytes(self._final)
            store._release(m.owner, self._reserved, size, self._name)
            _fsync_dir(store._shards)
        return ShardInfo(oid, index, size)

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._key = b""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        shutil.rmtree(self._staging, ignore_errors=True)
        self._store._release(self.manifest.owner, self._reserved, 0)
