"""Private releases through OpenDP (node/tasks/privacy.py): each bad query refused with its
reason; the noise of each mechanism has the distribution its scale says (Kolmogorov–Smirnov
over many draws, with a control that a wrong scale is caught); clamping applied; the privacy
filter refuses what the budget cannot pay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node.tasks.privacy import OTHER, PrivacyError, PrivateQuery, loss, measurement, release, scale

DRAWS = 3000
# KS critical value at alpha = 1e-6 (the chance that a correct mechanism fails this test):
# sqrt(-ln(alpha / 2) / 2) / sqrt(n)
D_CRIT = math.sqrt(-math.log(0.5e-6) / 2) / math.sqrt(DRAWS)


def _laplace_cdf(x: np.ndarray, b: float) -> np.ndarray:
    return np.where(x < 0, 0.5 * np.exp(x / b), 1 - 0.5 * np.exp(-x / b))


def _ks_continuous(noise: np.ndarray, b: float) -> float:
    x = np.sort(noise)
    cdf = _laplace_cdf(x, b)
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def _ks_discrete(noise: np.ndarray, b: float) -> float:
    """KS distance between the empirical CDF of integer noise and the discrete Laplace of
    scale ``b`` (P(k) proportional to exp(-|k| / b)), evaluated at every integer in range."""
    p = math.exp(-1 / b)
    ks = np.arange(int(noise.min()) - 1, int(noise.max()) + 2)
    pmf = (1 - p) / (1 + p) * p ** np.abs(ks)
    cdf = np.cumsum(pmf) + (1 - p) / (1 + p) * p ** (abs(int(ks[0])) + 1) / (1 - p)  # tail below
    emp = np.searchsorted(np.sort(noise), ks, side="right") / len(noise)
    return float(np.max(np.abs(emp - cdf)))


@pytest.mark.parametrize(("query", "why"), [
    (PrivateQuery("d", "sum", 1.0), "needs declared bounds"),
    (PrivateQuery("d", "mean", 1.0, lower=0.0), "needs declared bounds"),
    (PrivateQuery("d", "sum", 1.0, lower=5.0, upper=1.0), "lower < privacy.upper"),
    (PrivateQuery("d", "sum", 1.0, lower=0.0, upper=float("inf")), "lower < privacy.upper"),
    (PrivateQuery("d", "count", 0.0), "epsilon: must be positive"),
    (PrivateQuery("d", "count", -1.0), "epsilon: must be positive"),
    (PrivateQuery("d", "count", float("nan")), "epsilon: must be positive"),
    (PrivateQuery("d", "count", 1.0, lower=0.0, upper=1.0), "takes no bounds"),
    (PrivateQuery("d", "median", 1.0), "not one of"),
    (PrivateQuery("d", "histogram", 1.0), "1..256 for a histogram"),
    (PrivateQuery("d", "histogram", 1.0, categories=("a", "a")), "distinct"),
    (PrivateQuery("d", "histogram", 1.0, categories=(OTHER,)), "distinct"),
    (PrivateQuery("d", "count", 1.0, categories=("a",)), "takes no categories"),
    (PrivateQuery("", "count", 1.0), "privacy.dataset"),
])
def test_each_bad_query_is_refused_with_its_reason(query, why):
    assert any(why in p for p in query.problems())
    with pytest.raises(PrivacyError, match="privacy"):
        release(query, "1\n2\n", 10.0)


def test_the_loss_is_what_opendp_maps_and_never_above_epsilon():
    for q in (PrivateQuery("d", "count", 0.7), PrivateQuery("d", "sum", 0.7, lower=-3.0, upper=9.0),
              PrivateQuery("d", "mean", 0.7, lower=0.0, upper=1.0),
              PrivateQuery("d", "histogram", 0.7, categories=("a", "b"))):
        assert 0.6 < loss(q) <= 0.7 + 1e-12, q.kind


@pytest.mark.parametrize("kind", ["sum", "count", "histogram"])
def test_the_noise_has_the_mechanisms_distribution(kind):
    if kind == "sum":
        q = PrivateQuery("d", "sum", 0.5, lower=0.0, upper=4.0)
        records, truth = "1\n2\n3\n", 6.0
    elif kind == "count":
        q = PrivateQuery("d", "count", 0.5)
        records, truth = "a\nb\nc\n", 3
    else:
        q = PrivateQuery("d", "histogram", 0.5, categories=("a", "b"))
        records, truth = "a\na\nb\nz\n", 2  # the first bucket
    meas, (b,) = measurement(q), scale(q)
    draws = [meas(records) for _ in range(DRAWS)]
    noise = np.array([(d[0] if kind == "histogram" else d) - truth for d in draws], dtype=float)
    if kind == "sum":
        assert b == pytest.approx(4.0 / 0.5, rel=1e-6)  # sensitivity (upper) over epsilon
        assert _ks_continuous(noise, b) < D_CRIT
        assert _ks_continuous(noise, 2 * b) > D_CRIT  # the test would catch a wrong scale
    else:
        assert b == pytest.approx(1 / 0.5, rel=1e-6)
        assert _ks_discrete(noise, b) < D_CRIT
        assert _ks_discrete(noise, 2 * b) > D_CRIT


def test_values_are_clamped_and_unparsable_records_count_as_zero():
    q = PrivateQuery("d", "sum", 1.0, lower=0.0, upper=10.0)
    meas, (b,) = measurement(q), scale(q)
    records = "5\n1000000\n-7\nnot a number\nnan\n2.5\n"  # clamped: 5 + 10 + 0 + 0 + 0 + 2.5
    draws = np.array([meas(records) for _ in range(DRAWS)])
    # the noise is centred: the mean of the draws is the clamped sum within 6 standard errors
    assert abs(draws.mean() - 17.5) < 6 * b * math.sqrt(2) / math.sqrt(DRAWS)


def test_mean_and_histogram_releases_and_the_filter_refuses_past_the_budget():
    records = "\n".join(str(i % 5) for i in range(2000))  # mean 2
    m = release(PrivateQuery("d", "mean", 4.0, lower=0.0, upper=4.0), records, 4.0)
    assert abs(m - 2.0) < 0.1
    h = release(PrivateQuery("d", "histogram", 4.0, categories=("0", "1")), records, 10.0)
    assert set(h) == {"0", "1", OTHER} and abs(h["0"] - 400) < 20 and abs(h[OTHER] - 1200) < 20
    with pytest.raises(PrivacyError, match="exceed privacy budget"):
        release(PrivateQuery("d", "count", 1.0), records, 0.5)
    with pytest.raises(PrivacyError, match="spent"):
        release(PrivateQuery("d", "count", 1.0), records, 0.0)


def test_contributions_scale_the_noise_and_not_the_loss():
    """One input record that may change k output records: OpenDP's map is taken at d_in = k,
    so the loss stays the epsilon asked and the Laplace scale grows k-fold."""
    from node.tasks.privacy import PrivateQuery, loss, scale

    one = PrivateQuery("d", "count", 0.5)
    three = PrivateQuery("d", "count", 0.5, contributions=3)
    assert loss(one) <= 0.5 + 1e-9 and loss(three) <= 0.5 + 1e-9
    assert scale(three)[0] == pytest.approx(3 * scale(one)[0], rel=1e-3)


def test_the_release_document_says_what_was_spent():
    import json

    from node.tasks.privacy import PrivateQuery, release, release_document

    q = PrivateQuery("d", "sum", 1.0, lower=0, upper=10)
    doc = json.loads(release_document(q, release(q, "1\n2\n50\n", 1.0 + 1e-12), 1.0))
    assert doc["kind"] == "sum" and doc["epsilon"] == 1.0 and doc["bounds"] == [0.0, 10.0]
    assert doc["mechanism"] == "laplace" and len(doc["scale"]) == 1 and isinstance(doc["value"], float)
