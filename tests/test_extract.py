"""`atlas extract`: the files it writes, determinism, and one line per bad input with nothing written."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from builder import models
from builder.models.dataset import read_h5ad
from builder.pipeline.model.extract import read_activations
from test_cli import run

SAMPLE = "atlas_data/inputs/immune_sample.h5ad"


@pytest.mark.parametrize("model, checkpoint", [("scgpt", "scgpt"), ("geneformer", "geneformer-v1"),
                                                ("geneformer", "geneformer-v2")])
def test_extract_writes_activations_tokens_and_record(tiny, tmp_path, capsys, model, checkpoint):
    out = tmp_path / "acts"
    args = ["extract", "--model", model, "--checkpoint", str(tiny / checkpoint), "--data", SAMPLE,
            "--out", str(out), "--max-cells", "12", "--batch-size", "5", "--layers", "1"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert stdout.startswith(f"extracted {'scGPT' if model == 'scgpt' else 'Geneformer'}") and "12 cells" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["extract.json", "layer_01.npy", "tokens.parquet"]
    acts, record = read_activations(out, 1)
    tokens = pq.read_table(out / "tokens.parquet").to_pandas()
    assert acts.shape == (record["tokens"], 64) == (len(tokens), 64) and acts.dtype == np.float32
    assert np.isfinite(acts).all()

    # The same rows as streaming the model directly, one cell at a time.
    adapter = models.load(model, tiny / checkpoint)
    prep = adapter.prepare(read_h5ad(SAMPLE, max_cells=12))
    chunks = list(models.stream(adapter, prep, [1], batch_size=1))
    assert np.array_equal(tokens["cell"], np.concatenate([c.cells for c in chunks]))
    assert np.array_equal(tokens["token_id"], np.concatenate([c.genes for c in chunks]))
    assert np.abs(acts - np.concatenate([c.acts[1] for c in chunks])).max() <= 1e-5
    assert tokens["gene"].tolist() == [adapter.gene_names[t] for t in tokens["token_id"]]
    cell_ids = pd.Index(ad.read_h5ad(SAMPLE).obs_names[:12])
    assert tokens["cell_id"].tolist() == cell_ids[tokens["cell"]].tolist()

    # Twice the same run gives the same bytes.
    run(args[:-6] + ["--out", str(tmp_path / "again"), "--max-cells", "12", "--batch-size", "5", "--layers", "1"], capsys)
    for f in ("layer_01.npy", "tokens.parquet"):
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes()


def _h5ad(path, x, genes, **var):
    a = ad.AnnData(X=sp.csr_matrix(np.asarray(x, dtype=np.float32)), var=pd.DataFrame(var, index=genes))
    a.write_h5ad(path)
    return path


@pytest.fixture
def bad(tiny, tmp_path):
    """Broken checkpoints and datasets, each with the message it must produce."""
    cases = {}
    ck = tmp_path / "no-vocab"
    shutil.copytree(tiny / "scgpt", ck)
    (ck / "vocab.json").unlink()
    cases["missing-file"] = ("scgpt", ck, SAMPLE, f"{ck}: missing vocab.json (scGPT needs args.json, vocab.json, best_model.pt)")
    ck = tmp_path / "big-vocab"
    shutil.copytree(tiny / "scgpt", ck)
    vocab = json.loads((ck / "vocab.json").read_text())
    vocab["EXTRA_GENE"] = len(vocab)
    (ck / "vocab.json").write_text(json.dumps(vocab))
    cases["vocab-size"] = ("scgpt", ck, SAMPLE, f"{ck}: vocab.json has {len(vocab)} tokens but the embedding has {len(vocab) - 1} rows")
    ck = tmp_path / "gf-no-median"
    shutil.copytree(tiny / "geneformer-v1", ck)
    next(ck.glob("gene_median_dictionary*.pkl")).unlink()
    cases["gf-missing-file"] = ("geneformer", ck, SAMPLE, f"{ck}: missing the gene median dictionary (gene_median_dictionary*.pkl)")
    f = _h5ad(tmp_path / "mouse.h5ad", [[1, 2], [3, 0]], ["Cd74x", "Actbx"])
    cases["no-gene"] = ("scgpt", tiny / "scgpt", f, f"{f}: none of its 2 genes (var column 'index') is in the scGPT vocabulary")
    f = _h5ad(tmp_path / "lognorm.h5ad", [[0.7, 1.2], [0, 2.3]], ["CD74", "ACTB"])
    cases["no-counts"] = ("scgpt", tiny / "scgpt", f, f"{f}: no raw counts found: X has non-integer values")
    f = _h5ad(tmp_path / "symbols.h5ad", [[1, 2], [3, 0]], ["CD74", "ACTB"])
    cases["no-ensembl"] = ("geneformer", tiny / "geneformer-v2", f, f"{f}: no Ensembl gene ids in var column 'index'")
    f = _h5ad(tmp_path / "unknown-ids.h5ad", [[1, 2], [3, 0]], ["ENSG99999999991", "ENSG99999999992"])
    cases["unmappable"] = ("geneformer", tiny / "geneformer-v2", f, f"{f}: none of its 2 Ensembl ids (var column 'index') is in the Geneformer token dictionary")
    (tmp_path / "junk.h5ad").write_text("not hdf5")
    cases["not-h5ad"] = ("scgpt", tiny / "scgpt", tmp_path / "junk.h5ad", f"{tmp_path / 'junk.h5ad'}: not a readable .h5ad file")
    cases["no-checkpoint"] = ("scgpt", tmp_path / "nowhere", SAMPLE,
                              f"Invalid value for '--checkpoint': Directory '{tmp_path / 'nowhere'}' does not exist.")
    cases["no-data"] = ("geneformer", tiny / "geneformer-v1", tmp_path / "none.h5ad",
                        f"Invalid value for '--data': File '{tmp_path / 'none.h5ad'}' does not exist.")
    return cases


@pytest.mark.parametrize("case", ["missing-file", "vocab-size", "gf-missing-file", "no-gene", "no-counts",
                                  "no-ensembl", "unmappable", "not-h5ad", "no-checkpoint", "no-data"])
def test_extract_bad_input_one_line_exit_2_nothing_written(bad, tmp_path, capsys, case):
    model, ck, data, message = bad[case]
    out = tmp_path / "out"
    code, stdout, err = run(["extract", "--model", model, "--checkpoint", str(ck), "--data", str(data),
                             "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_extract_bad_options(tiny, tmp_path, capsys):
    base = ["extract", "--model", "scgpt", "--checkpoint", str(tiny / "scgpt"), "--data", SAMPLE, "--out", str(tmp_path / "o")]
    for extra, message in ((["--layers", "0,7"], "error: --layers 7: the model has layers 0..1"),
                           (["--layers", "x"], "error: Invalid value for '--layers': 'x': expected numbers and ranges"),
                           (["--batch-size", "0"], "error: Invalid value for '--batch-size': 0 is not in the range x>=1."),
                           (["--device", "tpu"], "error: Invalid value for '--device': 'tpu' is not one of auto, cpu")):
        code, _, err = run(base + extra, capsys)
        assert code == 2 and err.startswith(message), err
    assert not (tmp_path / "o").exists()
