"""`atlas pretrain`: deterministic bytes, checkpoints the adapters load with their heads, the untrained twin,
held-out cells kept out, Geneformer's medians against a direct computation, masks, and refusals."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner

from builder import models
from builder.cli import cli
from builder.errors import AtlasError
from builder.models.dataset import read_h5ad
from builder.models.pretrain import PretrainConfig, choose, pretrain, write_random_init

DATA = "atlas_data/inputs/pbmc68k_counts.h5ad"
SMALL = PretrainConfig(layers=2, width=32, heads=2, steps=6, batch_size=8, eval_every=3)


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each family pretrained twice with the same seed, and its untrained twin."""
    root = tmp_path_factory.mktemp("pretrain")
    out = {}
    for family in ("scgpt", "geneformer"):
        recs = [pretrain(family, DATA, root / f"{family}-{i}", SMALL) for i in range(2)]
        twin = write_random_init(family, DATA, root / f"{family}-twin", SMALL)
        out[family] = (root / f"{family}-0", root / f"{family}-1", root / f"{family}-twin", recs[0], twin)
    return out


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_two_runs_give_identical_bytes(runs, family):
    a, b, _, _, _ = runs[family]
    assert digest(a) == digest(b)
    expected = {"scgpt": {"args.json", "vocab.json", "best_model.pt"},
                "geneformer": {"config.json", "model.safetensors", "token_dictionary.pkl", "gene_median_dictionary.pkl",
                               "ensembl_mapping_dict.pkl", "gene_name_id_dict.pkl"}}[family]
    assert expected | {"pretrain.json", "MODEL_CARD.md", "loss_curve.svg"} == set(digest(a))


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_checkpoint_loads_with_its_head_and_predicts(runs, family):
    folder, _, _, rec, _ = runs[family]
    adapter = models.load(family, folder)
    assert adapter.has_head and adapter.n_layers == 2 and adapter.width == 32 and adapter.ignored_keys == []
    prep = adapter.prepare(read_h5ad(DATA, max_cells=4))
    assert prep.matched == rec["data"]["genes_in_vocabulary"]
    batch = adapter.collate([adapter.tokenize(prep, i) for i in range(4)])
    mask = choose(adapter.maskable(batch), 0.2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = adapter.predict(adapter.mask_inputs(batch, mask))
    assert out.shape[:2] == batch["input_ids"].shape and torch.isfinite(out).all()
    # The loss curve starts at the untrained model and training moved it.
    assert [p["step"] for p in rec["curve"]] == [0, 3, 6]
    assert rec["curve"][-1]["heldout_loss"] != rec["curve"][0]["heldout_loss"]


@pytest.mark.parametrize("family", ["scgpt", "geneformer"])
def test_untrained_twin_is_the_starting_point(runs, family):
    trained, _, twin, rec, twin_rec = runs[family]
    assert not twin_rec["trained"] and twin_rec["curve"] == [rec["curve"][0]]
    assert not (twin / "loss_curve.svg").exists() and "untrained" in (twin / "MODEL_CARD.md").read_text()
    same = [n for n in digest(twin) if n not in ("pretrain.json", "MODEL_CARD.md")]
    weights = {"scgpt": "best_model.pt", "geneformer": "model.safetensors"}[family]
    for name in same:
        assert (digest(twin)[name] == digest(trained)[name]) == (name != weights), name


def test_twin_of_a_checkpoint_reproduces_its_starting_point(runs, tmp_path):
    from builder.models.pretrain import twin_of

    trained, _, twin, _, _ = runs["geneformer"]
    twin_of(trained, DATA, tmp_path / "again")
    assert digest(tmp_path / "again") == digest(twin)
    with pytest.raises(AtlasError, match="not the data"):
        twin_of(trained, "atlas_data/inputs/immune_sample.h5ad", tmp_path / "other")
    with pytest.raises(AtlasError, match="not a pretrain record"):
        twin_of(tmp_path, DATA, tmp_path / "none")


def test_heldout_cells_are_disjoint_and_seeded(runs, tmp_path):
    rec = runs["scgpt"][3]
    names = read_h5ad(DATA).obs.index.astype(str)
    held = set(rec["data"]["heldout_cells"])
    assert len(held) == 70 and held <= set(names) and rec["data"]["train_cells"] == 630
    assert rec["data"]["heldout_cells"] == runs["geneformer"][3]["data"]["heldout_cells"]  # same seed, same split
    other = write_random_init("scgpt", DATA, tmp_path / "seed1", PretrainConfig(layers=1, width=16, heads=2, seed=1))
    assert set(other["data"]["heldout_cells"]) != held


def test_geneformer_medians_match_a_direct_computation(runs):
    import pickle

    folder, _, _, rec, _ = runs["geneformer"]
    medians = pickle.loads((folder / "gene_median_dictionary.pkl").read_bytes())
    a = ad.read_h5ad(DATA)
    train = ~a.obs.index.isin(rec["data"]["heldout_cells"])
    x = a.X[train].toarray() / a.obs["n_counts"].to_numpy()[train, None] * 1e4
    for j in np.random.default_rng(0).choice(a.n_vars, 40, replace=False):
        g = a.var["ensembl_id"].iloc[j]
        nz = x[:, j][x[:, j] > 0]
        if g and nz.size:
            assert medians[g] == pytest.approx(float(np.median(nz)), rel=1e-6)
        else:
            assert g not in medians


def test_choose_masks_an_exact_share_of_maskable_positions():
    maskable = torch.tensor([[False, True, True, True, True, True, True, True, True, True, True, False],
                             [False, True, True, False, False, False, False, False, False, False, False, False]])
    for seed in range(5):
        m = choose(maskable, 0.4, torch.Generator().manual_seed(seed))
        assert m.sum(1).tolist() == [4, 1] and not (m & ~maskable).any()


def test_pretrain_cli_refusals_write_nothing(tmp_path):
    runner = CliRunner()
    log = tmp_path / "log.h5ad"
    ad.AnnData(X=sp.csr_matrix(np.full((60, 3), 0.5, np.float32)),
               var=pd.DataFrame(index=["CD74", "ACTB", "B2M"])).write_h5ad(log)
    few = tmp_path / "few.h5ad"
    ad.AnnData(X=sp.csr_matrix(np.ones((30, 3), np.float32)), var=pd.DataFrame(index=["CD74", "ACTB", "B2M"])).write_h5ad(few)
    cases = [(["--data", str(log)], "no raw counts found"),
             (["--data", str(few)], "30 cells with at least 2 genes counted; pretraining needs at least 50"),
             (["--data", DATA, "--steps", "0"], "0 is not in the range x>=1"),
             (["--data", DATA, "--width", "30", "--heads", "4"], "--width 30 must divide by --heads 4")]
    for args, message in cases:
        out = tmp_path / "out"
        res = runner.invoke(cli, ["pretrain", "--model", "scgpt", "--out", str(out), *args], standalone_mode=False)
        assert isinstance(res.exception, (AtlasError, Exception)) and message in str(res.exception), (args, res.output)
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pretrain_cli_runs_end_to_end_and_replaces_only_its_own_output(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "gf"
    cmd = [sys.executable, "-m", "builder.cli", "pretrain", "--model", "geneformer", "--data", DATA, "--out", str(out),
           "--layers", "1", "--width", "16", "--heads", "2", "--steps", "2", "--batch-size", "4"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "pretrained 2 steps: geneformer 1 x 16 on 630 cells (70 held out)" in res.stdout
    card = (out / "MODEL_CARD.md").read_text()
    assert "atlas pretrain --model geneformer" in card and "most frequent gene" in card
    before = digest(out)
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0  # an earlier output: replaced
    assert digest(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    res = subprocess.run([*cmd[:9], str(other), *cmd[10:]], capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "is not a checkpoint folder of atlas pretrain (no pretrain.json)" in res.stderr
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
