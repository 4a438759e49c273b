"""`atlas perturb`: the statistics against scipy/statsmodels, and the whole path on the scGPT demo atlas over a
synthetic Perturb-seq dataset (tests/perturbseq.py): the planted TF is specific and its ceiling too, the TF whose
targets were not shifted is not, pseudo-perturbations stay near the nominal false-positive rate, the knocked-down
gene's own token creates no effect, and batches change nothing when balanced and remove a planted confound."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from builder.atlas.format import read_atlas, validate
from builder.atlas.perturbation import write
from builder.pipeline.perturbation.screen import locate, run
from builder.fsutil import sha256_file
from builder.models import load
from builder.models.dataset import read_h5ad
from builder.pipeline.perturbation import response as pp
from builder.pipeline.perturbation import stats as ps
from builder.pipeline.perturbation.stats import PerturbConfig
from builder.pipeline.sae.topk import load_sae
from perturbseq import CONTROL, TF_SHIFTED, TF_UNSHIFTED, make_perturbseq, planted_genes, write_trrust

ALPHA = 0.05


# ----- statistics against the references ---------------------------------------------------------------------

def test_cohen_d_and_mann_whitney_match_scipy_per_column():
    rng = np.random.default_rng(0)
    x1 = np.round(rng.gamma(1.0, size=(30, 6)), 1)  # ties, as zero-inflated activations have
    x0 = np.round(rng.gamma(1.2, size=(90, 6)), 1)
    x1[:, 5] = x0[:, 5] = 0.0  # all ties: untested
    r = ps.compare(x1, x0)
    for j in range(5):
        ref = sps.mannwhitneyu(x1[:, j], x0[:, j], alternative="two-sided", method="asymptotic").pvalue
        assert r["p"][j] == pytest.approx(ref, rel=1e-9)
        sd = np.sqrt((29 * x1[:, j].var(ddof=1) + 89 * x0[:, j].var(ddof=1)) / 118)
        d = (x1[:, j].mean() - x0[:, j].mean()) / sd
        se = np.sqrt(120 / (30 * 90) + d ** 2 / 240)
        assert r["effect"][j] == pytest.approx(d) and r["lo"][j] == pytest.approx(d - 1.959964 * se, rel=1e-5)
    assert not r["tested"][5] and np.isnan(r["q"][5])
    from statsmodels.stats.multitest import multipletests

    assert np.allclose(r["q"][:5], multipletests(r["p"][:5], method="fdr_bh")[1])


def test_batch_model_is_the_ols_coefficient_of_statsmodels():
    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(1)
    b1, b0 = rng.choice(["a", "b", "c"], 25), rng.choice(["a", "b", "c"], 70)
    shift = {"a": 0.0, "b": 2.0, "c": -1.0}
    x1 = rng.normal(size=(25, 3)) + 0.7 + np.array([shift[b] for b in b1])[:, None]
    x0 = rng.normal(size=(70, 3)) + np.array([shift[b] for b in b0])[:, None]
    r = ps.compare(x1, x0, b1, b0)
    for j in range(3):
        df = pd.DataFrame({"y": np.r_[x1[:, j], x0[:, j]], "pert": np.r_[np.ones(25), np.zeros(70)],
                           "batch": np.r_[b1, b0]})
        fit = smf.ols("y ~ pert + C(batch)", df).fit()
        s = np.sqrt(fit.scale)
        assert r["beta"][j] == pytest.approx(fit.params["pert"], rel=1e-8)
        assert r["se"][j] == pytest.approx(fit.bse["pert"], rel=1e-8)
        assert r["effect"][j] == pytest.approx(fit.params["pert"] / s, rel=1e-8)
        lo, hi = fit.conf_int().loc["pert"]
        assert (r["lo"][j], r["hi"][j]) == pytest.approx((lo / s, hi / s), rel=1e-8)


def test_van_elteren_is_mann_whitney_per_batch_combined():
    rng = np.random.default_rng(3)
    x1, x0 = np.round(rng.gamma(1.0, size=(40, 5)), 1), np.round(rng.gamma(1.3, size=(90, 5)), 1)
    one = ps.van_elteren(x1, x0, np.zeros(40), np.zeros(90))  # one batch: Mann-Whitney, no continuity correction
    ref = sps.mannwhitneyu(x1, x0, axis=0, method="asymptotic", use_continuity=False).pvalue
    assert np.allclose(one, ref, rtol=1e-10)
    b1, b0 = rng.choice(["a", "b", "c"], 40), rng.choice(["a", "b", "c", "d"], 90)  # d: controls only, ignored
    p = ps.van_elteren(x1, x0, b1, b0)
    for j in range(5):
        num = var = 0.0
        for s in "abc":
            y1, y0 = x1[b1 == s, j], x0[b0 == s, j]
            n1, n0 = len(y1), len(y0)
            u = sps.mannwhitneyu(y1, y0).statistic
            tie = sps.tiecorrect(sps.rankdata(np.r_[y1, y0]))
            w = 1 / (n1 + n0 + 1)
            num += w * (u - n1 * n0 / 2)
            var += w * w * n1 * n0 * (n1 + n0 + 1) / 12 * tie
        assert p[j] == pytest.approx(2 * sps.norm.sf(abs(num / np.sqrt(var))), rel=1e-9)


def test_enrichment_is_fisher_exact_and_the_interval_clopper_pearson():
    rng = np.random.default_rng(2)
    for _ in range(20):
        top, targets = rng.random(400) < 0.1, rng.random(400) < rng.uniform(0.02, 0.2)
        odds, p, k = ps.enrichment(top, targets)
        a, n, K = int((top & targets).sum()), int(top.sum()), int(targets.sum())
        table = [[a, n - a], [K - a, 400 - n - K + a]]
        assert p == pytest.approx(sps.fisher_exact(table, alternative="greater")[1], rel=1e-9) and k == a
        assert odds == pytest.approx((a + 0.5) * (400 - n - K + a + 0.5) / ((n - a + 0.5) * (K - a + 0.5)))
    ci = sps.binomtest(3, 48).proportion_ci(method="exact")
    assert ps.proportion(3, 48) == pytest.approx({"fraction": 3 / 48, "ci_lo": ci.low, "ci_hi": ci.high})
    assert ps.proportion(3, 48)["ci_lo"] == pytest.approx(0.0131, abs=1e-4)  # pipeline.md flaw 12: 1.3-17%
    assert ps.proportion(0, 0)["fraction"] is None


def test_verdicts_and_the_fdr_family_of_tfs():
    assert ps.verdict(0.01, 0.5) == "specific"
    assert ps.verdict(0.2, 0.01) == "not specific" and ps.verdict(None, 0.01) == "not specific"
    assert ps.verdict(0.2, 0.2) == "no signal" and ps.verdict(None, None) == "no signal"
    from statsmodels.stats.multitest import multipletests

    q = ps.fdr_with_missing([0.01, None, 0.02])  # a TF with no responding feature counts as p = 1
    assert q[1] is None and np.allclose([q[0], q[2]], multipletests([0.01, 1.0, 0.02], method="fdr_bh")[1][[0, 2]])


def test_top_set_takes_positive_scores_only_ties_by_position():
    assert ps.top_set(np.array([0.0, 3.0, 1.0, 3.0, -1.0]), 2).tolist() == [False, True, False, True, False]
    assert ps.top_set(np.array([0.0, 2.0, 0.0]), 5).tolist() == [False, True, False]


# ----- the whole path on the demo atlas -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(demo_build, tmp_path_factory):
    """A copy of the scGPT demo atlas and its site, the Perturb-seq file and the TRRUST file."""
    root = tmp_path_factory.mktemp("perturb")
    shutil.copytree(demo_build.data / "scgpt-demo", root / "data" / "scgpt-demo")
    shutil.copytree(demo_build.site / "scgpt-demo", root / "site" / "scgpt-demo")
    make_perturbseq(root / "screen.h5ad", n_ctrl=240, n_pert=40)
    write_trrust(root / "trrust.tsv")
    return root, demo_build.root / "cache"


def perturb_cli(inputs, data_dir: Path, site: Path, *more: str) -> str:
    """`atlas perturb` on the screen (5 pseudo-perturbations per perturbation); returns what it printed."""
    import contextlib
    import io

    from builder.cli import main

    root, cache = inputs
    args = ["perturb", "--atlas", "scgpt-demo", "--data", str(root / "screen.h5ad"), "--perturbation-column", "gene",
            "--control", CONTROL, "--trrust", str(root / "trrust.tsv"), "--pseudo", "5", "--cache", str(cache),
            "--data-dir", str(data_dir), "--site", str(site), "--quiet", *more]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(args)
        except SystemExit as e:
            assert e.code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def perturbed(inputs):
    """`atlas perturb` run once on the copy, with the files and manifest from before."""
    root, _ = inputs
    atlas = root / "data" / "scgpt-demo"
    before = {p.name: sha256_file(p) for p in atlas.iterdir()}
    manifest = json.loads((atlas / "manifest.json").read_text())
    printed = perturb_cli(inputs, root / "data", root / "site")
    return read_atlas(atlas), before, manifest, printed


def test_the_planted_tf_is_specific_and_the_unshifted_one_is_not(perturbed):
    atlas, *_ = perturbed
    tf = {r["perturbation"]: r for r in atlas.table("tf_specificity").to_pylist()}
    spi1, klf6 = tf[TF_SHIFTED], tf[TF_UNSHIFTED]
    assert spi1["is_tf"] and spi1["verdict"] == "specific" and spi1["q"] < ALPHA and spi1["ceiling_q"] < ALPHA
    assert spi1["n_responding"] >= 1 and spi1["n_targets"] == 30 and spi1["overlap"] >= 3
    assert klf6["is_tf"] and klf6["verdict"] != "specific" and not klf6["ceiling_q"] < ALPHA  # even DE finds nothing
    assert all(r["kd_efficiency"] > 0.7 for r in tf.values())  # each knockdown kept ~10% of the gene's counts
    nt = [tf[g] for g in planted_genes()["non_tf"]]
    assert all(r["is_tf"] is False and r["target_set"] in (TF_SHIFTED, TF_UNSHIFTED) for r in nt)
    assert all(r["verdict"] != "specific" for r in nt)  # the negative control


def test_the_manifest_records_source_parameters_and_summary(perturbed, inputs):
    atlas, *_ = perturbed
    rec = atlas.manifest["perturbation"]["screen"]
    root, _ = inputs
    assert rec["source"] == {"file": "screen.h5ad", "sha256": sha256_file(root / "screen.h5ad"), "n_cells": 400,
                             "perturbation_column": "gene", "control": CONTROL, "batch_column": None,
                             "counts": "X"}
    assert rec["parameters"]["min_cells"] == 20 and rec["parameters"]["layers"] == [0, 1, 2, 3]
    s = rec["summary"]
    assert (s["n_tf"], s["n_specific"], s["ceiling_n_specific"], s["negative_n"]) == (2, 1, 1, 2)
    ci = sps.binomtest(1, 2).proportion_ci(method="exact")
    assert (s["fraction"], s["ci_lo"], s["ci_hi"]) == pytest.approx((0.5, ci.low, ci.high))
    assert (s["ceiling_fraction"], s["negative_n_specific"], s["negative_fraction"]) == (0.5, 0, 0.0)
    assert set(s["pseudo"]) >= {"n_pseudo", "mean_responding", "false_positive_rate"}


def test_pseudo_perturbations_stay_near_the_nominal_false_positive_rate(perturbed):
    atlas, *_ = perturbed
    p = atlas.manifest["perturbation"]["screen"]["summary"]["pseudo"]
    assert p["n_pseudo"] == 20 and p["tests"] > 20_000
    # A test that ignored ties or the pairing of groups would leave this band; BH keeps the null count near 0.
    assert 0.01 <= p["false_positive_rate"] <= 2 * ALPHA + 0.01 and p["mean_responding"] <= 1.0


def test_tf_q_values_are_bh_across_tfs_and_response_q_within_a_perturbation(perturbed):
    from statsmodels.stats.multitest import multipletests

    atlas, *_ = perturbed
    tf = [r for r in atlas.table("tf_specificity").to_pylist() if r["is_tf"]]
    p = [1.0 if r["p"] is None else r["p"] for r in tf]
    q = multipletests(p, method="fdr_bh")[1]
    assert all(r["q"] is None or r["q"] == pytest.approx(v) for r, v in zip(tf, q))
    resp = atlas.table("perturbation_response").to_pandas()
    assert set(resp["dataset"]) == {"screen"} and (resp["n_ctrl"] == 240).all() and (resp["n_pert"] == 40).all()
    spi1 = resp[resp.perturbation == TF_SHIFTED]
    assert (spi1["q"] < ALPHA).sum() == next(r["n_responding"] for r in tf if r["perturbation"] == TF_SHIFTED)
    assert spi1.groupby("layer")["rank"].min().eq(1).all() and (spi1["ci_lo"] <= spi1["effect"]).all()


def test_only_the_two_tables_change_and_the_site_is_rendered_again(perturbed, inputs):
    atlas, before, manifest, printed = perturbed
    after = {p.name: sha256_file(p) for p in atlas.path.iterdir()}
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed == {"manifest.json", "perturbation_response.parquet", "tf_specificity.parquet"}
    new = dict(atlas.manifest)
    assert {k: v for k, v in new.items() if k not in ("perturbation", "tables")} == \
        {k: v for k, v in manifest.items() if k != "tables"}
    assert validate(atlas.path) == []
    assert "re-rendered" in printed and "TFs specific: 1 of 2" in printed
    root, _ = inputs
    hit = atlas.table("perturbation_response").to_pandas().query("q < 0.05").iloc[0]
    site = root / "site" / "scgpt-demo" / "data"
    shards = [json.loads(p.read_text()) for p in site.glob(f"*/feat/{hit.layer}/*.json")]
    shard = next(s for s in shards if hit.feature in s["features"]["feature"])
    rows = [dict(zip(shard["perturbation"], values)) for values in zip(*shard["perturbation"].values())]
    assert any(r["feature"] == hit.feature and r["perturbation"] == hit.perturbation and r["dataset"] == "screen"
               for r in rows)


def test_the_site_shows_the_verdicts_and_the_fraction(perturbed, inputs, page):
    """What `atlas perturb` wrote, as a reader sees it: the TF pages carry the verdicts, the overview the fraction."""
    import threading

    from builder.site.serve import make_server

    root, _ = inputs
    tf = {r["perturbation"]: r for r in perturbed[0].table("tf_specificity").to_pylist()}
    srv = make_server(root / "site", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}/scgpt-demo/"
    try:
        for gene, start in ((TF_SHIFTED, "Specific:"), (TF_UNSHIFTED, "No signal:")):
            page.goto("about:blank")
            page.goto(f"{base}#/tf/{gene}")
            page.wait_for_selector("main .tf-dataset .verdict")
            assert start in page.locator("main .tf-dataset .verdict").inner_text()
        nt = planted_genes()["non_tf"][0]  # a negative control: tested against the targets of the nearest TF
        page.goto("about:blank")
        page.goto(f"{base}#/tf/{nt}")
        page.wait_for_selector("main .tf-dataset .verdict")
        target = tf[nt]["target_set"]
        assert target in (TF_SHIFTED, TF_UNSHIFTED) and "negative control" in page.locator("main .verdict").inner_text()
        assert f"of {target}" in page.locator("main .tf-dataset dl").inner_text()
        page.goto("about:blank")
        page.goto(f"{base}#/tf/{TF_SHIFTED}")
        page.wait_for_selector("main .tf-features tbody tr")
        assert page.locator("main .tf-features tbody tr td:first-child a").count() == tf[TF_SHIFTED]["n_responding"]
        page.goto("about:blank")
        page.goto(f"{base}#/")
        page.wait_for_selector("main .interventions-summary .tf-summary tbody td")
        row = [c.inner_text() for c in page.locator("main .interventions-summary .tf-summary tbody td").all()]
        assert row[0] == "screen" and row[1].startswith("1 of 2 (50.0%)")
        assert page.problems == []
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_same_inputs_give_the_same_bytes(perturbed, inputs, demo_build, tmp_path):
    atlas, *_ = perturbed
    shutil.copytree(demo_build.data / "scgpt-demo", tmp_path / "data" / "scgpt-demo")
    perturb_cli(inputs, tmp_path / "data", tmp_path / "site")
    again = tmp_path / "data" / "scgpt-demo"
    assert {p.name: sha256_file(p) for p in again.iterdir()} == {p.name: sha256_file(p) for p in atlas.path.iterdir()}


def test_other_datasets_rows_are_kept_and_a_rerun_replaces_its_own(perturbed, tmp_path):
    atlas, *_ = perturbed
    copy = tmp_path / "scgpt-demo"
    shutil.copytree(atlas.path, copy)
    a = read_atlas(copy)
    row = {"dataset": "other", "perturbation": "GATA1", "layer": 0, "feature": 1, "effect": 0.5, "ci_lo": 0.1,
           "ci_hi": 0.9, "p": 0.01, "q": 0.02, "n_pert": 30, "n_ctrl": 100, "rank": 1}
    tf = {"dataset": "other", "perturbation": "GATA1", "is_tf": True, "verdict": "no signal"}
    a = write(a.path, "other", [row], [tf], {"summary": {}})
    resp = a.table("perturbation_response").to_pandas()
    assert set(resp["dataset"]) == {"screen", "other"} and set(a.manifest["perturbation"]) == {"screen", "other"}
    a = write(a.path, "screen", [], [], {"summary": {}})  # a rerun of `screen` with no rows replaces all of its rows
    assert set(a.table("perturbation_response").to_pandas()["dataset"]) == {"other"}
    assert a.table("features").to_pandas().equals(atlas.table("features").to_pandas())


def test_on_target_from_the_command_line_is_recorded(perturbed, inputs, tmp_path):
    atlas, *_ = perturbed
    shutil.copytree(atlas.path, tmp_path / "data" / "scgpt-demo")
    printed = perturb_cli(inputs, tmp_path / "data", tmp_path / "site", "--on-target", "0.5", "--pseudo", "0")
    rec = read_atlas(tmp_path / "data" / "scgpt-demo").manifest["perturbation"]["screen"]
    assert rec["parameters"]["on_target"] == 0.5 and set(rec["on_target"]) == {r["perturbation"] for r in
                                                                                atlas.table("tf_specificity").to_pylist()}
    removed = sum(r["removed"] for r in rec["on_target"].values())
    assert removed > 0 and f"on-target knockdown (--on-target 0.5): {removed} perturbed cells left out" in printed
    assert all(r["threshold"] is not None and r["controls"] <= 240 for r in rec["on_target"].values())


# ----- library-level runs on the demo model: the own token and batches -------------------------------------

@pytest.fixture(scope="module")
def model(demo_build):
    atlas = read_atlas(demo_build.data / "scgpt-demo")
    src = locate(atlas.manifest, atlas.name, atlas.path, None, None, None, demo_build.root / "cache")
    adapter = load(src.family, src.checkpoint, seed=src.seed)
    return adapter, {L: load_sae(p) for L, p in src.saes.items()}, src.layers


def encoder(model, path: Path, saes=None, layers=None) -> tuple:
    adapter, all_saes, all_layers = model
    ds = read_h5ad(path)
    saes = saes or all_saes
    return ds, pp.Encoder(adapter, adapter.prepare(ds), saes, layers or all_layers, memo=True)


def plant_gene_feature(model, ds, layer: int, gene: str) -> tuple:
    """The layer's SAE with one feature rewritten to fire exactly at `gene`'s token: its encoder reads the
    direction separating that gene's positions from the others (measured on 60 cells), scaled so that it enters
    the top k there and stays negative (inactive) elsewhere."""
    from builder.models import stream

    adapter, saes, _ = model
    prepared = adapter.prepare(ds)
    tok = int(adapter.vocab[gene])
    xs, ids = [], []
    for chunk in stream(adapter, prepared, [layer], 1, None, np.arange(60)):
        xs.append(chunk.acts[layer])
        ids.append(chunk.genes)
    x, ids = np.concatenate(xs).astype(np.float64), np.concatenate(ids)
    at = ids == tok
    u = x[at].mean(0) - x[~at].mean(0)
    proj = x @ u
    assert proj[~at].max() < proj[at].min(), "the gene's positions are not linearly separable here"
    thr = (proj[~at].max() + proj[at].min()) / 2
    scale = 1e3 / (proj[at].min() - thr)
    sae = copy.deepcopy(saes[layer])
    f = int(np.argmin(np.abs(sae.b_enc.detach().numpy())))
    with torch.no_grad():
        sae.W_enc[:, f] = torch.as_tensor(u * scale, dtype=torch.float32)
        sae.b_enc[f] = float(scale * (u @ sae.b_dec.double().numpy() - thr))
    return sae, f


def test_the_knocked_down_gene_s_own_token_creates_no_effect(model, tmp_path):
    """A feature that fires only at gene G's token: knocking G down completely (nothing downstream) makes it
    respond when the controls keep G's token, and not when both sides are tokenized without G."""
    gene = "LAMTOR1"  # detected in most dendritic cells
    path = make_perturbseq(tmp_path / "own.h5ad", n_ctrl=120, n_pert=40, tfs=False, extra={gene: 0.0})
    ds, _ = encoder(model, path)
    sae, f = plant_gene_feature(model, ds, 0, gene)
    ds, enc = encoder(model, path, saes={0: sae}, layers=[0])
    m, _, _ = enc.summarise(np.arange(60))
    assert (m[:, f] > 0).mean() > 0.5  # it fires, in the cells that express G
    cfg = PerturbConfig(pseudo=0)
    design = pp.read_design(ds, "gene", CONTROL, None, cfg)
    kept, _, _ = run(enc, ds, design, None, cfg, "own", drop_gene=False)
    dropped, _, _ = run(enc, ds, design, None, cfg, "own")
    hit = [r for r in kept if r["feature"] == f]
    assert hit and hit[0]["q"] < 1e-6 and hit[0]["effect"] < -1  # the trivial effect the drop removes
    assert not [r for r in dropped if r["feature"] == f]  # silent on both sides: not even tested
    assert sum(r["q"] < ALPHA for r in dropped) <= 1


def test_batches_change_nothing_when_balanced(model, inputs):
    root, _ = inputs
    ds, enc = encoder(model, root / "screen.h5ad")
    cfg = PerturbConfig(pseudo=0)
    targets = {TF_SHIFTED: set(planted_genes()["targets"][TF_SHIFTED]),
               TF_UNSHIFTED: set(planted_genes()["targets"][TF_UNSHIFTED])}
    out = {}
    for b in (None, "batch"):
        design = pp.read_design(ds, "gene", CONTROL, b, cfg)
        out[b] = run(enc, ds, design, targets, cfg, "screen")
    verdicts = [{r["perturbation"]: r["verdict"] for r in out[b][1]} for b in out]
    assert verdicts[0] == verdicts[1] and verdicts[0][TF_SHIFTED] == "specific"
    key = lambda r: (r["perturbation"], r["layer"], r["feature"])  # noqa: E731
    a = {key(r): r["effect"] for r in out[None][0]}
    b = {key(r): r["effect"] for r in out["batch"][0]}
    both = sorted(set(a) & set(b))
    assert len(both) > 100 and np.corrcoef([a[k] for k in both], [b[k] for k in both])[0, 1] > 0.95


def test_a_batch_column_removes_a_planted_batch_confound(model, tmp_path):
    """CONF knocks down a gene with no downstream effect, but most of its cells are in batch b2, which has a
    technical shift, and most controls in b1: without batches many features 'respond'; with them, none."""
    path = make_perturbseq(tmp_path / "conf.h5ad", n_ctrl=240, n_pert=40, tfs=False,
                           confound=planted_genes()["non_tf"][0])
    ds, enc = encoder(model, path)
    cfg = PerturbConfig(pseudo=0)
    n = {}
    for b in (None, "batch"):
        rows, tf, _ = run(enc, ds, pp.read_design(ds, "gene", CONTROL, b, cfg), None, cfg, "conf")
        n[b] = sum(r["q"] < ALPHA for r in rows)
    assert n[None] >= 20 and n["batch"] <= 2, n


def test_on_target_keeps_the_cells_whose_gene_is_down(tmp_path):
    """--on-target: a perturbed cell is kept when its gene's CP10k is at or below the quantile of the controls'
    (computed here from the AnnData alone); half of the cells escape the knockdown, and those are the ones removed."""
    import anndata as ad

    path = make_perturbseq(tmp_path / "esc.h5ad", n_ctrl=200, n_pert=80, escape=0.5)
    ds = read_h5ad(path)
    cfg = PerturbConfig(min_cells=10, on_target=0.5)
    design = pp.select_on_target(ds, pp.read_design(ds, "gene", CONTROL, None, cfg), pp.gene_columns(ds), cfg)
    a = ad.read_h5ad(path)
    X = a.X.toarray()
    for gene in (TF_SHIFTED, TF_UNSHIFTED, *planted_genes()["non_tf"]):
        val = X[:, list(a.var_names).index(gene)] * 1e4 / X.sum(1)
        ctrl, pert = (a.obs["gene"] == CONTROL).to_numpy(), (a.obs["gene"] == gene).to_numpy()
        thr = np.quantile(val[ctrl], 0.5)
        kept = np.flatnonzero(pert & (val <= thr * (1 + 1e-6)))
        assert np.array_equal(design.groups[gene], kept), gene
        rec = design.on_target[gene]
        assert rec["threshold"] == pytest.approx(thr) and rec["kept"] + rec["removed"] == pert.sum()
        assert rec["controls"] == (val[ctrl] <= thr).sum()
        esc = a.obs["escaped"].to_numpy(bool)
        removed = pert & ~np.isin(np.arange(len(a)), kept)
        assert esc[removed].mean() > 0.75 and (~esc[kept]).mean() > 0.6, gene  # it removes escapers, mostly
    batched = pp.select_on_target(ds, pp.read_design(ds, "gene", CONTROL, "batch", cfg), pp.gene_columns(ds), cfg)
    b = a.obs["batch"].to_numpy().astype(str)
    for gene, cells in batched.groups.items():  # controls under the cut-off in every kept cell's batch, counted
        val = X[:, list(a.var_names).index(gene)] * 1e4 / X.sum(1)
        under = np.flatnonzero((a.obs["gene"] == CONTROL).to_numpy() & (val <= batched.thresholds[gene] * (1 + 1e-6)))
        under = under[np.isin(b[under], b[cells])]
        assert set(b[cells]) <= set(b[under]) and batched.on_target[gene]["controls"] == under.size
    off = pp.select_on_target(ds, pp.read_design(ds, "gene", CONTROL, None, cfg), {}, cfg)  # no gene measured
    assert all(r["threshold"] is None and r["removed"] == 0 for r in off.on_target.values())


def test_on_target_sharpens_a_diluted_knockdown(model, tmp_path):
    """Half of the SPI1 cells escape: the response is diluted; keeping the on-target cells (and the controls under
    the same cut-off) recovers it, while pseudo-perturbations stay null and the knockdown is that of every cell."""
    path = make_perturbseq(tmp_path / "esc.h5ad", n_ctrl=240, n_pert=80, escape=0.5)
    ds, enc = encoder(model, path)
    targets = {TF_SHIFTED: set(planted_genes()["targets"][TF_SHIFTED]),
               TF_UNSHIFTED: set(planted_genes()["targets"][TF_UNSHIFTED])}
    out = {}
    for q in (0.0, 0.5):
        cfg = PerturbConfig(pseudo=5, on_target=q)
        design = pp.select_on_target(ds, pp.read_design(ds, "gene", CONTROL, None, cfg), pp.gene_columns(ds), cfg)
        out[q] = run(enc, ds, design, targets, cfg, "esc")
    tf = [{r["perturbation"]: r for r in out[q][1]} for q in out]
    assert tf[1][TF_SHIFTED]["n_responding"] > 2 * tf[0][TF_SHIFTED]["n_responding"] > 0
    assert tf[1][TF_SHIFTED]["q"] < tf[0][TF_SHIFTED]["q"] < ALPHA and tf[1][TF_SHIFTED]["verdict"] == "specific"
    assert tf[1][TF_SHIFTED]["n_ctrl"] < 240 and tf[1][TF_SHIFTED]["n_cells"] < 80
    assert all(tf[1][g]["kd_efficiency"] == pytest.approx(tf[0][g]["kd_efficiency"]) for g in tf[0])
    assert out[0.5][2]["pseudo"]["mean_responding"] < 1 and out[0.5][2]["pseudo"]["false_positive_rate"] < 0.15


def test_an_imported_published_dataset_keeps_its_rows(tmp_path):
    """The importer's rows (published dataset, layer unknown) stay beside a new dataset's rows, unchanged."""
    from builder.atlas.import_biodyn import PUBLISHED_DATASET, import_biodyn
    from test_import_biodyn import tiny_source, write as write_json

    src = tiny_source(tmp_path / "src")
    write_json(src, "perturbation_response.json", {"summary": {"n": 1}, "targets": [
        {"gene": "TP53", "tf": True, "nk": 3, "nr": 2, "ns": 1, "top": [{"i": 1, "es": 0.4, "lb": "nope"}]}]})
    out, _ = import_biodyn(src, tmp_path / "imported", "imported")
    a = read_atlas(out)
    old = a.table("perturbation_response").to_pylist()
    row = {"dataset": "screen", "perturbation": "SPI1", "layer": 0, "feature": 1, "effect": -0.7, "ci_lo": -1.1,
           "ci_hi": -0.3, "p": 1e-4, "q": 0.01, "n_pert": 40, "n_ctrl": 240, "rank": 1}
    a = write(a.path, "screen", [row], [{"dataset": "screen", "perturbation": "SPI1", "is_tf": True,
                                    "verdict": "specific"}], {"summary": {"n_tf": 1}})
    rows = a.table("perturbation_response").to_pylist()
    assert [r for r in rows if r["dataset"] == PUBLISHED_DATASET] == old and old[0]["layer"] is None
    assert [r["dataset"] for r in a.table("tf_specificity").to_pylist()] == [PUBLISHED_DATASET, "screen"]
    assert "perturbation_response" in a.manifest["extras"] and validate(a.path) == []
