"""Export: the stage outputs of a build (pipeline.build.Outputs) converted into the atlas tables and manifest.

One function per table, each a pure conversion of what a stage computed, read through the stages' results
(`build.results[name]`, never their files): no statistics, no filtering decisions (the stages mark what passes),
no labels invented here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..pipeline.annotation.annotate import ANY
from ..pipeline.annotation.genesets import normalise_gene
from ..pipeline.build import Builder, results_config
from ..pipeline.cache import tree_hash
from ..pipeline.graphs.modules import module_labels
from .format import SCHEMA, annotation_rate, write_atlas


def _frame(name: str, parts: list) -> pa.Table:
    parts = [p for p in parts if len(p)]
    if not parts:
        return SCHEMA[name].schema().empty_table()
    if isinstance(parts[0], dict):
        return pa.Table.from_pylist(parts)
    return pa.Table.from_pandas(pd.concat(parts, ignore_index=True), preserve_index=False)


def features(out: Builder, labels: pd.DataFrame) -> pa.Table:
    parts = []
    for L in out.layers:
        f = out.results["stats"].table(L, "features")
        g = out.results["graph"][L].arrays
        lab = labels[labels.layer == L].set_index("feature").reindex(f["feature"])
        module = pd.array(np.where(g["membership"] >= 0, g["membership"], 0), dtype="Int32")
        module[g["membership"] < 0] = pd.NA
        parts.append(pd.DataFrame({
            "layer": np.int16(L), "feature": f["feature"].astype(np.int32), "alive": f["alive"],
            "frequency": f["frequency"], "mean_activation": f["mean_activation"], "fire_count": f["fire_count"],
            "n_enrichments": lab["n_enrichments"].fillna(0).astype("int32").to_numpy(),
            "label": lab["label"].to_numpy(), "label_database": lab["label_database"].to_numpy(),
            "label_q": lab["label_q"].to_numpy(dtype=float), "module": module,
            "map_x": g["xy"][:, 0].astype(np.float32), "map_y": g["xy"][:, 1].astype(np.float32),
            "svd_aligned": pd.array([pd.NA] * len(f), dtype="boolean")}))
    return _frame("features", parts)


def feature_genes(out: Builder) -> pa.Table:
    parts = []
    for L in out.layers:
        g = out.results["stats"].table(L, "feature_genes")
        parts.append(pd.DataFrame({
            "layer": np.int16(L), "feature": g["feature"].astype(np.int32), "rank": g["rank"].astype(np.int16),
            "gene": _symbols(g["gene"]), "activation": g["activation"],
            "fire_count": g["support"], "gene_tokens": g["gene_tokens"],
            "score": g["score"]}))
    return _frame("feature_genes", parts)


def _symbols(genes: pd.Series) -> np.ndarray:
    """Gene names as the atlas spells them (Ensembl ids become GENCODE symbols), each distinct name once."""
    uniq = pd.unique(genes)
    return genes.map(dict(zip(uniq, [normalise_gene(x) or x for x in uniq]))).to_numpy(dtype=object)


def top_cells(out: Builder) -> pa.Table:
    parts = []
    for L in out.layers:
        c = out.results["stats"].table(L, "top_cells")
        label = c["cell_type"].where(c["cell_type"].notna(), c["obs_name"]) if out.cfg.cell_type_column else c["obs_name"]
        parts.append(pd.DataFrame({"layer": np.int16(L), "feature": c["feature"].astype(np.int32),
                                   "rank": c["rank"].astype(np.int16), "cell_type": label.astype(str),
                                   "tissue": pd.Series([None] * len(c), dtype=object), "activation": c["activation"]}))
    return _frame("top_cells", parts)


def celltypes(out: Builder) -> pa.Table:
    parts = []
    for L in out.layers:
        ct = out.results["stats"].celltypes(L)
        if ct is None:
            continue
        hit = ct[ct["passes"]]
        parts.append(pd.DataFrame({
            "layer": np.int16(L), "feature": hit["feature"].astype(np.int32), "level": out.cfg.cell_type_column,
            "name": hit["cell_type"], "q": hit["q"], "odds_ratio": np.nan, "n_top": hit["n_top"].astype(np.int32),
            "p": hit["p"], "auc": hit["auc"], "n_cells": hit["n_cells"].astype(np.int32),
            "n_firing": hit["n_firing"].astype(np.int32)}))
    return _frame("celltypes", parts)


def module_rows(out: Builder) -> dict[int, list[dict]]:
    """Per layer, its modules labelled by the most common labels of their members."""
    labels = out.results["annotate"].labels.to_pandas()
    rows = {}
    for L in out.layers:
        lab = labels[labels["layer"] == L].dropna(subset=["label"])
        rows[L] = module_labels(out.results["graph"][L].arrays["membership"],
                                dict(zip(lab["feature"].tolist(), lab["label"].tolist())),
                                out.cfg.graphs.module_label_share)
    return rows


def modules(out: Builder, rows_of: dict[int, list[dict]]) -> tuple[pa.Table, pa.Table]:
    rows, members = [], []
    for L in out.layers:
        for m in rows_of[L]:
            rows.append({"layer": L, "module": m["module"], "n_features": m["n_features"], "label": m["label"],
                         "top_terms": m["top_terms"], "top_term_counts": m["top_term_counts"]})
            members += [{"layer": L, "module": m["module"], "feature": f} for f in m["members"]]
    return _frame("modules", rows), _frame("module_members", members)


def layers(out: Builder, feats: pa.Table, rates: pd.DataFrame, modules_of: dict[int, list[dict]]) -> pa.Table:
    f = feats.to_pandas()
    rows = []
    for L in out.layers:
        fl = f[f.layer == L]
        r = rates[(rates.layer == L) & (rates.database == ANY)]
        ev = out.results["stream"].heldout(L)
        annotated, tested = (int(r["annotated"].iloc[0]), int(r["n_features"].iloc[0])) if len(r) else (0, 0)
        training = out.results["sae"].training.get(L, {})
        rows.append({"layer": L, "n_features": len(fl), "alive": int(fl["alive"].sum()),
                     "annotated": annotated, "n_modules": len(modules_of[L]),
                     "variance_explained": ev["variance_explained"], "mean_feature_cosine": None,
                     "n_svd_aligned": None,
                     "annotated_null_rate": None if not len(r) or pd.isna(r["null_annotated"].iloc[0])  # random_genes off
                     else float(r["null_annotated"].iloc[0] / max(tested, 1)),
                     **annotation_rate(annotated, tested), "dead_features": ev["dead_features"],
                     "sae_steps": training.get("steps"),
                     "decoder_init_cosine": training.get("decoder_init_cosine", {}).get("mean")})
    return _frame("layers", rows)


def svd_comparison(out: Builder) -> pa.Table:
    """Metric M (e.g. share_10_p50) beside its baselines M_random (random unit directions) and, for the mean
    share, M_expected (k/d), the names the site pairs."""
    rows = []
    for L in out.layers:
        gj = out.results["graph"][L].summary
        for measure, summary in sorted(gj["svd"].items()):
            base, suffix = (measure.removeprefix("random_"), "_random") if measure.startswith("random_") else (measure, "")
            rows += [{"layer": L, "metric": f"{base}_{stat}{suffix}", "value": v} for stat, v in sorted(summary.items())]
        rows += [{"layer": L, "metric": f"{k}_mean_expected", "value": v}
                 for k, v in sorted(gj["svd_random_expectation"].items())]
    return _frame("svd_comparison", rows)


def null_baseline(out: Builder) -> pa.Table:
    """The annotation stage's rows (annotation rates against each baseline it ran), then the graph stages'."""
    rows = []

    def nb(layer, analysis, measure, baseline, observed, expected, note, **spread):
        f = lambda v: None if v is None else float(v)  # noqa: E731
        rows.append({"layer": layer, "analysis": analysis, "measure": measure, "baseline": baseline,
                     "observed": f(observed), "expected": f(expected), "note": note,
                     **{k: f(v) if k.endswith(("_lo", "_hi")) else v for k, v in spread.items()}})

    for L in out.layers:
        gj = out.results["graph"][L].summary
        null = gj["modules_null"]
        for measure in ("modules", "edges", "in_modules", "quality"):
            nb(L, "modules", measure, "within_gene_shuffle", gj["modules"][measure], null[measure],
               f"null: the same PMI graph and Leiden on co-counts drawn from the expectation when each feature's "
               f"firing is shuffled among the tokens of the same gene; expected: the mean of {null['draws']} draws, "
               f"its interval their 2.5%-97.5% range; one-sided p of the observed {null.get(measure + '_p', 1):.3g}",
               expected_n=null["draws"], expected_lo=null[f"{measure}_lo"], expected_hi=null[f"{measure}_hi"])
        for key, v in sorted(gj["svd_random_expectation"].items()):
            nb(L, "svd", f"decoder_{key}_mean", "random_direction", gj["svd"].get(key, {}).get("mean"), v,
               "share of the decoder direction's squared norm in the top principal axes; random: k/d")
    for (a, b), cross in out.results["cross"].items():
        cj = cross.summary
        nb(a, "cross_layer", f"pmi_edges_to_{b}", "within_gene_shuffle", cj["raw_edges"], cj["expected_raw_edges"],
           "pairs passing count and PMI against independence; expected: the same under a within-gene shuffle")
        nb(a, "cross_layer", f"edges_beyond_gene_null_to_{b}", "within_gene_shuffle", cj["edges"], None,
           f"pairs with log(count / expected) >= {out.cfg.graphs.cross_min_log_ratio:.3g} and BH q <= "
           f"{out.cfg.graphs.cross_alpha} against the within-gene expectation")
        nb(a, "cross_layer", f"decoder_matches_to_{b}", "random_direction", cj["decoder_matches"],
           cj.get("expected_decoder_matches"),
           f"features of layer {a} whose decoder direction has a cosine >= {out.cfg.graphs.cosine:g} with one of "
           f"layer {b}'s; expected: the same among random unit directions (each layer's SAE starts from its own "
           "random dictionary, so a shared start cannot match them)")
    # the annotation stage's rows (random_genes), then the baselines stage's (pca, coexpression, random_init_model)
    parts = [out.results["annotate"].baselines.to_pandas(), out.results["baselines"].rows.to_pandas()]
    columns = list(parts[0].columns) if parts else None
    return _frame("null_baseline", [*parts, pd.DataFrame(rows, columns=columns)])


def edges(out: Builder) -> pa.Table:
    parts = []
    for (a, b), cross in out.results["cross"].items():
        z = cross.arrays
        parts.append(pd.DataFrame({"kind": "cross_layer", "layer_a": np.int16(a), "feature_a": z["a"],
                                   "layer_b": np.int16(b), "feature_b": z["b"], "weight": z["log_ratio"],
                                   "count": z["count"], "null_p": z["p"]}))
        parts.append(pd.DataFrame({"kind": "decoder_cosine", "layer_a": np.int16(a), "feature_a": z["cos_a"],
                                   "layer_b": np.int16(b), "feature_b": z["cos_b"], "weight": z["cos"],
                                   "count": pd.array([pd.NA] * len(z["cos"]), dtype="Int64"),
                                   "null_p": np.full(len(z["cos"]), np.nan)}))
    return _frame("edges", parts)


def manifest(out: Builder) -> dict:
    cfg, rec = out.cfg, out.results["plan"].record
    return {
        "atlas": {"id": out.name, "title": cfg.title or out.name,
                  "description": f"Built by atlas build from {rec['model']['name']} on {Path(cfg.data).name} "
                                 f"({rec['dataset']['cells']} cells, {rec['tokens']} gene tokens)."},
        "model": {"family": cfg.model, "name": rec["model"]["name"], "n_layers": rec["model"]["n_layers"],
                  "layers": out.layers, "width": rec["model"]["width"], "checkpoint_sha256": out.inputs["checkpoint"],
                  **pretraining(Path(cfg.checkpoint))},
        "sae": {"kind": "topk", "n_features": out.results["stats"].n_features(out.layers[0]),
                "source": out.results["sae"].source, "files": sae_files(out), "training": sae_training(out)},
        "cache": cache_entries(out),
        "dataset": {"name": Path(cfg.data).name, "cells": rec["dataset"]["cells"], "tokens": rec["tokens"],
                    "heldout_cells": rec["heldout_cells"], "heldout_source": rec["heldout_source"],
                    "sha256": out.inputs["data"],
                    "cell_type_column": cfg.cell_type_column or None, "donor_column": cfg.donor_column or None},
        "genesets": [{"name": d.name, **{k: d.meta[k] for k in ("version", "licence", "source", "sha256") if k in d.meta},
                      "terms": len(d.terms)} for d in out.databases]
                    + [{"name": n.name, "edges": len(n.edges), "sha256": n.meta.get("sha256")} for n in out.networks],
        "parameters": json.loads(json.dumps(results_config(cfg), default=str)),
        "baselines": baselines_record(out),
        "provenance": {"inputs": out.inputs},
        "notes": ["Every rate on this site has its null beside it (table null_baseline): annotation against "
                  "random gene lists of the same sizes and frequencies and, when they ran, gene lists of principal "
                  "directions (pca), co-expressed gene groups (coexpression) and the same build on the untrained "
                  "twin of the model (random_init_model); modules and cross-layer edges against a shuffle of firing "
                  "within the same gene and against the twin; decoder directions against random directions."],
    }


def sae_training(out: Builder) -> dict:
    """Per trained layer: how training went (steps, why it stopped, the validation-loss curve), how far the decoder
    moved from its random start, and the held-out variance explained and dead features."""
    saes = out.results["sae"]
    rows = {}
    for L, t in sorted(saes.training.items()):
        held = out.results["stream"].heldout(L)
        rows[str(L)] = {k: t[k] for k in ("steps", "epochs", "stopped", "train_tokens", "val_tokens", "curve",
                                          "decoder_init_cosine") if k in t} | {
            "variance_explained": held["variance_explained"], "dead_features": held["dead_features"],
            "l0": held["l0"], "heldout_tokens": held["heldout_tokens"]}
    return rows


def sae_files(out: Builder) -> dict:
    """Each layer's SAE and its hash, so that later commands (atlas perturb) load exactly these SAEs: a trained one
    by its entry in the stage cache (a name that does not depend on where the cache is), a given one by its path."""
    files = {}
    for L, p in sorted(out.results["sae"].paths.items()):
        p = Path(p)
        where = {"cache_entry": f"{p.parent.name}/{p.name}"} if out.cfg.train_sae else {"path": str(p)}
        files[str(L)] = {**where, "sha256": tree_hash(p)}
    return files


def cache_entries(out: Builder) -> dict:
    """The stage-cache entries that later commands read per cell (`atlas link`): the plan (cells, their ids and cell
    types, the genes) and the stream (every layer's codes per shard), and the same of the untrained twin's build when
    it ran. Each by its name in the cache, which does not depend on where the cache is, with what identifies it: the
    plan's tree hash (small files), the stream's shards and gene tokens (hashing gigabytes of codes would cost more
    than the build's key, in the name, already guarantees)."""
    def entries(plan, stream) -> dict:
        return {"plan": {"cache_entry": plan.folder.name, "sha256": tree_hash(plan.folder)},
                "stream": {"cache_entry": stream.folder.name, "shards": len(stream.shards()),
                           "tokens": int(plan.record["tokens"])}}

    rec = entries(out.results["plan"], out.results["stream"])
    twin = out.results["baselines"].twin
    if twin is not None:
        rec["twin"] = entries(twin["plan"], twin["stream"])
    return rec


def causal(out: Builder) -> tuple[dict[str, pa.Table], dict | None]:
    """causal_summary and causal_effects from the interventions stage (none without --interventions)."""
    if "interventions" not in out.results:
        return {}, None
    i = out.results["interventions"]
    record, summary, effects = i.record, i.summary.copy(), i.effects.copy()
    summary.insert(2, "method", record["method"])
    effects["gene"] = _symbols(effects["gene"]) if len(effects) else effects["gene"]
    tables = {"causal_summary": _frame("causal_summary", [summary]), "causal_effects": _frame("causal_effects", [effects])}
    return tables, {**{k: record[k] for k in ("method", "cells_patched", "tested", "agreement")},
                    "alpha": record["config"]["alpha"]}


def baselines_record(out: Builder) -> dict:
    """Which baselines ran, with their parameters (timings left out: the manifest must not change between runs),
    and which did not, with the reason."""
    notes = out.results["annotate"].meta.get("baselines", {})
    rec = out.results["baselines"].record
    ran = {name: {"note": note} for name, note in notes.items()}
    for name, params in rec.get("ran", {}).items():
        ran.setdefault(name, {}).update(_no_seconds(params))
    ran["within_gene_shuffle"] = {"note": "modules and cross-layer edges: each feature's firing shuffled among the "
                                          "tokens of the same gene"}
    ran["random_direction"] = {"note": "SVD comparison: random unit directions of the same width"}
    return {"ran": ran, "not_run": rec.get("not_run", {}), "config": rec.get("config", {})}


def _no_seconds(value):
    if isinstance(value, dict):
        return {k: _no_seconds(v) for k, v in value.items() if "seconds" not in k}
    return value


def pretraining(checkpoint: Path) -> dict:
    """A checkpoint written by `atlas pretrain` carries its record and model card: both go into the manifest
    (`model.pretraining`, `model.card`), so the site can say what the model is and show the card."""
    rec, card = checkpoint / "pretrain.json", checkpoint / "MODEL_CARD.md"
    if not (rec.is_file() and card.is_file()):
        return {}
    record = json.loads(rec.read_text())
    record["data"] = {k: v for k, v in record.get("data", {}).items() if k != "heldout_cells"}
    return {"pretraining": record, "card": card.read_text(encoding="utf-8")}


def export(out: Builder, data_dir: Path) -> Path:
    ann = out.results["annotate"]
    feats = features(out, ann.labels.to_pandas())
    modules_of = module_rows(out)
    mods, members = modules(out, modules_of)
    tables = {"features": feats, "feature_genes": feature_genes(out), "top_cells": top_cells(out),
              "celltypes": celltypes(out), "modules": mods, "module_members": members,
              "layers": layers(out, feats, ann.rates.to_pandas(), modules_of), "svd_comparison": svd_comparison(out),
              "null_baseline": null_baseline(out), "edges": edges(out), "enrichments": ann.enrichments}
    extra, record = causal(out)
    tables.update(extra)
    mf = manifest(out)
    if record is not None:
        mf["interventions"] = record
    return write_atlas(Path(data_dir) / out.name, mf, tables).path
