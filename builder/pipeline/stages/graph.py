"""The graph stage, per layer: co-activation modules with their within-gene null, the 2-D map, the SVD comparison
and the PCA baseline's gene lists, from the merged counts and sums (graphs/).

Stage folder GRAPH-LL/: graph.npz (membership, map xy, per-feature SVD shares and R^2), graph.json (module
summaries of the real graph and of the null, SVD summary), pca_genes.parquet (component, sign, rank, token_id,
gene, score). read() gives Graph.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from ...jsonio import dumps_json
from ..cache import key_of
from ..graphs import modules as graphs
from ..sae.topk import load_sae
from ..stage import LayerStage, folder_key

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def decoder(path: Path) -> np.ndarray:
    return load_sae(path).W_dec.detach().numpy()


def _summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {}
    return {"mean": float(v.mean()), **{f"p{int(q * 100)}": float(np.quantile(v, q)) for q in QUANTILES}}


@dataclass(frozen=True)
class Graph:
    folder: Path
    arrays: dict    # membership, xy, and the SVD arrays per feature
    summary: dict   # graph.json: modules, modules_null, svd, svd_random_expectation

    def pca_genes(self) -> pd.DataFrame:
        return pq.read_table(self.folder / "pca_genes.parquet").to_pandas()


class GraphStage(LayerStage):
    name = "graph"

    def key(self, b, unit) -> str:
        return key_of("graph", folder_key(b.results["stats"].folder), b.results["sae"].keys[unit[0]],
                      asdict(b.cfg.graphs))

    def run(self, b, unit, out: Path) -> None:
        L, cfg, stats = unit[0], b.cfg.graphs, b.results["stats"]
        record = b.results["plan"].record
        feats = stats.table(L, "features")
        counts = stats.counts(L)
        F, G = len(feats), record["vocab_size"]
        fire = feats["fire_count"].to_numpy()
        A, n_g = graphs.gene_firing(counts, F, G)
        E = graphs.within_gene_expectation(A, A, n_g)
        C = graphs.count_matrix(counts["co_key"], counts["co_n"], F, F)
        T = int(n_g.sum())
        real, null = graphs.modules_with_null(C, E, fire, T, cfg)
        genes = stats.table(L, "feature_genes")
        profile = sp.csr_matrix((genes["score"].clip(lower=0).to_numpy() + 1e-12,
                                 (genes["feature"].to_numpy(), genes["token_id"].to_numpy())), shape=(F, G))
        xy = graphs.feature_map(profile, cfg)
        dense = b.results["stream"].dense(L)
        svd = graphs.svd_comparison(decoder(b.results["sae"].paths[L]), dense, cfg.seed)
        pca = graphs.pca_gene_lists(dense, cfg.pca_components, b.cfg.stats.top_genes, b.cfg.stats.min_support)
        pca["gene"] = b.results["plan"].gene_names().reindex(pca["token_id"]).to_numpy(dtype=object)
        pq.write_table(pa.table(pca), out / "pca_genes.parquet", compression="zstd")
        np.savez(out / "graph.npz", membership=real["membership"], xy=xy, **svd)
        d = dense["s1"].size
        alive = fire > 0
        summary = {"modules": {k: v for k, v in real.items() if k != "membership"},
                   "modules_null": {k: v for k, v in null.items() if k != "membership"},
                   "svd": {k: _summary(v[alive]) for k, v in svd.items()},
                   "svd_random_expectation": {f"share_{k}": k / d for k in graphs.SVD_K if k <= d}}
        (out / "graph.json").write_bytes(dumps_json(summary, indent=True))

    def read(self, folder: Path) -> Graph:
        folder = Path(folder)
        with np.load(folder / "graph.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return Graph(folder, arrays, json.loads((folder / "graph.json").read_text()))
