"""`atlas extract`: per-layer activations of a small run written to disk, for inspection and SAE training.

Layout of OUT/ (documented in docs/models.md, "Activations folder"):
  layer_LL.npy     float32, tokens x width: the residual stream after transformer layer LL (0-based)
  tokens.parquet   one row per activation row, same order (cells longest first, then the model's token
                   order): cell (dataset row), cell_id (obs name), token_id, gene (symbol or Ensembl id)
  extract.json     model, checkpoint, dataset, layers, counts, gene matching, seed, ignored checkpoint keys
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ... import __version__
from ...models.dataset import read_h5ad
from ...errors import AtlasError
from ...fsutil import atomic_dir
from ...jsonio import read_json
from ...models import check_layers, check_unique_genes, default_batch_size, load, pick_device, stream


def layer_file(layer: int) -> str:
    return f"layer_{layer:02d}.npy"


def extract(family: str, checkpoint: Path, data: Path, out: Path, layers: Sequence[int] | None = None,
            max_cells: int | None = None, batch_size: int | None = None, device: str | None = "cpu",
            gene_column: str | None = None, seed: int = 0,
            progress: Callable[[int], None] | None = None, started: Callable[[int], None] | None = None) -> dict:
    """Run the model over the dataset and write OUT/ atomically. Returns the extract.json record."""
    if batch_size is not None and batch_size < 1:
        raise AtlasError(f"--batch-size {batch_size}: must be at least 1")
    if max_cells is not None and max_cells < 1:
        raise AtlasError(f"--max-cells {max_cells}: must be at least 1")
    adapter = load(family, checkpoint, seed=seed)
    layers = check_layers(adapter, layers)
    dataset = read_h5ad(data, max_cells=max_cells)
    prepared = adapter.prepare(dataset, gene_column)
    check_unique_genes(prepared)
    dev = pick_device(device)
    batch_size = batch_size or default_batch_size(dev)
    if started:
        started(dataset.n_cells)

    with atomic_dir(out) as tmp:
        raw = {L: open(tmp / f"layer_{L:02d}.f32", "wb") for L in layers}
        cells, tokens = [], []
        try:
            for chunk in stream(adapter, prepared, layers, batch_size, dev):
                for L in layers:
                    raw[L].write(np.ascontiguousarray(chunk.acts[L], dtype="<f4").tobytes())
                cells.append(chunk.cells)
                tokens.append(chunk.genes)
                if progress:
                    progress(chunk.n_cells)
        finally:
            for f in raw.values():
                f.close()
        cell = np.concatenate(cells) if cells else np.zeros(0, np.int64)
        token = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
        if cell.size == 0:
            raise AtlasError(f"{data}: no cell has a gene the model knows, so there is nothing to extract")
        for L in layers:  # raw rows -> .npy: header, then the rows copied in blocks
            src = tmp / f"layer_{L:02d}.f32"
            with open(tmp / layer_file(L), "wb") as f, open(src, "rb") as r:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": (int(cell.size), adapter.width)})
                shutil.copyfileobj(r, f, 1 << 22)
            src.unlink()
        uniq, inverse = np.unique(token, return_inverse=True)
        names = np.array([adapter.gene_names[int(t)] for t in uniq], dtype=object)
        obs_names = dataset.obs.index.to_numpy().astype(str)
        table = pa.table({
            "cell": pa.array(cell, pa.int64()),
            "cell_id": pa.array(obs_names[cell]),
            "token_id": pa.array(token, pa.int64()),
            "gene": pa.array(names[inverse]),
        })
        pq.write_table(table, tmp / "tokens.parquet", compression="zstd")
        record = {
            "format": "feature-atlas activations 1",
            "builder_version": __version__,
            "model": {"family": family, "name": adapter.name, "checkpoint": str(checkpoint),
                      "n_layers": adapter.n_layers, "width": adapter.width, "max_tokens": adapter.max_tokens,
                      "ignored_checkpoint_keys": adapter.ignored_keys, "head_problem": adapter.head_problem},
            "dataset": {"path": str(data), "cells": dataset.n_cells, "counts": dataset.counts_source,
                        **prepared.report},
            "layers": layers,
            "tokens": int(cell.size),
            "cells_with_tokens": int(np.unique(cell).size),
            "seed": seed,
            "device": dev.type,
            "batch_size": batch_size,
            "files": {str(L): layer_file(L) for L in layers},
        }
        (tmp / "extract.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_activations(folder: Path, layer: int, mmap: bool = True) -> tuple[np.ndarray, dict]:
    """(tokens x width float32 array, extract.json record) of one layer written by `extract`."""
    folder = Path(folder)
    meta = folder / "extract.json"
    if not meta.is_file():
        raise AtlasError(f"{folder}: not an activations folder (no extract.json; write one with `atlas extract`)")
    record = read_json(meta)
    files = record.get("files")
    name = files.get(str(layer)) if isinstance(files, dict) else None
    if not isinstance(name, str):
        raise AtlasError(f"{folder}: layer {layer} was not extracted (layers: {record.get('layers')})")
    try:
        acts = np.load(folder / name, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError) as e:
        raise AtlasError(f"{folder / name}: not a readable .npy file ({e})") from None
    if acts.ndim != 2 or acts.shape[0] != record.get("tokens"):
        raise AtlasError(f"{folder / name}: shape {acts.shape}, extract.json expects {record.get('tokens')} tokens x width")
    return acts, record
