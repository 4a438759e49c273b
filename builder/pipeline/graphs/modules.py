"""Analyses that connect features, from merged counts (never from tokens): co-activation modules, cross-layer
edges, the 2-D map, the SVD comparison and the PCA baseline gene lists. Each reports its null beside it.

Gene identity is the confound: two features that both fire on a gene's tokens co-fire whatever else they
encode. The null of modules and of cross-layer edges therefore shuffles a feature's firing among the tokens
of the same gene; its expected co-count is exact from the feature x gene firing counts A (features x genes)
and the tokens per gene n_g:  E = A diag(1/n_g) B^T.
- modules: PMI graph of co-firing within a layer (count >= module_min_count, PMI >= module_min_pmi), Leiden;
  null: the same pipeline on co-counts drawn from Poisson(E) (seeded);
- cross-layer edges: co-firing at the same token in adjacent layers, count >= cross_min_count,
  log(count / E) >= cross_min_log_ratio, BH q <= cross_alpha on the Poisson tail P(N >= count | E);
  the raw rate (count and PMI against independence) is reported beside its expectation under the null;
- SVD: principal axes from the merged covariance of the held-out tokens; per feature the share of its decoder direction's squared
  norm inside the top-k axes (random direction: k/d), and the R^2 of its activation on held-out tokens
  explained by the top-k principal component scores (exact, from merged held-out moments);
- PCA baseline: top genes of the top principal directions (both signs) by the mean projection of a gene's
  tokens, with the same minimum support and list size as the features.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import poisson

from ..multitest import bh, poisson_excess_p

SVD_K = (10, 50)


@dataclass(frozen=True)
class GraphConfig:
    module_min_count: int = 10      # co-firing tokens a pair needs to become an edge
    module_min_pmi: float = 0.6931471805599453  # log 2: co-fires at least twice as often as independence
    resolution: float = 1.0         # Leiden RBConfiguration resolution
    min_module_size: int = 3
    cross_min_count: int = 10
    cross_min_pmi: float = 0.6931471805599453   # the raw rate only
    cross_min_log_ratio: float = 0.6931471805599453  # log 2: twice the co-count gene identity explains
    cross_alpha: float = 0.05       # BH level against the within-gene null
    cosine: float = 0.5             # decoder-cosine match threshold
    module_null_draws: int = 5      # draws of the within-gene null the module counts are set beside
    module_label_share: float = 0.2  # a module takes a term as its label only if this share of its members hold it
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    umap_epochs: int = 200          # UMAP's own choice above 10,000 rows; its 500 below cost 1.3 s more a layer
    pca_components: int = 10        # principal directions (x 2 signs) given top-gene lists for the PCA baseline
    seed: int = 0


def count_matrix(key: np.ndarray, n: np.ndarray, rows: int, cols: int) -> sp.csr_matrix:
    r, c = np.divmod(np.asarray(key, np.int64), cols)
    return sp.csr_matrix((np.asarray(n, np.float64), (r, c)), shape=(rows, cols))


def gene_firing(counts: dict, n_features: int, n_genes: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """(A: features x genes firing counts, tokens per gene)."""
    n_g = np.zeros(n_genes)
    n_g[counts["gene_ids"]] = counts["gene_n"]
    return count_matrix(counts["fg_key"], counts["fg_n"], n_genes, n_features).T.tocsr(), n_g  # keys: g * F + f


def within_gene_expectation(A: sp.csr_matrix, B: sp.csr_matrix, n_g: np.ndarray) -> np.ndarray:
    """E_ij = sum_g A_ig B_jg / n_g (dense features x features)."""
    return np.asarray((A @ sp.diags(1.0 / np.maximum(n_g, 1)) @ B.T).todense())


def _pmi_edges(C: sp.spmatrix, fa, fb, T: int, min_count: int, min_pmi: float):
    C = sp.coo_matrix(C)
    sel = C.data >= min_count
    r, c, n = C.row[sel], C.col[sel], C.data[sel].astype(np.float64)
    pmi = np.log(n * T / (fa[r].astype(np.float64) * fb[c]))
    keep = pmi >= min_pmi
    return r[keep], c[keep], n[keep], pmi[keep]


def leiden_modules(C: sp.spmatrix, fire: np.ndarray, T: int, cfg: GraphConfig) -> dict:
    """Modules of one layer from its upper-triangular co-firing counts C: PMI edges, Leiden (modularity with
    resolution, i.e. the RBConfiguration objective), iterated until no move improves it."""
    import igraph as ig

    n = len(fire)
    r, c, _, w = _pmi_edges(C, fire, fire, T, cfg.module_min_count, cfg.module_min_pmi)
    membership = np.full(n, -1, dtype=np.int64)
    out = {"edges": int(r.size), "modules": 0, "in_modules": 0, "quality": 0.0, "membership": membership}
    if r.size == 0:
        return out
    g = ig.Graph(n=n, edges=np.column_stack([r, c]))
    g.es["weight"] = w
    # igraph's own Leiden: 8x faster than leidenalg's on a layer's 2,048 features and ~70,000 edges, same
    # objective, as good a partition. Its random numbers come from a generator seeded here, not the global one.
    ig.set_random_number_generator(random.Random(cfg.seed))
    try:
        part = g.community_leiden(objective_function="modularity", weights="weight", resolution=cfg.resolution,
                                  n_iterations=-1)
    finally:
        ig.set_random_number_generator(random)
    groups = sorted((sorted(m) for m in part if len(m) >= cfg.min_module_size), key=lambda m: (-len(m), m[0]))
    for k, members in enumerate(groups):
        membership[members] = k
    out.update(modules=len(groups), in_modules=int((membership >= 0).sum()),
               quality=float(g.modularity(part.membership, weights="weight")))
    return out


def modules_with_null(C: sp.spmatrix, E: np.ndarray, fire: np.ndarray, T: int, cfg: GraphConfig) -> tuple[dict, dict]:
    """Modules of the observed co-counts, and a summary of those of `module_null_draws` co-count matrices drawn from
    the within-gene null E (upper triangle): the mean of every measure, its 2.5% and 97.5% quantiles over the
    draws, and an empirical one-sided p, (1 + draws at least as high) / (1 + draws), for modules and quality."""
    iu = np.triu_indices(len(fire), 1)
    lam = E[iu]
    real, draws = leiden_modules(C, fire, T, cfg), []
    for d in range(cfg.module_null_draws):
        draw = np.random.default_rng([cfg.seed, 0x4D4F, d]).poisson(lam)
        nz = draw > 0
        C0 = sp.coo_matrix((draw[nz], (iu[0][nz], iu[1][nz])), shape=C.shape)
        draws.append({k: v for k, v in leiden_modules(C0, fire, T, cfg).items() if k != "membership"})
    null: dict = {"draws": len(draws)}
    for k in ("modules", "edges", "in_modules", "quality"):
        values = np.array([d[k] for d in draws], np.float64)
        null[k] = float(values.mean()) if values.size else None
        null[f"{k}_lo"], null[f"{k}_hi"] = (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))) \
            if values.size else (None, None)
        null[f"{k}_p"] = (1 + int((values >= real[k]).sum())) / (1 + values.size)
    return real, null


def cross_layer(C: sp.spmatrix, E: np.ndarray, fa: np.ndarray, fb: np.ndarray, T: int, cfg: GraphConfig) -> dict:
    """Edges a -> b whose co-firing exceeds what gene identity explains (see the module docstring)."""
    C = sp.coo_matrix(C)
    sel = C.data >= cfg.cross_min_count
    r, c, n = C.row[sel], C.col[sel], C.data[sel].astype(np.float64)
    e = E[r, c]
    p = poisson_excess_p(n, e)
    q = bh(p)
    with np.errstate(divide="ignore"):
        ratio = np.log(n / np.maximum(e, 1e-300))
    keep = (ratio >= cfg.cross_min_log_ratio) & (q <= cfg.cross_alpha)
    pmi = np.log(n * T / (fa[r].astype(np.float64) * fb[c]))
    # The raw rate: pairs passing count and PMI against independence, and how many the null would pass.
    need = np.maximum(cfg.cross_min_count, np.ceil(np.exp(cfg.cross_min_pmi) * np.outer(fa, fb) / max(T, 1)))
    # Pairs with E < 1e-3 that need 10 or more co-firings add less than E^10 / 10! < 1e-36 each: skipped.
    live = (E >= 1e-3) | ((need < 10) & (E > 0))
    expected_raw = float(poisson.sf(need[live] - 1, E[live]).sum())
    return {"a": r[keep], "b": c[keep], "count": n[keep].astype(np.int64), "log_ratio": ratio[keep], "p": p[keep],
            "expected": e[keep], "raw_edges": int((pmi >= cfg.cross_min_pmi).sum()),
            "expected_raw_edges": expected_raw, "edges": int(keep.sum()), "tested": int(n.size)}


def decoder_matches(Wa: np.ndarray, Wb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each feature of a, its most similar decoder direction in b, if |cos| >= threshold (rows unit norm)."""
    Wa = Wa / np.maximum(np.linalg.norm(Wa, axis=1, keepdims=True), 1e-12)
    Wb = Wb / np.maximum(np.linalg.norm(Wb, axis=1, keepdims=True), 1e-12)
    cos = Wa @ Wb.T
    best = np.argmax(cos, axis=1)
    val = cos[np.arange(len(best)), best]
    keep = val >= threshold
    return np.flatnonzero(keep), best[keep], val[keep]


def random_matches(n_a: int, n_b: int, d: int, threshold: float) -> float:
    """Decoder-cosine matches expected between n_a and n_b random unit directions in d dimensions: n_a times the
    chance that the largest of n_b cosines reaches the threshold (one cosine: P(cos >= t) = I_{1-t^2}((d-1)/2, 1/2)
    / 2 for t > 0)."""
    from scipy.special import betainc

    t = float(threshold)
    one = 0.5 * betainc((d - 1) / 2, 0.5, 1 - t * t) if t > 0 else 1.0
    return n_a * -np.expm1(n_b * np.log1p(-min(one, 1 - 1e-16)))


def cosine_knn(profile: sp.csr_matrix, n: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine nearest neighbours of every row (itself first, at distance 0; ties by the smaller row),
    from sparse products in chunks of rows: what UMAP computes for fewer than 4,096 rows, without its compile."""
    norms = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-300)) @ profile)
    m = X.shape[0]
    idx, dist = np.empty((m, n), np.int32), np.empty((m, n), np.float32)
    for s in range(0, m, chunk):
        D = 1.0 - (X[s:s + chunk] @ X.T).toarray()
        D[np.arange(D.shape[0]), np.arange(s, s + D.shape[0])] = -np.inf  # itself first
        near = np.argpartition(D, n - 1, axis=1)[:, :n]
        d = np.take_along_axis(D, near, 1)
        order = np.lexsort((near, d), axis=1)  # by distance, then by row: argpartition's order is arbitrary
        idx[s:s + chunk] = np.take_along_axis(near, order, 1)
        dist[s:s + chunk] = np.maximum(np.take_along_axis(d, order, 1), 0)
    return idx, dist


def _cache_umap_jit() -> None:
    """umap-learn compiles its numba functions in every new process (about 5 s) because it does not ask numba
    to cache them; asking here keeps the compiled code on disk beside ours (kernels.py), so only the first build
    on a machine pays for it."""
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils
    from numba.core.registry import CPUDispatcher

    for mod in (umap.umap_, umap.layouts, umap.spectral, umap.utils):
        for obj in list(vars(mod).values()):
            if isinstance(obj, CPUDispatcher) and type(obj._cache).__name__ == "NullCache":
                obj.enable_caching()


def feature_map(profile: sp.csr_matrix, cfg: GraphConfig) -> np.ndarray:
    """2-D UMAP (cosine) of the rows of `profile`; rows without any entry, or too few rows, get NaN."""
    import warnings

    xy = np.full((profile.shape[0], 2), np.nan)
    profile = profile.tocsr()
    has = np.flatnonzero(np.diff(profile.indptr) > 0)
    if has.size < cfg.umap_neighbors + 2:
        return xy
    import umap

    _cache_umap_jit()
    knn = (*cosine_knn(profile[has], cfg.umap_neighbors), None)
    reducer = umap.UMAP(n_neighbors=cfg.umap_neighbors, min_dist=cfg.umap_min_dist, metric="cosine",
                        n_epochs=cfg.umap_epochs, random_state=cfg.seed, n_jobs=1, init="spectral",
                        precomputed_knn=knn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "transform unavailable without a search index": never used
        xy[has] = reducer.fit_transform(profile[has])
    return xy


def svd_comparison(W_dec: np.ndarray, dense: dict, seed: int, ks=SVD_K) -> dict:
    """Per feature and k: decoder share in the top-k axes, R^2 of its held-out activation on the top-k scores;
    beside them random unit directions (share and the variance share of a random linear readout)."""
    axes = dense["axes"]  # top principal axes of the held-out tokens (dense.summarize)
    d = W_dec.shape[1]
    W = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    R = np.random.default_rng([seed, 0x5356]).standard_normal((W.shape[0], d))
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    hn = max(float(dense["h_n"]), 1.0)
    mu = dense["h_s1"] / hn
    cov_h = dense["h_xtx"] / hn - np.outer(mu, mu)
    a_mean = dense["h_a1"] / hn
    var_a = dense["h_a2"] / hn - a_mean ** 2
    cross = dense["h_za_proj"] / hn - np.outer(a_mean, axes @ mu)  # cov(a_f, x) on the axes, held-out tokens
    vr = ((R @ cov_h) * R).sum(axis=1)  # variance of a random readout r.x
    out = {}
    for k in (k for k in ks if k <= min(d, axes.shape[0])):
        V = axes[:k]
        out[f"share_{k}"] = ((W @ V.T) ** 2).sum(axis=1)
        RV = R @ V.T
        out[f"random_share_{k}"] = (RV ** 2).sum(axis=1)
        S = V @ cov_h @ V.T
        c = cross[:, :k]
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = ((c @ np.linalg.pinv(S)) * c).sum(axis=1) / var_a
        out[f"r2_{k}"] = np.where(var_a > 1e-12, np.clip(r2, 0, 1), np.nan)
        out[f"random_r2_{k}"] = ((RV @ S) * RV).sum(axis=1) / np.maximum(vr, 1e-300)
    return out


def pca_gene_lists(dense: dict, n_components: int, top: int, min_support: int) -> dict:
    """Top genes of the top principal directions, both signs, by the mean projection of the gene's tokens
    (centred on the layer mean; dense.finalize projects them), among genes with at least `min_support` tokens."""
    ids, n, proj = dense["gene_ids"], dense["gene_n"], dense["gene_proj"]
    ok = n >= min_support
    rows = {"component": [], "sign": [], "rank": [], "token_id": [], "score": []}
    for j in range(min(n_components, proj.shape[1])):
        for sign in (1, -1):
            sc = sign * proj[ok, j]
            order = np.lexsort((ids[ok], -sc))[:top]
            rows["component"] += [j] * order.size
            rows["sign"] += [sign] * order.size
            rows["rank"] += list(range(1, order.size + 1))
            rows["token_id"] += ids[ok][order].tolist()
            rows["score"] += sc[order].tolist()
    return {k: np.asarray(v) for k, v in rows.items()}


def module_labels(membership: np.ndarray, labels: dict, share: float = 0.0) -> list[dict]:
    """Per module: size and the most common labels of its members (ties by name). A module takes the first as its
    label only when at least `share` of its members, and at least two, hold it: one member's term is not the
    module's."""
    from collections import Counter

    out = []
    for m in range(int(membership.max(initial=-1)) + 1):
        members = np.flatnonzero(membership == m)
        terms = sorted(Counter(labels[f] for f in members if labels.get(f)).items(), key=lambda x: (-x[1], x[0]))[:5]
        held = bool(terms) and terms[0][1] >= max(2, share * members.size)
        out.append({"module": m, "n_features": int(members.size), "label": terms[0][0] if held else None,
                    "top_terms": [t for t, _ in terms], "top_term_counts": [c for _, c in terms],
                    "members": members.tolist()})
    return out
