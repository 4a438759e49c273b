"""Cell-map shards: the dataset's display cells in 2-D, and values to colour them by.

  cells.json              {x, y (0..1023), type (index into types): one value per display cell; types, embedding}
  cellact/L/B.json        per feature F of bucket B of layer L: {F: {cells, values, max}}
  cellexpr/KK.json        per gene of two-character key KK (indexes.gene_keys): {gene: {cells, values, max}}
A cell is its row number in cells.json; values (1..255) are quantized to 8 bits against the feature's (or gene's)
maximum `max`, enough for a colour scale; a cell not listed has no activation (expression).
"""

from __future__ import annotations

import numpy as np

from .indexes import gene_keys

GRID = 1023


def _quantize(cells: np.ndarray, values: np.ndarray) -> dict:
    top = float(values.max()) if len(values) else 0.0
    if top <= 0:
        return {"cells": cells.tolist(), "values": [0] * len(values), "max": 0.0}
    return {"cells": cells.tolist(), "values": np.clip(np.rint(values / top * 255), 1, 255).astype(int).tolist(),
            "max": float(f"{top:.4g}")}


def _runs(keys: list, cells: np.ndarray, values: np.ndarray):
    """(key, cells, values) per run of equal keys in a table sorted by key."""
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            yield keys[start], cells[start:i], values[start:i]
            start = i


def cell_shards(atlas, bucket: int) -> dict[str, object]:
    if not atlas.has("cells") or atlas.table("cells").num_rows == 0:
        return {}
    t = atlas.table("cells")
    x, y = (t.column(c).to_numpy().astype(np.float64) for c in ("x", "y"))

    def q(v):
        lo, hi = v.min(), v.max()
        return np.rint((v - lo) / ((hi - lo) or 1.0) * GRID).astype(int).tolist()

    names = t.column("cell_type").to_pylist()
    types = sorted({n for n in names if n is not None})
    pos = {n: i for i, n in enumerate(types)}
    # Cells are addressed by their row in cells.json, so shards need no id lookup.
    row_of = {c: i for i, c in enumerate(t.column("cell").to_pylist())}
    out: dict[str, object] = {"cells.json": {
        "x": q(x), "y": q(y), "type": [pos.get(n, -1) for n in names], "types": types,
        "embedding": (atlas.manifest.get("dataset", {}).get("cell_map") or {}).get("embedding")}}
    if atlas.has("cell_activations"):
        # Every bucket has a file, so a feature page never asks for one that is not there.
        f = atlas.table("features")
        for lay, feat in zip(f.column("layer").to_pylist(), f.column("feature").to_pylist()):
            out.setdefault(f"cellact/{lay}/{feat // bucket}.json", {})
        a = atlas.table("cell_activations")
        keys = list(zip(a.column("layer").to_pylist(), a.column("feature").to_pylist()))
        cells = np.array([row_of.get(c, -1) for c in a.column("cell").to_pylist()])
        for (lay, f), cs, vs in _runs(keys, cells, a.column("value").to_numpy()):
            ok = cs >= 0
            out.setdefault(f"cellact/{lay}/{f // bucket}.json", {})[str(f)] = _quantize(cs[ok], vs[ok])
    if atlas.has("cell_expression"):
        e = atlas.table("cell_expression")
        cells = np.array([row_of.get(c, -1) for c in e.column("cell").to_pylist()])
        per_key = {gene_keys(g)[1]: {} for g in set(atlas.table("feature_genes").column("gene").to_pylist())}
        for gene, cs, vs in _runs(e.column("gene").to_pylist(), cells, e.column("value").to_numpy()):
            ok = cs >= 0
            per_key.setdefault(gene_keys(gene)[1], {})[gene] = _quantize(cs[ok], vs[ok])
        out.update({f"cellexpr/{k}.json": v for k, v in per_key.items()})
    return out
