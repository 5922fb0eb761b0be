"""The statistics of an A/B test on CTR, on arrays of per-user sums (no pandas, no Kafka).

The unit is the user (the serving split is sticky per user, serve/routing.py), the metric the
ratio ``CTR = sum(clicks) / sum(impressions)`` over a variant's users. Every function works on
the last axis of its arrays, so one call can analyse many simulated experiments at once
(tests/stream/test_ab.py) as well as one real one (:mod:`stream.ab`).

* :func:`ratio_from_sums` / :func:`ratio_of_units`: the ratio metric and its delta-method
  standard error, ``se = sd(clicks_i - R * impressions_i) / (sqrt(n) * mean(impressions))``
  (sample standard deviation over the n users; Deng et al., "Applying the Delta Method in
  Metric Analytics", 2018).
* :func:`relative_lift`: ``R_t / R_c - 1`` of two independent ratio metrics, its delta-method
  standard error ``sqrt(se_t^2 + (R_t / R_c)^2 * se_c^2) / R_c``, a normal (scipy.stats.norm)
  confidence interval and the two-sided p-value of ``lift / se``.
* :func:`srm_test`: scipy.stats.chisquare of the users per variant against the configured
  weights; flagged below ``SRM_ALPHA`` = 0.001.
* :func:`linearize` + :func:`cuped`: CUPED (Deng et al., WSDM 2013) for the ratio metric. The
  covariate of a user is the linearisation of the pre-period CTR,
  ``(pre_clicks_i - R_pre * pre_impressions_i) / mean(pre_impressions)`` over all the
  experiment's users (0 for a user without pre-period samples); ``theta`` is pooled over the
  variants; the adjusted per-user metric is ``R + l_i - theta * m_i`` (``l_i`` the user's own
  linearisation), its mean the adjusted CTR, and the variance reduction
  ``1 - var(l - theta * m) / var(l)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

Floats = NDArray[np.float64]
SRM_ALPHA = 0.001


class Ratio(NamedTuple):
    """A ratio metric: its value, delta-method standard error and number of units."""

    value: Floats
    se: Floats
    n: Floats


class Lift(NamedTuple):
    """Relative lift of a treatment over the control, with its interval and p-value."""

    lift: Floats
    se: Floats
    low: Floats
    high: Floats
    p_value: Floats


class Srm(NamedTuple):
    """Sample-ratio-mismatch test: chi-square statistic, p-value, expected users, verdict."""

    chi2: float
    p_value: float
    expected: Floats
    flagged: bool


class Cuped(NamedTuple):
    """A CUPED-adjusted ratio metric per variant (arrays over the variants)."""

    ratio: Ratio
    theta: float
    variance_reduction: Floats


def _f(x: ArrayLike) -> Floats:
    return np.asarray(x, dtype=np.float64)


def ratio_from_sums(n: ArrayLike, sx: ArrayLike, sy: ArrayLike, sxx: ArrayLike,
                    syy: ArrayLike, sxy: ArrayLike) -> Ratio:
    """``R = sy / sx`` and its delta-method standard error from per-unit moment sums.

    ``x`` = impressions, ``y`` = clicks of each of ``n`` units: ``sx = sum x``, ``sxx =
    sum x^2``, ``sxy = sum x*y`` and so on. ``var(y - R x)`` (ddof 1) is ``(syy - 2 R sxy +
    R^2 sxx) / (n - 1)`` because ``sum(y - R x) = 0``; the standard error is
    ``sqrt(var / n) / mean(x)``. NaN where n < 2 or there are no impressions.
    """
    n, sx, sy, sxx, syy, sxy = (_f(a) for a in (n, sx, sy, sxx, syy, sxy))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sy / sx
        var = np.maximum(syy - 2 * r * sxy + r * r * sxx, 0.0) / (n - 1)
        se = np.sqrt(var / n) / (sx / n)
    return Ratio(r, np.where(n >= 2, se, np.nan), n)


def ratio_of_units(clicks: ArrayLike, impressions: ArrayLike) -> Ratio:
    """:func:`ratio_from_sums` of per-user sums along the last axis (one unit per entry)."""
    y, x = _f(clicks), _f(impressions)
    n = np.full(y.shape[:-1], y.shape[-1], dtype=np.float64)
    return ratio_from_sums(n, x.sum(-1), y.sum(-1), (x * x).sum(-1), (y * y).sum(-1),
                           (x * y).sum(-1))


def interval(value: ArrayLike, se: ArrayLike, alpha: float = 0.05) -> tuple[Floats, Floats]:
    """Normal ``1 - alpha`` confidence interval ``value -/+ z * se``."""
    z = stats.norm.ppf(1 - alpha / 2)
    return _f(value) - z * _f(se), _f(value) + z * _f(se)


def relative_lift(treatment: Ratio, control: Ratio, alpha: float = 0.05) -> Lift:
    """``R_t / R_c - 1`` of two independent ratio metrics (delta method, see module doc)."""
    rt, rc = treatment.value, control.value
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = rt / rc - 1
        se = np.sqrt(treatment.se ** 2 + (rt / rc) ** 2 * control.se ** 2) / rc
        p = 2 * stats.norm.sf(np.abs(lift / se))
    low, high = interval(lift, se, alpha)
    return Lift(lift, se, low, high, _f(p))


def srm_test(users: ArrayLike, weights: ArrayLike, alpha: float = SRM_ALPHA) -> Srm:
    """Chi-square goodness of fit of the users per variant to ``weights`` (normalised)."""
    observed, w = _f(users), _f(weights)
    expected = observed.sum() * w / w.sum()
    chi2, p = stats.chisquare(observed, expected)
    return Srm(float(chi2), float(p), expected, bool(p < alpha))


def linearize(clicks: ArrayLike, impressions: ArrayLike) -> tuple[Floats, Floats]:
    """``(R, l)``: the ratio along the last axis and each unit's linearisation
    ``l_i = (y_i - R x_i) / mean(x)`` (mean 0; ``R + mean(l)`` is the ratio's first-order
    expansion, ``sd(l) / sqrt(n)`` its delta-method standard error)."""
    y, x = _f(clicks), _f(impressions)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = y.sum(-1) / x.sum(-1)
        lin = (y - r[..., None] * x) / x.mean(-1)[..., None]
    return r, np.nan_to_num(lin)


def cuped(clicks: list[Floats], impressions: list[Floats], covariate: list[Floats]) -> Cuped:
    """CUPED-adjusted CTR of each variant (one array of users per variant in each list).

    ``covariate[v]``: each user's pre-period linearisation (module doc), computed over all
    variants' users together so that a variant's mean covariate is its pre-period imbalance.
    """
    lins = [linearize(y, x) for y, x in zip(clicks, impressions, strict=True)]
    # theta pooled within variants: sum of within-variant covariances over the sum of
    # within-variant covariate variances
    num = sum(float(np.sum((lin - lin.mean()) * (m - m.mean())))
              for (_, lin), m in zip(lins, covariate, strict=True))
    den = sum(float(np.sum((m - m.mean()) ** 2)) for m in covariate)
    theta = num / den if den > 0 else 0.0
    values: list[float] = []
    ses: list[float] = []
    ns: list[float] = []
    reductions: list[float] = []
    for (r, lin), m in zip(lins, covariate, strict=True):
        adjusted = lin - theta * m
        n = len(adjusted)
        var, var_adj = ((float(np.var(lin, ddof=1)), float(np.var(adjusted, ddof=1)))
                        if n > 1 else (0.0, 0.0))
        values.append(float(r) - theta * float(m.mean()) if n else np.nan)
        ses.append(float(np.sqrt(var_adj / n)) if n > 1 else np.nan)
        ns.append(n)
        reductions.append(1 - var_adj / var if var > 0 else np.nan)
    return Cuped(Ratio(_f(values), _f(ses), _f(ns)), theta, _f(reductions))


def adjusted_units(clicks: ArrayLike, impressions: ArrayLike, covariate: ArrayLike,
                   theta: float) -> Floats:
    """Each user's CUPED-adjusted metric ``R + l_i - theta * m_i`` (its mean is the
    adjusted CTR of :func:`cuped`)."""
    r, lin = linearize(clicks, impressions)
    return r[..., None] + lin - theta * _f(covariate)
