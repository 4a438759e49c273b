"""Multiple testing and effect sizes shared by the stages: Benjamini-Hochberg q-values, the Haldane odds ratio."""

from __future__ import annotations

import numpy as np


def bh(p: np.ndarray, m: int) -> np.ndarray:
    """Benjamini-Hochberg q-values of `p` in a family of m tests, where every test left out has p >= max(p)."""
    p = np.asarray(p, dtype=np.float64)
    if m < p.size:
        raise ValueError("family smaller than the tests given")
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
