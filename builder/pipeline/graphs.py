"""Analyses that connect features: co-activation modules, cross-layer edges, the 2-D map, the SVD comparison.

Each works from sparse codes (which features fired on which token) and reports its null beside its result:
- modules: PMI graph of co-firing within a layer, Leiden; null = the same on codes shuffled across tokens;
- cross-layer edges: PMI of co-firing at the same token in adjacent layers, tested against the expectation
  when tokens are shuffled within the same gene (shared gene identity alone); a shuffle gives the raw rate;
- map: UMAP of each feature's top-gene profile;
- SVD: decoder directions against the top principal axes of the layer, beside random directions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import poisson

from .multitest import bh


@dataclass(frozen=True)
class GraphConfig:
    module_min_count: int = 10      # co-firing tokens a pair needs to become an edge
    module_min_pmi: float = 0.6931471805599453  # log 2: co-fires at least twice as often as independence
    resolution: float = 1.0         # Leiden RBConfiguration resolution
    min_module_size: int = 3
    cross_min_count: int = 10
    cross_min_pmi: float = 0.6931471805599453
    cross_alpha: float = 0.05       # BH level against the within-gene null
    cosine: float = 0.5             # decoder-cosine match threshold
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    svd_axes: int = 10
    svd_threshold: float = 0.5      # |cos| to a principal axis that counts as aligned
    seed: int = 0


def fired_matrix(shards: Iterable, n_features: int) -> sp.csr_matrix:
    """tokens x features, 1 where the feature fired (value > 0) on the token."""
    parts = []
    for c in shards:
        idx, val = np.asarray(c.idx), np.asarray(c.val)
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        keep = val.ravel() > 0
        parts.append(sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], idx.ravel()[keep].astype(np.int64))),
                                   shape=(idx.shape[0], n_features)))
    return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, n_features), dtype=np.float32)


def _pmi_pairs(C: sp.spmatrix, fa: np.ndarray, fb: np.ndarray, T: int, min_count: int, upper: bool):
    C = sp.coo_matrix(C)
    sel = C.data >= min_count
    if upper:
        sel &= C.row < C.col
    r, c, n = C.row[sel], C.col[sel], C.data[sel].astype(np.float64)
    pmi = np.log(n * T / (fa[r].astype(np.float64) * fb[c]))
    return r, c, n, pmi


def shuffle_tokens(X: sp.csr_matrix, seed: int) -> sp.csr_matrix:
    """Each feature keeps its firing count; the tokens it fires on are drawn at random (co-firing broken)."""
    rng = np.random.default_rng(seed)
    Xc = X.tocsc()
    rows = []
    for f in range(Xc.shape[1]):
        n = Xc.indptr[f + 1] - Xc.indptr[f]
        rows.append(np.sort(rng.choice(Xc.shape[0], n, replace=False)) if n else np.zeros(0, np.int64))
    indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    return sp.csc_matrix((np.ones(indices.size, np.float32), indices, Xc.indptr.copy()), shape=Xc.shape).tocsr()


def leiden_modules(X: sp.csr_matrix, cfg: GraphConfig) -> dict:
    """Modules of one layer: PMI edges among features, Leiden, modules of at least min_module_size."""
    import igraph as ig
    import leidenalg

    T, n = X.shape
    fire = np.asarray(X.sum(axis=0)).ravel()
    r, c, _, pmi = _pmi_pairs(X.T @ X, fire, fire, T, cfg.module_min_count, upper=True)
    keep = pmi >= cfg.module_min_pmi
    r, c, w = r[keep], c[keep], pmi[keep]
    membership = np.full(n, -1, dtype=np.int64)
    out = {"edges": int(r.size), "modules": 0, "in_modules": 0, "quality": 0.0, "membership": membership}
    if r.size == 0:
        return out
    g = ig.Graph(n=n, edges=np.column_stack([r, c]).tolist())
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=w.tolist(),
                                    resolution_parameter=cfg.resolution, seed=cfg.seed, n_iterations=-1)
    groups = sorted((sorted(m) for m in part if len(m) >= cfg.min_module_size), key=lambda m: (-len(m), m[0]))
    for k, members in enumerate(groups):
        membership[members] = k
    out.update(modules=len(groups), in_modules=int((membership >= 0).sum()),
               quality=float(g.modularity([int(x) for x in part.membership], weights=w.tolist())))
    return out


def modules_with_null(X: sp.csr_matrix, cfg: GraphConfig) -> tuple[dict, dict]:
    return leiden_modules(X, cfg), leiden_modules(shuffle_tokens(X, cfg.seed), cfg)


def cross_layer(Xa: sp.csr_matrix, Xb: sp.csr_matrix, genes: np.ndarray, cfg: GraphConfig) -> dict:
    """Edges a -> b between features that co-fire on the same tokens beyond what their genes explain.

    Expected co-count when layer b's tokens are shuffled among the tokens of the same gene:
    E_ij = sum_g A_ig B_jg / n_g, with A_ig the tokens of gene g on which i fires. Edges need
    count >= min, PMI >= min and a BH-adjusted Poisson tail p <= alpha against E.
    """
    T = Xa.shape[0]
    _, gidx = np.unique(genes, return_inverse=True)
    G = sp.csr_matrix((np.ones(T, np.float32), (np.arange(T), gidx.ravel())), shape=(T, int(gidx.max(initial=-1)) + 1))
    n_g = np.asarray(G.sum(axis=0)).ravel()
    fa, fb = np.asarray(Xa.sum(axis=0)).ravel(), np.asarray(Xb.sum(axis=0)).ravel()
    r, c, n, pmi = _pmi_pairs(Xa.T @ Xb, fa, fb, T, cfg.cross_min_count, upper=False)
    A = sp.csr_matrix((Xa.T @ G) @ sp.diags(1.0 / np.maximum(n_g, 1)))
    B = sp.csr_matrix(Xb.T @ G)
    expected = np.asarray((A @ B.T).tocsr()[r, c]).ravel()  # features x features: small beside the tokens
    p = np.where(expected > 0, poisson.sf(n - 1, np.maximum(expected, 1e-300)), 0.0)
    q = bh(p, p.size) if p.size else p
    raw = pmi >= cfg.cross_min_pmi
    keep = raw & (q <= cfg.cross_alpha)
    # The raw rate under an actual within-gene shuffle: how many "highways" gene identity alone makes.
    perm = _within_groups(gidx.ravel(), np.random.default_rng(cfg.seed))
    _, _, _, pmi0 = _pmi_pairs(Xa.T @ Xb[perm], fa, fb, T, cfg.cross_min_count, upper=False)
    return {"a": r[keep], "b": c[keep], "count": n[keep].astype(np.int64), "pmi": pmi[keep], "p": p[keep],
            "raw_edges": int(raw.sum()), "shuffled_raw_edges": int((pmi0 >= cfg.cross_min_pmi).sum()),
            "edges": int(keep.sum())}


def _within_groups(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 0..n-1 that maps every position to a random position of the same group."""
    order = np.argsort(groups, kind="stable")
    shuffled = order.copy()
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for seg in np.split(np.arange(order.size), bounds):
        shuffled[seg] = order[seg][rng.permutation(seg.size)]
    perm = np.empty_like(order)
    perm[order] = shuffled
    return perm


def decoder_matches(Wa: np.ndarray, Wb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each feature of a, its most similar decoder direction in b, if |cos| >= threshold (rows unit norm)."""
    Wa = Wa / np.maximum(np.linalg.norm(Wa, axis=1, keepdims=True), 1e-12)
    Wb = Wb / np.maximum(np.linalg.norm(Wb, axis=1, keepdims=True), 1e-12)
    cos = Wa @ Wb.T
    best = np.argmax(cos, axis=1)
    val = cos[np.arange(len(best)), best]
    keep = val >= threshold
    return np.flatnonzero(keep), best[keep], val[keep]


def feature_map(profile: sp.csr_matrix, cfg: GraphConfig) -> np.ndarray:
    """2-D UMAP (cosine) of the rows of `profile`; rows without any entry, or too few rows, get NaN."""
    xy = np.full((profile.shape[0], 2), np.nan)
    has = np.flatnonzero(np.diff(profile.tocsr().indptr) > 0)
    if has.size < cfg.umap_neighbors + 2:
        return xy
    import umap

    reducer = umap.UMAP(n_neighbors=cfg.umap_neighbors, min_dist=cfg.umap_min_dist, metric="cosine",
                        random_state=cfg.seed, n_jobs=1, init="spectral")
    xy[has] = reducer.fit_transform(profile[has])
    return xy


def principal_axes(acts: np.ndarray, n_axes: int, block: int = 65_536) -> np.ndarray:
    """Top principal axes (rows) of tokens x width activations, from a streamed covariance."""
    n, d = acts.shape
    s, ss = np.zeros(d), np.zeros((d, d))
    for start in range(0, n, block):
        x = np.asarray(acts[start:start + block], dtype=np.float64)
        s += x.sum(axis=0)
        ss += x.T @ x
    mean = s / max(n, 1)
    cov = ss / max(n, 1) - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)
    return vecs[:, ::-1][:, :n_axes].T


def svd_alignment(W_dec: np.ndarray, axes: np.ndarray, threshold: float, seed: int, n_random: int = 10_000):
    """Which decoder rows align with a principal axis; the share expected of random directions."""
    W = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    aligned = np.abs(W @ axes.T).max(axis=1) >= threshold
    R = np.random.default_rng(seed).standard_normal((n_random, W.shape[1]))
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    expected = float((np.abs(R @ axes.T).max(axis=1) >= threshold).mean())
    return aligned, expected
