"""The coexpression baseline: correlations over shards against numpy, planted modules found again, bad input."""

import re

import anndata
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from builder.errors import AtlasError
from builder.pipeline.annotation.coexpression import CoexpressionConfig, CountShards, coexpression_baseline, coexpression_groups, detection, shard_sums
from test_cli import run

MODULES, MODULE_SIZE, NOISE = 4, 20, 60


def planted_counts(cells=400, seed=0):
    """Counts of 4 modules of 20 genes driven by one factor each, and 60 independent genes."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(cells, MODULES))
    depth = rng.uniform(0.5, 2.0, size=(cells, 1))
    rates = [3.0 * np.exp(z[:, [m]] + 0.3 * rng.normal(size=(cells, MODULE_SIZE))) for m in range(MODULES)]
    rates.append(3.0 * np.exp(0.5 * rng.normal(size=(cells, NOISE))))
    counts = rng.poisson(depth * np.hstack(rates)).astype(np.float32)
    names = [f"MOD{m}_{i:02d}" for m in range(MODULES) for i in range(MODULE_SIZE)] + [f"NOISE{i:02d}" for i in range(NOISE)]
    return counts, names


def write_h5ad(path, counts, names):
    adata = anndata.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=names),
                            obs=pd.DataFrame(index=[f"c{i}" for i in range(counts.shape[0])]))
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    counts, names = planted_counts()
    return write_h5ad(tmp_path_factory.mktemp("coex") / "planted.h5ad", counts, names), counts, names


def test_correlation_from_shard_sums_equals_numpy(planted):
    path, counts, names = planted
    genes = np.arange(5, 95, 3)
    shards = CountShards(path, chunk_cells=64)  # 7 shards of cells
    parts = [shard_sums(X, genes) for X in shards]
    assert len(parts) == 7
    forward, backward = parts[0], parts[-1]
    for p in parts[1:]:
        forward = forward.merge(p)
    for p in parts[-2::-1]:
        backward = backward.merge(p)  # merges in any order give the same sums
    c = counts.astype(np.float64)
    x = np.log1p(c / c.sum(axis=1, keepdims=True) * 1e4)[:, genes]
    np.testing.assert_allclose(forward.correlation(), np.corrcoef(x, rowvar=False), atol=1e-9)
    np.testing.assert_allclose(backward.correlation(), forward.correlation(), atol=1e-12)
    assert forward.cells == counts.shape[0]
    np.testing.assert_array_equal(detection(shards), (counts > 0).sum(axis=0))
    shards.close()


def test_planted_modules_come_back_as_groups(planted):
    path, counts, names = planted
    x = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    groups = coexpression_groups(np.corrcoef(x, rowvar=False), np.asarray(names, dtype=object),
                                 CoexpressionConfig(size=MODULE_SIZE))
    assert len(groups) == len(names) // MODULE_SIZE and all(len(g) == MODULE_SIZE for g in groups)
    assert sorted(sum(groups, [])) == sorted(names)  # a partition: every gene once
    for m in range(MODULES):
        best = max(sum(g.startswith(f"MOD{m}_") for g in grp) for grp in groups)
        assert best == MODULE_SIZE, f"module {m}: at most {best} of its genes in one group"


def test_baseline_lists_for_every_layer_are_deterministic(planted):
    path, _, names = planted
    cfg = CoexpressionConfig(n_genes=100, size=20, chunk_cells=128)
    base, record = coexpression_baseline(path, names[:-10], [0, 5], cfg)  # the universe leaves 10 genes out
    lists = base.lists
    assert record["genes"] == 100 and record["groups"] == 5 and record["cells"] == 400
    assert set(lists["layer"]) == {0, 5} and lists.groupby(["layer", "list"]).size().eq(20).all()
    assert not set(lists["gene"]) & set(names[-10:])
    assert (lists[lists.layer == 0].drop(columns="layer").reset_index(drop=True)
            .equals(lists[lists.layer == 5].drop(columns="layer").reset_index(drop=True)))
    assert base.name == "coexpression" and "no model" in base.note
    again, _ = coexpression_baseline(path, names[:-10], [0, 5], cfg)
    assert again.lists.equals(lists)


def test_a_build_s_cells_give_the_groups_of_those_cells_alone(tmp_path, planted):
    """`rows` (the cells of a build: --max-cells, cells with tokens) equals a file holding only those cells."""
    path, counts, names = planted
    rows = np.flatnonzero(np.arange(counts.shape[0]) % 3 != 1)[:250]  # spread over several shards, with gaps
    cfg = CoexpressionConfig(n_genes=100, size=20, chunk_cells=64)
    some, rec = coexpression_baseline(path, names, [0], cfg, rows=rows)
    alone, rec_alone = coexpression_baseline(write_h5ad(tmp_path / "some.h5ad", counts[rows], names), names, [0], cfg)
    assert rec["cells"] == rec_alone["cells"] == rows.size
    assert some.lists.equals(alone.lists)
    every, _ = coexpression_baseline(path, names, [0], cfg)
    assert not every.lists.equals(some.lists)  # the cells matter, so the restriction is real


def test_bad_datasets_are_refused_with_the_file(tmp_path, planted):
    _, counts, names = planted
    logged = write_h5ad(tmp_path / "logged.h5ad", np.log1p(counts), names)
    with pytest.raises(AtlasError, match=r"logged\.h5ad: X holds .* raw counts \(non-negative whole numbers\)"):
        coexpression_baseline(logged, names, [0])
    ok = write_h5ad(tmp_path / "ok.h5ad", counts, names)
    with pytest.raises(AtlasError, match=r"ok\.h5ad: only 0 universe genes are detected"):
        coexpression_baseline(ok, ["TP53", "MDM2"], [0])
    with pytest.raises(AtlasError, match=r"nope\.h5ad: dataset not found"):
        coexpression_baseline(tmp_path / "nope.h5ad", names, [0])


def test_cli_annotate_with_the_coexpression_baseline(tmp_path, capsys, planted):
    path, _, names = planted
    genes = tmp_path / "genes.csv"
    pd.DataFrame([(2, f, g, r) for f in range(6) for r, g in enumerate(names[f * 20:f * 20 + 20], 1)],
                 columns=["layer", "feature", "gene", "rank"]).to_csv(genes, index=False)
    gmt = tmp_path / "mods.gmt"
    gmt.write_text("".join(f"M{m}\t\t" + "\t".join(names[m * 20:m * 20 + 20]) + "\n" for m in range(MODULES)))
    out = tmp_path / "ann"
    code, text, err = run(["annotate", "--genes", str(genes), "--genesets", f"MODS={gmt}", "--universe-from-table",
                           "--baselines", "random_genes,coexpression", "--data", str(path),
                           "--coexpression-genes", "120", "--out", str(out)], capsys)
    assert code == 0, err
    assert re.search(r"MODS: 4 of 6 features annotated \(66\.7%\); baselines: random_genes \d+\.\d%, "
                     r"coexpression \d+\.\d%", text)
    base = pq.read_table(out / "baselines.parquet").to_pandas()
    assert set(base.baseline) == {"random_genes", "coexpression"}
    coex = base[(base.baseline == "coexpression") & (base.measure == "MODS")].iloc[0]
    # The table's universe is the 120 listed genes: 6 groups, the 4 modules among them.
    assert coex.layer == 2 and coex.expected == pytest.approx(4 / 6) and coex.observed == pytest.approx(4 / 6)
