"""Compiled loops of the statistics map (numba, torch-free): the parts that numpy can only do by building one
key per pair of firing features (496 per token at k = 32) and sorting or bincounting them.

Each kernel runs on one thread in a fixed order, so its integer counts are exact and its float sums have the
same bytes on every machine and engine. numba comes with umap-learn; compiled code is cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _firing(idx_row, val_row, buf):
    """Features of one token with a value > 0, sorted ascending, into buf; returns how many."""
    n = 0
    for j in range(idx_row.shape[0]):
        if val_row[j] > 0:
            x = np.int64(idx_row[j])
            i = n
            while i > 0 and buf[i - 1] > x:  # insertion sort: k is small
                buf[i] = buf[i - 1]
                i -= 1
            buf[i] = x
            n += 1
    return n


@njit(cache=True, nogil=True)
def cooccur_upper(idx, val, n_features, acc):
    """acc[i * n_features + j] += tokens on which features i < j both fire (acc: int64, n_features^2)."""
    buf = np.empty(idx.shape[1], np.int64)
    for t in range(idx.shape[0]):
        n = _firing(idx[t], val[t], buf)
        for a in range(n):
            base = buf[a] * n_features
            for b in range(a + 1, n):
                acc[base + buf[b]] += 1


@njit(cache=True, nogil=True)
def cooccur_pair(idx_a, val_a, idx_b, val_b, n_features_b, acc):
    """acc[i * n_features_b + j] += tokens on which feature i of layer a and j of layer b both fire."""
    ba = np.empty(idx_a.shape[1], np.int64)
    bb = np.empty(idx_b.shape[1], np.int64)
    for t in range(idx_a.shape[0]):
        na = _firing(idx_a[t], val_a[t], ba)
        nb = _firing(idx_b[t], val_b[t], bb)
        for a in range(na):
            base = ba[a] * n_features_b
            for b in range(nb):
                acc[base + bb[b]] += 1


@njit(cache=True, nogil=True)
def _counting_order(key, n_keys, order):
    """The stable permutation of `order` that sorts key[order] (counting sort, O(n + n_keys))."""
    start = np.zeros(n_keys + 1, np.int64)
    for e in order:
        start[key[e] + 1] += 1
    for i in range(n_keys):
        start[i + 1] += start[i]
    out = np.empty(order.size, np.int64)
    for e in order:
        out[start[key[e]]] = e
        start[key[e]] += 1
    return out


@njit(cache=True, nogil=True)
def _grow(a, n):
    out = np.empty(max(n, 2 * a.size), a.dtype)
    out[:a.size] = a
    return out


@njit(cache=True, nogil=True)
def feature_gene_sums(idx, val, gene, n_features, n_genes):
    """Per (gene, feature) pair with a firing (value > 0): key g * n_features + f ascending, firing count, sum and
    sum of squares of the values (float64, added in token order, then in top-k order within a token).

    Tokens are grouped by gene (a stable counting sort); each gene's firings are added into per-feature scratch
    sums that stay in cache and come out in key order, so nothing is sorted afterwards."""
    T, k = idx.shape
    tok = _counting_order(gene, n_genes, np.arange(T))
    cnt = np.zeros(n_features, np.int64)
    a1 = np.zeros(n_features, np.float64)
    a2 = np.zeros(n_features, np.float64)
    touched = np.empty(n_features, np.int64)
    cap = 1024
    key, en = np.empty(cap, np.int64), np.empty(cap, np.int64)
    e1, e2 = np.empty(cap, np.float64), np.empty(cap, np.float64)
    m, i = 0, 0
    while i < T:
        gcur, nt, j = np.int64(gene[tok[i]]), 0, i
        while j < T and gene[tok[j]] == gcur:
            t = tok[j]
            for c in range(k):
                x = np.float64(val[t, c])
                if x > 0:
                    ff = np.int64(idx[t, c])
                    if cnt[ff] == 0:
                        touched[nt] = ff
                        nt += 1
                    cnt[ff] += 1
                    a1[ff] += x
                    a2[ff] += x * x
            j += 1
        if m + nt > key.size:
            key, en, e1, e2 = _grow(key, m + nt), _grow(en, m + nt), _grow(e1, m + nt), _grow(e2, m + nt)
        if nt > 32:
            touched[:nt].sort()
        else:
            for a in range(1, nt):  # insertion sort: few features, no call
                x, b = touched[a], a
                while b > 0 and touched[b - 1] > x:
                    touched[b] = touched[b - 1]
                    b -= 1
                touched[b] = x
        for q in range(nt):
            ff = touched[q]
            key[m], en[m], e1[m], e2[m] = gcur * n_features + ff, cnt[ff], a1[ff], a2[ff]
            cnt[ff], a1[ff], a2[ff] = 0, 0.0, 0.0
            m += 1
        i = j
    return key[:m].copy(), en[:m].copy(), e1[:m].copy(), e2[:m].copy()
