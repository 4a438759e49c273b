"""`atlas sae stats`: the statistics of a codes folder of `atlas sae encode` (a small extract run), computed by
the same map/merge functions as the build, with the whole folder as one shard. stats_command reads and checks the
gene names (the activations folder codes.json names) and the cells (the dataset its extract.json names)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import AtlasError
from ...fsutil import atomic_dir, check_disjoint, read_parquet
from ...jsonio import dumps_json, read_json
from . import features as st
from ..codes import Codes
from ..sae.encode import read_codes


def stats_command(codes: Path, out: Path, cell_type_column: str | None, cfg: st.StatsConfig) -> dict:
    """`atlas sae stats`: the statistics of the codes folder `codes` into `out`, with the gene names of the
    activations folder codes.json names and the cells of the dataset its extract.json names, each file checked,
    and `out` refused when it overlaps any of them. Returns the layer, its alive and total features, its tokens."""
    codes, out = Path(codes), Path(out)
    record, _ = read_codes(codes)
    if not isinstance(record.get("activations"), str):
        raise AtlasError(f"{codes / 'codes.json'}: field 'activations' must name the activations folder")
    acts_dir = Path(record["activations"])
    extract = read_json(acts_dir / "extract.json")
    ds = extract.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("path"), str) or not isinstance(ds.get("cells"), int):
        raise AtlasError(f"{acts_dir / 'extract.json'}: field 'dataset' must be an object with a path and cells")
    h5ad = Path(ds["path"])
    check_disjoint([("--out", out)], [("--codes", codes), ("the activations of codes.json", acts_dir),
                                      ("the dataset of extract.json", h5ad)])
    tokens = read_parquet(acts_dir / "tokens.parquet", ["token_id", "gene"]).to_pandas().drop_duplicates()
    names = dict(zip(tokens["token_id"].tolist(), tokens["gene"].tolist()))
    obs = _read_obs(h5ad).iloc[: ds["cells"]]
    types = None
    if cell_type_column is not None:
        if cell_type_column not in obs.columns:
            raise AtlasError(f"{h5ad}: obs has no column {cell_type_column!r} "
                             f"(has: {', '.join(map(str, obs.columns)) or 'none'})")
        types = obs[cell_type_column].astype(str).to_numpy()
    result = stats_of_codes(codes, out, names, obs, types, cfg,
                            {"layer": record["layer"], "codes": str(codes), "cell_type_column": cell_type_column})
    alive = result["features"]["alive"]
    return {"layer": record["layer"], "alive": int(alive.sum()), "n_features": len(alive), "tokens": result["tokens"]}


def _read_obs(path: Path) -> pd.DataFrame:
    import anndata

    if not path.is_file():
        raise AtlasError(f"{path}: dataset not found (named by extract.json)")
    try:
        return anndata.read_h5ad(path, backed="r").obs
    except Exception as e:  # h5py and anndata raise many kinds for a damaged file
        raise AtlasError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from None


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
