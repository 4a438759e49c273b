"""The statistics stage: map over code shards (stats.map_layer, stats.map_pair), merge in shard order, finalize.

Stage folder STATS/:
  shards/NNNNN/LL.npz, LL-MM.npz   partials of one shard (deleted after the merge unless kept)
  merged/layer_LL/                 features.parquet, feature_genes.parquet, top_cells.parquet,
                                   celltypes.parquet (with a cell-type column), histograms.npy,
                                   counts.npz (co-occurrence, feature x gene firing, tokens per gene),
                                   stats.json
  merged/cross_LL_MM.npz           co-firing counts of adjacent layers LL and MM
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..jsonio import dumps_json
from . import stats as st
from .cache import commit_once, is_done
from .codes import read_layer, shard_name
from .plan import read_plan


def labels_of(values: pd.Series, usable: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted labels, code per cell, -1 for missing or cells without gene tokens)."""
    v = values.to_numpy(dtype=object)
    ok = pd.notna(values).to_numpy() & usable
    labels = sorted({str(x) for x in v[ok]})
    index = {x: i for i, x in enumerate(labels)}
    return labels, np.array([index[str(x)] if o else -1 for x, o in zip(v, ok)], np.int64)


class StatsWorker:
    def __init__(self, stream: str, plan_dir: str, out: str, layers: list, n_features: dict, top_cells: int):
        self.plan, cells = read_plan(Path(plan_dir))
        self.stream, self.out, self.layers = Path(stream), Path(out), [int(L) for L in layers]
        self.n_features, self.top_cells = {int(k): v for k, v in n_features.items()}, top_cells
        usable = cells["n_tokens"].to_numpy() > 0
        self.n_tokens = cells["n_tokens"].to_numpy()
        self.types = labels_of(cells["cell_type"], usable) if cells["cell_type"].notna().any() else None
        self.donors = labels_of(cells["donor"], usable) if cells["donor"].notna().any() else None

    def cells(self, start: int, stop: int) -> st.ShardCells:
        kw = {}
        if self.types:
            kw.update(type_code=self.types[1][start:stop], n_types=len(self.types[0]))
        if self.types and self.donors:
            kw.update(donor_code=self.donors[1][start:stop], n_donors=len(self.donors[0]))
        return st.ShardCells(start, self.n_tokens[start:stop], **kw)

    def __call__(self, shard: int) -> int:
        target = self.out / "shards" / shard_name(shard)
        start, stop, tokens = self.plan["shards"][shard]
        if is_done(target):
            return tokens
        src = self.stream / "shards" / shard_name(shard)
        cells = self.cells(start, stop)
        n_genes = self.plan["vocab_size"]
        with commit_once(target) as tmp:
            for L in self.layers:
                part = st.map_layer(read_layer(src, L), cells, self.n_features[L], n_genes, self.top_cells)
                np.savez(tmp / f"{L:02d}.npz", **part)
            for a, b in zip(self.layers, self.layers[1:]):
                part = st.map_pair(read_layer(src, a), read_layer(src, b), self.n_features[a], self.n_features[b])
                np.savez(tmp / f"{a:02d}-{b:02d}.npz", **part)
        return tokens


def _partials(folder: Path, n_shards: int, name: str):
    for s in range(n_shards):
        with np.load(folder / "shards" / shard_name(s) / name) as z:
            yield {k: z[k] for k in z.files}


def merge(folder: Path, plan_dir: Path, layers: list[int], n_features: dict, cfg: st.StatsConfig,
          keep_partials: bool = True) -> None:
    folder = Path(folder)
    target = folder / "merged"
    if is_done(target):
        return
    plan, cells = read_plan(plan_dir)
    n = len(plan["shards"])
    names = pq.read_table(Path(plan_dir) / "genes.parquet").to_pandas().set_index("token_id")["gene"]
    worker = StatsWorker(str(folder), str(plan_dir), str(folder), layers, n_features, cfg.top_cells)
    with commit_once(target) as tmp:
        for L in layers:
            m = st.merge(_partials(folder, n, f"{L:02d}.npz"), cfg.top_cells)
            _write_layer(tmp / f"layer_{L:02d}", m, n_features[L], plan, cells, names, worker, cfg)
        for a, b in zip(layers, layers[1:]):
            m = st.merge(_partials(folder, n, f"{a:02d}-{b:02d}.npz"), cfg.top_cells)
            np.savez(tmp / f"cross_{a:02d}_{b:02d}.npz", key=m["cx_key"], n=m["cx_n"])
    if not keep_partials:
        for s in range(n):
            for p in (folder / "shards" / shard_name(s)).glob("*.npz"):
                p.unlink()


def _write_layer(out: Path, m: dict, n_features: int, plan: dict, cells: pd.DataFrame, names, worker, cfg) -> None:
    out.mkdir()
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
    np.savez(out / "counts.npz", co_key=m["co_key"], co_n=m["co_n"], fg_key=m["fg_key"], fg_n=m["fg_n"],
             gene_ids=m["gene_ids"], gene_n=m["gene_n"])
    (out / "stats.json").write_bytes(dumps_json({"tokens": int(m["tokens"]), "alive": int((m["fire"] > 0).sum()),
                                                 "hist_edges": edges.tolist(), "n_genes": n_genes}, indent=True))


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


def read_table(folder: Path, layer: int, name: str) -> pd.DataFrame:
    """A merged table of one layer: features, feature_genes, top_cells or celltypes."""
    return pq.read_table(layer_dir(folder, layer) / f"{name}.parquet").to_pandas()


def read_counts(folder: Path, layer: int) -> dict:
    with np.load(layer_dir(folder, layer) / "counts.npz") as z:
        return {k: z[k] for k in z.files}


def read_cross(folder: Path, a: int, b: int) -> dict:
    with np.load(Path(folder) / "merged" / f"cross_{a:02d}_{b:02d}.npz") as z:
        return {k: z[k] for k in z.files}
