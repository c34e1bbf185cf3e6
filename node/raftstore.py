"""Durable Raft storage: hard state, log entries and snapshots in a data directory.

Theory of operation
-------------------
Layout of ``<dir>``::

    wal            append-only records: hard states and entries, each framed and checksummed
    snapshot       the latest snapshot (one framed record), replaced atomically
    schema-version the store's format version (node/schema.py): written when the store is
                   created; absent in stores made before versions existed, which are version 1
    *.tmp          leftovers of an interrupted atomic write; removed at open
    seal           present when the store is sealed: "ESRS1" + a 16-byte key check value

The version is checked before anything else at open: a store newer than ``SCHEMA_VERSION``,
or one whose version is garbled, is refused (``SchemaError``) with the directory untouched.

A record is ``u32 length | 32-byte SHA-256(body) | body`` with ``body = u8 kind | payload``
(big-endian). SHA-256 rather than CRC32C because the stdlib has no CRC32C and a torn write
must never pass as valid: a 32-bit CRC would let one torn tail in 4 billion through.

- ``save(hard_state, entries)`` appends the entries, then the hard state, and fsyncs before
  returning: that is the caller's step 1 of a Ready. An entry record with index ``i``
  overrides every earlier record with an index ``>= i`` (a new leader truncated our log), so
  replay reproduces the truncation without rewriting the file.
- At open the WAL is replayed record by record. The first record that is incomplete (torn
  write) or fails its checksum ends the valid prefix: the file is truncated there (and
  fsynced), with a WARNING giving the offset and the byte count dropped. Nothing after a
  bad record is ever used.
- ``save_snapshot(snapshot)`` writes ``snapshot.tmp``, fsyncs it, renames it over
  ``snapshot`` and fsyncs the directory; then it compacts: the WAL is rewritten (same atomic
  dance) with only the current hard state and the entries after the snapshot.

- **Sealing** (``seal_key``, 32 bytes; the node derives it from its storage secret, which the
  TEE or the key token seals: docs/keys.md). A new store given a key writes ``seal`` first and
  every record's payload is then ``nonce | AES-256-GCM(payload, ad = kind)``; the checksum
  still covers the bytes on disk, so a torn write is told from a wrong key. A store opened with
  another key is refused (``StoreCorrupted`` naming it) before anything is read or truncated; a
  store made before sealing existed (no ``seal`` file) stays readable and unsealed.

Uses only the standard library and ``cryptography``; no trio: the node calls it from a worker
thread.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consensus.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from consensus.raft import Persisted
from node.schema import read_version, write_version

log = logging.getLogger("node.raftstore")

_HEADER = struct.Struct(">I32s")
_KIND_ENTRY = 1
_KIND_HARD = 2
_KIND_SNAPSHOT = 3
_ENTRY = struct.Struct(">QQB")       # term, index, kind
_HARD = struct.Struct(">QQQ")        # term, vote (0 = none), commit
_SNAP = struct.Struct(">QQII")       # index, term, n_voters, n_removed
_ENTRY_KINDS = ("normal", "conf")
MAX_RECORD_BYTES = 64 * 1024 * 1024
# The format of wal and snapshot above. Bump it (and read the old one) when either changes.
SCHEMA_VERSION = 1

_SEAL_FILE = "seal"
_SEAL_MAGIC = b"ESRS1"
_SEAL_NONCE = 12


class StoreCorrupted(Exception):
    """The snapshot file is unreadable: refuse to start rather than lose committed state."""


def _frame(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + payload
    return _HEADER.pack(len(body), hashlib.sha256(body).digest()) + body


def _entry_payload(e: Entry) -> bytes:
    return _ENTRY.pack(e.term, e.index, _ENTRY_KINDS.index(e.kind)) + e.data


def _hard_payload(hs: HardState) -> bytes:
    return _HARD.pack(hs.term, hs.vote or 0, hs.commit)


def _snapshot_payload(s: Snapshot) -> bytes:
    m = s.meta
    head = _SNAP.pack(m.index, m.term, len(m.conf.voters), len(m.conf.removed))
    ids = b"".join(struct.pack(">Q", v) for v in (*m.conf.voters, *m.conf.removed))
    return head + ids + s.data


def _key_check(key: bytes) -> bytes:
    check = hmac.new(key, b"enclave-swarm raft store seal check v1", hashlib.sha256).digest()
    return _SEAL_MAGIC + check[:16]


def _decode_snapshot(payload: bytes) -> Snapshot:
    index, term, nv, nr = _SNAP.unpack_from(payload)
    off = _SNAP.size
    ids = [struct.unpack_from(">Q", payload, off + 8 * i)[0] for i in range(nv + nr)]
    off += 8 * (nv + nr)
    conf = ConfState(voters=tuple(ids[:nv]), removed=tuple(ids[nv:]))
    return Snapshot(SnapshotMeta(index=index, term=term, conf=conf), payload[off:])


def _read_records(data: bytes) -> tuple[list[tuple[int, bytes]], int, str]:
    """Parse framed records; return them, the length of the valid prefix and why it ended."""
    out: list[tuple[int, bytes]] = []
    off = 0
    while off < len(data):
        if len(data) - off < _HEADER.size:
            return out, off, "torn header"
        length, digest = _HEADER.unpack_from(data, off)
        start = off + _HEADER.size
        if length < 1 or length > MAX_RECORD_BYTES:
            return out, off, f"bad length {length}"
        if start + length > len(data):
            return out, off, "torn body"
        body = data[start:start + length]
        if hashlib.sha256(body).digest() != digest:
            return out, off, "checksum mismatch"
        out.append((body[0], body[1:]))
        off = start + length
    return out, off, ""


def check_schema(directory: str | os.PathLike[str]) -> int:
    """The schema version of the Raft store in ``directory`` (1 when it has none, or when the
    directory does not exist yet). Reads only.

    Raises:
        SchemaError: newer than this release reads, or garbled.
    """
    return read_version(Path(directory), what="Raft store", supported=SCHEMA_VERSION)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class RaftStore:
    """One node's durable Raft state. Not thread-safe: one writer.

    Args:
        directory: the data directory (created if missing).
        initial: what a brand-new node starts from (``Persisted.initial(...)``), used when the
            directory holds no snapshot yet.

    Raises:
        SchemaError: the store's schema version is newer than this release reads, or garbled
            (nothing in the directory was changed).
        StoreCorrupted: the snapshot is unreadable.
    """

    def __init__(self, directory: str | os.PathLike[str], initial: Persisted, *,
                 seal_key: bytes | None = None) -> None:
        self.dir = Path(directory)
        self.schema_version = check_schema(self.dir)  # before anything is touched
        self.dir.mkdir(parents=True, exist_ok=True)
        self._wal_path = self.dir / "wal"
        self._snap_path = self.dir / "snapshot"
        self._aead = self._open_seal(seal_key)
        for leftover in self.dir.glob("*.tmp"):
            log.info("removing leftover %s of an interrupted write", leftover.name)
            leftover.unlink()
        self.hard_state = initial.hard_state
        self.snapshot = initial.snapshot
        self.entries: list[Entry] = list(initial.entries)
        self.repaired_bytes = 0
        if self._snap_path.exists():
            self.snapshot = self._load_snapshot()
            self.entries = []
        elif not self._wal_path.exists():
            # Brand new: make the initial snapshot durable so a restart sees the same start,
            # and say which format it is in.
            write_version(self.dir, SCHEMA_VERSION)
            self.schema_version = SCHEMA_VERSION
            _atomic_write(self._snap_path, self._encode_snapshot(self.snapshot))
        self._replay()
        self._wal = open(self._wal_path, "ab")  # noqa: SIM115  (held open for appends)

    # ------------------------------------------------------------------ sealing

    @property
    def sealed(self) -> bool:
        return self._aead is not None

    def _open_seal(self, key: bytes | None) -> AESGCM | None:
        marker = self.dir / _SEAL_FILE
        if marker.exists():
            if key is None:
                raise StoreCorrupted(f"{self.dir}: the Raft store is sealed and no sealing key was given")
            if not hmac.compare_digest(marker.read_bytes(), _key_check(key)):
                raise StoreCorrupted(f"{self.dir}: the Raft store is sealed with another key (another "
                                     "token, enclave or identity); refusing to open it")
            return AESGCM(key)
        if key is None:
            return None
        if self._wal_path.exists() or self._snap_path.exists():
            log.info("%s: a Raft store made before sealing: kept unsealed", self.dir)
            return None
        _atomic_write(marker, _key_check(key))
        return AESGCM(key)

    def _record(self, kind: int, payload: bytes) -> bytes:
        if self._aead is not None:
            nonce = os.urandom(_SEAL_NONCE)
            payload = nonce + self._aead.encrypt(nonce, payload, bytes([kind]))
        return _frame(kind, payload)

    def _payload(self, kind: int, payload: bytes) -> bytes:
        if self._aead is None:
            return payload
        try:
            return self._aead.decrypt(payload[:_SEAL_NONCE], payload[_SEAL_NONCE:], bytes([kind]))
        except (InvalidTag, ValueError):
            # The checksum held, so these bytes were written as they are: not a torn write.
            raise StoreCorrupted(f"{self.dir}: a sealed record does not open (tampered)") from None

    def _encode_entry(self, e: Entry) -> bytes:
        return self._record(_KIND_ENTRY, _entry_payload(e))

    def _encode_hard(self, hs: HardState) -> bytes:
        return self._record(_KIND_HARD, _hard_payload(hs))

    def _encode_snapshot(self, s: Snapshot) -> bytes:
        return self._record(_KIND_SNAPSHOT, _snapshot_payload(s))

    # ------------------------------------------------------------------ open

    def _load_snapshot(self) -> Snapshot:
        data = self._snap_path.read_bytes()
        records, _valid, why = _read_records(data)
        if why or len(records) != 1 or records[0][0] != _KIND_SNAPSHOT:
            # Written atomically, so this is media corruption, not a torn write.
            raise StoreCorrupted(f"{self._snap_path}: unreadable snapshot ({why or 'bad record'})")
        return _decode_snapshot(self._payload(_KIND_SNAPSHOT, records[0][1]))

    def _replay(self) -> None:
        if not self._wal_path.exists():
            self._wal_path.touch()
            _fsync_dir(self.dir)
            return
        data = self._wal_path.read_bytes()
        records, valid, why = _read_records(data)
        if valid < len(data):
            dropped = len(data) - valid
            log.warning("wal: %s at offset %d; truncating %d byte(s) to the last valid record",
                        why, valid, dropped)
            with open(self._wal_path, "r+b") as f:
                f.truncate(valid)
                f.flush()
                os.fsync(f.fileno())
            self.repaired_bytes = dropped
        offset = self.snapshot.meta.index
        for kind, sealed_payload in records:
            payload = self._payload(kind, sealed_payload)
            if kind == _KIND_HARD:
                term, vote, commit = _HARD.unpack(payload)
                self.hard_state = HardState(term=term, vote=vote or None, commit=commit)
            elif kind == _KIND_ENTRY:
                term, index, k = _ENTRY.unpack_from(payload)
                e = Entry(term=term, index=index, kind=_ENTRY_KINDS[k], data=payload[_ENTRY.size:])
                if index <= offset:
                    continue  # already inside the snapshot
                self._put(e)
        # The hard state never claims a commit beyond what survived.
        last = self.entries[-1].index if self.entries else offset
        if self.hard_state.commit > last:
            log.warning("wal: commit %d beyond last entry %d; clamping",
                        self.hard_state.commit, last)
            self.hard_state = HardState(self.hard_state.term, self.hard_state.vote, last)
        if self.hard_state.commit < offset:
            self.hard_state = HardState(self.hard_state.term, self.hard_state.vote, offset)

    def _put(self, e: Entry) -> None:
        first = self.entries[0].index if self.entries else self.snapshot.meta.index + 1
        keep = e.index - first
        if keep < 0 or keep > len(self.entries):
            raise StoreCorrupted(f"entry {e.index} does not follow the log ({first}..)")
        del self.entries[keep:]
        self.entries.append(e)

    # ------------------------------------------------------------------ API

    def load(self) -> Persisted:
        """What to build the RawNode from."""
        return Persisted(self.hard_state, self.snapshot, tuple(self.entries))

    def save(self, hard_state: HardState | None, entries: tuple[Entry, ...] | list[Entry],
             sync: bool = True) -> None:
        """Append entries then the hard state; fsync before returning (if ``sync``)."""
        buf = bytearray()
        for e in entries:
            self._put(e)
            buf += self._encode_entry(e)
        if hard_state is not None:
            self.hard_state = hard_state
            buf += self._encode_hard(hard_state)
        if not buf:
            return
        self._wal.write(buf)
        self._wal.flush()
        if sync:
            os.fsync(self._wal.fileno())

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot atomically, then compact the WAL behind it.

        Used both for the node's own snapshots (after ``RawNode.compact``) and for one
        received from the leader (``Ready.snapshot``), which replaces the whole log."""
        if snapshot.meta.index <= self.snapshot.meta.index:
            return
        _atomic_write(self._snap_path, self._encode_snapshot(snapshot))
        self.snapshot = snapshot
        idx = snapshot.meta.index
        if self.entries and self.entries[-1].index >= idx and self._term_at(idx) == snapshot.meta.term:
            self.entries = [e for e in self.entries if e.index > idx]
        else:
            self.entries = []
        if self.hard_state.commit < idx:
            self.hard_state = HardState(self.hard_state.term, self.hard_state.vote, idx)
        self._compact()

    def _term_at(self, index: int) -> int | None:
        for e in self.entries:
            if e.index == index:
                return e.term
        return None

    def _compact(self) -> None:
        data = b"".join([self._encode_hard(self.hard_state), *map(self._encode_entry, self.entries)])
        self._wal.close()
        _atomic_write(self._wal_path, data)
        self._wal = open(self._wal_path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._wal.close()

    def __enter__(self) -> RaftStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
