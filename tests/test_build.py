"""atlas build end to end on tiny checkpoints, determinism, resume after a kill, graphs on planted codes, bad input."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from builder.atlas.format import read_atlas, validate
from builder.pipeline.graphs import GraphConfig, cross_layer, modules_with_null
from test_cli import run

ROOT = Path(__file__).resolve().parents[1]
TRRUST = ROOT.parent / "shared" / "reference" / "genesets" / "trrust_rawdata.human.tsv"
CONFIG = """max_cells = 60
[train]
k = 8
epochs = 1
[graphs]
umap_neighbors = 10
"""


def build_args(tmp, tiny, family="scgpt", name="t", cache="cache", data="data", site="site"):
    ckpt = tiny / ("scgpt" if family == "scgpt" else "geneformer-v2")
    (tmp / "atlas.toml").write_text(CONFIG)
    args = ["build", "--model", family, "--checkpoint", str(ckpt), "--train-sae", "--config", str(tmp / "atlas.toml"),
            "--atlas", name, "--cache", str(tmp / cache), "--data-dir", str(tmp / data), "--site", str(tmp / site),
            "--quiet"]
    if TRRUST.is_file():
        args += ["--trrust", str(TRRUST)]
    return args


def tree(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory, capsys_module=None):
    tmp = tmp_path_factory.mktemp("build")
    from builder.cli import main

    for family in ("scgpt", "geneformer"):
        try:
            main(build_args(tmp, tiny, family, name=family))
        except SystemExit as e:
            assert e.code == 0
    return tmp


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_build_end_to_end(built, family):
    atlas = read_atlas(built / "data" / family)
    assert validate(atlas.path) == []
    m = atlas.manifest
    assert m["model"]["family"] == family and m["model"]["layers"] == [0, 1]
    assert m["parameters"]["train"]["k"] == 8 and m["parameters"]["max_cells"] == 60
    assert {g["name"] for g in m["genesets"]} >= {"GO_BP", "KEGG", "Reactome", "Hallmark"}
    assert all("version" in g and "licence" in g for g in m["genesets"] if g["name"] in ("GO_BP", "Hallmark"))
    layers = atlas.table("layers").to_pylist()
    assert [r["layer"] for r in layers] == [0, 1] and all(r["n_features"] == 256 for r in layers)
    assert all(r["annotated_null_rate"] is not None for r in layers)
    feats = atlas.table("features").to_pandas()
    assert feats["alive"].sum() > 100 and feats["map_x"].notna().sum() > 50
    genes = atlas.table("feature_genes").to_pandas()
    assert len(genes) > 0 and not genes["gene"].str.startswith("ENSG").all()  # symbols, also for Geneformer
    nb = atlas.table("null_baseline").to_pandas()
    assert {"annotation", "modules", "cross_layer", "svd"} <= set(nb["analysis"])
    assert nb[nb.analysis == "modules"]["expected"].notna().all()
    kinds = set(atlas.table("edges").column("kind").to_pylist())
    assert "decoder_cosine" in kinds
    assert atlas.table("svd_comparison").num_rows == 8
    site = built / "site" / family
    assert (site / "index.html").is_file()
    html = (site / "index.html").read_text()
    assert "null_baseline" in html or "nulls" in html


def test_rebuild_is_byte_identical_and_cached(built, tiny, tmp_path, capsys):
    # A fresh cache and output folders: the same bytes as the first build.
    code, _, err = run(build_args(tmp_path, tiny, "scgpt", name="scgpt"), capsys)
    assert code == 0, err
    assert tree(tmp_path / "data" / "scgpt") == tree(built / "data" / "scgpt")
    assert tree(tmp_path / "site" / "scgpt") == tree(built / "site" / "scgpt")
    # The same cache again: every stage is a cache hit.
    args = [a for a in build_args(tmp_path, tiny, "scgpt", name="scgpt") if a != "--quiet"]
    code, out, _ = run(args, capsys)
    assert code == 0 and "cached: extract, sae, codes, stats, annotate, graph, cross" in out
    # A changed graph parameter recomputes the graphs only.
    (tmp_path / "atlas.toml").write_text(CONFIG + "resolution = 2.0\n")
    args = [a for a in args if a != str(tmp_path / "atlas.toml")]
    i = args.index("--config")
    args = args[:i + 1] + [str(tmp_path / "atlas.toml")] + args[i + 1:]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "graph" in out.split("time per stage:")[1].split("cached")[0]
    assert "cached: extract, sae, codes, stats, annotate" in out


def test_killed_build_resumes_to_the_same_output(built, tiny, tmp_path):
    args = [a for a in build_args(tmp_path, tiny, "scgpt", name="scgpt") if a != "--quiet"]
    (tmp_path / "atlas.toml").write_text(CONFIG)
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # Kill it once the first SAE is being trained (the extract stage is in the cache by then).
    for line in proc.stderr:
        if line.startswith("sae-00: computing"):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = tmp_path / "cache"
    done = sorted(p.name.split("-")[0] for p in cache.iterdir() if (p / ".done").is_file())
    assert done == ["extract"]
    assert not (tmp_path / "data" / "scgpt").exists()
    res = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "cached: extract" in res.stdout or "(1 cached)" in res.stdout
    assert tree(tmp_path / "data" / "scgpt") == tree(built / "data" / "scgpt")
    leftovers = [p.name for p in cache.iterdir() if p.name.startswith(".")]
    assert leftovers == [] or all(".tmp-" in n for n in leftovers)


def test_bad_input_leaves_the_previous_atlas(built, tiny, tmp_path, capsys):
    import shutil

    shutil.copytree(built / "data" / "scgpt", tmp_path / "data" / "scgpt")
    before = tree(tmp_path / "data" / "scgpt")
    base = build_args(tmp_path, tiny, "scgpt", name="scgpt")
    cases = []
    cfg = tmp_path / "bad.toml"

    def with_config(text):
        i = base.index("--config")
        return (text, base[:i + 1] + [str(cfg)] + base[i + 2:])

    cases.append((with_config("colour = 1\n"), "unknown key 'colour'"))
    cases.append((with_config("[train]\nk = 'eight'\n"), "k must be an integer"))
    cases.append((with_config("max_cells = 1.5\n"), "max_cells must be an integer"))
    missing = list(base)
    missing[missing.index("--checkpoint") + 1] = str(tmp_path / "nope")
    cases.append(((None, missing), "nope"))
    nodata = base + ["--data", str(tmp_path / "none.h5ad")]
    cases.append(((None, nodata), "none.h5ad: no such dataset file"))
    # An SAE whose width does not fit the layer.
    from builder.pipeline.sae import TopKSAE

    TopKSAE(32, 128, 8).save(tmp_path / "saes" / "layer_00", {})
    wrong = [a for a in base if a != "--train-sae"] + ["--sae", str(tmp_path / "saes")]
    cases.append(((None, wrong), "SAE input width 32 does not fit layer 0"))
    for (text, args), message in cases:
        if text is not None:
            cfg.write_text(text)
        code, _, err = run(args, capsys)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert tree(tmp_path / "data" / "scgpt") == before


def planted_codes(T=40000, n=120, groups=4, size=6, seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for f in range(n):
        t = rng.choice(T, 200, replace=False)
        rows += list(t)
        cols += [f] * len(t)
    for g in range(groups):
        t = rng.choice(T, 300, replace=False)
        for f in range(g * size, (g + 1) * size):
            rows += list(t)
            cols += [f] * len(t)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(T, n))
    X.data[:] = 1
    return X


def test_modules_recover_planted_groups_and_the_null_stays_near_chance():
    real, null = modules_with_null(planted_codes(), GraphConfig())
    m = real["membership"]
    ids = [set(m[g * 6:(g + 1) * 6]) for g in range(4)]
    assert all(len(s) == 1 and -1 not in s for s in ids) and len(set.union(*ids)) == 4
    assert real["modules"] >= 4 and null["modules"] <= 2 and null["edges"] < real["edges"] / 5
    # Structureless codes: the real graph is no richer than its shuffle.
    real0, null0 = modules_with_null(planted_codes(groups=0), GraphConfig())
    assert abs(real0["edges"] - null0["edges"]) <= max(3, 0.5 * null0["edges"])
    assert real0["modules"] <= 1


def test_cross_layer_edges_beyond_gene_identity():
    rng = np.random.default_rng(0)
    T, n = 60000, 60
    genes = rng.integers(0, 300, T)

    def codes(spec):
        rows, cols = [], []
        for f, t in spec:
            rows += list(t)
            cols += [f] * len(t)
        X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(T, n))
        X.data[:] = 1
        return X

    a, b = [], []
    for f in range(n):
        if f < 20:  # fires on every token of one gene, in both layers: a "highway" by raw PMI only
            t = np.flatnonzero(genes == f)
            a.append((f, t))
            b.append((f, t))
        elif f < 30:  # the same tokens in both layers, across genes: a real link
            t = rng.choice(T, 300, replace=False)
            a.append((f, t))
            b.append((f, t))
        else:
            a.append((f, rng.choice(T, 300, replace=False)))
            b.append((f, rng.choice(T, 300, replace=False)))
    res = cross_layer(codes(a), codes(b), genes, GraphConfig())
    assert sorted(zip(res["a"].tolist(), res["b"].tolist())) == [(f, f) for f in range(20, 30)]
    assert res["raw_edges"] >= 30 and res["shuffled_raw_edges"] >= 20  # gene identity alone makes 20
    assert (res["p"] < 1e-6).all()


def test_site_shows_the_nulls(built, page):
    import threading

    from builder.site.serve import make_server

    server = make_server(built / "site", 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for family in ("scgpt", "geneformer"):
            page.goto(f"http://127.0.0.1:{server.server_port}/{family}/#/")
            page.wait_for_selector("table.nulls")
            text = page.inner_text("table.nulls")
            assert "modules" in text and "annotation" in text and "cross_layer" in text and "svd" in text
            assert "not measured" not in page.inner_text("main")
            page.goto(f"http://127.0.0.1:{server.server_port}/{family}/#/flow")
            page.wait_for_selector("main h1")
            page.wait_for_load_state("networkidle")
        assert page.problems == []
    finally:
        server.shutdown()
        server.server_close()
