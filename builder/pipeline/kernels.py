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
def feature_gene_sums(f, g, v, n_features, n_genes):
    """Per (feature, gene) pair with a firing: key f * n_genes + g ascending, firing count, sum and sum of
    squares of the values (float64, added in token order). f, g, v: one entry per firing, in token order."""
    start = np.zeros(n_features + 1, np.int64)
    for x in f:
        start[x + 1] += 1
    for i in range(n_features):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    gg = np.empty(f.size, np.int64)
    vv = np.empty(f.size, np.float64)
    for e in range(f.size):  # counting sort by feature, stable: token order within a feature
        p = fill[f[e]]
        gg[p] = g[e]
        vv[p] = v[e]
        fill[f[e]] += 1
    key = np.empty(f.size, np.int64)
    cnt = np.empty(f.size, np.int64)
    s1 = np.empty(f.size, np.float64)
    s2 = np.empty(f.size, np.float64)
    m = 0
    for x in range(n_features):
        lo, hi = start[x], start[x + 1]
        if lo == hi:
            continue
        order = np.argsort(gg[lo:hi], kind="mergesort") + lo  # stable: sums in token order
        prev = -1
        for p in order:
            if gg[p] != prev:
                prev = gg[p]
                key[m] = x * n_genes + prev
                cnt[m], s1[m], s2[m] = 0, 0.0, 0.0
                m += 1
            cnt[m - 1] += 1
            s1[m - 1] += vv[p]
            s2[m - 1] += vv[p] * vv[p]
    return key[:m], cnt[:m], s1[:m], s2[:m]
