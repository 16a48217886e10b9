"""Agreement of two methods that measure the same cases: the numbers a journal asks for.

Every function takes paired measurements ``a`` (the method under test, e.g. from
automatic masks) and ``b`` (the reference reader), differences being ``a - b``, and
returns a JSON-ready dict. Pairs with a non-finite value are left out (``n`` counts
those used). Where the statistic is undefined (fewer than three pairs, no variance)
its numbers are NaN and ``reason`` says why; nothing here raises for such data.

* Bland-Altman bias, SD of the differences and 95% limits of agreement, with
  confidence intervals of the bias and of each limit (exact, Carkeet 2015; and the
  approximation of Bland & Altman 1999), absolute or on a log scale as percentages;
* ICC(2,1) absolute agreement and ICC(3,1) consistency (Shrout & Fleiss 1979;
  McGraw & Wong 1996 cases 2A and 3, single measures) with F-based intervals;
* Pearson's r with a Fisher-z interval and Lin's concordance correlation with its
  z-transformed interval (Lin 1989, 2000);
* paired t-test and Wilcoxon signed-rank p-values (scipy.stats);
* two one-sided tests (TOST, Schuirmann 1987) for equivalence within a margin.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

LOA_COVERAGE = 0.95  # limits of agreement hold 95% of the differences
MIN_PAIRS = 3
_NAN = float("nan")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of the pairs where both values are finite."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up; got {a.size} and {b.size} values")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _too_few(n: int, needed: int = MIN_PAIRS) -> str | None:
    return f"{n} pairs; at least {needed} are needed" if n < needed else None


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``a - b``, and why no test can be made on it (too few, no variance) or None."""
    d = a - b
    reason = _too_few(int(d.size))
    if reason is None and np.ptp(d) == 0:
        reason = "the differences are all equal (no variance)"
    return d, reason


def _interval(lo: float, hi: float) -> list[float]:
    return [float(lo), float(hi)]


# --- Bland-Altman -----------------------------------------------------------------


def bland_altman(
    a: Sequence[float],
    b: Sequence[float],
    *,
    ratio: bool = False,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Bias and 95% limits of agreement of ``a - b``, with their intervals.

    Parameters
    ----------
    a, b : sequence of float
        Paired measurements: the method under test and the reference.
    ratio : bool
        Analyse ``ln(a) - ln(b)`` and report bias, limits and intervals as
        percentages, ``100 (exp(x) - 1)``: a bias of 5 means ``a`` reads 5% above
        ``b`` (geometric mean of the ratios). Needs positive values.
    alpha : float
        The intervals are at confidence ``1 - alpha``; the limits themselves are
        always the 95% limits, ``bias -+ 1.96 SD``.

    Returns
    -------
    dict
        ``n``, ``bias``, ``sd``, ``lower``, ``upper``, ``bias_ci``, ``lower_ci``,
        ``upper_ci`` (exact), ``lower_ci_approx``, ``upper_ci_approx``, ``scale``
        (``"absolute"`` or ``"ratio"``), ``unit`` (``""`` or ``"%"``),
        ``confidence``, ``ci_method`` and ``reason`` (None when defined). On the
        ratio scale ``sd`` is that of the log ratios.

    Notes
    -----
    With mean difference ``d``, SD ``s``, ``n`` pairs and ``z`` the normal quantile
    of the limits, the upper limit ``mu + z sigma`` has the exact interval
    ``d + s q / sqrt(n)``, ``q`` the ``alpha/2`` and ``1 - alpha/2`` quantiles of
    the noncentral t distribution with ``n - 1`` degrees of freedom and
    noncentrality ``z sqrt(n)`` (Carkeet 2015); the lower limit mirrors it. The
    approximate interval is ``limit -+ t s sqrt(1/n + z^2 / (2 (n - 1)))`` (Bland &
    Altman 1999), which is narrower for small ``n``.
    """
    a, b = _pairs(a, b)
    out: dict[str, Any] = {
        "scale": "ratio" if ratio else "absolute",
        "unit": "%" if ratio else "",
        "confidence": 1 - alpha,
        "ci_method": "exact (Carkeet 2015); *_approx: Bland & Altman 1999",
    }
    reason = _too_few(a.size)
    if reason is None and ratio and not (np.all(a > 0) and np.all(b > 0)):
        bad = int(np.sum((a <= 0) | (b <= 0)))
        reason = f"the ratio scale needs positive values; {bad} pairs are not"
    if reason is not None:
        keys = ("bias", "sd", "lower", "upper")
        cis = ("bias_ci", "lower_ci", "upper_ci", "lower_ci_approx", "upper_ci_approx")
        out.update(dict.fromkeys(keys, _NAN))
        out.update({k: [_NAN, _NAN] for k in cis})
        return {**out, "n": int(a.size), "reason": reason}

    d = np.log(a) - np.log(b) if ratio else a - b
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    z = sps.norm.ppf(0.5 + LOA_COVERAGE / 2)
    t = sps.t.ppf(1 - alpha / 2, n - 1)
    lower, upper = mean - z * sd, mean + z * sd
    # exact: the limits are noncentral-t pivots (Carkeet 2015)
    q_lo, q_hi = sps.nct.ppf([alpha / 2, 1 - alpha / 2], n - 1, z * math.sqrt(n))
    exact_upper = (mean + sd * q_lo / math.sqrt(n), mean + sd * q_hi / math.sqrt(n))
    exact_lower = (mean - sd * q_hi / math.sqrt(n), mean - sd * q_lo / math.sqrt(n))
    se_limit = sd * math.sqrt(1 / n + z**2 / (2 * (n - 1)))
    se_bias = sd / math.sqrt(n)

    scale = (lambda v: 100 * math.expm1(v)) if ratio else float
    values = {
        "bias": scale(mean),
        "lower": scale(lower),
        "upper": scale(upper),
        "bias_ci": [scale(mean - t * se_bias), scale(mean + t * se_bias)],
        "lower_ci": [scale(v) for v in exact_lower],
        "upper_ci": [scale(v) for v in exact_upper],
        "lower_ci_approx": [scale(lower - t * se_limit), scale(lower + t * se_limit)],
        "upper_ci_approx": [scale(upper - t * se_limit), scale(upper + t * se_limit)],
    }
    return {**out, **values, "n": n, "sd": sd, "reason": None}


# --- intraclass correlation ---------------------------------------------------------


def _two_way_anova(ratings: np.ndarray) -> dict[str, float]:
    """Mean squares of a two-way layout: rows (targets), columns (raters), error."""
    n, k = ratings.shape
    grand = ratings.mean()
    ss_rows = k * np.sum((ratings.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((ratings.mean(axis=0) - grand) ** 2)
    ss_error = np.sum((ratings - grand) ** 2) - ss_rows - ss_cols
    return {
        "MSR": ss_rows / (n - 1),
        "MSC": ss_cols / (k - 1),
        "MSE": max(ss_error, 0.0) / ((n - 1) * (k - 1)),
    }


def _ratings(ratings: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Complete rows of an (n, k) table, and why an ICC is undefined (or None)."""
    ratings = np.asarray(ratings, np.float64)
    if ratings.ndim != 2 or ratings.shape[1] < 2:
        raise ValueError(
            f"ratings must be (n targets, k >= 2 raters); got {ratings.shape}"
        )
    ratings = ratings[np.all(np.isfinite(ratings), axis=1)]
    reason = _too_few(len(ratings))
    if reason is None and np.ptp(ratings.mean(axis=1)) == 0:
        reason = "the targets do not differ (no variance between them)"
    return ratings, reason


def _undefined_icc(form: str, n: int, reason: str) -> dict[str, Any]:
    return {
        "form": form,
        "icc": _NAN,
        "ci": [_NAN, _NAN],
        "F": _NAN,
        "df": [_NAN, _NAN],
        "p": _NAN,
        "n": n,
        "reason": reason,
    }


def icc_agreement(ratings: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """ICC(2,1): absolute agreement of single measures, two-way random effects.

    Parameters
    ----------
    ratings : ndarray, shape (n, k)
        ``n`` targets (rows) measured by ``k`` raters or methods (columns); rows with
        a non-finite value are left out.
    alpha : float
        The interval is at confidence ``1 - alpha``.

    Returns
    -------
    dict
        ``form``, ``icc``, ``ci``, ``F`` (rows against error), ``df``, ``p`` (of
        ICC = 0), ``n`` and ``reason``.

    Notes
    -----
    ``(MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)``; its interval is that
    of McGraw & Wong (1996) case 2A, with Satterthwaite's degrees of freedom ``v``
    for the denominator. Shrout & Fleiss's 6 x 4 example gives 0.29.
    """
    ratings, reason = _ratings(ratings)
    if reason is not None:
        return _undefined_icc("ICC(2,1)", len(ratings), reason)
    n, k = ratings.shape
    ms = _two_way_anova(ratings)
    msr, msc, mse = ms["MSR"], ms["MSC"], ms["MSE"]
    icc = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    if mse == 0:
        return _no_interval("ICC(2,1)", icc, n, k)

    # Satterthwaite's degrees of freedom with a and b of McGraw & Wong multiplied
    # by (1 - icc), which cancels: the plain form overflows as the ICC nears 1
    a = k * icc / n
    b = (1 - icc) + k * icc * (n - 1) / n
    v = (a * msc + b * mse) ** 2 / (
        (a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1))
    )
    f_lo = sps.f.ppf(1 - alpha / 2, n - 1, v) if v > 0 else np.inf
    f_hi = sps.f.ppf(1 - alpha / 2, v, n - 1) if v > 0 else np.inf
    common = k * msc + (k * n - k - n) * mse
    # McGraw & Wong's bounds divided through by the F quantiles, which are huge or
    # infinite when v nears 0 (raters who disagree far beyond the subjects' spread)
    lower = n * (msr / f_lo - mse) / (common + n * msr / f_lo)
    upper = n * (msr - mse / f_hi) / (common / f_hi + n * msr)
    result = _icc_result("ICC(2,1)", icc, lower, upper, msr, mse, n, k)
    if not lower <= icc <= upper:  # then both bounds collapse to -n mse / common
        result["ci"] = [math.nan, math.nan]
        result["reason"] = (
            f"Satterthwaite's degrees of freedom are {v:.2g}: the F interval "
            "degenerates and is not given"
        )
    return result


def icc_consistency(ratings: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """ICC(3,1): consistency of single measures, two-way mixed effects.

    Parameters and returns as :func:`icc_agreement`.

    Notes
    -----
    ``(MSR - MSE) / (MSR + (k - 1) MSE)``: a constant offset between raters does
    not lower it. With ``F = MSR / MSE`` and its quantiles on ``n - 1`` and
    ``(n - 1)(k - 1)`` degrees of freedom, ``F_L = F / F_{1-alpha/2}(df1, df2)``,
    ``F_U = F F_{1-alpha/2}(df2, df1)`` and the interval is
    ``(F_L - 1) / (F_L + k - 1)`` to ``(F_U - 1) / (F_U + k - 1)`` (McGraw & Wong
    1996, case 3). Shrout & Fleiss's 6 x 4 example gives 0.71.
    """
    ratings, reason = _ratings(ratings)
    if reason is not None:
        return _undefined_icc("ICC(3,1)", len(ratings), reason)
    n, k = ratings.shape
    ms = _two_way_anova(ratings)
    msr, mse = ms["MSR"], ms["MSE"]
    icc = (msr - mse) / (msr + (k - 1) * mse)
    if mse == 0:
        return _no_interval("ICC(3,1)", icc, n, k)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    f_obs = msr / mse
    f_lo = f_obs / sps.f.ppf(1 - alpha / 2, df1, df2)
    f_hi = f_obs * sps.f.ppf(1 - alpha / 2, df2, df1)
    lower = (f_lo - 1) / (f_lo + k - 1)
    upper = (f_hi - 1) / (f_hi + k - 1)
    return _icc_result("ICC(3,1)", icc, lower, upper, msr, mse, n, k)


def _no_interval(form: str, icc: float, n: int, k: int) -> dict[str, Any]:
    """An ICC whose raters differ by constants only (MSE = 0): no F, no interval."""
    return {
        **_undefined_icc(form, n, "no residual variance (MSE = 0): no interval"),
        "icc": float(icc),
        "df": [n - 1, (n - 1) * (k - 1)],
    }


def _icc_result(
    form: str, icc: float, lower: float, upper: float, msr, mse, n: int, k: int
) -> dict[str, Any]:
    df1, df2 = n - 1, (n - 1) * (k - 1)
    f_obs = msr / mse
    return {
        "form": form,
        "icc": float(icc),
        "ci": _interval(lower, upper),
        "F": float(f_obs),
        "df": [df1, df2],
        "p": float(sps.f.sf(f_obs, df1, df2)),
        "n": n,
        "reason": None,
    }


# --- correlation and concordance ---------------------------------------------------


def pearson(
    a: Sequence[float], b: Sequence[float], alpha: float = 0.05
) -> dict[str, Any]:
    """Pearson's r, its p-value and its Fisher-z interval.

    The interval is ``tanh(atanh(r) -+ z / sqrt(n - 3))``; it needs four pairs, and
    with three it is NaN and ``reason`` says so.
    """
    a, b = _pairs(a, b)
    n = int(a.size)
    out = {"r": _NAN, "ci": [_NAN, _NAN], "p": _NAN, "n": n}
    reason = _too_few(n)
    if reason is None and (np.ptp(a) == 0 or np.ptp(b) == 0):
        reason = "one of the methods has no variance"
    if reason is not None:
        return {**out, "reason": reason}
    result = sps.pearsonr(a, b)
    r = float(result.statistic)
    out.update(r=r, p=float(result.pvalue), reason=None)
    if n < 4:
        return {**out, "reason": "the Fisher-z interval needs at least 4 pairs"}
    if abs(r) == 1:
        return {**out, "ci": [r, r]}
    half = sps.norm.ppf(1 - alpha / 2) / math.sqrt(n - 3)
    z = math.atanh(r)
    return {**out, "ci": _interval(math.tanh(z - half), math.tanh(z + half))}


def concordance(
    a: Sequence[float], b: Sequence[float], alpha: float = 0.05
) -> dict[str, Any]:
    """Lin's concordance correlation coefficient and its interval.

    Returns
    -------
    dict
        ``ccc``, ``ci``, ``n`` and ``reason``.

    Notes
    -----
    ``rho_c = 2 s_ab / (s_a^2 + s_b^2 + (mean_a - mean_b)^2)`` with moments over
    ``n`` (Lin 1989). The interval is ``tanh(atanh(rho_c) -+ z se)`` with the
    asymptotic variance of ``atanh(rho_c)`` from Lin (1989), as corrected in Lin
    (2000), on ``n - 2`` degrees of freedom.
    """
    a, b = _pairs(a, b)
    n = int(a.size)
    out = {"ccc": _NAN, "ci": [_NAN, _NAN], "n": n}
    reason = _too_few(n)
    if reason is None and (np.ptp(a) == 0 or np.ptp(b) == 0):
        reason = "one of the methods has no variance"
    if reason is not None:
        return {**out, "reason": reason}
    va, vb = a.var(), b.var()
    cov = float(np.mean((a - a.mean()) * (b - b.mean())))
    shift = float(a.mean() - b.mean())
    ccc = 2 * cov / (va + vb + shift**2)
    r = cov / math.sqrt(va * vb)
    out.update(ccc=float(ccc), reason=None)
    if abs(ccc) >= 1 or r == 0:
        return {**out, "ci": [float(ccc), float(ccc)]}
    u2 = shift**2 / math.sqrt(va * vb)
    var_z = (
        (1 - r**2) * ccc**2 / ((1 - ccc**2) * r**2)
        + 2 * ccc**3 * (1 - ccc) * u2 / (r * (1 - ccc**2) ** 2)
        - ccc**4 * u2**2 / (2 * r**2 * (1 - ccc**2) ** 2)
    ) / (n - 2)
    if not var_z > 0:
        return {**out, "reason": "the asymptotic variance is not positive"}
    half = sps.norm.ppf(1 - alpha / 2) * math.sqrt(var_z)
    z = math.atanh(ccc)
    return {**out, "ci": _interval(math.tanh(z - half), math.tanh(z + half))}


# --- tests of the differences ------------------------------------------------------


def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided p-values of the paired t-test and of the Wilcoxon signed-rank test.

    Returns ``t``, ``p_t``, ``p_wilcoxon``, ``n`` and ``reason`` (why a p-value is
    NaN: too few pairs, or differences that are all equal).
    """
    a, b = _pairs(a, b)
    n = int(a.size)
    out = {"t": _NAN, "p_t": _NAN, "p_wilcoxon": _NAN, "n": n}
    d, reason = _differences(a, b)
    if reason is not None:
        return {**out, "reason": reason}
    t = sps.ttest_rel(a, b)
    out.update(t=float(t.statistic), p_t=float(t.pvalue), reason=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ties: normal approximation
        out["p_wilcoxon"] = float(sps.wilcoxon(d).pvalue)
    return out


def resolve_margin(margin: float | str, reference: Sequence[float]) -> float:
    """An equivalence margin in the measurements' unit.

    Parameters
    ----------
    margin : float or str
        An absolute margin (> 0), or ``"N%"``: N percent of ``|mean(reference)|``.
    reference : sequence of float
        The reference measurements (finite values are used).

    Raises
    ------
    ValueError
        A margin that is not positive or not of either form.
    """
    if isinstance(margin, str):
        match = _PERCENT.match(margin)
        if match is not None:
            return _percent_margin(float(match.group(1)), reference)
        try:
            margin = float(margin)
        except ValueError:
            raise ValueError(
                f"margin must be a positive number or 'N%'; got {margin!r}"
            ) from None
    margin = float(margin)
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be positive and finite; got {margin}")
    return margin


def _percent_margin(percent: float, reference: Sequence[float]) -> float:
    if not percent > 0:
        raise ValueError(f"margin must be a positive percentage; got {percent:g}%")
    values = np.asarray(reference, np.float64)
    values = values[np.isfinite(values)]
    mean = abs(float(values.mean())) if values.size else 0.0
    if not mean > 0:
        raise ValueError("a margin in % needs a reference mean other than 0")
    return percent / 100 * mean


def tost(
    a: Sequence[float],
    b: Sequence[float],
    margin: float | str,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Two one-sided tests of equivalence of the paired means within ``-+margin``.

    Parameters
    ----------
    a, b : sequence of float
        Paired measurements; the differences ``a - b`` are tested.
    margin : float or str
        Absolute margin, or ``"N%"`` of the reference mean (:func:`resolve_margin`).
    alpha : float
        Level of each one-sided test.

    Returns
    -------
    dict
        ``margin`` (absolute), ``mean_diff``, ``p_lower`` (of H0: mean <= -margin),
        ``p_upper`` (of H0: mean >= +margin), ``p`` (the larger of the two),
        ``ci`` (the ``1 - 2 alpha`` interval of the mean difference, 90% at the
        default), ``equivalent`` (``p < alpha``), ``decision``, ``n``, ``reason``.

    Notes
    -----
    Equivalence needs both null hypotheses rejected, so the TOST p-value is the
    larger one-sided p-value; ``p < alpha`` holds exactly when the ``1 - 2 alpha``
    interval lies inside ``(-margin, +margin)`` (Schuirmann 1987).
    """
    a, b = _pairs(a, b)
    n = int(a.size)
    delta = resolve_margin(margin, b) if n else _NAN
    out = {
        "margin": delta,
        "mean_diff": _NAN,
        "p_lower": _NAN,
        "p_upper": _NAN,
        "p": _NAN,
        "ci": [_NAN, _NAN],
        "equivalent": None,
        "alpha": alpha,
        "decision": "undefined",
        "n": n,
    }
    d, reason = _differences(a, b)
    if reason is not None:
        return {**out, "reason": reason}
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    df = n - 1
    p_lower = float(sps.t.sf((mean + delta) / se, df))
    p_upper = float(sps.t.cdf((mean - delta) / se, df))
    p = max(p_lower, p_upper)
    half = sps.t.ppf(1 - alpha, df) * se
    equivalent = bool(p < alpha)
    return {
        **out,
        "mean_diff": mean,
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p": p,
        "ci": _interval(mean - half, mean + half),
        "equivalent": equivalent,
        "decision": "equivalent" if equivalent else "not shown equivalent",
        "reason": None,
    }


# --- everything at once ----------------------------------------------------------


def agreement(
    a: Sequence[float],
    b: Sequence[float],
    *,
    margin: float | str | None = None,
    ratio: bool = False,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """All the statistics of this module for one parameter.

    Returns
    -------
    dict
        ``n``, ``mean_a``, ``mean_b``, ``bland_altman``, ``bland_altman_ratio``
        (with ``ratio``), ``icc_agreement``, ``icc_consistency``, ``pearson``,
        ``concordance``, ``tests`` and ``tost`` (with a ``margin``; else its
        ``reason`` says that none was given).
    """
    a, b = _pairs(a, b)
    ratings = np.column_stack([a, b])
    out: dict[str, Any] = {
        "n": int(a.size),
        "mean_a": float(a.mean()) if a.size else _NAN,
        "mean_b": float(b.mean()) if b.size else _NAN,
        "bland_altman": bland_altman(a, b, alpha=alpha),
        "icc_agreement": icc_agreement(ratings, alpha),
        "icc_consistency": icc_consistency(ratings, alpha),
        "pearson": pearson(a, b, alpha),
        "concordance": concordance(a, b, alpha),
        "tests": paired_tests(a, b),
    }
    if ratio:
        out["bland_altman_ratio"] = bland_altman(a, b, ratio=True, alpha=alpha)
    if margin is None:
        out["tost"] = {
            "decision": "undefined",
            "equivalent": None,
            "reason": "no equivalence margin given",
        }
    else:
        out["tost"] = tost(a, b, margin, alpha)
    return out


def describe(values: Sequence[float]) -> dict[str, Any]:
    """Mean, SD, median, min and max over the finite values, with their counts.

    ``n`` counts finite values, ``n_infinite`` and ``n_nan`` the others; the SD
    needs two finite values.
    """
    values = np.asarray(values, np.float64).ravel()
    finite = values[np.isfinite(values)]
    n = int(finite.size)
    return {
        "n": n,
        "n_infinite": int(np.isinf(values).sum()),
        "n_nan": int(np.isnan(values).sum()),
        "mean": float(finite.mean()) if n else _NAN,
        "sd": float(finite.std(ddof=1)) if n > 1 else _NAN,
        "median": float(np.median(finite)) if n else _NAN,
        "min": float(finite.min()) if n else _NAN,
        "max": float(finite.max()) if n else _NAN,
    }
