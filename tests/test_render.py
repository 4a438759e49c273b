import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builder.errors import AtlasError
from builder.site.render import render
from builder.site.shards import gene_keys


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_is_deterministic(synthetic_data, tmp_path):
    a = tree(render(synthetic_data / "demo", tmp_path / "a"))
    b = tree(render(synthetic_data / "demo", tmp_path / "b"))
    assert a == b


def test_site_layout(site):
    root = site / "demo"
    html = (root / "index.html").read_text()
    boot = json.loads(re.search(r'<script id="boot" type="application/json">(.*?)</script>', html, re.S).group(1))
    data = root / boot["data"]
    assert boot["totals"] == {"n_features": 192, "alive": boot["totals"]["alive"], "annotated": boot["totals"]["annotated"],
                              "n_modules": 4, "layers": 2}
    assert (root / re.search(r'src="(assets/[0-9a-f]+/app.js)"', html).group(1)).is_file()
    assert sorted(p.name for p in (data / "layer").iterdir()) == ["0.json", "1.json"]
    shard = json.loads((data / "feat/1/2.json").read_text())
    assert sorted(map(int, shard["features"])) == list(range(64, 96))
    for name in boot["downloads"]:
        assert (root / "downloads" / f"{name}.parquet").is_file() and (root / "downloads" / f"{name}.csv").is_file()
    assert "demo/" in (site / "index.html").read_text()


def test_every_gene_is_findable(site, synthetic_data):
    genes = set(pq.read_table(synthetic_data / "hostile" / "feature_genes.parquet").column("gene").to_pylist())
    boot = json.loads(re.search(r'type="application/json">(.*?)</script>', (site / "hostile/index.html").read_text(), re.S).group(1))
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
    html = (site / "hostile" / "index.html").read_text()
    assert "<b>names</b>" not in html and "&lt;b&gt;names&lt;/b&gt;" in html
    boot = re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1)
    assert "<" not in boot  # tojson escapes < so data cannot close the script element
    assert "&lt;b&gt;" in (site / "index.html").read_text()


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
    from builder.site import shards
    from builder.atlas.format import read_atlas
    monkeypatch.setattr(shards, "OWN_SHARD", 5)
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
