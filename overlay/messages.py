"""The catalogue of the overlay's wire messages and protocol ids.

Every message that crosses a libp2p stream of ours is a frozen dataclass registered here (or in
a module this one imports) with :func:`overlay.wire.message`: a stable wire name, a schema
version and a size bound. docs/protocols.md describes each one; keep both in step.

Protocol ids are ``/enclave-swarm/<name>/<version>``. Each protocol's stream carries
length-prefixed frames (unsigned varint length, then one CBOR envelope), see
``overlay/framing.py``.
"""

from __future__ import annotations

import dataclasses
import math

from overlay.errors import RemoteProtocolError
from overlay.wire import message

PROTOCOL_PREFIX = "/enclave-swarm"


def protocol_id(name: str, version: str = "1.0.0") -> str:
    return f"{PROTOCOL_PREFIX}/{name}/{version}"


ATTEST_PROTOCOL = protocol_id("attest")
PEERS_PROTOCOL = protocol_id("peers")
GOODBYE_PROTOCOL = protocol_id("goodbye")
# libp2p's standard protocols that an unattested peer may still use.
PING_PROTOCOL = "/ipfs/ping/1.0.0"
OPEN_PROTOCOLS = frozenset({PING_PROTOCOL, "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", ATTEST_PROTOCOL})

NONCE_BYTES = 32
ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
MAX_EVIDENCE_BYTES = 32 * 1024
MAX_CERT_BYTES = 16 * 1024
MAX_CERTS = 6
MAX_PEER_ID_CHARS = 128
MAX_MULTIADDR_CHARS = 256


def _finite_nonneg(value: float, what: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise RemoteProtocolError("invalid", f"{what} must be a finite, non-negative number")


# ----------------------------------------------------------------------------- attest


@message("attest-challenge", version=1, max_bytes=256)
@dataclasses.dataclass(frozen=True)
class AttestChallenge:
    """Verifier → prover: prove your key lives in an attested enclave, bound to this nonce."""

    nonce: bytes = dataclasses.field(metadata={"len": NONCE_BYTES})


@message("attest-evidence", version=1, max_bytes=MAX_EVIDENCE_BYTES + MAX_CERTS * MAX_CERT_BYTES + 1024)
@dataclasses.dataclass(frozen=True)
class AttestEvidence:
    """Prover → verifier: evidence whose report_data is sha512(nonce ‖ public_key).

    ``public_key`` is the prover's raw Ed25519 libp2p key; the verifier requires it to be the
    key of the authenticated connection's peer id, so evidence cannot be relayed by another.
    """

    kind: str = dataclasses.field(metadata={"max_len": 16})
    blob: bytes = dataclasses.field(metadata={"max_len": MAX_EVIDENCE_BYTES})
    certs: tuple[bytes, ...] = dataclasses.field(
        metadata={"max_items": MAX_CERTS, "max_len": MAX_CERT_BYTES}
    )
    public_key: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})


@message("score-record", version=1, max_bytes=1024)
@dataclasses.dataclass(frozen=True)
class ScoreRecord:
    """A signed attestation score: ``issuer`` says ``subject`` scored ``score`` at ``issued_at``.

    ``signature`` is the issuer's Ed25519 signature over the canonical CBOR of every other
    field (see node/attestation/score.py). Anyone holding the issuer's key can verify it.
    """

    issuer: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})
    subject: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    score: int = dataclasses.field(metadata={"min": 0, "max": 100})
    kind: str = dataclasses.field(metadata={"max_len": 16})
    verdict: str = dataclasses.field(metadata={"max_len": 200})
    evidence_hash: bytes = dataclasses.field(metadata={"len": 32})
    issued_at: float
    expires_at: float
    signature: bytes = dataclasses.field(metadata={"len": ED25519_SIGNATURE_BYTES})

    def validate(self) -> None:
        _finite_nonneg(self.issued_at, "issued_at")
        _finite_nonneg(self.expires_at, "expires_at")
        if self.expires_at < self.issued_at:
            raise RemoteProtocolError("invalid", "score record expires before it was issued")


@message("attest-result", version=1, max_bytes=2048)
@dataclasses.dataclass(frozen=True)
class AttestResult:
    """Verifier → prover: the outcome, so the prover can log why it was refused."""

    accepted: bool
    reason: str = dataclasses.field(metadata={"max_len": 500})
    record: ScoreRecord | None


# ----------------------------------------------------------------------------- peers


@message("peer-entry", version=1, max_bytes=4096)
@dataclasses.dataclass(frozen=True)
class PeerEntry:
    peer_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    addrs: tuple[str, ...] = dataclasses.field(
        metadata={"max_items": 8, "max_len": MAX_MULTIADDR_CHARS}
    )


@message("peers-request", version=1, max_bytes=64)
@dataclasses.dataclass(frozen=True)
class PeersRequest:
    """Ask an attested peer for the attested peers it knows (bounded by ``limit``)."""

    limit: int = dataclasses.field(metadata={"min": 1, "max": 256})


@message("peers-response", version=1, max_bytes=256 * 1024)
@dataclasses.dataclass(frozen=True)
class PeersResponse:
    peers: tuple[PeerEntry, ...] = dataclasses.field(metadata={"max_items": 256})


# ----------------------------------------------------------------------------- goodbye


@message("goodbye", version=1, max_bytes=512)
@dataclasses.dataclass(frozen=True)
class Goodbye:
    """Sent on graceful shutdown: the sender is leaving and will not answer any more."""

    reason: str = dataclasses.field(metadata={"max_len": 200})
