"""Signed records: the unit of state that the dissemination core spreads.

Rules
-----
1. A record is a registered wire message (``gossip-record``): kind, issuer, subject, version,
   issued_at, expires_at, payload, signature. It is immutable; a change is a new record.
2. The signature covers the canonical CBOR of every other field, prefixed with a domain
   separator (:func:`signing_bytes`). Nothing about a record is trusted before its signature
   has been verified against the issuer's key.
3. Records are keyed by ``(kind, subject, issuer)`` (:func:`record_key`): one issuer's
   records never occupy another issuer's slot, so no issuer can make another's records look
   stale. Within one key, records supersede each other in the total order of
   :func:`order_key`: ``version`` first, then ``issued_at``, then the signature bytes as a
   deterministic tie-break, so every node picks the same winner from the same set.
4. Who may write what, per kind (checked by the dissemination core after the signature):

   ============== ======================= ==================================================
   kind           issuer                  subject
   ============== ======================= ==================================================
   ``score``      the attesting verifier  the attested peer: every verifier keeps its own
                                          record about a subject; readers pick among them
   ``revocation`` the committed manager   the revoked peer. Only a *hint* that followers
                  only (injected          fetch the committed state sooner: a record never
                  ``is_manager``)         revokes anyone by itself
   ``manager``    the manager             must equal the issuer (its own announcement)
   ``membership`` the member              must equal the issuer
   ``finding``    the manager that        the node found against. The consumer adopts it
                  committed it (checked   only once its own committed state holds that very
                  by the consumer)        finding (node/tasks/findings.py)
   other kinds    anyone attested         anyone (keyed with the issuer, so no squatting)
   ============== ======================= ==================================================

   Every subject must be a valid node id (on a real node: an Ed25519 libp2p peer id).
5. Bounds: ``version`` at most :data:`VERSION_MAX` and at most
   ``(now + clock_skew_s) × 1000 + version_lead_max`` on the receiver (issuers choose
   ``max(previous + 1, wall-clock ms)``, which survives restarts); ``expires_at`` at most
   ``now + clock_skew_s + max_ttl_s`` (:class:`~overlay.dissemination.DisseminationConfig`).

Two signer/verifier pairs share one interface:

- :class:`Ed25519Signer` / :class:`Ed25519Verifier` (PyNaCl): what a real node uses. The
  verifier resolves an issuer id to its 32-byte public key through an injected lookup (on a
  real node: the key embedded in the libp2p peer id, or the attested key from the handshake).
- :class:`SimSigner` / :class:`SimVerifier`: a cheap keyed-hash scheme for the simulator,
  where 10,000 nodes verifying Ed25519 signatures would measure PyNaCl, not the protocol.
  It is deterministic and catches forged or altered records in the simulated world, but it is
  symmetric: never use it outside ``sim/`` and tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import ClassVar, Protocol

import cbor2
import nacl.exceptions
import nacl.signing

from overlay.errors import RemoteProtocolError
from overlay.wire import message

# Well-known kinds. The wire accepts any short lowercase kind so that later components
# (e.g. manager announcements) can add theirs without a schema change.
KIND_SCORE = "score"
KIND_REVOCATION = "revocation"
KIND_MEMBERSHIP = "membership"
KIND_MANAGER = "manager"
KIND_CAPABILITY = "capability"  # what a node offers for tasks (node/tasks/offers.py)
KIND_FINDING = "finding"  # an integrity finding about a node (node/tasks/findings.py)
#: Kinds whose subject must be the issuer itself (a statement about oneself).
SELF_KINDS = frozenset({KIND_MANAGER, KIND_MEMBERSHIP, KIND_CAPABILITY})
#: Kinds only the committed manager may issue (the core's injected ``is_manager``).
MANAGER_KINDS = frozenset({KIND_REVOCATION})

# Bounds (TigerStyle: a bound on everything).
KIND_MAX_LEN = 32
ID_MAX_LEN = 128  # libp2p peer ids in base58 are ~52 chars; leave room for other encodings
PAYLOAD_MAX_BYTES = 4096
SIGNATURE_MAX_BYTES = 64  # Ed25519; the sim scheme uses 16
RECORD_MAX_BYTES = 8192
# Largest version a receiver accepts: exact in a double and far above wall-clock milliseconds
# (~2^41 today), so an honest millisecond-based issuer never reaches it.
VERSION_MAX = 2**53
# Domain separator so a record signature can never be replayed as any other signed object.
SIGNING_DOMAIN = b"enclave-swarm/record/v1"


@message("gossip-record", version=1, max_bytes=RECORD_MAX_BYTES)
@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A signed statement by ``issuer`` about ``subject``.

    ``issued_at``/``expires_at`` are seconds on the issuer's clock (Unix time on a real node,
    virtual time in the simulator); receivers tolerate skew through the dissemination config.
    """

    kind: str = dataclasses.field(metadata={"max_len": KIND_MAX_LEN})
    issuer: str = dataclasses.field(metadata={"max_len": ID_MAX_LEN})
    subject: str = dataclasses.field(metadata={"max_len": ID_MAX_LEN})
    version: int = dataclasses.field(metadata={"min": 0, "max": 2**63 - 1})
    issued_at: float = dataclasses.field(metadata={"min": 0.0})
    expires_at: float = dataclasses.field(metadata={"min": 0.0})
    payload: bytes = dataclasses.field(metadata={"max_len": PAYLOAD_MAX_BYTES})
    signature: bytes = dataclasses.field(metadata={"max_len": SIGNATURE_MAX_BYTES})

    def validate(self) -> None:
        if not self.kind or not self.kind.isascii() or not self.kind.replace("-", "").isalnum():
            raise RemoteProtocolError("invalid", "record kind must be short ascii alnum")
        if not self.issuer or not self.subject:
            raise RemoteProtocolError("invalid", "record issuer and subject must be non-empty")
        if self.expires_at < self.issued_at:
            raise RemoteProtocolError("invalid", "record expires before it is issued")


RecordKey = tuple[str, str, str]
"""``(kind, subject, issuer)``: records with the same key supersede each other."""


def record_key(r: Record) -> RecordKey:
    return (r.kind, r.subject, r.issuer)


def kind_violation(r: Record) -> str | None:
    """Why ``r`` breaks its kind's issuer/subject rule that needs no outside knowledge (rule 4),
    or None. (The manager-only rule needs the committed state: the core's ``is_manager``.)"""
    if r.kind in SELF_KINDS and r.subject != r.issuer:
        return "subject-not-issuer"
    return None


def order_key(r: Record) -> tuple[int, float, bytes]:
    """Total order among records with the same key: the greatest one wins everywhere."""
    return (r.version, r.issued_at, r.signature)


def supersedes(new: Record, old: Record) -> bool:
    """True if ``new`` should replace ``old`` (same key assumed, strictly greater order)."""
    return order_key(new) > order_key(old)


def signing_bytes(
    kind: str,
    issuer: str,
    subject: str,
    version: int,
    issued_at: float,
    expires_at: float,
    payload: bytes,
) -> bytes:
    """Canonical CBOR of the unsigned record, with the domain separator first."""
    return cbor2.dumps(
        [SIGNING_DOMAIN, kind, issuer, subject, version, float(issued_at), float(expires_at), payload],
        canonical=True,
    )


def record_signing_bytes(r: Record) -> bytes:
    return signing_bytes(
        r.kind, r.issuer, r.subject, r.version, r.issued_at, r.expires_at, r.payload
    )


class RecordSigner(Protocol):
    """Anything that can issue records under one issuer id."""

    @property
    def issuer(self) -> str: ...

    def sign(
        self,
        kind: str,
        subject: str,
        version: int,
        issued_at: float,
        expires_at: float,
        payload: bytes,
    ) -> Record: ...


RecordVerifier = Callable[[Record], bool]
"""``verify(record) -> bool``: True only if the signature is valid for ``record.issuer``."""


class Ed25519Signer:
    """Issue records signed with an Ed25519 key (PyNaCl)."""

    __slots__ = ("_issuer", "_key")

    def __init__(self, issuer: str, signing_key: nacl.signing.SigningKey) -> None:
        self._issuer = issuer
        self._key = signing_key

    @classmethod
    def from_seed(cls, issuer: str, seed: bytes) -> Ed25519Signer:
        """Deterministic key from a 32-byte seed (tests, fixtures)."""
        return cls(issuer, nacl.signing.SigningKey(seed))

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(
        self,
        kind: str,
        subject: str,
        version: int,
        issued_at: float,
        expires_at: float,
        payload: bytes,
    ) -> Record:
        msg = signing_bytes(kind, self._issuer, subject, version, issued_at, expires_at, payload)
        sig = self._key.sign(msg).signature
        return Record(kind, self._issuer, subject, version, float(issued_at), float(expires_at),
                      payload, bytes(sig))


class Ed25519Verifier:
    """Verify Ed25519 record signatures.

    Args:
        public_key_of: issuer id -> 32-byte Ed25519 public key, or None if unknown (then the
            record is refused).
    """

    __slots__ = ("_lookup",)

    def __init__(self, public_key_of: Callable[[str], bytes | None]) -> None:
        self._lookup = public_key_of

    def __call__(self, r: Record) -> bool:
        pk = self._lookup(r.issuer)
        if pk is None or len(pk) != 32 or len(r.signature) != 64:
            return False
        try:
            nacl.signing.VerifyKey(pk).verify(record_signing_bytes(r), r.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True


class SimSigner:
    """Keyed-hash signer for the simulator (16-byte BLAKE2b MAC). Not for production."""

    SIGNATURE_BYTES: ClassVar[int] = 16
    __slots__ = ("_issuer", "_secret")

    def __init__(self, issuer: str, secret: bytes) -> None:
        self._issuer = issuer
        self._secret = secret

    @property
    def issuer(self) -> str:
        return self._issuer

    def sign(
        self,
        kind: str,
        subject: str,
        version: int,
        issued_at: float,
        expires_at: float,
        payload: bytes,
    ) -> Record:
        msg = signing_bytes(kind, self._issuer, subject, version, issued_at, expires_at, payload)
        sig = hashlib.blake2b(msg, key=self._secret, digest_size=SimSigner.SIGNATURE_BYTES).digest()
        return Record(kind, self._issuer, subject, version, float(issued_at), float(expires_at),
                      payload, sig)


class SimVerifier:
    """Verifier for :class:`SimSigner` records, with a bounded memo of verified records.

    The memo matters in the simulator, where one record object reaches 10,000 nodes: it is
    verified once per world, not once per node. A memo hit requires an equal record (all
    fields, signature included), so a forged variant never hits it.
    """

    __slots__ = ("_memo", "_memo_max", "_secrets")

    def __init__(self, secrets: Mapping[str, bytes], memo_max: int = 65536) -> None:
        self._secrets = secrets
        self._memo: dict[Record, bool] = {}
        self._memo_max = memo_max

    def __call__(self, r: Record) -> bool:
        hit = self._memo.get(r)
        if hit is not None:
            return hit
        secret = self._secrets.get(r.issuer)
        ok = secret is not None and hmac.compare_digest(
            hashlib.blake2b(record_signing_bytes(r), key=secret, digest_size=16).digest(),
            r.signature)
        if len(self._memo) >= self._memo_max:
            self._memo.clear()
        self._memo[r] = ok
        return ok
