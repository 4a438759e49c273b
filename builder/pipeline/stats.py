"""Feature statistics from sparse codes, vectorized (bincount and sparse-matrix sums; no per-token loops).

Per feature: fire count (tokens where it is among the top k with a value > 0), frequency = fire count /
tokens, mean over all tokens, mean when active, max, and a histogram of its non-zero values on log-spaced
bins shared by the layer.

Top genes. score(f, g) = mean activation of f over every token of gene g, zeros included, i.e. the sum of
f's activations on g's tokens / g's token count. A gene ranks only if f fires on at least `min_support` of
its tokens; the published ranking let a gene seen once rank first. Ties are broken by fire count, then gene.

Per-cell activation a(f, c) = sum of f's activations over the cell's tokens / the cell's token count. Top
cells rank by it. Cell-type enrichment: a one-sided Mann-Whitney U test of a(f, cells of type t) against
a(f, the other cells), normal approximation with tie and continuity correction (scipy's "asymptotic"),
Benjamini-Hochberg across all features x types; AUC = U / (n_t x n_rest); odds ratio of "f fires in the
cell" against "the cell is of type t" with 0.5 added to every cell of the 2 x 2 table, so it is finite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats as sps

from .encode import Codes


@dataclass(frozen=True)
class StatsConfig:
    top_genes: int = 20
    min_support: int = 5
    top_cells: int = 10
    hist_bins: int = 24
    block: int = 256  # features per block in the cell-type test


def _top_per_row(m: sp.csr_matrix, n: int, tiebreak: sp.csr_matrix | None = None):
    """(row, rank, col, value) of the n largest entries of every row, vectorized over rows."""
    m = m.tocoo()
    second = np.zeros(m.nnz) if tiebreak is None else np.asarray(tiebreak.tocsr()[m.row, m.col]).ravel()
    order = np.lexsort((m.col, -second, -m.data, m.row))
    row, col, val = m.row[order], m.col[order], m.data[order]
    start = np.searchsorted(row, row, side="left")
    rank = np.arange(row.size) - start
    keep = rank < n
    return row[keep], rank[keep], col[keep], val[keep]


def accumulate(shards: Iterable[Codes], n_features: int, n_cells: int, n_genes: int) -> dict:
    """One pass over the codes: per-feature sums and the feature x gene and feature x cell matrices."""
    fire = np.zeros(n_features, np.int64)
    total = np.zeros(n_features)
    vmax = np.zeros(n_features)
    vmin_pos = np.inf
    gene_tokens = np.zeros(n_genes, np.int64)
    cell_tokens = np.zeros(n_cells, np.int64)
    fg_sum = sp.csr_matrix((n_features, n_genes))
    fg_fire = sp.csr_matrix((n_features, n_genes))
    fc_sum = sp.csr_matrix((n_features, n_cells))
    fc_fire = sp.csr_matrix((n_features, n_cells))
    tokens = 0
    for c in shards:
        idx, val = np.asarray(c.idx, np.int64), np.asarray(c.val, np.float64)
        on = val > 0
        f, v = idx[on], val[on]
        g = np.broadcast_to(np.asarray(c.gene, np.int64)[:, None], idx.shape)[on]
        cell = np.broadcast_to(np.asarray(c.cell, np.int64)[:, None], idx.shape)[on]
        tokens += len(c.cell)
        fire += np.bincount(f, minlength=n_features)
        total += np.bincount(f, weights=v, minlength=n_features)
        np.maximum.at(vmax, f, v)
        if v.size:
            vmin_pos = min(vmin_pos, float(v.min()))
        gene_tokens += np.bincount(np.asarray(c.gene, np.int64), minlength=n_genes)
        cell_tokens += np.bincount(np.asarray(c.cell, np.int64), minlength=n_cells)
        ones = np.ones(f.size)
        fg_sum = fg_sum + sp.csr_matrix((v, (f, g)), shape=(n_features, n_genes))
        fg_fire = fg_fire + sp.csr_matrix((ones, (f, g)), shape=(n_features, n_genes))
        fc_sum = fc_sum + sp.csr_matrix((v, (f, cell)), shape=(n_features, n_cells))
        fc_fire = fc_fire + sp.csr_matrix((ones, (f, cell)), shape=(n_features, n_cells))
    return {"tokens": tokens, "fire": fire, "sum": total, "max": vmax, "min_pos": vmin_pos,
            "gene_tokens": gene_tokens, "cell_tokens": cell_tokens, "fg_sum": fg_sum, "fg_fire": fg_fire,
            "fc_sum": fc_sum, "fc_fire": fc_fire}


def histograms(shards: Iterable[Codes], n_features: int, lo: float, hi: float, bins: int):
    """(edges, counts[n_features, bins]) of non-zero values on log-spaced edges from lo to hi."""
    if not np.isfinite(lo) or hi <= 0:
        return np.zeros(bins + 1), np.zeros((n_features, bins), np.int64)
    edges = np.geomspace(lo, hi if hi > lo else lo * 1.0001, bins + 1)
    counts = np.zeros(n_features * bins, np.int64)
    for c in shards:
        idx, val = np.asarray(c.idx, np.int64), np.asarray(c.val, np.float64)
        on = val > 0
        b = np.clip(np.searchsorted(edges, val[on], side="right") - 1, 0, bins - 1)
        counts += np.bincount(idx[on] * bins + b, minlength=n_features * bins)
    return edges, counts.reshape(n_features, bins)


def mannwhitney_greater(a: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U statistic and one-sided p (type > rest) for every row of `a` (features x cells) and every column of
    `onehot` (cells x types), as scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True)."""
    n = a.shape[1]
    ranks = sps.rankdata(a, axis=1)
    n1 = onehot.sum(axis=0)  # cells per type
    U = ranks @ onehot - n1 * (n1 + 1) / 2
    srt = np.sort(a, axis=1)
    start = np.ones_like(srt, dtype=bool)
    start[:, 1:] = srt[:, 1:] != srt[:, :-1]
    group = np.cumsum(start.ravel()) - 1
    size = np.bincount(group).astype(np.float64)
    row_of_group = np.repeat(np.arange(a.shape[0]), start.sum(axis=1))
    ties = np.bincount(row_of_group, weights=size ** 3 - size, minlength=a.shape[0])
    n2 = n - n1
    mu = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties[:, None] / (n * (n - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (U - mu - 0.5) / np.sqrt(var)
    p = np.where(var > 0, sps.norm.sf(z), 1.0)
    return U, p


def celltype_tests(per_cell: sp.csr_matrix, types: np.ndarray, fires: sp.csr_matrix, block: int = 256,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Every feature x cell type: U, AUC, p, q (BH over all), finite odds ratio. `types` holds one label per cell."""
    labels, code = np.unique(types, return_inverse=True)
    onehot = np.zeros((len(types), len(labels)))
    onehot[np.arange(len(types)), code] = 1
    n1 = onehot.sum(axis=0)
    n_features = per_cell.shape[0]
    U = np.zeros((n_features, len(labels)))
    P = np.ones_like(U)
    for s in range(0, n_features, block):
        U[s : s + block], P[s : s + block] = mannwhitney_greater(per_cell[s : s + block].toarray(), onehot)
        if progress:
            progress(min(block, n_features - s))
    on = (fires > 0).astype(np.float64)
    a = np.asarray((on @ sp.csr_matrix(onehot)).todense())  # fires and of type t
    fires_total = np.asarray(on.sum(axis=1)).ravel()[:, None]
    b = fires_total - a  # fires, other type
    c = n1[None, :] - a  # does not fire, type t
    d = len(types) - fires_total - n1[None, :] + a
    odds = ((a + 0.5) * (d + 0.5)) / ((b + 0.5) * (c + 0.5))
    q = sps.false_discovery_control(P.ravel(), method="bh").reshape(P.shape)
    n2 = len(types) - n1
    return {"labels": labels, "U": U, "auc": U / (n1 * n2), "p": P, "q": q, "odds_ratio": odds,
            "n_type": n1.astype(np.int64)}


def feature_stats(shards: Callable[[], Iterable[Codes]], n_features: int, n_cells: int, n_genes: int,
                  cfg: StatsConfig = StatsConfig(), cell_types: np.ndarray | None = None) -> dict:
    """Everything above for one layer. `shards()` must return a fresh iterator (two passes are made)."""
    acc = accumulate(shards(), n_features, n_cells, n_genes)
    T = acc["tokens"]
    fire = acc["fire"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_active = np.where(fire > 0, acc["sum"] / fire, 0.0)
    edges, hist = histograms(shards(), n_features, acc["min_pos"], float(acc["max"].max(initial=0)), cfg.hist_bins)

    # Top genes: mean activation over all the gene's tokens, among genes with enough firing tokens.
    fg_fire = acc["fg_fire"].tocsr()
    eligible = fg_fire.multiply(fg_fire >= cfg.min_support).tocsr()
    score = acc["fg_sum"].multiply(eligible > 0).tocsr()
    score = sp.csr_matrix(score.multiply(1.0 / np.maximum(acc["gene_tokens"], 1)[None, :]))
    g_row, g_rank, g_col, g_val = _top_per_row(score, cfg.top_genes, tiebreak=eligible)
    # Top cells by per-cell activation.
    per_cell = sp.csr_matrix(acc["fc_sum"].multiply(1.0 / np.maximum(acc["cell_tokens"], 1)[None, :]))
    c_row, c_rank, c_col, c_val = _top_per_row(per_cell, cfg.top_cells)
    out = {
        "tokens": T,
        "features": {"feature": np.arange(n_features), "fire_count": fire, "frequency": fire / max(T, 1),
                     "mean_activation": acc["sum"] / max(T, 1), "mean_when_active": mean_active,
                     "max_activation": acc["max"], "alive": fire > 0},
        "hist_edges": edges, "hist": hist,
        "genes": {"feature": g_row, "rank": g_rank + 1, "token_id": g_col, "score": g_val,  # rank 1 = strongest
                  "fire_count": np.asarray(fg_fire[g_row, g_col]).ravel().astype(np.int64),
                  "gene_tokens": acc["gene_tokens"][g_col]},
        "cells": {"feature": c_row, "rank": c_rank, "cell": c_col, "activation": c_val},
        "gene_tokens": acc["gene_tokens"], "cell_tokens": acc["cell_tokens"],
    }
    if cell_types is not None:  # cells without a gene token take no part in the test
        has = acc["cell_tokens"] > 0
        out["celltypes"] = celltype_tests(per_cell[:, has], np.asarray(cell_types).astype(str)[has],
                                          acc["fc_fire"].tocsr()[:, has], cfg.block)
    return out


def write_stats(out, result: dict, gene_names: dict[int, str], cell_ids: np.ndarray, meta: dict) -> None:
    """STATS_DIR/: features, feature_genes, top_cells (and celltypes) as Parquet, histograms.npy, stats.json."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..fsutil import atomic_dir

    with atomic_dir(out) as tmp:
        pq.write_table(pa.table(result["features"]), tmp / "features.parquet", compression="zstd")
        genes = dict(result["genes"])
        genes["gene"] = np.array([gene_names[int(t)] for t in genes["token_id"]], dtype=object)
        pq.write_table(pa.table(genes), tmp / "feature_genes.parquet", compression="zstd")
        cells = dict(result["cells"])
        cells["cell_id"] = np.asarray(cell_ids)[cells["cell"]].astype(str)
        pq.write_table(pa.table(cells), tmp / "top_cells.parquet", compression="zstd")
        if "celltypes" in result:
            ct = result["celltypes"]
            n_f, n_t = ct["p"].shape
            pq.write_table(pa.table({
                "feature": np.repeat(np.arange(n_f), n_t), "cell_type": np.tile(ct["labels"], n_f),
                "n_cells": np.tile(ct["n_type"], n_f), "U": ct["U"].ravel(), "auc": ct["auc"].ravel(),
                "p": ct["p"].ravel(), "q": ct["q"].ravel(), "odds_ratio": ct["odds_ratio"].ravel()}),
                tmp / "celltypes.parquet", compression="zstd")
        np.save(tmp / "histograms.npy", result["hist"])
        record = {"format": "feature-atlas stats 1", **meta, "tokens": int(result["tokens"]),
                  "alive": int(result["features"]["alive"].sum()), "hist_edges": result["hist_edges"].tolist()}
        (tmp / "stats.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
