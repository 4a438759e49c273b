"""Statistics of the perturbation response (`atlas perturb`), torch-free: per-feature tests of perturbed against
control cells, target enrichment, exact intervals and verdicts. The data path is in perturb.py.

Definitions (the "Perturbation response" section of docs/interventions.md repeats them):
- effect = standardised mean difference of a cell-level summary (perturbed - control). Without batches: Cohen's d
  (pooled SD) with the large-sample interval of Hedges & Olkin (1985), se = sqrt((n1 + n0) / (n1 n0) + d^2 /
  (2 (n1 + n0))), and p from the two-sided Mann-Whitney U test (normal approximation with tie correction,
  scipy). With batches: the linear model y ~ perturbed + batch (batch as fixed effects, fitted by demeaning
  within batch); effect = coefficient / residual SD, interval from Student's t; p from van Elteren's
  batch-stratified Wilcoxon test (1960): per batch the rank sum of the perturbed cells against its expectation,
  weighted by 1 / (cells in the batch + 1), tie-corrected variance, normal approximation. With one batch it is
  the Mann-Whitney test without continuity correction.
- target enrichment: one-sided Fisher exact test (hypergeometric tail) of a TF's curated targets among the top
  genes of a score, universe = the genes tested; odds ratio with 0.5 added to every cell (always finite).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ..multitest import bh, clopper_pearson, haldane_odds

VERDICTS = ("specific", "not specific", "no signal")


@dataclass(frozen=True)
class PerturbConfig:
    min_cells: int = 20          # perturbations with fewer cells are skipped (listed); a dataset with none is refused
    alpha: float = 0.05          # BH level: responding features, DE genes, specific TFs
    level: float = 0.95          # interval level of the effects
    pseudo: int = 1              # pseudo-perturbations (random control subsets) per perturbation
    top_genes: int = 100         # top-scoring genes in which curated targets are counted
    min_targets: int = 5         # curated targets in the universe a TF needs to be tested
    min_expressed: float = 0.01  # share of analysed cells a gene is detected in, to enter the universe
    max_controls: int = 0        # 0: every control cell; else a seeded choice of this many
    on_target: float = 0.0      # > 0: keep cells (perturbed and their controls) with the perturbed gene's CP10k <=
                                 #   this quantile of the controls'
    keep: int = 10               # rows kept per perturbation and layer besides the responding ones (largest |effect|)
    seed: int = 0


def cohen_d(x1: np.ndarray, x0: np.ndarray, level: float = 0.95) -> dict:
    """Per column of (cells, features) arrays: d, its interval, the group means; tested where the pooled SD > 0."""
    n1, n0 = len(x1), len(x0)
    m1, m0 = x1.mean(0, dtype=np.float64), x0.mean(0, dtype=np.float64)
    v1, v0 = x1.var(0, ddof=1, dtype=np.float64), x0.var(0, ddof=1, dtype=np.float64)
    sd = np.sqrt(((n1 - 1) * v1 + (n0 - 1) * v0) / (n1 + n0 - 2))
    ok = sd > 1e-12
    d = np.where(ok, (m1 - m0) / np.where(ok, sd, 1.0), np.nan)
    se = np.sqrt((n1 + n0) / (n1 * n0) + d ** 2 / (2 * (n1 + n0)))
    z = sps.norm.ppf(0.5 + level / 2)
    return {"effect": d, "lo": d - z * se, "hi": d + z * se, "tested": ok, "mean_pert": m1, "mean_ctrl": m0}


def mann_whitney(x1: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Two-sided Mann-Whitney p per column (scipy, vectorised along axis 0); NaN where every value ties."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # columns where every value ties: p is NaN, and they stay untested
        return np.asarray(sps.mannwhitneyu(x1, x0, axis=0, alternative="two-sided", method="asymptotic").pvalue,
                          np.float64)


def batch_model(x1: np.ndarray, x0: np.ndarray, b1: np.ndarray, b0: np.ndarray, level: float = 0.95) -> dict:
    """y ~ perturbed + C(batch) per column, by Frisch-Waugh-Lovell: demean y and the indicator within batch, then
    one regression through the origin. df = n - batches - 1."""
    y = np.concatenate([x1, x0]).astype(np.float64)
    x = np.concatenate([np.ones(len(x1)), np.zeros(len(x0))])
    b = np.concatenate([b1, b0])
    levels = np.unique(b)
    y_t, x_t = y.copy(), x.copy()
    for level_ in levels:
        rows = b == level_
        y_t[rows] -= y[rows].mean(0)
        x_t[rows] -= x[rows].mean()
    sxx = float(x_t @ x_t)
    df = len(y) - len(levels) - 1
    out = {"mean_pert": x1.mean(0, dtype=np.float64), "mean_ctrl": x0.mean(0, dtype=np.float64)}
    if sxx <= 1e-12 or df < 1:
        nan = np.full(y.shape[1], np.nan)
        return {**out, "effect": nan, "lo": nan, "hi": nan, "p": nan, "tested": np.zeros(y.shape[1], bool)}
    beta = (x_t @ y_t) / sxx
    resid = y_t - np.outer(x_t, beta)
    s2 = (resid ** 2).sum(0) / df
    ok = s2 > 1e-24
    s = np.sqrt(np.where(ok, s2, 1.0))
    se = s / np.sqrt(sxx)
    t = beta / se
    half = sps.t.ppf(0.5 + level / 2, df) * se
    return {**out, "effect": np.where(ok, beta / s, np.nan), "lo": np.where(ok, (beta - half) / s, np.nan),
            "hi": np.where(ok, (beta + half) / s, np.nan), "p": np.where(ok, 2 * sps.t.sf(np.abs(t), df), np.nan),
            "tested": ok, "beta": beta, "se": se}


def van_elteren(x1: np.ndarray, x0: np.ndarray, b1: np.ndarray, b0: np.ndarray) -> np.ndarray:
    """Two-sided p per column of the batch-stratified Wilcoxon rank-sum test; NaN where every stratum ties."""
    y = np.concatenate([x1, x0]).astype(np.float64)
    pert = np.r_[np.ones(len(x1), bool), np.zeros(len(x0), bool)]
    b = np.concatenate([b1, b0])
    num, var = np.zeros(y.shape[1]), np.zeros(y.shape[1])
    for level in np.unique(b):
        rows = b == level
        n1, n = int(pert[rows].sum()), int(rows.sum())
        if n1 == 0 or n1 == n:
            continue  # a batch without both groups says nothing about the difference
        w = 1.0 / (n + 1)
        ys = y[rows]
        ranks = sps.rankdata(ys, axis=0)
        num += w * (ranks[pert[rows]].sum(0) - n1 * (n + 1) / 2)
        var += w * w * n1 * (n - n1) * (n + 1) / 12 * _tie_factor(ys)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = num / np.sqrt(var)
    return np.where(var > 0, 2 * sps.norm.sf(np.abs(z)), np.nan)


def _tie_factor(y: np.ndarray) -> np.ndarray:
    """1 - sum(t^3 - t) / (n^3 - n) per column (t = sizes of tied groups), as scipy.stats.tiecorrect."""
    n = y.shape[0]
    if n < 2:
        return np.zeros(y.shape[1])
    s = np.sort(y, axis=0)
    run = np.vstack([np.zeros((1, y.shape[1]), np.int64), np.cumsum(s[1:] != s[:-1], axis=0)])
    t = np.bincount((run * y.shape[1] + np.arange(y.shape[1])).ravel(), minlength=n * y.shape[1]).astype(np.float64)
    return 1.0 - (t ** 3 - t).reshape(n, -1).sum(0) / (n ** 3 - n)


def compare(x1: np.ndarray, x0: np.ndarray, b1=None, b0=None, level: float = 0.95) -> dict:
    """The per-feature test of perturbed (x1) against control (x0) cells, with batches when b1/b0 are given;
    adds BH q over the tested columns (NaN elsewhere)."""
    if b1 is None:
        r = cohen_d(x1, x0, level)
        r["p"] = np.where(r["tested"], mann_whitney(x1, x0), np.nan)
    else:
        r = batch_model(x1, x0, b1, b0, level)
        r["p"] = np.where(r["tested"], van_elteren(x1, x0, b1, b0), np.nan)
    r["tested"] = r["tested"] & np.isfinite(r["p"])
    r["q"] = np.full(len(r["p"]), np.nan)
    r["q"][r["tested"]] = bh(r["p"][r["tested"]])
    return r


def enrichment(top: np.ndarray, targets: np.ndarray) -> tuple[float, float, int]:
    """(odds ratio, one-sided p, overlap) of `targets` among `top`, both boolean over the same universe:
    P(X >= overlap) for X ~ Hypergeometric(universe, targets, top) = scipy's fisher_exact(alternative='greater')."""
    top, targets = np.asarray(top, bool), np.asarray(targets, bool)
    N, n, K = top.size, int(top.sum()), int(targets.sum())
    k = int((top & targets).sum())
    p = float(sps.hypergeom.sf(k - 1, N, K, n)) if n and K else 1.0
    return float(haldane_odds(k, n, K, N)), min(p, 1.0), k


def top_set(scores: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the n highest positive scores (ties by position, so the choice is deterministic)."""
    scores = np.asarray(scores, np.float64)
    order = np.lexsort((np.arange(scores.size), -scores))
    order = order[scores[order] > 0][:n]
    mask = np.zeros(scores.size, bool)
    mask[order] = True
    return mask


def fdr_with_missing(p: list) -> list:
    """BH q over a family in which a missing p (nothing could be tested) counts as p = 1; missing q stay missing."""
    vals = np.array([1.0 if v is None else v for v in p], np.float64)
    q = bh(vals) if vals.size else vals
    return [None if v is None else float(w) for v, w in zip(p, q)]


def verdict(q: float | None, ceiling_q: float | None, alpha: float = 0.05) -> str:
    """'specific': q < alpha; 'not specific': not, while expression finds the targets (ceiling_q < alpha);
    'no signal': neither (even expression shows no target enrichment)."""
    if q is not None and q < alpha:
        return "specific"
    if ceiling_q is not None and ceiling_q < alpha:
        return "not specific"
    return "no signal"


def proportion(k: int, n: int, level: float = 0.95) -> dict:
    """k / n with its Clopper-Pearson (exact) interval; empty when n = 0."""
    lo, hi = clopper_pearson(k, n, level)
    return {"fraction": k / n if n else None, "ci_lo": lo, "ci_hi": hi}


def kd_efficiency(expr_pert: np.ndarray, expr_ctrl: np.ndarray) -> float | None:
    """1 - mean normalised expression of the perturbed gene in perturbed cells / in controls (None if absent)."""
    c = float(np.mean(expr_ctrl)) if len(expr_ctrl) else 0.0
    return None if c <= 0 else 1.0 - float(np.mean(expr_pert)) / c
