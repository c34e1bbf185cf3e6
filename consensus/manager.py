"""The manager role's pure policy: term limits, hand-over choice, and signed decisions.

Theory of operation
-------------------
The manager is the Raft leader. Two things are decided here, both pure:

1. **When to hand over, and to whom** (:func:`decide`). Every call gets the current tick,
   the tick at which this leader's term started, and the council's scores and revocations.
   - revoked, or own score below ``min_score``: step down *now* (transfer to the best other
     eligible member; if there is none, stop leading anyway);
   - term limit reached (``now - term_start >= term_limit_ticks``): hand over to the next
     candidate by score (ties by id); if nobody eligible, keep leading and say why;
   - otherwise stay.
   The driver executes a hand-over with ``RawNode.transfer_leader``: the role rotates with
   no election gap.

2. **Signed decisions**. The manager signs ``(term, index, sha256(command))`` under a domain
   tag. Anyone holding the committed log can check that a decision belongs to the leader of
   term T: the entry at ``index`` must be of term T (Raft: only the leader of T creates
   entries of term T), hold a command with that digest, and the signature must verify under
   the key of the node the replicated state records as manager of term T. Signing and
   verification are injected callables (e.g. Ed25519 from the node's libp2p identity), so
   no crypto library is imported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Mapping

DOMAIN = b"enclave-swarm/manager-decision/v1\x00"


@dataclasses.dataclass(frozen=True)
class ManagerPolicy:
    """Attributes:
        term_limit_ticks: how long one manager leads before handing over.
        min_score: a manager (or successor) below this score is not eligible (permille).
    """

    term_limit_ticks: int = 6000
    min_score: int = 500

    def validate(self) -> None:
        if self.term_limit_ticks < 1:
            raise ValueError("term_limit_ticks must be >= 1")
        if not 0 <= self.min_score <= 1000:
            raise ValueError("min_score out of range")


@dataclasses.dataclass(frozen=True)
class Decision:
    """``action`` is ``"stay"``, ``"handover"`` (term limit) or ``"step-down"`` (at once);
    ``to`` is the successor or None; ``reason`` is a short stable phrase."""

    action: str
    to: str | None
    reason: str


def next_candidate(self_id: str, scores: Mapping[str, int], revoked: frozenset[str] | set[str],
                   min_score: int) -> str | None:
    """The eligible council member with the best score other than ``self_id`` (ties: id)."""
    eligible = [(s, n) for n, s in scores.items()
                if n != self_id and n not in revoked and s >= min_score]
    if not eligible:
        return None
    eligible.sort(key=lambda t: (-t[0], t[1]))
    return eligible[0][1]


def decide(policy: ManagerPolicy, *, self_id: str, now_tick: int, term_start_tick: int,
           scores: Mapping[str, int], revoked: frozenset[str] | set[str]) -> Decision:
    """What the current manager should do now. See the module docstring for the rules.

    Args:
        scores: council member -> latest score (permille), including ``self_id``.
        revoked: ids revoked by the replicated state.
    """
    if now_tick < term_start_tick:
        raise ValueError("now_tick before term_start_tick")
    successor = next_candidate(self_id, scores, revoked, policy.min_score)
    if self_id in revoked:
        return Decision("step-down", successor, "revoked")
    if scores.get(self_id, 0) < policy.min_score:
        return Decision("step-down", successor, "score below policy")
    if now_tick - term_start_tick >= policy.term_limit_ticks:
        if successor is None:
            return Decision("stay", None, "term limit reached but no eligible successor")
        return Decision("handover", successor, "term limit reached")
    return Decision("stay", None, "within term")


# --------------------------------------------------------------------------- signed decisions


@dataclasses.dataclass(frozen=True)
class SignedDecision:
    term: int
    index: int
    command_digest: bytes
    signer: str
    signature: bytes


def command_digest(command: bytes) -> bytes:
    return hashlib.sha256(command).digest()


def decision_payload(term: int, index: int, digest: bytes) -> bytes:
    """The exact bytes a manager signs: domain tag, u64 term, u64 index, 32-byte digest."""
    if len(digest) != 32 or term < 0 or index < 1:
        raise ValueError("bad decision fields")
    return DOMAIN + struct.pack(">QQ", term, index) + digest


def sign_decision(sign: Callable[[bytes], bytes], signer: str, term: int, index: int,
                  command: bytes) -> SignedDecision:
    digest = command_digest(command)
    return SignedDecision(term, index, digest, signer, sign(decision_payload(term, index, digest)))


def check_decision(
    d: SignedDecision,
    *,
    entry_term: int | None,
    entry_data: bytes | None,
    manager_of_term: Callable[[int], str | None],
    public_key_of: Callable[[str], bytes | None],
    verify: Callable[[bytes, bytes, bytes], bool],
) -> str | None:
    """Check that ``d`` was made by the leader of ``d.term`` about the committed entry.

    Args:
        entry_term / entry_data: the committed log entry at ``d.index`` (None if unknown).
        manager_of_term: term -> node id recorded as manager of that term.
        public_key_of: node id -> public key bytes.
        verify: ``verify(public_key, message, signature) -> bool``.

    Returns:
        None if valid, else a short reason.
    """
    if entry_term is None or entry_data is None:
        return "entry unknown"
    if entry_term != d.term:
        return "entry is not of the decision's term"
    if command_digest(entry_data) != d.command_digest:
        return "digest does not match the entry"
    manager = manager_of_term(d.term)
    if manager is None or manager != d.signer:
        return "signer is not the manager of that term"
    key = public_key_of(d.signer)
    if key is None:
        return "unknown signer key"
    try:
        payload = decision_payload(d.term, d.index, d.command_digest)
    except ValueError:
        return "malformed decision"
    if not verify(key, payload, d.signature):
        return "bad signature"
    return None
