"""The graph stages: per layer (modules with their within-gene null, map, SVD comparison, PCA baseline gene
lists) and per adjacent pair (cross-layer edges, decoder-cosine matches), from the merged counts and sums.

graph-LL/: graph.npz (membership, map xy, per-feature SVD shares and R^2), graph.json (module summaries of
the real graph and of the null, SVD summary), pca_genes.parquet (component, sign, rank, token_id, gene, score)
cross-LL-MM/: cross.npz (edges and decoder matches), cross.json (counts and rates)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from ...jsonio import dumps_json
from . import stats as describe
from ..graphs import modules as graphs
from ..model.dense import read_dense

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _decoder(path: Path) -> np.ndarray:
    from ..sae.topk import load_sae

    return load_sae(path).W_dec.detach().numpy()


def _summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {}
    return {"mean": float(v.mean()), **{f"p{int(q * 100)}": float(np.quantile(v, q)) for q in QUANTILES}}


def graph_stage(L: int, pdir: Path, tdir: Path, sdir: Path, sae: Path, record: dict, cfg: graphs.GraphConfig, scfg, out: Path):
    feats = describe.read_table(tdir, L, "features")
    counts = describe.read_counts(tdir, L)
    F, G, T = len(feats), record["vocab_size"], int(record["tokens"])
    fire = feats["fire_count"].to_numpy()
    A, n_g = graphs.gene_firing(counts, F, G)
    E = graphs.within_gene_expectation(A, A, n_g)
    C = graphs.count_matrix(counts["co_key"], counts["co_n"], F, F)
    T = int(n_g.sum())
    real, null = graphs.modules_with_null(C, E, fire, T, cfg)
    genes = describe.read_table(tdir, L, "feature_genes")
    profile = sp.csr_matrix((genes["score"].clip(lower=0).to_numpy() + 1e-12,
                             (genes["feature"].to_numpy(), genes["token_id"].to_numpy())), shape=(F, G))
    xy = graphs.feature_map(profile, cfg)
    dense = read_dense(sdir, L)
    svd = graphs.svd_comparison(_decoder(sae), dense, cfg.seed)
    pca = graphs.pca_gene_lists(dense, cfg.pca_components, scfg.top_genes, scfg.min_support)
    names = pq.read_table(Path(pdir) / "genes.parquet").to_pandas().set_index("token_id")["gene"]
    pca["gene"] = names.reindex(pca["token_id"]).to_numpy(dtype=object)
    pq.write_table(pa.table(pca), out / "pca_genes.parquet", compression="zstd")
    np.savez(out / "graph.npz", membership=real["membership"], xy=xy, **svd)
    d = dense["s1"].size
    alive = fire > 0
    summary = {"modules": {k: v for k, v in real.items() if k != "membership"},
               "modules_null": {k: v for k, v in null.items() if k != "membership"},
               "svd": {k: _summary(v[alive]) for k, v in svd.items()},
               "svd_random_expectation": {f"share_{k}": k / d for k in graphs.SVD_K if k <= d}}
    (out / "graph.json").write_bytes(dumps_json(summary, indent=True))


def cross_stage(a: int, b: int, tdir: Path, sae_a: Path, sae_b: Path, record: dict, cfg: graphs.GraphConfig,
                out: Path):
    G = record["vocab_size"]
    fa = describe.read_table(tdir, a, "features")["fire_count"].to_numpy()
    fb = describe.read_table(tdir, b, "features")["fire_count"].to_numpy()
    ca, cb = describe.read_counts(tdir, a), describe.read_counts(tdir, b)
    A, n_g = graphs.gene_firing(ca, len(fa), G)
    B, _ = graphs.gene_firing(cb, len(fb), G)
    E = graphs.within_gene_expectation(A, B, n_g)
    cx = describe.read_cross(tdir, a, b)
    C = graphs.count_matrix(cx["key"], cx["n"], len(fa), len(fb))
    res = graphs.cross_layer(C, E, fa, fb, int(n_g.sum()), cfg)
    ia, ib, cos = graphs.decoder_matches(_decoder(sae_a), _decoder(sae_b), cfg.cosine)
    np.savez(out / "cross.npz", a=res["a"], b=res["b"], count=res["count"], log_ratio=res["log_ratio"], p=res["p"],
             cos_a=ia, cos_b=ib, cos=cos)
    (out / "cross.json").write_bytes(dumps_json(
        {k: res[k] for k in ("raw_edges", "expected_raw_edges", "edges", "tested")} | {"decoder_matches": int(ia.size)},
        indent=True))


def module_rows(gdir: Path, adir: Path, L: int) -> list[dict]:
    """Modules of a layer labelled by the most common labels of their members."""
    labels = pq.read_table(Path(adir) / "annotation" / "labels.parquet").to_pandas()
    lab = labels[labels["layer"] == L].dropna(subset=["label"])
    with np.load(Path(gdir) / "graph.npz") as z:
        membership = z["membership"]
    return graphs.module_labels(membership, dict(zip(lab["feature"].tolist(), lab["label"].tolist())))
