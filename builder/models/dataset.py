"""Read a single-cell dataset (.h5ad) the way the models need it: raw counts, cells x genes, with gene names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import AtlasError


@dataclass(frozen=True)
class Dataset:
    path: Path
    counts: sp.csr_matrix  # cells x genes, float32, raw counts
    var: pd.DataFrame  # one row per column of counts
    obs: pd.DataFrame
    counts_source: str  # where the counts were found: "layers['counts']", "raw.X" or "X"

    @property
    def n_cells(self) -> int:
        return self.counts.shape[0]

    def total_counts(self) -> np.ndarray:
        """Per-cell total counts: obs['n_counts'] when the file has it (Geneformer's convention), else the row sums."""
        if "n_counts" in self.obs.columns:
            n = pd.to_numeric(self.obs["n_counts"], errors="coerce").to_numpy(dtype=np.float64)
            if np.isfinite(n).all() and (n > 0).all():
                return n
        return np.asarray(self.counts.sum(axis=1), dtype=np.float64).ravel()

    def gene_column(self, name: str | None, score) -> tuple[str, np.ndarray]:
        """The var column (or the index) naming genes: `name` if given, else the one `score` rates best."""
        columns = {"index": self.var.index.to_numpy().astype(str)}
        for c in self.var.columns:
            if self.var[c].dtype == object or isinstance(self.var[c].dtype, pd.CategoricalDtype):
                columns[c] = self.var[c].astype(str).to_numpy()
        if name is not None:
            if name not in columns:
                raise AtlasError(f"{self.path}: var has no text column {name!r} (has: {', '.join(sorted(columns))})")
            return name, columns[name]
        best = max(columns, key=lambda c: (score(columns[c]), c == "index"))
        return best, columns[best]


def _counts_problem(m) -> str | None:
    """Why `m` does not hold raw counts, or None when it does (non-negative whole numbers; float noise allowed)."""
    data = m.data if sp.issparse(m) else np.asarray(m).ravel()
    if data.size == 0:
        return None
    if not np.isfinite(data).all():
        return f"{int((~np.isfinite(data)).sum())} NaN or infinite values"
    if (data < 0).any():
        return f"{int((data < 0).sum())} negative values (scaled data?)"
    frac = np.abs(data - np.round(data))
    if (frac > 1e-3).any():
        return f"non-integer values such as {float(data[np.argmax(frac)]):.4g} (log-normalised data?)"
    return None


def read_h5ad(path: Path, max_cells: int | None = None) -> Dataset:
    """Load `path` with anndata and pick its raw counts: layers['counts'], else raw.X, else X."""
    import anndata

    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: dataset not found")
    try:
        adata = anndata.read_h5ad(path)
    except Exception as e:  # h5py/anndata raise many types for a damaged or foreign file
        raise AtlasError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from None
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise AtlasError(f"{path}: the dataset is empty ({adata.n_obs} cells x {adata.n_vars} genes)")
    if max_cells is not None:
        adata = adata[: max_cells]

    candidates = []
    if "counts" in adata.layers:
        candidates.append(("layers['counts']", adata.layers["counts"], adata.var))
    if adata.raw is not None:
        candidates.append(("raw.X", adata.raw.X, adata.raw.var))
    candidates.append(("X", adata.X, adata.var))
    problems = []
    for source, m, var in candidates:
        if m is None:
            problems.append(f"{source} is empty")
            continue
        problem = _counts_problem(m)
        if problem is None:
            counts = sp.csr_matrix(m, dtype=np.float32)
            counts.data = np.round(counts.data)
            counts.eliminate_zeros()
            return Dataset(path, counts, var.copy(), adata.obs.copy(), source)
        problems.append(f"{source} has {problem}")
    raise AtlasError(f"{path}: no raw counts found: {'; '.join(problems)}")
