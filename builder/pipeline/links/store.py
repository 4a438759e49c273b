"""Profiles kept on disk between the pairs of layers that use them, so memory holds the four profiles of one pair of
layers (an atlas', its twin's, the other atlas', its twin's) and never every layer's.

Each (side, layer) profile is made once (by `make`, from the codes), its moments kept in memory (small: a few vectors
and cell-type tables per feature) and its values written to the store's folder: sparse (12 bytes per non-zero
value) or, when more than 2/3 of the values are non-zero (top-k codes over hundreds of tokens per cell reach most
features in most cells), dense (8 bytes per value), whichever is smaller. A profile is read back (memory-mapped)
when a pair needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .correlate import Profile, profile

DENSE = 2 / 3  # share of non-zero values above which a profile is stored (and multiplied) dense


class ProfileStore:
    def __init__(self, folder: Path, groups: np.ndarray, n_groups: int, min_cells: int):
        self.folder, self.groups, self.n_groups, self.min_cells = Path(folder), groups, n_groups, min_cells
        self.moments: dict[tuple[str, int], Profile] = {}

    def _path(self, side: str, layer: int, dense: bool) -> Path:
        return self.folder / f"{side}-{layer:02d}.{'npy' if dense else 'npz'}"

    def put(self, side: str, layer: int, X: sp.spmatrix) -> None:
        p = profile(X, self.groups, self.n_groups, self.min_cells)
        dense = p.X.nnz > DENSE * p.X.shape[0] * p.X.shape[1]
        if dense:
            np.save(self._path(side, layer, True), p.X.toarray())
        else:
            sp.save_npz(self._path(side, layer, False), p.X, compressed=False)
        self.moments[side, layer] = replace(p, X=None)

    def get(self, side: str, layer: int, make: Callable[[], sp.spmatrix] | None = None) -> Profile:
        """The profile of `side` at `layer`, made by make() the first time."""
        if (side, layer) not in self.moments:
            self.put(side, layer, make())
        m = self.moments[side, layer]
        dense = self._path(side, layer, True)
        X = np.load(dense, mmap_mode="r") if dense.is_file() else sp.load_npz(self._path(side, layer, False)).tocsc()
        return replace(m, X=X)
