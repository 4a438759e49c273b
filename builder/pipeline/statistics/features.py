"""Feature statistics as map + merge over code shards: pure, torch-free, vectorized (no per-token loops).

`map_layer(codes of one shard)` returns a small partial: per-feature fire counts, sums, maxima and a sparse
histogram on a fixed log2 grid; sparse feature x gene sums, sums of squares and firing counts; tokens per gene;
the shard's top cells per feature (a shard holds whole cells, so a cell's activation is complete in it);
per (feature, cell type) histograms of the per-cell activation on a finer log2 grid; per (feature, donor,
type) sums; and the within-layer co-occurrence counts (`map_pair` gives the counts across two layers).
`merge` adds partials in shard order, so the order in which shards finish never matters. `finalize` turns
the merged sums into the tables. Memory is bounded by a shard plus features x genes and features x features
matrices, which do not grow with the number of cells.

Definitions (docs/statistics.md repeats them):
- a feature fires on a token when it is among the token's top k with a value > 0;
- top genes rank by a lower confidence bound of the mean activation over the gene's tokens (zeros included):
  score = mean - z x sd / sqrt(n_tokens), z = `lcb_z` (1.645, one-sided 95%); a gene needs `min_support`
  firing tokens; ties by support, then token id; ranks start at 1;
- per-cell activation a(f, c) = sum of f over the cell's tokens / the cell's gene tokens;
- cell types: one-sided Mann-Whitney U of a(f, type) against a(f, rest) on a(f, c) quantized to 1/32 octave
  (zero its own lowest value), with tie and continuity correction as scipy's asymptotic method;
  AUC = U / (n1 n2); BH over all features x types; a pair passes at q <= alpha and AUC >= auc_floor (and,
  with donors, donor-level q <= alpha).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats as sps

from . import kernels
from ..codes import Codes, fired
from ..multitest import bh

LOG2_LO, LOG2_HI = -24, 16          # the fixed grid covers 2^-24 .. 2^16; values outside go to the end bins
FEATURE_BINS_PER_OCTAVE = 8         # per-feature activation histograms
CELL_BINS_PER_OCTAVE = 32           # per-cell activations in the cell-type test
PAIR_CHUNK = 65536                  # tokens per co-occurrence chunk read at a time


@dataclass(frozen=True)
class StatsConfig:
    top_genes: int = 20
    min_support: int = 5        # firing tokens a gene needs to rank among a feature's top genes
    lcb_z: float = 1.645        # one-sided 95% lower confidence bound of the mean
    top_cells: int = 10
    hist_bins: int = 24         # displayed histogram bins, re-binned from the fixed grid
    alpha: float = 0.05         # BH level of the cell-type tests
    auc_floor: float = 0.6      # with 20,000 cells an AUC of 0.513 is "significant"; a pair also needs this


@dataclass(frozen=True)
class ShardCells:
    """The cells of one shard: global ids start..stop-1, their gene tokens, type and donor codes (-1: none)."""

    start: int
    n_tokens: np.ndarray
    type_code: np.ndarray | None = None
    n_types: int = 0
    donor_code: np.ndarray | None = None
    n_donors: int = 0


def log_bin(v: np.ndarray, per_octave: int) -> np.ndarray:
    n = (LOG2_HI - LOG2_LO) * per_octave
    with np.errstate(divide="ignore"):
        b = np.floor(np.log2(np.asarray(v, np.float64)) * per_octave).astype(np.int64) - LOG2_LO * per_octave
    return np.clip(b, 0, n - 1)


def bin_edges(per_octave: int) -> np.ndarray:
    return 2.0 ** (np.arange((LOG2_HI - LOG2_LO) * per_octave + 1) / per_octave + LOG2_LO)


def _sum_by_key(key: np.ndarray, weights: np.ndarray | None = None):
    """(unique keys, counts or weighted sums), keys ascending; sums run in input order (reproducible)."""
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq, np.bincount(inv, weights=weights, minlength=uniq.size)


def per_cell(c: Codes, cells: ShardCells, n_features: int) -> sp.csr_matrix:
    """features x shard cells: a(f, c) for the cells of the shard."""
    rows, f, v = fired(c)
    local = np.asarray(c.cell, np.int64)[rows] - cells.start
    n = len(cells.n_tokens)
    m = sp.csr_matrix((v.astype(np.float64), (f, local)), shape=(n_features, n))
    m.sum_duplicates()
    return sp.csr_matrix(m.multiply(1.0 / np.maximum(cells.n_tokens, 1)[None, :]))


def top_per_row(m: sp.csr_matrix, n: int):
    """(row, col, value) of the n largest entries of every row; ties by the smaller column."""
    m = m.tocoo()
    order = np.lexsort((m.col, -m.data, m.row))
    row, col, val = m.row[order].astype(np.int64), m.col[order].astype(np.int64), m.data[order]
    rank = np.arange(row.size) - np.searchsorted(row, row, side="left")
    keep = rank < n
    return row[keep], col[keep], val[keep]


def map_layer(c: Codes, cells: ShardCells, n_features: int, n_genes: int, top_cells: int) -> dict:
    """The partial statistics of one layer of one shard."""
    rows, f, v = fired(c)
    gene = np.asarray(c.gene, np.int64)
    fire = np.bincount(f, minlength=n_features)
    vmax = np.zeros(n_features, np.float32)
    np.maximum.at(vmax, f, v)
    nb = (LOG2_HI - LOG2_LO) * FEATURE_BINS_PER_OCTAVE
    hist = np.bincount(f * nb + log_bin(v, FEATURE_BINS_PER_OCTAVE), minlength=n_features * nb)  # dense: F x 320
    hist_key = np.flatnonzero(hist)
    v64 = v.astype(np.float64)
    fg_key, fg_n, fg_sum, fg_sq = kernels.feature_gene_sums(np.asarray(c.idx), np.asarray(c.val), gene, n_features, n_genes)
    gene_ids, gene_n = _sum_by_key(gene)
    out = {"tokens": np.int64(len(gene)), "fire": fire, "sum": np.bincount(f, v64, n_features), "max": vmax,
           "hist_key": hist_key, "hist_n": hist[hist_key].astype(np.int64), "fg_key": fg_key, "fg_n": fg_n,
           "fg_sum": fg_sum, "fg_sq": fg_sq, "gene_ids": gene_ids, "gene_n": gene_n.astype(np.int64)}
    a = per_cell(c, cells, n_features)
    tf, tc, tv = top_per_row(a, top_cells)
    out.update(top_f=tf, top_cell=tc + cells.start, top_val=tv)
    if cells.type_code is not None:
        out.update(_celltype_partial(a, cells))
    out.update(zip(("co_key", "co_n"), cooccurrence(c, c, n_features, n_features, upper=True)))
    return out


def _celltype_partial(a: sp.csr_matrix, cells: ShardCells) -> dict:
    coo = a.tocoo()
    f, cell, val = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    t = cells.type_code[cell]
    ok = t >= 0
    nc = (LOG2_HI - LOG2_LO) * CELL_BINS_PER_OCTAVE
    key = (f[ok] * cells.n_types + t[ok]) * nc + log_bin(val[ok], CELL_BINS_PER_OCTAVE)
    ct_key, ct_n = _sum_by_key(key)
    out = {"ct_key": ct_key, "ct_n": ct_n.astype(np.int64)}
    if cells.donor_code is not None:
        d = cells.donor_code[cell]
        ok &= d >= 0
        dn_key, dn_sum = _sum_by_key((f[ok] * cells.n_donors + d[ok]) * cells.n_types + t[ok], val[ok])
        out.update(dn_key=dn_key, dn_sum=dn_sum)
    return out


def cooccurrence(ca: Codes, cb: Codes, fa: int, fb: int, upper: bool) -> tuple[np.ndarray, np.ndarray]:
    """(key = i * fb + j, count) of tokens on which feature i of a and j of b both fire (i < j when upper)."""
    # int32 counts: half the memory of int64, so more of the table stays in cache; a shard has < 2^31 tokens.
    assert ca.idx.shape[0] < 2**31
    acc = np.zeros(fa * fb, np.int32)
    for s in range(0, ca.idx.shape[0], PAIR_CHUNK):  # chunks: codes may be memory-mapped
        xa, va = np.ascontiguousarray(ca.idx[s:s + PAIR_CHUNK]), np.ascontiguousarray(ca.val[s:s + PAIR_CHUNK])
        if upper:
            kernels.cooccur_upper(xa, va, fa, acc)
        else:
            xb, vb = np.ascontiguousarray(cb.idx[s:s + PAIR_CHUNK]), np.ascontiguousarray(cb.val[s:s + PAIR_CHUNK])
            kernels.cooccur_pair(xa, va, xb, vb, fb, acc)
    key = np.flatnonzero(acc)
    return key, acc[key].astype(np.int64)


def map_pair(ca: Codes, cb: Codes, fa: int, fb: int) -> dict:
    key, n = cooccurrence(ca, cb, fa, fb, upper=False)
    return {"cx_key": key, "cx_n": n}


# Merge: partials added in shard order.

ADD = ("tokens", "fire", "sum")
SPARSE = {"hist": ("hist_key", ("hist_n",)), "fg": ("fg_key", ("fg_n", "fg_sum", "fg_sq")),
          "gene": ("gene_ids", ("gene_n",)), "ct": ("ct_key", ("ct_n",)), "dn": ("dn_key", ("dn_sum",)),
          "co": ("co_key", ("co_n",)), "cx": ("cx_key", ("cx_n",))}


def _merge_sparse(acc: dict, part: dict, key: str, values: tuple[str, ...]) -> None:
    """Add a partial's sparse entries (keys ascending, unique) into acc's: one linear merge of two sorted runs;
    an entry in both sums acc's value and then part's (the same bytes whatever the shard sizes before)."""
    if key not in part:
        return
    if key not in acc:
        acc[key] = np.asarray(part[key])
        for v in values:
            acc[v] = np.asarray(part[v]).copy()
        return
    keys = np.concatenate([acc[key], part[key]])
    order = np.argsort(keys, kind="stable")  # timsort: two sorted runs merge in linear time
    keys = keys[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else np.zeros(0, np.int64)
    for v in values:
        vals = np.concatenate([acc[v], np.asarray(part[v], acc[v].dtype)])[order]
        acc[v] = np.add.reduceat(vals, first) if vals.size else vals
    acc[key] = keys[first]


def merge(partials, top_cells: int) -> dict:
    """Merge an iterable of partials (in shard order) into one."""
    acc: dict = {}
    for part in partials:
        for k in ADD:
            if k in part:
                acc[k] = acc[k] + part[k] if k in acc else np.asarray(part[k]).copy()
        if "max" in part:
            acc["max"] = np.maximum(acc["max"], part["max"]) if "max" in acc else np.asarray(part["max"]).copy()
        for key, values in SPARSE.values():
            _merge_sparse(acc, part, key, values)
        if "top_f" in part:
            f = np.concatenate([acc.get("top_f", np.zeros(0, np.int64)), part["top_f"]])
            c = np.concatenate([acc.get("top_cell", np.zeros(0, np.int64)), part["top_cell"]])
            v = np.concatenate([acc.get("top_val", np.zeros(0)), part["top_val"]])
            m = sp.coo_matrix((v, (f, c)), shape=(int(f.max(initial=0)) + 1, int(c.max(initial=0)) + 1))
            acc["top_f"], acc["top_cell"], acc["top_val"] = top_per_row(m, top_cells)
    return acc


# Finalize: merged sums -> tables.

def feature_table(m: dict, n_features: int) -> dict:
    T, fire, total = int(m["tokens"]), m["fire"], m["sum"]
    with np.errstate(divide="ignore", invalid="ignore"):
        when_active = np.where(fire > 0, total / np.maximum(fire, 1), 0.0)
    return {"feature": np.arange(n_features), "fire_count": fire.astype(np.int64), "frequency": fire / max(T, 1),
            "mean_activation": total / max(T, 1), "mean_when_active": when_active,
            "max_activation": m["max"].astype(np.float64), "alive": fire > 0}


def histograms(m: dict, n_features: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts[features, bins]): the fixed grid's occupied range re-binned into `bins` groups of fine bins."""
    nb = (LOG2_HI - LOG2_LO) * FEATURE_BINS_PER_OCTAVE
    f, b = np.divmod(m["hist_key"], nb)
    if b.size == 0:
        return np.zeros(bins + 1), np.zeros((n_features, bins), np.int64)
    lo, hi = int(b.min()), int(b.max()) + 1
    width = -(-(hi - lo) // bins)  # fine bins per displayed bin
    edges = bin_edges(FEATURE_BINS_PER_OCTAVE)[lo + np.arange(bins + 1) * width]
    counts = np.zeros((n_features, bins), np.int64)
    np.add.at(counts, (f, (b - lo) // width), m["hist_n"])
    return edges, counts


def top_genes(m: dict, n_genes: int, cfg: StatsConfig) -> dict:
    """Top genes by the lower confidence bound of the mean activation over the gene's tokens."""
    g, f = np.divmod(m["fg_key"], m["fire"].size)  # keys are gene-major: g * n_features + f
    gene_tokens = np.zeros(n_genes, np.int64)
    gene_tokens[m["gene_ids"]] = m["gene_n"]
    n = gene_tokens[g].astype(np.float64)
    mean = m["fg_sum"] / n
    var = np.maximum(m["fg_sq"] / n - mean ** 2, 0) * n / np.maximum(n - 1, 1)
    score = mean - cfg.lcb_z * np.sqrt(var / n)
    ok = m["fg_n"] >= cfg.min_support
    f, g, mean, score, support = f[ok], g[ok], mean[ok], score[ok], m["fg_n"][ok]
    order = np.lexsort((g, -support, -score, f))
    f, g, mean, score, support = f[order], g[order], mean[order], score[order], support[order]
    rank = np.arange(f.size) - np.searchsorted(f, f, side="left") + 1
    keep = rank <= cfg.top_genes
    return {"feature": f[keep], "rank": rank[keep], "token_id": g[keep], "score": score[keep],
            "activation": mean[keep], "support": support[keep], "gene_tokens": gene_tokens[g[keep]]}


def celltype_tests(m: dict, n_features: int, labels: list[str], type_cells: np.ndarray, top: dict,
                   cfg: StatsConfig, donors: dict | None = None) -> dict:
    """Every feature x type: U, AUC, p, q, passes, n_cells, n_firing, n_top (see the module docstring)."""
    T = len(labels)
    N = int(type_cells.sum())
    nc = (LOG2_HI - LOG2_LO) * CELL_BINS_PER_OCTAVE
    ft, b = np.divmod(m.get("ct_key", np.zeros(0, np.int64)), nc)
    f, t = np.divmod(ft, T)
    h = m.get("ct_n", np.zeros(0, np.int64)).astype(np.float64)
    # Per feature: counts per bin over all types (H), sorted by (feature, bin), and cumulative counts below.
    fb = f * nc + b
    Hk, H = _sum_by_key(fb, h)
    Hf = Hk // nc
    firing = np.zeros((n_features, T))
    np.add.at(firing, (f, t), h)
    fire_all = firing.sum(axis=1)
    Z = N - fire_all                                    # cells where the feature is 0: the lowest value
    cumH = np.cumsum(H) - H                             # within-feature cumulative count below each bin
    cumH -= (np.cumsum(H) - H)[np.searchsorted(Hf, Hf, side="left")]
    below_all = cumH[np.searchsorted(Hk, fb)]          # cells of any type below this entry's bin (nonzero)
    # Cells of the same type below: cumulative within (feature, type), entries sorted by (f, t, b).
    ct_idx = f * T + t
    cum_t = np.cumsum(h) - h
    cum_t -= (np.cumsum(h) - h)[np.searchsorted(ct_idx, ct_idx, side="left")]
    rest_here = H[np.searchsorted(Hk, fb)] - h
    z_t = type_cells[None, :] - firing                  # zeros of the type
    U = (z_t * 0.5 * (Z[:, None] - z_t)).ravel()        # type zeros vs rest zeros: ties
    np.add.at(U, ct_idx, h * ((Z[f] - z_t[f, t]) + (below_all - cum_t) + 0.5 * rest_here))
    U = U.reshape(n_features, T)
    ties = Z ** 3 - Z
    np.add.at(ties, Hf, H ** 3 - H)
    n1 = type_cells[None, :].astype(np.float64)
    n2 = N - n1
    var = n1 * n2 / 12 * ((N + 1) - ties[:, None] / (N * (N - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = (U - n1 * n2 / 2 - 0.5) / np.sqrt(var)
        auc = np.where(n1 * n2 > 0, U / (n1 * n2), np.nan)
    p = np.where(var > 0, sps.norm.sf(zs), 1.0)
    q = bh(p.ravel()).reshape(p.shape)
    passes = (q <= cfg.alpha) & (auc >= cfg.auc_floor)
    n_top = np.zeros((n_features, T), np.int64)
    if top["type"].size:
        ok = top["type"] >= 0
        np.add.at(n_top, (top["feature"][ok], top["type"][ok]), 1)
    out = {"labels": labels, "U": U, "auc": auc, "p": p, "q": q, "n_cells": np.broadcast_to(type_cells, p.shape),
           "n_firing": firing.astype(np.int64), "n_top": n_top}
    if donors is not None:
        pd_, nd = donor_tests(m, n_features, donors)
        qd = bh(pd_.ravel()).reshape(pd_.shape)
        passes &= qd <= cfg.alpha
        out.update(p_donor=pd_, q_donor=qd, n_donors=nd)
    out["passes"] = passes
    return out


def donor_tests(m: dict, n_features: int, donors: dict) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon signed-rank (one-sided, scipy) over donors of mean a(f, .) in the type minus in the rest.

    `donors["cells"]` is the (donor, type) table of cells with gene tokens. A donor counts for a type when it
    has cells of the type and cells of other types.
    """
    cells = donors["cells"].astype(np.float64)
    D, T = cells.shape
    S = np.zeros(n_features * D * T)
    np.add.at(S, m.get("dn_key", np.zeros(0, np.int64)), m.get("dn_sum", np.zeros(0)))
    S = S.reshape(n_features, D, T)
    total = S.sum(axis=2, keepdims=True)
    n_all = cells.sum(axis=1, keepdims=True)
    p = np.ones((n_features, T))
    n_used = np.zeros(T, np.int64)
    for t in range(T):
        ok = (cells[:, t] > 0) & (n_all[:, 0] - cells[:, t] > 0)
        n_used[t] = int(ok.sum())
        if ok.sum() < 1:
            continue
        diff = S[:, ok, t] / cells[ok, t] - (total[:, ok, 0] - S[:, ok, t]) / (n_all[ok, 0] - cells[ok, t])
        p[:, t] = signed_rank_greater(diff)
    return p, np.broadcast_to(n_used, p.shape)


def _exact_tail(c: int) -> np.ndarray:
    """P(W+ >= w) for w = 0 .. c(c+1)/2: the signed-rank statistic of c untied non-zero differences under H0."""
    counts = np.zeros(c * (c + 1) // 2 + 1)
    counts[0] = 1
    for r in range(1, c + 1):  # subsets of ranks 1..c by their sum
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts[::-1])[::-1] / 2.0 ** c


def signed_rank_greater(d: np.ndarray) -> np.ndarray:
    """One-sided (greater) Wilcoxon signed-rank p of every row of d, as scipy.stats.wilcoxon(row,
    alternative="greater") gives it row by row (zeros dropped, average ranks for ties): the exact null
    distribution without ties or zeros, or with n <= 13 (all 2^n sign flips, enumerated); else the normal
    approximation with tie correction and no continuity correction. A row of zeros gets p = 1. Vectorized: a
    layer has features x cell types rows, and scipy's per-row loop took most of the statistics stage."""
    rows, n = d.shape
    p = np.ones(rows)
    nz = d != 0
    c = nz.sum(axis=1)
    a = np.where(nz, np.abs(d), np.nan)
    r = sps.rankdata(a, axis=1, nan_policy="omit") if rows and n else np.zeros_like(a)
    r_plus = np.where(d > 0, r, 0.0).sum(axis=1)
    srt = np.sort(a, axis=1)
    tied = (srt[:, 1:] == srt[:, :-1]).any(axis=1) if n > 1 else np.zeros(rows, bool)
    zeros = c < n
    exact = (c > 0) & ~tied & (n <= 50) & (~zeros | (n <= 13))
    perm = (c > 0) & tied & (n <= 13)
    asym = (c > 0) & ~exact & ~perm
    for cc in np.unique(c[exact]):
        sel = exact & (c == cc)
        p[sel] = _exact_tail(int(cc))[np.floor(r_plus[sel] + 1e-9).astype(np.int64)]
    for i in np.flatnonzero(perm):  # ties among few donors: enumerate the flips on doubled (integer) ranks
        twice = np.rint(2 * r[i][nz[i]]).astype(np.int64)
        counts = np.zeros(twice.sum() + 1)
        counts[0] = 1
        for x in twice:
            counts[x:] = counts[x:] + counts[:-x].copy() if x else counts * 2
        p[i] = counts[int(np.rint(2 * r_plus[i])):].sum() / 2.0 ** c[i]
    if asym.any():
        cc = c[asym].astype(np.float64)
        tie = np.array([_tie_sum(row) for row in srt[asym]])
        se = np.sqrt((cc * (cc + 1) * (2 * cc + 1) - tie / 2) / 24)
        p[asym] = sps.norm.sf((r_plus[asym] - cc * (cc + 1) / 4) / se)
    return p


def _tie_sum(sorted_row: np.ndarray) -> float:
    """Sum of t^3 - t over the groups of equal values of a sorted row (NaN, the dropped zeros, left out)."""
    v = sorted_row[~np.isnan(sorted_row)]
    if v.size == 0:
        return 0.0
    t = np.diff(np.flatnonzero(np.r_[True, v[1:] != v[:-1], True])).astype(np.float64)
    return float((t ** 3 - t).sum())


def labels_of(values: pd.Series, usable: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted labels, code per cell, -1 for missing or cells without gene tokens)."""
    v = values.to_numpy(dtype=object)
    ok = pd.notna(values).to_numpy() & usable
    labels = sorted({str(x) for x in v[ok]})
    index = {x: i for i, x in enumerate(labels)}
    return labels, np.array([index[str(x)] if o else -1 for x, o in zip(v, ok)], np.int64)
