"""Shards and boot data of the links (`atlas link`): the feature page's "same program in <other atlas>" section, the
#/links view and the overview's shares per pair of layers. Tables are columnar (encode.py); their fields:

  links/L/B.json   the link rows of features B*BUCKET .. B*BUCKET+BUCKET-1 of layer L (only buckets with rows):
                   {layer, rows: table {feature, other (index into boot links.others), other_layer, other_feature,
                   rank, r, null_r, null_sd, q, twin_r, twin_q, beyond, mutual, overlap, genes, gene_q, cell_types,
                   label (the partner's)}}
  links.json       the strongest matches: per other atlas, its rank-1 rows beyond both nulls (beyond the cell-type
                   shuffle for a twin), highest r first, at most STRONGEST: {rows: table {other, layer, feature, label,
                   other_layer, other_feature, other_label, r, null_r, twin_r, q, overlap, genes, cell_types, mutual},
                   matches: [count per other atlas, before the cut]}
Boot (`links`, inlined; None without links): {others: [{name, kind ("atlas" or "twin"), title, href (the other
atlas' site beside this one: ../NAME/; none for a twin)}], pairs: table {other, layer, other_layer, tested, matched,
beyond_twin, beyond_both, share, share_lo, share_hi, twin_share, twin_lo, twin_hi}, shards: {L: [buckets]},
cells: {other: shared cells}}. The shares and intervals are manifest.links' (computed by atlas link).
"""

from __future__ import annotations

from collections import defaultdict, namedtuple

from ..atlas.format import Atlas
from .encode import columns, sig, table

STRONGEST = 300  # matches listed per other atlas in the #/links view (all are in the downloads)
LinkRow = namedtuple("LinkRow", "feature other other_layer other_feature rank r null_r null_sd q twin_r twin_q beyond "
                                "mutual overlap genes gene_q cell_types label")
Strong = namedtuple("Strong", "other layer feature label other_layer other_feature other_label r null_r twin_r q "
                              "overlap genes cell_types mutual")


def _others(atlas: Atlas) -> list[str]:
    return sorted((atlas.manifest.get("links") or {}).keys())


def links_boot(atlas: Atlas, bucket: int) -> dict | None:
    if not atlas.has("feature_links") or not atlas.table("feature_links").num_rows:
        return None
    records = atlas.manifest.get("links") or {}
    others = _others(atlas)
    t = atlas.table("feature_links").select(["other_atlas", "layer", "feature"]).to_pydict()
    shards = defaultdict(set)
    for L, f in zip(t["layer"], t["feature"]):
        shards[L].add(f // bucket)
    pairs = defaultdict(list)
    for i, name in enumerate(others):
        for p in records[name].get("layer_pairs", []):
            pairs["other"].append(i)
            for k in ("layer", "other_layer", "tested", "matched", "beyond_twin", "beyond_both"):
                pairs[k].append(p.get(k))
            for k, src in (("share", "share"), ("share_lo", "share_lo"), ("share_hi", "share_hi"),
                           ("twin_share", "twin_share"), ("twin_lo", "twin_share_lo"), ("twin_hi", "twin_share_hi")):
                pairs[k].append(sig(p.get(src)))
    return {"others": [{"name": n, "kind": records[n].get("kind", "atlas"), "title": records[n].get("other_title") or n,
                        "href": f"../{n}/" if records[n].get("kind", "atlas") == "atlas" else None} for n in others],
            "pairs": columns(dict(pairs)), "shards": {str(L): sorted(b) for L, b in sorted(shards.items())},
            "cells": {n: records[n].get("cells") for n in others}}


def link_shards(atlas: Atlas, labels: dict, bucket: int) -> dict[str, object]:
    """links/L/B.json and links.json; none when the atlas has no links."""
    if not atlas.has("feature_links") or not atlas.table("feature_links").num_rows:
        return {}
    index = {n: i for i, n in enumerate(_others(atlas))}
    rows = atlas.table("feature_links").to_pylist()  # sorted by (other_atlas, layer, feature, other_layer, rank)
    by_shard, strong = defaultdict(list), defaultdict(list)
    for r in rows:
        other = index.get(r["other_atlas"])
        if other is None:  # rows without a record (an older manifest): not shown
            continue
        by_shard[(r["layer"], r["feature"] // bucket)].append(LinkRow(
            r["feature"], other, r["other_layer"], r["other_feature"], r["rank"], sig(r["r"], 3), sig(r["null_r"], 3),
            sig(r["null_sd"], 3), sig(r["q"], 3), sig(r["twin_r"], 3), sig(r["twin_q"], 3), int(r["beyond_nulls"]),
            int(r["mutual"]), r["overlap"], r["overlap_genes"], sig(r["gene_q"], 3), r["shared_cell_types"],
            r["other_label"]))
        if r["rank"] == 1 and r["beyond_nulls"]:
            strong[other].append(r)
    out: dict[str, object] = {}
    for (L, b), items in sorted(by_shard.items()):
        items.sort(key=lambda x: (x.feature, x.other, x.other_layer, x.rank))
        out[f"links/{L}/{b}.json"] = {"layer": L, "rows": table(items)}
    listed, counts = [], []
    for other in range(len(index)):
        best = sorted(strong.get(other, []), key=lambda r: (-r["r"], r["layer"], r["feature"], r["other_layer"]))
        counts.append(len(best))
        listed += [Strong(other, r["layer"], r["feature"], labels.get((r["layer"], r["feature"])), r["other_layer"],
                          r["other_feature"], r["other_label"], sig(r["r"], 3), sig(r["null_r"], 3),
                          sig(r["twin_r"], 3), sig(r["q"], 3), r["overlap"], r["overlap_genes"],
                          r["shared_cell_types"], int(r["mutual"])) for r in best[:STRONGEST]]
    out["links.json"] = {"rows": table(listed), "matches": counts}
    return out
