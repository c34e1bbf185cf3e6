"""GF(2^8) arithmetic and Shamir secret sharing of byte strings, k-of-n.

Theory of operation
-------------------
The field is GF(2)[x] / (x^8 + x^4 + x^3 + x + 1) (the AES polynomial, 0x11B). Addition and
subtraction are XOR. Multiplication is a shift-and-add loop whose sequence of operations does
not depend on the operands (masks instead of branches, no secret-indexed tables); the inverse
is a^254 by a fixed addition chain. CPython gives no real constant-time guarantee, but nothing
here branches on or indexes memory by a secret value: "constant-time-ish".

A secret of L bytes is shared byte-wise: for every byte position an independent random
polynomial f of degree k-1 with f(0) = secret byte, and share i is (x_i, f(x_i)) with public
evaluation points x_i in 1..255 (index i of an n-shard object uses x = i + 1). Any k shares
determine f and hence f(0) by Lagrange interpolation; any k-1 shares are consistent with every
possible secret, each by exactly one polynomial (tests check this exhaustively for small k).

Coefficients come from ``os.urandom`` unless the caller injects a byte source (tests only:
a seeded source makes statistical tests reproducible).
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from collections.abc import Callable, Iterable, Sequence

POLY = 0x11B
MAX_SHARES = 255  # evaluation points 1..255; 0 is the secret itself


class ShareError(ValueError):
    """Shares are malformed, duplicated, insufficient or inconsistent (a local misuse)."""


def add(a: int, b: int) -> int:
    return a ^ b


def mul(a: int, b: int) -> int:
    """Multiply in GF(2^8), in a fixed number of operations whatever the operands."""
    r = 0
    for _ in range(8):
        r ^= -(b & 1) & a  # add a when the low bit of b is set, without a branch
        b >>= 1
        a = ((a << 1) ^ (-(a >> 7) & POLY)) & 0xFF  # a *= x, reduced, without a branch
    return r & 0xFF


def inv(a: int) -> int:
    """Multiplicative inverse, a^254 (a^(2^8 - 2)); raises on zero."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    # 254 = 0b11111110: square-and-multiply with a fixed chain.
    a2 = mul(a, a)
    r = a2
    p = a2
    for _ in range(6):
        p = mul(p, p)
        r = mul(r, p)
    return r


def div(a: int, b: int) -> int:
    return mul(a, inv(b))


def pow_(a: int, e: int) -> int:
    r = 1
    for _ in range(e):
        r = mul(r, a)
    return r


def scale(data: bytes, c: int) -> bytes:
    """Multiply every byte of ``data`` by the field element ``c``."""
    return bytes(mul(b, c) for b in data)


def xor_bytes(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ShareError("length mismatch")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def lagrange_at(xs: Sequence[int], i: int, at: int) -> int:
    """λ_i(at) = Π_{m≠i} (at - x_m) / (x_i - x_m) over the evaluation points ``xs``.

    ``xs`` are public, distinct, non-zero points; ``i`` indexes into ``xs``.
    """
    xi = xs[i]
    num, den = 1, 1
    for m, xm in enumerate(xs):
        if m == i:
            continue
        num = mul(num, at ^ xm)
        den = mul(den, xi ^ xm)
    return div(num, den)


def _check_points(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ShareError("duplicate share index")
    for x in xs:
        if not 1 <= x <= MAX_SHARES:
            raise ShareError(f"share index {x} outside 1..{MAX_SHARES}")


@dataclasses.dataclass(frozen=True, eq=False)
class KeyShare:
    """One Shamir share: the evaluation point ``x`` (1..255) and ``value`` (secret bytes).

    ``repr`` never shows the value; ``==`` compares in constant time (:meth:`matches`);
    shares are deliberately unhashable, so they do not end up as dict keys or in sets.
    """

    x: int
    value: bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyShare):
            return NotImplemented
        return self.matches(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KeyShare(x={self.x}, value=<{len(self.value)} bytes redacted>)"

    __str__ = __repr__

    def matches(self, other: KeyShare) -> bool:
        return self.x == other.x and hmac.compare_digest(self.value, other.value)

    def to_bytes(self) -> bytes:
        """``x`` as one byte, then the value: the form hashed into the manifest."""
        return bytes([self.x]) + self.value

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyShare:
        if len(data) < 2 or not 1 <= data[0] <= MAX_SHARES:
            raise ShareError("malformed share encoding")
        return cls(data[0], bytes(data[1:]))


def split_secret(
    secret: bytes,
    k: int,
    n: int,
    *,
    rand: Callable[[int], bytes] = os.urandom,
) -> list[KeyShare]:
    """Split ``secret`` into ``n`` shares, any ``k`` of which recover it.

    Args:
        secret: the bytes to share (a 32-byte data key here).
        k: threshold, 1 <= k <= n.
        n: number of shares, n <= 255. Share i has x = i + 1.
        rand: source of random bytes; keep the default outside tests.

    Raises:
        ShareError: bad parameters.
    """
    if not 1 <= k <= n <= MAX_SHARES:
        raise ShareError(f"need 1 <= k <= n <= {MAX_SHARES}, got k={k} n={n}")
    if not secret:
        raise ShareError("empty secret")
    length = len(secret)
    # coeffs[d] holds coefficient d of every byte position's polynomial.
    coeffs = [secret] + [rand(length) for _ in range(k - 1)]
    if any(len(c) != length for c in coeffs):
        raise ShareError("random source returned the wrong length")
    shares = []
    for i in range(n):
        x = i + 1
        # Horner's rule, byte-wise: y = (((a_{k-1} x + a_{k-2}) x + ...) x + a_0)
        acc = bytearray(coeffs[-1])
        for d in range(k - 2, -1, -1):
            c = coeffs[d]
            for p in range(length):
                acc[p] = mul(acc[p], x) ^ c[p]
        shares.append(KeyShare(x, bytes(acc)))
    return shares


def interpolate_at(shares: Iterable[KeyShare], at: int) -> bytes:
    """Evaluate the sharing polynomial at ``at`` from exactly the shares given.

    With ``at = 0`` this recovers the secret; with a new point it yields that point's share.
    The caller must pass at least k shares; with fewer the result is garbage (unknowable).
    """
    shares = list(shares)
    if not shares:
        raise ShareError("no shares")
    xs = [s.x for s in shares]
    _check_points(xs)
    length = len(shares[0].value)
    if length == 0 or any(len(s.value) != length for s in shares):
        raise ShareError("shares of different lengths")
    out = bytearray(length)
    for i, s in enumerate(shares):
        lam = lagrange_at(xs, i, at)
        v = s.value
        for p in range(length):
            out[p] ^= mul(lam, v[p])
    return bytes(out)


def combine_shares(shares: Iterable[KeyShare], k: int) -> bytes:
    """Recover the secret from (at least) ``k`` shares; the first ``k`` distinct are used.

    Raises:
        ShareError: fewer than ``k`` distinct shares, bad indices or lengths.
    """
    chosen: dict[int, KeyShare] = {}
    for s in shares:
        chosen.setdefault(s.x, s)
    if len(chosen) < k:
        raise ShareError(f"need {k} distinct shares, have {len(chosen)}")
    return interpolate_at(list(chosen.values())[:k], 0)
