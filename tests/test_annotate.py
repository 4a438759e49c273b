"""Annotation: exact statistics against scipy/statsmodels, the pooled FDR family, the network null, baselines, CLI."""

import json
import re

import igraph as ig
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.stats import fisher_exact, hypergeom
from statsmodels.stats.multitest import multipletests

from builder.errors import AtlasError
from builder.pipeline.annotation.annotate import ANY, AnnotateConfig, annotate, annotate_baseline
from builder.pipeline.annotation.baselines import Baseline, curveball
from builder.pipeline.annotation.enrichment import SfTable, degree_fit, membership, network_tests, set_tests
from builder.pipeline.annotation.genesets import GeneSets, Network, bundled, load_genesets, read_trrust
from builder.pipeline.multitest import bh, haldane_odds
from test_cli import run
from conftest import SHARED

TRRUST = SHARED / "reference" / "genesets" / "trrust_rawdata.human.tsv"
needs_trrust = pytest.mark.skipif(not TRRUST.is_file(), reason="../shared/reference/genesets not present")
COLUMNS = ["layer", "feature", "gene", "rank"]
OFF = AnnotateConfig(random_genes=False)


@pytest.fixture(scope="module")
def hallmark():
    return bundled("Hallmark")


@pytest.fixture(scope="module")
def universe():
    return sorted({g for gs in bundled("GO_BP").genes for g in gs})


def table_of(lists, layer=0, first=0):
    return pd.DataFrame([(layer, f, g, r) for f, genes in enumerate(lists, first) for r, g in enumerate(genes, 1)],
                        columns=COLUMNS)


def random_case(seed=0, n_genes=300, n_feat=40, n_terms=60):
    rng = np.random.default_rng(seed)
    terms = [sorted(rng.choice(n_genes, rng.integers(5, 80), replace=False)) for _ in range(n_terms)]
    feats = []
    for i in range(n_feat):
        size = int(rng.integers(3, 20))
        if i % 3 == 0:  # planted: mostly from one term
            t = terms[i % n_terms]
            g = set(rng.choice(t, min(size, len(t)), replace=False)) | set(rng.choice(n_genes, 3, replace=False))
        else:
            g = set(rng.choice(n_genes, size, replace=False))
        feats.append(sorted(int(x) for x in g))
    F = membership(feats, n_genes)
    T = membership(terms, n_genes).T.tocsc()
    return F, T, feats, terms


def test_hypergeometric_p_values_equal_scipy_fisher_and_hypergeom():
    F, T, feats, terms = random_case()
    N = F.shape[1]
    r, c, k, p = set_tests(F, T, SfTable(N, np.diff(T.indptr), 25), keep=1.0, block=7)
    got = {(int(i), int(j)): (int(kk), pp) for i, j, kk, pp in zip(r, c, k, p)}
    for i, fg in enumerate(feats):
        for j, tg in enumerate(terms):
            ov = len(set(fg) & set(tg))
            n, K = len(fg), len(tg)
            ref = fisher_exact([[ov, n - ov], [K - ov, N - K - n + ov]], alternative="greater").pvalue
            if ov == 0:
                assert (i, j) not in got and ref == pytest.approx(1.0, rel=1e-12)
                continue
            kk, pp = got[(i, j)]
            assert kk == ov
            assert abs(pp - ref) <= 1e-9 * ref
            assert abs(pp - hypergeom.sf(ov - 1, N, K, n)) <= 1e-9 * pp
    assert np.isfinite(haldane_odds(k, np.diff(F.indptr)[r], np.diff(T.indptr)[c], N)).all()


@pytest.mark.parametrize("N,sizes", [(20000, np.r_[5:40, 40:501:23]), (40, np.array([1, 5, 20, 35, 38, 40]))])
def test_p_value_table_equals_scipy_everywhere(N, sizes):
    table = SfTable(N, sizes, 20)
    k = np.arange(21)[:, None, None]
    n = np.arange(21)[None, None, :]
    ref = hypergeom.sf(k - 1, N, table.K[None, :, None], n)
    tiny = ref < 1e-300
    np.testing.assert_allclose(table.table[~tiny], ref[~tiny], rtol=1e-9, atol=0)
    assert (table.table[tiny] < 1e-290).all()


def test_bh_equals_statsmodels_on_the_full_family_even_from_the_kept_tests():
    F, T, feats, terms = random_case(seed=1, n_feat=60)
    sf = SfTable(F.shape[1], np.diff(T.indptr), 25)
    r, c, k, p = set_tests(F, T, sf, keep=1.0)
    m = F.shape[0] * T.shape[1]
    full = np.ones(m)
    full[r * T.shape[1] + c] = p
    ref = multipletests(full, method="fdr_bh")[1]
    np.testing.assert_allclose(bh(p, m), ref[r * T.shape[1] + c], rtol=1e-12)
    # Keeping only p <= alpha (as annotate does) gives the same q for every test that passes.
    r2, c2, _, p2 = set_tests(F, T, sf, keep=0.05)
    q2 = bh(p2, m)
    passing = q2 <= 0.05
    np.testing.assert_allclose(q2[passing], ref[r2 * T.shape[1] + c2][passing], rtol=1e-12)
    assert passing.sum() == (ref <= 0.05).sum() > 0


def _two_databases(seed=0):
    """A 5-term database and a 400-term one over 600 genes, a small network, and 30 features (10 planted)."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i:03d}" for i in range(600)]
    small = GeneSets("Small", [f"S{i}" for i in range(5)], [sorted(rng.choice(genes, 20, replace=False)) for _ in range(5)])
    large = GeneSets("Large", [f"L{i:03d}" for i in range(400)],
                     [sorted(rng.choice(genes, int(rng.integers(10, 60)), replace=False)) for _ in range(400)])
    hubs = genes[:8]
    net = Network("Net", sorted({tuple(sorted((a, b))) for a in hubs for b in hubs if a != b}
                                | {tuple(sorted(rng.choice(genes, 2, replace=False))) for _ in range(300)}))
    lists = []
    for f in range(30):
        chosen = list(rng.choice(genes, 20, replace=False))
        if f < 3:  # five genes of a small term: p = 2.7e-4, strong in its own family, weak in the pooled one
            chosen = list(small.genes[f][:5]) + [g for g in chosen if g not in small.genes[f]][:15]
        elif f < 9:
            chosen = list(large.genes[f][:10]) + [g for g in chosen if g not in large.genes[f]][:10]
        elif f == 9:
            chosen = hubs + [g for g in chosen if g not in hubs][:12]
        lists.append(chosen)
    return genes, small, large, net, table_of(lists)


def _full_family(table, genes, dbs, net):
    """Every test of the layer by brute force: fisher_exact per feature x term (p = 1 without overlap), and the
    network p of every feature; returns keys and p-values."""
    N = len(genes)
    keys, ps = [], []
    for f, grp in table.groupby("feature"):
        fs = set(grp["gene"])
        for db in dbs:
            for term, members in zip(db.terms, db.genes):
                ov = len(fs & set(members))
                table2 = [[ov, len(fs) - ov], [len(members) - ov, N - len(members) - len(fs) + ov]]
                keys.append((f, db.name, term))
                ps.append(fisher_exact(table2, alternative="greater").pvalue)
    index = {g: i for i, g in enumerate(genes)}
    F = membership([sorted(index[g] for g in grp["gene"]) for _, grp in table.groupby("feature")], N)
    pairs = np.array([(index[a], index[b]) for a, b in net.edges])
    A = sp.csr_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                      shape=(N, N))
    _, _, p_net = network_tests(F, A)
    keys += [(f, net.name, "edges among top genes") for f in sorted(set(table["feature"]))]
    ps += list(p_net)
    return keys, np.asarray(ps)


def test_one_pooled_family_per_layer_equals_statsmodels_on_every_test():
    genes, small, large, net, table = _two_databases()
    cfg = AnnotateConfig(min_size=1, max_size=1000, random_genes=False)
    ann = annotate(table, [small, large], [net], universe=genes, cfg=cfg)
    keys, p = _full_family(table, genes, [small, large], net)
    q = multipletests(p, method="fdr_bh")[1]
    expected = {k: (pp, qq) for k, pp, qq in zip(keys, p, q) if qq <= 0.05}
    enr = ann.enrichments.to_pandas()
    got = {(r.feature, r.database, r.term): (r.p, r.q) for r in enr.itertuples()}
    assert set(got) == set(expected) and len(got) >= 7
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-9)
    assert ann.meta["layers"]["0"]["family_tests"] == len(keys) == 30 * (5 + 400 + 1)
    # Per-database rates count features with a pooled-significant test of that database; "any" the union.
    rates = ann.rates.to_pandas().set_index("database")["annotated"]
    for name in ("Small", "Large", "Net"):
        assert rates[name] == len({f for f, d, _ in expected if d == name})
    assert rates[ANY] == len({f for f, _, _ in expected})
    # Labels come from the same family: the smallest pooled q among set databases.
    lab = ann.labels.to_pandas().set_index("feature")
    for f in lab.index[lab["label"].notna()]:
        best = min((qq, -0, t) for (ff, d, t), (_, qq) in expected.items() if ff == f and d != "Net")
        assert lab.loc[f, "label_q"] == pytest.approx(best[0], rel=1e-9)


def test_pooled_family_differs_from_per_database_families_of_different_sizes():
    genes, small, large, net, table = _two_databases()
    cfg = AnnotateConfig(min_size=1, max_size=1000, random_genes=False)
    keys, p = _full_family(table, genes, [small, large], net)
    per_db = set()
    for name in ("Small", "Large", "Net"):
        idx = [i for i, k in enumerate(keys) if k[1] == name]
        q = multipletests(p[idx], method="fdr_bh")[1]
        per_db |= {keys[i] for i, qq in zip(idx, q) if qq <= 0.05}
    ours = {(r.feature, r.database, r.term) for r in
            annotate(table, [small, large], [net], universe=genes, cfg=cfg).enrichments.to_pandas().itertuples()}
    # The 5-term family passes the planted 5-gene overlaps (p = 2.7e-4); among 12,180 tests they do not.
    planted = {(f, "Small", f"S{f}") for f in range(3)}
    assert planted <= per_db and not planted & ours
    assert ours < per_db


def test_planted_features_get_their_term_as_label_and_random_ones_stay_near_nominal(hallmark, universe):
    rng = np.random.default_rng(0)
    lists = [rng.choice(hallmark.genes[f], 20, replace=False) if f < 20 else rng.choice(universe, 20, replace=False)
             for f in range(300)]
    ann = annotate(table_of(lists, layer=2), load_genesets([]), universe=universe)
    labels = ann.labels.to_pandas().set_index("feature")
    assert (labels.loc[:19, "label"].to_numpy() == np.asarray(hallmark.terms[:20])).all()
    # Random gene lists: BH at 5% over the family keeps the share of annotated features near zero.
    assert labels.loc[20:, "n_enrichments"].gt(0).mean() <= 0.05
    rates = ann.rates.to_pandas().set_index("database")
    assert (rates["null_annotated"] / rates["n_features"]).max() <= 0.05
    assert rates.loc["Hallmark", "annotated"] >= 20
    enr = ann.enrichments.to_pandas()
    assert (enr["q"] <= 0.05).all() and np.isfinite(enr["odds_ratio"]).all()
    row = enr[(enr.feature == 0) & (enr.term == hallmark.terms[0])].iloc[0]
    assert set(row.overlap_genes) <= set(hallmark.genes[0]) and len(row.overlap_genes) == row.overlap
    assert list(row.overlap_genes) == sorted(row.overlap_genes)


def test_label_rule_smallest_q_then_larger_overlap():
    gmt_terms = {"A": ["G%d" % i for i in range(10)], "B": ["G%d" % i for i in range(10)],
                 "C": ["G%d" % i for i in range(5)] + ["H%d" % i for i in range(5)]}
    db = GeneSets("X", list(gmt_terms), [sorted(v) for v in gmt_terms.values()])
    uni = ["G%d" % i for i in range(10)] + ["H%d" % i for i in range(5)] + ["Z%d" % i for i in range(400)]
    ann = annotate(table_of([["G%d" % i for i in range(8)]]), [db], universe=uni,
                   cfg=AnnotateConfig(min_size=3, random_genes=False))
    lab = ann.labels.to_pylist()[0]
    # A and B tie on q and overlap; the name breaks the tie. C overlaps less and has a larger p.
    assert lab["label"] == "A" and lab["n_enrichments"] == 3


def test_only_ranks_up_to_top_n_enter_and_ranks_start_at_one(hallmark, universe):
    rng = np.random.default_rng(3)
    term = list(hallmark.genes[0][:12])
    filler = [g for g in rng.choice(universe, 40, replace=False) if g not in hallmark.genes[0]][:20]
    table = table_of([filler + term])  # the planted genes hold ranks 21..32
    assert annotate(table, [hallmark], universe=universe, cfg=OFF).labels.to_pylist()[0]["label"] is None
    assert annotate(table, [hallmark], universe=universe,
                    cfg=AnnotateConfig(top_n=32, random_genes=False)).labels.to_pylist()[0]["label"] == hallmark.terms[0]
    with pytest.raises(AtlasError, match="rank 0 in row 1; ranks start at 1"):
        annotate(table.assign(rank=table["rank"] - 1), [hallmark], universe=universe)


def test_universe_restricts_lists_and_terms(hallmark, universe):
    inside = set(universe)
    lists = [[g for g in hallmark.genes[0] if g in inside][:15] + ["NOT_A_GENE_1", "NOT_A_GENE_2"]]
    ann = annotate(table_of(lists), [hallmark], universe=universe, cfg=OFF)
    assert ann.meta["layers"]["0"]["genes_outside_universe"] == 2
    assert ann.meta["layers"]["0"]["universe"] == len(universe)
    with pytest.raises(AtlasError, match="universe: no genes"):
        annotate(table_of(lists), [hallmark], universe=[], cfg=OFF)
    with pytest.raises(AtlasError, match="no genes given for layer 0"):
        annotate(table_of(lists), [hallmark], universe={1: universe}, cfg=OFF)


def test_network_null_matches_degree_preserving_rewiring():
    if not TRRUST.is_file():
        pytest.skip("TRRUST not present")
    _, net = read_trrust(TRRUST)
    names = sorted({g for e in net.edges for g in e})
    index = {g: i for i, g in enumerate(names)}
    pairs = np.array([(index[a], index[b]) for a, b in net.edges])
    rng = np.random.default_rng(0)
    deg = np.bincount(pairs.ravel(), minlength=len(names))
    # Sets biased towards hubs, where a naive expectation fails first.
    prob = (deg + 1.0) / (deg + 1.0).sum()
    lists = [sorted(rng.choice(len(names), 20, replace=False, p=prob)) for _ in range(200)]
    F = membership(lists, len(names))
    g = ig.Graph(n=len(names), edges=pairs.tolist())
    counts = []
    for _ in range(30):
        h = g.copy()
        h.rewire(n=10 * h.ecount())  # keeps every degree
        e = np.array(h.get_edgelist())
        A = sp.csr_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                          shape=(len(names),) * 2)
        A.data[:] = 1
        counts.append(network_tests(F, A)[0])
    A = sp.csr_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                      shape=(len(names),) * 2)
    _, lam, _ = network_tests(F, A)
    observed = np.mean(counts, axis=0)
    # The naive d_a d_b / 2M is 50% too high on these hub-heavy sets; the fitted null is within 3%.
    assert abs(lam.sum() - observed.sum()) <= 0.03 * observed.sum()
    assert np.corrcoef(lam, observed)[0, 1] > 0.98
    x = degree_fit(deg)
    expected_degree = np.outer(x, x) / (1 + np.outer(x, x))
    np.fill_diagonal(expected_degree, 0)
    np.testing.assert_allclose(expected_degree.sum(1), deg, rtol=1e-6)


@needs_trrust
def test_network_test_finds_a_regulon_but_not_a_single_hub_edge():
    sets, net = read_trrust(TRRUST)
    tf = max(sets.terms, key=lambda t: len(sets.genes[sets.terms.index(t)]))
    regulon = [tf] + sets.genes[sets.terms.index(tf)][:19]
    universe = sorted({g for e in net.edges for g in e})
    rng = np.random.default_rng(1)
    filler = [g for g in rng.choice(universe, 60, replace=False) if g not in regulon]
    ann = annotate(table_of([regulon, [tf, regulon[1]] + filler[:18]]), [], [net], universe=universe, cfg=OFF)
    enr = ann.enrichments.to_pandas()
    assert set(enr.feature) == {0}
    assert enr.iloc[0]["overlap"] >= 19 and 0 < enr.iloc[0]["edge_density"] <= 1


# Baselines


def test_curveball_lists_keep_sizes_and_gene_frequency():
    rng = np.random.default_rng(0)
    weights = np.r_[np.full(10, 50.0), np.ones(490)]
    lists = [sorted(rng.choice(500, int(rng.integers(5, 20)), replace=False, p=weights / weights.sum()))
             for _ in range(2000)]
    F = membership(lists, 500)
    Z = curveball(F, seed=3)
    assert (np.diff(Z.indptr) == np.diff(F.indptr)).all()
    assert Z.max() == 1  # no gene twice in a list
    np.testing.assert_array_equal(np.asarray(F.sum(0)).ravel(), np.asarray(Z.sum(0)).ravel())
    assert (F.multiply(Z).sum() / F.sum()) < 0.3  # genes really moved (hubs stay shared by chance)
    assert (curveball(F, seed=3) != Z).nnz == 0


def test_a_baseline_is_annotated_exactly_like_features(hallmark, universe):
    rng = np.random.default_rng(5)
    feats = [rng.choice(hallmark.genes[f], 20, replace=False) for f in range(10)] + \
            [rng.choice(universe, 20, replace=False) for _ in range(30)]
    base_lists = [rng.choice(hallmark.genes[f], 20, replace=False) for f in range(10, 14)] + \
                 [rng.choice(universe, 20, replace=False) for _ in range(16)]
    dbs = [hallmark, bundled("KEGG")]
    tables = [table_of(feats, layer=L) for L in (0, 3)]
    ann = annotate(pd.concat(tables), dbs, universe=universe)
    lists = pd.concat([table_of(base_lists, layer=L) for L in (0, 3)]).rename(columns={"feature": "list"})
    rows = annotate_baseline(Baseline("mine", lists, "four planted lists"), ann.rates, dbs, universe=universe).to_pandas()
    as_features = annotate(table_of(base_lists), dbs, universe=universe, cfg=OFF).rates.to_pandas()
    assert set(rows["layer"]) == {0, 3} and set(rows["measure"]) == {"Hallmark", "KEGG", ANY}
    for r in rows.itertuples():
        same = as_features[as_features.database == r.measure].iloc[0]
        assert r.expected == same.annotated / 20
        obs = ann.rates.to_pandas().query("layer == @r.layer and database == @r.measure").iloc[0]
        assert r.observed == obs.annotated / obs.n_features and r.analysis == "annotation"
    assert rows.set_index(["layer", "measure"]).loc[(0, ANY), "expected"] >= 4 / 20
    # random_genes goes through the same path, and rates.null_annotated is its count.
    base = ann.baselines.to_pandas()
    rand = base[base.baseline == "random_genes"].set_index(["layer", "measure"])
    for r in ann.rates.to_pandas().itertuples():
        assert r.null_annotated == round(rand.loc[(r.layer, r.database), "expected"] * r.n_features)
    assert "curveball" in rand["note"].iloc[0]
    off = annotate(pd.concat(tables), dbs, universe=universe, cfg=OFF)
    assert off.baselines.num_rows == 0 and off.rates.column("null_annotated").null_count == off.rates.num_rows


# CLI


def write_genes(path, hallmark, universe, n=60):
    rng = np.random.default_rng(0)
    rows = []
    for f in range(n):
        genes = rng.choice(hallmark.genes[f % 50], 15, replace=False) if f % 2 == 0 else rng.choice(universe, 15)
        rows += [(1, f, g, r) for r, g in enumerate(dict.fromkeys(genes), 1)]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)


@needs_trrust
def test_cli_annotate(tmp_path, capsys, hallmark, universe):
    genes, uni = tmp_path / "genes.csv", tmp_path / "universe.txt"
    write_genes(genes, hallmark, universe)
    uni.write_text("\n".join(universe))
    links = tmp_path / "string.txt"
    links.write_text("protein1 protein2 experimental database combined_score\n" + "".join(
        f"{a} {b} 900 0 900\n" for a, b in zip(hallmark.genes[0][:-1], hallmark.genes[0][1:])))
    out = tmp_path / "ann"
    args = ["annotate", "--genes", str(genes), "--genesets", "Hallmark", "--genesets", "KEGG", "--trrust",
            str(TRRUST), "--string", str(links), "--universe", str(uni), "--out", str(out)]
    code, text, err = run(args, capsys)
    assert code == 0, err
    assert re.search(r"Hallmark: \d+ of 60 features annotated \(\d+\.\d%\); baselines: random_genes", text)
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert (labels[labels.feature % 2 == 0]["label_database"] == "Hallmark").mean() > 0.9
    rates = pq.read_table(out / "rates.parquet").to_pandas()
    assert set(rates.database) == {"Hallmark", "KEGG", "TRRUST", "TRRUST edges", "STRING", ANY}
    base = pq.read_table(out / "baselines.parquet").to_pandas()
    assert set(base.baseline) == {"random_genes"} and set(base.measure) == set(rates.database)
    meta = json.loads((out / "annotate.json").read_text())
    assert meta["databases"]["Hallmark"]["version"] == "MSigDB v7.5.1"
    assert meta["databases"]["STRING"]["channels"] == ["experimental", "database"]
    layer = meta["layers"]["1"]
    assert layer["databases"]["KEGG"]["tests"] == 60 * layer["databases"]["KEGG"]["terms_tested"]
    assert layer["family_tests"] == sum(d["tests"] for d in layer["databases"].values())
    # Same inputs, same bytes.
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run(args, capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


@pytest.mark.parametrize("case,message", [
    ("gmt", r"bad\.gmt:2: malformed GMT line"),
    ("entrez", r"genes\.csv: row 2: gene '7157' looks like an Entrez id"),
    ("trrust", r"trrust\.tsv:2: a TRRUST line has 4"),
    ("string", r"string\.txt: no channel columns .*\(--string-channels combined\)"),
    ("channels", r"Invalid value for '--string-channels': 'experiment': expected 'combined' or a comma-separated"),
    ("columns", r"genes\.csv: missing column\(s\) rank"),
    ("missing", r"nope\.gmt: no such file"),
    ("rank0", r"genes\.csv: row 2: rank 0 \(ranks start at 1"),
    ("alpha0", r"Invalid value for '--alpha': 0\.0 is not in the range 0<x<1"),
    ("alpha2", r"Invalid value for '--alpha': 2\.0 is not in the range 0<x<1"),
    ("topn", r"Invalid value for '--top-n': -3 is not in the range x>=1"),
    ("empty_universe", r"Invalid value for '--universe': .*universe\.txt: holds no gene"),
    ("no_universe", r"give one of --universe FILE .* or --universe-from-table"),
    ("coexpression", r"--baselines coexpression needs --data FILE\.h5ad"),
    ("baseline", r"--baselines: unknown baseline 'pca'"),
    ("sizes", r"--min-size 9 is larger than --max-size 8"),
])
def test_cli_annotate_bad_input(tmp_path, capsys, case, message):
    genes = tmp_path / "genes.csv"
    genes.write_text("layer,feature,gene,rank\n0,0,TP53,1\n0,0,MDM2,2\n")
    uni = tmp_path / "universe.txt"
    uni.write_text("TP53\nMDM2\n" if case != "empty_universe" else "\n")
    args = ["annotate", "--genes", str(genes), "--genesets", "Hallmark", "--out", str(tmp_path / "out")]
    args += [] if case == "no_universe" else ["--universe", str(uni)]
    extra = {"alpha0": ["--alpha", "0"], "alpha2": ["--alpha", "2"], "topn": ["--top-n", "-3"],
             "coexpression": ["--baselines", "random_genes,coexpression"], "baseline": ["--baselines", "pca"],
             "sizes": ["--min-size", "9", "--max-size", "8"], "missing": ["--genesets", str(tmp_path / "nope.gmt")],
             "channels": ["--string-channels", "experiment"]}
    args += extra.get(case, [])
    if case == "gmt":
        (tmp_path / "bad.gmt").write_text("A\t\tTP53\tMDM2\nB\n")
        args += ["--genesets", str(tmp_path / "bad.gmt")]
    elif case == "entrez":
        genes.write_text("layer,feature,gene,rank\n0,0,7157,1\n")
    elif case == "trrust":
        (tmp_path / "trrust.tsv").write_text("TP53\tMDM2\tActivation\t1\nTP53\tMDM2\n")
        args += ["--trrust", str(tmp_path / "trrust.tsv")]
    elif case == "string":
        (tmp_path / "string.txt").write_text("TP53 MDM2 900\n")
        args += ["--string", str(tmp_path / "string.txt")]
    elif case == "columns":
        genes.write_text("layer,feature,gene\n0,0,TP53\n")
    elif case == "rank0":
        genes.write_text("layer,feature,gene,rank\n0,0,TP53,0\n")
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()
