"""Cut an atlas into the small JSON shards the site fetches: each view loads only what it shows.

Layout (paths relative to the site's data folder); every list of rows is a columnar table {field: [values]} whose
all-null fields are left out (encode.py), and the fields of the shards written here are:
  layer/L.json            every feature of layer L (layer explorer, feature map): {layer, features: table {feature,
                          alive, frequency, mean_activation, fire_count, n_enrichments, module, label, database, svd,
                          genes (its first 5 top genes), x, y (map position, 0..MAP_GRID)}}
  feat/L/B.json           features B*BUCKET .. B*BUCKET+BUCKET-1 of layer L (feature page), one table per kind of
                          row for all of them (field names once per shard), a feature's rows in order:
                          {layer,
                           features: table {feature, alive, frequency, mean_activation, fire_count, label, database,
                                            q, svd_aligned, module, module_label, module_n_features},
                           genes: table {feature, gene, activation, fire_count, gene_tokens, score, low_support},
                           enrichments: table {feature, database, term, p, q, odds_ratio, overlap, overlap_genes,
                                               set_size, edge_density, note},
                           celltypes: table {feature, level, name, q, odds_ratio, n_top, p, auc, n_cells, n_firing},
                           top_cells: table {feature, cell_type, tissue, activation},
                           neighbours: table {feature, kind, direction ("up"/"down"), neighbour_layer,
                                              neighbour_feature, weight, label},
                           perturbation: table {feature, perturbation, effect, ci_lo, ci_hi, q, dataset, is_tf},
                           causal: {F: {CAUSAL_FIELDS that are set, effects: table {gene, delta, ci_lo, ci_hi,
                                        n_cells, top_gene}}} for the tested features}
  modules.json            table {layer, module, n_features, label, top_terms: table {term, count, placeholder},
                          members: [feature, ...], member_names: [the first NAMED_MEMBERS members' names:
                          label, else "genes " and the first 3 top genes]}
  flow.json               {pairs: [{kind, layer_a, layer_b, edges, features_a, features_b, mean_weight, max_weight,
                          published}], edges: table {kind, layer_a, feature_a, layer_b, feature_b, weight, count,
                          null_p}, module_links: table {kind, layer_a, module_a, layer_b, module_b, edges},
                          modules: table {layer, module, n_features, label} (the linked ones),
                          labels: {"L:F": its label, else "genes " and its first 3 top genes}}
  comparisons.json        {svd: [{metric, values, baseline, baseline_values}], persistence: [{...}], extras,
                          causal: table {layer, feature, specificity_ratio, target_change, other_change, n_cells,
                          label}}
  genes/..., terms/..., celltypes/...   search indexes and postings (indexes.py)
  cells.json, cellact/..., cellexpr/... the cell map (cellmap.py)
  tf/...                  perturbed genes: TF index and per-gene pages (perturbation.py)
  links/..., links.json   features matched in other atlases on the same cells (links.py)
Numbers are rounded to what the page shows, so shards stay small and byte-stable. Every rate and total the
site shows is computed here, not in the browser.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, namedtuple

import pyarrow as pa

from ..atlas.format import Atlas
from .cellmap import cell_shards
from .encode import columns, sig, table
from .indexes import celltype_shards, gene_shards, term_shards
from .links import link_shards
from .perturbation import tf_shards

BUCKET = 32          # features per feature-detail shard: one shard is a few KB gzipped
MAP_GRID = 4095      # map coordinates quantized to 12 bits
MIN_SUPPORT = 5      # a top gene seen on fewer firing tokens than this is flagged as weakly supported
# The predecessor's placeholder "terms" (a TF-list test, edge counts among top genes): shown for what they are.
PLACEHOLDERS = {
    ("TRRUST_TF_enrichment", "transcription_factors"): "transcription factors over-represented among the top genes "
                                                       "(a TF-list test, not a gene set)",
    ("STRING_edges", "pairwise_enrichment"): "STRING interactions among the top genes (an edge count, not a gene set)",
    ("TRRUST_edges", "pairwise_enrichment"): "TRRUST regulatory links among the top genes (an edge count, not a gene set)",
}

# Rows of the tables above: their field names are the shard fields.
Feature = namedtuple("Feature", "feature alive frequency mean_activation fire_count label database q svd_aligned module "
                                "module_label module_n_features")
Gene = namedtuple("Gene", "feature gene activation fire_count gene_tokens score low_support")
Enrichment = namedtuple("Enrichment", "feature database term p q odds_ratio overlap overlap_genes set_size edge_density "
                                      "note")
CellTypeRow = namedtuple("CellTypeRow", "feature level name q odds_ratio n_top p auc n_cells n_firing")
TopCell = namedtuple("TopCell", "feature cell_type tissue activation")
Neighbour = namedtuple("Neighbour", "feature kind direction neighbour_layer neighbour_feature weight label")
Response = namedtuple("Response", "feature perturbation effect ci_lo ci_hi q dataset is_tf")
FEATURE_TABLES = ("genes", "enrichments", "celltypes", "top_cells", "neighbours", "perturbation")
Effect = namedtuple("Effect", "gene delta ci_lo ci_hi n_cells top_gene")
Edge = namedtuple("Edge", "kind layer_a feature_a layer_b feature_b weight count null_p")
ModuleLink = namedtuple("ModuleLink", "kind layer_a module_a layer_b module_b edges")
TopTerm = namedtuple("TopTerm", "term count placeholder")
Module = namedtuple("Module", "layer module n_features label top_terms members member_names")
NAMED_MEMBERS = 12   # a module's first members are named (label, else top genes) in modules.json
CausalRatio = namedtuple("CausalRatio", "layer feature specificity_ratio target_change other_change n_cells label")
FlowModule = namedtuple("FlowModule", "layer module n_features label")


def cols(t: pa.Table) -> dict[str, list]:
    return {c: t.column(c).to_pylist() for c in t.column_names}


def group(t: pa.Table, fields: list[str], fn) -> dict[tuple[int, int], list]:
    """(layer, feature) -> list of fn(row) for the rows of a table, in its stored (sorted) order."""
    c = cols(t)
    out = defaultdict(list)
    for i in range(t.num_rows):
        out[(c["layer"][i], c["feature"][i])].append(fn(*(c[f][i] for f in fields)))
    return out


def build_shards(atlas: Atlas) -> dict[str, object]:
    feats = cols(atlas.table("features"))
    n = len(feats["layer"])
    labels = {(feats["layer"][i], feats["feature"][i]): feats["label"][i] for i in range(n)}
    genes = group(atlas.table("feature_genes"), ["feature", "gene", "activation", "fire_count", "gene_tokens", "score"],
                  lambda f, g, a, fc, gt, sc: Gene(f, g, sig(a), fc, gt, sig(sc, 3),
                                                   int(fc is not None and fc < MIN_SUPPORT)))
    shards: dict[str, object] = {}
    shards.update(_layer_shards(feats, genes))
    shards.update(_feature_shards(atlas, feats, genes, labels))
    shards.update(gene_shards(atlas))
    shards.update(term_shards(atlas, PLACEHOLDERS, labels))
    shards.update(celltype_shards(atlas, labels))
    shards.update(cell_shards(atlas, BUCKET))
    shards.update(tf_shards(atlas, labels))
    shards.update(link_shards(atlas, labels, BUCKET))
    shards["modules.json"] = _modules(atlas, labels, genes)
    shards["flow.json"] = _flow(atlas, labels, genes)
    shards["comparisons.json"] = _comparisons(atlas, labels)
    return shards


def _map_quantizer(xs, ys):
    vals = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not vals:
        return lambda x, y: None
    lo_x, hi_x = min(v[0] for v in vals), max(v[0] for v in vals)
    lo_y, hi_y = min(v[1] for v in vals), max(v[1] for v in vals)
    sx, sy = (hi_x - lo_x) or 1.0, (hi_y - lo_y) or 1.0
    return lambda x, y: None if x is None or y is None else [round((x - lo_x) / sx * MAP_GRID),
                                                            round((y - lo_y) / sy * MAP_GRID)]


def _layer_shards(feats, genes) -> dict[str, object]:
    by_layer = defaultdict(list)
    for i, lay in enumerate(feats["layer"]):
        by_layer[lay].append(i)
    out = {}
    for lay, idx in by_layer.items():
        q = _map_quantizer([feats["map_x"][i] for i in idx], [feats["map_y"][i] for i in idx])
        xy = [q(feats["map_x"][i], feats["map_y"][i]) for i in idx]
        sv = [feats["svd_aligned"][i] for i in idx]
        out[f"layer/{lay}.json"] = {"layer": lay, "features": columns({
            "feature": [feats["feature"][i] for i in idx],
            "alive": [int(feats["alive"][i]) for i in idx],
            "frequency": [sig(feats["frequency"][i], 3) for i in idx],
            "mean_activation": [sig(feats["mean_activation"][i], 3) for i in idx],
            "fire_count": [feats["fire_count"][i] for i in idx],
            "n_enrichments": [feats["n_enrichments"][i] for i in idx],
            "module": [feats["module"][i] for i in idx],
            "label": [feats["label"][i] or "" for i in idx],
            "database": [feats["label_database"][i] or "" for i in idx],
            "svd": [None if v is None else int(v) for v in sv],
            "genes": [[g.gene for g in genes.get((lay, feats["feature"][i]), [])[:5]] for i in idx],
            "x": [p[0] if p else None for p in xy],
            "y": [p[1] if p else None for p in xy],
        })}
    return out


def _effect(row: CellTypeRow):
    """A feature's cell-type rows sort by effect: AUC where measured, else the odds ratio (infinite first)."""
    auc, odds = row.auc, row.odds_ratio
    return (-(auc if auc is not None else -1), -(math.inf if odds == "inf" else (odds or 0)), row.name)


def _feature_shards(atlas, feats, genes, labels) -> dict[str, object]:
    rows = {"genes": genes}
    rows["enrichments"] = group(
        atlas.table("enrichments"),
        ["feature", "database", "term", "p", "q", "odds_ratio", "overlap", "overlap_genes", "set_size", "edge_density"],
        lambda f, d, t, p, q, o, ov, og, ss, ed: Enrichment(f, d, t, sig(p, 3), sig(q, 3), sig(o, 4), ov, og, ss,
                                                            sig(ed, 3), PLACEHOLDERS.get((d, t))))
    rows["celltypes"] = group(
        atlas.table("celltypes"), ["feature", "level", "name", "q", "odds_ratio", "n_top", "p", "auc", "n_cells", "n_firing"],
        lambda f, lv, nm, q, o, nt, p, auc, nc, nf: CellTypeRow(f, lv, nm, sig(q, 3), sig(o, 4), nt, sig(p, 3),
                                                                sig(auc, 3), nc, nf))
    rows["top_cells"] = group(atlas.table("top_cells"), ["feature", "cell_type", "tissue", "activation"],
                              lambda f, c, t, a: TopCell(f, c, t, sig(a)))
    is_tf = {(r["dataset"], r["perturbation"]): r["is_tf"] for r in atlas.table("tf_specificity").to_pylist()}
    rows["perturbation"] = defaultdict(list)
    for r in atlas.table("perturbation_response").to_pylist():
        if r["layer"] is not None:
            rows["perturbation"][(r["layer"], r["feature"])].append(Response(
                r["feature"], r["perturbation"], sig(r["effect"], 3), sig(r["ci_lo"], 3), sig(r["ci_hi"], 3),
                sig(r["q"], 3), r["dataset"], is_tf.get((r["dataset"], r["perturbation"]))))
    rows["neighbours"] = defaultdict(list)
    e = cols(atlas.table("edges"))
    for i in range(len(e["kind"])):
        a, b = (e["layer_a"][i], e["feature_a"][i]), (e["layer_b"][i], e["feature_b"][i])
        w, kind = sig(e["weight"][i]), e["kind"][i]
        rows["neighbours"][a].append(Neighbour(a[1], kind, "down", b[0], b[1], w, labels.get(b) or ""))
        rows["neighbours"][b].append(Neighbour(b[1], kind, "up", a[0], a[1], w, labels.get(a) or ""))
    order = {"celltypes": _effect, "perturbation": lambda r: -abs(r.effect or 0),
             "neighbours": lambda r: (r.kind, -(r.weight if isinstance(r.weight, float) else 0), r.neighbour_layer,
                                      r.neighbour_feature)}
    causal = _causal(atlas)
    mods = {(r["layer"], r["module"]): r for r in atlas.table("modules").to_pylist()}
    shards: dict[str, dict] = {}
    for i in range(len(feats["layer"])):
        key = (lay, f) = feats["layer"][i], feats["feature"][i]
        m = feats["module"][i]
        mod = mods.get((lay, m), {}) if m is not None else {}
        shard = shards.setdefault(f"feat/{lay}/{f // BUCKET}.json",
                                  {"layer": lay, "features": [], "causal": {}, **{t: [] for t in FEATURE_TABLES}})
        shard["features"].append(Feature(
            f, feats["alive"][i], sig(feats["frequency"][i], 3), sig(feats["mean_activation"][i]),
            feats["fire_count"][i], feats["label"][i], feats["label_database"][i], sig(feats["label_q"][i], 3),
            feats["svd_aligned"][i], m, mod.get("label"), mod.get("n_features")))
        for t in FEATURE_TABLES:
            shard[t] += sorted(rows[t].get(key, []), key=order[t]) if t in order else rows[t].get(key, [])
        if key in causal:
            shard["causal"][str(f)] = causal[key]
    return {path: {k: table(v) if isinstance(v, list) else v for k, v in shard.items()} for path, shard in shards.items()}


def _modules(atlas, labels, genes) -> dict:
    members = defaultdict(list)
    mm = cols(atlas.table("module_members"))
    for i in range(len(mm["layer"])):
        members[(mm["layer"][i], mm["module"][i])].append(mm["feature"][i])
    placeholders = {k[1] for k in PLACEHOLDERS}
    return table(Module(r["layer"], r["module"], r["n_features"], r["label"],
                        table(TopTerm(t, c, 1 if t in placeholders else None)
                              for t, c in zip(r["top_terms"], r["top_term_counts"])),
                        members[(r["layer"], r["module"])],
                        [feature_name((r["layer"], f), labels, genes) for f in members[(r["layer"], r["module"])][:NAMED_MEMBERS]])
                  for r in atlas.table("modules").to_pylist())


def feature_name(key, labels, genes) -> str:
    """What the site shows beside a feature's id: its label, else its first three top genes."""
    return labels.get(key) or ("genes " + ", ".join(g.gene for g in genes.get(key, [])[:3]) if genes.get(key) else "")


def _flow(atlas, labels, genes) -> dict:
    """Cross-layer links: every edge with its kind, per-pair summaries, and module-to-module link counts."""
    e = cols(atlas.table("edges"))
    rows = [Edge(e["kind"][i], e["layer_a"][i], e["feature_a"][i], e["layer_b"][i], e["feature_b"][i],
                 sig(e["weight"][i]), e["count"][i], sig(e["null_p"][i], 3)) for i in range(len(e["kind"]))]
    module_of = {k: m for k, m in zip(zip(*(cols(atlas.table("features"))[c] for c in ("layer", "feature"))),
                                      atlas.table("features").column("module").to_pylist()) if m is not None}
    pairs, links = defaultdict(lambda: {"edges": 0, "up": set(), "down": set(), "w": []}), Counter()
    for r in rows:
        p = pairs[(r.kind, r.layer_a, r.layer_b)]
        p["edges"] += 1
        p["up"].add(r.feature_a)
        p["down"].add(r.feature_b)
        if isinstance(r.weight, float):
            p["w"].append(r.weight)
        ma, mb = module_of.get((r.layer_a, r.feature_a)), module_of.get((r.layer_b, r.feature_b))
        if ma is not None and mb is not None:
            links[(r.kind, r.layer_a, ma, r.layer_b, mb)] += 1
    published = {(p.get("layer_a"), p.get("layer_b")): p for p in atlas.manifest.get("cross_layer_pairs", [])}
    summary = []
    for (kind, la, lb), p in sorted(pairs.items()):
        pub = published.get((la, lb), {}) if kind == "cross_layer_pmi" else {}
        summary.append({"kind": kind, "layer_a": la, "layer_b": lb, "edges": p["edges"], "features_a": len(p["up"]),
                        "features_b": len(p["down"]), "mean_weight": sig(sum(p["w"]) / len(p["w"]), 3) if p["w"] else None,
                        "max_weight": sig(max(p["w"]), 3) if p["w"] else None,
                        "published": {k: sig(v, 3) for k, v in pub.items() if k not in ("layer_a", "layer_b")}})
    used = {(r.layer_a, r.feature_a) for r in rows} | {(r.layer_b, r.feature_b) for r in rows}
    linked = {(k[1], k[2]) for k in links} | {(k[3], k[4]) for k in links}
    return {"pairs": summary, "edges": table(rows),
            "module_links": table(ModuleLink(*k, n) for k, n in sorted(links.items())),
            "modules": table(FlowModule(r["layer"], r["module"], r["n_features"], r["label"])
                             for r in atlas.table("modules").to_pylist() if (r["layer"], r["module"]) in linked),
            "labels": {f"{k[0]}:{k[1]}": name for k in sorted(used) if (name := feature_name(k, labels, genes))}}


def _comparisons(atlas, labels) -> dict:
    """Side analyses for the comparisons page: SVD/PCA vs SAE metrics with their baselines, persistence, causal."""
    svd = defaultdict(dict)
    for r in atlas.table("svd_comparison").to_pylist():
        svd[r["metric"]][str(r["layer"])] = sig(r["value"], 4)
    metrics = []
    for m in sorted(svd):
        if _baseline_of(m, svd) is not None:
            continue  # shown beside the metric it is the baseline of
        base = next((b for b in (f"{m}_random", f"{m}_expected", "share_expected_random" if m == "share_aligned" else "")
                     if b in svd), None)
        metrics.append({"metric": m, "values": svd[m], "baseline": base, "baseline_values": svd.get(base, {})})
    out = {"svd": metrics, "persistence": [], "extras": atlas.manifest.get("extras", {})}
    if atlas.has("persistence"):
        out["persistence"] = [{k: sig(v, 4) for k, v in r.items() if v is not None}
                              for r in atlas.table("persistence").to_pylist()]
    # The published ratios; a built atlas' AUCs are on the feature pages.
    out["causal"] = table(CausalRatio(r["layer"], r["feature"], sig(r["specificity_ratio"], 3),
                                      sig(r["target_change"], 3), sig(r["other_change"], 3), r["n_cells"],
                                      labels.get((r["layer"], r["feature"])) or None)
                          for r in atlas.table("causal_summary").to_pylist() if r["specificity_ratio"] is not None)
    return out


CAUSAL_FIELDS = ("method", "selection", "n_cells", "specificity", "null_mean", "null_sd", "z", "p", "q", "n_null",
                 "n_top_genes", "total_effect", "total_lo", "total_hi", "objective_change", "attribution",
                 "target_change", "other_change", "specificity_ratio", "top_genes")


def _causal(atlas) -> dict[tuple[int, int], dict]:
    """(layer, feature) -> the feature's intervention record: summary fields that are set, and its gene effects
    (top_gene: 1 if the gene is one of its top genes), most affected first."""
    effects = group(atlas.table("causal_effects"), ["gene", "delta", "ci_lo", "ci_hi", "n_cells", "top_gene"],
                    lambda g, d, lo, hi, n, t: Effect(g, sig(d, 3), sig(lo, 3), sig(hi, 3), n, int(t)))
    alpha = (atlas.manifest.get("interventions") or {}).get("alpha")  # the build's level; none when imported
    out = {}
    for r in atlas.table("causal_summary").to_pylist():
        rec = {k: sig(r[k], 3) for k in CAUSAL_FIELDS if r.get(k) is not None}
        if alpha is not None:
            rec["alpha"] = alpha
        rec["effects"] = table(effects.get((r["layer"], r["feature"]), []))
        out[(r["layer"], r["feature"])] = rec
    return out


def _baseline_of(metric: str, svd: dict):
    for suffix in ("_random", "_expected"):
        if metric.endswith(suffix) and metric[: -len(suffix)] in svd:
            return metric[: -len(suffix)]
    return "share_aligned" if metric == "share_expected_random" and "share_aligned" in svd else None
