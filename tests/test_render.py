import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builder.errors import AtlasError
from builder.site.render import render
from builder.site.indexes import gene_keys
from bs4 import BeautifulSoup


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
    assert not any("plotly" in href for href in preloads)  # Plotly loads only in the views that draw with it
    assert sorted(p.name for p in (data / "layer").iterdir()) == ["0.json", "1.json"]
    shard = json.loads((data / "feat/1/2.json").read_text())
    assert sorted(map(int, shard["features"])) == list(range(64, 96))
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
        entry = next(e for e in json.loads((data / f"genes/n/{k1}.json").read_text()) if e[0] == g)
        shard = json.loads((data / f"genes/p/{entry[2] if len(entry) > 2 else k2}.json").read_text())
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
        entry = next(e for e in out[f"genes/n/{k1}.json"] if e[0] == g)
        assert entry[1] == genes.count(g)
        own += len(entry) > 2
        assert len(out[f"genes/p/{entry[2] if len(entry) > 2 else k2}.json"]["genes"][g]) == entry[1]
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
