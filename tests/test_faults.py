"""Bad inputs and faults, command by command, as a careless or unlucky user meets them.

Every row runs one command on a copy of a workspace that holds earlier outputs of every command (activations,
SAE, codes, statistics, annotation, atlas data, site). It must end with exit status 2 and exactly one stderr
line, `error: ...`, containing the row's words (the file, field or option, and what was expected), and it must
leave every file of the workspace as it was: nothing new, nothing changed, no temporary folder left.

Adding a row: Fault(id, command line, words, setup). Paths in the command line are relative to the workspace
copy; {ckpt} is a tiny scGPT checkpoint and {sample} the bundled .h5ad. `setup(ws)` damages the copy before the
run (helpers below: put, truncate, edit_json, rewrite_table, ...). Rows for `atlas build` belong in the same
table; SIGKILL during a build and two builds on one cache are tests of their own below.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builder.atlas.format import validate, write_atlas
from builder.atlas.synthetic import make_synthetic
from builder.cli import describe, main
from builder.fsutil import sha256_file
from test_cli import run

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad"


def biodyn_source(folder: Path, n_layers: int = 2, n_features: int = 12, seed: int = 0) -> Path:
    """A folder in the predecessor's JSON format, every file of it, with seeded random values."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    genes = [f"GENE{i}" for i in range(300)]
    for L in range(n_layers):
        feats, anns, pos = [], {}, []
        cts = {"summary": {"n_cells": 100, "tissues": 2, "n_cell_types": 3}, "features": {}}
        for i in range(n_features):
            feats.append({"i": i, "d": i % 10 == 9, "f": rng.random() / 10, "ma": rng.random(),
                          "fc": rng.randrange(100), "lb": "TERM A" if i % 3 == 0 else "", "m": i % 4,
                          "tg": [{"n": g, "a": rng.random(), "fc": rng.randrange(1, 50)} for g in rng.sample(genes, 5)],
                          "sv": i % 2 == 0})
            if i % 3 == 0:
                anns[str(i)] = {"anns": [{"o": "GO", "t": "TERM A", "p": 0.01, "or": 3.5, "n": 2, "g": ["GENE1", "GENE2"]}]}
            cts["features"][str(i)] = {"ct": [{"c": "T cell", "p": 0.02, "or": 2.0, "n": 4}],
                                       "ti": [{"t": "blood", "p": 0.5, "or": 1.0, "n": 2}],
                                       "tc": [{"ct": "T cell", "t": "blood", "a": rng.random()}]}
            pos.append([rng.random(), rng.random()])
        for kind, data in (("features", feats), ("annotations", anns), ("celltypes", cts), ("positions", pos)):
            (folder / f"layer_{L:02d}_{kind}.json").write_text(json.dumps(data))
    modules = [{"layer": L, "id": m, "features": [f for f in range(n_features) if f % 4 == m],
                "top_anns": [{"t": "TERM A", "c": 2}]} for L in range(n_layers) for m in range(4)]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "cross_layer_graph.json").write_text(json.dumps(
        {f"L{L}_L{L + 1}": {"edges": [{"a": 1, "b": 2, "pmi": 1.5, "c": 12}], "summary": {"n_edges": 1}}
         for L in range(n_layers - 1)}))
    (folder / "causal_patching.json").write_text(json.dumps(
        {"layer": 0, "features": [{"i": 1, "nc": 5, "td": 0.1, "od": 0.01, "sr": 10.0, "tg": ["GENE1"]}], "summary": {}}))
    (folder / "global_summary.json").write_text(json.dumps(
        {"layers": [{"layer": L, "variance_explained": 0.9} for L in range(n_layers)]}))
    return folder


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, tiny):
    """A workspace holding an earlier output of every command, each made by the command itself."""
    ws = tmp_path_factory.mktemp("faults")
    steps = [
        f"extract --model scgpt --checkpoint {tiny / 'scgpt'} --data {SAMPLE} --out acts --max-cells 4",
        "sae train --activations acts --layer 0 --expansion 2 --k 8 --epochs 1 --out sae",
        "sae encode --sae sae --activations acts --layer 0 --out codes",
        "sae stats --codes codes --out stats --min-support 1",
        "annotate --genes stats/feature_genes.parquet --layer 0 --genesets Hallmark --min-size 2 --universe-from-table "
        "--out annotation",
        "import biodyn bsrc --atlas imported",
        "render --atlas demo",
    ]
    with contextlib.chdir(ws):
        biodyn_source(ws / "bsrc")
        manifest, tables = make_synthetic(2, 32, seed=5)
        write_atlas(ws / "atlas_data" / "demo", manifest, tables)
        (ws / "atlas_data" / "inputs").mkdir()
        (ws / "atlas_data" / "inputs" / "README").write_text("the project's bundled inputs\n")
        for step in steps:
            main(shlex.split(step))  # returns on success, exits on failure
    return ws


@pytest.fixture
def ws(pristine, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    shutil.copytree(pristine, root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def ckpt(tiny):
    return tiny / "scgpt"


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under root, with each file's sha256: equal snapshots mean nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "folder"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = sha256_file(Path(p))
    return out


# ----- setups: each damages the workspace copy -------------------------------------------------------------

def put(rel: str, data: str | bytes) -> Callable:
    def setup(ws):
        p = ws / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def truncate(rel: str, keep: float = 0.5) -> Callable:
    def setup(ws):
        raw = (ws / rel).read_bytes()
        (ws / rel).write_bytes(raw[: int(len(raw) * keep)])
    return setup


def remove(rel: str) -> Callable:
    return lambda ws: (ws / rel).unlink()


def edit_json(rel: str, change: Callable) -> Callable:
    def setup(ws):
        p = ws / rel
        p.write_text(json.dumps(change(json.loads(p.read_text()))))
    return setup


def manifest(change: Callable) -> Callable:
    return edit_json("atlas_data/demo/manifest.json", change)


def rewrite_table(name: str, change: Callable, fix_manifest: bool = True) -> Callable:
    """Change one table of the demo atlas; with fix_manifest its rows and sha256 are recorded again, so the
    change itself is the only problem."""
    def setup(ws):
        atlas = ws / "atlas_data" / "demo"
        file = atlas / f"{name}.parquet"
        pq.write_table(change(pq.read_table(file)), file, compression="zstd")
        if fix_manifest:
            m = json.loads((atlas / "manifest.json").read_text())
            m["tables"][name] = {"rows": pq.read_metadata(file).num_rows, "sha256": sha256_file(file)}
            (atlas / "manifest.json").write_text(json.dumps(m))
    return setup


def with_column(name, values):
    return lambda t: t.append_column(name, pa.array(values if isinstance(values, list) else [values] * t.num_rows))


def set_item(key, value):
    return lambda d: {**d, key: value}


def set_cell(column, row, value):
    """Change one value of a table column, keeping the column's type."""
    def change(t):
        values = t.column(column).to_pylist()
        values[row] = value
        return t.set_column(t.column_names.index(column), column, pa.array(values, t.schema.field(column).type))
    return change


def sae_weights(change: Callable) -> Callable:
    def setup(ws):
        from safetensors.torch import load_file, save_file
        state = load_file(ws / "sae" / "sae_weights.safetensors")
        change(state)
        save_file(state, ws / "sae" / "sae_weights.safetensors")
    return setup


def nan_activation(ws):
    acts = np.load(ws / "acts" / "layer_00.npy", mmap_mode="r+")
    acts[3, 5] = np.nan
    acts.flush()


def narrow_sae(ws):
    from builder.pipeline.sae.topk import TopKSAE
    TopKSAE(32, 64, 4).save(ws / "sae", {})


def short_shard(ws):
    np.save(ws / "codes" / "00000.cell.npy", np.zeros(3, np.int32))


def codes_entry(field: str, row, value) -> Callable:
    """Write `value` at `row` of the codes' first shard file of `field` (idx, cell or gene)."""
    def setup(ws):
        path = ws / "codes" / f"00000.{field}.npy"
        a = np.load(path)
        a[row] = value
        np.save(path, a)
    return setup


def duplicated_genes(rel: str, source: str | None = None) -> Callable:
    """A copy of an .h5ad (the bundled sample by default) whose first gene name is given to its second gene too."""
    def setup(ws):
        import anndata
        a = anndata.read_h5ad(ws / source if source else SAMPLE)[:40].copy()
        a.var.index = [a.var.index[0]] + list(a.var.index[:-1])
        a.write_h5ad(ws / rel)
    return setup


def gene_table(rel: str, change: Callable) -> Callable:
    def setup(ws):
        df = pq.read_table(ws / "stats" / "feature_genes.parquet").to_pandas()
        df.insert(0, "layer", 0)
        change(df).to_csv(ws / rel, index=False)
    return setup


def nan_feature(df):
    df["feature"] = df["feature"].astype(float)
    df.loc[5, "feature"] = np.nan
    return df


def big(col, value):
    def change(df):
        df[col] = df[col].astype(object)
        df.loc[3, col] = value
        return df
    return change


def source_json(rel: str, change: Callable) -> Callable:
    return edit_json(f"bsrc/{rel}", change)


def first(change: Callable) -> Callable:
    """Change the first record of a JSON array."""
    return lambda records: [change(records[0])] + records[1:]


def rename_layer(ws):
    for p in sorted((ws / "bsrc").glob("layer_01_*.json")):
        p.rename(p.with_name(p.name.replace("layer_01_", "layer_40000_")))


def chain(*setups: Callable) -> Callable:
    return lambda ws: [s(ws) for s in setups]


# ----- the table ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    id: str
    command: str
    says: tuple[str, ...]
    setup: Callable | None = None


EXTRACT = "extract --model scgpt --checkpoint {ckpt} --data {sample} --out acts --max-cells 4"
TRAIN = "sae train --activations acts --layer 0 --expansion 2 --k 8 --epochs 1 --out sae"
ENCODE = "sae encode --sae sae --activations acts --layer 0 --out codes"
STATS = "sae stats --codes codes --out stats"
ANNOTATE = ("annotate --genes stats/feature_genes.parquet --layer 0 --genesets Hallmark --min-size 2 --universe-from-table "
            "--out annotation")
IMPORT = "import biodyn bsrc --atlas imported"
BUILD = "build --model scgpt --checkpoint {ckpt} --data {sample} --atlas b --cache cache --max-cells 4"
# Default atlas name (scgpt), default cache: the rows on default names and overlapping outputs.
PERTURB = "perturb --atlas built --data screen.h5ad --perturbation-column gene --control nt --min-cells 5 --quiet"
TRAIN_BUILD = "build --model scgpt --checkpoint {ckpt} --data {sample} --train-sae --max-cells 4 --quiet"
LINK = "link --atlas la --atlas lb --cache lcache --quiet"


def headless_checkpoint(ws: Path) -> None:
    """A tiny scGPT checkpoint without its expression decoder (the prediction head interventions read)."""
    import torch

    from builder.models.tiny import write_scgpt

    ckpt = write_scgpt(ws / "headless")
    state = torch.load(ckpt / "best_model.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("decoder.")}, ckpt / "best_model.pt")


def partial_head_checkpoint(ws: Path) -> None:
    """A tiny scGPT checkpoint whose expression decoder lacks its second and third Linear layers (fc.2, fc.4)."""
    import torch

    from builder.models.tiny import write_scgpt

    ckpt = write_scgpt(ws / "partial")
    state = torch.load(ckpt / "best_model.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith(("decoder.fc.2.", "decoder.fc.4."))},
               ckpt / "best_model.pt")


_PERTURB: dict = {}


def perturb_workspace(ws: Path) -> None:
    """A built atlas with loadable SAEs (`built`: a tiny scGPT, layer 0, the workspace's SAE as saes/layer_00),
    made once per run and copied in, and a small Perturb-seq file: screen.h5ad, obs 'gene' = nt (24 cells), A, B
    (8 each)."""
    import anndata
    import atexit
    import tempfile

    from builder.models.tiny import write_scgpt

    if "root" not in _PERTURB:
        root = Path(tempfile.mkdtemp(prefix="perturb-faults-"))
        atexit.register(shutil.rmtree, root, True)
        shutil.copytree(ws / "sae", root / "saes" / "layer_00")
        ckpt = write_scgpt(root / "ckpt")
        with contextlib.chdir(root):
            main(shlex.split(f"build --model scgpt --checkpoint {ckpt} --data {SAMPLE} --sae saes --layers 0 "
                             "--atlas built --cache cache --max-cells 40 --no-random-init-model --no-coexpression "
                             "--no-pca-baseline --quiet"))
        _PERTURB["root"] = root
    root = _PERTURB["root"]
    shutil.copytree(root / "atlas_data" / "built", ws / "atlas_data" / "built")
    shutil.copytree(root / "saes", ws / "saes")
    a = anndata.read_h5ad(SAMPLE)[:40].copy()
    a.obs["gene"] = ["nt"] * 24 + ["A"] * 8 + ["B"] * 8
    a.write_h5ad(ws / "screen.h5ad")


def perturb_setup(*more: Callable) -> Callable:
    return chain(perturb_workspace, *more)


_LINK: dict = {}


def link_workspace(**kw) -> Callable:
    """The planted atlases of tests/linkdata.py (la, lb with their twins, cache in lcache/), made once per variant
    `kw` (planted's options) and copied in."""
    def setup(ws: Path) -> None:
        import atexit
        import tempfile

        from linkdata import planted

        key = repr(sorted(kw.items()))
        if key not in _LINK:
            root = Path(tempfile.mkdtemp(prefix="link-faults-"))
            atexit.register(shutil.rmtree, root, True)
            planted(root / "atlas_data", root / "lcache", **kw)
            _LINK[key] = root
        for name in ("la", "lb"):
            shutil.copytree(_LINK[key] / "atlas_data" / name, ws / "atlas_data" / name)
        shutil.copytree(_LINK[key] / "lcache", ws / "lcache")
    return setup


def link_setup(*more: Callable, **kw) -> Callable:
    return chain(link_workspace(**kw), *more)


FAULTS = [
    # build --interventions: a checkpoint without its prediction head is refused before any stage
    Fault("build-interventions-without-head", "build --model scgpt --checkpoint headless --train-sae --interventions "
          "--data {sample} --atlas nohead --cache cache --quiet", ("headless", "no expression decoder", "its head"),
          headless_checkpoint),
    Fault("build-interventions-incomplete-head", "build --model scgpt --checkpoint partial --train-sae --interventions "
          "--data {sample} --atlas partial --cache cache --quiet",
          ("partial/best_model.pt: the expression decoder (decoder.*) is incomplete, missing decoder.fc.2.weight",
           "need the whole head"), partial_head_checkpoint),
    # perturb: every input checked before the model runs; the atlas unchanged
    Fault("perturb-column-missing", PERTURB.replace("-column gene", "-column guide"),
          ("screen.h5ad: obs has no column 'guide'", "--perturbation-column"), perturb_setup()),
    Fault("perturb-control-missing", PERTURB.replace("--control nt", "--control NTC"),
          ("--control 'NTC'", "no cell of", "values: A, B, nt"), perturb_setup()),
    Fault("perturb-too-few-cells", PERTURB.replace("--min-cells 5", "--min-cells 10"),
          ("--min-cells 10", "no perturbation", "largest: B with 8"), perturb_setup()),
    Fault("perturb-too-few-controls", PERTURB.replace("--min-cells 5", "--min-cells 30"),
          ("--control 'nt': 24 control cells, fewer than --min-cells 30",), perturb_setup()),
    Fault("perturb-imported-atlas", PERTURB.replace("--atlas built", "--atlas imported"),
          ("atlas imported", "no model checkpoint and no SAEs"), perturb_setup()),
    Fault("perturb-atlas-without-model", PERTURB.replace("--atlas built", "--atlas demo"),
          ("atlas demo: records no model checkpoint", "--sae DIR"), perturb_setup()),
    Fault("perturb-sae-gone", PERTURB, ("SAE of layer 0 is not at saes/layer_00", "--sae DIR"),
          perturb_setup(lambda ws: shutil.rmtree(ws / "saes"))),
    Fault("perturb-atlas-missing", PERTURB.replace("--atlas built", "--atlas nope"),
          ("atlas 'nope' not found in atlas_data", "built, demo, imported"), perturb_setup()),
    Fault("perturb-layer-not-in-atlas", PERTURB + " --layers 1", ("--layers 1: atlas built has layers 0",),
          perturb_setup()),
    Fault("perturb-bad-trrust", PERTURB + " --trrust bad.tsv", ("bad.tsv:1", "4 tab-separated columns"),
          perturb_setup(put("bad.tsv", "SPI1\tLYZ\n"))),
    Fault("perturb-data-not-h5ad", PERTURB.replace("screen.h5ad", "junk.h5ad"), ("junk.h5ad: not a readable .h5ad",),
          perturb_setup(put("junk.h5ad", "not hdf5"))),
    Fault("perturb-on-target-out-of-range", PERTURB + " --on-target 1", ("--on-target", "0<=x<1"), perturb_setup()),
    Fault("perturb-batch-column-missing", PERTURB + " --batch-column lane",
          ("screen.h5ad: obs has no column 'lane'", "--batch-column"), perturb_setup()),
    Fault("perturb-min-cells-2", PERTURB.replace("--min-cells 5", "--min-cells 2"), ("'--min-cells'", "x>=3"),
          perturb_setup()),
    Fault("perturb-manifest-without-model", PERTURB, ("atlas built records no model", "manifest.json", "atlas build"),
          perturb_setup(edit_json("atlas_data/built/manifest.json", lambda m: {k: v for k, v in m.items() if k != "model"}))),
    Fault("perturb-duplicated-gene-names", PERTURB.replace("screen.h5ad", "dup.h5ad"),
          ("dup.h5ad: var column 'index' names 1 gene(s) more than once",),
          perturb_setup(duplicated_genes("dup.h5ad", "screen.h5ad"))),
    Fault("perturb-name-trailing-newline", PERTURB.replace("--atlas built", "--atlas 'built\n'"),
          ("'--atlas'", "'built\\n' must be letters, digits"), perturb_setup()),
    Fault("perturb-dataset-name-empty", PERTURB + " --dataset-name ''", ("'--dataset-name'", "must not be empty"),
          perturb_setup()),
    Fault("perturb-batch-column-empty", PERTURB + " --batch-column ''", ("'--batch-column'", "must not be empty"),
          perturb_setup()),
    # render: outputs that overlap inputs or are not sites, damaged atlas data
    Fault("render-site-is-data-dir", "render --data-dir atlas_data --site atlas_data", ("--site atlas_data", "same path")),
    Fault("render-site-inside-data-dir", "render --site atlas_data/site", ("--site is inside --data-dir",)),
    Fault("render-data-dir-inside-site", "render --data-dir site/data --site site", ("--data-dir is inside --site",),
          lambda ws: shutil.copytree(ws / "atlas_data" / "demo", ws / "site" / "data" / "demo")),
    Fault("render-site-is-file", "render --site notes.txt", ("'--site'", "notes.txt is a file"), put("notes.txt", "x")),
    Fault("render-over-a-folder-not-a-site", "render --atlas imported", ("site/imported", "not a rendered site"),
          put("site/imported/my-notes.txt", "mine")),
    Fault("render-unknown-atlas", "render --atlas nope", ("'nope' not found in atlas_data", "available: demo, imported")),
    Fault("render-name-trailing-newline", "render --atlas 'demo\n'", ("'--atlas'", "'demo\\n' must be letters, digits")),
    Fault("render-no-data-dir", "render --data-dir nowhere", ("'--data-dir'", "'nowhere' does not exist")),
    Fault("render-manifest-truncated", "render --atlas demo", ("manifest.json", "not valid JSON"),
          truncate("atlas_data/demo/manifest.json")),
    Fault("render-tables-entry-array", "render --atlas demo", ("field 'tables.features' is an array, expected an object",),
          manifest(lambda m: {**m, "tables": {**m["tables"], "features": [1]}})),
    Fault("render-model-array", "render --atlas demo", ("field 'model' is an array, expected an object",),
          manifest(set_item("model", ["scgpt"]))),
    Fault("render-unknown-column", "render --atlas demo", ("features.parquet", "unknown column 'extra'"),
          rewrite_table("features", with_column("extra", 1))),
    Fault("render-changed-table", "render --atlas demo", ("edges.parquet", "sha256 differs"),
          rewrite_table("edges", lambda t: t.set_column(t.column_names.index("weight"), "weight",
                                                        pa.array([0.5] * t.num_rows)), fix_manifest=False)),
    Fault("render-truncated-parquet", "render --atlas demo", ("edges.parquet", "not a readable Parquet file"),
          truncate("atlas_data/demo/edges.parquet")),
    Fault("render-schema-version", "render --atlas demo", ("unknown schema_version 7",),
          manifest(set_item("schema_version", 7))),
    # render refuses exactly what validate refuses (the same check): here a module of a layer the atlas lacks
    Fault("render-layer-not-in-manifest", "render --atlas demo",
          ("modules.parquet: column 'layer' holds layer 7 (1 row(s)), not one of the atlas' layers [0, 1]",),
          rewrite_table("modules", set_cell("layer", 0, 7))),
    # validate: one problem each, so one line each
    Fault("validate-unknown-column", "validate atlas_data/demo", ("modules.parquet: unknown column 'colour'",),
          rewrite_table("modules", with_column("colour", "red"))),
    Fault("validate-changed-table", "validate atlas_data/demo", ("features.parquet: sha256 differs",),
          rewrite_table("features", lambda t: t.set_column(t.column_names.index("label"), "label",
                                                           pa.array(["x"] * t.num_rows)), fix_manifest=False)),
    Fault("validate-tables-entry-string", "validate atlas_data/demo",
          ("field 'tables.edges' is a string, expected an object",),
          manifest(lambda m: {**m, "tables": {**m["tables"], "edges": "edges.parquet"}})),
    Fault("validate-rows-string", "validate atlas_data/demo", ("field 'tables.edges.rows' is a string, expected an integer",),
          manifest(lambda m: {**m, "tables": {**m["tables"], "edges": {**m["tables"]["edges"], "rows": "12"}}})),
    Fault("validate-notes-string", "validate atlas_data/demo", ("field 'notes' is a string, expected an array",),
          manifest(set_item("notes", "random data"))),
    Fault("validate-layers-mismatch", "validate atlas_data/demo", ("model.layers is [0, 1, 2], layers.parquet has [0, 1]",),
          manifest(lambda m: {**m, "model": {**m["model"], "layers": [0, 1, 2]}})),
    # every table's (layer, feature) columns: layers the manifest lists, features within their layer's width
    Fault("validate-layer-not-in-manifest", "validate atlas_data/demo",
          ("enrichments.parquet: column 'layer' holds layer 5 (1 row(s)), not one of the atlas' layers [0, 1]",),
          rewrite_table("enrichments", set_cell("layer", 0, 5))),
    Fault("validate-feature-beyond-width", "validate atlas_data/demo",
          ("features.parquet: column 'feature' holds feature 32 on layer 0 (n_features 32), outside the layer's width",),
          rewrite_table("features", set_cell("feature", 31, 32))),
    Fault("validate-edge-far-end-out-of-range", "validate atlas_data/demo",
          ("edges.parquet: column 'feature_b' holds feature 40 on layer 1 (n_features 32)",),
          rewrite_table("edges", set_cell("feature_b", 0, 40))),
    Fault("validate-manifest-array", "validate atlas_data/demo", ("manifest.json: expected a JSON object",),
          put("atlas_data/demo/manifest.json", "[]")),
    Fault("validate-no-folder", "validate nowhere", ("nowhere: no such atlas folder",)),
    # import: names and folders that must never be replaced, damaged sources
    Fault("import-name-inputs", "import biodyn bsrc --atlas inputs", ("'--atlas'", "'inputs' is reserved")),
    Fault("import-over-a-folder-not-an-atlas", "import biodyn bsrc --atlas mine",
          ("atlas_data/mine", "not an atlas (no manifest.json)"), put("atlas_data/mine/thesis.tex", "years of work")),
    Fault("import-into-its-source", "import biodyn bsrc --atlas x --data-dir bsrc", ("--data-dir/--atlas is inside SRC",)),
    Fault("import-source-holds-output", "import biodyn atlas_data --atlas x", ("--data-dir/--atlas is inside SRC",)),
    Fault("import-source-missing", "import biodyn nowhere --atlas x", ("'SRC'", "'nowhere' does not exist")),
    Fault("import-name-path", "import biodyn bsrc --atlas ../evil", ("'--atlas'", "must be letters, digits")),
    Fault("import-name-trailing-newline", "import biodyn bsrc --atlas 'good\n'", ("'--atlas'", "'good\\n' must be letters")),
    Fault("import-data-dir-is-file", "import biodyn bsrc --atlas x --data-dir notes.txt", ("'--data-dir'", "is a file"),
          put("notes.txt", "x")),
    Fault("import-empty-source", "import biodyn empty --atlas x", ("empty: no layer_NN_features.json",),
          lambda ws: (ws / "empty").mkdir()),
    Fault("import-truncated-json", IMPORT, ("layer_00_features.json", "not valid JSON"),
          truncate("bsrc/layer_00_features.json")),
    Fault("import-feature-field-missing", IMPORT, ("layer_00_features.json: feature record 0: missing field 'fc'",),
          source_json("layer_00_features.json", first(lambda r: {k: v for k, v in r.items() if k != "fc"}))),
    Fault("import-feature-ids-not-from-zero", IMPORT,
          ("layer_00_features.json: feature record 0: field 'i' is 12, expected 0 to 11",),
          source_json("layer_00_features.json", first(lambda r: {**r, "i": 12}))),
    Fault("import-feature-field-type", IMPORT, ("feature record 0: field 'f' is \"often\", expected a number",),
          source_json("layer_00_features.json", first(lambda r: {**r, "f": "often"}))),
    Fault("import-module-members-string", IMPORT, ("modules.json: module record 0: field 'features'",),
          source_json("modules.json", first(lambda r: {**r, "features": "abc"}))),
    Fault("import-position-not-a-pair", IMPORT, ("layer_00_positions.json: entry 0 is not an [x, y] pair",),
          source_json("layer_00_positions.json", first(lambda r: {"x": 1}))),
    Fault("import-top-level-type", IMPORT, ("modules.json: expected a JSON array",), put("bsrc/modules.json", "{}")),
    # serve
    Fault("serve-port-70000", "serve --port 70000", ("'--port'", "70000 is not in the range 0<=x<=65535")),
    Fault("serve-port-negative", "serve --port -1", ("'--port'", "-1 is not in the range")),
    Fault("serve-site-is-file", "serve --site notes.txt", ("'--site'", "is a file"), put("notes.txt", "x")),
    Fault("serve-no-site", "serve --site nowhere", ("nowhere: no rendered site",)),
    # extract (the previous activations folder must survive each)
    Fault("extract-layers-reversed", EXTRACT + " --layers 1-0", ("'--layers'", "range 1-0 runs backwards")),
    Fault("extract-layers-repeated", EXTRACT + " --layers 0,0-1", ("'--layers'", "layer 0 is given twice")),
    Fault("extract-layers-beyond-int16", EXTRACT + " --layers 0,99999", ("'--layers'", "beyond the largest layer number")),
    Fault("extract-layers-beyond-model", EXTRACT + " --layers 5", ("--layers 5: the model has layers 0..1",)),
    Fault("extract-max-cells-0", EXTRACT + " --max-cells 0", ("'--max-cells'", "0 is not in the range x>=1")),
    Fault("extract-batch-size-negative", EXTRACT + " --batch-size -1", ("'--batch-size'", "x>=1")),
    Fault("extract-device", EXTRACT + " --device gpu", ("'--device'", "'gpu' is not one of")),
    Fault("extract-seed-negative", EXTRACT + " --seed -1", ("'--seed'", "0<=x<=4294967295")),
    Fault("extract-data-missing", EXTRACT.replace("{sample}", "nowhere.h5ad"), ("'--data'", "does not exist")),
    Fault("extract-data-garbage", EXTRACT.replace("{sample}", "junk.h5ad"), ("junk.h5ad: not a readable .h5ad file",),
          put("junk.h5ad", "not hdf5")),
    Fault("extract-duplicated-gene-names", EXTRACT.replace("{sample}", "dup.h5ad"),
          ("dup.h5ad: var column 'index' names 1 gene(s) more than once",), duplicated_genes("dup.h5ad")),
    Fault("extract-checkpoint-missing", EXTRACT.replace("{ckpt}", "nowhere"), ("'--checkpoint'", "does not exist")),
    Fault("extract-out-is-checkpoint", EXTRACT.replace("--out acts", "--out {ckpt}"), ("'--out'", "not an activations folder")),
    Fault("extract-out-other-output", EXTRACT.replace("--out acts", "--out stats"), ("stats", "not an activations folder")),
    Fault("extract-out-is-file", EXTRACT.replace("--out acts", "--out notes.txt"), ("'--out'", "is a file"),
          put("notes.txt", "x")),
    # sae train (the previous SAE must survive each)
    Fault("train-lr-nan", TRAIN + " --lr nan", ("'--lr'", "nan is not a finite number")),
    Fault("train-lr-inf", TRAIN + " --lr inf", ("'--lr'", "inf is not a finite number")),
    Fault("train-lr-zero", TRAIN + " --lr 0", ("'--lr'", "0.0 is not in the range x>0")),
    Fault("train-holdout-1", TRAIN + " --holdout 1", ("'--holdout'", "0<x<1")),
    Fault("train-epochs-0", TRAIN + " --epochs 0", ("'--epochs'", "x>=1")),
    Fault("train-k-0", TRAIN + " --k 0", ("'--k'", "x>=1")),
    Fault("train-k-too-large", TRAIN + " --k 1000", ("--k 1000: more than the SAE's 128 features",)),
    Fault("train-aux-coef-negative", TRAIN + " --aux-coef -1", ("'--aux-coef'", "x>=0")),
    Fault("train-centering", TRAIN + " --centering middle", ("'--centering'", "'middle' is not one of")),
    Fault("train-layer-not-extracted", TRAIN.replace("--layer 0", "--layer 5"), ("acts: layer 5 was not extracted",)),
    Fault("train-layer-beyond-int16", TRAIN.replace("--layer 0", "--layer 99999999999"), ("'--layer'", "0<=x<=32767")),
    Fault("train-out-inside-activations", TRAIN.replace("--out sae", "--out acts/sae"), ("--out is inside --activations",)),
    Fault("train-out-other-output", TRAIN.replace("--out sae", "--out codes"), ("codes", "not an SAE folder")),
    Fault("train-extract-json-truncated", TRAIN, ("acts/extract.json: not valid JSON",), truncate("acts/extract.json")),
    Fault("train-extract-json-array", TRAIN, ("acts/extract.json: expected an object",), put("acts/extract.json", "[]")),
    Fault("train-layer-file-truncated", TRAIN, ("layer_00.npy: not a readable .npy file",), truncate("acts/layer_00.npy")),
    Fault("train-nan-activation", TRAIN, ("1 NaN or infinite activation values",), nan_activation),
    Fault("train-tokens-missing", TRAIN, ("acts/tokens.parquet: missing",), remove("acts/tokens.parquet")),
    Fault("train-tokens-garbage", TRAIN, ("acts/tokens.parquet: not a readable Parquet file",),
          put("acts/tokens.parquet", "garbage")),
    Fault("train-tokens-short", TRAIN, ("tokens.parquet: 3 rows for",),
          lambda ws: pq.write_table(pq.read_table(ws / "acts" / "tokens.parquet").slice(0, 3), ws / "acts" / "tokens.parquet")),
    # sae encode (the previous codes must survive each)
    Fault("encode-cfg-array", ENCODE, ("sae/cfg.json: expected an object at the top level, found an array",),
          put("sae/cfg.json", "[1, 2]")),
    Fault("encode-cfg-truncated", ENCODE, ("sae/cfg.json: not valid JSON",), truncate("sae/cfg.json")),
    Fault("encode-weights-nan", ENCODE, ("sae_weights.safetensors: W_enc holds 1 NaN or infinite value(s)",),
          sae_weights(lambda s: s["W_enc"].__setitem__((0, 0), float("nan")))),
    Fault("encode-weights-inf", ENCODE, ("sae_weights.safetensors: b_dec holds 1 NaN or infinite value(s)",),
          sae_weights(lambda s: s["b_dec"].__setitem__(1, float("inf")))),
    Fault("encode-weights-int", ENCODE, ("W_dec is torch.int32, expected a floating-point tensor",),
          sae_weights(lambda s: s.__setitem__("W_dec", s["W_dec"].int()))),
    Fault("encode-weights-garbage", ENCODE, ("sae_weights.safetensors: not a readable safetensors file",),
          put("sae/sae_weights.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")),
    Fault("encode-cfg-width-mismatch", ENCODE, ("cfg.json: d_sae is 999, but the weights have 128",),
          edit_json("sae/cfg.json", set_item("d_sae", 999))),
    Fault("encode-sae-narrower", ENCODE, ("activations have width 64, the SAE expects 32",), narrow_sae),
    Fault("encode-published-garbage", ENCODE.replace("--sae sae", "--sae model.pt"), ("model.pt: not a readable torch file",),
          put("model.pt", b"junk")),
    Fault("encode-sae-missing", ENCODE.replace("--sae sae", "--sae nowhere"), ("'--sae'", "does not exist")),
    Fault("encode-tokens-short", ENCODE, ("tokens.parquet: 3 rows for",),
          lambda ws: pq.write_table(pq.read_table(ws / "acts" / "tokens.parquet").slice(0, 3), ws / "acts" / "tokens.parquet")),
    Fault("encode-out-is-activations", ENCODE.replace("--out codes", "--out acts"), ("acts", "not a codes folder")),
    # sae stats (the previous statistics must survive each)
    Fault("stats-shard-missing", STATS, ("shard file 00000.val.npy missing",), remove("codes/00000.val.npy")),
    Fault("stats-codes-json-truncated", STATS, ("codes/codes.json: not valid JSON",), truncate("codes/codes.json")),
    Fault("stats-codes-json-array", STATS, ("codes/codes.json: expected an object",), put("codes/codes.json", "[]")),
    Fault("stats-codes-json-field", STATS, ("codes.json: field 'k' missing or not an integer",),
          edit_json("codes/codes.json", lambda r: {k: v for k, v in r.items() if k != "k"})),
    Fault("stats-codes-json-shards", STATS, ("codes.json: 'shards' must list positive shard sizes",),
          edit_json("codes/codes.json", set_item("shards", [1]))),
    Fault("stats-codes-json-no-shards", STATS, ("codes.json: 'shards' must list positive shard sizes",),
          edit_json("codes/codes.json", lambda r: {**r, "shards": [], "tokens": 0})),
    Fault("stats-shard-truncated", STATS, ("00000.idx.npy: not a readable .npy file",), truncate("codes/00000.idx.npy")),
    Fault("stats-shard-short", STATS, ("00000.cell.npy: shape (3,), codes.json expects",), short_shard),
    Fault("stats-feature-beyond-width", STATS, ("00000.idx.npy: feature index 200", "SAE width 128"),
          codes_entry("idx", (3, 2), 200)),
    Fault("stats-token-not-in-activations", STATS, ("codes: token id 99999", "acts/tokens.parquet"),
          codes_entry("gene", 3, 99999)),
    Fault("stats-negative-cell", STATS, ("00000.cell.npy: negative cell -1",), codes_entry("cell", 3, -1)),
    Fault("stats-activations-gone", STATS, ("nowhere/extract.json: missing",),
          edit_json("codes/codes.json", set_item("activations", "nowhere"))),
    Fault("stats-activations-not-text", STATS, ("codes.json: field 'activations' must name the activations folder",),
          edit_json("codes/codes.json", set_item("activations", 5))),
    Fault("stats-dataset-array", STATS, ("acts/extract.json: field 'dataset' must be an object",),
          edit_json("acts/extract.json", set_item("dataset", ["x"]))),
    Fault("stats-top-genes-negative", STATS + " --top-genes -3", ("'--top-genes'", "-3 is not in the range x>=1")),
    Fault("stats-min-support-0", STATS + " --min-support 0", ("'--min-support'", "x>=1")),
    Fault("stats-top-cells-0", STATS + " --top-cells 0", ("'--top-cells'", "x>=1")),
    Fault("stats-cell-type-column", STATS + " --cell-type-column nope", ("obs has no column 'nope'",)),
    Fault("stats-out-is-codes", STATS.replace("--out stats", "--out codes"), ("codes", "not a statistics folder")),
    # annotate (the previous annotation must survive each)
    Fault("annotate-universe-empty", ANNOTATE + " --universe empty.txt", ("'--universe'", "empty.txt: holds no gene"),
          put("empty.txt", "\n\n")),
    Fault("annotate-universe-binary", ANNOTATE + " --universe bin.txt", ("'--universe'", "not a UTF-8 text file"),
          put("bin.txt", b"\xff\xfe\x00")),
    Fault("annotate-alpha-1.5", ANNOTATE + " --alpha 1.5", ("'--alpha'", "1.5 is not in the range 0<x<1")),
    Fault("annotate-alpha-nan", ANNOTATE + " --alpha nan", ("'--alpha'", "not a finite number")),
    Fault("annotate-alpha-0", ANNOTATE + " --alpha 0", ("'--alpha'", "0<x<1")),
    Fault("annotate-sizes-crossed", ANNOTATE + " --max-size 1", ("--min-size 2 is larger than --max-size 1",)),
    Fault("annotate-top-n-0", ANNOTATE + " --top-n 0", ("'--top-n'", "x>=1")),
    Fault("annotate-string-score", ANNOTATE + " --string-min-score 2000", ("'--string-min-score'", "0<=x<=1000")),
    Fault("annotate-layer-beyond-int16", ANNOTATE.replace("--layer 0", "--layer 40000"), ("'--layer'", "0<=x<=32767")),
    Fault("annotate-geneset-missing", ANNOTATE + " --genesets X=nowhere.gmt", ("'--genesets'", "nowhere.gmt: no such file")),
    Fault("annotate-geneset-gz-garbage", ANNOTATE.replace("Hallmark", "junk.gmt.gz"),
          ("junk.gmt.gz: not a readable gzip file",), put("junk.gmt.gz", b"\x1f\x8b" + b"garbage" * 20)),
    Fault("annotate-trrust-missing", ANNOTATE + " --trrust nowhere.tsv", ("'--trrust'", "does not exist")),
    Fault("annotate-nan-key-row", ANNOTATE.replace("stats/feature_genes.parquet --layer 0", "genes.csv"),
          ("genes.csv: column 'feature'", "(row 7: nan)"), gene_table("genes.csv", nan_feature)),
    Fault("annotate-feature-beyond-int32", ANNOTATE.replace("stats/feature_genes.parquet --layer 0", "genes.csv"),
          ("column 'feature' must hold whole numbers from 0 to 2147483647", "row 5"),
          gene_table("genes.csv", big("feature", 2**40))),
    Fault("annotate-layer-column-beyond-int16", ANNOTATE.replace("stats/feature_genes.parquet --layer 0", "genes.csv"),
          ("column 'layer' must hold whole numbers from 0 to 32767", "row 5"), gene_table("genes.csv", big("layer", 40000))),
    Fault("annotate-table-no-rank", ANNOTATE.replace("stats/feature_genes.parquet --layer 0", "genes.csv"),
          ("genes.csv: missing column(s) rank",), gene_table("genes.csv", lambda df: df.drop(columns=["rank"]))),
    Fault("annotate-genes-inside-out", ANNOTATE.replace("stats/feature_genes.parquet", "annotation/genes.parquet"),
          ("--genes is inside --out",),
          lambda ws: shutil.copy(ws / "stats" / "feature_genes.parquet", ws / "annotation" / "genes.parquet")),
    Fault("annotate-out-other-output", ANNOTATE.replace("--out annotation", "--out stats"), ("stats", "not an annotation folder")),
    Fault("annotate-seed-negative", ANNOTATE + " --seed -5", ("'--seed'", "0<=x<=4294967295")),
    # build: settings refused before any stage writes (issue 16's bad-input list)
    Fault("build-random-init-model-with-given-saes", BUILD + " --sae sae --random-init-model",
          ("baselines.random_init_model", "--train-sae")),
    Fault("build-train-k-beyond-width", BUILD + " --train-sae --config k.toml", ("train.k 100000", "SAE width"),
          put("k.toml", "[train]\nk = 100000\n")),
    Fault("build-stats-alpha-0", BUILD + " --train-sae --config a.toml", ("[stats] alpha", "0<x<1"),
          put("a.toml", "[stats]\nalpha = 0\n")),
    Fault("build-auc-floor-1.5", BUILD + " --train-sae --config a.toml", ("[stats] auc_floor", "0<x<=1"),
          put("a.toml", "[stats]\nauc_floor = 1.5\n")),
    Fault("build-coexpression-genes-5", BUILD + " --train-sae --config c.toml", ("[baselines] coexpression_genes",),
          put("c.toml", "[baselines]\ncoexpression_genes = 5\n")),
    Fault("build-random-init-model-not-boolean", BUILD + " --train-sae --config r.toml",
          ("[baselines] random_init_model: expected true or false",), put("r.toml", "[baselines]\nrandom_init_model = 'auto'\n")),
    # build: config values, outputs that overlap inputs or each other, folders that are not its outputs, default
    # names over atlases from elsewhere, the demo's bundled inputs; each refused before any stage runs
    Fault("build-config-unknown-key", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: colour: unknown setting",),
          put("atlas.toml", "colour = 1\n")),
    Fault("build-config-unknown-section-key", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: [train] speed: unknown setting",),
          put("atlas.toml", "[train]\nspeed = 2\n")),
    Fault("build-config-alpha", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: [annotate] alpha: 1.5 is not in the range 0<x<1",),
          put("atlas.toml", "[annotate]\nalpha = 1.5\n")),
    Fault("build-config-resolution-0", TRAIN_BUILD + " --config atlas.toml", ("[graphs] resolution: 0.0 is not in the range x>0",),
          put("atlas.toml", "[graphs]\nresolution = 0\n")),
    Fault("build-config-type", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: max_cells: expected an integer, got 'many'",),
          put("atlas.toml", 'max_cells = "many"\n')),
    Fault("build-config-nan", TRAIN_BUILD + " --config atlas.toml", ("[train] lr: nan is not a finite number",),
          put("atlas.toml", "[train]\nlr = nan\n")),
    Fault("build-config-not-toml", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: not valid TOML",), put("atlas.toml", "x = = 1\n")),
    Fault("build-config-section-value", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: [train] must be a table",),
          put("atlas.toml", "train = 5\n")),
    Fault("build-config-layers-reversed", TRAIN_BUILD + " --config atlas.toml", ("atlas.toml: layers", "range 1-0 runs backwards"),
          put("atlas.toml", 'layers = "1-0"\n')),
    Fault("build-data-dir-inside-cache", TRAIN_BUILD + " --cache c --data-dir c/data", ("--data-dir/--atlas is inside --cache",)),
    Fault("build-site-is-data-dir", TRAIN_BUILD + " --site atlas_data", ("--site atlas_data and --data-dir atlas_data are the same path",)),
    Fault("build-cache-inside-checkpoint", TRAIN_BUILD + " --cache {ckpt}/cache", ("--cache is inside --checkpoint",)),
    Fault("build-site-holds-data", TRAIN_BUILD.replace("{sample}", "site/demo/x.h5ad") + " --atlas demo",
          ("--data is inside --site/--atlas",), lambda ws: shutil.copy(SAMPLE, ws / "site" / "demo" / "x.h5ad")),
    Fault("build-over-a-folder-not-an-atlas", TRAIN_BUILD + " --atlas mine", ("atlas_data/mine", "not an atlas (no manifest.json)"),
          put("atlas_data/mine/thesis.tex", "years of work")),
    Fault("build-over-a-folder-not-a-site", TRAIN_BUILD + " --atlas mine", ("site/mine", "not a rendered site"),
          put("site/mine/notes.txt", "mine")),
    Fault("build-name-inputs", TRAIN_BUILD + " --atlas inputs", ("'--atlas'", "'inputs' is reserved")),
    Fault("build-name-trailing-newline", TRAIN_BUILD + " --atlas 'good\n'", ("'--atlas'", "'good\\n' must be letters")),
    Fault("build-config-name-trailing-newline", TRAIN_BUILD + " --config atlas.toml",
          ("atlas.toml: atlas: 'good\\n' must be letters",), put("atlas.toml", 'atlas = "good\\n"\n')),
    Fault("build-duplicated-gene-names", TRAIN_BUILD.replace("{sample}", "dup.h5ad") + " --atlas dup",
          ("dup.h5ad: var column 'index' names 1 gene(s) more than once",), duplicated_genes("dup.h5ad")),
    Fault("build-default-name-over-import", TRAIN_BUILD, ("atlas_data/scgpt: holds an atlas imported from", "--replace"),
          lambda ws: shutil.copytree(ws / "atlas_data" / "imported", ws / "atlas_data" / "scgpt")),
    Fault("build-default-name-over-other-model", TRAIN_BUILD, ("atlas_data/scgpt: holds an atlas built from", "--replace"),
          lambda ws: shutil.copytree(ws / "atlas_data" / "demo", ws / "atlas_data" / "scgpt")),
    Fault("build-demo-inputs-missing", "build --model scgpt", ("atlas_data/inputs/SHA256SUMS: missing", "git checkout")),
    Fault("build-trrust-missing", TRAIN_BUILD + " --trrust nowhere.tsv", ("'--trrust'", "does not exist")),
    Fault("build-layers-beyond-model", TRAIN_BUILD + " --layers 5", ("--layers 5", "0..1")),
    Fault("build-cell-type-column-missing", TRAIN_BUILD + " --cell-type-column nope", ("nope",)),
    Fault("build-sae-and-train", TRAIN_BUILD + " --sae sae", ("give exactly one of --sae DIR and --train-sae",)),
    Fault("build-no-checkpoint-other-family", "build --config atlas.toml", ("model '(none)'",), put("atlas.toml", "seed = 1\n")),
    # link: every input checked before any profile is computed; neither atlas changed
    Fault("link-different-data", LINK, ("atlases la and lb were built from different data", "same .h5ad"),
          link_setup(b_data="other-data")),
    Fault("link-different-cells", LINK, ("atlas la and atlas lb share 0 cell(s)", "not built on the same cells"),
          link_setup(b_obs=[f"other{i}" for i in range(380)])),
    Fault("link-imported-atlas", LINK.replace("--atlas lb", "--atlas imported"),
          ("atlas imported: imported", "no per-cell codes"), link_setup()),
    Fault("link-atlas-without-per-cell-data", LINK.replace("--atlas lb", "--atlas demo"),
          ("atlas demo: its manifest.json records no per-cell data", "field 'cache'", "run its atlas build again"),
          link_setup()),
    Fault("link-layer-missing", LINK + " --layers 7", ("--layers 7: atlas la has layers 0, 1",), link_setup()),
    Fault("link-other-layer-missing", LINK + " --other-layers 1,4", ("--other-layers 4: atlas lb has layers 0, 1",),
          link_setup()),
    Fault("link-cache-elsewhere", LINK.replace("--cache lcache", "--cache emptycache"),
          ("atlas la: its plan cache entry plan-la (per-cell data) is not in --cache emptycache",),
          link_setup(put("emptycache/README", "nothing here\n"))),
    Fault("link-no-twin", LINK, ("atlas lb: its build ran no untrained twin", "--random-init-model"),
          link_setup(b_twin=False)),
    Fault("link-shard-gone", LINK, ("stream-lb holds 2 shards of codes, the atlas recorded 3",),
          link_setup(lambda ws: shutil.rmtree(ws / "lcache" / "stream-lb" / "shards" / "00002"))),
    Fault("link-plan-changed", LINK, ("plan-la is not the plan it was built from",),
          link_setup(put("lcache/plan-la/plan.json", "{}"))),
    Fault("link-same-atlas-twice", LINK.replace("--atlas lb", "--atlas la"), ("give two different atlases",),
          link_setup()),
    Fault("link-twin-with-two-atlases", LINK + " --twin", ("--twin links one --atlas to its own untrained twin; 2 given",),
          link_setup()),
    Fault("link-atlas-missing", LINK.replace("--atlas lb", "--atlas nope"), ("atlas 'nope' not found in atlas_data",),
          link_setup()),
    Fault("link-min-cells-too-small", LINK + " --min-cells 1", ("'--min-cells'", "x>=3"), link_setup()),
    # the command line itself
    Fault("unknown-option", "render --bogus", ("No such option", "--bogus")),
    Fault("unknown-command", "publish", ("No such command 'publish'",)),
]

# Damaged predecessor files: the importer names the file (and where it can, the field).
IMPORTER_GAPS = [
    Fault("import-module-members-objects", IMPORT, ("modules.json",),
          source_json("modules.json", first(lambda r: {**r, "features": [{"x": 1}]}))),
    Fault("import-module-top-anns-number", IMPORT, ("modules.json",),
          source_json("modules.json", first(lambda r: {**r, "top_anns": 5}))),
    Fault("import-cross-layer-edge-no-a", IMPORT, ("cross_layer_graph.json",),
          source_json("cross_layer_graph.json", lambda d: {"L0_L1": {"edges": [{"b": 2}]}})),
    Fault("import-cross-layer-pmi-text", IMPORT, ("cross_layer_graph.json",),
          source_json("cross_layer_graph.json", lambda d: {"L0_L1": {"edges": [{"a": 1, "b": 2, "pmi": "high"}]}})),
    Fault("import-causal-entry-no-i", IMPORT, ("causal_patching.json",),
          source_json("causal_patching.json", lambda d: {**d, "features": [{"nc": 3}]})),
    Fault("import-causal-layer-text", IMPORT, ("causal_patching.json",),
          source_json("causal_patching.json", set_item("layer", "zero"))),
    Fault("import-coordinate-text", IMPORT, ("layer_00_positions.json",),
          source_json("layer_00_positions.json", first(lambda r: ["a", "b"]))),
    Fault("import-summary-layers-number", IMPORT, ("global_summary.json",),
          source_json("global_summary.json", set_item("layers", 5))),
    Fault("import-summary-value-text", IMPORT, ("global_summary.json",),
          source_json("global_summary.json", set_item("layers", [{"layer": 0, "variance_explained": "high"}]))),
    Fault("import-feature-beyond-int32", IMPORT, ("layer_00_features.json",),
          source_json("layer_00_features.json", first(lambda r: {**r, "i": 2**40}))),
    Fault("import-layer-beyond-int16", IMPORT, ("layer_40000",), rename_layer),
    Fault("import-celltypes-entry-array", IMPORT, ("layer_00_celltypes.json",),
          source_json("layer_00_celltypes.json", lambda d: {**d, "features": {"0": [1]}})),
]


def check_fault(ws: Path, ckpt: Path, fault: Fault, capsys) -> None:
    if fault.setup:
        fault.setup(ws)
    before = snapshot(ws)
    args = [a.format(ckpt=ckpt, sample=SAMPLE) for a in shlex.split(fault.command)]
    code, out, err = run(args, capsys)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"status {code}, stderr:\n{err}"
    for words in fault.says:
        assert words in lines[0], lines[0]
    assert snapshot(ws) == before, "the workspace changed"


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_bad_input_is_one_line_and_changes_nothing(ws, ckpt, fault, capsys):
    check_fault(ws, ckpt, fault, capsys)


@pytest.mark.parametrize("fault", IMPORTER_GAPS, ids=[f.id for f in IMPORTER_GAPS])
def test_importer_names_the_damaged_file(ws, ckpt, fault, capsys):
    check_fault(ws, ckpt, fault, capsys)


def test_the_table_is_large_and_its_ids_unique():
    assert len(FAULTS) >= 60 and len({f.id for f in FAULTS + IMPORTER_GAPS}) == len(FAULTS) + len(IMPORTER_GAPS)


# ----- the boundary itself -------------------------------------------------------------------------------------

@pytest.mark.parametrize("error, line, status", [
    (PermissionError(13, "Permission denied", "/data/site/x"), "/data/site/x: Permission denied", 2),
    (OSError(28, "No space left on device"), "No space left on device", 2),
    (KeyboardInterrupt(), "interrupted", 130),
    (ValueError("bad\nthing"), "internal error (ValueError: bad\nthing)", 1),
])
def test_describe_turns_errors_into_a_line_and_a_status(error, line, status):
    message, code = describe(error)
    assert message.startswith(line) and code == status


def test_debug_shows_the_traceback(ws):
    with pytest.raises(Exception, match="'nope' not found"):
        main(["--debug", "render", "--atlas", "nope"])


# ----- signals: a killed command leaves the previous output, and the next run tidies up ------------------------

def cli_process(args: list[str], cwd: Path, pause: str = "") -> subprocess.Popen:
    """The command in a process of its own; with `pause`, it stops at that pause point (builder/pausepoint.py)
    until resume(proc): tests act at a known moment instead of racing the process, which fails under load."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker = cwd.parent / f"paused-{os.urandom(4).hex()}"
    if pause:
        env.update(ATLAS_PAUSE_AT=pause, ATLAS_PAUSE_FILE=str(marker))
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.marker = marker
    return proc


def paused(proc: subprocess.Popen) -> subprocess.Popen:
    """Wait until the process sits at its pause point; fail if it ended without reaching it."""
    while not proc.marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended (status {proc.returncode}) before its pause point: {proc.stderr.read()}")
        time.sleep(0.01)
    return proc


def resume(proc: subprocess.Popen) -> None:
    proc.marker.unlink()


def stop(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process sitting at its pause point, and wait for its end."""
    paused(proc).send_signal(sig)
    proc.wait(timeout=120)


def leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.parametrize("command", ["import", "render"])
def test_sigkill_keeps_the_previous_output_and_the_rerun_cleans_up(ws, command):
    if command == "import":
        biodyn_source(ws / "big", n_layers=4, n_features=300, seed=1)
        args, folder, name = ["import", "biodyn", "big", "--atlas", "imported"], ws / "atlas_data", "imported"
    else:
        m, t = make_synthetic(4, 256, seed=2)
        write_atlas(ws / "atlas_data" / "demo", m, t)
        args, folder, name = ["render", "--atlas", "demo"], ws / "site", "demo"
    before = snapshot(folder / name)
    proc = cli_process(args, ws, pause=f"swap {name}")  # the new output is complete, not yet swapped in
    stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(folder / name) == before  # the previous output, byte for byte
    assert leftovers(folder), "the kill left no temporary folder: the test did not test anything"
    rerun = cli_process(args, ws)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert leftovers(folder) == []
    assert snapshot(folder / name) != before
    if command == "import":
        assert validate(folder / name) == []


@pytest.mark.parametrize("point", ["swap demo", "swapped demo"])
def test_ctrl_c_is_one_line_and_says_what_was_replaced(ws, point):
    """Ctrl-C before the swap leaves the previous site; after it, the new site stays and the line says so."""
    m, t = make_synthetic(4, 256, seed=2)
    write_atlas(ws / "atlas_data" / "demo", m, t)
    before = snapshot(ws / "site")
    proc = cli_process(["render", "--atlas", "demo"], ws, pause=point)
    stop(proc, signal.SIGINT)
    assert proc.returncode == 130 and leftovers(ws / "site") == []
    if point == "swap demo":
        assert proc.stderr.read() == "error: interrupted\n"
        assert snapshot(ws / "site") == before
    else:
        assert proc.stderr.read() == "error: interrupted; already replaced: site/demo\n"
        assert snapshot(ws / "site") != before and (ws / "site" / "demo" / "atlas.json").is_file()


def test_two_perturb_runs_on_one_atlas_keep_both_datasets(ws):
    """The second run waits while the first holds the atlas, then adds its dataset to what the first wrote."""
    from builder.atlas.format import read_atlas

    perturb_workspace(ws)
    args = shlex.split(PERTURB.replace(" --quiet", ""))
    first = paused(cli_process(args + ["--dataset-name", "one"], ws, pause="atlas held built"))
    second = cli_process(args + ["--dataset-name", "two"], ws)
    for line in second.stderr:
        if line.startswith("waiting: another command is writing atlas_data/built"):
            break
    else:
        raise AssertionError(f"the second run did not wait (status {second.wait()})")
    resume(first)
    finish(first), finish(second)
    atlas = read_atlas(ws / "atlas_data" / "built")
    assert sorted(atlas.manifest["perturbation"]) == ["one", "two"]
    assert sorted(set(atlas.table("perturbation_response").column("dataset").to_pylist())) == ["one", "two"]


# ----- read-only folders: the check must hold for a user without root's powers --------------------------------

READ_ONLY = [
    ("render", "render --atlas demo", "site", "'--site'"),
    ("import", IMPORT, "atlas_data", "'--data-dir'"),
    ("extract", EXTRACT.replace("--out acts", "--out ro/acts"), "ro", "'--out'"),
    ("train", TRAIN.replace("--out sae", "--out ro/sae"), "ro", "'--out'"),
    ("encode", ENCODE.replace("--out codes", "--out ro/codes"), "ro", "'--out'"),
    ("stats", STATS.replace("--out stats", "--out ro/stats"), "ro", "'--out'"),
    ("annotate", ANNOTATE.replace("--out annotation", "--out ro/annotation"), "ro", "'--out'"),
]


def unprivileged() -> list[str]:
    """A command prefix under which file modes apply: nothing for a normal user; for root, setpriv dropping
    the capabilities that override them (`nobody` cannot reach an interpreter installed under /root)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot be made to apply")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.parametrize("name, command, folder, option", READ_ONLY, ids=[r[0] for r in READ_ONLY])
def test_read_only_output_folder(ws, ckpt, name, command, folder, option):
    (ws / "ro").mkdir()
    prefix = unprivileged()
    os.chmod(ws / folder, 0o555)
    try:
        probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(ws / folder / 'probe')!r}, 'w')"],
                               capture_output=True)
        if probe.returncode == 0:
            pytest.skip("file modes do not apply here (e.g. a file system without permissions)")
        before = snapshot(ws)
        args = [a.format(ckpt=ckpt, sample=SAMPLE) for a in shlex.split(command)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([*prefix, sys.executable, "-m", "builder.cli", *args], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: Invalid value for {option}: cannot write in ") and "permission denied" in proc.stderr
        assert snapshot(ws) == before
    finally:
        os.chmod(ws / folder, 0o755)


# ----- builds: a kill keeps the previous atlas and site and the rerun resumes; two builds share a cache safely --

SMALL_BUILD = """max_cells = 60
shard_cells = 8
[train]
k = 8
epochs = 1
sample_tokens = 20000
[graphs]
umap_neighbors = 10
"""


def build_cmd(ckpt: Path, name: str, seed: int = 0) -> list[str]:
    return ["build", "--model", "scgpt", "--checkpoint", str(ckpt), "--data", str(SAMPLE), "--train-sae",
            "--config", "small.toml", "--atlas", name, "--seed", str(seed)]


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out, err


def test_sigkill_during_a_build_keeps_the_atlas_and_site_and_the_rerun_resumes(ws, ckpt):
    (ws / "small.toml").write_text(SMALL_BUILD)
    finish(cli_process(build_cmd(ckpt, "t"), ws))
    atlas, site = snapshot(ws / "atlas_data" / "t"), snapshot(ws / "site" / "t")
    proc = cli_process(build_cmd(ckpt, "t", seed=1), ws, pause="swap t")  # a new build, killed as it exports
    stop(proc, signal.SIGKILL)
    assert snapshot(ws / "atlas_data" / "t") == atlas and snapshot(ws / "site" / "t") == site
    assert leftovers(ws / "atlas_data")
    out, err = finish(cli_process(build_cmd(ckpt, "t", seed=1), ws))
    assert "stream: computing" not in err and "cached: " in out  # resumed from the cache: no model pass again
    assert leftovers(ws / "atlas_data") == [] and leftovers(ws / "site") == []
    assert snapshot(ws / "atlas_data" / "t") != atlas and validate(ws / "atlas_data" / "t") == []


def test_two_builds_on_one_cache_wait_for_each_other(ws, ckpt):
    (ws / "small.toml").write_text(SMALL_BUILD)
    first = paused(cli_process(build_cmd(ckpt, "a"), ws, pause="build locked"))  # holds the cache lock
    second = cli_process(build_cmd(ckpt, "b"), ws)
    assert second.stderr.readline().startswith("waiting: another build is using the cache")
    resume(first)
    (_, _), (_, err_b) = finish(first), finish(second)
    assert "stream: computing" not in err_b  # the second found the first one's stages done
    for table in ("features", "feature_genes", "enrichments", "edges"):
        assert sha256_file(ws / "atlas_data" / "a" / f"{table}.parquet") == sha256_file(ws / "atlas_data" / "b" / f"{table}.parquet")
    assert validate(ws / "atlas_data" / "b") == []
