"""Schema versions of what a node keeps on disk, and the one rule for reading them.

Theory of operation
-------------------
Three things in a data dir have a format that a release may change: ``config.toml`` (its
``schema_version`` key, node/config.py), the Raft store ``raft/`` and the shard store
``shards/`` (a ``schema-version`` file in each, node/raftstore.py and node/shards/store.py).
Each carries a small positive integer, bumped by the release that changes the format.

- **Absent means 1.** Data dirs written before versions existed have none; they are version 1
  and are read as they are (nothing is stamped into them: a node that only reads an old store
  leaves it as the previous release can still use it).
- **Newer is refused.** A version above what this release reads is refused with one line
  naming the file, the version found and the one supported, before anything is changed: the
  operator runs a release that reads it (the one that wrote it, or later).
- **Garbled is refused too.** A version that is not a decimal number in 1..``MAX_VERSION``, or
  a file larger than a version could be, is not guessed at: the node refuses, saying so.
- A new store gets the version of the release that creates it, written atomically.

No trio, no logging: callers turn :class:`SchemaError` into their own refusal (the CLI: exit 1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

VERSION_FILE = "schema-version"
MAX_VERSION = 1_000_000
_MAX_FILE_BYTES = 32  # "1000000\n" is 8; anything much larger is not a version file
_DIGITS = re.compile(rb"[0-9]{1,7}")


class SchemaError(Exception):
    """A store's schema version is newer than this release reads, or unreadable (one line)."""


def check_version(version: object, *, where: str, what: str, supported: int) -> int:
    """``version`` as an int if this release reads it.

    Args:
        version: the value found (an int, or anything else a hostile file may hold).
        where: the file, for the message.
        what: the store, for the message ("Raft store", "shard store", "config").
        supported: the newest version this release reads.

    Raises:
        SchemaError: not an integer in 1..MAX_VERSION, or newer than ``supported``.
    """
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise SchemaError(f"{where}: unreadable {what} schema version {_show(version)}; "
                          "refusing to guess")
    if version > supported:
        raise SchemaError(f"{where}: {what} schema version {version} is newer than this release "
                          f"reads (up to {supported}); run a release that reads it")
    return version


def read_version(directory: Path, *, what: str, supported: int) -> int:
    """The schema version of the store in ``directory`` (1 when it has no version file).

    Raises:
        SchemaError: the file is unreadable, garbled, or names a newer version.
    """
    path = Path(directory) / VERSION_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return 1
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read the {what} schema version "
                          f"({exc.strerror or exc}); nothing was changed") from None
    text = raw.strip()
    if len(raw) > _MAX_FILE_BYTES or not _DIGITS.fullmatch(text):
        raise SchemaError(f"{path}: unreadable {what} schema version {_show(raw[:16])}; "
                          "refusing to guess; nothing was changed")
    try:
        return check_version(int(text), where=str(path), what=what, supported=supported)
    except SchemaError as exc:
        raise SchemaError(f"{exc}; nothing was changed") from None


def write_version(directory: Path, version: int) -> None:
    """Record ``version`` for the store in ``directory`` (atomically: temp file, fsync, rename)."""
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(f"schema version {version} out of range")
    path = Path(directory) / VERSION_FILE
    tmp = path.with_name(f".{VERSION_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{version}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _show(value: object) -> str:
    """A short, printable rendering of a hostile value for a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
