"""Statistics as map + merge: shard order and shard size do not change results, merged results equal a
whole-dataset computation and a slow token-by-token reference, tests equal scipy/statsmodels, and the
issue-16 points (LCB top genes, ranks from 1, within-gene nulls, SVD shares)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import scipy.sparse as sp
import scipy.stats as sps
from statsmodels.stats.multitest import multipletests

from builder.pipeline.graphs import modules as graphs
from builder.pipeline.statistics import features as st
from builder.pipeline.codes import Codes


def test_importing_the_statistics_does_not_import_torch():
    code = "import sys, builder.pipeline.statistics.features, builder.pipeline.stages.stats, builder.pipeline.graphs.modules; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def dataset(n_cells=40, n_features=12, n_genes=30, k=3, seed=3):
    """Codes of whole cells in dataset order, cell types and donors."""
    rng = np.random.default_rng(seed)
    n_tok = rng.integers(0, 25, n_cells)  # some cells without tokens
    cell = np.repeat(np.arange(n_cells), n_tok).astype(np.int32)
    T = cell.size
    gene = np.concatenate([rng.choice(n_genes, m, replace=False) for m in n_tok]).astype(np.int32)
    idx = np.array([rng.choice(n_features, k, replace=False) for _ in range(T)]).astype(np.uint16)
    val = (np.round(rng.exponential(1.0, (T, k)), 3) * (rng.random((T, k)) > 0.2)).astype(np.float32)
    types = rng.integers(0, 3, n_cells)
    donors = rng.integers(0, 6, n_cells)
    return Codes(idx, val, cell, gene), n_tok, types, donors


def shards_of(c: Codes, n_tok, types, donors, size):
    out = []
    for start in range(0, len(n_tok), size):
        stop = min(start + size, len(n_tok))
        sel = (c.cell >= start) & (c.cell < stop)
        code = np.where(n_tok > 0, types, -1)
        out.append((Codes(c.idx[sel], c.val[sel], c.cell[sel], c.gene[sel]),
                    st.ShardCells(start, n_tok[start:stop], code[start:stop], 3, donors[start:stop], 6)))
    return out


def merged(c, n_tok, types, donors, size, order=None, top=4):
    parts = [st.map_layer(codes, cells, 12, 30, top) for codes, cells in shards_of(c, n_tok, types, donors, size)]
    if order is not None:  # merge is always in shard order; a different arrival order must not matter
        parts = [parts[i] for i in order]
        parts = [p for _, p in sorted(zip(order, parts), key=lambda x: x[0])]
    return st.merge(parts, top)


def test_merge_is_independent_of_order_and_shard_size_and_equals_the_whole_dataset():
    c, n_tok, types, donors = dataset()
    whole = merged(c, n_tok, types, donors, size=len(n_tok))
    a = merged(c, n_tok, types, donors, size=7)
    b = merged(c, n_tok, types, donors, size=7, order=[5, 2, 0, 4, 1, 3])
    s = merged(c, n_tok, types, donors, size=13)
    for key in whole:
        for other in (a, b, s):
            x, y = np.asarray(whole[key]), np.asarray(other[key])
            assert x.shape == y.shape, key
            if x.dtype.kind in "iub":
                assert np.array_equal(x, y), key
            else:
                assert np.allclose(x, y, rtol=1e-12, atol=0), key
        assert np.asarray(a[key]).tobytes() == np.asarray(b[key]).tobytes(), key  # same size, any order: same bytes


def test_merged_statistics_equal_a_slow_reference():
    c, n_tok, types, donors = dataset()
    m = merged(c, n_tok, types, donors, size=9)
    F, G = 12, 30
    fire, total, vmax = np.zeros(F), np.zeros(F), np.zeros(F)
    fg, fg_sq, fg_n, fc = {}, {}, {}, {}
    gene_tokens = np.bincount(c.gene, minlength=G)
    for t in range(len(c.cell)):  # one token at a time, the obvious way
        for j in range(c.idx.shape[1]):
            f, v = int(c.idx[t, j]), float(c.val[t, j])
            if v > 0:
                g = int(c.gene[t])
                fire[f] += 1
                total[f] += v
                vmax[f] = max(vmax[f], v)
                fg[f, g] = fg.get((f, g), 0) + v
                fg_sq[f, g] = fg_sq.get((f, g), 0) + v * v
                fg_n[f, g] = fg_n.get((f, g), 0) + 1
                fc[f, int(c.cell[t])] = fc.get((f, int(c.cell[t])), 0) + v
    feats = st.feature_table(m, F)
    assert np.array_equal(feats["fire_count"], fire) and np.allclose(feats["mean_activation"], total / len(c.cell))
    assert np.allclose(feats["max_activation"], vmax)
    cfg = st.StatsConfig(top_genes=4, min_support=2)
    top = st.top_genes(m, G, cfg)
    assert top["rank"].min() == 1  # ranks start at 1
    for f in range(F):
        cand = []
        for (ff, g), n in fg_n.items():
            if ff == f and n >= 2:
                N = gene_tokens[g]
                mean = fg[f, g] / N
                sd = np.sqrt(max(fg_sq[f, g] / N - mean ** 2, 0) * N / max(N - 1, 1))
                cand.append((mean - 1.645 * sd / np.sqrt(N), n, -g, g))
        expect = [g for *_, g in sorted(cand, reverse=True)[:4]]
        assert top["token_id"][top["feature"] == f].tolist() == expect
        cells = sorted(((v / n_tok[x], -x, x) for (ff, x), v in fc.items() if ff == f), reverse=True)[:4]
        assert m["top_cell"][m["top_f"] == f].tolist() == [x for *_, x in cells]


def test_celltype_mann_whitney_equals_scipy_on_quantized_values_and_is_close_to_the_unquantized_test():
    c, n_tok, types, donors = dataset(n_cells=120, seed=5)
    m = merged(c, n_tok, types, donors, size=50)
    has = n_tok > 0
    code = np.where(has, types, -1)
    type_cells = np.bincount(code[has], minlength=3)
    top = {"feature": m["top_f"], "type": code[m["top_cell"]]}
    cfg = st.StatsConfig()
    r = st.celltype_tests(m, 12, ["a", "b", "c"], type_cells, top, cfg, {"cells": _donor_table(code, donors)})
    a = np.zeros((12, len(n_tok)))
    for t in range(len(c.cell)):
        for j in range(c.idx.shape[1]):
            if c.val[t, j] > 0:
                a[c.idx[t, j], c.cell[t]] += c.val[t, j] / n_tok[c.cell[t]]
    q = np.where(a > 0, st.log_bin(np.where(a > 0, a, 1), st.CELL_BINS_PER_OCTAVE), -1)
    for f in range(12):
        for t in range(3):
            x, y = q[f, has & (types == t)], q[f, has & (types != t)]
            ref = sps.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
            assert r["U"][f, t] == ref.statistic
            assert abs(r["p"][f, t] - ref.pvalue) <= 1e-9 * max(ref.pvalue, 1e-300)
            assert np.isclose(r["auc"][f, t], ref.statistic / (x.size * y.size))
            raw = sps.mannwhitneyu(a[f, has & (types == t)], a[f, has & (types != t)], alternative="greater",
                                   method="asymptotic")
            assert abs(r["p"][f, t] - raw.pvalue) < 0.02  # quantizing to 1/32 octave barely moves p
            assert r["n_firing"][f, t] == ((a[f] > 0) & has & (types == t)).sum()
    assert np.allclose(r["q"].ravel(), multipletests(r["p"].ravel(), method="fdr_bh")[1], rtol=1e-12)
    assert np.array_equal(r["passes"], (r["q"] <= 0.05) & (r["auc"] >= 0.6) & (r["q_donor"] <= 0.05))
    # Donor level: Wilcoxon over donors of mean a in the type minus the rest, as scipy computes it.
    for f in range(12):
        for t in range(3):
            diffs = []
            for d in range(6):
                inn, out = has & (donors == d) & (types == t), has & (donors == d) & (types != t)
                if inn.any() and out.any():
                    diffs.append(a[f, inn].mean() - a[f, out].mean())
            diffs = np.array(diffs)
            if (diffs != 0).any():
                ref = sps.wilcoxon(diffs, alternative="greater")
                assert np.isclose(r["p_donor"][f, t], ref.pvalue, rtol=1e-9)


def _donor_table(code, donors):
    table = np.zeros((6, 3), np.int64)
    ok = code >= 0
    np.add.at(table, (donors[ok], code[ok]), 1)
    return table


def test_a_null_feature_ranks_genes_by_a_confidence_bound_not_by_rare_genes():
    """A feature firing at random on 5% of tokens: the raw mean puts the least-detected genes on top."""
    rng = np.random.default_rng(0)
    n_genes, T = 400, 200_000
    freq = rng.zipf(1.6, n_genes).astype(float)
    gene = rng.choice(n_genes, T, p=freq / freq.sum()).astype(np.int32)
    val = np.where(rng.random(T) < 0.05, rng.exponential(1.0, T), 0).astype(np.float32)[:, None]
    c = Codes(np.zeros((T, 1), np.uint16), val, np.arange(T, dtype=np.int32) // 100, gene)
    m = st.merge([st.map_layer(c, st.ShardCells(0, np.full(T // 100, 100)), 1, n_genes, 5)], 5)
    tokens = np.bincount(gene, minlength=n_genes)
    eligible = m["fg_key"][m["fg_n"] >= 5]  # genes that can rank: quartiles of detection among them
    quartile = np.searchsorted(np.quantile(tokens[eligible], [0.25, 0.5, 0.75]), tokens)
    top = st.top_genes(m, n_genes, st.StatsConfig(top_genes=20, min_support=5))
    raw = st.top_genes(m, n_genes, st.StatsConfig(top_genes=20, min_support=5, lcb_z=0.0))
    low_raw = (quartile[raw["token_id"]] == 0).mean()
    low_lcb = (quartile[top["token_id"]] == 0).mean()
    assert low_raw >= 0.5 and low_lcb <= 0.1, (low_raw, low_lcb)
    assert (top["support"] >= 5).all() and (top["gene_tokens"] == tokens[top["token_id"]]).all()


def gene_only_codes(T=60_000, n_genes=60, n_features=40, seed=0):
    """Features that fire on every token of their genes, and nothing else: co-firing from gene identity only."""
    rng = np.random.default_rng(seed)
    gene = rng.integers(0, n_genes, T).astype(np.int32)
    genes_of = [rng.choice(n_genes, 6, replace=False) for _ in range(n_features)]
    rows, cols = [], []
    for f, gs in enumerate(genes_of):
        t = np.flatnonzero(np.isin(gene, gs) & (rng.random(T) < 0.5))
        rows.append(t)
        cols.append(np.full(t.size, f))
    X = sp.csr_matrix((np.ones(sum(r.size for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(T, n_features))
    k = int(np.diff(X.indptr).max())
    idx = np.zeros((T, k), np.uint16)
    val = np.zeros((T, k), np.float32)
    for t in range(T):
        fs = X.indices[X.indptr[t]:X.indptr[t + 1]]
        idx[t, :fs.size], val[t, :fs.size] = fs, 1.0
    return Codes(idx, val, np.arange(T, dtype=np.int32) // 50, gene), n_genes, n_features


def test_gene_only_features_do_not_beat_the_within_gene_module_null():
    c, G, F = gene_only_codes()
    m = st.merge([st.map_layer(c, st.ShardCells(0, np.full(len(c.cell) // 50, 50)), F, G, 5)], 5)
    A, n_g = graphs.gene_firing(m, F, G)
    E = graphs.within_gene_expectation(A, A, n_g)
    C = graphs.count_matrix(m["co_key"], m["co_n"], F, F)
    real, null = graphs.modules_with_null(C, E, m["fire"], len(c.cell), graphs.GraphConfig())
    assert real["edges"] > 50  # gene identity alone makes a rich PMI graph...
    assert abs(real["edges"] - null["edges"]) <= 0.1 * real["edges"]  # ...which the within-gene null reproduces
    assert abs(real["modules"] - null["modules"]) <= 2


def test_cross_layer_edges_need_more_than_gene_identity_and_a_small_excess():
    rng = np.random.default_rng(1)
    T, n_genes, F = 80_000, 200, 30
    gene = rng.integers(0, n_genes, T).astype(np.int32)
    a_rows, b_rows = [], []
    for f in range(F):
        if f < 10:  # every token of one gene in both layers: a "highway" by raw PMI only
            t = np.flatnonzero(gene == f)
            a_rows.append(t)
            b_rows.append(t)
        elif f < 20:  # the same tokens across genes in both layers: a real link
            t = rng.choice(T, 400, replace=False)
            a_rows.append(t)
            b_rows.append(t)
        else:  # independent, but 5% extra co-firing on a large count
            t = rng.choice(T, 20_000, replace=False)
            a_rows.append(t)
            extra = rng.choice(np.setdiff1d(np.arange(T), t), 1_050, replace=False)
            b_rows.append(np.union1d(rng.choice(T, 20_000, replace=False), extra))
    def codes(rows):
        k = 16
        idx, val, fill = np.zeros((T, k), np.uint16), np.zeros((T, k), np.float32), np.zeros(T, np.int64)
        for f, t in enumerate(rows):
            idx[t, fill[t]] = f
            val[t, fill[t]] = 1
            fill[t] += 1
        return Codes(idx, val, np.arange(T, dtype=np.int32) // 100, gene)
    ca, cb = codes(a_rows), codes(b_rows)
    cells = st.ShardCells(0, np.full(T // 100, 100))
    ma, mb = (st.merge([st.map_layer(x, cells, F, n_genes, 3)], 3) for x in (ca, cb))
    px = st.map_pair(ca, cb, F, F)
    A, n_g = graphs.gene_firing(ma, F, n_genes)
    B, _ = graphs.gene_firing(mb, F, n_genes)
    res = graphs.cross_layer(graphs.count_matrix(px["cx_key"], px["cx_n"], F, F),
                             graphs.within_gene_expectation(A, B, n_g), ma["fire"], mb["fire"], T, graphs.GraphConfig())
    assert sorted(zip(res["a"].tolist(), res["b"].tolist())) == [(f, f) for f in range(10, 20)]
    assert res["raw_edges"] >= 20 and res["expected_raw_edges"] >= 9  # gene identity alone makes ~10 raw edges
    assert (res["p"] < 1e-6).all()


def _merged(x: np.ndarray, a: np.ndarray) -> dict:
    """The stream's merged result (dense.summarize) of held-out tokens x with feature activations a."""
    from builder.pipeline.model.dense import summarize

    n, d = x.shape
    acc = {"n": n, "s1": x.sum(0), "h_n": n, "h_sse": 0.0, "h_s1": x.sum(0), "h_s2": (x * x).sum(), "h_xtx": x.T @ x,
           "h_fire": (a > 0).sum(0), "h_l0": 0, "h_za": a.T @ x, "h_a1": a.sum(0), "h_a2": (a * a).sum(0),
           "gene_ids": np.zeros(0, np.int64), "gene_n": np.zeros(0, np.int64), "gene_sum": np.zeros((0, d))}
    return summarize(acc)


def test_svd_share_sees_a_direction_spread_over_five_top_axes():
    rng = np.random.default_rng(0)
    d, T = 64, 20_000
    x = rng.standard_normal((T, d)) * np.linspace(10, 1, d)
    w = np.zeros((2, d))
    w[0, :5] = 1 / np.sqrt(5)  # spread evenly over the 5 top axes: max |cos| 0.45, "invisible" by the old flag
    w[1, -1] = 1
    out = graphs.svd_comparison(w, _merged(x, np.ones((T, 2))), seed=0)
    assert out["share_10"][0] > 0.99 and out["share_10"][1] < 0.01
    assert abs(out["random_share_10"].mean() - 10 / d) < 0.1


def test_svd_r2_equals_a_regression_on_the_top_principal_scores():
    rng = np.random.default_rng(1)
    d, T, k = 12, 5_000, 4
    x = rng.standard_normal((T, d)) * np.linspace(5, 1, d) + 3
    a = np.column_stack([x[:, 0] + rng.normal(0, 2, T), x[:, -1] + rng.normal(0, 0.1, T), rng.random(T)])
    out = graphs.svd_comparison(rng.standard_normal((3, d)), _merged(x, a), seed=0, ks=(k,))
    xc = x - x.mean(0)
    scores = xc @ np.linalg.eigh(np.cov(xc.T, bias=True))[1][:, ::-1][:, :k]
    for f in range(3):
        X = np.column_stack([np.ones(T), scores])
        resid = a[:, f] - X @ np.linalg.lstsq(X, a[:, f], rcond=None)[0]
        assert np.isclose(out[f"r2_{k}"][f], 1 - resid.var() / a[:, f].var(), rtol=1e-6, atol=1e-9)
    assert out[f"r2_{k}"][0] > 0.7 and out[f"r2_{k}"][1] < 0.05 and out[f"r2_{k}"][2] < 0.01


def test_signed_rank_test_equals_scipy_row_by_row_with_ties_zeros_and_any_donor_count():
    import warnings

    rng = np.random.default_rng(0)
    for n in (1, 3, 8, 13, 14, 30, 51):
        d = np.round(rng.normal(0.2, 1, (12, n)), 1)  # rounded: ties and zeros
        d[:4] = rng.normal(0.2, 1, (4, n))  # untied
        d[4:7, : max(1, n // 3)] = 0  # zeros without ties
        d[7] = 0
        ours = st.signed_rank_greater(d)
        for row, p in zip(d, ours):
            if not (row != 0).any():
                assert p == 1
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = sps.wilcoxon(row, alternative="greater").pvalue
            assert np.isclose(p, ref, rtol=1e-9, atol=0), (n, row, p, ref)


def test_statistics_memory_does_not_grow_with_the_number_of_cells():
    """map + merge shard by shard (50 cells each): at 4x the cells the tracemalloc peak stays within 10% and the
    merged arrays keep their size. Activations take two values and cells hold 20 tokens, so the smaller run already
    fills the feature x gene and feature x feature tables; the cell-type histograms live on a fixed grid."""
    import tracemalloc

    F, G, k, per_shard = 48, 80, 6, 50

    def shard(s):
        rng = np.random.default_rng(s)
        n_tok = np.full(per_shard, 20)
        cell = (np.repeat(np.arange(per_shard), n_tok) + s * per_shard).astype(np.int32)
        gene = np.concatenate([rng.choice(G, m, replace=False) for m in n_tok]).astype(np.int32)
        idx = np.argsort(rng.random((cell.size, F)), axis=1)[:, :k].astype(np.uint16)
        val = rng.choice(np.float32([1, 2]), idx.shape)
        cells = st.ShardCells(s * per_shard, n_tok, rng.integers(0, 3, per_shard), 3, rng.integers(0, 5, per_shard), 5)
        return st.map_layer(Codes(idx, val, cell, gene), cells, F, G, 5)

    def run(n_shards):
        tracemalloc.start()
        m = st.merge((shard(s) for s in range(n_shards)), 5)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, {key: np.asarray(v).nbytes for key, v in m.items()}

    run(2)  # first calls allocate once (compiled kernels)
    small, big = run(8), run(32)
    assert big[0] <= 1.1 * small[0], (small[0], big[0])
    grid = (st.LOG2_HI - st.LOG2_LO) * st.CELL_BINS_PER_OCTAVE * F * 3 * 8  # cell-type histograms: a fixed grid
    for key, size in small[1].items():
        if key.startswith("ct_"):
            assert big[1][key] <= grid
        else:
            assert big[1][key] == size, key
