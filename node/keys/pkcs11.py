"""The PKCS#11 key backend: the node's keys inside a token (HSM, YubiHSM, cloud HSM, SoftHSM2).

Theory of operation
-------------------
- **Objects.** A token holds two objects of ours, found by label: an Ed25519 key pair
  (``CKK_EC_EDWARDS``, made by ``CKM_EC_EDWARDS_KEY_PAIR_GEN``, signing with ``CKM_EDDSA``)
  for the node's libp2p identity, and an AES-256 secret key (``CKM_AES_GCM``) that seals the
  shard storage secret. Both are created ``CKA_SENSITIVE`` and not ``CKA_EXTRACTABLE``: they
  never leave the token. ``init`` creates what is missing (``create=True``); ``run`` only
  finds them, and refuses with one line naming what is missing.
- **Mechanisms.** Before anything is created or used, the token's mechanism list is checked;
  a token that cannot sign Ed25519 is refused naming the mechanism (``CKM_EDDSA``, or
  ``CKM_EC_EDWARDS_KEY_PAIR_GEN`` when the key must be made).
- **The PIN** comes from a file (``pin_file``, first line, 0600 advised) or an environment
  variable (``pin_env``), never from the command line, and is never logged. It is kept in
  memory to log in again when the token comes back.
- **Loss and recovery.** Any PKCS#11 error in an operation marks the token *lost*: ``sign``
  raises :class:`~node.keys.base.KeyUnavailable` from then on (the node stops signing and
  withholds its evidence, so its peers quarantine it as a node that cannot attest).
  :meth:`Pkcs11Keys.check` (the node's key watch calls it every few seconds from a worker
  thread) probes a live token with a signature, and re-opens a lost one: re-initialise the
  module (so it sees the token again), log in, find the objects. The token is accepted back
  only if its identity public key is the one the node started with: a different token under
  the same label never becomes this node.
- **Threads.** One lock serialises every call into the module: the trio thread signs, the
  watch thread probes and re-opens.

Modules are loaded once per path per process (a PKCS#11 module is process-global state); a
module is re-initialised (``C_Finalize``/``C_Initialize``) only while no other open provider
uses it, or to recover a lost token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.keys.base import KeyProviderError, KeyUnavailable

try:  # the package is a dependency; imported lazily so the file backend never needs it
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11 import exceptions as p11e
    from pkcs11.mechanisms import GCMParams
    from pkcs11.util.ec import encode_named_curve_parameters
except ImportError:  # pragma: no cover - reported by open_token
    pkcs11 = None  # type: ignore[assignment]

PIN_ENV = "ENCLAVE_SWARM_PKCS11_PIN"
IDENTITY_LABEL = "enclave-swarm identity"
SEALING_LABEL = "enclave-swarm sealing"
ED25519_OID = "1.3.101.112"
MAX_PIN_BYTES = 256
SEAL_MAGIC = b"ESTK1"  # a secret sealed by a token's AES key
_NONCE_BYTES = 12
_SEAL_AD = b"enclave-swarm token seal v1\0"


@dataclasses.dataclass(frozen=True)
class TokenConfig:
    """Where the keys are: the ``[pkcs11]`` settings of ``keys.toml`` (node/keys/config.py)."""

    # Path of the vendor's PKCS#11 module (.so).
    module: str
    # Label of the token (CKA_LABEL of the token info).
    token: str
    # File whose first line is the user PIN (preferred); else the environment variable below.
    pin_file: str = ""
    # Environment variable holding the user PIN when pin_file is empty.
    pin_env: str = PIN_ENV
    # Labels of our objects in the token.
    identity_label: str = IDENTITY_LABEL
    sealing_label: str = SEALING_LABEL


def read_pin(cfg: TokenConfig) -> str:
    """The user PIN from ``cfg.pin_file`` or ``$cfg.pin_env``.

    Raises:
        KeyProviderError: neither is set, the file cannot be read, or the PIN is empty/too long.
    """
    if cfg.pin_file:
        p = Path(cfg.pin_file)
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_PIN_BYTES + 2)
        except OSError as exc:
            raise KeyProviderError(f"{p}: cannot read the PIN file ({exc.strerror})") from None
        lines = raw.splitlines()
        pin = lines[0].decode("utf-8", "replace") if lines else ""
        where = f"PIN file {p}"
    else:
        pin = os.environ.get(cfg.pin_env, "")
        where = f"${cfg.pin_env}"
        if not pin:
            raise KeyProviderError(f"no PIN for token {cfg.token!r}: set a pin_file or ${cfg.pin_env}")
    if not pin or len(pin.encode()) > MAX_PIN_BYTES:
        raise KeyProviderError(f"{where}: the PIN is empty or longer than {MAX_PIN_BYTES} bytes")
    return pin


# -------------------------------------------------------------------------- modules
class _Module:
    """One loaded PKCS#11 module and how many open providers use it."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.users = 0


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()


def _load_module(path: str) -> _Module:
    if pkcs11 is None:
        raise KeyProviderError("the python-pkcs11 package is not installed "
                               "(pip install 'python-pkcs11>=0.10,<0.11')")
    if not path:
        raise KeyProviderError("no PKCS#11 module path configured")
    real = str(Path(path).resolve())
    with _MODULES_LOCK:
        mod = _MODULES.get(real)
        if mod is None:
            if not Path(real).is_file():
                raise KeyProviderError(f"PKCS#11 module {path}: no such file")
            try:
                mod = _Module(pkcs11.lib(real))
            except p11e.PKCS11Error as exc:
                text = _one_line(exc)
                if "loading" in text:
                    raise KeyProviderError(f"PKCS#11 module {path} does not load: {text}") from None
                # It loaded, but C_Initialize failed (SoftHSM2: its token directory is gone).
                raise KeyProviderError(f"PKCS#11 module {path} cannot initialise "
                                       f"({text or type(exc).__name__}): is its token store there?") from None
            _MODULES[real] = mod
        elif mod.users == 0:
            # Nobody holds a session: re-read the module's configuration and token list
            # (a token created or re-inserted since the module was loaded is seen).
            _reinitialize(mod)
        return mod


def _reinitialize(mod: _Module) -> None:
    with contextlib.suppress(p11e.PKCS11Error):  # not initialised (an earlier initialise failed)
        mod.lib.finalize()
    try:
        mod.lib.initialize()
    except p11e.PKCS11Error as exc:
        raise KeyProviderError(f"the PKCS#11 module cannot initialise "
                               f"({_one_line(exc) or type(exc).__name__}): is its token store there?"
                               ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _mech_name(m: Any) -> str:
    return "CKM_" + str(m.name)


def mechanism_problem(mechs: set[Any], *, create: bool, sealing: bool) -> str | None:
    """What a token with mechanisms ``mechs`` cannot do for us (naming the missing mechanisms),
    or None. Signing is checked first: a token that cannot sign Ed25519 cannot hold a node."""
    sign = [Mechanism.EDDSA] + ([Mechanism.EC_EDWARDS_KEY_PAIR_GEN] if create else [])
    missing = [m for m in sign if m not in mechs]
    if missing:
        return f"cannot sign Ed25519: mechanism {', '.join(_mech_name(m) for m in missing)} missing"
    if sealing:
        seal = [Mechanism.AES_GCM] + ([Mechanism.AES_KEY_GEN] if create else [])
        missing = [m for m in seal if m not in mechs]
        if missing:
            return (f"cannot seal with AES-256-GCM: mechanism "
                    f"{', '.join(_mech_name(m) for m in missing)} missing")
    return None


def raw_ed25519_point(point: bytes) -> bytes:
    """The 32-byte key from CKA_EC_POINT (a DER OCTET STRING, or raw as some tokens give it)."""
    if len(point) == 34 and point[0] == 0x04 and point[1] == 32:
        return point[2:]
    if len(point) == 32:
        return point
    raise KeyProviderError(f"the token's Ed25519 public key has an unexpected encoding ({len(point)} bytes)")


# -------------------------------------------------------------------------- the key
class TokenEd25519Key:
    """The node identity as a private-key handle: ``sign`` runs inside the token.

    Offers the surface of ``cryptography``'s ``Ed25519PrivateKey`` that our code uses
    (``sign``, ``public_key``), and nothing that would export the key."""

    __slots__ = ("_pub", "_raw", "provider")

    def __init__(self, provider: Pkcs11Keys, public_raw: bytes) -> None:
        self.provider = provider
        self._raw = public_raw
        self._pub = Ed25519PublicKey.from_public_bytes(public_raw)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of ``data`` by the token. Raises KeyUnavailable if it is gone."""
        return self.provider.sign(data)

    def public_key(self) -> Ed25519PublicKey:
        return self._pub

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __repr__(self) -> str:
        return f"<TokenEd25519Key token={self.provider.config.token!r}>"


# -------------------------------------------------------------------------- provider
class Pkcs11Keys:
    """The node's keys in a PKCS#11 token (see the module docstring).

    Args:
        config: module, token, PIN source, object labels.
        create: make the objects that are missing (``init``); otherwise a missing object is
            refused.
        sealing: also find (or create) the AES sealing key.

    Raises:
        KeyProviderError: the module does not load, no such token, wrong PIN, a mechanism the
            token lacks, a missing or ambiguous object. Nothing in the token was changed
            unless every check passed.
    """

    backend = "pkcs11"

    def __init__(self, config: TokenConfig, *, create: bool = False, sealing: bool = True) -> None:
        self.config = config
        self._pin = read_pin(config)
        self._lock = threading.Lock()
        self._mod = _load_module(config.module)
        self._mod.users += 1
        self._sealing_wanted = sealing
        self._session: Any = None
        self._priv: Any = None
        self._aes: Any = None
        self._closed = False
        try:
            public = self._open(create)
        except BaseException:
            self._mod.users -= 1
            raise
        self.identity = TokenEd25519Key(self, public)
        self.available = True
        self.reason = ""
        self.lost_at: float | None = None
        self.losses = 0
        self.recoveries = 0
        self.signatures = 0

    # ------------------------------------------------------------------ open
    def _open(self, create: bool) -> bytes:
        cfg = self.config
        lib = self._mod.lib
        try:
            token = lib.get_token(token_label=cfg.token)
        except p11e.NoSuchToken:
            raise KeyProviderError(f"no token labelled {cfg.token!r} in PKCS#11 module {cfg.module}"
                                   ) from None
        except p11e.MultipleTokensReturned:
            raise KeyProviderError(f"more than one token labelled {cfg.token!r} in {cfg.module}") from None
        except p11e.PKCS11Error as exc:
            raise KeyProviderError(f"token {cfg.token!r} in {cfg.module} is unavailable "
                                   f"({_one_line(exc) or type(exc).__name__})") from None
        try:
            mechs = token.slot.get_mechanisms()
        except p11e.PKCS11Error as exc:
            raise KeyProviderError(f"token {cfg.token!r}: cannot list its mechanisms "
                                   f"({type(exc).__name__})") from None
        problem = mechanism_problem(set(mechs), create=create, sealing=self._sealing_wanted)
        if problem:
            raise KeyProviderError(f"token {cfg.token!r} {problem}")
        try:
            session = token.open(user_pin=self._pin, rw=create)
        except p11e.PinIncorrect:
            raise KeyProviderError(f"token {cfg.token!r}: wrong PIN") from None
        except p11e.PinLocked:
            raise KeyProviderError(f"token {cfg.token!r}: the PIN is locked") from None
        except (p11e.PinInvalid, p11e.PinLenRange):
            raise KeyProviderError(f"token {cfg.token!r}: the PIN is not valid for this token") from None
        except p11e.PKCS11Error as exc:
            raise KeyProviderError(f"token {cfg.token!r}: cannot log in ({type(exc).__name__})") from None
        try:
            priv, public = self._identity_objects(session, create)
            aes = self._sealing_object(session, create) if self._sealing_wanted else None
        except BaseException:
            _close_quietly(session)
            raise
        self._session, self._priv, self._aes = session, priv, aes
        return public

    def _token_key(self, session: Any, what: str, label: str, make: Callable[[], Any] | None,
                   query: dict[Any, Any]) -> Any:
        """The one object labelled ``label`` with the attributes in ``query``; made by
        ``make`` when there is none and ``make`` is given. Every failure is a
        :class:`KeyProviderError` naming the token, ``what`` and the label."""
        token = self.config.token
        try:
            # The whole search, not Session.get_key: its search is left open when it finds
            # two objects, and ends (with an error) only when garbage collected.
            found = list(session.get_objects({**query, Attribute.LABEL: label}))
        except p11e.PKCS11Error as exc:
            raise KeyProviderError(f"token {token!r}: cannot read the {what} labelled {label!r} "
                                   f"({type(exc).__name__})") from None
        if len(found) > 1:
            raise KeyProviderError(f"token {token!r} holds several objects for the {what} labelled "
                                   f"{label!r}; refusing to guess")
        if found:
            return found[0]
        if make is None:
            raise KeyProviderError(f"token {token!r} holds no {what} labelled {label!r} "
                                   "(run `enclave-swarm init --keys pkcs11`)")
        return make()

    def _identity_objects(self, session: Any, create: bool) -> tuple[Any, bytes]:
        label = self.config.identity_label
        made: list[Any] = []

        def generate() -> Any:
            pub, priv = session.generate_keypair(
                KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
                label=label,
                public_template={Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                  Attribute.SIGN: True})
            made.append(pub)
            return priv

        what = "Ed25519 key pair"
        priv = self._token_key(session, what, label, generate if create else None,
                               {Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        pub = made[0] if made else self._token_key(session, what, label, None,
                                                   {Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        if priv.key_type != KeyType.EC_EDWARDS:
            raise KeyProviderError(f"token {self.config.token!r}: key {label!r} is not an Ed25519 key")
        return priv, raw_ed25519_point(bytes(pub[Attribute.EC_POINT]))

    def _sealing_object(self, session: Any, create: bool) -> Any:
        def generate() -> Any:
            return session.generate_key(
                KeyType.AES, 256, label=self.config.sealing_label, store=True,
                template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                          Attribute.ENCRYPT: True, Attribute.DECRYPT: True})

        return self._token_key(session, "AES key", self.config.sealing_label,
                               generate if create else None,
                               {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES})

    # ------------------------------------------------------------------ operations
    def _lost(self, exc: BaseException) -> KeyUnavailable:
        if self.available:
            self.available = False
            self.lost_at = time.time()
            self.losses += 1
        self.reason = f"token {self.config.token!r} unavailable: {type(exc).__name__}"
        return KeyUnavailable(self.reason)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 (``CKM_EDDSA``) signature of ``data``.

        Raises:
            KeyUnavailable: the token is lost (now or earlier, until :meth:`check` recovers it).
        """
        with self._lock:
            if not self.available:
                raise KeyUnavailable(self.reason)
            try:
                sig: bytes = self._priv.sign(data, mechanism=Mechanism.EDDSA)
            except p11e.PKCS11Error as exc:
                raise self._lost(exc) from None
            self.signatures += 1
            return sig

    def seal(self, purpose: str, data: bytes) -> bytes:
        """``data`` encrypted with the token's AES-256-GCM key, ``purpose`` bound as AAD."""
        nonce = os.urandom(_NONCE_BYTES)
        with self._lock:
            if not self.available or self._aes is None:
                raise KeyUnavailable(self.reason or "no sealing key")
            try:
                ct = self._aes.encrypt(data, mechanism=Mechanism.AES_GCM,
                                       mechanism_param=GCMParams(nonce, _SEAL_AD + purpose.encode()))
            except p11e.PKCS11Error as exc:
                raise self._lost(exc) from None
        return SEAL_MAGIC + nonce + bytes(ct)

    def unseal(self, purpose: str, blob: bytes) -> bytes:
        """Open a blob made by :meth:`seal` for ``purpose``.

        Raises:
            KeyProviderError: not such a blob, or this token's key does not open it (another
                token, another purpose, or damage).
            KeyUnavailable: the token is lost.
        """
        head = len(SEAL_MAGIC) + _NONCE_BYTES
        if not blob.startswith(SEAL_MAGIC) or len(blob) < head + 16:
            raise KeyProviderError("not a secret sealed by a token")
        nonce = blob[len(SEAL_MAGIC):head]
        with self._lock:
            if not self.available or self._aes is None:
                raise KeyUnavailable(self.reason or "no sealing key")
            try:
                pt = self._aes.decrypt(blob[head:], mechanism=Mechanism.AES_GCM,
                                       mechanism_param=GCMParams(nonce, _SEAL_AD + purpose.encode()))
            except p11e.PKCS11Error as exc:
                # Modules report a failed tag differently (SoftHSM2: CKR_GENERAL_ERROR): if the
                # token still signs, it is here and its key does not open the blob.
                try:
                    self._priv.sign(b"enclave-swarm unseal probe", mechanism=Mechanism.EDDSA)
                except p11e.PKCS11Error:
                    raise self._lost(exc) from None
                raise KeyProviderError(f"token {self.config.token!r}: its sealing key does not open this "
                                       "secret (sealed by another token, or damaged)") from None
        return bytes(pt)

    # ------------------------------------------------------------------ health
    def check(self) -> bool:
        """Probe a live token, re-open a lost one. Returns whether the keys are usable now.

        Blocking (PKCS#11 calls): the node runs it in a worker thread."""
        if self.available:
            try:
                self.sign(b"enclave-swarm key watch probe")
            except KeyUnavailable:
                pass
            else:
                return True
        with self._lock:
            old = self._session
            self._session = self._priv = self._aes = None
            if old is not None:
                _close_quietly(old)
            try:
                _reinitialize(self._mod)
                public = self._open(create=False)
            except KeyProviderError as exc:
                self.reason = f"token {self.config.token!r} unavailable: {exc}"
                return False
            if public != self.identity.public_bytes_raw():
                _close_quietly(self._session)
                self._session = self._priv = self._aes = None
                self.reason = (f"token {self.config.token!r} is back with another identity key; "
                               "refusing it")
                return False
            self.available = True
            self.reason = ""
            self.recoveries += 1
            return True

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "module": self.config.module,
            "token": self.config.token,
            "identity": self.config.identity_label,
            "sealing": self.config.sealing_label if self._sealing_wanted else None,
            "available": self.available,
            "reason": self.reason,
            "lost_at": self.lost_at,
            "losses": self.losses,
            "recoveries": self.recoveries,
            "signatures": self.signatures,
        }

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                _close_quietly(self._session)
                self._session = self._priv = self._aes = None
            if not self._closed:
                self._closed = True
                self._mod.users = max(0, self._mod.users - 1)
            self.available = False
            self.reason = "closed"


def _close_quietly(session: Any) -> None:
    with contextlib.suppress(Exception):  # a session of a vanished token cannot close cleanly
        session.close()
