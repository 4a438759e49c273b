"""The tests of `atlas link` (definitions in docs/statistics.md "Links"), each checked against scipy or statsmodels
in tests/test_link.py.

- shuffle_p: one-sided p of the within-cell-type shuffle: the upper tail at z = (S - E) / sqrt(V) of the Pearson
  type III (shifted gamma) distribution with the shuffle's exact mean, variance and skewness (correlate.py), as
  Mielke and Berry's moment approximation of permutation tests; a normal tail where the skewness is negative (the
  shifted gamma would end within reach). Bonferroni-adjusted over the partners the best one was chosen from, so the
  p of a chosen partner stays valid whatever rule chose it: P(min over m candidates of p <= t / m) <= t.
- williams: Williams' t (1959; Steiger 1980, eq. 7) for two correlations sharing one variable, r12 = corr(x, y)
  against r13 = corr(x, y'), with r23 = corr(y, y'): df = n - 3, one-sided (r12 > r13).
- gene_overlap: the two top-gene lists inside a shared universe; p = P(X >= overlap) for X hypergeometric (the
  one-sided Fisher exact test), odds ratio = the 2x2 table's sample odds ratio (scipy's fisher_exact statistic).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def shuffle_p(z: np.ndarray, skew: np.ndarray, n_candidates: np.ndarray | int) -> np.ndarray:
    """P(Z >= z) for Z standardised Pearson type III with this skewness (normal for skew <= 0), times the candidates
    (at most 1); 1 where z is undefined (NaN)."""
    z, skew = np.asarray(z, np.float64), np.asarray(skew, np.float64)
    ok = ~np.isnan(z)
    raw = np.ones(z.shape)
    raw[ok] = sps.pearson3.sf(z[ok], np.maximum(np.nan_to_num(skew[ok]), 0.0))
    return np.minimum(1.0, raw * np.asarray(n_candidates, np.float64))


def williams(r12: np.ndarray, r13: np.ndarray, r23: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, one-sided p of r12 > r13) of Williams' test; p is 1 where t is undefined."""
    r12, r13, r23 = (np.asarray(v, np.float64) for v in (r12, r13, r23))
    det = 1 - r12 ** 2 - r13 ** 2 - r23 ** 2 + 2 * r12 * r13 * r23   # |R| of the 3 x 3 correlation matrix
    rbar = (r12 + r13) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (r12 - r13) * np.sqrt((n - 1) * (1 + r23)
                                  / (2 * (n - 1) / (n - 3) * det + rbar ** 2 * (1 - r23) ** 3))
    p = np.where(np.isfinite(t), sps.t.sf(np.nan_to_num(t), n - 3), 1.0)
    return t, p


def gene_overlap(a: list[str], b: list[str], universe: set[str]) -> dict:
    """The shared genes of two top lists (a's order), inside `universe`, with the hypergeometric p and odds ratio."""
    la = [g for g in dict.fromkeys(a) if g in universe]
    lb = {g for g in b if g in universe}
    shared = [g for g in la if g in lb]
    return {"overlap": len(shared), "genes": shared, "universe": len(universe), "n_a": len(la), "n_b": len(lb)}


def overlap_tests(k: np.ndarray, M: np.ndarray, n: np.ndarray, N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, odds ratio) of overlaps k of lists of n and N genes in universes of M: p = P(X >= k), X ~
    Hypergeom(M, n, N); odds = k (M - n - N + k) / ((n - k) (N - k)), inf when only the denominator is 0, NaN
    when both are."""
    k, M, n, N = (np.asarray(v, np.float64) for v in (k, M, n, N))
    p = np.where((n > 0) & (N > 0), sps.hypergeom.sf(k - 1, M, n, N), 1.0)
    num, den = k * (M - n - N + k), (n - k) * (N - k)
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num > 0, np.inf, np.nan))
    return np.minimum(p, 1.0), odds
