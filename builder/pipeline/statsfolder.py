"""`atlas sae stats`: the statistics of a codes folder of `atlas sae encode` (a small extract run), computed by
the same map/merge functions as the build, with the whole folder as one shard."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import AtlasError
from ..fsutil import atomic_dir
from ..jsonio import dumps_json
from . import stats as st
from .codes import Codes
from .describe import labels_of
from .encode import read_codes


def stats_of_codes(codes: Path, out: Path, cell_type_column, top_genes, min_support, top_cells) -> tuple[dict, int]:
    import json

    import anndata

    record, shards = read_codes(codes)
    parts = list(shards)
    c = Codes(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in ("idx", "val", "cell", "gene")))
    acts_dir = Path(record["activations"])
    extract = json.loads((acts_dir / "extract.json").read_text())
    tokens = pq.read_table(acts_dir / "tokens.parquet", columns=["token_id", "gene"]).to_pandas().drop_duplicates()
    obs = anndata.read_h5ad(extract["dataset"]["path"], backed="r").obs.iloc[: extract["dataset"]["cells"]]
    n_cells = len(obs)
    n_tok = np.bincount(np.asarray(c.cell, np.int64), minlength=n_cells)
    cells = st.ShardCells(0, n_tok)
    labels = None
    if cell_type_column is not None:
        if cell_type_column not in obs.columns:
            raise AtlasError(f"{extract['dataset']['path']}: obs has no column {cell_type_column!r} "
                             f"(has: {', '.join(map(str, obs.columns)) or 'none'})")
        labels, code = labels_of(obs[cell_type_column].astype(object), n_tok > 0)
        cells = st.ShardCells(0, n_tok, code, len(labels))
    cfg = st.StatsConfig(top_genes=top_genes, min_support=min_support, top_cells=top_cells)
    n_genes, F = int(tokens["token_id"].max()) + 1, record["n_features"]
    m = st.merge([st.map_layer(c, cells, F, n_genes, top_cells)], top_cells)
    feats = st.feature_table(m, F)
    with atomic_dir(out) as tmp:
        pq.write_table(pa.table(feats), tmp / "features.parquet", compression="zstd")
        genes = st.top_genes(m, n_genes, cfg)
        genes["gene"] = pd.Series(tokens.set_index("token_id")["gene"]).reindex(genes["token_id"]).to_numpy(dtype=object)
        pq.write_table(pa.table(genes), tmp / "feature_genes.parquet", compression="zstd")
        names = obs.index.to_numpy().astype(str)
        pq.write_table(pa.table({"feature": m["top_f"], "cell": m["top_cell"], "activation": m["top_val"],
                                 "cell_id": names[m["top_cell"]]}), tmp / "top_cells.parquet", compression="zstd")
        edges, hist = st.histograms(m, F, 24)
        np.save(tmp / "histograms.npy", hist)
        if labels is not None:
            top = {"feature": m["top_f"], "type": cells.type_code[m["top_cell"]]}
            r = st.celltype_tests(m, F, labels, np.bincount(code[code >= 0], minlength=len(labels)), top, cfg)
            T = len(labels)
            pq.write_table(pa.table({"feature": np.repeat(np.arange(F), T), "cell_type": np.tile(labels, F),
                                     **{k: np.asarray(r[k]).ravel() for k in ("U", "auc", "p", "q", "n_cells",
                                                                              "n_firing", "n_top", "passes")}}),
                           tmp / "celltypes.parquet", compression="zstd")
        (tmp / "stats.json").write_bytes(dumps_json({"format": "feature-atlas stats 2", "layer": record["layer"],
                                                     "codes": str(codes), "config": asdict(cfg),
                                                     "tokens": int(m["tokens"]), "hist_edges": edges.tolist()},
                                                    indent=True))
    return {**record, "tokens": int(m["tokens"])}, int(feats["alive"].sum())
