"""Cut an atlas into the small JSON shards the site fetches: each view loads only what it shows.

Layout (paths relative to the site's data folder):
  layer/L.json            columnar table of every feature of layer L (layer explorer, feature map)
  feat/L/B.json           details of features B*BUCKET .. B*BUCKET+BUCKET-1 of layer L (feature page)
  genes/n/K.json          gene names starting with K, with their feature counts (search suggestions)
  genes/p/KK.json         postings of the genes whose first two characters map to KK (search results);
                          a gene with very many postings has its own file, named in its genes/n entry
  terms/index.json        every enriched term with its database and feature count (term search)
  terms/p/B.json          postings of terms B*TERM_BUCKET .. (term results)
  modules.json, flow.json modules and cross-layer edges
Numbers are rounded to what the page shows, so shards stay small and byte-stable.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pyarrow as pa

from ..atlas.format import Atlas

BUCKET = 32          # features per feature-detail shard: one shard is a few KB gzipped
TERM_BUCKET = 256    # terms per term-postings shard
MAP_GRID = 4095      # map coordinates quantized to 12 bits
LABEL_CHARS = 80     # labels in search results are cut here (the feature page shows them whole)
OWN_SHARD = 400      # a gene with more postings than this gets its own postings file


def sig(v, digits=4):
    """Round to significant digits; non-finite numbers become the strings the page formats."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return float(f"{v:.{digits}g}")
    return v


def shard_key(ch: str) -> str:
    """File-safe key of one character of a gene name: A-Z and 0-9 as themselves, anything else `_`."""
    c = ch.upper()
    return c if ("A" <= c <= "Z" or "0" <= c <= "9") else "_"


def gene_keys(name: str) -> tuple[str, str]:
    k1 = shard_key(name[0]) if name else "_"
    k2 = k1 + (shard_key(name[1]) if len(name) > 1 else "_")
    return k1, k2


def _cols(t: pa.Table) -> dict[str, list]:
    return {c: t.column(c).to_pylist() for c in t.column_names}


def _group(t: pa.Table, fields: list[str], fn) -> dict[tuple[int, int], list]:
    """(layer, feature) -> list of fn(row) for the rows of a table, in its stored (sorted) order."""
    cols = _cols(t)
    out = defaultdict(list)
    for i in range(t.num_rows):
        out[(cols["layer"][i], cols["feature"][i])].append(fn(*(cols[f][i] for f in fields)))
    return out


def build_shards(atlas: Atlas) -> dict[str, object]:
    feats = _cols(atlas.table("features"))
    n = len(feats["layer"])
    labels = {(feats["layer"][i], feats["feature"][i]): feats["label"][i] for i in range(n)}
    genes = _group(atlas.table("feature_genes"), ["gene", "activation", "fire_count"],
                   lambda g, a, fc: [g, sig(a), fc])
    shards: dict[str, object] = {}
    shards.update(_layer_shards(feats, genes))
    shards.update(_feature_shards(atlas, feats, genes, labels))
    shards.update(_gene_shards(atlas, labels))
    shards.update(_term_shards(atlas))
    shards["modules.json"] = _modules(atlas)
    shards["flow.json"] = _flow(atlas, labels)
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
        out[f"layer/{lay}.json"] = {
            "layer": lay,
            "feature": [feats["feature"][i] for i in idx],
            "alive": [int(feats["alive"][i]) for i in idx],
            "frequency": [sig(feats["frequency"][i], 3) for i in idx],
            "mean_activation": [sig(feats["mean_activation"][i], 3) for i in idx],
            "fire_count": [feats["fire_count"][i] for i in idx],
            "n_enrichments": [feats["n_enrichments"][i] for i in idx],
            "module": [feats["module"][i] for i in idx],
            "label": [feats["label"][i] or "" for i in idx],
            "database": [feats["label_database"][i] or "" for i in idx],
            "genes": [[g[0] for g in genes.get((lay, feats["feature"][i]), [])[:5]] for i in idx],
            "x": [p[0] if p else None for p in xy],
            "y": [p[1] if p else None for p in xy],
        }
    return out


def _feature_shards(atlas, feats, genes, labels) -> dict[str, object]:
    enr = _group(atlas.table("enrichments"),
                 ["database", "term", "p", "q", "odds_ratio", "overlap", "overlap_genes", "set_size", "edge_density"],
                 lambda d, t, p, q, o, ov, og, ss, ed: [d, t, sig(p, 3), sig(q, 3), sig(o, 4), ov, og, ss, sig(ed, 3)])
    cts = _group(atlas.table("celltypes"), ["level", "name", "q", "odds_ratio", "n_top"],
                 lambda lv, nm, q, o, nt: [lv, nm, sig(q, 3), sig(o, 4), nt])
    tcs = _group(atlas.table("top_cells"), ["cell_type", "tissue", "activation"],
                 lambda c, t, a: [c, t, sig(a)])
    mods = {(r["layer"], r["module"]): r for r in atlas.table("modules").to_pylist()}
    xl = defaultdict(list)
    e = _cols(atlas.table("edges"))
    for i in range(len(e["kind"])):
        a, b = (e["layer_a"][i], e["feature_a"][i]), (e["layer_b"][i], e["feature_b"][i])
        w, kind = sig(e["weight"][i]), e["kind"][i]
        xl[a].append([kind, "down", b[0], b[1], w, labels.get(b) or ""])
        xl[b].append([kind, "up", a[0], a[1], w, labels.get(a) or ""])
    out: dict[str, dict] = {}
    for i in range(len(feats["layer"])):
        key = (lay, f) = feats["layer"][i], feats["feature"][i]
        m = feats["module"][i]
        mod = mods.get((lay, m)) if m is not None else None
        rec = {
            "alive": feats["alive"][i], "frequency": sig(feats["frequency"][i]),
            "mean_activation": sig(feats["mean_activation"][i]), "fire_count": feats["fire_count"][i],
            "label": feats["label"][i], "database": feats["label_database"][i], "q": sig(feats["label_q"][i], 3),
            "svd_aligned": feats["svd_aligned"][i],
            "module": None if mod is None else [m, mod["label"], mod["n_features"]],
            "genes": genes.get(key, []), "enrichments": enr.get(key, []), "celltypes": cts.get(key, []),
            "top_cells": tcs.get(key, []),
            "neighbours": sorted(xl.get(key, []), key=lambda r: (-(r[4] if isinstance(r[4], float) else 0), r[2], r[3])),
        }
        shard = out.setdefault(f"feat/{lay}/{f // BUCKET}.json", {"layer": lay, "features": {}})
        shard["features"][str(f)] = rec
    return out


def _gene_shards(atlas, labels) -> dict[str, object]:
    g = _cols(atlas.table("feature_genes"))
    postings = defaultdict(list)
    for i in range(len(g["gene"])):
        postings[g["gene"][i]].append((g["layer"][i], g["feature"][i], g["rank"][i], sig(g["activation"][i])))
    names = defaultdict(list)
    post = defaultdict(lambda: {"labels": [], "genes": {}})
    label_ids: dict[str, dict[str, int]] = defaultdict(dict)
    own = defaultdict(int)
    for gene in sorted(postings):
        k1, k2 = gene_keys(gene)
        if len(postings[gene]) > OWN_SHARD:
            # A gene that tops very many features gets a file of its own, so its neighbours stay small.
            own[k2] += 1
            k2 = f"{k2}-{own[k2]}"
            names[k1].append([gene, len(postings[gene]), k2])
        else:
            names[k1].append([gene, len(postings[gene])])
        shard, ids = post[k2], label_ids[k2]
        rows = []
        for lay, f, rank, act in sorted(postings[gene]):
            lb = (labels.get((lay, f)) or "")[:LABEL_CHARS]
            if lb not in ids:
                ids[lb] = len(shard["labels"])
                shard["labels"].append(lb)
            rows.append([lay, f, rank, act, ids[lb]])
        shard["genes"][gene] = rows
    out = {f"genes/n/{k}.json": v for k, v in names.items()}
    out.update({f"genes/p/{k}.json": v for k, v in post.items()})
    return out


def _term_shards(atlas) -> dict[str, object]:
    e = _cols(atlas.table("enrichments"))
    by_term = defaultdict(list)
    for i in range(len(e["term"])):
        by_term[(e["database"][i], e["term"][i])].append(
            [e["layer"][i], e["feature"][i], sig(e["q"][i], 3), sig(e["odds_ratio"][i], 4), e["overlap"][i]])
    index, out = [], {}
    for n, key in enumerate(sorted(by_term, key=lambda k: (k[1].lower(), k[0]))):
        rows = sorted(by_term[key])
        index.append([key[1], key[0], len(rows)])
        shard = out.setdefault(f"terms/p/{n // TERM_BUCKET}.json", {})
        shard[str(n)] = rows
    out["terms/index.json"] = index
    return out


def _modules(atlas) -> list:
    members = defaultdict(list)
    mm = _cols(atlas.table("module_members"))
    for i in range(len(mm["layer"])):
        members[(mm["layer"][i], mm["module"][i])].append(mm["feature"][i])
    return [[r["layer"], r["module"], r["n_features"], r["label"], list(zip(r["top_terms"], r["top_term_counts"])),
             members[(r["layer"], r["module"])]] for r in atlas.table("modules").to_pylist()]


def _flow(atlas, labels) -> dict:
    e = _cols(atlas.table("edges"))
    rows = [[e["kind"][i], e["layer_a"][i], e["feature_a"][i], e["layer_b"][i], e["feature_b"][i],
             sig(e["weight"][i]), e["count"][i], sig(e["null_p"][i], 3)] for i in range(len(e["kind"]))]
    used = {(r[1], r[2]) for r in rows} | {(r[3], r[4]) for r in rows}
    return {"pairs": atlas.manifest.get("cross_layer_pairs", []), "edges": rows,
            "labels": {f"{k[0]}:{k[1]}": labels[k] for k in sorted(used) if labels.get(k)}}
