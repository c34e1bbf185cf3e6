"""Built-in aggregations of fragment outputs, pure and exact.

Each takes the fragments' outputs in fragment order and returns the job's result bytes; a
malformed output raises :class:`AggregationError` naming the fragment. Numbers are decimal text
(``-12``, ``3.25``; no exponent), computed exactly with fractions: no float rounding, so the
result does not depend on the order or grouping of the additions.

==============  =========================================  ===================================
kind            each fragment outputs                      the result
==============  =========================================  ===================================
concat          any bytes                                  the outputs joined in fragment order
sum             numbers separated by white space           their sum
count           one non-negative integer (its count)       the total
mean            ``sum count`` pairs, one per line          total sum / total count (18 places)
min / max       numbers separated by white space           the smallest / largest
histogram       one key per line (a number with bin_width)  JSON map key -> count
merge-counts    a JSON map of text -> non-negative integer  JSON map, counts added per key
==============  =========================================  ===================================

Associative over their own results (``aggregate(k, [aggregate(k, a), aggregate(k, b)]) ==
aggregate(k, a + b)``): concat, sum, count, min, max, merge-counts. ``histogram`` results are
``merge-counts`` inputs. ``mean`` is computed from the sums and counts, never as an average of
averages. JSON results are canonical: sorted keys, no spaces, a final newline; numbers end with
a newline too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

MEAN_PLACES = 18
_NUMBER = re.compile(rb"^-?[0-9]+(\.[0-9]+)?$")
MAX_NUMBER_CHARS = 400


class AggregationError(ValueError):
    """A fragment's output is not what the aggregation takes."""

    def __init__(self, fragment: int, why: str) -> None:
        self.fragment = fragment
        self.why = why
        super().__init__(f"fragment {fragment}: {why}")


def _number(tok: bytes, fragment: int) -> Fraction:
    if len(tok) > MAX_NUMBER_CHARS or not _NUMBER.match(tok):
        raise AggregationError(fragment, f"{tok[:40]!r} is not a decimal number")
    return Fraction(tok.decode())


def _numbers(out: bytes, fragment: int) -> list[Fraction]:
    return [_number(t, fragment) for t in out.split()]


def render(q: Fraction, places: int | None = None) -> str:
    """Decimal text of ``q``: exact when ``places`` is None (``q`` must then have a finite
    decimal expansion, as sums of decimals do), else rounded half to even at ``places`` (mean).
    Trailing zeros are dropped; integers have no point."""
    if places is None:
        places = 0
        while (q * 10**places).denominator != 1:
            places += 1
            if places > 4 * MAX_NUMBER_CHARS:
                raise ValueError("no finite decimal expansion")
    n = round(q * 10**places)  # Fraction rounds half to even
    sign = "-" if n < 0 else ""
    digits = str(abs(n)).rjust(places + 1, "0")
    if places == 0:
        return f"{sign}{digits}"
    whole, frac = digits[:-places], digits[-places:].rstrip("0")
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def _counts(out: bytes, fragment: int) -> Counter[str]:
    if not out.strip():
        return Counter()

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise AggregationError(fragment, "duplicate key in a counts map")
        return dict(items)

    try:
        value = json.loads(out, object_pairs_hook=pairs, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, AggregationError):
            raise
        raise AggregationError(fragment, f"not a JSON map of counts: {exc}"[:200]) from None
    if not isinstance(value, dict):
        raise AggregationError(fragment, "not a JSON map of counts")
    for k, v in value.items():
        if type(v) is not int or v < 0:
            raise AggregationError(fragment, f"count of {k[:40]!r} is not a non-negative integer")
    return Counter(value)


def _no_float(text: str) -> Any:
    raise ValueError(f"{text} is not an integer count")


def _json(counts: Counter[str]) -> bytes:
    return (json.dumps(dict(sorted(counts.items())), separators=(",", ":"), ensure_ascii=False)
            + "\n").encode()


def _bin(x: Fraction, width: Fraction) -> str:
    return render((x / width).__floor__() * width)


def aggregate(kind: str, outputs: Sequence[bytes], *, bin_width: str = "") -> bytes:
    """Combine fragment ``outputs`` (in fragment order) with built-in ``kind``.

    Raises:
        AggregationError: a fragment's output is malformed for ``kind`` (names the fragment).
        ValueError: unknown ``kind``, or no values at all for min/max/mean.
    """
    if kind == "concat":
        return b"".join(outputs)
    if kind == "sum":
        return (render(sum((x for i, o in enumerate(outputs) for x in _numbers(o, i)), Fraction(0)))
                + "\n").encode()
    if kind == "count":
        total = 0
        for i, o in enumerate(outputs):
            toks = o.split()
            if len(toks) != 1 or not toks[0].isdigit() or len(toks[0]) > MAX_NUMBER_CHARS:
                raise AggregationError(i, "expected one non-negative integer (the fragment's count)")
            total += int(toks[0])
        return f"{total}\n".encode()
    if kind == "mean":
        s, n = Fraction(0), 0
        for i, o in enumerate(outputs):
            for line in o.splitlines():
                if not line.strip():
                    continue
                toks = line.split()
                if len(toks) != 2 or not toks[1].isdigit():
                    raise AggregationError(i, "expected lines of `sum count` (count a non-negative integer)")
                s += _number(toks[0], i)
                n += int(toks[1])
        if n == 0:
            raise ValueError("mean of no values")
        return (render(s / n, MEAN_PLACES) + "\n").encode()
    if kind in ("min", "max"):
        values = [x for i, o in enumerate(outputs) for x in _numbers(o, i)]
        if not values:
            raise ValueError(f"{kind} of no values")
        return (render(min(values) if kind == "min" else max(values)) + "\n").encode()
    if kind == "histogram":
        width = Fraction(bin_width) if bin_width else None
        if width is not None and width <= 0:
            raise ValueError("bin_width must be positive")
        hist: Counter[str] = Counter()
        for i, o in enumerate(outputs):
            for line in o.splitlines():
                key = line.strip()
                if not key:
                    continue
                if width is not None:
                    hist[_bin(_number(key, i), width)] += 1
                else:
                    try:
                        hist[key.decode()] += 1
                    except UnicodeDecodeError:
                        raise AggregationError(i, "a key is not UTF-8 text") from None
        return _json(hist)
    if kind == "merge-counts":
        merged: Counter[str] = Counter()
        for i, o in enumerate(outputs):
            merged.update(_counts(o, i))
        return _json(merged)
    raise ValueError(f"unknown aggregation {kind!r}")
