"""The attestation exchange on ``/enclave-swarm/attest/1.0.0`` (sans-IO rules).

Theory of operation
-------------------
Each side of every new connection challenges the other; the two directions are independent.
On one stream, opened by the *verifier*::

    verifier → prover   AttestChallenge(nonce)            nonce: 32 fresh random bytes
    prover   → verifier AttestEvidence(kind, blob, certs, public_key)
    verifier → prover   AttestResult(accepted, reason, record)

Rules:

1. The prover's evidence must carry ``report_data = sha512(nonce ‖ public_key)``, where
   ``public_key`` is the raw Ed25519 key of the prover's libp2p identity.
2. ``public_key`` must be the key of the peer id authenticated by the secure channel (Noise or
   TLS). So evidence produced for one node, or for another nonce, proves nothing here: a replay
   fails rule 1, a relay fails rule 2.
3. The nonce is single use and dies with its stream; its issue time bounds the evidence age.
4. Until a peer passes, it is quarantined (see ``overlay/peers.py``): only ping, identify and
   attest answer it.
5. Minimal disclosure: evidence names the chip, its TCB and our measurement, so a prover
   hands it only to a peer that has proven itself first. On each connection the side that
   dialled proves at once (it chose whom to dial); the side that accepted reads the challenge,
   then waits (within the handshake timeout) until its own challenge of the dialler has
   passed, and only then answers; if it does not pass, it resets the stream without evidence.
   The dialler's evidence does not wait on anything, so the two directions cannot deadlock,
   and two nodes that dial each other at once both prove at once. An unattested peer that
   dials us gets no evidence at all; see docs/protocols.md for what remains.

This module holds the pure pieces (binding computation and checks); the trio code in
``node/agent.py`` moves the messages, and ``node/attestation/engine.py`` judges the evidence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from overlay.messages import NONCE_BYTES, AttestChallenge, AttestEvidence


def may_prove_to(*, peer_attested: bool, we_dialled: bool) -> bool:
    """Rule 5: may the prover send its evidence to this peer now?

    Args:
        peer_attested: our own challenge of this peer has passed (and not lapsed).
        we_dialled: we hold a connection to the peer that we opened.
    """
    return peer_attested or we_dialled


def binding(nonce: bytes, public_key: bytes) -> bytes:
    """The 64-byte report_data that binds evidence to ``nonce`` and ``public_key``."""
    return hashlib.sha512(nonce + public_key).digest()


@dataclasses.dataclass(frozen=True)
class Challenge:
    """One outstanding challenge, verifier side.

    Args:
        peer_public_key: the raw Ed25519 key of the authenticated remote peer id.
        nonce: fresh random bytes from the caller's CSPRNG.
        issued_at: wall-clock seconds when the nonce was issued.
    """

    peer_public_key: bytes
    nonce: bytes
    issued_at: float

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_BYTES:
            raise ValueError("nonce must be 32 bytes")

    def message(self) -> AttestChallenge:
        return AttestChallenge(self.nonce)

    def check_key(self, evidence: AttestEvidence) -> str | None:
        """Rule 2: the evidence names the key of the authenticated peer. None when it does."""
        if not hmac.compare_digest(evidence.public_key, self.peer_public_key):
            return "binding: evidence names a key other than the connection's peer id"
        return None

    def check_report_data(self, report_data: bytes) -> str | None:
        """Rule 1: the report_data binds our nonce and the peer's key. None when it does."""
        if not hmac.compare_digest(report_data, binding(self.nonce, self.peer_public_key)):
            return "binding: report_data does not bind this challenge's nonce and the peer's key"
        return None
