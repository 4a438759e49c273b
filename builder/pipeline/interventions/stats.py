"""Statistics of interventions, torch-free: rank enrichment (AUC), ratio bootstrap over cells, tests against nulls,
and the choice of which features to patch. The patching itself is in patching.py.

Definitions (docs/interventions.md repeats them):
- per-gene effect of an intervention = sum over the patched cells' masked positions of that gene of the change
  in the readout / number of such positions (a ratio estimator; cells are the unit of resampling);
- specificity = AUC of the feature's top genes (from the training cells) among all genes with a measured effect,
  genes scored by |effect|: the probability that a top gene is more affected than another gene (0.5 = none);
- the test compares the specificity with the same AUC of the feature's genes in the profiles of its nulls
  (frequency-matched patched features, random directions of the same norm at the same positions): z against
  their mean and SD, p from Student's t for a new observation (df = nulls - 1), and an empirical p.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ..multitest import bh

__all__ = ["InterventionsConfig", "auc", "bh", "null_test", "pick_features", "matched_nulls", "ratio_bootstrap"]


@dataclass(frozen=True)
class InterventionsConfig:
    enabled: bool = False       # --interventions; needs a checkpoint with its prediction head
    max_cells: int = 200        # held-out cells patched per layer (a seeded choice when there are more)
    draws: int = 4              # mask draws per cell
    mask_rate: float = 0.15     # share of gene tokens masked per draw (Geneformer's and BERT's pretraining rate)
    n_top: int = 16             # features patched per layer: the largest |attribution| ...
    n_random: int = 16          # ... plus these, evenly across frequency quartiles
    null_features: int = 16     # frequency-matched patched features per tested feature (null a)
    null_directions: int = 4    # random directions of the same norm at the same positions (null b)
    min_cells: int = 5          # patched cells a feature must fire in to be sampled
    min_genes: int = 3          # of its top genes with a measured effect, for a specificity
    bootstrap: int = 200        # resamples of cells for the intervals
    level: float = 0.95         # interval level
    alpha: float = 0.05         # BH level at which a feature's specificity counts as beyond its nulls
    effects_top: int = 20       # most affected genes kept per feature (its top genes are kept as well)
    # A gene masked in one or two cells can top the list by chance (a ratio of few positions); the list, its ranks
    # and the kept top genes only take genes measured in this many patched cells. The specificity still uses all.
    min_gene_cells: int = 5
    batch: int = 8              # interventions run together (x draws sequences per forward)



def auc(in_set: np.ndarray, scores: np.ndarray) -> float | None:
    """AUC of the genes in `in_set` against the others by `scores` (ties count one half): U / (n1 n0)."""
    in_set = np.asarray(in_set, bool)
    n1, n0 = int(in_set.sum()), int((~in_set).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = sps.rankdata(scores)
    u = ranks[in_set].sum() - n1 * (n1 + 1) / 2
    return float(u / (n1 * n0))


def ratio_bootstrap(S: np.ndarray, N: np.ndarray, n_boot: int, seed, level: float = 0.95):
    """Ratio estimates sum(S) / sum(N) per column (genes) with percentile intervals from resampling rows (cells).

    S, N: (cells, columns) sums and counts. Returns (estimate, lo, hi), NaN where a column has no count.
    Resamples are multinomial weights of the cells, so every column uses the same resampled cells.
    """
    S, N = np.asarray(S, np.float64), np.asarray(N, np.float64)
    n = S.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        est = S.sum(0) / N.sum(0)
        if n == 0 or n_boot <= 0:
            nan = np.full(S.shape[1], np.nan)
            return est, nan, nan.copy()
        w = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        boot = (w @ S) / (w @ N)  # (n_boot, columns); NaN where a resample holds no count of the column
    a = (1 - level) / 2
    lo = np.nanquantile(boot, a, axis=0) if boot.size else np.full(S.shape[1], np.nan)
    hi = np.nanquantile(boot, 1 - a, axis=0) if boot.size else np.full(S.shape[1], np.nan)
    return est, lo, hi


def null_test(observed: float | None, nulls) -> dict:
    """Observed specificity against its null values: mean, SD, z, t-based p (one-sided, greater) and empirical p."""
    x = np.asarray([v for v in nulls if v is not None and np.isfinite(v)], np.float64)
    out = {"null_mean": None, "null_sd": None, "z": None, "p": None, "p_empirical": None, "n_null": int(x.size)}
    if observed is None or x.size < 2:
        return out
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    out.update(null_mean=mean, null_sd=sd, p_empirical=float((1 + (x >= observed).sum()) / (1 + x.size)))
    if sd > 0:
        out["z"] = (observed - mean) / sd
        # A new draw from the null population: (obs - mean) / (sd sqrt(1 + 1/n)) ~ t(n - 1).
        out["p"] = float(sps.t.sf((observed - mean) / (sd * np.sqrt(1 + 1 / x.size)), x.size - 1))
    else:
        out["p"] = out["p_empirical"]
    return out


def pick_features(attribution: np.ndarray, cells_fired: np.ndarray, frequency: np.ndarray, n_top: int,
                  n_random: int, min_cells: int, seed, strata: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(features, why) to patch: the n_top eligible features of largest |attribution|, then n_random drawn from
    the rest evenly across `strata` quantile bins of log frequency. Eligible: fired in >= min_cells patched cells.
    why: 0 = top by attribution, 1 = stratified random."""
    eligible = np.flatnonzero((cells_fired >= min_cells) & (frequency > 0))
    order = eligible[np.lexsort((eligible, -np.abs(attribution[eligible])))]
    top = order[:n_top]
    rest = np.setdiff1d(eligible, top)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    if rest.size and n_random > 0:
        logf = np.log10(frequency[rest])
        edges = np.quantile(logf, np.linspace(0, 1, strata + 1)[1:-1]) if rest.size > strata else np.zeros(0)
        bins = np.searchsorted(edges, logf, side="right")
        per = [rest[bins == b] for b in range(strata)]
        quota = [n_random // strata + (b < n_random % strata) for b in range(strata)]
        for b in range(strata):
            take = min(quota[b], per[b].size)
            picked += sorted(rng.choice(per[b], take, replace=False).tolist())
        left = np.setdiff1d(rest, picked)  # strata smaller than their quota: fill from the rest
        short = min(n_random - len(picked), left.size)
        if short > 0:
            picked += sorted(rng.choice(left, short, replace=False).tolist())
    feats = np.concatenate([top, np.asarray(picked, np.int64)]).astype(np.int64)
    why = np.concatenate([np.zeros(top.size, np.int8), np.ones(len(picked), np.int8)])
    return feats, why


def matched_nulls(features: np.ndarray, frequency: np.ndarray, n_null: int) -> dict[int, np.ndarray]:
    """For each patched feature, the n_null other patched features nearest in log frequency (ties by id)."""
    features = np.asarray(features, np.int64)
    logf = np.log10(np.maximum(frequency[features], 1e-12))
    out = {}
    for j, f in enumerate(features):
        d = np.abs(logf - logf[j])
        d[j] = np.inf
        order = np.lexsort((features, d))
        out[int(f)] = features[order[: min(n_null, features.size - 1)]]
    return out


def fdr(p: list) -> list:
    """BH q over the non-missing p-values (missing stay missing)."""
    vals = np.array([np.nan if v is None else v for v in p], np.float64)
    ok = np.isfinite(vals)
    q = np.full(vals.size, np.nan)
    q[ok] = bh(vals[ok])
    return [None if not np.isfinite(v) else float(v) for v in q]
