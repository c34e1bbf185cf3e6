"""A private query: what a job asks to release with differential privacy, validated and
encoded without OpenDP (node/tasks/privacy.py runs it), so that a spec or a committed job can be
checked without loading the library.

The fields, checked by :meth:`PrivateQuery.problems` (each reason names its spec field):
``dataset`` (the budget it spends), ``kind`` (count, sum, mean, histogram), ``epsilon`` (per
query, positive), ``lower``/``upper`` (declared bounds, for sum and mean only: never derived
from the data), ``categories`` (for histogram only) and ``contributions`` (how many output
records one input record may change: the d_in of every privacy map; 1 for a module that maps
each input record to at most one output record).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import cbor2

from consensus import cbor_strict
from consensus.tasks import MAX_QUERY_BYTES, PRIVATE_KINDS

KINDS = PRIVATE_KINDS

MAX_EPSILON = 100.0
MAX_CATEGORIES = 256
MAX_CATEGORY_CHARS = 128
MAX_BOUND = 1e15              # |lower|, |upper|: keeps the sum's sensitivity finite and exact
OTHER = "__other__"           # the histogram's bucket for every record outside the categories
MAX_CONTRIBUTIONS = 1000      # output records one input record may affect (the d_in declared)
QUERY_VERSION = 1
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def dataset_problem(name: str) -> str:
    """Why ``name`` cannot name a data set ("" when it can)."""
    if isinstance(name, str) and _DATASET.match(name):
        return ""
    return "dataset: 1..128 of letters, digits and . _ : / -, starting with a letter or digit"


class PrivacyError(ValueError):
    """A private query that cannot be run (its reason names the field), or one refused by the
    privacy filter."""


@dataclasses.dataclass(frozen=True)
class PrivateQuery:
    """One private release: ``kind`` over the records of ``dataset`` at ``epsilon``."""

    dataset: str
    kind: str
    epsilon: float
    lower: float | None = None
    upper: float | None = None
    categories: tuple[str, ...] = ()
    contributions: int = 1

    def problems(self) -> list[str]:
        """Every reason this query cannot run (empty when it can)."""
        out = []
        why = dataset_problem(self.dataset)
        if why:
            out.append(f"privacy.{why}")
        if self.kind not in KINDS:
            out.append(f"privacy.kind: {self.kind[:32]!r} is not one of {', '.join(KINDS)}")
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)
                and 0 < self.epsilon <= MAX_EPSILON):
            out.append(f"privacy.epsilon: must be positive and at most {MAX_EPSILON:g}")
        if self.kind in ("sum", "mean"):
            if self.lower is None or self.upper is None:
                out.append(f"privacy.lower and privacy.upper: {self.kind} needs declared bounds")
            elif not (math.isfinite(self.lower) and math.isfinite(self.upper)
                      and -MAX_BOUND <= self.lower < self.upper <= MAX_BOUND):
                out.append(f"privacy.lower < privacy.upper, both within ±{MAX_BOUND:g}")
        elif self.lower is not None or self.upper is not None:
            out.append(f"privacy.lower/upper: {self.kind} takes no bounds")
        if self.kind == "histogram":
            cats = self.categories
            if not 1 <= len(cats) <= MAX_CATEGORIES:
                out.append(f"privacy.categories: 1..{MAX_CATEGORIES} for a histogram")
            elif len(set(cats)) != len(cats) or OTHER in cats or any(
                    not c or len(c) > MAX_CATEGORY_CHARS or "\n" in c for c in cats):
                out.append("privacy.categories: distinct, non-empty, one line each, "
                           f"at most {MAX_CATEGORY_CHARS} characters, not {OTHER!r}")
        elif self.categories:
            out.append(f"privacy.categories: {self.kind} takes no categories")
        if type(self.contributions) is not int or not 1 <= self.contributions <= MAX_CONTRIBUTIONS:
            out.append(f"privacy.contributions: an integer in 1..{MAX_CONTRIBUTIONS} (output "
                       "records one input record may change)")
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise PrivacyError("; ".join(problems))


# --------------------------------------------------------------------------- encodings


def encode_query(q: PrivateQuery) -> bytes:
    """The query's canonical CBOR, committed with the job (raises PrivacyError if invalid)."""
    q.check()
    return cbor2.dumps([QUERY_VERSION, q.dataset, q.kind, float(q.epsilon), q.lower, q.upper,
                        list(q.categories), q.contributions], canonical=True)


def decode_query(data: bytes) -> PrivateQuery:
    """The query committed with a job (raises PrivacyError naming what is wrong)."""
    if not 0 < len(data) <= MAX_QUERY_BYTES:
        raise PrivacyError(f"a private query is 1..{MAX_QUERY_BYTES} bytes")
    try:
        raw = cbor_strict.loads(data)
    except cbor_strict.CborRefused as exc:
        raise PrivacyError(f"private query: {exc.reason}: {exc.detail}") from None
    if not isinstance(raw, list) or len(raw) != 8 or raw[0] != QUERY_VERSION:
        raise PrivacyError(f"private query: expected [{QUERY_VERSION}, dataset, kind, epsilon, "
                           "lower, upper, categories, contributions]")
    _, dataset, kind, eps, lower, upper, cats, contrib = raw

    def number(v: Any) -> bool:
        return type(v) in (int, float)

    if not (isinstance(dataset, str) and isinstance(kind, str) and number(eps)
            and (lower is None or number(lower)) and (upper is None or number(upper))
            and isinstance(cats, list) and all(isinstance(c, str) for c in cats)
            and type(contrib) is int):
        raise PrivacyError("private query: a field has the wrong type")
    q = PrivateQuery(dataset, kind, float(eps), None if lower is None else float(lower),
                     None if upper is None else float(upper), tuple(cats), contrib)
    q.check()
    return q
