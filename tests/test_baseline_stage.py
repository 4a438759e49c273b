"""The build's baselines: which run (and the one-line refusals), the PCA lists, the untrained twin of a checkpoint
(equal to `atlas pretrain --random-init`), and the random_init_model rows beside the trained model's."""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from builder.errors import AtlasError
from builder.models import FAMILIES, Family, load
from builder.pipeline.stages.baselines import BaselinesConfig, check_pca, decide, pca_lists, twin_rows
from builder.pipeline.stages.graph import Graph
from builder.pipeline.build import BuildConfig

PBMC = Path("atlas_data/inputs/pbmc68k_counts.h5ad")


def cfg(**kw):
    return BuildConfig(model="scgpt", checkpoint="x", train_sae=True, **kw)


def test_what_runs_by_default_and_why_the_others_do_not():
    assert decide(cfg(), FAMILIES["scgpt"]) == {"random_genes": "", "pca": "", "coexpression": "", "random_init_model": "",
                                                "random_dictionary": ""}
    given = decide(replace(cfg(), train_sae=False, sae="s"), FAMILIES["scgpt"])
    assert "--train-sae" in given["random_init_model"] and given["pca"] == ""  # auto: off, with the reason
    assert "--train-sae" in given["random_dictionary"]
    off = decide(cfg(baselines=BaselinesConfig(pca=False, coexpression=False, random_init_model=False,
                                               random_dictionary=False)), FAMILIES["scgpt"])
    assert all("switched off" in off[k] for k in ("pca", "coexpression", "random_init_model", "random_dictionary"))
    bare = Family("bare", FAMILIES["scgpt"].load, FAMILIES["scgpt"].write_tiny, "", None)
    assert "no random-init twin" in decide(cfg(), bare)["random_init_model"]


@pytest.mark.parametrize("settings, family, name, words", [
    (dict(baselines=BaselinesConfig(random_init_model=True), train_sae=False, sae="s"), "scgpt", "random_init_model",
     "--train-sae"),
    (dict(baselines=BaselinesConfig(random_init_model=True)), None, "random_init_model",
     "model family 'bare' has no random-init twin"),
    (dict(baselines=BaselinesConfig(random_init_model=False, random_dictionary=True), train_sae=False, sae="s"),
     "scgpt", "random_dictionary", "untrained start is unknown"),
])
def test_switched_on_without_what_it_needs_is_refused(settings, family, name, words):
    fam = FAMILIES["scgpt"] if family else Family("bare", FAMILIES["scgpt"].load, FAMILIES["scgpt"].write_tiny, "", None)
    with pytest.raises(AtlasError, match=f"baselines.{name}") as e:
        decide(replace(cfg(), **settings), fam)
    assert words in str(e.value) and f"--no-{name.replace('_', '-')}" in str(e.value)


def test_principal_axes_need_tokens_and_width():
    record = {"model": {"width": 64}, "heldout_tokens": 10}
    with pytest.raises(AtlasError, match="10 held-out gene tokens are too few for 10 principal axes"):
        check_pca(record, 10)
    check_pca(record, 9)
    with pytest.raises(AtlasError, match="graphs.pca_components 65: larger than the model width 64"):
        check_pca({"model": {"width": 64}, "heldout_tokens": 10**6}, 65)


def test_pca_lists_number_each_direction_and_sign(tmp_path):
    rows = pd.DataFrame({"component": [0, 0, 0, 0, 1, 1], "sign": [1, 1, -1, -1, 1, -1], "rank": [1, 2, 1, 2, 1, 1],
                         "token_id": [5, 6, 7, 8, 9, 10], "gene": list("ABCDEF"), "score": [2.0, 1, 3, 1, 1, 1]})
    (tmp_path / "g").mkdir()
    pq.write_table(pa.Table.from_pandas(rows), tmp_path / "g" / "pca_genes.parquet")
    lists = pca_lists({3: Graph(tmp_path / "g", {}, {})})
    assert lists["list"].tolist() == [0, 0, 1, 1, 2, 3] and (lists["layer"] == 3).all()
    assert lists["gene"].tolist() == list("ABCDEF") and lists["rank"].tolist() == [1, 2, 1, 2, 1, 1]


def test_twin_rows_put_the_twin_beside_the_trained_model():
    rates = pd.DataFrame({"layer": [0, 0], "database": ["Hallmark", "any database"], "n_features": [100, 100],
                          "annotated": [30, 40]})
    mod = lambda n, inside: {"modules": n, "in_modules": inside, "edges": 1, "quality": 0.1}  # noqa: E731
    own = {"graphs": {0: {"modules": mod(12, 80), "modules_null": mod(2, 10)}, 1: {"modules": mod(9, 50), "modules_null": mod(1, 5)}},
           "cross": {(0, 1): {"edges": 500}}}
    twin = {"rates": rates.assign(n_features=[50, 50], annotated=[1, 2]),
            "graphs": {0: {"modules": mod(7, 60), "modules_null": mod(6, 55)}, 1: {"modules": mod(3, 20), "modules_null": mod(3, 20)}},
            "cross": {(0, 1): {"edges": 450}}}
    rows = pd.DataFrame(twin_rows([0, 1], rates, own, twin)).set_index(["layer", "analysis", "measure", "baseline"])
    assert rows.loc[(0, "annotation", "any database", "random_init_model"), ["observed", "expected"]].tolist() == [0.4, 0.04]
    assert rows.loc[(1, "modules", "modules", "random_init_model"), ["observed", "expected"]].tolist() == [9, 3]
    assert rows.loc[(0, "modules", "modules_of_random_init_model", "within_gene_shuffle"),
                    ["observed", "expected"]].tolist() == [7, 6]
    assert rows.loc[(0, "cross_layer", "edges_beyond_gene_null_to_1", "random_init_model"),
                    ["observed", "expected"]].tolist() == [500, 450]


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_twin_of_a_demo_checkpoint_is_its_random_init(tmp_path, family):
    """The build's twin of a checkpoint (same architecture, the family's initialisation, the seed) has exactly the
    weights `atlas pretrain --random-init` writes for it, and none of the trained ones."""
    from builder.models.pretrain import PretrainConfig, write_random_init

    ckpt = Path(f"atlas_data/inputs/models/{family}")
    FAMILIES[family].write_twin(ckpt, tmp_path / "twin", 0)
    rec = json.loads((ckpt / "pretrain.json").read_text())
    write_random_init(family, PBMC, tmp_path / "ri", PretrainConfig(**rec["config"]))
    twin, ri, trained = (load(family, p).model.state_dict() for p in (tmp_path / "twin", tmp_path / "ri", ckpt))
    assert twin.keys() == ri.keys() and all(torch.equal(twin[k], ri[k]) for k in twin)
    assert not any(torch.equal(twin[k], trained[k]) for k in twin if twin[k].numel() > 1 and twin[k].std() > 0)
    record = json.loads((tmp_path / "twin" / "twin.json").read_text())
    assert record["seed"] == 0 and record["trained"] is False and record["twin_of"]["family"] == family
    again = tmp_path / "again"
    FAMILIES[family].write_twin(ckpt, again, 0)
    weights = "best_model.pt" if family == "scgpt" else "model.safetensors"
    assert (again / weights).read_bytes() == (tmp_path / "twin" / weights).read_bytes()  # deterministic bytes
