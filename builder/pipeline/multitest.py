"""Multiple testing and effect sizes shared by every stage: Benjamini-Hochberg, finite odds ratios, Poisson tails,
exact intervals of proportions."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, poisson


def bh(p: np.ndarray, m: int | None = None) -> np.ndarray:
    """Benjamini-Hochberg q-values of `p` in a family of m tests, where every test left out has p >= max(p)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size if m is None else m
    if m < p.size:
        raise ValueError("family smaller than the tests given")
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    q = p[order] * m / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1.0)
    return out


def haldane_odds(k, n, K, N):
    """Odds ratio of the 2x2 table with 0.5 added to every cell, so it stays finite."""
    a, b, c = k + 0.5, n - k + 0.5, K - k + 0.5
    d = N - K - n + k + 0.5
    return a * d / (b * c)


def poisson_excess_p(count: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """P(N >= count) for N ~ Poisson(expected); 0 where nothing was expected but something was seen."""
    count, expected = np.asarray(count, np.float64), np.asarray(expected, np.float64)
    return np.where(expected > 0, poisson.sf(count - 1, np.maximum(expected, 1e-300)), (count <= 0).astype(float))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """The exact (Clopper-Pearson) interval of the proportion k / n; (None, None) when n = 0."""
    if n == 0:
        return None, None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)
