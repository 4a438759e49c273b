import json
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builder.errors import AtlasError
from builder.site.render import render
from builder.site.indexes import gene_keys
from bs4 import BeautifulSoup


def rows(table):
    """The rows of a columnar shard table as dicts (the browser's rows(), static/lib/data.js); a field left out
    because it is null on every row is absent (row.get gives None)."""
    n = max((len(v) for v in table.values()), default=0)
    return [{f: v[i] for f, v in table.items()} for i in range(n)]


def page(path):
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def boot_of(root):
    return json.loads(page(root / "index.html").find("script", id="boot").string)


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_is_deterministic(synthetic_data, tmp_path):
    a = tree(render(synthetic_data / "demo", tmp_path / "a"))
    b = tree(render(synthetic_data / "demo", tmp_path / "b"))
    assert a == b


def test_site_layout(site):
    root = site / "demo"
    doc = page(root / "index.html")
    boot = boot_of(root)
    data = root / boot["data"]
    t = boot["totals"]
    assert (t["n_features"], t["n_modules"], t["layers"]) == (192, 4, 2)
    assert t["annotated_rate"] == round(t["annotated"] / t["alive"], 4)  # rates computed at render time
    assert [r["annotated_rate"] for r in boot["layers"]] == [round(r["annotated"] / r["alive"], 4) for r in boot["layers"]]
    app = doc.find("script", attrs={"type": "module"})["src"]
    assert app.startswith("assets/") and (root / app).is_file()
    preloads = [link["href"] for link in doc.find_all("link", rel="modulepreload")]
    assert all((root / href).is_file() for href in preloads) and app in preloads
    assert doc.find("noscript").find("a")["href"] == "downloads/" and (root / "downloads" / "index.html").is_file()
    assets = [p.relative_to(root).as_posix() for p in (root / "assets").rglob("*") if p.is_file()]
    assert not any("plotly" in a or "vendor/" in a for a in assets)  # the charts are the site's own SVG: no library
    assert sorted(p.name for p in (data / "layer").iterdir()) == ["0.json", "1.json"]
    shard = json.loads((data / "feat/1/2.json").read_text())
    assert shard["layer"] == 1 and shard["features"]["feature"] == list(range(64, 96))
    for name in boot["downloads"]:
        assert (root / "downloads" / f"{name}.parquet").is_file() and (root / "downloads" / f"{name}.csv").is_file()
    assert "demo/" in (site / "index.html").read_text()


def test_every_gene_is_findable(site, synthetic_data):
    genes = set(pq.read_table(synthetic_data / "hostile" / "feature_genes.parquet").column("gene").to_pylist())
    boot = boot_of(site / "hostile")
    data = site / "hostile" / boot["data"]
    found = set()
    for g in genes:
        k1, k2 = gene_keys(g)
        assert k1 in boot["gene_keys"]
        entry = next(e for e in rows(json.loads((data / f"genes/n/{k1}.json").read_text())) if e["gene"] == g)
        shard = json.loads((data / f"genes/p/{entry.get('file') or k2}.json").read_text())
        found.update(k for k in shard["genes"] if k == g)
    assert found == genes


def test_hostile_names_are_escaped_in_the_shell(site):
    doc = page(site / "hostile" / "index.html")
    assert doc.title.string == "Hostile <b>names</b> test atlas" and doc.find("b") is None  # text, not markup
    boot = doc.find("script", id="boot").string
    assert "<" not in boot  # tojson escapes < so data cannot close the script element
    assert json.loads(boot)["title"] == "Hostile <b>names</b> test atlas"
    index = page(site / "index.html")
    assert index.find("b") is None and "Hostile <b>names</b>" in index.get_text()


def test_failed_render_leaves_previous_site(synthetic_data, tmp_path):
    import shutil
    src = tmp_path / "data" / "demo"
    shutil.copytree(synthetic_data / "demo", src)
    before = tree(render(src, tmp_path / "site"))
    t = pq.read_table(src / "features.parquet")
    pq.write_table(t.set_column(t.column_names.index("label"), "label", pa.array([1] * t.num_rows)), src / "features.parquet")
    with pytest.raises(AtlasError, match="column 'label' has type int64, expected string"):
        render(src, tmp_path / "site")
    assert tree(tmp_path / "site" / "demo") == before


def test_genes_with_many_postings_get_their_own_file(synthetic_data, monkeypatch):
    from builder.site import indexes, shards
    from builder.atlas.format import read_atlas
    monkeypatch.setattr(indexes, "OWN_SHARD", 5)
    atlas = read_atlas(synthetic_data / "demo")
    out = shards.build_shards(atlas)
    genes = pq.read_table(synthetic_data / "demo" / "feature_genes.parquet").column("gene").to_pylist()
    own = 0
    for g in set(genes):
        k1, k2 = gene_keys(g)
        entry = next(e for e in rows(out[f"genes/n/{k1}.json"]) if e["gene"] == g)
        assert entry["n_features"] == genes.count(g)
        own += entry.get("file") is not None
        postings = out[f"genes/p/{entry.get('file') or k2}.json"]["genes"][g]
        assert len(rows(postings)) == entry["n_features"]
        assert set(postings) == {"layer", "feature", "rank", "activation", "label"}
    assert own > 0


def test_serve_answers_head_and_lists_downloads(site):
    import threading
    import urllib.request

    from builder.site.serve import make_server

    srv = make_server(site, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}/demo/"
    try:
        head = urllib.request.urlopen(urllib.request.Request(base, method="HEAD"))
        assert head.status == 200 and head.read() == b"" and int(head.headers["Content-Length"]) > 1000
        listing = urllib.request.urlopen(base + "downloads/").read().decode()
        links = [a["href"] for a in BeautifulSoup(listing, "html.parser").select("a[href]")]
        assert "features.parquet" in links and "features.csv" in links and "manifest.json" in links
        for href in links:  # every link of the listing resolves, HEAD included
            assert urllib.request.urlopen(urllib.request.Request(base + "downloads/" + href, method="HEAD")).status == 200
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def demo_shards(synthetic_data):
    from builder.atlas.format import read_atlas
    from builder.site.shards import build_shards

    atlas = read_atlas(synthetic_data / "demo")
    return atlas, build_shards(atlas)


def test_feature_shards_sort_cell_types_by_effect_and_flag_low_support(demo_shards):
    atlas, shards = demo_shards
    feat = {path: s for path, s in shards.items() if path.startswith("feat/")}
    cts = defaultdict(list)
    for path, s in feat.items():
        for r in rows(s["celltypes"]):
            cts[(path, r["feature"])].append(r["auc"])
    assert max(map(len, cts.values())) > 1
    assert all(auc == sorted(auc, reverse=True) for auc in cts.values())  # a feature's cell types: AUC, descending
    genes = [g for s in feat.values() for g in rows(s["genes"])]
    assert {g["low_support"] for g in genes} == {0, 1}
    assert all(g["low_support"] == int(g["fire_count"] < 5) for g in genes)
    assert all(s["causal"] == {} and s["perturbation"] == {} for s in feat.values())  # none here: an empty table is {}
    shard = feat["feat/1/2.json"]
    assert shard["features"]["feature"] == list(range(64, 96)) and set(shard["genes"]["feature"]) <= set(range(64, 96))


def test_flow_summaries_keep_edge_kinds_apart(synthetic_data, tmp_path):
    from builder.atlas.format import write_atlas
    from builder.atlas.synthetic import make_synthetic
    from builder.site.shards import build_shards

    manifest, tables = make_synthetic(3, 40, seed=2)
    e = tables["edges"]
    cos = [dict(r, kind="decoder_cosine", weight=0.9, count=None, null_p=None) for r in e.slice(0, 5).to_pylist()]
    tables["edges"] = pa.Table.from_pylist(e.to_pylist() + cos, schema=e.schema)
    shards = build_shards(write_atlas(tmp_path / "a", manifest, tables))
    pairs = shards["flow.json"]["pairs"]
    kinds = {(p["kind"], p["layer_a"], p["layer_b"]): p for p in pairs}
    assert ("decoder_cosine", 0, 1) in kinds and ("cross_layer_pmi", 0, 1) in kinds
    assert kinds[("decoder_cosine", 0, 1)]["max_weight"] == 0.9
    n_pmi = sum(1 for r in e.to_pylist() if (r["layer_a"], r["layer_b"]) == (0, 1))
    assert kinds[("cross_layer_pmi", 0, 1)]["edges"] == n_pmi  # built atlases get pair rows too (no manifest pairs)
    links = shards["flow.json"]["module_links"]
    assert sum(r["edges"] for r in rows(links) if r["kind"] == "cross_layer_pmi") <= len(e)


def test_comparisons_pair_metrics_with_their_baselines(demo_shards):
    _, shards = demo_shards
    svd = {m["metric"]: m for m in shards["comparisons.json"]["svd"]}
    assert svd["decoder_norm_top10_pcs"]["baseline"] == "decoder_norm_top10_pcs_random"
    assert "decoder_norm_top10_pcs_random" not in svd and svd["r2_top10_pc_scores"]["baseline"] is None


def test_placeholders_are_described_not_shown_as_terms(tmp_path):
    from builder.atlas.format import read_atlas
    from builder.atlas.import_biodyn import import_biodyn
    from builder.site.shards import build_shards
    from test_import_biodyn import geneformer_like_source

    out, _ = import_biodyn(geneformer_like_source(tmp_path / "src"), tmp_path / "gf", "gf")
    shards = build_shards(read_atlas(out))
    index = {(t["database"], t["term"]): t["note"] for t in rows(shards["terms/index.json"])}
    assert "not a gene set" in index[("STRING_edges", "pairwise_enrichment")]
    assert index[("GO_BP", "Translation (GO:0006412)")] is None
    mods = shards["modules.json"]
    assert all(bool(t.get("placeholder")) == (t["term"] == "transcription_factors")
               for m in rows(mods) for t in rows(m["top_terms"]))


def test_cell_map_shards_quantize_values_and_cover_every_bucket(demo_shards):
    atlas, shards = demo_shards
    cells = shards["cells.json"]
    assert len(cells["x"]) == atlas.table("cells").num_rows and max(cells["x"]) == 1023 and min(cells["y"]) == 0
    f = atlas.table("features")
    buckets = {f"cellact/{lay}/{x // 32}.json" for lay, x in zip(f.column("layer").to_pylist(), f.column("feature").to_pylist())}
    assert buckets <= set(shards)
    act = atlas.table("cell_activations").to_pylist()
    mine = [r for r in act if (r["layer"], r["feature"]) == (0, 3)]
    cell = shards["cellact/0/0.json"]["3"]
    assert len(cell["cells"]) == len(mine) and max(cell["values"]) == 255
    assert cell["max"] == pytest.approx(max(r["value"] for r in mine), rel=1e-3)
