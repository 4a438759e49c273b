"""Export: the cached stage outputs of a build mapped into the atlas tables and manifest (atlasdata.py)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .format import write_atlas
from ..pipeline.annotate import ANY
from .format import SCHEMA
from ..pipeline.genesets import normalise_gene


def _read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def export(builder, layers, record, inputs, edir, sae_dirs, stats_dirs, adir, gdirs, cdirs, dbs, nets) -> Path:
    cfg = builder.cfg
    ann = adir / "annotation"
    enr = _read(ann / "enrichments.parquet")
    labels = _read(ann / "labels.parquet")
    rates = _read(ann / "rates.parquet")
    alpha = cfg.annotate.alpha
    rows = {k: [] for k in ("layers", "features", "feature_genes", "top_cells", "celltypes", "modules",
                            "module_members", "svd_comparison", "null_baseline")}
    n_sae = None
    for L in layers:
        st = stats_dirs[L] / "stats"
        f = _read(st / "features.parquet")
        n_sae = len(f)
        graph = np.load(gdirs[L] / "graph.npz")
        gj = json.loads((gdirs[L] / "graph.json").read_text())
        lab = labels[labels.layer == L].set_index("feature")
        feat = pd.DataFrame({
            "layer": L, "feature": f["feature"], "alive": f["alive"], "frequency": f["frequency"],
            "mean_activation": f["mean_activation"], "fire_count": f["fire_count"],
            "n_enrichments": f["feature"].map(lab["n_enrichments"]).fillna(0).astype("int32"),
            "label": f["feature"].map(lab["label"]), "label_database": f["feature"].map(lab["label_database"]),
            "label_q": f["feature"].map(lab["label_q"]),
            "module": pd.array(graph["membership"], dtype="Int32"),
            "map_x": graph["xy"][:, 0].astype(np.float32), "map_y": graph["xy"][:, 1].astype(np.float32),
            "svd_aligned": graph["aligned"]})
        feat.loc[feat["module"] < 0, "module"] = pd.NA
        rows["features"].append(feat)
        g = _read(st / "feature_genes.parquet")
        rows["feature_genes"].append(pd.DataFrame({
            "layer": L, "feature": g["feature"], "rank": g["rank"],
            "gene": [normalise_gene(x) or x for x in g["gene"]], "activation": g["score"], "fire_count": g["fire_count"]}))
        c = _read(st / "top_cells.parquet")
        types = None
        if (st / "celltypes.parquet").is_file():
            ct = _read(st / "celltypes.parquet")
            keep = ct[ct["q"] <= alpha]
            rows["celltypes"].append(pd.DataFrame({
                "layer": L, "feature": keep["feature"], "level": cfg.cell_type_column, "name": keep["cell_type"],
                "q": keep["q"], "odds_ratio": keep["odds_ratio"], "n_top": keep["n_cells"]}))
            types = builder.cell_types
        rows["top_cells"].append(pd.DataFrame({
            "layer": L, "feature": c["feature"], "rank": c["rank"],
            "cell_type": types[c["cell"]] if types is not None else c["cell_id"], "tissue": None,
            "activation": c["activation"]}))
        # Modules: labels from the members' labels.
        members = feat.dropna(subset=["module"])
        n_modules = 0
        for m, grp in members.groupby("module", sort=True):
            terms = Counter(t for t in grp["label"] if isinstance(t, str)).most_common(5)
            rows["modules"].append({"layer": L, "module": int(m), "n_features": len(grp),
                                    "label": terms[0][0] if terms else None,
                                    "top_terms": [t for t, _ in terms], "top_term_counts": [n for _, n in terms]})
            rows["module_members"].extend({"layer": L, "module": int(m), "feature": int(x)} for x in grp["feature"])
            n_modules += 1
        alive = int(f["alive"].sum())
        annotated = int((feat["n_enrichments"] > 0).sum())
        r = rates[rates.layer == L]
        null_any = _null_any(r)
        training = _training(sae_dirs[L])
        rows["layers"].append({
            "layer": L, "n_features": len(f), "alive": alive, "annotated": annotated, "n_modules": n_modules,
            "variance_explained": training.get("variance_explained"), "mean_feature_cosine": None,
            "n_svd_aligned": int(graph["aligned"].sum()), "annotated_null_rate": null_any})
        rows["svd_comparison"] += [
            {"layer": L, "metric": "axes", "value": float(cfg.graphs.svd_axes)},
            {"layer": L, "metric": "threshold", "value": cfg.graphs.svd_threshold},
            {"layer": L, "metric": "share_aligned", "value": float(graph["aligned"].mean())},
            {"layer": L, "metric": "share_expected_random", "value": gj["svd_expected_share"]}]
        nb = rows["null_baseline"]
        for _, x in r.iterrows():
            nb.append(_nb(L, "annotation", x["database"], x["annotated"] / max(x["n_features"], 1),
                          x["null_annotated"] / max(x["n_features"], 1), "share of features with a term at q <= "
                          f"{alpha}; null: pseudo-features with the same sizes and gene frequencies"))
        mod, mod0 = gj["modules"], gj["modules_null"]
        for measure in ("modules", "edges", "in_modules", "quality"):
            nb.append(_nb(L, "modules", measure, mod[measure], mod0[measure],
                          "null: the same PMI graph and Leiden on codes shuffled across tokens"))
        nb.append(_nb(L, "svd", "share_aligned", float(graph["aligned"].mean()), gj["svd_expected_share"],
                      "null: random directions against the same axes"))
    edges = []
    for (a, b), d in cdirs.items():
        z = np.load(d / "cross.npz")
        cj = json.loads((d / "cross.json").read_text())
        edges.append(pd.DataFrame({"kind": "cross_layer_pmi", "layer_a": a, "feature_a": z["a"], "layer_b": b,
                                   "feature_b": z["b"], "weight": z["pmi"], "count": z["count"], "null_p": z["p"]}))
        edges.append(pd.DataFrame({"kind": "decoder_cosine", "layer_a": a, "feature_a": z["cos_a"], "layer_b": b,
                                   "feature_b": z["cos_b"], "weight": z["cos"], "count": None, "null_p": None}))
        rows["null_baseline"].append(_nb(a, "cross_layer", f"pmi_edges_to_{b}", cj["raw_edges"],
                                         cj["shuffled_raw_edges"], "edges passing count and PMI; null: layer "
                                         f"{b}'s tokens shuffled within the same gene"))
        rows["null_baseline"].append(_nb(a, "cross_layer", f"edges_beyond_gene_null_to_{b}", cj["edges"], None,
                                         f"PMI edges whose count exceeds the within-gene expectation (BH q <= "
                                         f"{cfg.graphs.cross_alpha})"))
    tables = {k: _frame(k, v) for k, v in rows.items()}
    tables["enrichments"] = pa.Table.from_pandas(enr, preserve_index=False)
    tables["edges"] = _frame("edges", edges)
    manifest = {
        "atlas": {"id": builder.name, "title": cfg.title or builder.name,
                  "description": f"Built by atlas build from {record['model']['name']} on {Path(cfg.data).name} "
                                 f"({record['dataset']['cells']} cells, {record['tokens']} gene tokens)."},
        "model": {"family": cfg.model, "name": record["model"]["name"], "n_layers": record["model"]["n_layers"],
                  "layers": layers, "width": record["model"]["width"], "checkpoint_sha256": inputs["checkpoint"]},
        "sae": {"kind": "topk", "n_features": n_sae, "k": _sae_k(sae_dirs[layers[0]]),
                "source": "trained by atlas build" if cfg.train_sae else "given (--sae)"},
        "dataset": {"name": Path(cfg.data).name, "cells": record["dataset"]["cells"], "tokens": record["tokens"],
                    "sha256": inputs["data"], "cell_type_column": cfg.cell_type_column or None},
        "genesets": [{"name": d.name, **{k: d.meta[k] for k in ("version", "licence", "source", "sha256") if k in d.meta},
                      "terms": len(d.terms)} for d in dbs]
                    + [{"name": n.name, "edges": len(n.edges), "sha256": n.meta.get("sha256")} for n in nets],
        "parameters": json.loads(json.dumps(asdict(cfg), default=str)),
        "provenance": {"inputs": inputs},
        "notes": ["Every rate on this site has its null beside it (table null_baseline): annotation against "
                  "pseudo-features, modules against shuffled codes, cross-layer edges against a within-gene "
                  "shuffle, SVD alignment against random directions."],
    }
    return write_atlas(builder.data_dir / builder.name, manifest, tables).path


def _nb(layer, analysis, measure, observed, expected, note):
    return {"layer": layer, "analysis": analysis, "measure": measure,
            "observed": None if observed is None else float(observed),
            "expected": None if expected is None else float(expected), "note": note}


def _null_any(r: pd.DataFrame):
    row = r[r["database"] == ANY]
    return float(row["null_annotated"].iloc[0] / max(row["n_features"].iloc[0], 1)) if len(row) else None


def _frame(name: str, parts) -> pa.Table:
    if not parts:
        return SCHEMA[name].schema().empty_table()
    if isinstance(parts[0], dict):
        return pa.Table.from_pylist(parts)
    parts = [p for p in parts if len(p)]
    if not parts:
        return SCHEMA[name].schema().empty_table()
    return pa.Table.from_pandas(pd.concat(parts, ignore_index=True), preserve_index=False)


def _training(sae_path: Path) -> dict:
    cfg = Path(sae_path) / "cfg.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("metadata", {}).get("training", {}) or {}
    return {}


def _sae_k(sae_path: Path):
    from ..pipeline.sae import load_sae

    return load_sae(sae_path).k
