"""`atlas link`: the planted pair of atlases (tests/linkdata.py) is found with the right partner and nothing else is
called; every statistic (the shuffle's moments, its p, Williams' test, the gene overlap, BH, the intervals) is
checked against scipy or statsmodels, or against an exhaustive shuffle, on the same inputs; the table lands in both
atlases, validated; the site shows it."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from builder.atlas.format import read_atlas, validate
from builder.pipeline.links.correlate import correlate, pair_r, profile, shuffle_moments
from builder.pipeline.links.stats import overlap_tests, shuffle_p, williams
from linkdata import B_CELLS, PLANTED, SHARED_GENES, planted
from test_cli import run

ALPHA = 0.05


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    """The planted atlases, linked once (their sites rendered first, so link re-renders them)."""
    from builder.cli import main

    root = tmp_path_factory.mktemp("link")
    truth = planted(root / "data", root / "cache")
    main(["render", "--data-dir", str(root / "data"), "--site", str(root / "site")])
    try:
        main(["link", "--atlas", "la", "--atlas", "lb", "--cache", str(root / "cache"), "--data-dir", str(root / "data"),
              "--site", str(root / "site"), "--quiet"])
    except SystemExit as e:
        assert e.code == 0
    rows = {n: pd.read_parquet(root / "data" / n / "feature_links.parquet") for n in ("la", "lb")}
    return root, truth, rows


# ----- the planted test ----------------------------------------------------------------------------------------

def beyond(rows: pd.DataFrame) -> set:
    return set(zip(*[rows.loc[rows["beyond_nulls"], c] for c in ("layer", "feature", "other_layer", "other_feature")]))


def test_the_planted_program_is_found_with_its_partner_and_nothing_else(linked):
    _, _, rows = linked
    (a, b) = PLANTED["program"]
    assert beyond(rows["la"]) == {(*a, *b)}      # the planted pair, and no other pair of any feature
    assert beyond(rows["lb"]) == {(*b, *a)}
    best = rows["la"][(rows["la"]["layer"] == a[0]) & (rows["la"]["feature"] == a[1]) & (rows["la"]["other_layer"] == b[0])]
    top = best[best["rank"] == 1].iloc[0]
    assert (top["other_feature"], bool(top["mutual"])) == (b[1], True)
    assert top["other_label"] == "planted program B" and top["shared_cell_types"].tolist() == ["T"]
    assert top["overlap"] == len(SHARED_GENES) and top["overlap_genes"].tolist() == SHARED_GENES
    assert top["gene_q"] < 1e-3


def test_features_that_only_mark_one_cell_type_are_not_the_same_program(linked):
    _, _, rows = linked
    (a, b) = PLANTED["marker"]
    la = rows["la"]
    pair = la[(la["layer"] == a[0]) & (la["feature"] == a[1]) & (la["other_layer"] == b[0]) & (la["other_feature"] == b[1])]
    r = pair.iloc[0]
    assert r["rank"] == 1 and r["r"] > 0.99          # the best partner by correlation ...
    assert abs(r["null_r"] - r["r"]) < 0.01           # ... which cell type alone explains
    assert r["q"] > ALPHA and not r["beyond_nulls"]


def test_a_program_the_untrained_twin_has_passes_the_shuffle_but_not_the_twin(linked):
    _, _, rows = linked
    (a, b) = PLANTED["twin"]
    for side, (me, other) in (("la", (a, b)), ("lb", (b, a))):
        t = rows[side]
        r = t[(t["layer"] == me[0]) & (t["feature"] == me[1]) & (t["other_layer"] == other[0]) & (t["rank"] == 1)].iloc[0]
        assert r["other_feature"] == other[1] and r["q"] < 1e-10   # the same program beyond cell type ...
        assert r["twin_q"] > ALPHA and not r["beyond_nulls"]        # ... but no better than the untrained twin


def test_the_shares_per_pair_of_layers_count_the_planted_program(linked):
    root, _, rows = linked
    rec = read_atlas(root / "data" / "la").manifest["links"]["lb"]
    assert rec["cells"] == B_CELLS and rec["kind"] == "atlas" and rec["cell_types"]["groups"] == 4
    pairs = {(p["layer"], p["other_layer"]): p for p in rec["layer_pairs"]}
    assert {k: p["beyond_both"] for k, p in pairs.items()} == {(0, 0): 0, (0, 1): 0, (1, 0): 1, (1, 1): 0}
    p = pairs[(1, 0)]
    ci = sps.binomtest(1, p["tested"]).proportion_ci(0.95, method="exact")
    assert (p["share"], p["share_lo"], p["share_hi"]) == pytest.approx((1 / p["tested"], ci.low, ci.high))
    # the twin's own share: its best partner of the twin-carried program passes the shuffle
    assert pairs[(0, 1)]["twin_matched"] >= 1 and pairs[(0, 1)]["twin_share"] == pytest.approx(
        pairs[(0, 1)]["twin_matched"] / pairs[(0, 1)]["twin_tested"])


# ----- every statistic against scipy / statsmodels / brute force ------------------------------------------------

def test_profiles_are_the_mean_activation_over_each_cells_tokens(linked):
    from builder.atlas.links import read_input
    from builder.pipeline.links.source import locate, profiles, shared_cells

    root, truth, _ = linked
    a = read_input(read_atlas(root / "data" / "la"), 20)
    b = read_input(read_atlas(root / "data" / "lb"), 20)
    A, B = locate(a.manifest, "la", [root / "cache"]), locate(b.manifest, "lb", [root / "cache"])
    cells = shared_cells([A, B], 10)
    assert cells.n == B_CELLS and list(cells.ids[:2]) == ["cell0", "cell1"]
    for L in (0, 1):
        X = profiles(A, L, cells, 32).toarray()
        np.testing.assert_allclose(X, truth["la"][L][:B_CELLS], rtol=1e-6, atol=1e-7)  # float32 codes


def test_top_partners_are_those_of_the_full_correlation_matrix(linked):
    root, truth, rows = linked
    X, Y = truth["la"][1][:B_CELLS], truth["lb"][0]
    groups = truth["groups"][:B_CELLS]
    P, Q = (profile(sp.csc_matrix(M), groups, 4, 10) for M in (X, Y))
    full = np.corrcoef(X.T, Y.T)[:32, 32:]
    fwd, rev = correlate(P, Q, 3, block=5)             # small blocks: the streaming merge is exercised
    for i in range(32):
        want = np.argsort(-full[i], kind="stable")[:3]
        assert fwd.idx[i].tolist() == want.tolist()
        np.testing.assert_allclose(fwd.r[i], full[i, want], atol=1e-10)
    for j in range(24):
        assert rev.idx[j].tolist() == np.argsort(-full[:, j], kind="stable")[:3].tolist()
    la = rows["la"]
    mine = la[(la["layer"] == 1) & (la["other_layer"] == 0)]
    np.testing.assert_allclose(mine["r"], full[mine["feature"], mine["other_feature"]], atol=1e-6)  # float32 codes
    np.testing.assert_allclose(pair_r(P, Q, np.arange(5), np.arange(5)), np.diag(full)[:5], atol=1e-10)


def test_a_profile_stored_dense_gives_what_the_sparse_one_gives(tmp_path):
    from builder.pipeline.links.store import ProfileStore

    rng = np.random.default_rng(5)
    groups = np.arange(120) % 4
    X = rng.gamma(1.0, 1.0, (120, 40)) * (rng.random((120, 40)) < 0.9)   # 90% non-zero: stored dense
    Y = rng.gamma(1.0, 1.0, (120, 30)) * (rng.random((120, 30)) < 0.2)   # 20%: stored sparse
    store = ProfileStore(tmp_path, groups, 4, 3)
    P, Q = store.get("A", 0, lambda: sp.csc_matrix(X)), store.get("B", 0, lambda: sp.csc_matrix(Y))
    assert not sp.issparse(P.X) and sp.issparse(Q.X) and sorted(p.name for p in tmp_path.iterdir()) == [
        "A-00.npy", "B-00.npz"]
    S = profile(sp.csc_matrix(X), groups, 4, 3)
    (f1, r1), (f2, r2) = correlate(P, Q, 3, 7), correlate(S, Q, 3, 7)
    assert (f1.idx == f2.idx).all() and (r1.idx == r2.idx).all()
    np.testing.assert_allclose(f1.r, f2.r, rtol=1e-12)
    i, j = np.arange(10), np.arange(10)
    np.testing.assert_allclose(pair_r(P, Q, i, j), pair_r(S, Q, i, j), rtol=1e-12)
    np.testing.assert_allclose(shuffle_moments(P, Q, i, j, f1.r[i, 0]), shuffle_moments(S, Q, i, j, f1.r[i, 0]),
                               rtol=1e-12)


def _all_shuffles(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """S = sum x * y_shuffled for every within-group permutation of y."""
    idx = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out = []
    for perms in itertools.product(*(itertools.permutations(ix) for ix in idx)):
        yp = y.copy()
        for ix, p in zip(idx, perms):
            yp[ix] = y[list(p)]
        out.append(x @ yp)
    return np.array(out)


def test_the_shuffle_moments_are_those_of_every_shuffle_within_cell_type():
    rng = np.random.default_rng(7)
    groups = np.repeat([0, 1, 2, 3], [3, 4, 5, 1])     # 3! 4! 5! = 17,280 shuffles; a type of one cell too
    n = len(groups)
    X = rng.gamma(0.7, 1.0, (n, 3)) * (rng.random((n, 3)) < 0.6)
    Y = rng.gamma(0.7, 1.0, (n, 3)) * (rng.random((n, 3)) < 0.6)
    P, Q = profile(sp.csc_matrix(X), groups, 4, 1), profile(sp.csc_matrix(Y), groups, 4, 1)
    i, j = np.array([0, 1, 2]), np.array([1, 2, 0])
    r = np.array([np.corrcoef(X[:, a], Y[:, b])[0, 1] for a, b in zip(i, j)])
    null_r, null_sd, z, skew = shuffle_moments(P, Q, i, j, r)
    for k, (a, b) in enumerate(zip(i, j)):
        S = _all_shuffles(X[:, a], Y[:, b], groups)
        scale = n * X[:, a].std() * Y[:, b].std()
        base = n * X[:, a].mean() * Y[:, b].mean()
        assert null_r[k] == pytest.approx((S.mean() - base) / scale, rel=1e-9, abs=1e-12)
        assert null_sd[k] == pytest.approx(S.std() / scale, rel=1e-9)
        assert z[k] == pytest.approx((X[:, a] @ Y[:, b] - S.mean()) / S.std(), rel=1e-9, abs=1e-12)
        assert skew[k] == pytest.approx(sps.skew(S), rel=1e-7, abs=1e-12)


def test_the_shuffle_p_is_the_pearson_iii_tail_and_matches_shuffling_itself():
    z, skew = np.array([1.0, 3.0, 3.0, np.nan, 8.0]), np.array([0.4, 0.0, -0.3, 0.2, 0.5])
    p = shuffle_p(z, skew, 10)
    want = np.minimum(1, 10 * np.array([sps.pearson3.sf(1.0, 0.4), sps.norm.sf(3.0), sps.norm.sf(3.0), 1.0,
                                        sps.pearson3.sf(8.0, 0.5)]))
    np.testing.assert_allclose(p, want, rtol=1e-12)
    # On skewed sparse profiles the tail matters: against 100,000 actual shuffles of a pair near p = 1e-3, the
    # Pearson III tail is within 25% where the normal tail is off tenfold.
    rng = np.random.default_rng(11)
    n, groups = 300, np.arange(300) % 3
    x = rng.gamma(1.0, 0.2, n) * (rng.random(n) < 0.3)
    y = rng.gamma(1.0, 0.2, n) * (rng.random(n) < 0.3)
    y[np.argsort(x)[-12:]] += 0.2                       # a little shared signal in the cells where x is highest
    P, Q = profile(sp.csc_matrix(x[:, None]), groups, 3, 1), profile(sp.csc_matrix(y[:, None]), groups, 3, 1)
    r = np.corrcoef(x, y)[0, 1]
    _, _, zz, sk = shuffle_moments(P, Q, np.array([0]), np.array([0]), np.array([r]))
    hits = 0
    for _ in range(5):                                  # 5 x 20,000 shuffles within cell type
        perm = np.empty((20_000, n), np.int32)
        for g in range(3):
            ix = np.flatnonzero(groups == g)
            perm[:, ix] = ix[np.argsort(rng.random((20_000, len(ix))), axis=1)]
        hits += int(((y[perm] @ x) >= x @ y).sum())
    empirical = hits / 100_000
    assert 5e-4 < empirical < 5e-3
    assert shuffle_p(zz, sk, 1)[0] == pytest.approx(empirical, rel=0.25)
    assert sps.norm.sf(zz[0]) < empirical / 10


def test_williams_t_against_the_published_example_and_scipys_t():
    t, p = williams(0.4, 0.5, 0.1, 103)            # psych::r.test(103, .4, .5, .1): t = -0.89
    assert float(t) == pytest.approx(-0.891, abs=5e-4)
    assert float(p) == pytest.approx(sps.t.sf(float(t), 100))
    # its size: two correlations equal in the population, trivariate normal, one-sided level 5%
    rng = np.random.default_rng(3)
    C = np.array([[1, 0.4, 0.4], [0.4, 1, 0.3], [0.4, 0.3, 1]])
    sims = np.array([np.corrcoef(rng.multivariate_normal(np.zeros(3), C, 150).T)[np.triu_indices(3, 1)]
                     for _ in range(3000)])
    _, ps = williams(sims[:, 0], sims[:, 1], sims[:, 2], 150)
    assert abs((ps < 0.05).mean() - 0.05) < 0.015


def test_gene_overlap_p_and_odds_ratio_are_fishers(linked):
    for k, M, n, N in [(10, 180, 20, 20), (0, 180, 20, 18), (3, 50, 10, 12), (5, 40, 5, 30), (4, 30, 20, 14)]:
        table = [[k, n - k], [N - k, M - n - N + k]]
        odds, p = sps.fisher_exact(table, alternative="greater")
        got_p, got_odds = overlap_tests(k, M, n, N)
        assert float(got_p) == pytest.approx(p, rel=1e-10)
        assert float(got_p) == pytest.approx(sps.hypergeom.sf(k - 1, M, n, N), rel=1e-10)
        assert float(got_odds) == pytest.approx(odds) if np.isfinite(odds) else np.isinf(got_odds)
    _, _, rows = linked
    la = rows["la"].dropna(subset=["gene_p"])
    table = np.stack([la["overlap"], la["gene_universe"]]).T
    assert (table[:, 0] <= 20).all() and (la["gene_p"] <= 1).all()


def test_every_q_is_benjamini_hochberg_over_every_pair_tested(linked):
    _, _, rows = linked
    both = pd.concat([rows["la"], rows["lb"]], ignore_index=True)
    for p, q in (("p", "q"), ("twin_p", "twin_q"), ("gene_p", "gene_q")):
        has = both[p].notna()
        np.testing.assert_allclose(both.loc[has, q], multipletests(both.loc[has, p], method="fdr_bh")[1], rtol=1e-12)
    assert (both["beyond_nulls"] == ((both["q"] <= ALPHA) & (both["twin_q"] <= ALPHA))).all()


def test_each_p_of_null_one_is_its_tail_times_its_candidates(linked):
    _, _, rows = linked
    la = rows["la"]
    want = np.minimum(1, la["n_candidates"] * np.where(la["z"].isna(), 1.0,
                      sps.pearson3.sf(la["z"].fillna(0), np.maximum(la["skew"].fillna(0), 0))))
    np.testing.assert_allclose(la["p"], want, rtol=1e-10)


# ----- the table, the atlases, the command ---------------------------------------------------------------------

def test_both_atlases_hold_their_rows_and_validate(linked):
    root, _, rows = linked
    for name, other in (("la", "lb"), ("lb", "la")):
        assert validate(root / "data" / name) == []
        assert set(rows[name]["other_atlas"]) == {other}
        assert rows[name]["rank"].max() == 3
    assert len(rows["la"]) > len(rows["lb"])              # 32 features a layer against 24


def test_a_row_naming_a_layer_the_atlas_lacks_is_refused(linked, tmp_path):
    from builder.fsutil import sha256_file

    root, _, _ = linked
    atlas = tmp_path / "la"
    shutil.copytree(root / "data" / "la", atlas)
    t = pq.read_table(atlas / "feature_links.parquet").to_pandas()
    t.loc[0, "layer"] = 7
    pq.write_table(pq.read_table(atlas / "feature_links.parquet").from_pandas(t, preserve_index=False,
                   schema=pq.read_schema(atlas / "feature_links.parquet")), atlas / "feature_links.parquet")
    m = json.loads((atlas / "manifest.json").read_text())
    m["tables"]["feature_links"]["sha256"] = sha256_file(atlas / "feature_links.parquet")
    (atlas / "manifest.json").write_text(json.dumps(m))
    problems = validate(atlas)
    assert any("feature_links.parquet: column 'layer' holds layer 7" in p for p in problems), problems


def test_linking_again_gives_the_same_bytes_and_keeps_other_links(linked, tmp_path, capsys):
    root, _, _ = linked
    work = tmp_path / "w"
    shutil.copytree(root, work)
    before = (work / "data" / "la" / "feature_links.parquet").read_bytes()
    args = ["--cache", str(work / "cache"), "--data-dir", str(work / "data"), "--site", str(work / "site"), "--quiet"]
    assert run(["link", "--atlas", "la", "--atlas", "lb", *args], capsys)[0] == 0
    assert (work / "data" / "la" / "feature_links.parquet").read_bytes() == before
    code, out, _ = run(["link", "--atlas", "la", "--twin", "--layers", "1", *args], capsys)
    assert code == 0 and "la layer 1 -> la:twin layer 0" in out
    t = pd.read_parquet(work / "data" / "la" / "feature_links.parquet")
    assert set(t["other_atlas"]) == {"lb", "la:twin"}
    twin = t[t["other_atlas"] == "la:twin"]
    assert set(twin["layer"]) == {1} and twin["twin_r"].isna().all() and twin["overlap"].isna().all()
    assert (twin["beyond_nulls"] == (twin["q"] <= ALPHA)).all()
    rec = read_atlas(work / "data" / "la").manifest["links"]
    assert set(rec) == {"lb", "la:twin"} and rec["la:twin"]["kind"] == "twin"
    assert not (work / "data" / "lb" / "manifest.json").read_text().count("la:twin")


def test_the_command_prints_each_pair_of_layers(linked, tmp_path, capsys):
    root, _, _ = linked
    work = tmp_path / "w"
    shutil.copytree(root, work)
    code, out, err = run(["link", "--atlas", "lb", "--atlas", "la", "--cache", str(work / "cache"), "--data-dir",
                          str(work / "data"), "--site", str(work / "site"), "--layers", "0", "--other-layers", "1"],
                         capsys)
    assert code == 0, err
    assert "lb layer 0 -> la layer 1: 1 of 24 features matched beyond both nulls" in out
    assert "la layer 1 -> lb layer 0: 1 of 32 features matched beyond both nulls" in out
    assert f"{B_CELLS} shared cells" in out and "re-rendered" in out


def test_the_site_shows_the_links(linked):
    from builder.site.render import static_files  # noqa: F401  (the renderer ran in the fixture)

    root, _, _ = linked
    site = root / "site" / "la"
    html = (site / "index.html").read_text()
    boot = json.loads(html.split('<script id="boot" type="application/json">', 1)[1].split("</script>", 1)[0])
    links = boot["links"]
    assert [o["name"] for o in links["others"]] == ["lb"] and links["others"][0]["href"] == "../lb/"
    assert "links" in boot["deps"] and "lib/links.js" in boot["deps"]["feature"]
    data = next((site / "data").iterdir())
    strong = json.loads((data / "links.json").read_text())
    assert strong["matches"] == [1] and strong["rows"]["feature"] == [5] and strong["rows"]["other_feature"] == [7]
    shard = json.loads((data / "links" / "1" / "0.json").read_text())
    assert 5 in shard["rows"]["feature"] and 'href="#/links"' in html
    assert (root / "site" / "lb" / "index.html").is_file()


# ----- real builds: what the export records, read back by link ---------------------------------------------------

SMALL = """[train]
epochs = 1
sample_tokens = 8000
"""


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, tiny):
    """Two tiny scGPT builds (layer 0) of the same 60 bundled cells with SAE seeds 0 and 1 (each with its untrained
    twin)."""
    from builder.cli import main
    from builder.models.bundled import DATA

    root = tmp_path_factory.mktemp("seeds")
    (root / "small.toml").write_text(SMALL)
    for seed in (0, 1):
        try:
            main(["build", "--model", "scgpt", "--checkpoint", str(tiny / "scgpt"), "--data",
                  str(DATA), "--train-sae", "--max-cells", "60", "--layers", "0", "--cell-type-column",
                  "cell_type", "--no-coexpression", "--no-pca-baseline", "--seed", str(seed), "--atlas", f"s{seed}",
                  "--config", str(root / "small.toml"), "--cache", str(root / "cache"), "--data-dir",
                  str(root / "data"), "--site", str(root / "site"), "--quiet"])
        except SystemExit as e:
            assert e.code == 0
    return root


@pytest.mark.slow
def test_a_build_records_the_cache_entries_link_reads(seeds):
    from builder.pipeline.cache import is_done, tree_hash

    m = read_atlas(seeds / "data" / "s0").manifest
    cache = m["cache"]
    for rec in (cache, cache["twin"]):
        plan, stream = seeds / "cache" / rec["plan"]["cache_entry"], seeds / "cache" / rec["stream"]["cache_entry"]
        assert is_done(plan) and is_done(stream) and tree_hash(plan) == rec["plan"]["sha256"]
        assert len([p for p in (stream / "shards").iterdir() if p.is_dir()]) == rec["stream"]["shards"]
    assert cache["plan"]["cache_entry"] != cache["twin"]["plan"]["cache_entry"]
    s1 = read_atlas(seeds / "data" / "s1").manifest["cache"]
    assert s1["stream"]["cache_entry"] != cache["stream"]["cache_entry"]  # another seed, other SAEs


@pytest.mark.slow
def test_two_seeds_and_a_twin_link_from_real_builds(seeds, capsys):
    args = ["--cache", str(seeds / "cache"), "--data-dir", str(seeds / "data"), "--site", str(seeds / "site")]
    code, out, err = run(["link", "--atlas", "s0", "--atlas", "s1", *args], capsys)
    assert code == 0, err
    assert "s0 layer 0 -> s1 layer 0:" in out and "s1 layer 0 -> s0 layer 0:" in out and "re-rendered" in out
    for name in ("s0", "s1"):
        assert validate(seeds / "data" / name) == []
    assert "s0: one model, two SAEs: features found again by s1 beyond both nulls in the same layer (stability " \
           "across seeds): layer 0 " in out
    rec = read_atlas(seeds / "data" / "s0").manifest["links"]["s1"]
    assert rec["cells"] == 60 and rec["cell_types"]["from"] == "atlas s0" and rec["same_model"]
    code, out, err = run(["link", "--atlas", "s0", "--twin", *args], capsys)
    assert code == 0, err
    t = pd.read_parquet(seeds / "data" / "s0" / "feature_links.parquet")
    assert set(t["other_atlas"]) == {"s1", "s0:twin"}
