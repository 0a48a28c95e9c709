"""Correlation across a population of runs: Pearson's r with a Fisher-z interval, Spearman's rho, and the
within-group correlation (each value minus its group's mean) for populations that repeat a design over seeds.
Used by the design-diversity study (:mod:`distill.analysis.design`)."""

from __future__ import annotations

import numpy as np


def finite(v: float | None) -> bool:
    """A number that is neither None (NaN in plain data) nor NaN / inf."""
    return v is not None and bool(np.isfinite(v))


def fisher_interval(r: float, dof: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for a correlation ``r`` by Fisher's z: ``tanh(atanh(r) -/+ z / sqrt(dof))``; ``dof`` is ``n - 3``
    for Pearson's r of n pairs, ``n - 3 - k`` with k variables partialled out. NaN when ``dof < 1``."""
    from scipy import stats

    if dof < 1 or not np.isfinite(r):
        return float("nan"), float("nan")
    z = float(np.arctanh(np.clip(r, -0.999999, 0.999999)))
    h = float(stats.norm.ppf(0.5 + level / 2)) / np.sqrt(dof)
    return float(np.tanh(z - h)), float(np.tanh(z + h))


def correlate(x: list[float], y: list[float], removed: int = 0) -> dict[str, float]:
    """Pearson (with its 95% Fisher-z interval) and Spearman correlation, with two-sided p-values, of paired values,
    ignoring pairs with a NaN; NaN when fewer than 3 pairs remain or either side is constant. ``removed``: degrees of
    freedom already spent (design means subtracted: the number of designs less one), taken off the interval's and
    the p-values' (the p-values then come from the t distribution of r with ``n - 2 - removed`` dof)."""
    from scipy import stats

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    nan = float("nan")
    out = {"n": int(ok.sum()), "pearson": nan, "pearson_p": nan, "pearson_lo": nan, "pearson_hi": nan}
    out.update(spearman=nan, spearman_p=nan)
    if len(a) - removed < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    r = float(np.corrcoef(a, b)[0, 1])
    rho = float(stats.spearmanr(a, b).statistic)
    dof = len(a) - 2 - removed
    out.update(pearson=r, pearson_p=_t_pvalue(r, dof), spearman=rho, spearman_p=_t_pvalue(rho, dof))
    out["pearson_lo"], out["pearson_hi"] = fisher_interval(r, dof - 1)
    return out


def _t_pvalue(r: float, dof: int) -> float:
    """Two-sided p-value of a correlation r with ``dof`` degrees of freedom (t = r sqrt(dof / (1 - r^2))); scipy's
    pearsonr and spearmanr give the same for ``dof = n - 2``."""
    from scipy import stats

    if abs(r) >= 1:
        return 0.0
    t = r * np.sqrt(dof / (1 - r * r))
    return float(2 * stats.t.sf(abs(t), dof))


def within(values: list[float], groups: list[str]) -> list[float]:
    """Each value minus the mean of its design (NaNs left out of the mean and kept as NaN)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full_like(v, np.nan)
    for g in set(groups):
        idx = np.array([i for i, h in enumerate(groups) if h == g])
        ok = idx[np.isfinite(v[idx])]
        if len(ok):
            out[ok] = v[ok] - v[ok].mean()
    return out.tolist()
