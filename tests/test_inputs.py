"""Bundled inputs: the labelled PBMC counts (exact recovery from scanpy's normalised values), checksums, and the
named refusal of a damaged or missing bundled file; the autocast path that replaces casting models to bf16."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from builder.errors import AtlasError
from builder.fsutil import sha256_file
from builder.geneids import gencode, is_ensembl
from builder.models import bundled
from builder.models.dataset import read_h5ad

SCRIPT = Path("atlas_data/inputs/make_pbmc68k_counts.py")


def script():
    spec = importlib.util.spec_from_file_location("make_pbmc68k_counts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recovery_inverts_scanpy_normalisation_exactly():
    make = script()
    rng = np.random.default_rng(0)
    counts = sp.random(200, 300, density=0.3, random_state=1, data_rvs=lambda n: rng.integers(1, 300, n)).tocsr()
    n_counts = np.asarray(counts.sum(1)).ravel() * rng.uniform(2, 8, 200)  # totals over a larger transcriptome
    lognorm = counts.astype(np.float64).tocsr()
    rows = np.repeat(np.arange(200), np.diff(lognorm.indptr))
    lognorm.data = np.round(np.log1p(lognorm.data * 1e4 / n_counts[rows]), 3).astype(np.float32)
    back = make.recover_counts(lognorm, n_counts)
    assert (back != counts).nnz == 0
    # Counts too large for 3 decimals cannot be told apart: refused, not guessed.
    big = sp.csr_matrix(np.array([[5000.0, 1.0]]))
    big.data = np.round(np.log1p(big.data * 1e4 / 6000.0), 3).astype(np.float32)
    with pytest.raises(ValueError, match="fit two counts"):
        make.recover_counts(big, np.array([6000.0]))


def test_bundled_dataset_is_labelled_counts_with_ensembl_ids():
    ds = read_h5ad(bundled.DATA)
    assert ds.counts_source == "X" and ds.counts.shape == (700, 765)
    counts = ds.counts.matrix()
    assert counts.nnz == 174_400
    assert np.array_equal(counts.data, np.round(counts.data)) and counts.data.min() >= 1
    types = ds.obs[bundled.CELL_TYPE_COLUMN].value_counts()
    assert len(types) == 10 and types["CD14+ Monocyte"] == 129 and types.sum() == 700
    ids = ds.var["ensembl_id"]
    assert (ids != "").sum() == 700 and all(is_ensembl(i) for i in ids if i)
    symbol_of = gencode()[0]
    assert all(symbol_of[i].upper() == s.upper() for s, i in zip(ds.var.index, ids) if i)
    # n_counts is the whole-transcriptome total, larger than the sum over these 765 genes.
    assert (ds.obs["n_counts"].to_numpy() > np.asarray(counts.sum(1)).ravel()).all()


def test_bundled_dataset_is_reproduced_from_scanpy():
    if importlib.util.find_spec("scanpy") is None:
        pytest.skip("scanpy is not installed (pip install scanpy): the source file is inside it")
    import anndata as ad

    make = script()
    rebuilt = make.build(make.source_path())
    ours = ad.read_h5ad(bundled.DATA)
    assert (rebuilt.X != ours.X).nnz == 0
    for a, b in ((rebuilt.obs, ours.obs), (rebuilt.var, ours.var)):  # anndata stores text columns as categories
        assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
        for c in a.columns:
            assert np.array_equal(np.asarray(a[c], dtype=object), np.asarray(b[c], dtype=object)), c
    # And the counts give back scanpy's stored values to within its rounding (half of 0.001; re-rounding would
    # move values that sit on a half step).
    src = ad.read_h5ad(make.source_path())
    exact = np.log1p(ours.X.toarray().astype(np.float64) * 1e4 / ours.obs["n_counts"].to_numpy()[:, None])
    assert np.abs(exact - src.raw.X.toarray()).max() <= 0.0005 + 1e-6


def test_checksums_match_and_damage_is_named(tmp_path):
    sums = bundled.recorded()
    assert "pbmc68k_counts.h5ad" in sums
    for name, digest in sums.items():
        assert sha256_file(bundled.INPUTS / name) == digest, name
    bundled.verify(bundled.DATA)
    copy = tmp_path / "inputs"
    shutil.copytree(bundled.INPUTS, copy)
    damaged = copy / "pbmc68k_counts.h5ad"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(AtlasError, match=r"pbmc68k_counts.h5ad: bundled file damaged .* restore it with `git checkout"):
        bundled.verify(damaged, copy)
    damaged.unlink()
    with pytest.raises(AtlasError, match="bundled file missing; restore it"):
        bundled.verify(damaged, copy)


def test_autocast_keeps_layernorms_fp32_where_a_bf16_cast_does_not(tiny):
    from builder import models
    from builder.models.precision import autocast, place

    adapter = models.load("scgpt", tiny / "scgpt")
    prep = adapter.prepare(read_h5ad("atlas_data/inputs/immune_sample.h5ad", max_cells=2))
    batch = adapter.collate([adapter.tokenize(prep, 0)])
    cpu = torch.device("cpu")
    with torch.no_grad():
        exact = adapter.layer_outputs(batch, [1])[1]
        with autocast(cpu, torch.bfloat16):
            mixed = adapter.layer_outputs(batch, [1])[1].float()
        assert adapter.model.encoder.enc_norm.weight.dtype == torch.float32
        adapter.model.to(torch.bfloat16)
        cast = adapter.layer_outputs(batch, [1])[1].float()
        place(adapter.model, cpu)
        assert adapter.model.encoder.enc_norm.weight.dtype == torch.float32
        again = adapter.layer_outputs(batch, [1])[1]
    err = lambda x: ((x - exact).norm(dim=-1) / exact.norm(dim=-1)).median().item()  # noqa: E731
    assert err(mixed) < err(cast) and err(mixed) < 0.02
    assert err(again) < 0.01  # back in fp32 (weights were rounded to bf16 once)
    with autocast(cpu):  # the CPU default is plain fp32
        assert adapter.layer_outputs(batch, [1])[1].dtype == torch.float32
