"""Baselines: gene lists made without the SAE, annotated by the same tests so a rate can be read against them.

A baseline is a table of gene lists (layer, list, gene, rank) with a name and a note on how it was made.
`annotate(..., baselines=[...])` and `annotate_baseline` (annotate.py) test every list exactly as they test
the features and return rows of the atlas `null_baseline` table. The lists come from:

- `random_genes`: the features' own lists with their genes dealt out again at random (curveball trades), so
  every list keeps its size and every gene the number of lists it is in (made here, inside `annotate`);
- `coexpression`: equally sized groups of co-expressed genes of the dataset, no model (coexpression.py);
- `pca`: the top genes of the principal directions of the same activations (the build makes them);
- `random_init_model`: the top genes of a second build on a randomly initialised twin of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import AtlasError
from .enrichment import membership

BASELINES = ("random_genes", "coexpression", "pca", "random_init_model")
LIST_COLUMNS = ("layer", "list", "gene", "rank")


@dataclass(frozen=True)
class Baseline:
    name: str            # one of BASELINES, or a caller's own name
    lists: pd.DataFrame  # layer, list, gene, rank (rank 1 = first)
    note: str            # how the lists were made, shown beside the rate

    def __post_init__(self):
        missing = [c for c in LIST_COLUMNS if c not in self.lists.columns]
        if missing:
            raise AtlasError(f"baseline {self.name!r}: gene-list table lacks column(s) {', '.join(missing)} "
                             f"(needs {', '.join(LIST_COLUMNS)})")
        if not self.name:
            raise AtlasError("baseline: empty name")


def curveball(F: sp.csr_matrix, seed, rounds: int = 5) -> sp.csr_matrix:
    """Lists with exactly the rows' sizes and each gene's frequency, genes otherwise at random.

    Curveball trades (Strona et al. 2014): pair the rows at random; each pair keeps the genes it shares and
    deals the others out again at random, sizes unchanged. Every gene keeps its count across rows.
    """
    rng = np.random.default_rng(seed)
    rows = [F.indices[F.indptr[i]:F.indptr[i + 1]].tolist() for i in range(F.shape[0])]
    for _ in range(rounds):
        order = rng.permutation(len(rows))
        for a, b in zip(order[0::2], order[1::2]):
            A, B = set(rows[a]), set(rows[b])
            shared = A & B
            pool = sorted((A | B) - shared)
            if not pool:
                continue
            pool = [pool[i] for i in rng.permutation(len(pool))]
            n_a = len(A) - len(shared)
            rows[a] = sorted(shared.union(pool[:n_a]))
            rows[b] = sorted(shared.union(pool[n_a:]))
    return membership(rows, F.shape[1])


def matrix_lists(F: sp.csr_matrix, names: np.ndarray, layer: int, ids: np.ndarray | None = None) -> pd.DataFrame:
    """A lists x genes indicator back to a (layer, list, gene, rank) table; ranks follow the column order."""
    lens = np.diff(F.indptr)
    ids = np.arange(F.shape[0]) if ids is None else np.asarray(ids)
    first = np.repeat(F.indptr[:-1], lens)
    return pd.DataFrame({"layer": np.int64(layer), "list": np.repeat(ids, lens), "gene": names[F.indices],
                         "rank": np.arange(F.nnz) - first + 1})


def for_layers(groups: list[list[str]], layers) -> pd.DataFrame:
    """The same gene groups as the lists of every layer (a model-free baseline is one set of lists)."""
    base = pd.DataFrame([(i, g, r) for i, grp in enumerate(groups) for r, g in enumerate(grp, 1)],
                        columns=["list", "gene", "rank"])
    return pd.concat([base.assign(layer=int(L)) for L in layers], ignore_index=True)[list(LIST_COLUMNS)]
