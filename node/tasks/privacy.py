"""Differentially private releases of a job's records, through OpenDP measurements.

Theory of operation
-------------------
A private query names a data set (whose budget the ledger in ``consensus/budgets.py`` keeps),
a kind and an epsilon:

============  ==================================================================  ===========
kind          OpenDP chain over the records (newline-delimited text)               release
============  ==================================================================  ===========
``count``     split lines → count → Laplace (integer, i.e. discrete)              an integer
``sum``       split lines → cast to f64 (unparsable: 0) → impute NaN 0 →           a float
              clamp to [lower, upper] → sum → Laplace
``mean``      the ``sum`` chain and the ``count`` chain, composed (ε/2 each),     a float
              the noisy sum over the noisy count (post-processing)
``histogram`` split lines → count by the declared categories (one more bucket for  {category:
              everything else) → Laplace (integer)                                  count}
============  ==================================================================  ===========

The unit of privacy is one record (one line): the input metric is the symmetric distance and
``d_in`` = 1. Every noise scale is found by OpenDP's own search (``binary_search_chain``) so
that the chain's privacy map at ``d_in`` = 1 is at most the query's epsilon; the loss to charge
is what that map reports (:func:`loss`), rounded up by the ledger (``budgets.to_units``). The
release runs through an OpenDP privacy filter (``make_privacy_filter`` over a fully adaptive
composition odometer) whose budget is what the ledger says remains (:func:`release`): OpenDP's
accounting refuses a query the ledger should already have refused, a second lock on the same
door. Every mechanism here is pure ε-DP (the Laplace family), so delta is always 0.

Bounds are declared, never derived from the data (a data-dependent bound leaks). The noise
comes from OpenDP's own cryptographically secure sampler; nothing here can seed it.

What this module does not decide: *where* the records come from. The manager calls
:func:`release` inside its enclave on the records it holds after the fragments ran, and only
the release leaves it (docs/tasks.md, "Differential privacy").
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import opendp.prelude as dp

dp.enable_features("contrib")

KINDS = ("count", "sum", "mean", "histogram")
MAX_EPSILON = 100.0
MAX_CATEGORIES = 256
MAX_CATEGORY_CHARS = 128
MAX_BOUND = 1e15              # |lower|, |upper|: keeps the sum's sensitivity finite and exact
OTHER = "__other__"           # the histogram's bucket for every record outside the categories
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


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

    def problems(self) -> list[str]:
        """Every reason this query cannot run (empty when it can)."""
        out = []
        if not _DATASET.match(self.dataset):
            out.append("privacy.dataset: 1..128 of letters, digits and . _ : / -")
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
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise PrivacyError("; ".join(problems))


# --------------------------------------------------------------------------- measurements


def _lines() -> Any:
    return dp.t.make_split_lines()


def _chain(kind: str, q: PrivateQuery) -> Any:
    """The transformation (records → the statistic) before the noise."""
    if kind == "count":
        return _lines() >> dp.t.then_count()
    if kind == "sum":
        assert q.lower is not None and q.upper is not None
        impute, total = dp.t.then_impute_constant(0.0), dp.t.then_sum()  # type: ignore[no-untyped-call]
        return (_lines() >> dp.t.then_cast_default(TOA=float) >> impute
                >> dp.t.then_clamp((float(q.lower), float(q.upper))) >> total)
    return _lines() >> dp.t.then_count_by_categories(categories=list(q.categories))


def _noised(kind: str, q: PrivateQuery, epsilon: float) -> tuple[Any, float]:
    """(measurement, Laplace scale): the chain of ``kind`` with the smallest noise OpenDP's
    search finds for a privacy map of at most ``epsilon`` at one record."""
    chain = _chain(kind, q)
    s = float(dp.binary_search_param(lambda s: chain >> dp.m.then_laplace(s), d_in=1,
                                     d_out=float(epsilon)))
    return chain >> dp.m.then_laplace(s), s


def _parts(q: PrivateQuery) -> list[tuple[Any, float]]:
    q.check()
    if q.kind == "mean":
        return [_noised("sum", q, q.epsilon / 2), _noised("count", q, q.epsilon / 2)]
    return [_noised(q.kind, q, q.epsilon)]


def measurement(q: PrivateQuery) -> Any:
    """The OpenDP measurement of ``q`` over newline-delimited text (raises PrivacyError)."""
    parts = _parts(q)
    if len(parts) == 1:
        return parts[0][0]
    return dp.c.make_composition([m for m, _ in parts])


def loss(q: PrivateQuery) -> float:
    """The privacy loss (epsilon) OpenDP's map reports for one record's change."""
    return float(measurement(q).map(1))


def scale(q: PrivateQuery) -> list[float]:
    """The Laplace scale of each noise draw of ``q`` (for the record: ``jobs describe``)."""
    return [s for _, s in _parts(q)]


def release(q: PrivateQuery, records: str, remaining_epsilon: float) -> Any:
    """The noisy answer of ``q`` over ``records`` (newline-delimited), run through an OpenDP
    privacy filter holding ``remaining_epsilon``. Raises PrivacyError when the query is
    invalid or would exceed what remains."""
    meas = measurement(q)
    if not remaining_epsilon > 0:
        raise PrivacyError("the data set's privacy budget is spent")
    odometer = dp.c.make_fully_adaptive_composition(meas.input_domain, meas.input_metric,
                                                    meas.output_measure)
    try:
        session = dp.c.make_privacy_filter(odometer, d_in=1, d_out=float(remaining_epsilon))(records)
        answer = session(meas)
    except dp.OpenDPException as exc:
        raise PrivacyError(f"refused by the privacy filter: {str(exc).strip()[:200]}") from None
    if q.kind == "count":
        return int(answer)
    if q.kind == "sum":
        return float(answer)
    if q.kind == "mean":
        total, n = answer
        return float(total) / max(1, int(n))
    counts = [int(v) for v in answer]
    return {**dict(zip(q.categories, counts[:-1], strict=True)), OTHER: counts[-1]}
