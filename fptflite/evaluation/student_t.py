"""The confidence interval of a mean over a few independent runs (Student's t).

Training seeds are expensive: a study has two or three per variant. A percentile bootstrap
over three values only brackets them (every resample mean lies between their min and max),
so the paired differences of a seeded study use the textbook paired t interval instead:
mean ± t(1 - (1 - confidence) / 2, n - 1) * sd / sqrt(n). The t quantile is found by
bisection on the t distribution's CDF, integrated numerically from its density (numpy only;
matches the printed tables to 1e-3, tested).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_CONFIDENCE = 0.95  # of every interval the evaluation reports (bootstrap too)
_GRID_POINTS = 20001  # Simpson's rule points for the CDF integral (odd)


def _density(x: np.ndarray, df: int) -> np.ndarray:
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return norm * (1.0 + x * x / df) ** (-(df + 1) / 2)


def cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    grid = np.linspace(0.0, abs(x), _GRID_POINTS)
    y = _density(grid, df)
    h = grid[1] - grid[0]
    half = h / 3.0 * (y[0] + y[-1] + 4.0 * y[1:-1:2].sum() + 2.0 * y[2:-1:2].sum())
    return 0.5 + math.copysign(half, x)


def quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 <= p < 1) of Student's t with ``df`` degrees of freedom."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"quantile p must be in [0.5, 1), got {p}")
    low, high = 0.0, 1.0
    while cdf(high, df) < p:
        high *= 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


def mean_interval(values, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The two-sided t interval of the mean of ``values`` [N] (N >= 2 independent runs)."""
    a = np.asarray(values, np.float64).ravel()
    if len(a) < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {len(a)}")
    half = quantile(1.0 - (1.0 - confidence) / 2.0, len(a) - 1) * a.std(ddof=1) / math.sqrt(
        len(a))
    return float(a.mean() - half), float(a.mean() + half)
