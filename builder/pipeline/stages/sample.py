"""Pass 1 (with --train-sae): the SAE training sample, by keyed bottom-k sampling.

Gene token j of cell c gets the key u[j] of a uniform generator seeded by (seed, c). The sample of a layer is
the n tokens with the smallest keys among the cells not held out, the same tokens for every layer. Token
counts per cell are known from the plan, so the threshold (the n-th smallest key) is known before the model
runs: the map over shards keeps exactly its tokens below it (and skips cells with none), and the merge puts
them in key order. The result is a uniform, globally shuffled sample, identical for any shard size, engine or
order, stored per layer as a .npy file read through a memory map (never all in RAM).

Stage folder SAMPLE/:
  shards/NNNNN/    keys.npy (float64), cell.npy, pos.npy (position among the cell's gene tokens), LL.npy
  layer_LL.npy     (n, width) float32, rows in key order; sample.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import AtlasError
from ...jsonio import dumps_json
from ..cache import commit_once, is_done, key_of
from ..codes import shard_name, shard_units
from ..model.forward import ModelRunner, ModelSpec
from ..stage import MapStage
from .plan import read_plan

KEY_STREAM = 0x4B45  # separates a cell's sampling keys from its other random draws
DEFAULT_TOKENS = 2_000_000


def cell_keys(seed: int, cell: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, KEY_STREAM, int(cell)]).random(n)


def threshold(cells, requested: int | None, seed: int, option: str = "train.sample_tokens") -> tuple[float, int]:
    """(the n-th smallest key among the training cells' tokens, n). Refuses 0 or more than there are."""
    train = cells[(~cells["heldout"]) & (cells["n_tokens"] > 0)]
    available = int(train["n_tokens"].sum())
    n = min(DEFAULT_TOKENS, available) if requested is None else int(requested)
    if not 1 <= n <= available:
        raise AtlasError(f"{option} {n}: must be between 1 and {available} (the gene tokens of the cells not "
                         f"held out)")
    best, buf, size = np.zeros(0), [], 0
    for c, m in zip(train["cell"].to_numpy(), train["n_tokens"].to_numpy()):
        buf.append(cell_keys(seed, c, int(m)))
        size += int(m)
        if size >= max(n, 1 << 20):  # bounded memory: keep only the n smallest so far
            best = np.partition(np.concatenate([best, *buf]), n - 1)[:n]
            buf, size = [], 0
    allk = np.concatenate([best, *buf])
    return float(np.partition(allk, n - 1)[n - 1]), n


class SampleWorker:
    def __init__(self, spec: ModelSpec, plan_dir: str, out: str, cut: float):
        self.runner = ModelRunner(spec)
        self.plan, cells = read_plan(Path(plan_dir))
        self.cells = cells
        self.out, self.cut, self.seed = Path(out), cut, spec.seed

    def __call__(self, shard: int) -> int:
        target = self.out / "shards" / shard_name(shard)
        start, stop, tokens = self.plan["shards"][shard]
        if is_done(target):
            return tokens
        rows = self.cells.iloc[start:stop]
        keys = {int(c): cell_keys(self.seed, c, int(m)) for c, m, h in
                zip(rows["cell"], rows["n_tokens"], rows["heldout"]) if not h and m > 0}
        run = [c for c, k in keys.items() if (k <= self.cut).any()]
        out = {"keys": [], "cell": [], "pos": []} | {L: [] for L in self.runner.spec.layers}
        for chunk in (self.runner.run(run) if run else []):
            first = np.searchsorted(chunk.cells, chunk.cells, side="left")  # rows of a cell are contiguous
            pos = np.arange(len(chunk.cells)) - first
            k = np.array([keys[int(c)][p] for c, p in zip(chunk.cells, pos)])
            sel = k <= self.cut
            for name, v in (("keys", k), ("cell", chunk.cells), ("pos", pos)):
                out[name].append(v[sel])
            for L in self.runner.spec.layers:
                out[L].append(chunk.acts[L][sel])
        width = self.runner.adapter.width
        with commit_once(target) as tmp:
            for name, dt in (("keys", np.float64), ("cell", np.int64), ("pos", np.int64)):
                np.save(tmp / f"{name}.npy", np.concatenate(out[name]).astype(dt) if out[name] else np.zeros(0, dt))
            for L in self.runner.spec.layers:
                np.save(tmp / f"{L:02d}.npy", np.concatenate(out[L]) if out[L] else np.zeros((0, width), np.float32))
        return tokens


def merge(folder: Path, layers: list[int], n_shards: int, n: int, width: int, keep_partials: bool = True) -> None:
    """Write layer_LL.npy: the shards' rows in (key, cell, position) order, the first n."""
    folder = Path(folder)
    dirs = [folder / "shards" / shard_name(s) for s in range(n_shards)]
    parts = [{k: np.load(d / f"{k}.npy") for k in ("keys", "cell", "pos")} for d in dirs]
    key = np.concatenate([p["keys"] for p in parts])
    cell = np.concatenate([p["cell"] for p in parts])
    pos = np.concatenate([p["pos"] for p in parts])
    order = np.lexsort((pos, cell, key))[:n]
    rank = np.full(key.size, -1, np.int64)
    rank[order] = np.arange(order.size)
    offsets = np.cumsum([0] + [p["keys"].size for p in parts])
    for L in layers:
        out = np.lib.format.open_memmap(folder / f".layer_{L:02d}.npy.tmp", mode="w+", dtype=np.float32,
                                        shape=(order.size, width))
        for s, d in enumerate(dirs):
            r = rank[offsets[s]:offsets[s + 1]]
            keep = r >= 0
            if keep.any():
                out[r[keep]] = np.load(d / f"{L:02d}.npy")[keep]
        out.flush()
        del out
        (folder / f".layer_{L:02d}.npy.tmp").rename(folder / f"layer_{L:02d}.npy")
    (folder / "sample.json").write_bytes(dumps_json({"tokens": int(order.size), "layers": layers,
                                                     "cells": int(np.unique(cell[order]).size)}, indent=True))
    if not keep_partials:
        for d in dirs:
            for L in layers:
                (d / f"{L:02d}.npy").unlink(missing_ok=True)


def read_sample(folder: Path, layer: int) -> np.ndarray:
    """(n, width) float32 memory map of the training sample of one layer, rows in key order."""
    return np.load(Path(folder) / f"layer_{layer:02d}.npy", mmap_mode="r")


class SampleStage(MapStage):
    """--train-sae: the training sample; read() gives the folder (read_sample(folder, L) per layer)."""

    name = "sample"
    worker = SampleWorker

    def wanted(self, b) -> bool:
        return b.cfg.train_sae

    def threshold(self, b) -> tuple[float, int]:
        """(key cut-off, tokens), computed once per build."""
        if "sample" not in b.memo:
            b.memo["sample"] = threshold(b.results["plan"].cells, b.train_cfg.sample_tokens, b.cfg.seed)
        return b.memo["sample"]

    def key(self, b) -> str:
        return key_of("sample", b.results["plan"].key, b.layers, self.threshold(b)[1])

    def units(self, b) -> list[tuple[str, int]]:
        return shard_units(b.results["plan"].record)

    def kwargs(self, b, folder: Path) -> dict:
        return {"spec": b.spec, "plan_dir": str(b.results["plan"].folder), "out": str(folder),
                "cut": self.threshold(b)[0]}

    def finish(self, b, folder: Path) -> None:
        merge(folder, b.layers, len(b.results["plan"].record["shards"]), self.threshold(b)[1], b.width,
              b.cfg.keep_partials)

    def read(self, folder: Path) -> Path:
        return Path(folder)
