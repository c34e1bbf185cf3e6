"""The node's data directory: identity, config, lock, control socket, persisted state.

Layout (all created 0700 / 0600)::

    identity.key     Ed25519 libp2p identity, PKCS#8 PEM, 0600, never overwritten; sealed to
                     the measurement where the TEE has a sealing key (SEV-SNP, SGX/Gramine:
                     node/attestation/sealing.py), plaintext PEM otherwise (TDX, simulated)
    storage.key      32-byte shard storage secret, sealed like the identity (only when sealed),
                     or sealed by the token's AES-256 key (keys in a PKCS#11 token, no TEE key)
    keys.toml        only when the keys live in a PKCS#11 token (node/keys/config.py); then
                     there is no identity.key: the identity never leaves the token
    config.toml      every setting with its comment (node/config.py)
    run.lock         flock()ed by the running node: a second `run` is refused
    control.sock     Unix socket of the control API, 0600, only while running
    peers.json       peers known at the last clean shutdown, to rejoin without bootstrap
    sim-tee/         the simulated TEE's host key and certificate (sim only)

A corrupted identity or config is never "repaired": the node refuses to start, names the file
and says why, and leaves it untouched for the operator. So is a sealed identity this enclave
cannot open (another measurement, launch policy or machine): the node refuses, and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.attestation.base import TeeKind
from node.attestation.sealing import (
    KeySource,
    KeySources,
    SealingError,
    describe,
    is_sealed,
    read_descriptor,
    seal,
    unseal,
)
from node.config import ConfigError, NodeConfig, load_config

IDENTITY = "identity.key"
CONFIG = "config.toml"
LOCK = "run.lock"
SOCKET = "control.sock"
PEERS = "peers.json"
SIM_TEE = "sim-tee"
STORAGE_KEY = "storage.key"
KEYS = "keys.toml"
STORAGE_SECRET_SIZE = 32
_AUTO: Any = object()  # init(): pick the sealing key source from the config's TEE


class DataDirError(Exception):
    """The data dir cannot be used (message names the file and the reason)."""


class AlreadyRunning(DataDirError):
    pass


def default_data_dir() -> Path:
    """Per user, per the XDG base directory spec."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "enclave-swarm"


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temp file beside ``path`` with ``mode``, fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` atomically with ``mode``; never overwrite an existing file."""
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise DataDirError(f"{path}: already exists; refusing to overwrite") from None
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    os.replace(_write_temp(path, data, mode), path)
    _fsync_dir(path.parent)


class DataDir:
    def __init__(self, path: Path, *, key_sources: KeySources | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self._lock_fd: int | None = None
        # Where the TEE sealing keys come from (tests point this at fake devices).
        self.key_sources = key_sources or KeySources()

    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def socket_path(self) -> Path:
        return self.path / SOCKET

    @property
    def peers_path(self) -> Path:
        return self.path / PEERS

    @property
    def sim_tee_path(self) -> Path:
        return self.path / SIM_TEE

    @property
    def storage_key_path(self) -> Path:
        return self.path / STORAGE_KEY

    @property
    def keys_path(self) -> Path:
        return self.path / KEYS

    def exists(self) -> bool:
        return self.identity_path.exists() or self.keys_path.exists()

    def token_config(self) -> Any:
        """The PKCS#11 settings of ``keys.toml``, or None for file keys.

        Raises:
            DataDirError: keys.toml is unreadable or invalid.
        """
        from node.keys.base import KeyProviderError
        from node.keys.config import load_keys_file

        try:
            return load_keys_file(self.keys_path)
        except KeyProviderError as exc:
            raise DataDirError(f"{exc}; the file was left untouched") from None

    def key_provider(self) -> Any:
        """The node's keys (node/keys): the token named by keys.toml, else identity.key.

        Raises:
            DataDirError: the identity file is unusable, or the token cannot be used (module,
                token, PIN, mechanism or object; one line saying which).
        """
        from node.keys.base import KeyProviderError

        tcfg = self.token_config()
        if tcfg is None:
            from node.keys.files import FileKeys

            return FileKeys(self.load_identity(), path=str(self.identity_path))
        from node.keys.pkcs11 import Pkcs11Keys

        try:
            return Pkcs11Keys(tcfg)
        except KeyProviderError as exc:
            raise DataDirError(str(exc)) from None

    def init_token(self, config: NodeConfig, token: Any, *, sealing: KeySource | None = _AUTO) -> Any:
        """Create a node whose keys live in the PKCS#11 token ``token`` (a TokenConfig): find
        or create the identity key pair and the AES sealing key in the token, then write
        keys.toml, storage.key and config.toml. Nothing is written when the token is refused.

        The storage secret is sealed by the TEE where it offers a sealing key, else by the
        token's AES key (docs/keys.md, "order of preference").

        Returns:
            the open provider (node/keys/pkcs11.py).

        Raises:
            DataDirError: the data dir already has keys, or the token is refused.
        """
        from node.keys.base import KeyProviderError
        from node.keys.config import keys_toml
        from node.keys.pkcs11 import Pkcs11Keys

        if self.exists():
            raise DataDirError(f"{self.path}: this data dir already has keys; refusing to overwrite")
        source = self.sealing_source(config) if sealing is _AUTO else sealing
        try:
            keys = Pkcs11Keys(token, create=True)
        except KeyProviderError as exc:
            raise DataDirError(str(exc)) from None
        try:
            secret = os.urandom(STORAGE_SECRET_SIZE)
            storage = seal(source, "storage", secret) if source is not None else keys.seal("storage", secret)
        except (SealingError, KeyProviderError) as exc:
            keys.close()
            raise DataDirError(f"{self.storage_key_path}: cannot seal the storage secret: {exc}") from None
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            keys.close()
            raise DataDirError(f"{self.path}: cannot create ({exc.strerror})") from None
        write_atomic(self.storage_key_path, storage, 0o600)
        write_new(self.keys_path, keys_toml(token).encode(), 0o600)
        if not self.config_path.exists():
            write_new(self.config_path, config.to_toml().encode(), 0o600)
        return keys

    # ------------------------------------------------------------------ init
    def sealing_source(self, config: NodeConfig) -> KeySource | None:
        """The sealing key source for ``config``'s TEE: None for the simulated TEE, TDX, or
        ``auto`` on a host without a TEE."""
        tee = config.attestation.tee
        if tee == "auto":
            from node.attestation.providers import detect_tee

            kind = detect_tee()
        else:
            kind = TeeKind(tee)
        return self.key_sources.for_kind(kind)

    def init(self, config: NodeConfig, *, sealing: KeySource | None = _AUTO) -> Ed25519PrivateKey:
        """Create identity (0600) and config. Refuses if an identity exists.

        Where the TEE has a sealing key (``sealing``, by default chosen from the config's TEE),
        the identity and a fresh storage secret are written sealed to the measurement;
        otherwise the identity is plaintext PEM (see :meth:`identity_note`).

        Raises:
            DataDirError: the identity already exists, the directory is unusable, or the TEE's
                sealing key is unavailable.
        """
        if self.identity_path.exists():
            raise DataDirError(f"{self.identity_path}: an identity already exists; refusing to overwrite")
        source = self.sealing_source(config) if sealing is _AUTO else sealing
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        storage = None
        if source is not None:
            try:
                identity_blob = seal(source, "identity", pem)
                storage = seal(source, "storage", os.urandom(STORAGE_SECRET_SIZE))
            except SealingError as exc:
                raise DataDirError(f"{self.identity_path}: cannot seal the new identity: {exc}") from None
        else:
            identity_blob = pem
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"{self.path}: cannot create ({exc.strerror})") from None
        if storage is not None:
            # Written first: an identity without its storage secret would be a half-made node.
            write_atomic(self.storage_key_path, storage, 0o600)
        else:
            # A storage secret left by an init that crashed before its identity was written
            # belongs to no identity: it must not be taken for this one's.
            with contextlib.suppress(FileNotFoundError):
                self.storage_key_path.unlink()
        write_new(self.identity_path, identity_blob, 0o600)
        if not self.config_path.exists():
            write_new(self.config_path, config.to_toml().encode(), 0o600)
        return key

    # ------------------------------------------------------------------ load
    def _read_private(self, p: Path) -> bytes:
        try:
            st = p.stat()
            data = p.read_bytes()
        except FileNotFoundError:
            raise DataDirError(f"{p}: no identity; run `enclave-swarm init --data-dir {self.path}`") from None
        except OSError as exc:
            raise DataDirError(f"{p}: cannot read ({exc.strerror})") from None
        if st.st_mode & 0o077:
            raise DataDirError(f"{p}: permissions {oct(st.st_mode & 0o777)} are too open; must be 0600")
        return data

    def identity_sealing(self) -> str | None:
        """How the identity file is sealed (e.g. "SEV-SNP derived key (...)"), or None when it
        is plaintext or unreadable."""
        try:
            data = self.identity_path.read_bytes()
            return describe(read_descriptor(data)[0]) if is_sealed(data) else None
        except (OSError, SealingError):
            return None

    def identity_note(self, tee: str) -> str:
        """One line for the operator: how the identity is protected at rest on TEE ``tee``."""
        if self.keys_path.exists() and not self.identity_path.exists():
            try:
                t = self.token_config()
            except DataDirError:
                t = None
            where = f"token {t.token!r} ({t.module})" if t is not None else "a PKCS#11 token"
            return (f"the identity and sealing keys are in {where}: they never leave it "
                    "(docs/keys.md)")
        how = self.identity_sealing()
        if how is not None:
            return f"identity.key and storage.key are sealed to this enclave: {how}"
        why = ("the simulated TEE has no sealing key" if tee == "sim"
               else f"TEE {tee} offers no sealing key" if tee == "tdx"
               else "it was created without a TEE sealing key")
        return (f"identity.key is PLAINTEXT ({why}): whoever reads {self.path} can impersonate "
                "this node and unseal its shards; protect the disk (docs/attestation.md)")

    def load_identity(self) -> Ed25519PrivateKey:
        """The node's identity key, unsealed if it is sealed.

        Raises:
            DataDirError: missing, too open, corrupted, or sealed to another measurement,
                launch policy or machine (the file is left untouched).
        """
        p = self.identity_path
        data = self._read_private(p)
        if is_sealed(data):
            try:
                data = unseal(data, "identity", self.key_sources)
            except SealingError as exc:
                raise DataDirError(f"{p}: cannot unseal the identity: {exc}; "
                                   "the file was left untouched") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, Exception) as exc:  # cryptography raises several types
            raise DataDirError(f"{p}: corrupted identity ({type(exc).__name__}); "
                               "the file was left untouched") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise DataDirError(f"{p}: not an Ed25519 key; the file was left untouched")
        return key

    def storage_secret(self, keys: Any = None) -> bytes | None:
        """The sealed shard storage secret (32 bytes), or None when this data dir keeps
        plaintext keys (the caller then derives it from the identity, as for the simulated TEE).
        ``keys`` (node/keys) opens a secret sealed by a token.

        Raises:
            DataDirError: the file is too open, damaged, sealed to another enclave, or sealed
                by another token (or the token is gone).
        """
        from node.keys.base import KeyProviderError, KeyUnavailable
        from node.keys.pkcs11 import SEAL_MAGIC

        p = self.storage_key_path
        if not p.exists():
            return None
        data = self._read_private(p)
        if data.startswith(SEAL_MAGIC):
            if keys is None or keys.backend != "pkcs11":
                raise DataDirError(f"{p}: sealed by a PKCS#11 token, but this node's keys are not in one")
            try:
                secret: bytes = keys.unseal("storage", data)
            except (KeyProviderError, KeyUnavailable) as exc:
                raise DataDirError(f"{p}: cannot unseal the storage secret: {exc}; "
                                   "the file was left untouched") from None
            if len(secret) != STORAGE_SECRET_SIZE:
                raise DataDirError(f"{p}: the storage secret is not {STORAGE_SECRET_SIZE} bytes")
            return secret
        try:
            secret = unseal(data, "storage", self.key_sources)
        except SealingError as exc:
            raise DataDirError(f"{p}: cannot unseal the storage secret: {exc}; "
                               "the file was left untouched") from None
        if len(secret) != STORAGE_SECRET_SIZE:
            raise DataDirError(f"{p}: the storage secret is not {STORAGE_SECRET_SIZE} bytes")
        return secret

    def load_config(self) -> NodeConfig:
        if not self.config_path.exists():
            raise DataDirError(f"{self.config_path}: missing")
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            raise DataDirError(f"{exc}; the file was left untouched") from None

    # ------------------------------------------------------------------ lock
    def lock(self) -> None:
        """Take the run lock for this process. Raises AlreadyRunning if another node holds it."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"{self.path}: another node is already running on this data dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def is_locked(self) -> bool:
        """True when some process (maybe this one) holds the run lock."""
        p = self.path / LOCK
        if not p.exists():
            return False
        fd = os.open(p, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # ------------------------------------------------------------------ state
    def save_peers(self, peers: dict[str, list[str]]) -> None:
        write_atomic(self.peers_path, json.dumps(peers, indent=1, sort_keys=True).encode())

    def load_peers(self) -> dict[str, list[str]]:
        """Peers saved at the last shutdown; a damaged file is ignored (it is only a cache)."""
        try:
            data: Any = json.loads(self.peers_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(k): [str(a) for a in v][:8]
            for k, v in list(data.items())[:1024]
            if isinstance(v, list)
        }
