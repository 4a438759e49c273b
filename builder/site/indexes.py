"""Search indexes the site fetches piece by piece: genes, enriched terms, cell types.

Shards (tables are columnar, builder/site/encode.py; `label` is an index into the shard's `labels` list, which
holds each label once, cut at LABEL_CHARS):
  genes/n/K.json          the genes whose name's first character has the key K (search suggestions):
                          table {gene, n_features, file}; `file` names the postings file of a gene with very many
                          postings (it has a file of its own), else null
  genes/p/KK.json         postings of the genes whose first two characters have the key KK (search results):
                          {labels, genes: {gene: table {layer, feature, rank, activation, label}}}
  terms/index.json        every enriched term: table {term, database, n_features, note}; a term's id is its row
                          number; note explains a placeholder that is not a gene set
  terms/p/B.json          postings of terms B*TERM_BUCKET ..: {labels, id: table {layer, feature, q, odds_ratio,
                          overlap, edge_density, label}}
  celltypes/index.json    every cell type with its marker features: table {name, n_features, n_layers}
  celltypes/p/N.json      cell type N of the index: {name, n_features, per_layer: table {layer, n_features}, labels,
                          features: table {layer, feature, auc, odds_ratio, q, n_firing, n_cells, n_top, label}},
                          the CELLTYPE_TOP strongest by effect
Keys: shard_key maps one character of a name to a file-safe key; static/lib/data.js has the browser's copy
(nameKey), tested against this one on tricky names (tests/test_views.py).
"""

from __future__ import annotations

import math
from collections import defaultdict, namedtuple

import duckdb
import pyarrow as pa

from .encode import columns, sig, table

TERM_BUCKET = 256    # terms per term-postings shard
LABEL_CHARS = 80     # labels in search results are cut here (the feature page shows them whole)
OWN_SHARD = 400      # a gene with more postings than this gets its own postings file
CELLTYPE_TOP = 400   # marker features listed per cell type (all are counted)
KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

# Rows of the tables above: their field names are the shard fields.
GeneName = namedtuple("GeneName", "gene n_features file")
TermPosting = namedtuple("TermPosting", "layer feature q odds_ratio overlap edge_density label")
Term = namedtuple("Term", "term database n_features note")
Marker = namedtuple("Marker", "layer feature auc odds_ratio q n_firing n_cells n_top label")
CellType = namedtuple("CellType", "name n_features n_layers")


def _cols(t: pa.Table) -> dict[str, list]:
    return {c: t.column(c).to_pylist() for c in t.column_names}


def shard_key(ch: str) -> str:
    """File-safe key of one character of a name: A-Z (in either case) and 0-9 as themselves, anything else `_`
    (a character whose upper case is several, as ß -> SS, included)."""
    c = ch.upper()
    return c if c in KEY_CHARS else "_"


def name_key(name: str, n: int = 2) -> str:
    """The key of a name's first n characters (code points); a shorter name is padded with `_`."""
    return "".join(shard_key(name[i]) if i < len(name) else "_" for i in range(n))


def gene_keys(name: str) -> tuple[str, str]:
    """The gene name list (genes/n) and postings (genes/p) keys of a name."""
    return name_key(name, 1), name_key(name, 2)


class _Labels:
    """Labels deduplicated per shard: rows point at an index instead of repeating long strings."""

    def __init__(self):
        self.list, self.ids = [], {}

    def id(self, label: str) -> int:
        if label not in self.ids:
            self.ids[label] = len(self.list)
            self.list.append(label)
        return self.ids[label]


def gene_shards(atlas) -> dict[str, object]:
    """Postings of every top gene, joined with feature labels and sorted by DuckDB (bench/index_bench.py: at
    Geneformer scale 1.9x faster than grouping in Python, with a lower peak, and the same bytes)."""
    con = duckdb.connect()
    con.execute("SET threads = 2")
    genes, feats = (str(atlas.path / f"{t}.parquet").replace("'", "''") for t in ("feature_genes", "features"))
    rows = con.sql(f"""
        SELECT g.gene, g.layer, g.feature, g.rank, g.activation, left(coalesce(f.label, ''), {LABEL_CHARS}) AS label,
               count(*) OVER (PARTITION BY g.gene) AS n
        FROM read_parquet('{genes}') g JOIN read_parquet('{feats}') f USING (layer, feature)
        ORDER BY g.gene, g.layer, g.feature, g.rank""").to_arrow_table()
    c = _cols(rows)
    con.close()
    names, post, own = defaultdict(list), defaultdict(lambda: {"labels": _Labels(), "genes": {}}), defaultdict(int)
    i = 0
    while i < len(c["gene"]):
        gene, n = c["gene"][i], c["n"][i]
        k1, k2 = gene_keys(gene)
        if n > OWN_SHARD:
            # A gene that tops very many features gets a file of its own, so its neighbours stay small.
            own[k2] += 1
            k2 = f"{k2}-{own[k2]}"
            names[k1].append(GeneName(gene, n, k2))
        else:
            names[k1].append(GeneName(gene, n, None))
        shard, rows = post[k2], slice(i, i + n)
        shard["genes"][gene] = columns({
            "layer": c["layer"][rows], "feature": c["feature"][rows], "rank": c["rank"][rows],
            "activation": [sig(v) for v in c["activation"][rows]],
            "label": [shard["labels"].id(v) for v in c["label"][rows]]})
        i += n
    out = {f"genes/n/{k}.json": table(v) for k, v in names.items()}
    out.update({f"genes/p/{k}.json": {"labels": v["labels"].list, "genes": v["genes"]} for k, v in post.items()})
    return out


def term_shards(atlas, placeholders, labels: dict | None = None) -> dict[str, object]:
    """terms/index.json and terms/p/B.json; placeholders: (database, term) -> what a placeholder term stands for;
    labels: (layer, feature) -> the feature's label, shown beside its id."""
    labels = labels or {}
    e = _cols(atlas.table("enrichments"))
    by_term = defaultdict(list)
    for i in range(len(e["term"])):
        by_term[(e["database"][i], e["term"][i])].append(TermPosting(
            e["layer"][i], e["feature"][i], sig(e["q"][i], 3), sig(e["odds_ratio"][i], 4), e["overlap"][i],
            sig(e["edge_density"][i], 3), None))
    index, out, names = [], {}, {}
    for n, key in enumerate(sorted(by_term, key=lambda k: (k[1].lower(), k[0]))):
        path = f"terms/p/{n // TERM_BUCKET}.json"
        lab = names.setdefault(path, _Labels())
        rows = [r._replace(label=lab.id((labels.get((r.layer, r.feature)) or "")[:LABEL_CHARS]))
                for r in sorted(by_term[key])]
        index.append(Term(key[1], key[0], len(rows), placeholders.get(key)))
        shard = out.setdefault(path, {})
        shard[str(n)] = table(rows)
    for path, lab in names.items():
        out[path]["labels"] = lab.list
    out["terms/index.json"] = table(index)
    return out


def celltype_shards(atlas, labels) -> dict[str, object]:
    """Per cell type: marker features of every layer, strongest effect first (AUC where measured, else odds ratio)."""
    t = atlas.table("celltypes")
    c = _cols(t)
    by_type = defaultdict(list)
    for i in range(t.num_rows):
        if c["level"][i] == "tissue":
            continue
        by_type[c["name"][i]].append(Marker(
            c["layer"][i], c["feature"][i], sig(c["auc"][i], 3), sig(c["odds_ratio"][i], 4), sig(c["q"][i], 3),
            c["n_firing"][i], c["n_cells"][i], c["n_top"][i], None))

    def effect(r):
        odds = math.inf if r.odds_ratio == "inf" else (r.odds_ratio or 0)
        return (-(r.auc if r.auc is not None else -1), -odds, r.layer, r.feature)

    index, out = [], {}
    for n, name in enumerate(sorted(by_type, key=str.lower)):
        rows = sorted(by_type[name], key=effect)
        per_layer = defaultdict(int)
        for r in rows:
            per_layer[r.layer] += 1
        lab = _Labels()
        top = [r._replace(label=lab.id((labels.get((r.layer, r.feature)) or "")[:LABEL_CHARS]))
               for r in rows[:CELLTYPE_TOP]]
        index.append(CellType(name, len(rows), len(per_layer)))
        out[f"celltypes/p/{n}.json"] = {
            "name": name, "n_features": len(rows), "labels": lab.list, "features": table(top),
            "per_layer": columns({"layer": sorted(per_layer), "n_features": [per_layer[k] for k in sorted(per_layer)]})}
    out["celltypes/index.json"] = table(index)
    return out
