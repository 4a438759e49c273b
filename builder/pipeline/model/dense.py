"""The sums of the streaming pass that need dense activations: per-shard partials, their running fold in shard
order, the merged result and its readers (torch-free: numpy only).

Per shard and layer (STREAM/shards/NNNNN/LL.dense.npz), float64 unless said:
  n, s1             gene tokens and the sum of x over them (for the layer mean)
  gene_ids, gene_n  the shard's genes (token ids) and their tokens; gene_sum (float32) the sum of x per gene
  h_*               over the tokens of held-out cells: h_n, h_sse (reconstruction error), h_s1, h_s2 (sum of
                    squares), h_xtx (d x d), h_fire (firing per feature), h_l0, h_a1, h_a2 (sums of each
                    feature's activation and its square), h_za (features x d: sum of a_f x)
The driver folds each finished shard at once, layer by layer and in shard order, into STREAM/fold/LL-NNNNN.npz
(the running total of layer LL over the first NNNNN shards: a checkpoint written to a temporary name and renamed),
then deletes the layer's previous checkpoint and the shard's partial of that layer. So the cache holds one running
total per layer, one shard's partials and at most one layer's new total, never a second copy of every layer, and a
killed build resumes from each layer's last checkpoint. The running per-gene sums are kept in float32 (genes x d
per layer, the largest part: at a 20,000-gene vocabulary and d = 512, 40 MB a layer; float32 sums of float32
per-shard sums lose nothing the PCA gene lists could show). `finalize` turns the total into STREAM/merged/layer_LL.npz (`summarize`):
the sums above without the per-gene ones, the principal axes of the held-out tokens (eigenvalues, top PCA_MAX
axes), h_za projected on them (h_za_proj, features x PCA_MAX) and each gene's mean activation projected on them
(gene_proj, genes x PCA_MAX, centred on the layer mean).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ...jsonio import dumps_json
from ..cache import commit_once, is_done
from ..codes import shard_name

SUMS = ("n", "s1", "h_n", "h_sse", "h_s1", "h_s2", "h_xtx", "h_fire", "h_l0", "h_za", "h_a1", "h_a2")
PCA_MAX = 50  # principal axes kept in the merged result (SVD comparison k <= 50, PCA baseline components)


def partial_name(layer: int) -> str:
    return f"{layer:02d}.dense.npz"


def _add_genes(acc: dict, ids: np.ndarray, n: np.ndarray, s: np.ndarray) -> None:
    """acc's per-gene rows (ids ascending) plus these; rows of a gene in both add acc's value first."""
    union = np.union1d(acc["gene_ids"], ids)
    if union.size != acc["gene_ids"].size:
        gn, gs = np.zeros(union.size, np.int64), np.zeros((union.size, acc["gene_sum"].shape[1]), acc["gene_sum"].dtype)
        at = np.searchsorted(union, acc["gene_ids"])
        gn[at], gs[at] = acc["gene_n"], acc["gene_sum"]
        acc.update(gene_ids=union, gene_n=gn, gene_sum=gs)
    at = np.searchsorted(acc["gene_ids"], ids)
    acc["gene_n"][at] += n
    acc["gene_sum"][at] += s


def _fold_one(acc: dict | None, z) -> dict:
    if acc is None:
        acc = {k: np.asarray(z[k], np.float64).copy() for k in SUMS}
        acc.update(gene_ids=np.zeros(0, np.int64), gene_n=np.zeros(0, np.int64),
                   gene_sum=np.zeros((0, z["gene_sum"].shape[1]), np.float32))
    else:
        for k in SUMS:
            acc[k] += z[k]
    _add_genes(acc, z["gene_ids"].astype(np.int64), z["gene_n"].astype(np.int64), z["gene_sum"])
    return acc


def _checkpoint(folder: Path, layer: int) -> tuple[Path | None, int]:
    """(layer's latest running total, shards it holds)."""
    best = (None, 0)
    for f in (Path(folder) / "fold").glob(f"{layer:02d}-*.npz"):
        if int(f.stem[3:]) > best[1]:
            best = (f, int(f.stem[3:]))
    return best


def _fold_layer(folder: Path, L: int, n_shards: int, keep_partials: bool) -> int:
    prev, done = _checkpoint(folder, L)
    ready = done
    while ready < n_shards and is_done(folder / "shards" / shard_name(ready)):
        ready += 1
    if ready == done:
        return done
    acc = None
    if prev is not None:
        with np.load(prev) as z:
            acc = {k: z[k] for k in z.files}
    for s in range(done, ready):
        with np.load(folder / "shards" / shard_name(s) / partial_name(L)) as z:
            acc = _fold_one(acc, z)
    tmp = folder / "fold" / f".{L:02d}-{ready:05d}.tmp.npz"
    tmp.parent.mkdir(exist_ok=True)
    np.savez(tmp, **acc)
    os.replace(tmp, folder / "fold" / f"{L:02d}-{ready:05d}.npz")
    if prev is not None:
        prev.unlink(missing_ok=True)
    if not keep_partials:
        for s in range(done, ready):
            (folder / "shards" / shard_name(s) / partial_name(L)).unlink(missing_ok=True)
    return ready


def fold(folder: Path, layers: list[int], n_shards: int, keep_partials: bool = False) -> int:
    """Fold the finished shards that follow each layer's last checkpoint, in shard order. Returns the shards
    every layer has folded."""
    return min(_fold_layer(Path(folder), L, n_shards, keep_partials) for L in layers)


def principal_axes(n: float, s1: np.ndarray, xtx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues descending, axes as rows) of the covariance from merged sums."""
    mean = s1 / max(n, 1)
    cov = xtx / max(n, 1) - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return vals[::-1], vecs[:, ::-1].T


def finalize(folder: Path, layers: list[int], n_shards: int, keep_partials: bool = False) -> None:
    """Fold what is left, then write merged/layer_LL.npz (see the module docstring) and stream.json."""
    folder = Path(folder)
    if is_done(folder / "merged"):
        return
    assert fold(folder, layers, n_shards, keep_partials) == n_shards
    with commit_once(folder / "merged") as tmp:
        for L in layers:
            with np.load(_checkpoint(folder, L)[0]) as z:
                acc = {k: z[k] for k in z.files}
            np.savez(tmp / f"layer_{L:02d}.npz", **summarize(acc))
        (tmp / "stream.json").write_bytes(dumps_json({"layers": layers, "shards": n_shards}, indent=True))
    if not keep_partials:
        shutil.rmtree(folder / "fold", ignore_errors=True)


def summarize(acc: dict) -> dict:
    """The merged result of one layer from its folded sums: the per-feature x d and per-gene x d sums are kept
    only as projections on the top PCA_MAX principal axes of the held-out tokens, all that the SVD comparison and
    the PCA gene lists read (a tenth of the size at width 512)."""
    vals, axes = principal_axes(float(acc["h_n"]), acc["h_s1"], acc["h_xtx"])
    axes = axes[:PCA_MAX]
    mean = acc["s1"] / max(float(acc["n"]), 1)
    means = acc["gene_sum"] / np.maximum(acc["gene_n"], 1)[:, None]
    return ({k: acc[k] for k in SUMS if k != "h_za"}
            | {"h_za_proj": acc["h_za"] @ axes.T, "eigenvalues": vals, "axes": axes, "gene_ids": acc["gene_ids"],
               "gene_n": acc["gene_n"], "gene_proj": (means - mean) @ axes.T})


def read_dense(folder: Path, layer: int) -> dict:
    """The merged dense sums of one layer (see the module docstring)."""
    with np.load(Path(folder) / "merged" / f"layer_{layer:02d}.npz") as z:
        return {k: z[k] for k in z.files}


def heldout_metrics(dense: dict) -> dict:
    """Variance explained (1 - SSE / sum of squares about the held-out mean), L0 and dead features, over every
    held-out token."""
    n = float(dense["h_n"])
    if n == 0:
        return {"variance_explained": None, "l0": None, "dead_features": None, "heldout_tokens": 0}
    sst = float(dense["h_s2"]) - float((dense["h_s1"] ** 2).sum()) / n
    return {"variance_explained": 1 - float(dense["h_sse"]) / sst if sst > 0 else None,
            "l0": float(dense["h_l0"]) / n, "dead_features": int((dense["h_fire"] == 0).sum()),
            "heldout_tokens": int(n)}
