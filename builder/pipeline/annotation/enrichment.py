"""The two tests of a gene list, vectorized over all lists at once.

- Set test: one-sided hypergeometric test of the overlap between a list and a term (Fisher's exact test,
  alternative "greater"). Overlaps come from one sparse product per block of lists; the p-values are scipy's
  `hypergeom.sf` computed once per universe for the few distinct (overlap, term size, list size) triples.
- Network test: the edges among a list's genes against a degree-preserving null, the maximum-entropy graph
  whose expected degrees equal the real ones (Park & Newman 2004), with a Poisson tail on the expected count.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import betaln
from scipy.stats import poisson


def membership(lists: list[list[int]], n_cols: int) -> sp.csr_matrix:
    """Binary rows x genes matrix from lists of gene indices."""
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    indices = np.fromiter((g for x in lists for g in x), dtype=np.int64, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(len(lists), n_cols))


class SfTable:
    """P(overlap >= k) = scipy's hypergeom.sf(k - 1, N, K, n) for k, n in 0..n_max and every term size K given.

    Built once per universe and shared by every layer, database and baseline (a table per call was what made
    annotation cost grow with the number of layers). The pmf starts at P(0) = prod_i (N-K-i)/(N-i) and steps
    with the exact ratio P(k+1)/P(k); the tail is summed from the far end, so tiny p-values keep their relative
    precision. Tests check the whole table against scipy (relative error <= 1e-9).
    """

    def __init__(self, N: int, term_sizes: np.ndarray, n_max: int):
        self.N = N
        self.K = np.unique(np.asarray(term_sizes, np.int64))
        self.n_max = int(n_max)
        self.pos = np.full(int(self.K.max(initial=0)) + 1, -1, np.int64)
        self.pos[self.K] = np.arange(self.K.size)
        self.table = _hypergeom_tails(N, self.K.astype(np.float64), self.n_max)

    def __call__(self, k: np.ndarray, K: np.ndarray, n: np.ndarray) -> np.ndarray:
        return self.table[k, self.pos[K], n]


def _hypergeom_tails(N: int, K: np.ndarray, n_max: int) -> np.ndarray:
    """(overlap k, term size, list size n) -> P(overlap >= k)."""
    i = np.arange(n_max, dtype=np.float64)
    ratio = np.clip((N - K[:, None] - i) / (N - i), 0.0, None)  # (K, i): P(0) factors
    pmf = np.zeros((n_max + 1, K.size, n_max + 1))
    pmf[0] = np.concatenate([np.ones((K.size, 1)), np.cumprod(ratio, axis=1)], axis=1)
    n = np.arange(n_max + 1, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # the masked cells where a factor is 0
        for k in range(n_max):
            step = (K[:, None] - k) * (n - k) / ((k + 1) * (N - K[:, None] - n + k + 1))
            pmf[k + 1] = np.where((n > k) & (K[:, None] > k), pmf[k] * np.clip(step, 0.0, None), 0.0)
    short = N - K[:, None] < n  # P(0) = 0: the list cannot avoid the term; start from the logpmf instead
    if short.any():
        pmf = np.where(short[None], _betaln_pmf(N, K, n_max), pmf)
    return np.minimum(np.cumsum(pmf[::-1], axis=0)[::-1], 1.0)


def _betaln_pmf(N: int, K: np.ndarray, n_max: int) -> np.ndarray:
    """scipy's hypergeom logpmf formula, exponentiated; exact enough where N - K < n (small universes)."""
    k = np.arange(n_max + 1, dtype=np.float64)[:, None, None]
    K = K[None, :, None]
    n = np.arange(n_max + 1, dtype=np.float64)[None, None, :]
    ok = (k <= n) & (k <= K) & (n - k <= N - K)
    with np.errstate(invalid="ignore", divide="ignore"):
        logpmf = (betaln(K + 1, 1) + betaln(N - K + 1, 1) + betaln(N - n + 1, n + 1)
                  - betaln(k + 1, K - k + 1) - betaln(n - k + 1, N - K - n + k + 1) - betaln(N + 1, 1))
    return np.where(ok, np.exp(np.where(ok, logpmf, 0.0)), 0.0)


def set_tests(F: sp.csr_matrix, T: sp.csc_matrix, sf: SfTable, keep: float = 1.0, block: int = 4096):
    """Every list x term test with overlap >= 1; returns (row, col, k, p) where p <= keep.

    Pairs with no overlap have p = 1; they are not returned but still belong to the family.
    """
    n = np.diff(F.indptr).astype(np.int64)
    K = np.diff(T.indptr).astype(np.int64)
    if n.max(initial=0) > sf.n_max:
        raise ValueError(f"lists of {n.max()} genes exceed the table's {sf.n_max}")
    out = [[], [], [], []]
    for start in range(0, F.shape[0], block):
        O = (F[start:start + block] @ T).tocoo()
        r, c = O.row.astype(np.int64) + start, O.col.astype(np.int64)
        k = np.rint(O.data).astype(np.int64)
        p = sf(k, K[c], n[r])
        sel = p <= keep
        for acc, v in zip(out, (r[sel], c[sel], k[sel], p[sel])):
            acc.append(v)
    return tuple(np.concatenate(a) if a else np.zeros(0, np.int64 if i < 3 else np.float64)
                 for i, a in enumerate(out))


def overlap_members(F: sp.csr_matrix, T: sp.csc_matrix, rows: np.ndarray, cols: np.ndarray) -> sp.csr_matrix:
    """One row per (list, term) pair: the genes they share, as a sparse indicator (indices sorted)."""
    shared = F[rows].multiply(T.T.tocsr()[cols]).tocsr()
    shared.sort_indices()
    return shared


def degree_fit(deg: np.ndarray, tol: float = 1e-10, max_iter: int = 2000) -> np.ndarray:
    """Fitness x per node of the maximum-entropy graph with these expected degrees (Park & Newman 2004).

    Pair (a, b) is linked with probability x_a x_b / (1 + x_a x_b), and every node's expected degree equals
    its observed one. Nodes of equal degree share x, so the fixed point runs over distinct degrees only.
    """
    deg = np.asarray(deg, dtype=np.float64)
    alive = deg > 0
    du, inv, cnt = np.unique(deg[alive], return_inverse=True, return_counts=True)
    x = du / np.sqrt(max(du @ cnt, 1.0))
    for _ in range(max_iter):
        P = x[:, None] * x[None, :]
        s = (cnt[None, :] * x[None, :] / (1 + P)).sum(axis=1) - x / (1 + x * x)  # no self-pair
        new = 0.5 * x + 0.5 * du / np.maximum(s, 1e-300)
        done = np.max(np.abs(new - x) / x, initial=0) < tol
        x = new
        if done:
            break
    out = np.zeros(deg.size)
    out[alive] = x[inv.ravel()]
    return out


def network_tests(F: sp.csr_matrix, A: sp.csr_matrix, x: np.ndarray | None = None, block: int = 4096):
    """Edges among each row's genes, their expectation under the degree-preserving null, and the Poisson tail p.

    `x`: the fitness of `degree_fit` (computed when not given). The sum of independent pair probabilities has
    a smaller variance than the Poisson of the same mean, so the Poisson tail errs towards larger p-values.
    """
    if x is None:
        x = degree_fit(np.asarray(A.sum(axis=1)).ravel())
    e = np.asarray((F @ A).multiply(F).sum(axis=1)).ravel() / 2
    lam = np.zeros(F.shape[0])
    width = int(np.diff(F.indptr).max(initial=0))
    for start in range(0, F.shape[0], block):
        rows = F[start:start + block]
        X = np.zeros((rows.shape[0], width))  # (lists, genes of the list): each gene's fitness
        lens = np.diff(rows.indptr)
        pos = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], lens)
        X[np.repeat(np.arange(rows.shape[0]), lens), pos] = x[rows.indices]
        XX = X[:, :, None] * X[:, None, :]
        lam[start:start + block] = np.triu(XX / (1 + XX), 1).sum(axis=(1, 2))
    p = np.where(e > 0, poisson.sf(e - 1, lam), 1.0)
    return e.astype(np.int64), lam, p
