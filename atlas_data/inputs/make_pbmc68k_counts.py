"""Write atlas_data/inputs/pbmc68k_counts.h5ad: 700 labelled PBMCs with their raw counts, from scanpy's copy.

    python atlas_data/inputs/make_pbmc68k_counts.py [SRC.h5ad] [OUT.h5ad]

SRC defaults to `10x_pbmc68k_reduced.h5ad` inside the installed scanpy package (any scanpy since 1.4 ships the
same file; `pip download --no-deps scanpy` gets it without installing). OUT defaults to the bundled path.

scanpy stores no counts for these cells: `raw.X` holds log1p(count x 10,000 / n_counts) rounded to 3 decimals,
with `obs['n_counts']` the cell's total over the whole transcriptome. `recover_counts` inverts that and refuses
the file unless every value is explained by exactly one integer count, so the counts are exact, not estimates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
OUT = HERE / "pbmc68k_counts.h5ad"
SCALE = 1e4  # scanpy's normalize_total target used for raw.X
DECIMALS = 3  # raw.X is rounded to 3 decimals
SOURCE = ("scanpy 1.11.5 scanpy/datasets/10x_pbmc68k_reduced.h5ad (BSD-3-Clause), a 700-cell subset of 10x Genomics "
          "'Fresh 68k PBMCs (Donor A)' (CC BY 4.0; Zheng et al. 2017, Nat Commun 8:14049); counts recovered exactly "
          "from raw.X and obs['n_counts'] by atlas_data/inputs/make_pbmc68k_counts.py; cell_type = obs['bulk_labels']")


def normalise(counts: np.ndarray, n_counts: np.ndarray) -> np.ndarray:
    """scanpy's stored value of `counts` (float64 in, float32 out), for cells with totals `n_counts`."""
    return np.round(np.log1p(counts * SCALE / n_counts[:, None]), DECIMALS).astype(np.float32)


def recover_counts(lognorm: sp.csr_matrix, n_counts: np.ndarray) -> sp.csr_matrix:
    """Integer counts whose stored value is `lognorm`; ValueError unless each value fits exactly one integer."""
    m = sp.csr_matrix(lognorm, dtype=np.float32)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    size = n_counts[rows] / SCALE  # count = expm1(value) * n_counts / 10,000
    count = np.round(np.expm1(m.data.astype(np.float64)) * size)
    # A stored value v came from count c when |log1p(c / size) - v| <= half a rounding step (plus float32 slack).
    tol = 0.5 * 10.0 ** -DECIMALS + 1e-6
    fits = lambda c: np.abs(np.log1p(c / size) - m.data) <= tol  # noqa: E731
    if (count < 1).any() or not fits(count).all():
        bad = int(np.argmax((count < 1) | ~fits(count)))
        raise ValueError(f"value {m.data[bad]} of cell {rows[bad]} matches no integer count")
    ambiguous = fits(count - 1) & (count > 1) | fits(count + 1)
    if ambiguous.any():
        raise ValueError(f"{int(ambiguous.sum())} values fit two counts (rounding too coarse to invert)")
    out = sp.csr_matrix((count.astype(np.float32), m.indices.copy(), m.indptr.copy()), shape=m.shape)
    out.sort_indices()
    return out


def source_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("scanpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scanpy is not installed: pass the path of 10x_pbmc68k_reduced.h5ad")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "10x_pbmc68k_reduced.h5ad"


def build(src: Path):
    """The AnnData to bundle: counts in X, GENCODE v44 Ensembl ids, cell_type and the source's cell metadata."""
    import warnings

    import anndata as ad

    sys.path.insert(0, str(HERE.parent.parent))  # the repository, for builder.geneids
    from builder.geneids import gencode

    with warnings.catch_warnings():  # the 2019 file moves its neighbour graphs on read; we drop them anyway
        warnings.simplefilter("ignore", FutureWarning)
        src_adata = ad.read_h5ad(src)
    n_counts = src_adata.obs["n_counts"].to_numpy(np.float64)
    counts = recover_counts(src_adata.raw.X, n_counts)
    symbols = src_adata.raw.var_names.astype(str)
    to_id = gencode()[1]
    var = pd.DataFrame({"ensembl_id": [to_id.get(s.upper(), "") for s in symbols]}, index=pd.Index(symbols, name=None))
    obs = pd.DataFrame({
        "cell_type": src_adata.obs["bulk_labels"].astype(str).astype("category"),
        "louvain": src_adata.obs["louvain"].astype(str).astype("category"),
        "n_counts": n_counts,  # whole-transcriptome total: Geneformer's normalisation needs it, not the 765-gene sum
        "n_genes": src_adata.obs["n_genes"].to_numpy(np.int64),
        "percent_mito": src_adata.obs["percent_mito"].to_numpy(np.float64),
    }, index=pd.Index(src_adata.obs_names.astype(str), name=None))
    return ad.AnnData(X=counts, obs=obs, var=var, uns={"source": SOURCE})


def main(argv: list[str]) -> None:
    src = Path(argv[0]) if argv else source_path()
    out = Path(argv[1]) if len(argv) > 1 else OUT
    adata = build(src)
    tmp = out.with_name(f".{out.name}.tmp")
    adata.write_h5ad(tmp, compression="gzip", compression_opts=9)
    tmp.replace(out)
    mapped = int((adata.var["ensembl_id"] != "").sum())
    print(f"{out}: {adata.n_obs} cells x {adata.n_vars} genes ({mapped} with an Ensembl id), "
          f"{adata.X.nnz} non-zero counts, {adata.obs['cell_type'].nunique()} cell types")


if __name__ == "__main__":
    main(sys.argv[1:])
