"""The streamed correlation of every feature of one layer with every feature of another, keeping only each feature's
best partners, and the moments of the within-cell-type shuffle for the pairs kept.

P (cells, Fp) and Q (cells, Fq) are sparse profiles over the same cells. Q is standardised once into a dense
(cells, Fq) matrix Z (z_cj = (y_cj - mean_j) / (sd_j sqrt(n))); P is taken BLOCK features at a time, and the block's
correlations are X_block^T Z / (sd sqrt(n)), a (block, Fq) matrix from which each row's and each column's best
partners are merged into running top lists. Memory: the sparse profiles, Z (8 cells Fq bytes) and one block
(8 block Fq bytes): never the (Fp, Fq) matrix, let alone a (cells, Fp, Fq) product. Time: one product per block,
cells x block x Fq multiply-adds (sparse x dense when the block is sparse, else a dense GEMM), so the whole is
cells x Fp x Fq, linear in each.

Within-cell-type shuffle (docs/statistics.md "Links"). Shuffling Q's cells within each cell type g (n_g cells)
keeps Q's cell-type means, so the cross product S = sum_c x_c y_c has, under the shuffle, the exact mean
E = sum_g n_g xbar_g ybar_g, variance V = sum_g SSx_g SSy_g / (n_g - 1) and third central moment
K3 = sum_g n_g Cx_g Cy_g / ((n_g - 1) (n_g - 2)) (SS, C: within-type sums of squared and cubed deviations; the
moments of a random permutation within each type, independent across types, so they add). In correlation units the
null mean is null_r = (E - n mean_x mean_y) / (n sd_x sd_y), its SD null_sd = sqrt(V) / (n sd_x sd_y); z = (S - E) /
sqrt(V) is the within-cell-type co-variation of the two features over its shuffle SD, and skew = K3 / V^1.5 the
shuffle distribution's skewness, which the p-value's shifted-gamma tail takes into account (stats.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

DENSE_SHARE = 0.05  # a block with more non-zero values than this share is multiplied as a dense GEMM (BLAS)
PAIR_CHUNK = 65_536  # pairs whose shuffle moments are computed at a time (memory: 8 x cell types x chunk bytes)
PAIR_COLUMNS = 4096  # pairs whose correlation is computed at a time from their columns (memory: 16 x cells x this)


@dataclass(frozen=True)
class Profile:
    """One layer's per-cell profiles over the shared cells, with what the correlation and the shuffle need."""

    X: sp.csc_matrix | np.ndarray  # (cells, features): sparse, or dense when most values are non-zero (store.py)
    mean: np.ndarray        # (features,)
    sd: np.ndarray          # population SD (divided by cells)
    firing: np.ndarray      # cells in which the feature is non-zero
    candidate: np.ndarray   # linked at all: sd > 0 and active in at least min_cells cells
    dev: np.ndarray         # (groups, features): n_g (group mean - mean)
    ss: np.ndarray          # (groups, features): sum of squares about the group mean
    c3: np.ndarray          # (groups, features): sum of cubed deviations from the group mean
    ng: np.ndarray          # (groups,): cells per cell type

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def n_candidates(self) -> int:
        return int(self.candidate.sum())

    def standardised(self) -> np.ndarray:
        """Dense (cells, features) (x - mean) / (sd sqrt(n)) of the candidates, 0 in the other columns."""
        Z = self.X.toarray() if sp.issparse(self.X) else np.array(self.X, dtype=np.float64)
        ok = self.candidate
        Z[:, ok] = (Z[:, ok] - self.mean[ok]) / (self.sd[ok] * np.sqrt(self.n))
        Z[:, ~ok] = 0.0
        return Z


def profile(X: sp.spmatrix, groups: np.ndarray, n_groups: int, min_cells: int) -> Profile:
    X = sp.csc_matrix(X, dtype=np.float64)
    n = X.shape[0]
    sq = X.multiply(X).tocsc()
    mean = np.asarray(X.sum(0)).ravel() / n
    var = np.maximum(np.asarray(sq.sum(0)).ravel() / n - mean * mean, 0.0)
    sd = np.sqrt(var)
    H = sp.csr_matrix((np.ones(n), (groups, np.arange(n))), shape=(n_groups, n))  # cell type indicator
    ng = np.bincount(groups, minlength=n_groups).astype(np.float64)
    g1, g2, g3 = (np.asarray((H @ M).todense()) for M in (X, sq, sq.multiply(X).tocsc()))
    gm = g1 / np.maximum(ng, 1)[:, None]                     # group means
    ss = np.maximum(g2 - g1 * gm, 0.0)
    c3 = g3 - 3 * gm * g2 + 2 * ng[:, None] * gm ** 3
    firing = np.diff(X.indptr)
    # sd > tiny: a feature constant over the cells (within rounding) has no correlation
    candidate = (sd > 1e-12 * np.maximum(mean, 1.0)) & (firing >= min_cells)
    return Profile(X, mean, sd, firing, candidate, g1 - ng[:, None] * mean, ss, c3, ng)


@dataclass(frozen=True)
class Partners:
    """Each feature's best partners: idx (features, top) with -1 where there is none, r the correlations (NaN)."""

    idx: np.ndarray
    r: np.ndarray


def _block_product(Xb, Z: np.ndarray) -> np.ndarray:
    if not sp.issparse(Xb):
        return np.asarray(Xb, dtype=np.float64).T @ Z
    if Xb.nnz > DENSE_SHARE * Xb.shape[0] * Xb.shape[1]:
        return Xb.toarray().T @ Z
    return np.asarray(Xb.T @ Z)


def _top_rows(R: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of R (columns `ids`), by value then column: (columns, values)."""
    part = np.argpartition(-R, k - 1, axis=1)[:, :k] if k < R.shape[1] else np.tile(np.arange(R.shape[1]), (len(R), 1))
    vals = np.take_along_axis(R, part, 1)
    cols = ids[part]
    order = np.lexsort((cols, -vals), axis=1)
    return np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)


def correlate(P: Profile, Q: Profile, top: int, block: int, rows: bool = True, cols: bool = True,
              Z: np.ndarray | None = None) -> tuple[Partners | None, Partners | None]:
    """P's candidates' `top` best partners among Q's candidates (rows) and Q's among P's (cols), by correlation, in
    one pass over P's candidates in blocks of `block`. Z: Q.standardised() when the caller has it."""
    p_ids, q_ids = np.flatnonzero(P.candidate), np.flatnonzero(Q.candidate)
    Fp, Fq = P.X.shape[1], Q.X.shape[1]
    row_idx, row_r = np.full((Fp, top), -1, np.int64), np.full((Fp, top), np.nan)
    col_idx, col_r = np.full((top, Fq), -1, np.int64), np.full((top, Fq), -np.inf)
    if len(p_ids) == 0 or len(q_ids) == 0:
        return (Partners(row_idx, row_r) if rows else None), (Partners(col_idx.T.copy(), np.where(
            col_idx.T >= 0, col_r.T, np.nan)) if cols else None)
    Z = Q.standardised() if Z is None else Z
    Zq = Z[:, q_ids]
    for start in range(0, len(p_ids), block):
        ids = p_ids[start:start + block]
        R = _block_product(P.X[:, ids], Zq) / (P.sd[ids] * np.sqrt(P.n))[:, None]  # (block, Q candidates)
        np.clip(R, -1.0, 1.0, out=R)
        if rows:
            k = min(top, len(q_ids))
            row_idx[ids, :k], row_r[ids, :k] = _top_rows(R, q_ids, k)
        if cols:
            k = min(top, len(ids))
            c, v = _top_rows(R.T, ids, k)                      # (Q candidates, k)
            both_c = np.concatenate([col_idx[:, q_ids].T, c], axis=1)
            both_v = np.concatenate([col_r[:, q_ids].T, v], axis=1)
            order = np.lexsort((np.where(both_c < 0, np.iinfo(np.int64).max, both_c), -both_v), axis=1)[:, :top]
            col_idx[:, q_ids] = np.take_along_axis(both_c, order, 1).T
            col_r[:, q_ids] = np.take_along_axis(both_v, order, 1).T
    col = Partners(col_idx.T.copy(), np.where(col_idx.T >= 0, col_r.T, np.nan)) if cols else None
    return (Partners(row_idx, row_r) if rows else None), col


def shuffle_moments(P: Profile, Q: Profile, i: np.ndarray, j: np.ndarray, r: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the pairs (P's i[k], Q's j[k]) with correlation r[k]: (null_r, null_sd, z, skew) of the within-cell-type
    shuffle (module docstring); z and skew are NaN where the shuffle cannot move the cross product (V = 0: then
    S = E)."""
    out = np.full((4, len(i)), np.nan)
    ng = P.ng
    w2 = np.where(ng >= 2, 1.0 / np.maximum(ng - 1, 1), 0.0)
    w3 = np.where(ng >= 3, ng / np.maximum((ng - 1) * (ng - 2), 1), 0.0)
    for s in range(0, len(i), PAIR_CHUNK):
        a, b, rr = i[s:s + PAIR_CHUNK], j[s:s + PAIR_CHUNK], r[s:s + PAIR_CHUNK]
        scale = P.n * P.sd[a] * Q.sd[b]
        between = np.einsum("gk,gk,g->k", P.dev[:, a], Q.dev[:, b], 1.0 / np.maximum(ng, 1))
        var = np.einsum("gk,gk,g->k", P.ss[:, a], Q.ss[:, b], w2)
        k3 = np.einsum("gk,gk,g->k", P.c3[:, a], Q.c3[:, b], w3)
        within = rr * scale - between
        with np.errstate(divide="ignore", invalid="ignore"):
            out[0, s:s + PAIR_CHUNK] = between / scale
            out[1, s:s + PAIR_CHUNK] = np.sqrt(var) / scale
            out[2, s:s + PAIR_CHUNK] = np.where(var > 0, within / np.sqrt(var), np.nan)
            out[3, s:s + PAIR_CHUNK] = np.where(var > 0, k3 / var ** 1.5, np.nan)
    return out[0], out[1], out[2], out[3]


def _columns(X, idx: np.ndarray) -> np.ndarray:
    cols = X[:, idx]
    return cols.toarray() if sp.issparse(cols) else np.asarray(cols, dtype=np.float64)


def pair_r(P: Profile, Q: Profile, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The correlation of P's feature i[k] with Q's feature j[k], for each k (PAIR_COLUMNS pairs at a time)."""
    out = np.empty(len(i))
    for s in range(0, len(i), PAIR_COLUMNS):
        a, b = i[s:s + PAIR_COLUMNS], j[s:s + PAIR_COLUMNS]
        cov = np.einsum("ck,ck->k", _columns(P.X, a), _columns(Q.X, b)) / P.n - P.mean[a] * Q.mean[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[s:s + PAIR_COLUMNS] = np.clip(cov / (P.sd[a] * Q.sd[b]), -1.0, 1.0)
    return out
