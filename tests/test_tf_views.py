"""The interventions views in headless Chromium: the TF page (#/tf/SYMBOL) and the list of perturbed genes (#/tf),
the overview's interventions block, the links from the feature and gene pages, the "not tested" states, and
hostile names shown as text. Atlases: synthetic rows in the atlas schema (builder.atlas.synthetic.add_interventions),
an import in the published Geneformer atlas' shapes, and the published atlases themselves when ../shared has them."""
import threading
import urllib.parse

import pyarrow.compute as pc
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from builder.atlas.format import read_atlas, write_atlas
from builder.atlas.import_biodyn import import_biodyn
from builder.atlas.synthetic import HOSTILE, SYN_DATASET, add_interventions, make_synthetic
from builder.site import perturbation as tp
from builder.site.render import render
from builder.site.serve import make_server
from conftest import SHARED
from test_import_biodyn import geneformer_like_source, write
from test_views import AXE, check_view

GF_SRC = SHARED / "reference" / "geneformer-atlas"  # the published Geneformer atlas (not stored in ../shared today)
SCGPT_SRC = SHARED / "reference" / "scgpt-atlas"


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Atlases `tfs` (synthetic, with a perturbed gene named as HTML), `plain` (no interventions data) and `gfpub` (the
    published Geneformer atlas' shapes), rendered and served; .url(atlas, view), .data."""
    root = tmp_path_factory.mktemp("tfviews")
    data, site = root / "data", root / "site"
    m, t = add_interventions(*make_synthetic(2, 96, seed=1), hostile=True)
    write_atlas(data / "tfs", m, t)
    write_atlas(data / "plain", *make_synthetic(2, 64, seed=2))
    src = geneformer_like_source(root / "gfsrc")
    write(src, "perturbation_response.json", {
        "summary": {"n_targets_processed": 2, "n_trrust_tfs": 2, "n_tfs_with_specific_response": 1, "frac_tfs_specific": 0.5},
        "targets": [{"gene": "GATA1", "tf": True, "nk": 57, "nr": 20, "ns": 1,
                     "top": [{"i": 0, "es": 8.734, "lb": "Cell Cycle, Mitotic R-HSA-69278"}, {"i": 2, "es": 1.8, "lb": "unlabeled"}]},
                    {"gene": "AATF", "tf": True, "nk": 5, "nr": 0, "ns": 0, "top": []}]})
    import_biodyn(src, data / "gfpub", "gfpub")
    for name in ("tfs", "plain", "gfpub"):
        render(data / name, site)
    srv = make_server(site, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}/"
    yield type("Sites", (), {"data": data, "site": site, "url": staticmethod(lambda atlas, view: f"{base}{atlas}/{view}")})
    srv.shutdown()
    srv.server_close()


def open_view(page, url):
    page.goto("about:blank")  # a fresh load, so the previous view's h1 is gone
    page.goto(url)
    page.wait_for_function("document.querySelector('main h1')")
    page.wait_for_load_state("networkidle")


def tf_rows(data, atlas):
    return {r["perturbation"]: r for r in read_atlas(data / atlas).table("tf_specificity").to_pylist()}


# --- shards and the overview summary, in Python ----------------------------------------------------------------

def test_clopper_pearson_matches_scipy_and_statsmodels():
    for k, n in ((3, 48), (0, 9), (9, 9), (1, 2)):
        lo, hi = tp.clopper_pearson(k, n)
        ref = proportion_confint(k, n, alpha=0.05, method="beta")
        assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12)
        ci = sps.binomtest(k, n).proportion_ci(method="exact")
        assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_tf_shards_list_responding_features_by_q(sites):
    atlas = read_atlas(sites.data / "tfs")
    labels = {(r["layer"], r["feature"]): r["label"] for r in atlas.table("features").to_pylist()}
    shards = tp.tf_shards(atlas, labels)
    rec = shards["tf/p/GA.json"]["GATA1"][0]
    resp = [r for r in atlas.table("perturbation_response").to_pylist() if r["perturbation"] == "GATA1"]
    sig = sorted((r for r in resp if r["q"] < 0.05), key=lambda r: r["q"])
    assert rec["n_listed"] == len(sig) == rec["n_responding"] > 0 and len(resp) > len(sig)
    assert list(zip(rec["features"]["layer"], rec["features"]["feature"])) == [(r["layer"], r["feature"]) for r in sig]
    assert rec["verdict"] == "specific" and rec["dataset"] == SYN_DATASET and not rec["published"]
    index = shards["tf/index.json"]
    assert len(index["rows"]["perturbation"]) == atlas.table("tf_specificity").num_rows
    assert index["datasets"] == [SYN_DATASET]
    assert set(index["rows"]["dataset"]) == {0}
    assert tp.tf_shards(read_atlas(sites.data / "plain"), {}) == {}


def test_a_dataset_s_own_alpha_decides_which_features_respond(sites):
    atlas = read_atlas(sites.data / "tfs")
    resp = [r for r in atlas.table("perturbation_response").to_pylist() if r["perturbation"] == "GATA1"]
    qs = sorted({r["q"] for r in resp if r["q"] < 0.05})
    strict = (qs[0] + qs[1]) / 2  # keeps the strongest feature(s), drops others below 0.05
    atlas.manifest["perturbation"][SYN_DATASET]["parameters"]["alpha"] = strict
    rec = tp.tf_shards(atlas, {})["tf/p/GA.json"]["GATA1"][0]
    assert rec["alpha"] == strict and rec["n_listed"] == sum(r["q"] < strict for r in resp)
    assert 0 < rec["n_listed"] < sum(r["q"] < 0.05 for r in resp)


def test_interventions_summary_counts_and_published_interval(sites):
    atlas = read_atlas(sites.data / "tfs")
    s = tp.interventions_summary(atlas)
    cs = atlas.table("causal_summary")
    c = s["causal"]
    assert c["n_tested"] == cs.num_rows and sum(c["observed"]) == c["n_scored"] == cs.num_rows - cs["specificity"].null_count
    assert c["n_specific"] == pc.sum(pc.less(cs["q"], 0.05)).as_py()
    assert sum(c["null"]) == c["n_null"] == sum(len(v) for v in cs["null_values"].to_pylist())
    d = s["perturbation"][0]
    assert d["n_specific"] == atlas.manifest["perturbation"][SYN_DATASET]["summary"]["n_specific"]
    assert tp.interventions_summary(read_atlas(sites.data / "plain")) is None
    pub = tp.interventions_summary(read_atlas(sites.data / "gfpub"))
    assert pub["causal"]["published"] and pub["causal"]["layers"] == [1]
    p = pub["perturbation"][0]
    ref = proportion_confint(1, 2, method="beta")
    assert p["published"] and p["ci_computed"] and (p["ci_lo"], p["ci_hi"]) == (pytest.approx(ref[0], rel=1e-3),
                                                                                 pytest.approx(ref[1], rel=1e-3))


def boot_of(site, atlas):
    import json
    import re

    html = (site / atlas / "index.html").read_text()
    return json.loads(re.search(r'<script id="boot" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_overview_loads_the_block_module_only_with_interventions(sites):
    with_block, without = boot_of(sites.site, "tfs"), boot_of(sites.site, "plain")
    assert "lib/interventions_summary.js" in with_block["deps"]["overview"] and with_block["interventions"]
    assert "lib/interventions_summary.js" not in without["deps"]["overview"] and without["interventions"] is None
    assert without["tf_keys"] == [] and "GA" in with_block["tf_keys"]


# --- the views -----------------------------------------------------------------------------------------------------

def test_tf_page_shows_its_verdict_enrichment_and_feature_links(page, sites):
    tfs = tf_rows(sites.data, "tfs")
    open_view(page, sites.url("tfs", "#/tf/gata1"))  # any case finds the gene
    assert page.locator("main h1").inner_text() == "GATA1"
    sec = page.locator("main .tf-dataset")
    assert sec.locator("h2").inner_text() == SYN_DATASET
    assert sec.locator(".verdict").inner_text().endswith(
        "Specific: its curated targets are enriched among the genes loaded by the features that respond to its knockdown (q < 0.05).")
    cells = [c.inner_text() for c in sec.locator(".tf-enrichment tbody td").all()]
    g = tfs["GATA1"]
    shown = lambda v, d: f"{float(f'{v:.4g}'):.{d}g}"  # noqa: E731  (the shard keeps 4 digits, the page shows d)
    assert cells[1:3] == [shown(g["odds"], 3), shown(g["q"], 2)]
    assert cells[4:6] == [shown(g["ceiling_odds"], 3), shown(g["ceiling_q"], 2)]
    links = sec.locator(".tf-features tbody tr td:first-child a")
    assert links.count() == g["n_responding"]
    first = links.first.get_attribute("href")
    links.first.click()
    page.wait_for_function("location.hash.startsWith('#/feature/')")
    assert page.evaluate("location.hash") == first
    page.wait_for_function("document.querySelector('main h1') && document.querySelector('main h1').textContent.startsWith('L')")
    page.wait_for_function("!document.querySelector('main').textContent.includes('Loading the cell map')")
    for gene, start in (("SPI1", "Not specific: expression alone"), ("TAL1", "No signal: neither")):
        open_view(page, sites.url("tfs", f"#/tf/{gene}"))
        assert start in page.locator("main .verdict").inner_text()
    assert page.problems == []


def test_tf_list_sorts_and_filters(page, sites):
    tfs = tf_rows(sites.data, "tfs")
    open_view(page, sites.url("tfs", "#/tf"))
    names = lambda: [r.locator("span").first.inner_text() for r in page.locator("main .vt-row").all()]  # noqa: E731
    assert sorted(names()) == sorted(tfs) and names() == sorted(tfs, key=str)
    page.fill("main input[type=search]", "ga")
    assert set(names()) == {"GATA1", "GAPDH"}
    page.fill("main input[type=search]", "")
    page.check("#tf-only")
    assert set(names()) == {k for k, r in tfs.items() if r["is_tf"]}
    page.select_option("main select", "specific")
    assert set(names()) == {k for k, r in tfs.items() if r["is_tf"] and r["verdict"] == "specific"}
    page.click("main .vt-head button:has-text('Responding')")
    shown = names()
    assert [tfs[n]["n_responding"] for n in shown] == sorted((tfs[n]["n_responding"] for n in shown), reverse=True)
    page.locator("main .vt-row", has_text="GATA1").click()
    page.wait_for_function("location.hash === '#/tf/GATA1'")
    assert page.problems == []


def test_hostile_names_are_text(page, sites):
    hostile = HOSTILE[0]
    open_view(page, sites.url("tfs", "#/tf/" + urllib.parse.quote(hostile)))
    assert page.locator("main h1").inner_text() == hostile
    assert page.locator("main .tf-dataset .verdict").inner_text().endswith("(q < 0.05).")  # its shard was found
    open_view(page, sites.url("tfs", "#/tf"))
    assert page.locator("main .vt-row", has_text=hostile).count() == 1
    open_view(page, sites.url("tfs", "#/"))
    assert page.locator("main .interventions-summary").count() == 1
    # a feature page whose perturbation rows include the hostile gene
    resp = read_atlas(sites.data / "tfs").table("perturbation_response").to_pylist()
    r = next(x for x in resp if x["perturbation"] == hostile)
    open_view(page, sites.url("tfs", f"#/feature/{r['layer']}/{r['feature']}"))
    link = page.locator('main a[href^="#/tf/"]', has_text=hostile)
    assert link.count() == 1 and urllib.parse.unquote(link.get_attribute("href")) == "#/tf/" + hostile
    assert page.locator("main img").count() == 0
    assert not any(p.startswith("dialog") for p in page.problems), page.problems


def test_not_tested_states(page, sites):
    open_view(page, sites.url("plain", "#/tf/GATA1"))
    assert page.locator("main .not-tested").inner_text().startswith("Not tested: this atlas has no perturbation data")
    open_view(page, sites.url("plain", "#/tf"))
    assert page.locator("main .not-tested").count() == 1
    open_view(page, sites.url("plain", "#/"))
    assert page.locator("main .interventions-summary").count() == 0
    assert page.locator("nav a[data-view=tf]").count() == 0
    open_view(page, sites.url("tfs", "#/tf/NOPE1"))
    assert page.locator("main .not-tested").inner_text() == "Not tested: NOPE1 was not perturbed in this atlas' perturbation data."
    assert page.problems == []


def test_overview_block_shows_the_histogram_and_fractions(page, sites):
    atlas = read_atlas(sites.data / "tfs")
    summ = atlas.manifest["perturbation"][SYN_DATASET]["summary"]
    open_view(page, sites.url("tfs", "#/"))
    block = page.locator("main .interventions-summary")
    assert block.locator("h2").inner_text() == "Interventions"
    assert block.locator(".specificity-hist svg rect").count() == tp.HIST_BINS
    row = [c.inner_text() for c in block.locator(".tf-summary tbody td").all()]
    pct = lambda v: f"{100 * v:.1f}%" if 100 * v >= 10 else f"{float(f'{100 * v:.2g}'):g}%"  # noqa: E731  (format.js pct)
    assert row[0] == SYN_DATASET
    assert row[1] == f"{summ['n_specific']} of {summ['n_tf']} ({pct(summ['fraction'])}) [{pct(summ['ci_lo'])}, {pct(summ['ci_hi'])}]"
    assert row[2].startswith(f"{summ['ceiling_n_specific']} of {summ['n_tf']}") and row[4] == pct(summ["pseudo"]["false_positive_rate"])
    block.locator("a", has_text="All perturbed genes").click()
    page.wait_for_function("location.hash === '#/tf'")
    assert page.locator("nav a[data-view=tf]").get_attribute("aria-current") == "page"
    assert page.problems == []


def test_gene_page_links_a_perturbed_gene(page, sites):
    open_view(page, sites.url("tfs", "#/genes/GATA1"))
    page.wait_for_selector("main .perturbed")
    assert page.locator("main .perturbed a").get_attribute("href") == "#/tf/GATA1"
    assert "synthetic CRISPRi (specific)" in page.locator("main .perturbed").inner_text()
    open_view(page, sites.url("tfs", "#/genes/CD74"))
    assert page.locator("main .perturbed").count() == 0
    assert page.problems == []


def test_published_geneformer_shapes(page, sites):
    """The import of the published Geneformer atlas' files: published counts flagged, the interval computed here."""
    open_view(page, sites.url("gfpub", "#/"))
    block = page.locator("main .interventions-summary")
    text = block.inner_text()
    assert "Causal patching (published): 2 features of layer 1" in text and "cannot be drawn against its null" in text
    assert "Its interval was computed here (Clopper–Pearson, 95%) from the published counts" in text
    row = [c.inner_text() for c in block.locator(".tf-summary tbody td").all()]
    lo, hi = proportion_confint(1, 2, method="beta")
    assert row[0].endswith("(published)") and row[1] == f"1 of 2 (50.0%) [{100 * lo:.1f}%, {100 * hi:.1f}%]"
    open_view(page, sites.url("gfpub", "#/tf/GATA1"))
    sec = page.locator("main .tf-dataset")
    assert "Published values" in sec.inner_text() and sec.locator(".tf-enrichment").count() == 0
    assert sec.locator(".verdict").inner_text().endswith("No verdict: published counts only, no test.")
    assert [a.get_attribute("href") for a in sec.locator(".tf-features tbody a").all()] == ["#/feature/1/0", "#/feature/1/2"]
    assert page.problems == []


TFS_VIEWS = ["#/", "#/tf", "#/tf/GATA1", "#/tf/SPI1", "#/tf/NOPE1", "#/genes/GATA1", "#/glossary/tf_verdict"]


@pytest.mark.parametrize("width", (1280, 390))
def test_views_are_clean_at_desktop_and_phone_width(browser, sites, width):
    """No overflow, no null/undefined/NaN text, no word broken in a table cell, no console error (test_views' checks)."""
    ctx = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
    page, problems, found = ctx.new_page(), [], {}
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    views = [("tfs", v) for v in TFS_VIEWS + ["#/feature/%d/%d" % first_perturbed(sites)]]
    views += [("gfpub", "#/"), ("gfpub", "#/tf"), ("gfpub", "#/tf/GATA1"), ("plain", "#/tf"), ("plain", "#/tf/GATA1")]
    for atlas, view in views:
        bad = check_view(page, sites.url(atlas, view), width) + problems
        problems.clear()
        if bad:
            found[f"{atlas}/{view}"] = bad
    ctx.close()
    assert found == {}


def first_perturbed(sites):
    r = read_atlas(sites.data / "tfs").table("perturbation_response").to_pylist()[0]
    return r["layer"], r["feature"]


@pytest.mark.skipif(not AXE.is_file(), reason=f"axe-core not installed at {AXE} (tests/run.sh installs it)")
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_accessibility_no_serious_violation(browser, sites, theme):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_init_script(f"try {{ localStorage.setItem('atlas-theme', '{theme}') }} catch (e) {{}}")
    page, found = ctx.new_page(), {}
    for view in TFS_VIEWS:
        open_view(page, sites.url("tfs", view))
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [f"{v['id']}: {v['nodes'][0]['target']}" for v in result["violations"] if v["impact"] in ("serious", "critical")]
        if bad:
            found[view] = bad
    ctx.close()
    assert found == {}


# --- the published atlases from ../shared/reference ------------------------------------------------------------

def test_published_scgpt_atlas_overview_and_no_perturbation(page, sites, tmp_path):
    if not SCGPT_SRC.is_dir():
        pytest.skip(f"reference data not found at {SCGPT_SRC}")
    import_biodyn(SCGPT_SRC, tmp_path / "data" / "scgpt", "scgpt")
    render(tmp_path / "data" / "scgpt", sites.site)
    open_view(page, sites.url("scgpt", "#/"))
    text = page.locator("main .interventions-summary").inner_text()
    assert "Causal patching (published): 50 features of layer 7" in text and "Perturbation response" not in text
    open_view(page, sites.url("scgpt", "#/tf/GATA1"))
    assert page.locator("main .not-tested").inner_text().startswith("Not tested: this atlas has no perturbation data")
    assert page.problems == []


def test_published_geneformer_atlas(page, sites, tmp_path):
    if not GF_SRC.is_dir():
        pytest.skip(f"the published Geneformer atlas is not in {GF_SRC.parent} (only its shapes are tested, above)")
    import_biodyn(GF_SRC, tmp_path / "data" / "geneformer", "geneformer")
    render(tmp_path / "data" / "geneformer", sites.site)
    open_view(page, sites.url("geneformer", "#/"))
    lo, hi = proportion_confint(3, 48, method="beta")
    row = [c.inner_text() for c in page.locator("main .tf-summary tbody td").all()]
    assert row[1] == f"3 of 48 (6.2%) [{float(f'{100 * lo:.2g}'):g}%, {100 * hi:.1f}%]"
    open_view(page, sites.url("geneformer", "#/tf/GATA1"))
    assert page.locator("main .tf-features tbody a").count() == 5
    assert page.problems == []
