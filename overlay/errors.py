"""The two error families of the overlay (see docs/architecture.md).

- ``LocalProtocolError``: *we* misused an API or tried to send something invalid. It is a
  bug on this node; it is raised and should crash the operation loudly.
- ``RemoteProtocolError``: a *peer* sent something malformed, oversized, out of schema or
  otherwise hostile. It is caught at the single receive boundary of each protocol, logged
  with a reason, counted, and the input is dropped. The node keeps running.

Each ``RemoteProtocolError`` carries a short machine-readable ``reason`` (used as a metric
label, so it must come from a small fixed vocabulary) and a human ``detail``.
"""

from __future__ import annotations


class EnclaveSwarmError(Exception):
    """Base of every error this project raises on purpose."""


class LocalProtocolError(EnclaveSwarmError):
    """We tried to do something the protocol does not allow (a local bug)."""


class RemoteProtocolError(EnclaveSwarmError):
    """A remote peer sent invalid input. Drop it, log it, count it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SignerUnavailable(Exception):
    """The identity key cannot sign right now (it lives in a token that went away; node/keys).

    Raised by the key's ``sign``; where a signature is optional (identify's signed peer
    record) the overlay goes on without it, elsewhere the operation fails and is retried."""
