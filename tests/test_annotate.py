"""Annotation: readers, exact statistics against scipy/statsmodels, the network null, the null baseline, CLI."""

from pathlib import Path

import igraph as ig
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.stats import fisher_exact, hypergeom
from statsmodels.stats.multitest import multipletests

from builder.pipeline.annotate import (AnnotateConfig, annotate, degree_fit, membership, network_tests, null_lists,
                                       set_tests)
from builder.pipeline.multitest import bh, haldane_odds
from builder.errors import AtlasError
from builder.pipeline.genesets import bundled, load_genesets, read_gmt, read_string, read_trrust
from test_cli import run

TRRUST = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "genesets" / "trrust_rawdata.human.tsv"
needs_trrust = pytest.mark.skipif(not TRRUST.is_file(), reason="../shared/reference/genesets not present")


@pytest.fixture(scope="module")
def hallmark():
    return bundled("Hallmark")


@pytest.fixture(scope="module")
def universe():
    return sorted({g for gs in bundled("GO_BP").genes for g in gs})


def random_case(seed=0, n_genes=300, n_feat=40, n_terms=60):
    rng = np.random.default_rng(seed)
    terms = [sorted(rng.choice(n_genes, rng.integers(5, 80), replace=False)) for _ in range(n_terms)]
    feats = []
    for i in range(n_feat):
        size = int(rng.integers(3, 25))
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
    r, c, k, p = set_tests(F, T, keep=1.0, block=7)
    got = {(int(i), int(j)): (int(kk), pp) for i, j, kk, pp in zip(r, c, k, p)}
    for i, fg in enumerate(feats):
        for j, tg in enumerate(terms):
            ov = len(set(fg) & set(tg))
            n, K = len(fg), len(tg)
            table = [[ov, n - ov], [K - ov, N - K - n + ov]]
            ref = fisher_exact(table, alternative="greater").pvalue
            if ov == 0:
                assert (i, j) not in got and ref == pytest.approx(1.0, rel=1e-12)
                continue
            kk, pp = got[(i, j)]
            assert kk == ov
            assert abs(pp - ref) <= 1e-9 * ref
            assert abs(pp - hypergeom.sf(ov - 1, N, K, n)) <= 1e-9 * pp
    assert np.isfinite(haldane_odds(k, np.diff(F.indptr)[r], np.diff(T.indptr)[c], N)).all()


def test_bh_equals_statsmodels_on_the_full_family_even_from_the_kept_tests():
    F, T, feats, terms = random_case(seed=1, n_feat=60)
    r, c, k, p = set_tests(F, T, keep=1.0)
    m = F.shape[0] * T.shape[1]
    full = np.ones(m)
    full[r * T.shape[1] + c] = p
    ref = multipletests(full, method="fdr_bh")[1]
    q = bh(p, m)
    np.testing.assert_allclose(q, ref[r * T.shape[1] + c], rtol=1e-12)
    # Keeping only p <= alpha (as annotate does) gives the same q for every test that passes.
    alpha = 0.05
    r2, c2, _, p2 = set_tests(F, T, keep=alpha)
    q2 = bh(p2, m)
    passing = q2 <= alpha
    np.testing.assert_allclose(q2[passing], ref[r2 * T.shape[1] + c2][passing], rtol=1e-12)
    assert passing.sum() == (ref <= alpha).sum() > 0


def test_planted_features_get_their_term_as_label_and_random_ones_stay_near_nominal(hallmark, universe):
    rng = np.random.default_rng(0)
    rows = []
    for f in range(300):
        genes = rng.choice(hallmark.genes[f], 20, replace=False) if f < 20 else rng.choice(universe, 20, replace=False)
        rows += [(2, f, g, r) for r, g in enumerate(genes)]
    table = pd.DataFrame(rows, columns=["layer", "feature", "gene", "rank"])
    ann = annotate(table, load_genesets([]), [], universe, AnnotateConfig())
    labels = ann.labels.to_pandas().set_index("feature")
    assert (labels.loc[:19, "label"].to_numpy() == np.asarray(hallmark.terms[:20])).all()
    # Random gene lists: BH at 5% over the family keeps the share of annotated features near zero.
    random_annotated = labels.loc[20:, "n_enrichments"].gt(0).mean()
    assert random_annotated <= 0.05
    rates = ann.rates.to_pandas().set_index("database")
    assert (rates["null_annotated"] / rates["n_features"]).max() <= 0.05
    assert rates.loc["Hallmark", "annotated"] >= 20
    enr = ann.enrichments.to_pandas()
    assert (enr["q"] <= 0.05).all() and np.isfinite(enr["odds_ratio"]).all()
    row = enr[(enr.feature == 0) & (enr.term == hallmark.terms[0])].iloc[0]
    assert set(row.overlap_genes) <= set(hallmark.genes[0]) and len(row.overlap_genes) == row.overlap


def test_label_rule_smallest_q_then_larger_overlap():
    gmt_terms = {"A": ["G%d" % i for i in range(10)], "B": ["G%d" % i for i in range(10)],
                 "C": ["G%d" % i for i in range(5)] + ["H%d" % i for i in range(5)]}
    from builder.pipeline.genesets import GeneSets
    db = GeneSets("X", list(gmt_terms), [sorted(v) for v in gmt_terms.values()])
    uni = ["G%d" % i for i in range(10)] + ["H%d" % i for i in range(5)] + ["Z%d" % i for i in range(400)]
    rows = [(0, 0, "G%d" % i, i) for i in range(8)]
    ann = annotate(pd.DataFrame(rows, columns=["layer", "feature", "gene", "rank"]), [db], [], uni,
                   AnnotateConfig(min_size=3))
    lab = ann.labels.to_pylist()[0]
    # A and B tie on q and overlap; the name breaks the tie. C overlaps less and has a larger p.
    assert lab["label"] == "A" and lab["n_enrichments"] == 3


def test_network_null_matches_degree_preserving_rewiring():
    sets, net = read_trrust(TRRUST) if TRRUST.is_file() else (None, None)
    if net is None:
        pytest.skip("TRRUST not present")
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
    expected_degree = (np.outer(*(2 * [degree_fit(deg)])) / (1 + np.outer(*(2 * [degree_fit(deg)]))))
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
    hub_pair = [tf, regulon[1]] + filler[:18]
    rows = [(0, 0, g, r) for r, g in enumerate(regulon)] + [(0, 1, g, r) for r, g in enumerate(hub_pair)]
    ann = annotate(pd.DataFrame(rows, columns=["layer", "feature", "gene", "rank"]), [], [net], universe)
    enr = ann.enrichments.to_pandas()
    assert set(enr.feature) == {0}
    assert enr.iloc[0]["overlap"] >= 19 and 0 < enr.iloc[0]["edge_density"] <= 1


def test_null_pseudo_features_match_sizes_and_gene_frequency():
    rng = np.random.default_rng(0)
    weights = np.r_[np.full(10, 50.0), np.ones(490)]
    lists = [sorted(rng.choice(500, int(rng.integers(5, 20)), replace=False, p=weights / weights.sum()))
             for _ in range(2000)]
    F = membership(lists, 500)
    Z = null_lists(F, seed=3)
    assert (np.diff(Z.indptr) == np.diff(F.indptr)).all()
    assert Z.max() == 1  # no gene twice in a pseudo-feature
    np.testing.assert_array_equal(np.asarray(F.sum(0)).ravel(), np.asarray(Z.sum(0)).ravel())
    assert (F.multiply(Z).sum() / F.sum()) < 0.3  # genes really moved (hubs stay shared by chance)
    assert (null_lists(F, seed=3) != Z).nnz == 0


# Readers


def test_gmt_styles_weights_and_ensembl_ids(tmp_path):
    f = tmp_path / "x.gmt"
    f.write_text("SET_A\thttp://x\ttp53\tMDM2\nSet B (GO:1)\t\tCDKN1A,1.0\tENSG00000141510.17\t\n")
    gs = read_gmt(f)
    assert gs.name == "x" and gs.terms == ["SET_A", "Set B (GO:1)"]
    assert gs.genes == [["MDM2", "TP53"], ["CDKN1A", "TP53"]]


@pytest.mark.parametrize("text,line,what", [
    ("A\t\tTP53\n\nB\t\tMDM2\n", 2, "empty line"),
    ("A\t\tTP53\nB only\n", 2, "malformed GMT line"),
    ("A\t\tTP53\nB\t\t7157\t4193\n", 2, "Entrez"),
    ("A\t\t\t\n", 1, "no genes"),
])
def test_bad_gmt_names_file_and_line(tmp_path, text, line, what):
    f = tmp_path / "bad.gmt"
    f.write_text(text)
    with pytest.raises(AtlasError, match=rf"bad\.gmt:{line}: .*{what}"):
        read_gmt(f)


def test_trrust_with_and_without_header(tmp_path):
    body = "TP53\tMDM2\tActivation\t1\nTP53\tCDKN1A\tActivation\t2\nMYC\tTP53\tUnknown\t3\n"
    a, b = tmp_path / "h.tsv", tmp_path / "n.tsv"
    a.write_text("TF\tTarget\tRegulation\tReference\n" + body)
    b.write_text(body)
    (sa, na), (sb, nb) = read_trrust(a), read_trrust(b)
    assert sa.terms == sb.terms == ["MYC", "TP53"] and sa.genes[1] == ["CDKN1A", "MDM2"]
    assert na.edges == nb.edges == [("CDKN1A", "TP53"), ("MDM2", "TP53"), ("MYC", "TP53")]
    b.write_text(body + "MYC\tCCND1\tActivation\n")
    with pytest.raises(AtlasError, match=r"n\.tsv:4: a TRRUST line has 4 .* got 3"):
        read_trrust(b)


def test_string_ids_scores_and_cut_off(tmp_path):
    links, info = tmp_path / "links.txt", tmp_path / "info.txt"
    links.write_text("protein1 protein2 combined_score\n9606.ENSP1 9606.ENSP2 900\n9606.ENSP1 9606.ENSP3 400\n")
    info.write_text("#string_protein_id\tpreferred_name\tprotein_size\tannotation\n"
                    "9606.ENSP1\tTP53\t393\tx\n9606.ENSP2\tMDM2\t491\tx\n9606.ENSP3\tEP300\t2414\tx\n")
    assert read_string(links, info, 700).edges == [("MDM2", "TP53")]
    assert len(read_string(links, info, 0).edges) == 2
    with pytest.raises(AtlasError, match=r"links\.txt:2: .*protein id.*--string-info"):
        read_string(links)
    sym = tmp_path / "sym.txt"
    sym.write_text("TP53 MDM2 999\nTP53 EP300 800\n")
    assert read_string(sym).edges == [("EP300", "TP53"), ("MDM2", "TP53")]
    sym.write_text("TP53 MDM2\nTP53 EP300\n")
    with pytest.raises(AtlasError, match=r"sym\.txt:1: no combined_score"):
        read_string(sym)
    sym.write_text("TP53 MDM2 999\nTP53 EP300\n")
    with pytest.raises(AtlasError, match=r"sym\.txt:2: STRING line has no score"):
        read_string(sym)


def test_bundled_databases_carry_source_version_and_licence():
    for name in ("GO_BP", "KEGG", "Reactome", "Hallmark", "Canonical"):
        gs = bundled(name)
        assert len(gs.terms) > 40
        assert {"source", "version", "licence", "sha256"} <= set(gs.meta)
    assert all(t.startswith("REACTOME_") for t in bundled("Reactome").terms)
    assert not any(t.startswith("REACTOME_") for t in bundled("Canonical").terms)


# CLI


def write_genes(path, hallmark, universe, n=60):
    rng = np.random.default_rng(0)
    rows = []
    for f in range(n):
        genes = rng.choice(hallmark.genes[f % 50], 15, replace=False) if f % 2 == 0 else rng.choice(universe, 15)
        rows += [(1, f, g, r) for r, g in enumerate(dict.fromkeys(genes))]
    pd.DataFrame(rows, columns=["layer", "feature", "gene", "rank"]).to_csv(path, index=False)


@needs_trrust
def test_cli_annotate(tmp_path, capsys, hallmark, universe):
    genes, uni = tmp_path / "genes.csv", tmp_path / "universe.txt"
    write_genes(genes, hallmark, universe)
    uni.write_text("\n".join(universe))
    links = tmp_path / "string.txt"
    links.write_text("protein1 protein2 combined_score\n" + "".join(
        f"{a} {b} 900\n" for a, b in zip(hallmark.genes[0][:-1], hallmark.genes[0][1:])))
    out = tmp_path / "ann"
    code, text, err = run(["annotate", "--genes", str(genes), "--genesets", "Hallmark", "--genesets", "KEGG",
                           "--trrust", str(TRRUST), "--string", str(links), "--universe", str(uni),
                           "--out", str(out)], capsys)
    assert code == 0, err
    assert "Hallmark: " in text and "null" in text
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert (labels[labels.feature % 2 == 0]["label_database"] == "Hallmark").mean() > 0.9
    rates = pq.read_table(out / "rates.parquet").to_pandas()
    assert set(rates.database) == {"Hallmark", "KEGG", "TRRUST", "TRRUST edges", "STRING", "any database"}
    import json
    meta = json.loads((out / "annotate.json").read_text())
    assert meta["databases"]["Hallmark"]["version"] == "MSigDB v7.5.1"
    assert meta["layers"]["1"]["databases"]["KEGG"]["tests"] == 60 * meta["layers"]["1"]["databases"]["KEGG"]["terms_tested"]
    # Same inputs, same bytes.
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run(["annotate", "--genes", str(genes), "--genesets", "Hallmark", "--genesets", "KEGG", "--trrust",
                str(TRRUST), "--string", str(links), "--universe", str(uni), "--out", str(out)], capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


@pytest.mark.parametrize("case,message", [
    ("gmt", r"bad\.gmt:2: malformed GMT line"),
    ("entrez", r"genes\.csv: row 2: gene '7157' looks like an Entrez id"),
    ("trrust", r"trrust\.tsv:2: a TRRUST line has 4"),
    ("string", r"string\.txt:1: no combined_score"),
    ("columns", r"genes\.csv: missing column\(s\) rank"),
    ("missing", r"nope\.gmt: no such file"),
])
def test_cli_annotate_bad_input(tmp_path, capsys, case, message):
    genes = tmp_path / "genes.csv"
    genes.write_text("layer,feature,gene,rank\n0,0,TP53,0\n0,0,MDM2,1\n")
    args = ["annotate", "--genes", str(genes), "--genesets", "Hallmark", "--out", str(tmp_path / "out")]
    if case == "gmt":
        (tmp_path / "bad.gmt").write_text("A\t\tTP53\tMDM2\nB\n")
        args += ["--genesets", str(tmp_path / "bad.gmt")]
    elif case == "entrez":
        genes.write_text("layer,feature,gene,rank\n0,0,7157,0\n")
    elif case == "trrust":
        (tmp_path / "trrust.tsv").write_text("TP53\tMDM2\tActivation\t1\nTP53\tMDM2\n")
        args += ["--trrust", str(tmp_path / "trrust.tsv")]
    elif case == "string":
        (tmp_path / "string.txt").write_text("TP53 MDM2\n")
        args += ["--string", str(tmp_path / "string.txt")]
    elif case == "columns":
        genes.write_text("layer,feature,gene\n0,0,TP53\n")
    elif case == "missing":
        args += ["--genesets", str(tmp_path / "nope.gmt")]
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "out").exists()
