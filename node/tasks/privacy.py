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

import json
from typing import Any

import opendp.prelude as dp

from node.tasks.private_query import KINDS as KINDS
from node.tasks.private_query import OTHER as OTHER
from node.tasks.private_query import PrivacyError as PrivacyError
from node.tasks.private_query import PrivateQuery as PrivateQuery
from node.tasks.private_query import decode_query as decode_query
from node.tasks.private_query import encode_query as encode_query

dp.enable_features("contrib")

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
    search finds for a privacy map of at most ``epsilon`` at ``q.contributions`` records."""
    chain = _chain(kind, q)
    s = float(dp.binary_search_param(lambda s: chain >> dp.m.then_laplace(s),
                                     d_in=q.contributions, d_out=float(epsilon)))
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
    """The privacy loss (epsilon) OpenDP's map reports for a change of ``q.contributions``
    records (what one input record may change)."""
    return float(measurement(q).map(q.contributions))


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
        session = dp.c.make_privacy_filter(odometer, d_in=q.contributions,
                                           d_out=float(remaining_epsilon))(records)
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


def release_document(q: PrivateQuery, answer: Any, charged_epsilon: float) -> bytes:
    """What the owner receives (JSON, sorted keys): the noisy answer and what it cost."""
    doc: dict[str, Any] = {"dataset": q.dataset, "kind": q.kind, "value": answer,
                           "epsilon": charged_epsilon, "contributions": q.contributions,
                           "mechanism": "laplace", "scale": scale(q)}
    if q.lower is not None:
        doc["bounds"] = [q.lower, q.upper]
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
