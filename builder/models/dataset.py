"""Read a single-cell dataset (.h5ad) the way the models need it: raw counts, cells x genes, with gene names.

Two readers give the same rows: `backed` (default) opens the file with h5py and reads rows in chunks through
anndata's lazy sparse datasets, so a dataset larger than memory builds; in-memory loads it whole with anndata.
The counts source is layers['counts'], else raw.X, else X: the first whose every chunk holds non-negative,
whole, finite numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import AtlasError

CHUNK = 1024  # rows read from the file at a time


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


def _as_counts(m) -> sp.csr_matrix:
    counts = sp.csr_matrix(m, dtype=np.float32)
    counts.data = np.round(counts.data)
    counts.eliminate_zeros()
    counts.sort_indices()
    return counts


class Counts:
    """Rows of the chosen counts matrix, read chunk by chunk; `counts[i]` is a 1 x genes CSR row."""

    def __init__(self, source, n_cells: int, n_genes: int):
        self.source, self.shape = source, (n_cells, n_genes)
        self._lo, self._chunk = -1, None

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        return _as_counts(self.source[start:stop])

    def matrix(self) -> sp.csr_matrix:
        """All rows at once, for callers that need the whole matrix in memory (pretraining a small model)."""
        return self.rows(0, self.shape[0])

    def toarray(self) -> np.ndarray:
        return self.matrix().toarray()

    def __getitem__(self, i: int) -> sp.csr_matrix:
        i = int(i)
        if not 0 <= i < self.shape[0]:
            raise IndexError(i)
        lo = i - i % CHUNK
        if lo != self._lo:  # cells are read in order, so one cached chunk serves CHUNK rows
            self._chunk, self._lo = self.rows(lo, min(lo + CHUNK, self.shape[0])), lo
        return self._chunk[i - lo]


@dataclass(frozen=True)
class Dataset:
    path: Path
    counts: Counts  # cells x genes, float32 raw counts, row by row
    var: pd.DataFrame  # one row per column of counts
    obs: pd.DataFrame
    counts_source: str  # where the counts were found: "layers['counts']", "raw.X" or "X"
    backed: bool = True
    _handle: object = field(default=None, repr=False, compare=False)  # the open h5py file, kept alive

    def __post_init__(self):
        if not isinstance(self.counts, Counts):  # a matrix in memory (tests, hand-made datasets)
            object.__setattr__(self, "counts", Counts(sp.csr_matrix(self.counts), *self.counts.shape))

    @property
    def n_cells(self) -> int:
        return self.counts.shape[0]

    def total_counts(self) -> np.ndarray:
        """Per-cell total counts: obs['n_counts'] when the file has it (Geneformer's convention), else the row sums."""
        if "n_counts" in self.obs.columns:
            n = pd.to_numeric(self.obs["n_counts"], errors="coerce").to_numpy(dtype=np.float64)
            if np.isfinite(n).all() and (n > 0).all():
                return n
        out = np.zeros(self.n_cells)
        for s in range(0, self.n_cells, CHUNK):
            out[s:s + CHUNK] = np.asarray(self.counts.rows(s, min(s + CHUNK, self.n_cells)).sum(axis=1),
                                          dtype=np.float64).ravel()
        return out

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


def _pick(path: Path, candidates, n_cells: int) -> tuple[str, object, pd.DataFrame]:
    """The first candidate whose every chunk holds raw counts."""
    problems = []
    for source, m, var in candidates:
        if m is None:
            problems.append(f"{source} is empty")
            continue
        problem = None
        for s in range(0, n_cells, CHUNK):
            problem = _counts_problem(m[s:min(s + CHUNK, n_cells)])
            if problem:
                break
        if problem is None:
            return source, m, var
        problems.append(f"{source} has {problem}")
    raise AtlasError(f"{path}: no raw counts found: {'; '.join(problems)}")


def _open_backed(path: Path):
    import h5py
    from anndata.io import read_elem, sparse_dataset

    f = h5py.File(path, "r")

    def matrix(key):
        node = f[key]
        return sparse_dataset(node) if isinstance(node, h5py.Group) else node

    obs, var = read_elem(f["obs"]), read_elem(f["var"])
    cands = []
    if "layers" in f and "counts" in f["layers"]:
        cands.append(("layers['counts']", matrix("layers/counts"), var))
    if "raw" in f and "X" in f["raw"]:
        cands.append(("raw.X", matrix("raw/X"), read_elem(f["raw/var"])))
    cands.append(("X", matrix("X") if "X" in f else None, var))
    return f, obs, var, cands


def _open_memory(path: Path):
    import anndata

    a = anndata.read_h5ad(path)
    cands = []
    if "counts" in a.layers:
        cands.append(("layers['counts']", sp.csr_matrix(a.layers["counts"]), a.var))
    if a.raw is not None:
        cands.append(("raw.X", sp.csr_matrix(a.raw.X), a.raw.var))
    cands.append(("X", None if a.X is None else sp.csr_matrix(a.X), a.var))
    return None, a.obs, a.var, cands


def read_h5ad(path: Path, max_cells: int | None = None, backed: bool = True) -> Dataset:
    """Open `path` (the first `max_cells` cells) and pick its raw counts: layers['counts'], else raw.X, else X."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: dataset not found")
    try:
        handle, obs, var, cands = (_open_backed if backed else _open_memory)(path)
    except Exception as e:  # h5py/anndata raise many types for a damaged or foreign file
        raise AtlasError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from None
    n_cells = len(obs) if max_cells is None else min(len(obs), max_cells)
    if len(obs) == 0 or len(var) == 0:
        raise AtlasError(f"{path}: the dataset is empty ({len(obs)} cells x {len(var)} genes)")
    source, m, var = _pick(path, cands, n_cells)
    return Dataset(path, Counts(m, n_cells, len(var)), var.copy(), obs.iloc[:n_cells].copy(), source, backed, handle)
