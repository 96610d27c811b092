"""Agreement between predicted scores and ground truth: SRCC, KRCC and PLCC (after a 4-parameter logistic fit).

These are the numbers IQA/IAA papers report (UniPercept's Table 1 included). Rank correlations are scale-free;
PLCC is computed after mapping the predictions through the usual monotonic logistic
``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` fitted to the ground truth (VQEG practice), which
makes it insensitive to a monotonic nonlinearity between the two scales. numpy only; the fit uses scipy when
it is installed (``pip install scipy``), else PLCC falls back to the plain linear correlation and says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def _as_pair(predicted, truth) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(predicted, dtype=np.float64).ravel()
    y = np.asarray(truth, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predicted has {x.size} values, ground truth {y.size}")
    if x.size < 2:
        raise ValueError("need at least 2 scored images to correlate")
    return x, y


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def rankdata(values) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (as scipy.stats.rankdata's default)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, values.size])
    average = first + (counts + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = average[group]
    return ranks


def srcc(predicted, truth) -> float:
    """Spearman rank-order correlation."""
    x, y = _as_pair(predicted, truth)
    return _pearson(rankdata(x), rankdata(y))


def krcc(predicted, truth, chunk: int = 2048) -> float:
    """Kendall rank correlation, tau-b (ties accounted for), in O(n^2 / chunk) numpy passes."""
    x, y = _as_pair(predicted, truth)
    n = x.size
    concordant_minus_discordant = 0.0
    ties_x = ties_y = 0.0
    for start in range(0, n, chunk):
        xi, yi = x[start : start + chunk, None], y[start : start + chunk, None]
        dx, dy = np.sign(xi - x[None, :]), np.sign(yi - y[None, :])
        concordant_minus_discordant += float((dx * dy).sum())
        ties_x += float((dx == 0).sum())
        ties_y += float((dy == 0).sum())
    # Each unordered pair was counted twice and every element tied with itself once.
    pairs = n * (n - 1) / 2.0
    tied_x = (ties_x - n) / 2.0
    tied_y = (ties_y - n) / 2.0
    denominator = np.sqrt((pairs - tied_x) * (pairs - tied_y))
    return float(concordant_minus_discordant / 2.0 / denominator) if denominator > 0 else float("nan")


def logistic4(x, b1: float, b2: float, b3: float, b4: float):
    """The 4-parameter logistic mapping used before PLCC."""
    return (b1 - b2) / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) - b3) / abs(b4))) + b2


def _logistic4_jacobian(x, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    width = abs(b4)
    s = 1.0 / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) - b3) / width))
    slope = (b1 - b2) * s * (1.0 - s)
    return np.stack([s, 1.0 - s, -slope / width, -slope * (x - b3) / width**2 * np.sign(b4)], axis=1)


def fit_logistic(predicted, truth) -> tuple[float, float, float, float] | None:
    """Least-squares fit of `logistic4` from predictions to ground truth; None if scipy is absent or it fails."""
    x, y = _as_pair(predicted, truth)
    if x.size < 4:
        return None  # four parameters need at least four points (scipy raises TypeError below that)
    try:
        from scipy.optimize import curve_fit  # optional: only this fit needs scipy
    except ImportError:
        return None
    # Fit on standardised predictions (well conditioned, analytic Jacobian), then map back to x's scale.
    centre, spread = float(x.mean()), float(x.std()) or 1.0
    z = (x - centre) / spread
    initial = [float(y.max()), float(y.min()), 0.0, 1.0]
    try:
        with np.errstate(over="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "covariance could not be estimated" is irrelevant here
            (b1, b2, b3, b4), _ = curve_fit(logistic4, z, y, p0=initial, jac=_logistic4_jacobian, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return float(b1), float(b2), centre + spread * float(b3), spread * abs(float(b4))


def plcc(predicted, truth, fit: bool = True) -> float:
    """Pearson linear correlation, after the 4-parameter logistic fit when `fit` (and the fit succeeds)."""
    x, y = _as_pair(predicted, truth)
    parameters = fit_logistic(x, y) if fit else None
    if parameters is not None:
        fitted = logistic4(x, *parameters)
        if np.isfinite(fitted).all() and fitted.std() > 0:
            return _pearson(fitted, y)
    return _pearson(x, y)


@dataclass(frozen=True)
class Agreement:
    """SRCC / KRCC / PLCC of one set of predictions against ground truth."""

    count: int
    srcc: float
    krcc: float
    plcc: float
    logistic_fit: bool  # False: PLCC is the plain linear correlation (no scipy, or the fit failed)

    def as_dict(self) -> dict:
        return {"count": self.count, "srcc": self.srcc, "krcc": self.krcc, "plcc": self.plcc, "logistic_fit": self.logistic_fit}


def agreement(predicted, truth) -> Agreement:
    """All three correlations for paired predictions and ground-truth scores."""
    x, y = _as_pair(predicted, truth)
    parameters = fit_logistic(x, y)
    fitted = logistic4(x, *parameters) if parameters is not None else None
    used_fit = fitted is not None and bool(np.isfinite(fitted).all() and fitted.std() > 0)
    linear = _pearson(fitted, y) if fitted is not None and used_fit else _pearson(x, y)
    return Agreement(int(x.size), srcc(x, y), krcc(x, y), linear, used_fit)
