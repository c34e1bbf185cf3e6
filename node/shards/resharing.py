"""Repair without reconstruction: regenerate a lost key share and a lost fragment.

Theory of operation
-------------------
**Key share** (after Oasis CHURP's "share regeneration" and classic Shamir resharing). The data
key s is shared with a polynomial f of degree k-1 over GF(2^8), holder i keeping s_i = f(x_i).
To give a new holder the share at point x_j, pick k helpers H. Lagrange interpolation gives

    f(x_j) = Σ_{i∈H} λ_i(x_j) · s_i,      λ_i(x_j) = Π_{m∈H, m≠i} (x_j - x_m) / (x_i - x_m)

(sums are XOR). Each helper i sends the new holder c_i = λ_i(x_j)·s_i ⊕ m_i, where the masks
m_i XOR to zero: every pair of helpers a < b shares a fresh 32-byte seed, expanded to
r_ab = HMAC-SHA256(seed_ab, domain ‖ session ‖ a ‖ b); m_a = ⊕_{b≠a} r_ab. Every r_ab enters
exactly two masks, so ⊕_i m_i = 0 and the new holder's ⊕_i c_i = f(x_j) = s_j. No party ever
holds s or another party's share. The protocol is three messages (``node.shards.messages``:
ReshareInvite, ReshareMaskSeed, ReshareContribution); this module is its pure arithmetic.
The soundness argument and what it does not cover are in docs/shards.md.

With x_j = the lost holder's own point, the result is byte-identical to the lost share and is
checked against the manifest's share hash: a faulty helper is detected (not identified).

**Proactive refresh** (CHURP's key refresh, same holders). Regenerating a lost share at its
own point recreates the *same* share, so a "lost" holder that was really captured keeps a
valid one. A refresh re-randomises every share without changing the key: each participant p
draws δ_p of degree k-1 with δ_p(0) = 0 and sends δ_p(x_i) to holder i; holder i keeps
s_i ⊕ (⊕_p δ_p(x_i)). The new shares lie on f + Σ δ_p, which still has f(0) = s, and do not
combine with old ones. One honest participant suffices for the new polynomial to be fresh.
Every share hash changes, so the owner signs a new manifest revision.

**Fragment** (erasure code repair). Fragments are ciphertext, so a repairing node may read any k
of them: stripe by stripe it decodes the k primary blocks with zfec and re-encodes only the
missing index. Memory is one stripe; the result is checked against the manifest hash.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import zfec

from node.shards.crypto import (
    KEY_BYTES,
    FragmentCorrupt,
    Layout,
    Readable,
    Writable,
    read_full,
)
from node.shards.gf256 import (
    MAX_SHARES,
    KeyShare,
    ShareError,
    lagrange_at,
    scale,
    split_secret,
    xor_bytes,
)

SEED_BYTES = 32
_MASK_DOMAIN = b"enclave-swarm/reshare-mask/v1\x00"


def _check_set(helpers_x: Sequence[int], target_x: int) -> list[int]:
    xs = list(helpers_x)
    if not xs or len(set(xs)) != len(xs):
        raise ShareError("helpers must be distinct and non-empty")
    if any(not 1 <= x <= MAX_SHARES for x in [*xs, target_x]):
        raise ShareError(f"points must be in 1..{MAX_SHARES}")
    if target_x in xs:
        raise ShareError("the target cannot be one of the helpers")
    return sorted(xs)


def lagrange_coefficient(helpers_x: Sequence[int], helper_x: int, target_x: int) -> int:
    """λ_{helper}(target) over the helper set (public values)."""
    xs = _check_set(helpers_x, target_x)
    return lagrange_at(xs, xs.index(helper_x), target_x)


def new_mask_seed() -> bytes:
    """A fresh pairwise seed; helper a (lower x) sends it to helper b on the attested channel."""
    return os.urandom(SEED_BYTES)


def pairwise_mask(seed: bytes, session_id: bytes, a: int, b: int) -> bytes:
    """r_ab: the 32-byte mask the pair (a, b) derives from its seed, bound to the session."""
    lo, hi = min(a, b), max(a, b)
    if lo == hi:
        raise ShareError("a pair needs two distinct helpers")
    if len(seed) != SEED_BYTES:
        raise ShareError("bad seed length")
    msg = _MASK_DOMAIN + len(session_id).to_bytes(2, "big") + session_id + bytes([lo, hi])
    return hmac.new(seed, msg, hashlib.sha256).digest()


def helper_mask(my_x: int, seeds: Mapping[int, bytes], session_id: bytes, helpers_x: Sequence[int]) -> bytes:
    """m_i: XOR of the pairwise masks with every other helper.

    Args:
        my_x: this helper's point.
        seeds: other helper's point → the seed this helper shares with it.
        helpers_x: the whole helper set; a seed for every other helper is required.
    """
    others = set(helpers_x) - {my_x}
    if set(seeds) != others:
        raise ShareError("need exactly one seed per other helper")
    mask = bytes(KEY_BYTES)
    for other in sorted(others):
        mask = xor_bytes(mask, pairwise_mask(seeds[other], session_id, my_x, other))
    return mask


def build_contribution(share: KeyShare, helpers_x: Sequence[int], target_x: int, mask: bytes) -> bytes:
    """c_i = λ_i(target)·s_i ⊕ m_i, what helper i sends to the new holder."""
    if share.x not in helpers_x:
        raise ShareError("this share is not in the helper set")
    if len(mask) != len(share.value):
        raise ShareError("mask length must equal share length")
    lam = lagrange_coefficient(helpers_x, share.x, target_x)
    return xor_bytes(scale(share.value, lam), mask)


def combine_contributions(
    contributions: Mapping[int, bytes], helpers_x: Sequence[int], target_x: int
) -> KeyShare:
    """The new holder's share: the XOR of one contribution from every helper.

    Raises:
        ShareError: a helper's contribution is missing or extra, or lengths differ.
    """
    xs = _check_set(helpers_x, target_x)
    if sorted(contributions) != xs:
        raise ShareError("need exactly one contribution per helper")
    acc = bytes(len(contributions[xs[0]]))
    for x in xs:
        acc = xor_bytes(acc, contributions[x])
    return KeyShare(target_x, acc)


# --------------------------------------------------------------------------- refresh


def refresh_deltas(
    holders_x: Sequence[int], k: int, length: int = KEY_BYTES, *, rand: Callable[[int], bytes] = os.urandom
) -> dict[int, bytes]:
    """One participant's refresh: δ(x_i) for every holder, δ random of degree k-1, δ(0) = 0.

    Send ``result[x]`` to the holder at ``x`` only (secret, over the attested channel).
    """
    xs = sorted(set(holders_x))
    if len(xs) != len(holders_x) or not xs or not 1 <= xs[0] <= xs[-1] <= MAX_SHARES:
        raise ShareError("holder points must be distinct, in 1..255")
    if not 1 <= k <= len(xs):
        raise ShareError("need 1 <= k <= number of holders")
    zero_shares = split_secret(bytes(length), k, xs[-1], rand=rand)
    return {x: zero_shares[x - 1].value for x in xs}


def apply_refresh(share: KeyShare, deltas: Iterable[bytes]) -> KeyShare:
    """The holder's refreshed share: its share XOR every participant's delta for it."""
    value = share.value
    for d in deltas:
        value = xor_bytes(value, d)
    return KeyShare(share.x, value)


# --------------------------------------------------------------------------- fragments


def regenerate_fragment(
    layout: Layout,
    sources: Mapping[int, Readable],
    target_index: int,
    sink: Writable,
    fragment_hashes: Sequence[bytes] | None = None,
) -> bytes:
    """Rebuild fragment ``target_index`` from any k other fragments, stripe by stripe.

    Args:
        layout: the object's layout (``manifest.params().layout``).
        sources: fragment index → reader at its start; the k lowest indices are used.
        target_index: the fragment to produce, 0..n-1.
        sink: receives the new fragment.
        fragment_hashes: the manifest's hashes; when given, sources and result are checked.

    Returns:
        SHA-256 of the regenerated fragment.

    Raises:
        FragmentCorrupt: a source or the result does not match the manifest (discard output).
        ValueError: fewer than k sources or a bad index.
    """
    if not 0 <= target_index < layout.n:
        raise ValueError("target index out of range")
    use = sorted(i for i in sources if 0 <= i < layout.n and i != target_index)[: layout.k]
    if len(use) < layout.k:
        raise ValueError(f"need {layout.k} other fragments, have {len(use)}")
    decoder = zfec.Decoder(layout.k, layout.n)
    encoder = zfec.Encoder(layout.k, layout.n)
    in_hashes = {i: hashlib.sha256() for i in use}
    out_hash = hashlib.sha256()
    for c in range(layout.chunk_count):
        blen = layout.block_len(c)
        blocks = []
        for i in use:
            block = read_full(sources[i], blen)
            if len(block) != blen:
                raise FragmentCorrupt(i, "truncated")
            in_hashes[i].update(block)
            blocks.append(block)
        primary = decoder.decode(tuple(blocks), tuple(use))
        if target_index < layout.k:
            out = bytes(primary[target_index])
        else:
            out = bytes(encoder.encode(tuple(primary), (target_index,))[0])
        out_hash.update(out)
        sink.write(out)
    for i in use:
        if sources[i].read(1):
            raise FragmentCorrupt(i, "trailing bytes")
        if fragment_hashes is not None and not hmac.compare_digest(in_hashes[i].digest(), fragment_hashes[i]):
            raise FragmentCorrupt(i, "hash mismatch")
    digest = out_hash.digest()
    if fragment_hashes is not None and not hmac.compare_digest(digest, fragment_hashes[target_index]):
        raise FragmentCorrupt(target_index, "regenerated fragment does not match the manifest")
    return digest
