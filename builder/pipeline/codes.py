"""Sparse codes on disk, torch-free: per shard, the token cell and gene ids once, and per layer the top-k
feature indices and values. Later stages read only these (importing this module never imports torch).

A shard folder (written atomically by the streaming pass):
  cell.npy         (tokens,) int32 dataset row of each token
  gene.npy         (tokens,) int32 token id (gene) of each token
  LL.idx.npy       (tokens, k) feature indices of layer LL, uint16 up to 65,536 features, else int32
  LL.val.npy       (tokens, k) float32 values (ReLU'd; 0 means the feature did not fire)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Codes:
    idx: np.ndarray
    val: np.ndarray
    cell: np.ndarray
    gene: np.ndarray

    @property
    def n_tokens(self) -> int:
        return len(self.cell)


def index_dtype(n_features: int):
    return np.uint16 if n_features <= 1 << 16 else np.int32


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def shard_units(plan: dict) -> list[tuple[str, int]]:
    """The units of a map over the plan's shards: (folder shards/NNNNN, its gene tokens) per shard."""
    return [(f"shards/{shard_name(i)}", t) for i, (_, _, t) in enumerate(plan["shards"])]


def allocate(path: Path, dtype, shape: tuple) -> np.ndarray:
    """A .npy file of this shape opened for writing in place, so rows go to disk as they come (an empty one is
    written at once: a file cannot map zero bytes)."""
    if 0 in shape:
        np.save(path, np.zeros(shape, dtype))
        return np.zeros(shape, dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def read_layer(folder: Path, layer: int, mmap: bool = True) -> Codes:
    """The codes of one layer in one shard folder (memory-mapped by default)."""
    mode = "r" if mmap else None
    load = lambda name: np.load(Path(folder) / name, mmap_mode=mode)  # noqa: E731
    return Codes(load(f"{layer:02d}.idx.npy"), load(f"{layer:02d}.val.npy"), load("cell.npy"), load("gene.npy"))


def read_tokens(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(Path(folder) / "cell.npy"), np.load(Path(folder) / "gene.npy")


def fired(c: Codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(token row, feature, value) of every firing (value > 0), in token order."""
    val = np.asarray(c.val)
    on = val > 0
    rows = np.broadcast_to(np.arange(val.shape[0], dtype=np.int64)[:, None], val.shape)[on]
    return rows, np.asarray(c.idx)[on].astype(np.int64), val[on]
