"""The `coexpression` baseline: equally sized groups of co-expressed genes of the dataset, with no model.

If groups made from plain co-expression are annotated as often as the SAE's features, the annotation rate
says little about the SAE. The groups are made in three steps:

1. Genes: the `n_genes` universe genes detected in the most cells (ties by name). One pass over the .h5ad in
   shards of cells counts detection.
2. Correlation: a second pass accumulates, per shard, the cell count, the sum and the cross-product sums of
   x = log1p(counts / cell total x 10,000) over the chosen genes. The partials are plain sums that merge in
   any order; the whole matrix is never loaded. Pearson's r comes from the merged sums.
3. Groups: Leiden (RBConfiguration, seeded) on the graph linking each gene to its `neighbors` most
   correlated genes (positive r, weight r). Each cluster's genes are put in the leaf order of an average-linkage
   tree on 1 - r and cut into consecutive groups of `size`; the remainders of all clusters, in cluster order,
   are cut the same way. That gives floor(n_genes / size) groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import igraph as ig
import leidenalg
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, sparse_dataset
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from ...errors import AtlasError
from .baselines import Baseline, for_layers
from .genesets import normalise_gene


@dataclass(frozen=True)
class CoexpressionConfig:
    n_genes: int = 4000      # most detected universe genes clustered; the r matrix is n_genes^2 float64 (128 MB)
    size: int = 20          # genes per group: the features' list size (top_n)
    neighbors: int = 15     # kNN graph of the correlations
    resolution: float = 1.0  # Leiden
    chunk_cells: int = 2048  # cells per shard: the shard is made dense (cells x n_genes float64, 64 MB)
    seed: int = 0


@dataclass
class CoexpressionSums:
    """Mergeable partial of one shard of cells: count, sums and cross-product sums of the log expression."""

    cells: int
    total: np.ndarray  # (genes,)
    cross: np.ndarray  # (genes, genes)

    def merge(self, other: CoexpressionSums) -> CoexpressionSums:
        """The sums of both (a new partial; the arguments are left as they were)."""
        return CoexpressionSums(self.cells + other.cells, self.total + other.total, self.cross + other.cross)

    def correlation(self) -> np.ndarray:
        """Pearson's r between genes; a gene constant over the cells gets r = 0 with every other."""
        mean = self.total / max(self.cells, 1)
        r = self.cross / max(self.cells, 1)
        r -= np.outer(mean, mean)  # covariance, in place: the matrix is the big allocation here
        sd = np.sqrt(np.clip(np.diag(r), 0, None))
        inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)
        r *= inv[:, None]
        r *= inv[None, :]
        np.fill_diagonal(r, 1.0)
        return np.clip(r, -1.0, 1.0)


class CountShards:
    """Raw counts of an .h5ad, read shard by shard of cells: layers['counts'], else raw.X, else X."""

    def __init__(self, path: Path, chunk_cells: int, rows: np.ndarray | None = None):
        """rows: the dataset rows to read (ascending), e.g. the cells of a build; None: every cell."""
        self.path, self.chunk = Path(path), int(chunk_cells)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if not self.path.is_file():
            raise AtlasError(f"{self.path}: dataset not found")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as e:
            raise AtlasError(f"{self.path}: not a readable .h5ad file ({e})") from None
        f = self.file
        options = [("layers/counts", "var"), ("raw/X", "raw/var"), ("X", "var")]
        self.key, var_key = next(((k, v) for k, v in options if k in f), (None, None))
        if self.key is None:
            raise AtlasError(f"{self.path}: no expression matrix (layers/counts, raw/X or X)")
        self.matrix = sparse_dataset(f[self.key]) if isinstance(f[self.key], h5py.Group) else f[self.key]
        self.var = read_elem(f[var_key])
        self.n_cells, self.n_genes = self.matrix.shape

    def close(self) -> None:
        self.file.close()

    def __iter__(self):
        for start in range(0, self.n_cells, self.chunk):
            X = sp.csr_matrix(self.matrix[start:start + self.chunk], dtype=np.float64)
            if self.rows is not None:
                pick = self.rows[(self.rows >= start) & (self.rows < start + X.shape[0])] - start
                if pick.size == 0:
                    continue
                X = X[pick]
            bad = (X.data < 0) | (np.abs(X.data - np.round(X.data)) > 1e-3) | ~np.isfinite(X.data)
            if bad.any():
                raise AtlasError(f"{self.path}: {self.key} holds {float(X.data[np.argmax(bad)]):.4g} in cells "
                                 f"{start}-{start + X.shape[0] - 1}; raw counts (non-negative whole numbers) "
                                 "were expected")
            yield X

    def gene_names(self, universe: set[str], column: str | None = None) -> np.ndarray:
        """Normalised gene names from the var column (or index) that matches the universe best."""
        columns = {"index": self.var.index.astype(str)}
        columns |= {c: self.var[c].astype(str) for c in self.var.columns
                    if self.var[c].dtype == object or isinstance(self.var[c].dtype, pd.CategoricalDtype)}
        if column is not None and column not in columns:
            raise AtlasError(f"{self.path}: var has no text column {column!r} (has: {', '.join(sorted(columns))})")
        norm = {c: np.asarray([normalise_gene(x) for x in v], dtype=object) for c, v in columns.items()
                if column is None or c == column}
        best = max(norm, key=lambda c: (sum(g in universe for g in norm[c]), c == "index"))
        return norm[best]


def detection(shards: CountShards) -> np.ndarray:
    """Cells in which each gene has a count (a sum over shards)."""
    out = np.zeros(shards.n_genes, np.int64)
    for X in shards:
        out += np.bincount(X.indices, minlength=shards.n_genes)
    return out


def shard_sums(X: sp.csr_matrix, genes: np.ndarray) -> CoexpressionSums:
    """The partial of one shard: x = log1p(counts / cell total x 10,000) on `genes`; empty cells left out."""
    totals = np.asarray(X.sum(axis=1)).ravel()
    X = X[totals > 0]
    Y = (sp.diags(1e4 / totals[totals > 0]) @ X[:, genes]).toarray()  # (cells, genes): dense for BLAS
    np.log1p(Y, out=Y)
    return CoexpressionSums(Y.shape[0], Y.sum(axis=0), Y.T @ Y)


def coexpression_groups(r: np.ndarray, names: np.ndarray, cfg: CoexpressionConfig) -> list[list[str]]:
    """floor(genes / size) equally sized groups of co-expressed genes (see the module docstring)."""
    G = len(names)
    k = min(cfg.neighbors, G - 1)
    if G < cfg.size or k < 1:
        raise AtlasError(f"coexpression: {G} genes cannot make groups of {cfg.size}")
    diag = np.diag(r).copy()
    np.fill_diagonal(r, -np.inf)  # not one's own neighbour (restored below)
    nn = np.argpartition(-r, k - 1, axis=1)[:, :k]  # (genes, k): the most correlated others
    np.fill_diagonal(r, diag)
    rows = np.repeat(np.arange(G), k)
    w = r[rows, nn.ravel()]
    pos = w > 0
    W = sp.csr_matrix((w[pos], (rows[pos], nn.ravel()[pos])), shape=(G, G))
    W = sp.triu(W.maximum(W.T), 1).tocoo()
    graph = ig.Graph(n=G, edges=list(zip(W.row.tolist(), W.col.tolist())), edge_attrs={"weight": W.data.tolist()})
    part = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                    resolution_parameter=cfg.resolution, seed=cfg.seed)
    member = np.asarray(part.membership)
    clusters = sorted((np.flatnonzero(member == c) for c in np.unique(member)), key=lambda x: (-x.size, x[0]))
    groups, rest = [], []
    for idx in clusters:
        order = idx[_leaf_order(r[np.ix_(idx, idx)])]
        cut = order.size - order.size % cfg.size
        groups += [order[i:i + cfg.size] for i in range(0, cut, cfg.size)]
        rest += order[cut:].tolist()
    groups += [np.asarray(rest[i:i + cfg.size]) for i in range(0, len(rest) - len(rest) % cfg.size, cfg.size)]
    return [names[g].tolist() for g in groups]


def _leaf_order(r: np.ndarray) -> np.ndarray:
    if r.shape[0] < 3:
        return np.arange(r.shape[0])
    d = np.clip(1.0 - r, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return leaves_list(linkage(squareform(d, checks=False), method="average"))


def coexpression_baseline(path: Path, universe, layers, cfg: CoexpressionConfig = CoexpressionConfig(),
                          gene_column: str | None = None, rows: np.ndarray | None = None) -> tuple[Baseline, dict]:
    """The baseline's lists (the same groups for every layer) and a record of how they were made. `rows`: the
    dataset rows (cells) to use, ascending (a build passes its cells); None: every cell."""
    uni = {normalise_gene(g) for g in (set().union(*universe.values()) if isinstance(universe, dict) else universe)}
    uni.discard(None)
    shards = CountShards(path, cfg.chunk_cells, rows)
    try:
        names = shards.gene_names(uni, gene_column)
        detected = detection(shards)
        known = np.fromiter((g in uni for g in names), bool, names.size)
        eligible = np.flatnonzero(known & (detected > 0))
        eligible = eligible[np.unique(names[eligible], return_index=True)[1]]  # one column per gene
        order = sorted(eligible.tolist(), key=lambda i: (-detected[i], names[i]))
        genes = np.asarray(sorted(order[:cfg.n_genes]), dtype=np.int64)
        if genes.size < cfg.size:
            raise AtlasError(f"{path}: only {genes.size} universe genes are detected; coexpression groups of "
                             f"{cfg.size} need more (is the universe right?)")
        sums = None
        for X in shards:
            part = shard_sums(X, genes)
            if sums is None:
                sums = part
            else:  # in place: the running total is ours, and a copy of the matrix per shard is not needed
                sums.cells += part.cells
                sums.total += part.total
                sums.cross += part.cross
    finally:
        shards.close()
    groups = coexpression_groups(sums.correlation(), names[genes], cfg)
    record = {"dataset": str(path), "counts": shards.key, "cells": sums.cells, "genes": int(genes.size),
              "groups": len(groups), "config": cfg.__dict__}
    note = (f"coexpression: {len(groups)} groups of {cfg.size} co-expressed genes, no model (Leiden on the "
            f"{cfg.neighbors}-NN graph of Pearson r of log1p(CP10k) over {sums.cells} cells, the {genes.size} "
            "most detected universe genes)")
    return Baseline("coexpression", for_layers(groups, layers), note), record
