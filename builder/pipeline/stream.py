"""Pass 2, the streaming map over cell shards: model forward with every layer at once, SAE encode of every
layer, and per shard only codes plus the small sums that need dense activations. Dense activations exist
only per shard in memory.

Stage folder STREAM/:
  shards/NNNNN/    one per shard, committed atomically: codes (codes.py) and LL.dense.npz, the dense sums of
                   layer LL: tokens n, sum of x (s1), sum of x x^T (xtx, float64 d x d), per-gene sums of x
                   (gene_ids, gene_sum, float32) and, over held-out cells, SSE of the reconstruction, s1, sum
                   of squares, xtx, firing counts, L0, sums of a_f, a_f^2 and a_f x (h_za, features x d)
  merged/          layer_LL.npz: the dense sums of every shard added in shard order; stream.json
A killed build resumes at the first shard without a folder; finished shards are never recomputed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import AtlasError
from ..jsonio import dumps_json
from .cache import commit_once, is_done
from .codes import index_dtype, shard_name, write_layer, write_tokens
from .forward import ModelRunner, ModelSpec
from .plan import read_plan
from .sae import load_sae

DENSE = ("n", "s1", "xtx", "h_n", "h_sse", "h_s1", "h_s2", "h_xtx", "h_fire", "h_l0", "h_za", "h_a1", "h_a2")


class DenseSums:
    """The sums of one layer over one shard that need dense activations."""

    def __init__(self, d: int, n_features: int, n_genes: int):
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.v = {"n": z(()), "s1": z(d), "xtx": z(d, d), "h_n": z(()), "h_sse": z(()), "h_s1": z(d),
                  "h_s2": z(()), "h_xtx": z(d, d), "h_fire": z(n_features), "h_l0": z(()),
                  "h_za": z(n_features, d), "h_a1": z(n_features), "h_a2": z(n_features)}
        self.gene_sum = torch.zeros(n_genes, d, dtype=torch.float32)

    @torch.no_grad()
    def add(self, x: torch.Tensor, v: torch.Tensor, i: torch.Tensor, held: torch.Tensor, gidx: torch.Tensor, sae):
        # Sums over tokens run in numpy (pairwise, one thread) and products as GEMMs, so the result does not
        # depend on the thread count of the worker: local and Ray give the same bytes.
        s = self.v
        s["n"] += len(x)
        s["s1"] += torch.from_numpy(x.numpy().sum(0, dtype=np.float64))
        s["xtx"] += (x.T @ x).double()  # float32 product of one batch, accumulated in float64
        self.gene_sum.index_add_(0, gidx, x)  # a cell holds each gene once: one row per gene and cell
        if not held.any():
            return
        xh, vh, ih = x[held], v[held], i[held]
        err = (xh - sae.decode(vh, ih)).numpy().astype(np.float64)
        xd = xh.numpy().astype(np.float64)
        s["h_n"] += len(xh)
        s["h_sse"] += float(np.sum(err * err))
        s["h_s1"] += torch.from_numpy(xd.sum(0))
        s["h_s2"] += float(np.sum(xd * xd))
        s["h_xtx"] += torch.from_numpy(xd.T @ xd)
        on = (vh > 0).numpy()
        rows = np.nonzero(on)[0]
        f, a = ih.numpy()[on].astype(np.int64), vh.numpy()[on].astype(np.float64)
        n_f = s["h_fire"].shape[0]
        s["h_fire"] += torch.from_numpy(np.bincount(f, minlength=n_f).astype(np.float64))
        s["h_l0"] += int(on.sum())
        s["h_a1"] += torch.from_numpy(np.bincount(f, a, n_f))
        s["h_a2"] += torch.from_numpy(np.bincount(f, a * a, n_f))
        za = np.zeros((n_f, xd.shape[1]))
        np.add.at(za, f, a[:, None] * xd[rows])
        s["h_za"] += torch.from_numpy(za)

    def save(self, path: Path, gene_ids: np.ndarray) -> None:
        np.savez(path, gene_ids=gene_ids, gene_sum=self.gene_sum.numpy(), **{k: t.numpy() for k, t in self.v.items()})


class StreamWorker:
    """Loads the model and the SAEs once; `worker(shard)` writes STREAM/shards/NNNNN/ and returns its tokens."""

    def __init__(self, spec: ModelSpec, saes: dict, plan_dir: str, out: str):
        self.runner = ModelRunner(spec)
        self.saes = {int(L): load_sae(Path(p)).eval() for L, p in saes.items()}
        self.plan, cells = read_plan(Path(plan_dir))
        self.held = cells["heldout"].to_numpy()
        self.out = Path(out)

    def __call__(self, shard: int) -> int:
        target = self.out / "shards" / shard_name(shard)
        start, stop, tokens = self.plan["shards"][shard]
        if is_done(target):
            return tokens
        ad = self.runner.adapter
        special = np.fromiter(ad.special_ids, np.int64)
        ids = np.unique(np.concatenate([ad.tokenize(self.runner.prepared, c).ids for c in range(start, stop)]))
        genes = ids[~np.isin(ids, special)]
        sums = {L: DenseSums(ad.width, sae.d_sae, len(genes)) for L, sae in self.saes.items()}
        codes = {L: ([], []) for L in self.saes}
        cells, toks = [], []
        with torch.no_grad():
            for chunk in self.runner.run(range(start, stop)):
                if len(chunk.cells) == 0:
                    continue
                cells.append(chunk.cells)
                toks.append(chunk.genes)
                held = torch.from_numpy(self.held[chunk.cells])
                gidx = torch.from_numpy(np.searchsorted(genes, chunk.genes))
                for L, sae in self.saes.items():
                    x = torch.from_numpy(chunk.acts[L])
                    if not torch.isfinite(x).all():
                        raise AtlasError(f"layer {L}: NaN or infinite activations in cells {start}..{stop - 1}")
                    v, i = sae.encode(x)
                    if not torch.isfinite(v).all():
                        raise AtlasError(f"layer {L}: the SAE gives NaN or infinite codes in cells {start}..{stop - 1}")
                    codes[L][0].append(i.numpy().astype(index_dtype(sae.d_sae)))
                    codes[L][1].append(v.numpy())
                    sums[L].add(x, v, i, held, gidx, sae)
        with commit_once(target) as tmp:
            cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
            write_tokens(tmp, cat(cells, np.int64), cat(toks, np.int64))
            for L, sae in self.saes.items():
                k = sae.k
                write_layer(tmp, L, np.concatenate(codes[L][0]) if codes[L][0] else np.zeros((0, k)),
                            np.concatenate(codes[L][1]) if codes[L][1] else np.zeros((0, k)), sae.d_sae)
                sums[L].save(tmp / f"{L:02d}.dense.npz", genes)
        return tokens


def shard_dirs(folder: Path) -> list[Path]:
    return sorted((Path(folder) / "shards").iterdir()) if (Path(folder) / "shards").is_dir() else []


def todo(folder: Path, n_shards: int) -> list[int]:
    return [s for s in range(n_shards) if not is_done(Path(folder) / "shards" / shard_name(s))]


def merge(folder: Path, layers: list[int], n_shards: int, keep_partials: bool = True) -> None:
    """Add the dense sums of every shard in shard order into merged/layer_LL.npz."""
    folder = Path(folder)
    target = folder / "merged"
    if is_done(target):
        return
    dirs = [folder / "shards" / shard_name(s) for s in range(n_shards)]
    with commit_once(target) as tmp:
        for L in layers:
            name = f"{L:02d}.dense.npz"
            gene_ids = np.unique(np.concatenate([np.load(d / name)["gene_ids"] for d in dirs]))
            acc = None
            for d in dirs:
                z = np.load(d / name)
                if acc is None:
                    acc = {k: z[k].astype(np.float64) for k in DENSE}
                    acc["gene_sum"] = np.zeros((gene_ids.size, z["gene_sum"].shape[1]))
                else:
                    for k in DENSE:
                        acc[k] += z[k]
                acc["gene_sum"][np.searchsorted(gene_ids, z["gene_ids"])] += z["gene_sum"]
            np.savez(tmp / f"layer_{L:02d}.npz", gene_ids=gene_ids, **acc)
        (tmp / "stream.json").write_bytes(dumps_json({"layers": layers, "shards": n_shards}, indent=True))
    if not keep_partials:
        for d in dirs:
            for L in layers:
                (d / f"{L:02d}.dense.npz").unlink(missing_ok=True)


def read_dense(folder: Path, layer: int) -> dict:
    """The merged dense sums of one layer (see the module docstring)."""
    z = np.load(Path(folder) / "merged" / f"layer_{layer:02d}.npz")
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
