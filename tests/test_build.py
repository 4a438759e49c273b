"""atlas build end to end on tiny checkpoints: both families, local vs Ray, determinism, resume after a kill in
the middle of the streaming pass, backed vs in-memory reads, a subset of layers, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pyarrow.parquet as pq
import pytest

from builder.atlas.format import read_atlas, validate
from test_cli import run
from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
TRRUST = SHARED / "reference" / "genesets" / "trrust_rawdata.human.tsv"
SAMPLE = ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad"
CONFIG = """max_cells = 60
shard_cells = 8
cell_type_column = "kind"
donor_column = "donor"
[train]
k = 8
epochs = 1
sample_tokens = 20000
[graphs]
umap_neighbors = 10
"""


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    """The bundled sample with a cell-type and a donor column (cells split by total counts, donors round robin)."""
    a = ad.read_h5ad(SAMPLE)
    n = a.obs["n_counts"].to_numpy()
    a.obs["kind"] = np.where(n > np.median(n), "high", "low")
    a.obs.loc[a.obs.index[::7], "kind"] = "mixed"
    a.obs["donor"] = [f"d{i % 4}" for i in range(a.n_obs)]
    out = tmp_path_factory.mktemp("data") / "labelled.h5ad"
    a.write_h5ad(out)
    return out


def build_args(tmp, tiny, data, family="scgpt", name="t", cache="cache", out="data", site="site", extra=()):
    ckpt = tiny / ("scgpt" if family == "scgpt" else "geneformer-v2")
    (tmp / "atlas.toml").write_text(CONFIG)
    args = ["build", "--model", family, "--checkpoint", str(ckpt), "--train-sae", "--config", str(tmp / "atlas.toml"),
            "--data", str(data), "--atlas", name, "--cache", str(tmp / cache), "--data-dir", str(tmp / out),
            "--site", str(tmp / site), "--quiet", *extra]
    if TRRUST.is_file():
        args += ["--trrust", str(TRRUST)]
    return args


def tree(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tiny, labelled, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    from builder.cli import main

    for family in ("scgpt", "geneformer"):
        try:
            main(build_args(tmp, tiny, labelled, family, name=family))
        except SystemExit as e:
            assert e.code == 0
    return tmp


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_build_end_to_end(built, family):
    atlas = read_atlas(built / "data" / family)
    assert validate(atlas.path) == []
    m = atlas.manifest
    assert m["model"]["family"] == family and m["model"]["layers"] == [0, 1] and m["model"]["n_layers"] == 2
    assert m["parameters"]["train"]["k"] == 8 and m["parameters"]["max_cells"] == 60 and "engine" not in m["parameters"]
    layers = atlas.table("layers").to_pylist()
    assert [r["layer"] for r in layers] == [0, 1] and all(r["n_features"] == 256 for r in layers)
    assert all(r["variance_explained"] is not None and r["annotated_null_rate"] is not None for r in layers)
    feats = atlas.table("features").to_pandas()
    assert feats["alive"].sum() > 100 and feats["map_x"].notna().sum() > 50
    genes = atlas.table("feature_genes").to_pandas()
    assert len(genes) > 0 and genes["rank"].min() == 1 and (genes["fire_count"] >= 5).all()  # fire_count: the support
    assert not genes["gene"].str.startswith("ENSG").all()  # symbols, also for Geneformer
    ct = atlas.table("celltypes").to_pandas()
    assert set(ct["name"]) <= {"high", "low", "mixed"} and (ct["auc"] >= 0.6).all() and (ct["q"] <= 0.05).all()
    nb = atlas.table("null_baseline").to_pandas()
    assert {"annotation", "modules", "cross_layer", "svd"} <= set(nb["analysis"])
    assert set(nb["baseline"]) == {"random_genes", "pca", "coexpression", "random_init_model", "within_gene_shuffle",
                                   "random_direction", "random_dictionary", "random_dictionary_2"}
    ann = nb[(nb.analysis == "annotation") & (nb.measure == "any database")]
    assert set(ann["baseline"]) == {"random_genes", "pca", "coexpression", "random_init_model", "random_dictionary",
                                    "random_dictionary_2"}
    # like for like: the baselines with as many lists as features beside the layer's own rate; pca and
    # coexpression (fewer lists) beside as many of the layer's most frequent features, in a family of that size
    whole = ann[~ann.baseline.isin(["pca", "coexpression"])]
    assert (whole.groupby("layer")["observed"].nunique() == 1).all()
    layers = atlas.table("layers").to_pandas().set_index("layer")
    for r in whole.itertuples():
        assert r.observed == layers.loc[r.layer, "annotated_rate"] and r.observed_n == layers.loc[r.layer, "tested"]
    few = ann[ann.baseline.isin(["pca", "coexpression"])]
    assert (few["observed_n"] == few["expected_n"]).all() and (few["expected_n"] < few["layer"].map(layers["tested"])).all()
    rates = ann.dropna(subset=["expected_n"])
    assert ((rates["expected_lo"] <= rates["expected"]) & (rates["expected"] <= rates["expected_hi"])).all()
    twin = nb[nb.baseline == "random_init_model"]
    assert {"annotation", "modules", "cross_layer"} <= set(twin["analysis"])
    ran = m["baselines"]["ran"]
    assert m["baselines"]["not_run"] == {} and ran["pca"]["components"] == 10 and ran["coexpression"]["cells"] == 60
    assert ran["random_init_model"]["checkpoint_sha256"] != m["model"]["checkpoint_sha256"]
    assert not any("seconds" in k for k in json.dumps(m["baselines"]).split('"'))  # the manifest stays reproducible
    svd = atlas.table("svd_comparison").to_pandas()
    assert {"share_10_p50", "r2_10_p50", "share_10_p50_random", "r2_10_p50_random", "share_10_mean_expected"} <= set(svd["metric"])
    assert "decoder_cosine" in set(atlas.table("edges").column("kind").to_pylist())
    assert (built / "site" / family / "index.html").is_file()


def test_rebuild_is_byte_identical_and_cached(built, tiny, labelled, tmp_path, capsys):
    code, _, err = run(build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt"), capsys)
    assert code == 0, err
    assert tree(tmp_path / "data" / "scgpt") == tree(built / "data" / "scgpt")
    assert tree(tmp_path / "site" / "scgpt") == tree(built / "site" / "scgpt")
    args = [a for a in build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt") if a != "--quiet"]
    code, out, _ = run(args, capsys)
    assert code == 0 and "cached: plan, sample, sae, stream, stats, annotate, graph, cross, twin, baselines" in out


def test_random_init_model_rows_are_the_twin_build_s_own(built):
    """The twin's annotation rate in null_baseline is what its own annotate stage found, and its stages sit in the
    cache under their own keys (a second annotate stage, without the random_genes baseline)."""
    nb = read_atlas(built / "data" / "scgpt").table("null_baseline").to_pandas()
    twin = nb[(nb.baseline == "random_init_model") & (nb.analysis == "annotation")].set_index(["layer", "measure"])
    stages = [pq.read_table(d / "annotation" / "rates.parquet").to_pandas()
              for d in sorted((built / "cache").glob("annotate-*"))]
    theirs = [r for r in stages if r["null_annotated"].isna().all()]  # the twins of both families
    found = [r.set_index(["layer", "database"]) for r in theirs]
    shares = [(r["annotated"] / r["n_features"]).sort_index() for r in found]
    assert any(np.allclose(s.to_numpy(), twin["expected"].sort_index().to_numpy()) for s in shares
               if len(s) == len(twin))
    assert len(list((built / "cache").glob("twin-*/checkpoint/twin.json"))) == 2


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_ray_engine_gives_the_same_bytes(built, tiny, labelled, tmp_path, capsys, ray_session, family):
    args = build_args(tmp_path, tiny, labelled, family, name=family, extra=("--engine", "ray", "--workers", "2"))
    code, _, err = run(args, capsys)
    assert code == 0 and err == "", err  # nothing from Ray reaches the user
    assert tree(tmp_path / "data" / family) == tree(built / "data" / family)
    assert tree(tmp_path / "site" / family) == tree(built / "site" / family)


def test_killed_stream_resumes_at_the_first_unfinished_shard(built, tiny, labelled, tmp_path):
    args = [a for a in build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt") if a != "--quiet"]
    marker = tmp_path / "paused"  # the build stops once its second stream shard is committed (pausepoint.py)
    env = {**os.environ, "ATLAS_PAUSE_AT": "stream unit 2", "ATLAS_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True, env=env)
    cache = tmp_path / "cache"
    while not marker.exists():
        assert proc.poll() is None, "the build ended before its second stream shard"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(cache.glob("stream-*/shards/*/.done"))
    assert len(done) == 2 and not list(cache.glob("stream-*/.done"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert not (tmp_path / "data" / "scgpt").exists()
    res = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished shards were not recomputed
    assert f"stream: {8 - len(done)} shards" in res.stdout
    assert tree(tmp_path / "data" / "scgpt") == tree(built / "data" / "scgpt")


def test_in_memory_read_and_a_layer_subset(built, tiny, labelled, tmp_path, capsys):
    (tmp_path / "mem.toml").write_text(CONFIG.replace("[train]", "backed = false\n[train]"))
    args = build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt")
    args[args.index("--config") + 1] = str(tmp_path / "mem.toml")
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert tree(tmp_path / "data" / "scgpt") == tree(built / "data" / "scgpt")
    code, _, err = run(build_args(tmp_path, tiny, labelled, "scgpt", name="one", extra=("--layers", "1")), capsys)
    assert code == 0, err
    atlas = read_atlas(tmp_path / "data" / "one")
    assert atlas.manifest["model"]["layers"] == [1] and atlas.manifest["model"]["n_layers"] == 2
    assert atlas.table("layers").column("layer").to_pylist() == [1]


def test_bad_input_leaves_the_previous_atlas(built, tiny, labelled, tmp_path, capsys):
    shutil.copytree(built / "data" / "scgpt", tmp_path / "data" / "scgpt")
    before = tree(tmp_path / "data" / "scgpt")
    base = build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt")
    cfg = tmp_path / "bad.toml"
    dup = tmp_path / "dup.h5ad"
    a = ad.read_h5ad(labelled)[:20].copy()
    a.var.index = [a.var.index[0]] + list(a.var.index[:-1])
    a.write_h5ad(dup)

    def with_config(text):
        i = base.index("--config")
        return (text, base[:i + 1] + [str(cfg)] + base[i + 2:])

    def replace(option, value):
        args = list(base)
        args[args.index(option) + 1] = value
        return (None, args)

    cases = [
        (with_config("colour = 1\n"), "colour: unknown setting"),
        (with_config("[train]\nk = 'eight'\n"), "[train] k: expected an integer, got 'eight'"),
        (with_config("max_cells = 60\n[train]\nsample_tokens = 0\n"), "[train] sample_tokens: 0 is not in the range x>=1."),
        (with_config("max_cells = 60\n[train]\nsample_tokens = 10000000\n"), "train.sample_tokens 10000000: must be between 1 and"),
        (with_config("[stats]\nauc_floor = 1.5\n"), "[stats] auc_floor: 1.5 is not in the range 0<x<=1."),
        (with_config("cell_type_column = 'nope'\n"), "obs has no column 'nope' for --cell-type-column"),
        (replace("--checkpoint", str(tmp_path / "nope")), "nope"),
        (replace("--data", str(dup)), "names 1 gene(s) more than once"),
        ((None, base + ["--gpus-per-worker", "1"]), "this machine has no GPU"),
        ((None, base + ["--engine", "ray", "--ray-address", "127.0.0.1:1"]), "--ray-address 127.0.0.1:1: cannot connect"),
    ]
    for (text, args), message in cases:
        if text is not None:
            cfg.write_text(text)
        code, _, err = run(args, capsys)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert tree(tmp_path / "data" / "scgpt") == before


def test_a_shard_failing_on_a_worker_is_named(tiny, labelled, tmp_path, capsys):
    from builder.pipeline.sae.topk import TopKSAE

    for L in (0, 1):  # finite weights so large that every code overflows: every shard fails in the streaming pass
        sae = TopKSAE(64, 128, 4)
        with __import__("torch").no_grad():
            sae.W_enc.fill_(1e38)
        sae.save(tmp_path / "saes" / f"layer_{L:02d}", {})
    args = [a for a in build_args(tmp_path, tiny, labelled, "scgpt") if a != "--train-sae"] + ["--sae", str(tmp_path / "saes")]
    code, _, err = run(args, capsys)
    assert code == 2 and "stream: shard 0 failed on a worker:" in err and err.count("\n") == 1, err


def test_site_shows_the_nulls(built, page):
    import threading

    from builder.site.serve import make_server

    server = make_server(built / "site", 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for family in ("scgpt", "geneformer"):
            page.goto(f"http://127.0.0.1:{server.server_port}/{family}/#/")
            page.wait_for_selector("table.nulls", state="attached")
            page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")  # folded sections
            text = page.inner_text("table.nulls")
            assert "modules" in text and "annotation" in text and "cross layer" in text and "svd" in text
            assert "not measured" not in page.inner_text("main")
            base = page.inner_text("table.baselines")  # the annotation rate beside every baseline of the build
            assert all(w in base for w in ("Trained SAE", "random gene lists", "principal directions",
                                           "co-expressed gene groups", "untrained foundation model"))
            assert base.count("Layer ") == 2 and "Each cell: the baseline's share" in page.inner_text("main")
            page.goto(f"http://127.0.0.1:{server.server_port}/{family}/#/flow")
            page.wait_for_selector("main h1")
            page.wait_for_load_state("networkidle")
        assert page.problems == []
    finally:
        server.shutdown()
        server.server_close()


def test_ray_engine_without_ray_installed_is_one_line(built, tiny, labelled, tmp_path, capsys, monkeypatch):
    shutil.copytree(built / "data" / "scgpt", tmp_path / "data" / "scgpt")
    before = tree(tmp_path / "data" / "scgpt")
    for name in ("ray", "ray.data"):  # None in sys.modules: `import ray` raises ImportError, as without the package
        monkeypatch.setitem(sys.modules, name, None)
    code, _, err = run(build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt", extra=("--engine", "ray")), capsys)
    assert code == 2 and err == "error: --engine ray needs Ray: pip install 'feature-atlas[ray]'\n", err
    assert tree(tmp_path / "data" / "scgpt") == before and not (tmp_path / "cache").exists()


def test_a_failing_shard_keeps_the_finished_ones_and_the_previous_atlas(built, tiny, labelled, tmp_path, capsys):
    """Shard 0 encodes and shard 1 overflows the SAE of layer 0: one line naming shard 1, exit 2, the previous atlas
    and site as they were, shard 0 kept and not recomputed by the rerun."""
    import torch

    from builder.pipeline.model.forward import ModelRunner, ModelSpec
    from builder.pipeline.sae.topk import TopKSAE

    for sub in ("data", "site"):
        shutil.copytree(built / sub / "scgpt", tmp_path / sub / "scgpt")
    before = {sub: tree(tmp_path / sub / "scgpt") for sub in ("data", "site")}
    # The input dimension whose largest activation grows most from shard 0 (cells 0-7) to shard 1 (cells 8-15),
    # and a weight that overflows float32 above the midpoint: finite in shard 0, infinite codes in shard 1.
    runner = ModelRunner(ModelSpec("scgpt", str(tiny / "scgpt"), str(labelled), (0,), max_cells=60))
    peak = [np.concatenate([c.acts[0] for c in runner.run(range(a, a + 8))]).max(axis=0) for a in (0, 8)]
    d = int(np.argmax(peak[1] - peak[0]))
    assert peak[1][d] > peak[0][d] > 0
    tau = float(peak[0][d] + peak[1][d]) / 2
    for L in (0, 1):
        sae = TopKSAE(64, 128, 4)
        if L == 0:
            with torch.no_grad():
                sae.W_enc[d, 0] = float(np.finfo(np.float32).max) / tau
        sae.save(tmp_path / "saes" / f"layer_{L:02d}", {})
    args = [a for a in build_args(tmp_path, tiny, labelled, "scgpt", name="scgpt") if a != "--train-sae"]
    args += ["--sae", str(tmp_path / "saes")]
    stamps = []
    for _ in range(2):
        code, _, err = run(args, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("error: stream: shard 1 failed on a worker: layer 0: the SAE gives NaN or infinite codes "
                              "in cells 8..15"), err
        shard0 = list((tmp_path / "cache").glob("stream-*/shards/00000/.done"))
        assert len(shard0) == 1 and not list((tmp_path / "cache").glob("stream-*/shards/00001"))
        stamps.append(shard0[0].stat().st_mtime_ns)
        assert {sub: tree(tmp_path / sub / "scgpt") for sub in ("data", "site")} == before
    assert stamps[0] == stamps[1]  # the rerun kept shard 0
