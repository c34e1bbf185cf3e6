"""Quorum certificates over the committed swarm state: what a node needs before it adopts a
state that it did not apply through its own Raft node.

Theory of operation
-------------------
A node outside the Raft voter set (a follower, a joining node, a voter that fell behind or was
removed) learns the committed state from whichever member answers it, and that member may lie.
So a state is adopted only with proof that the voters committed it:

- A **checkpoint** names one committed state: the federation, the log index, the SHA-256 of
  the state's canonical encoding (``encode_state``), the Raft voters in force at that index
  (their peer ids) and the manager the state records (term, peer id).
- A voter **vouches** for a checkpoint by signing :func:`checkpoint_payload` with its node key,
  and only after recomputing the checkpoint from the state its own Raft node applied at that
  index and from its own log's configuration there. A voter vouches for nothing else.
- A **certificate** is a checkpoint with vouches. It is valid *relative to voters the verifier
  already trusts* (its anchor) when strictly more than half of the anchor voters AND strictly
  more than half of the checkpoint's own voters vouched with good signatures
  (:func:`verify_certificate`). The first majority chains the claim to what the verifier held;
  the second makes the new voters speak for themselves. When the checkpoint's voters are the
  anchor's with one voter added or removed (Raft's single-server change), half of the anchor
  suffices, with at least two signers: a majority of the new set already contains that many
  (:func:`_one_step` says why this is as strong).
- A **chain** (:func:`verify_chain`) carries a verifier across configuration changes: each
  certificate is checked against the voters of the previous one, starting from the voters of
  the verifier's own committed state. Members keep the first certificate of every voter set
  they saw (:class:`Chain`), so a follower that missed several changes catches up in one
  answer. The manager certifies every configuration before it proposes the next change.

Rules
-----
- No quorum, no adoption. A compromised member, the manager included, can withhold
  certificates (it costs liveness) but cannot make an honest node adopt a state that a
  majority of the voters did not apply.
- A node with no committed state yet (index 0, no voters known) has no anchor: it trusts the
  first certificate whose own voters vouched for it (trust on first use), limited to the
  federation the operator pinned when one is pinned (docs/architecture.md, threat model).
- Voter sets change one server at a time, and a certificate of the next set needs only what
  Raft needs to commit in it (a majority of the new set), so certification stays live while
  the council does. The exception is a set that shrinks from two voters to one, which
  needs both (stated, not hidden: one voter alone never certifies).
- Signatures are checked with injected callables (Ed25519 of the peer id, in the node), so
  this module imports no crypto library, no clock and nothing outside ``consensus/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

import cbor2

DOMAIN = "enclave-swarm/state-checkpoint/v1"
DIGEST_BYTES = 32
MAX_VOTERS = 16           # voters named in one checkpoint (the council is 5 by default)
MAX_CHAIN = 16            # certificates in one chain (voter sets a follower may catch up on)
MAX_PEER_ID = 128

_PEER = {"max_len": MAX_PEER_ID}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One committed state, named so that a voter can check it against its own."""

    federation: str = dataclasses.field(metadata=_PEER)
    index: int = dataclasses.field(metadata={"min": 1})
    digest: bytes = dataclasses.field(metadata={"len": DIGEST_BYTES})
    voters: tuple[str, ...] = dataclasses.field(metadata={"max_items": MAX_VOTERS, **_PEER})
    manager_term: int = dataclasses.field(metadata={"min": 0})
    manager: str = dataclasses.field(metadata=_PEER)


@dataclasses.dataclass(frozen=True)
class Vouch:
    """``signer`` (a peer id) signed :func:`checkpoint_payload` of the certificate's checkpoint."""

    signer: str = dataclasses.field(metadata=_PEER)
    signature: bytes = dataclasses.field(metadata={"len": 64})


@dataclasses.dataclass(frozen=True)
class Certificate:
    checkpoint: Checkpoint
    vouches: tuple[Vouch, ...] = dataclasses.field(metadata={"max_items": MAX_VOTERS})


def state_digest(encoded_state: bytes) -> bytes:
    return hashlib.sha256(encoded_state).digest()


def checkpoint_payload(cp: Checkpoint) -> bytes:
    """The exact bytes a voter signs (canonical CBOR under a domain tag)."""
    if cp.index < 1 or len(cp.digest) != DIGEST_BYTES or not 0 < len(cp.voters) <= MAX_VOTERS:
        raise ValueError("malformed checkpoint")
    return cbor2.dumps([DOMAIN, cp.federation, cp.index, cp.digest, list(cp.voters),
                        cp.manager_term, cp.manager], canonical=True)


def majority(n: int) -> int:
    """Vouches needed from ``n`` voters: strictly more than half."""
    return n // 2 + 1


def valid_signers(cert: Certificate, public_key_of: Callable[[str], bytes | None],
                  verify: Callable[[bytes, bytes, bytes], bool]) -> frozenset[str]:
    """The distinct signers whose vouch verifies (repeats and bad signatures count nothing)."""
    try:
        payload = checkpoint_payload(cert.checkpoint)
    except ValueError:
        return frozenset()
    good: set[str] = set()
    for v in cert.vouches[:MAX_VOTERS]:
        if v.signer in good:
            continue
        key = public_key_of(v.signer)
        if key is not None and verify(key, payload, v.signature):
            good.add(v.signer)
    return frozenset(good)


def _missing(voters: Sequence[str], signers: frozenset[str]) -> int:
    seats = set(voters)
    return majority(len(seats)) - len(seats & signers)


def verify_certificate(cert: Certificate, anchor_voters: Sequence[str],
                       public_key_of: Callable[[str], bytes | None],
                       verify: Callable[[bytes, bytes, bytes], bool]) -> str | None:
    """None if a majority of ``anchor_voters`` (no check when empty: no anchor yet) and a
    majority of the checkpoint's own voters vouched for ``cert``; else a short reason."""
    cp = cert.checkpoint
    if not cp.voters:
        return "checkpoint names no voters"
    if len(set(cp.voters)) != len(cp.voters):
        return "checkpoint names a voter twice"
    signers = valid_signers(cert, public_key_of, verify)
    if _missing(cp.voters, signers) > 0:
        return (f"{len(set(cp.voters) & signers)} of its {len(cp.voters)} voters vouched "
                "(needs a majority)")
    if anchor_voters and _missing(anchor_voters, signers) > 0 and not _one_step(
            anchor_voters, cp.voters, signers):
        return (f"{len(set(anchor_voters) & signers)} of the {len(anchor_voters)} trusted "
                "voters vouched (needs a majority)")
    return None


def _one_step(anchor: Sequence[str], voters: Sequence[str], signers: frozenset[str]) -> bool:
    """The single-server exception to "a majority of the anchor": ``voters`` is ``anchor``
    with one voter added or removed, and (given the majority of ``voters`` the caller checked)
    at least half of ``anchor`` and at least two voters vouched.

    Why it is as strong: with one voter added, a majority of the new set holds at least half
    of the old one; with one removed, it lies wholly inside the old one and is at least half
    of it. So fewer than half of the anchor voters being compromised still leaves an honest
    anchor voter among the signers, and one compromised voter alone never suffices (two
    signers). An honest voter vouches only for the state its own Raft node committed, so the
    checkpoint is true. Without it a configuration whose old majority died before it was
    certified (a fifth voter added, then the manager killed and one of the four old voters
    stopped) could never be certified, although the council, whose quorum is the new set's
    majority, goes on committing."""
    old, new = set(anchor), set(voters)
    both = old | new
    return (len(old ^ new) == 1 and 2 * len(old & signers) >= len(old)
            and len(both & signers) >= 2)


def verify_chain(chain: Sequence[Certificate], *, federation: str, anchor_index: int,
                 anchor_voters: Sequence[str],
                 public_key_of: Callable[[str], bytes | None],
                 verify: Callable[[bytes, bytes, bytes], bool]) -> tuple[Certificate | None, str]:
    """Walk ``chain`` (ascending index) from the verifier's anchor: its committed index, the
    voters it trusts and its federation ("" = none known yet). Certificates at or below the
    anchor index are skipped; each later one must be vouched for by a majority of the previous
    voters and of its own. Returns ``(the last certificate, "")`` or ``(None, reason)``."""
    if len(chain) > MAX_CHAIN + 1:
        return None, f"chain of {len(chain)} certificates (at most {MAX_CHAIN + 1})"
    voters: Sequence[str] = anchor_voters
    index, last = anchor_index, None
    for cert in chain:
        cp = cert.checkpoint
        if federation and cp.federation != federation:
            return None, "certificate of another federation"
        if cp.index <= index:
            if last is not None:
                return None, "certificates out of order"
            continue
        why = verify_certificate(cert, voters, public_key_of, verify)
        if why is not None:
            return None, f"certificate {cp.index}: {why}"
        voters, index, last = cp.voters, cp.index, cert
        federation = federation or cp.federation
    if last is None:
        return None, "nothing newer than what is held"
    return last, ""


class Chain:
    """The certificates a member keeps to prove its state to others: the first certificate of
    each voter set it saw (at most :data:`MAX_CHAIN`, oldest dropped) and the latest one."""

    def __init__(self) -> None:
        self.firsts: list[Certificate] = []
        self.latest: Certificate | None = None

    def add(self, cert: Certificate) -> bool:
        """Keep ``cert`` (already verified by the caller). False if it is not newer."""
        if self.latest is not None and cert.checkpoint.index <= self.latest.checkpoint.index:
            return False
        if not self.firsts or self.firsts[-1].checkpoint.voters != cert.checkpoint.voters:
            self.firsts.append(cert)
            del self.firsts[:-MAX_CHAIN]
        self.latest = cert
        return True

    def proof_after(self, index: int) -> tuple[Certificate, ...]:
        """The certificates a verifier anchored at ``index`` needs to reach :attr:`latest`:
        the first certificate of every voter set it may have missed (the last one at or below
        its index included, which it skips), then the latest."""
        if self.latest is None:
            return ()
        out = [c for c in self.firsts if c.checkpoint.index > index]
        if not out or out[-1] is not self.latest:
            out.append(self.latest)
        return tuple(out)
