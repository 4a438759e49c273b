"""Export at Geneformer scale (18 layers x 4,608 features): pandas vs DuckDB where the export joins and groups.

    python bench/export_bench.py [--layers 18] [--features 4608]

Writes synthetic stage outputs shaped like a Geneformer build's (per layer: the statistics stage's
features.parquet and feature_genes.parquet with Ensembl ids, 20 top genes per feature; the graph stage's
membership and map; the annotation's labels.parquet, a third of the features labelled), then makes the atlas
tables `features` (stats joined with labels and graph), `feature_genes` (Ensembl ids turned into GENCODE
symbols) and `layers` (counts grouped by layer) three ways, each in a process of its own (wall time, peak RSS):
- `pandas-row`: the export as it was: per-layer frames, the gene normalised row by row in Python;
- `pandas`: the same frames, each distinct gene normalised once and mapped;
- `duckdb`: SQL over the Parquet files, joined to a gene table, straight to Arrow.
It checks that the three give equal tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "export"


def make(layers: int, features: int) -> None:
    from builder.geneids import gencode

    if (OUT / f"{layers}x{features}.done").exists():
        return
    ids = np.array(sorted(gencode()[0]))
    rng = np.random.default_rng(0)
    popular = rng.choice(ids.size, 20_000, replace=False)  # genes a model sees; popularity skewed
    weight = rng.zipf(1.5, popular.size).astype(float)
    labels = []
    for L in range(layers):
        d = OUT / f"layer_{L:02d}"
        d.mkdir(parents=True, exist_ok=True)
        fire = rng.integers(0, 50_000, features)
        pq.write_table(pa.table({"feature": np.arange(features), "fire_count": fire, "frequency": fire / 4.1e6,
                                 "mean_activation": rng.random(features), "alive": fire > 0}), d / "features.parquet")
        g = popular[np.argsort(rng.random((features, popular.size)) ** (1 / weight), axis=1)[:, -20:]]  # 20 distinct
        n = features * 20
        pq.write_table(pa.table({"feature": np.repeat(np.arange(features), 20), "rank": np.tile(np.arange(1, 21), features),
                                 "token_id": g.ravel(), "gene": ids[g.ravel()], "activation": rng.random(n),
                                 "support": rng.integers(5, 500, n), "gene_tokens": rng.integers(5, 5000, n),
                                 "score": rng.random(n)}), d / "feature_genes.parquet")
        np.savez(d / "graph.npz", membership=rng.integers(-1, 40, features), xy=rng.random((features, 2)))
        lab = rng.random(features) < 0.32
        labels.append(pd.DataFrame({"layer": L, "feature": np.flatnonzero(lab), "n_enrichments": rng.integers(1, 20, lab.sum()),
                                    "label": [f"TERM {i}" for i in rng.integers(0, 5000, lab.sum())],
                                    "label_database": "GO_BP", "label_q": rng.random(lab.sum()) * 0.05}))
    pq.write_table(pa.Table.from_pandas(pd.concat(labels, ignore_index=True), preserve_index=False), OUT / "labels.parquet")
    (OUT / f"{layers}x{features}.done").touch()


def _graph(L: int) -> dict:
    with np.load(OUT / f"layer_{L:02d}" / "graph.npz") as z:
        return {k: z[k] for k in z.files}


def by_pandas(layers: int, per_row: bool) -> dict:
    from builder.pipeline.annotation.genesets import normalise_gene

    labels = pq.read_table(OUT / "labels.parquet").to_pandas()
    feats, genes = [], []
    for L in range(layers):
        f = pq.read_table(OUT / f"layer_{L:02d}" / "features.parquet").to_pandas()
        g = _graph(L)
        lab = labels[labels.layer == L].set_index("feature").reindex(f["feature"])
        module = pd.array(np.where(g["membership"] >= 0, g["membership"], 0), dtype="Int32")
        module[g["membership"] < 0] = pd.NA
        feats.append(pd.DataFrame({
            "layer": np.int16(L), "feature": f["feature"].astype(np.int32), "alive": f["alive"],
            "frequency": f["frequency"], "fire_count": f["fire_count"],
            "n_enrichments": lab["n_enrichments"].fillna(0).astype("int32").to_numpy(),
            "label": lab["label"].to_numpy(), "label_q": lab["label_q"].to_numpy(dtype=float), "module": module,
            "map_x": g["xy"][:, 0].astype(np.float32), "map_y": g["xy"][:, 1].astype(np.float32)}))
        t = pq.read_table(OUT / f"layer_{L:02d}" / "feature_genes.parquet").to_pandas()
        if per_row:
            symbol = [normalise_gene(x) or x for x in t["gene"]]
        else:
            uniq = t["gene"].unique()
            symbol = t["gene"].map(dict(zip(uniq, [normalise_gene(x) or x for x in uniq]))).to_numpy()
        genes.append(pd.DataFrame({"layer": np.int16(L), "feature": t["feature"].astype(np.int32),
                                   "rank": t["rank"].astype(np.int16), "gene": symbol, "activation": t["activation"],
                                   "support": t["support"], "score": t["score"]}))
    features = pd.concat(feats, ignore_index=True)
    lay = features.groupby("layer").agg(n_features=("feature", "size"), alive=("alive", "sum"),
                                        annotated=("n_enrichments", lambda x: int((x > 0).sum()))).reset_index()
    return {"features": pa.Table.from_pandas(features, preserve_index=False),
            "feature_genes": pa.Table.from_pandas(pd.concat(genes, ignore_index=True), preserve_index=False),
            "layers": pa.Table.from_pandas(lay, preserve_index=False)}


def by_duckdb(layers: int) -> dict:
    import duckdb

    from builder.pipeline.annotation.genesets import normalise_gene

    con = duckdb.connect()
    con.execute("SET threads TO 1")
    gs = [_graph(L) for L in range(layers)]
    graph = pa.table({"layer": np.concatenate([np.full(len(g["membership"]), L, np.int16) for L, g in enumerate(gs)]),
                      "feature": np.concatenate([np.arange(len(g["membership"])) for g in gs]),
                      "membership": np.concatenate([g["membership"] for g in gs]),
                      "map_x": np.concatenate([g["xy"][:, 0] for g in gs]),
                      "map_y": np.concatenate([g["xy"][:, 1] for g in gs])})
    con.register("graph", graph)
    files = [str(OUT / f"layer_{L:02d}" / "features.parquet") for L in range(layers)]
    gfiles = [str(OUT / f"layer_{L:02d}" / "feature_genes.parquet") for L in range(layers)]
    layer_of = "CAST(regexp_extract(f.filename, 'layer_(\\d+)', 1) AS SMALLINT)"
    feats = con.execute(f"""
        SELECT {layer_of} AS layer, CAST(f.feature AS INTEGER) AS feature, f.alive, f.frequency, f.fire_count,
               CAST(coalesce(l.n_enrichments, 0) AS INTEGER) AS n_enrichments, l.label, l.label_q,
               CASE WHEN g.membership >= 0 THEN CAST(g.membership AS INTEGER) END AS module,
               CAST(g.map_x AS FLOAT) AS map_x, CAST(g.map_y AS FLOAT) AS map_y
        FROM read_parquet(?, filename = true) f
        JOIN graph g
          ON g.layer = {layer_of} AND g.feature = f.feature
        LEFT JOIN read_parquet(?) l ON l.layer = {layer_of} AND l.feature = f.feature
        ORDER BY layer, feature""", [files, str(OUT / "labels.parquet")]).to_arrow_table()
    uniq = con.execute("SELECT DISTINCT gene FROM read_parquet(?)", [gfiles]).to_arrow_table().column(0).to_pylist()
    con.register("genemap", pa.table({"gene": uniq, "symbol": [normalise_gene(x) or x for x in uniq]}))
    genes = con.execute(f"""
        SELECT {layer_of.replace("f.", "t.")} AS layer, CAST(t.feature AS INTEGER) AS feature, CAST(t.rank AS SMALLINT) AS rank,
               m.symbol AS gene, t.activation, t.support, t.score
        FROM read_parquet(?, filename = true) t JOIN genemap m USING (gene)
        ORDER BY layer, feature, rank""", [gfiles]).to_arrow_table()
    lay = con.execute("""SELECT layer, count(*) AS n_features, CAST(sum(CAST(alive AS INTEGER)) AS BIGINT) AS alive,
                                CAST(sum(CAST(n_enrichments > 0 AS INTEGER)) AS BIGINT) AS annotated
                         FROM feats GROUP BY layer ORDER BY layer""").to_arrow_table()
    return {"features": feats, "feature_genes": genes, "layers": lay}


def one(mode: str, layers: int) -> dict:
    t0 = time.perf_counter()
    tables = by_duckdb(layers) if mode == "duckdb" else by_pandas(layers, per_row=mode == "pandas-row")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the check below, which needs more
    digest = {}
    for name, t in tables.items():
        df = t.to_pandas()
        df = df.sort_values(list(df.columns[:3])).reset_index(drop=True)
        for c in df.columns:
            s = df[c]
            if s.dtype == object:
                df[c] = s.where(s.notna(), "<NA>").astype(str)
            else:
                df[c] = s.astype("float64").round(6)
        digest[name] = int(pd.util.hash_pandas_object(df, index=False).sum())
    return {"mode": mode, "seconds": seconds, "peak_rss_mb": peak,
            "rows": {k: t.num_rows for k, t in tables.items()}, "digest": digest}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--features", type=int, default=4608)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    make(args.layers, args.features)
    rows = []
    for mode in ("pandas-row", "pandas", "duckdb"):
        res = subprocess.run([sys.executable, __file__, "--one", mode, str(args.layers)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"{args.layers} layers x {args.features:,} features; rows {rows[0]['rows']}")
    print("| export of features, feature_genes, layers | wall s | peak RSS MB | same tables |")
    print("|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seconds']:.2f} | {r['peak_rss_mb']:,.0f} | {r['digest'] == rows[0]['digest']} |")


if __name__ == "__main__":
    main()
