"""`atlas sae stats`: the statistics of a codes folder of `atlas sae encode` (a small extract run), computed by
the same map/merge functions as the build, with the whole folder as one shard (the CLI reads and checks the
gene names and the cells)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import AtlasError
from ...fsutil import atomic_dir
from ...jsonio import dumps_json
from . import features as st
from ..codes import Codes
from ..sae.encode import read_codes


def stats_of_codes(codes: Path, out: Path, names: dict, obs: pd.DataFrame, types: np.ndarray | None,
                   cfg: st.StatsConfig, meta: dict) -> dict:
    """Statistics of a codes folder (whole cells, rows of `obs`) into `out`; `names`: token id -> gene name,
    `types`: one cell type per row of obs (or None). Returns the layer's feature table."""
    record, shards = read_codes(codes)
    parts = list(shards)
    c = Codes(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in ("idx", "val", "cell", "gene")))
    unknown = np.setdiff1d(np.unique(c.gene), np.fromiter(names, np.int64))
    if unknown.size:
        raise AtlasError(f"{codes}: token id {unknown[0]} of the codes is not among the genes of "
                         f"{record.get('activations')}/tokens.parquet ({unknown.size} such token ids)")
    n_tok = np.bincount(np.asarray(c.cell, np.int64), minlength=len(obs))
    if n_tok.size > len(obs):
        raise AtlasError(f"{codes}: codes of cell {n_tok.size - 1}, but the dataset has {len(obs)} cells")
    cells = st.ShardCells(0, n_tok)
    labels = None
    if types is not None:
        labels, code = st.labels_of(pd.Series(types, dtype=object), n_tok > 0)
        cells = st.ShardCells(0, n_tok, code, len(labels))
    n_genes, F = max(names) + 1, record["n_features"]
    m = st.merge([st.map_layer(c, cells, F, n_genes, cfg.top_cells)], cfg.top_cells)
    feats = st.feature_table(m, F)
    with atomic_dir(out) as tmp:
        pq.write_table(pa.table(feats), tmp / "features.parquet", compression="zstd")
        genes = st.top_genes(m, n_genes, cfg)
        genes["gene"] = pd.Series(names).reindex(genes["token_id"]).to_numpy(dtype=object)
        pq.write_table(pa.table(genes), tmp / "feature_genes.parquet", compression="zstd")
        ids = obs.index.to_numpy().astype(str)
        pq.write_table(pa.table({"feature": m["top_f"], "cell": m["top_cell"], "activation": m["top_val"],
                                 "cell_id": ids[m["top_cell"]]}), tmp / "top_cells.parquet", compression="zstd")
        edges, hist = st.histograms(m, F, cfg.hist_bins)
        np.save(tmp / "histograms.npy", hist)
        if labels is not None:
            top = {"feature": m["top_f"], "type": cells.type_code[m["top_cell"]]}
            r = st.celltype_tests(m, F, labels, np.bincount(code[code >= 0], minlength=len(labels)), top, cfg)
            T = len(labels)
            pq.write_table(pa.table({"feature": np.repeat(np.arange(F), T), "cell_type": np.tile(labels, F),
                                     **{k: np.asarray(r[k]).ravel() for k in ("U", "auc", "p", "q", "n_cells",
                                                                              "n_firing", "n_top", "passes")}}),
                           tmp / "celltypes.parquet", compression="zstd")
        (tmp / "stats.json").write_bytes(dumps_json({"format": "feature-atlas stats 2", **meta, "config": asdict(cfg),
                                                     "tokens": int(m["tokens"]), "hist_edges": edges.tolist()},
                                                    indent=True))
    return {"tokens": int(m["tokens"]), "features": feats}
