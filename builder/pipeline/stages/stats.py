"""The statistics stage: one task per layer (and per adjacent pair of layers) maps every code shard
(stats.map_layer, stats.map_pair) and folds the partials in shard order (stats.merge), then finalizes.

A partial of the feature x gene sums or of the co-occurrence counts is nearly as large as its merged result, so
partials are folded in memory as they are made, never written per shard: the cache holds the codes and the
merged results only, and a task's memory is one shard's codes plus one layer's merged matrices, whatever the
number of cells. The fold runs in shard order in every task, so any engine gives the same bytes; a killed stage
resumes at the first unfinished task.

Stage folder STATS/merged/:
  layer_LL/        features.parquet, feature_genes.parquet, top_cells.parquet, celltypes.parquet (with a
                   cell-type column), histograms.npy, counts.npz (co-occurrence, feature x gene firing, tokens
                   per gene), stats.json
  cross_LL_MM/     cross.npz: co-firing counts of adjacent layers LL and MM
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ...jsonio import dumps_json
from ..statistics import features as st
from ..cache import commit_once, is_done, key_of
from ..codes import read_layer, shard_name
from ..stage import MapStage, folder_key
from .plan import read_plan


def tasks(layers: list[int]) -> list[tuple[int, ...]]:
    """The stage's units of work: (L,) per layer, then (a, b) per adjacent pair."""
    return [(L,) for L in layers] + list(zip(layers, layers[1:]))


def task_dir(task: tuple[int, ...]) -> str:
    return f"merged/layer_{task[0]:02d}" if len(task) == 1 else f"merged/cross_{task[0]:02d}_{task[1]:02d}"


class StatsWorker:
    """`worker(t)` computes task t of `tasks(layers)` from every code shard and commits its merged folder."""

    def __init__(self, stream: str, plan_dir: str, out: str, layers: list, n_features: dict, cfg: dict):
        self.plan, self.cells_table = read_plan(Path(plan_dir))
        self.plan_dir, self.stream, self.out = Path(plan_dir), Path(stream), Path(out)
        self.layers = [int(L) for L in layers]
        self.n_features, self.cfg = {int(k): v for k, v in n_features.items()}, st.StatsConfig(**cfg)
        cells = self.cells_table
        usable = cells["n_tokens"].to_numpy() > 0
        self.n_tokens = cells["n_tokens"].to_numpy()
        self.types = st.labels_of(cells["cell_type"], usable) if cells["cell_type"].notna().any() else None
        self.donors = st.labels_of(cells["donor"], usable) if cells["donor"].notna().any() else None

    def cells(self, start: int, stop: int) -> st.ShardCells:
        kw = {}
        if self.types:
            kw.update(type_code=self.types[1][start:stop], n_types=len(self.types[0]))
        if self.types and self.donors:
            kw.update(donor_code=self.donors[1][start:stop], n_donors=len(self.donors[0]))
        return st.ShardCells(start, self.n_tokens[start:stop], **kw)

    def shards(self):
        for s, (start, stop, _) in enumerate(self.plan["shards"]):
            yield self.stream / "shards" / shard_name(s), start, stop

    def __call__(self, t: int) -> int:
        task = tasks(self.layers)[t]
        target = self.out / task_dir(task)
        if is_done(target):
            return self.plan["tokens"]
        top = self.cfg.top_cells
        if len(task) == 1:
            L, F = task[0], self.n_features[task[0]]
            parts = (st.map_layer(read_layer(src, L), self.cells(a, b), F, self.plan["vocab_size"], top)
                     for src, a, b in self.shards())
            m = st.merge(parts, top)
            with commit_once(target) as tmp:
                _write_layer(tmp, m, F, self.plan, self.cells_table, self._names(), self, self.cfg)
        else:
            a, b = task
            fa, fb = self.n_features[a], self.n_features[b]
            m = st.merge((st.map_pair(read_layer(src, a), read_layer(src, b), fa, fb) for src, _, _ in self.shards()), top)
            with commit_once(target) as tmp:
                np.savez(tmp / "cross.npz", key=_narrow(m.get("cx_key", np.zeros(0, np.int64))),
                         n=_narrow(m.get("cx_n", np.zeros(0, np.int64))))
        return self.plan["tokens"]

    def _names(self) -> pd.Series:
        return pq.read_table(self.plan_dir / "genes.parquet").to_pandas().set_index("token_id")["gene"]


def finish(folder: Path, layers: list[int], cfg: st.StatsConfig) -> None:
    """The stage's record, once every task has committed."""
    (Path(folder) / "merged" / "stats.json").write_bytes(
        dumps_json({"layers": layers, "config": asdict(cfg)}, indent=True))


def _write_layer(out: Path, m: dict, n_features: int, plan: dict, cells: pd.DataFrame, names, worker, cfg) -> None:
    n_genes = plan["vocab_size"]
    pq.write_table(pa.table(st.feature_table(m, n_features)), out / "features.parquet", compression="zstd")
    edges, hist = st.histograms(m, n_features, cfg.hist_bins)
    np.save(out / "histograms.npy", hist)
    genes = st.top_genes(m, n_genes, cfg)
    genes["gene"] = names.reindex(genes["token_id"]).to_numpy(dtype=object)
    pq.write_table(pa.table(genes), out / "feature_genes.parquet", compression="zstd")
    top = {"feature": m["top_f"], "cell": m["top_cell"], "activation": m["top_val"]}
    rank = np.arange(top["feature"].size) - np.searchsorted(top["feature"], top["feature"], side="left") + 1
    top_table = dict(top, rank=rank, obs_name=cells["obs_name"].to_numpy(dtype=object)[top["cell"]],
                     cell_type=cells["cell_type"].to_numpy(dtype=object)[top["cell"]])
    pq.write_table(pa.table(top_table), out / "top_cells.parquet", compression="zstd")
    if worker.types:
        _write_celltypes(out, m, n_features, cells, worker, top, cfg)
    np.savez(out / "counts.npz", **{k: _narrow(m[k]) for k in ("co_key", "co_n", "fg_key", "fg_n", "gene_ids", "gene_n")})
    (out / "stats.json").write_bytes(dumps_json({"tokens": int(m["tokens"]), "alive": int((m["fire"] > 0).sum()),
                                                 "hist_edges": edges.tolist(), "n_genes": n_genes}, indent=True))


def _narrow(a: np.ndarray) -> np.ndarray:
    """int32 when every value fits (the merged counts are a good part of the cache); readers widen them."""
    a = np.asarray(a)
    return a.astype(np.int32) if a.size and a.dtype.kind == "i" and -2**31 <= a.min() and a.max() < 2**31 else a


def _write_celltypes(out, m, n_features, cells, worker, top, cfg) -> None:
    labels, code = worker.types
    type_cells = np.bincount(code[code >= 0], minlength=len(labels))
    donors = None
    if worker.donors:
        dl, dc = worker.donors
        ok = (dc >= 0) & (code >= 0)
        table = np.zeros((len(dl), len(labels)), np.int64)
        np.add.at(table, (dc[ok], code[ok]), 1)
        donors = {"cells": table}
    top = dict(top, type=code[top["cell"]])
    r = st.celltype_tests(m, n_features, labels, type_cells, top, cfg, donors)
    T = len(labels)
    cols = {"feature": np.repeat(np.arange(n_features), T), "cell_type": np.tile(np.asarray(labels, object), n_features)}
    for k in ("U", "auc", "p", "q", "n_cells", "n_firing", "n_top", "passes", "p_donor", "q_donor", "n_donors"):
        if k in r:
            cols[k] = np.asarray(r[k]).ravel()
    pq.write_table(pa.table(cols), out / "celltypes.parquet", compression="zstd")


def layer_dir(folder: Path, layer: int) -> Path:
    return Path(folder) / "merged" / f"layer_{layer:02d}"


@dataclass(frozen=True)
class Stats:
    """The statistics stage's merged results, per layer and per adjacent pair."""

    folder: Path

    def table(self, layer: int, name: str) -> pd.DataFrame:
        """A merged table of one layer: features, feature_genes or top_cells."""
        return pq.read_table(layer_dir(self.folder, layer) / f"{name}.parquet").to_pandas()

    def celltypes(self, layer: int) -> pd.DataFrame | None:
        """Every (feature, cell type) test of the layer; None without a cell-type column."""
        path = layer_dir(self.folder, layer) / "celltypes.parquet"
        return pq.read_table(path).to_pandas() if path.is_file() else None

    def counts(self, layer: int) -> dict:
        """Co-occurrence, feature x gene firing and tokens per gene (counts.npz), widened to int64."""
        with np.load(layer_dir(self.folder, layer) / "counts.npz") as z:
            return {k: z[k].astype(np.int64) for k in z.files}

    def cross(self, a: int, b: int) -> dict:
        with np.load(self.folder / task_dir((a, b)) / "cross.npz") as z:
            return {k: z[k].astype(np.int64) for k in z.files}

    def n_features(self, layer: int) -> int:
        return len(self.table(layer, "features"))

    def universe(self, names: pd.Series, layer: int, min_support: int) -> list[str]:
        """The genes that can enter a top list of the layer: at least min_support tokens in the data."""
        counts = self.counts(layer)
        return names.reindex(counts["gene_ids"][counts["gene_n"] >= min_support]).dropna().tolist()


class StatsStage(MapStage):
    name = "stats"
    worker = StatsWorker
    unit = "tasks"

    def key(self, b) -> str:
        return key_of("stats", folder_key(b.results["stream"].folder), asdict(b.cfg.stats))

    def units(self, b) -> list[tuple[str, int]]:
        return [(task_dir(t), b.results["plan"].record["tokens"]) for t in tasks(b.layers)]

    def kwargs(self, b, folder: Path) -> dict:
        return {"stream": str(b.results["stream"].folder), "plan_dir": str(b.results["plan"].folder),
                "out": str(folder), "layers": b.layers, "n_features": {L: b.sae_width(L) for L in b.layers},
                "cfg": asdict(b.cfg.stats)}

    def finish(self, b, folder: Path) -> None:
        finish(folder, b.layers, b.cfg.stats)

    def read(self, folder: Path) -> Stats:
        return Stats(Path(folder))
