"""Import a published atlas in the predecessor's compact JSON format (Biodyn-AI scgpt-atlas / geneformer atlas).

The format's quirks are tolerated: the non-standard JSON numbers `Infinity`/`NaN`, optional files, no
gene_index.json, any number of layers and features per layer. What is not imported is reported.
Field meanings (from the predecessor's preprocess script): `p` in annotations and cell types is the
BH-adjusted p-value (so it becomes our `q`); for STRING_edges / TRRUST_edges it is an edge density.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .format import SCHEMA, annotation_rate, write_atlas
from ..errors import AtlasError
from ..fsutil import sha256_file

LAYER_FILE = re.compile(r"layer_(\d+)_(features|annotations|celltypes|positions)\.json")
GLOBAL_FILES = ("global_summary.json", "modules.json", "cross_layer_graph.json", "causal_patching.json",
                "svd_comparison.json", "cross_layer_tracking.json", "novel_clusters.json",
                "perturbation_response.json")
DERIVED_FILES = {"gene_index.json": "derived from the feature gene lists",
                 "ontology_index.json": "derived from the enrichments"}
EDGE_COUNT_DBS = {"STRING_edges", "TRRUST_edges"}  # their `p` is an edge density, not a p-value
# The predecessor's placeholder "terms": a TF-list test and edge counts, not gene sets. They never become labels.
PLACEHOLDER_TERMS = {"transcription_factors", "pairwise_enrichment"}
PLACEHOLDER_DBS = EDGE_COUNT_DBS | {"TRRUST_TF_enrichment"}
# The published Geneformer atlas (18 layers) patched and perturbed features of layer 11, as its study documents;
# its causal_patching.json and perturbation_response.json carry no layer field.
GENEFORMER_LAYERS, GENEFORMER_INTERVENTION_LAYER = 18, 11
FAMILY_NAMES = {"scgpt": "scGPT", "geneformer": "Geneformer"}  # the model's name when the files give none


@dataclass
class Report:
    skipped: list[str] = field(default_factory=list)
    nonstandard_numbers: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # what was imported: layers, features, ..., edges


@dataclass
class Known:
    """What the layer files established, for the global files that name layers and features by number."""
    widths: dict[int, int]  # layer -> number of features (ids 0 .. n - 1)
    # (layer, feature) -> (label, top genes) exactly as layer_NN_features.json gives them ('lb', 'tg' names)
    published: dict[tuple[int, int], tuple[str | None, list[str]]]
    documented_layer: int | None  # the study's documented layer of the intervention files, when recognised

    def has(self, layer, feature) -> bool:
        return (layer in self.widths and isinstance(feature, int) and not isinstance(feature, bool)
                and 0 <= feature < self.widths[layer])


class _Reader:
    """Reads one source folder's JSON files, counting non-standard numbers per file."""

    def __init__(self, src: Path, report: Report):
        self.src, self.report = src, report

    def load(self, name: str, expect: type):
        path = self.src / name
        count = 0

        def constant(token):
            nonlocal count
            count += 1
            return {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}[token]

        try:
            data = json.loads(path.read_bytes(), parse_constant=constant)
        except json.JSONDecodeError as e:
            raise AtlasError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except UnicodeDecodeError:
            raise AtlasError(f"{path}: not valid JSON (not UTF-8 text)") from None
        if not isinstance(data, expect):
            raise AtlasError(f"{path}: expected a JSON {'object' if expect is dict else 'array'} at the top level")
        if count:
            self.report.nonstandard_numbers[name] = count
        return data


def _num(v):
    """A finite float or None (NaN and the like become missing)."""
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _field(rec, key, kind, where):
    if not isinstance(rec, dict) or key not in rec:
        raise AtlasError(f"{where}: missing field {key!r}")
    v = rec[key]
    ok = {"int": isinstance(v, int) and not isinstance(v, bool),
          "num": isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": isinstance(v, bool), "str": isinstance(v, str), "list": isinstance(v, list),
          "dict": isinstance(v, dict)}[kind]
    if not ok:
        expected = {"int": "an integer", "num": "a number", "bool": "true/false", "str": "a string",
                    "list": "an array", "dict": "an object"}[kind]
        raise AtlasError(f"{where}: field {key!r} is {json.dumps(v)[:40]}, expected {expected}")
    return v


def import_biodyn(src: Path, out: Path, atlas_id: str, title: str | None = None,
                  model_family: str | None = None) -> tuple[Path, Report]:
    src = Path(src)
    if not src.is_dir():
        raise AtlasError(f"{src}: no such source folder")
    report = Report()
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    layer_files: dict[int, dict[str, str]] = defaultdict(dict)
    for n in names:
        m = LAYER_FILE.fullmatch(n)
        if m:
            layer_files[int(m.group(1))][m.group(2)] = n
        elif n in DERIVED_FILES:
            report.skipped.append(f"{n}: not imported ({DERIVED_FILES[n]})")
        elif n not in GLOBAL_FILES:
            report.skipped.append(f"{n}: not part of the format, ignored")
    layers = sorted(lay for lay, files in layer_files.items() if "features" in files)
    if not layers:
        raise AtlasError(f"{src}: no layer_NN_features.json file (is this a predecessor atlas data folder?)")
    for lay in sorted(set(layer_files) - set(layers)):
        report.skipped.append(f"layer {lay}: no layer_{lay:02d}_features.json, its other files ignored")
    reader = _Reader(src, report)
    family = model_family or ("geneformer" if {"svd_comparison.json", "perturbation_response.json"} & set(names)
                              else "unknown")

    rows = defaultdict(list)  # table name -> list of row dicts
    dataset = {}
    published = {}
    for lay in layers:
        if lay > 32767:  # layer is int16 in the atlas format
            raise AtlasError(f"{src / layer_files[lay]['features']}: layer {lay} is beyond 32767 (the format's int16)")
        _guard(src / layer_files[lay]["features"], _import_layer, reader, lay, layer_files[lay], rows, dataset,
               published)
    geneformer = family == "geneformer" and layers == list(range(GENEFORMER_LAYERS))
    known = Known(dict(Counter(r["layer"] for r in rows["features"])), published,
                  GENEFORMER_INTERVENTION_LAYER if geneformer else None)
    modules = _guard(src / "modules.json", _import_modules, reader, names, rows, known)
    pairs = _guard(src / "cross_layer_graph.json", _import_cross_layer, reader, names, rows, known)
    extras = _import_extras(reader, names, rows, known)
    summary = reader.load("global_summary.json", dict) if "global_summary.json" in names else None
    if summary is None:
        report.skipped.append("global_summary.json: absent, per-layer summary computed from the features")
    absent = [lay for lay in layers if "annotations" not in layer_files[lay]]
    rows["layers"] = _guard(src / "global_summary.json", _layer_rows, layers, rows, modules, summary, report,
                            set(absent))
    if absent:
        extras["annotations_absent"] = _absent_record(absent, summary)

    tables = {name: _table(name, r) for name, r in rows.items()}
    for name in ("celltypes", "top_cells", "module_members", "modules", "edges"):
        tables.setdefault(name, SCHEMA[name].schema().empty_table())
    n_feat = sum(1 for _ in rows["features"])
    manifest = {
        "atlas": {"id": atlas_id, "title": title or f"{FAMILY_NAMES.get(family, 'Published')} feature atlas (imported)",
                  "description": f"Imported from a published feature atlas ({len(layers)} layers, {n_feat:,} features)."},
        "model": {"family": family, "name": FAMILY_NAMES.get(family), "n_layers": len(layers), "layers": layers},
        # features per layer, as a built atlas records it (the widest layer when they differ)
        "sae": {"kind": None, "n_features": max(Counter(r["layer"] for r in rows["features"]).values(), default=0),
                "note": "The published files do not record the SAE's kind, k or training."},
        "dataset": dataset,
        "genesets": [{"name": db, "enrichments": c} for db, c in sorted(Counter(r["database"] for r in rows["enrichments"]).items())],
        "parameters": {},
        "cross_layer_pairs": pairs,
        "extras": extras,
        "source": {"kind": "biodyn-json", "path": str(src.resolve()),
                   "files": {n: sha256_file(src / n) for n in names},
                   "skipped": report.skipped, "notes": report.notes,
                   "nonstandard_numbers": report.nonstandard_numbers},
        "notes": ["q is the published p_adjusted (Benjamini-Hochberg as run by the predecessor); raw p-values "
                  "and term sizes were not published, so p and set_size are empty.",
                  "STRING_edges and TRRUST_edges rows are the predecessor's edge counts among top genes: "
                  "edge_density holds the published value, and no p-value is given.",
                  "The published labels 'transcription_factors' and 'pairwise_enrichment' are placeholders (a "
                  "TF-list test and edge counts), not gene-set terms: such a feature is labelled by its best "
                  "gene-set term, or left unlabelled."],
    }
    write_atlas(out, manifest, tables)
    report.counts = {"layers": len(rows["layers"]), **{k: sum(r[c] for r in rows["layers"]) for k, c in (
        ("features", "n_features"), ("alive", "alive"), ("annotated", "annotated"))},
        "modules": tables["modules"].num_rows, "edges": tables["edges"].num_rows}
    return out, report


def _guard(where, fn, *args):
    """Run one file's import; content of a shape the checks did not foresee becomes one line naming the file."""
    try:
        return fn(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise AtlasError(f"{where}: unexpected content ({type(e).__name__}: {e})") from None


def _table(name: str, records: list[dict]) -> pa.Table:
    if SCHEMA[name].free_form:
        return _free_form(records)
    try:
        return pa.Table.from_pylist(records, schema=SCHEMA[name].schema())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise AtlasError(f"table {name}: the source gave a value of the wrong kind ({e})") from None


def _import_layer(reader: _Reader, lay: int, files: dict[str, str], rows, dataset: dict, published: dict) -> None:
    fname = files["features"]
    feats = reader.load(fname, list)
    anns = reader.load(files["annotations"], dict) if "annotations" in files else {}
    if "annotations" not in files:
        reader.report.skipped.append(f"layer_{lay:02d}_annotations.json: absent, layer {lay} has no enrichments")
    pos = reader.load(files["positions"], list) if "positions" in files else []
    if "positions" not in files:
        reader.report.skipped.append(f"layer_{lay:02d}_positions.json: absent, layer {lay} has no map")
    if pos and len(pos) != len(feats):
        raise AtlasError(f"{reader.src / files['positions']}: {len(pos)} positions for {len(feats)} features")
    ids = set()
    for n, rec in enumerate(feats):
        where = f"{reader.src / fname}: feature record {n}"
        i = _field(rec, "i", "int", where)
        if not 0 <= i < len(feats):  # a layer's features are numbered 0 .. n - 1 (its width n)
            raise AtlasError(f"{where}: field 'i' is {i}, expected 0 to {len(feats) - 1} (the file's "
                             f"{len(feats)} features are numbered from 0)")
        if i in ids:
            raise AtlasError(f"{where}: duplicate feature index {i}")
        ids.add(i)
        tops = rec.get("tg") if isinstance(rec.get("tg"), list) else []
        published[(lay, i)] = (_label(rec.get("lb")),
                               [g["n"] for g in tops if isinstance(g, dict) and isinstance(g.get("n"), str)])
        ann = anns.get(str(i))
        enr = ann["anns"] if isinstance(ann, dict) and isinstance(ann.get("anns"), list) else []
        label = rec.get("lb") or None
        # The published label is the term with the smallest adjusted p; ties made it ambiguous, so match by name.
        best = next((a for a in enr if a.get("t") == label), None) or (
            min(enr, key=lambda a: a.get("p", 1.0)) if enr else None)
        if label in PLACEHOLDER_TERMS:  # label by the best real gene-set term instead, if there is one
            real = [a for a in enr if a.get("o") not in PLACEHOLDER_DBS and _num(a.get("p")) is not None]
            best = min(real, key=lambda a: a["p"]) if real else None
            label = best.get("t") if best else None
        xy = pos[i] if pos and 0 <= i < len(pos) else None
        if xy is not None and not (isinstance(xy, list) and len(xy) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in xy)):
            raise AtlasError(f"{reader.src / files['positions']}: entry {i} is not an [x, y] pair of numbers")
        module = rec.get("m", -1)
        rows["features"].append({
            "layer": lay, "feature": i, "alive": not _field(rec, "d", "bool", where),
            "frequency": _field(rec, "f", "num", where), "mean_activation": _field(rec, "ma", "num", where),
            "fire_count": _field(rec, "fc", "int", where), "n_enrichments": len(enr), "label": label,
            # without its annotation file, the label's database is the one the features file names ('to')
            "label_database": ((best or {}).get("o") if anns else _database(rec.get("to"))) if label else None,
            "label_q": _num(best.get("p")) if label and best and best.get("o") not in EDGE_COUNT_DBS else None,
            "module": module if isinstance(module, int) and module >= 0 else None,
            "map_x": _num(xy[0]) if xy else None, "map_y": _num(xy[1]) if xy else None,
            "svd_aligned": rec.get("sv") if isinstance(rec.get("sv"), bool) else None,
        })
        genes = ann["genes"] if isinstance(ann, dict) and isinstance(ann.get("genes"), list) else rec.get("tg", [])
        for rank, g in enumerate(genes, 1):
            gw = f"{where}: top gene {rank}"
            rows["feature_genes"].append({"layer": lay, "feature": i, "rank": rank,
                                          "gene": _field(g, "n", "str", gw), "activation": _num(g.get("a")),
                                          "fire_count": g.get("fc") if isinstance(g.get("fc"), int) else None})
        seen = set()
        for a in enr:
            aw = f"{reader.src / files['annotations']}: feature {i}"
            key = (_field(a, "o", "str", aw), _field(a, "t", "str", aw))
            if key in seen:
                reader.report.skipped.append(f"{files['annotations']}: feature {i} repeats term {key[1]!r}, kept the first")
                continue
            seen.add(key)
            edge = key[0] in EDGE_COUNT_DBS
            rows["enrichments"].append({
                "layer": lay, "feature": i, "database": key[0], "term": key[1], "p": None,
                "q": None if edge else _num(a.get("p")), "odds_ratio": None if edge else _num(a.get("or")),
                "overlap": int(a.get("n", 0)), "overlap_genes": [str(g) for g in a.get("g", [])],
                "set_size": None, "edge_density": _num(a.get("p")) if edge else None})
    for key in anns:
        if not key.isdigit() or int(key) not in ids:
            reader.report.skipped.append(f"{files['annotations']}: entry {key!r} names no feature, ignored")
    if "celltypes" in files:
        _guard(reader.src / files["celltypes"], _import_celltypes, reader, lay, files["celltypes"], ids, rows, dataset)
    else:
        reader.report.skipped.append(f"layer_{lay:02d}_celltypes.json: absent, layer {lay} has no cell-type data")


def _import_celltypes(reader, lay, fname, ids, rows, dataset):
    data = reader.load(fname, dict)
    summ = data.get("summary", {})
    if isinstance(summ, dict) and not dataset:
        dataset.update({"cells": summ.get("n_cells"), "tissues": summ.get("tissues"),
                        "n_cell_types": summ.get("n_cell_types")})
    for key, rec in (data.get("features") or {}).items():
        if not key.isdigit() or int(key) not in ids:
            reader.report.skipped.append(f"{fname}: entry {key!r} names no feature, ignored")
            continue
        i = int(key)
        seen = set()
        for level, items, name_key in (("cell_type", rec.get("ct", []), "c"), ("tissue", rec.get("ti", []), "t")):
            for e in items:
                name = _field(e, name_key, "str", f"{reader.src / fname}: feature {i}")
                if (level, name) in seen:
                    continue
                seen.add((level, name))
                rows["celltypes"].append({"layer": lay, "feature": i, "level": level, "name": name,
                                          "q": _num(e.get("p")), "odds_ratio": _num(e.get("or")),
                                          "n_top": e.get("n") if isinstance(e.get("n"), int) else None})
        for rank, e in enumerate(rec.get("tc", []), 1):
            rows["top_cells"].append({"layer": lay, "feature": i, "rank": rank,
                                      "cell_type": _field(e, "ct", "str", f"{reader.src / fname}: feature {i}"),
                                      "tissue": e.get("t"), "activation": _num(e.get("a")) or 0.0})


def _import_modules(reader, names, rows, known: Known) -> dict[int, int]:
    per_layer = defaultdict(int)
    if "modules.json" not in names:
        reader.report.skipped.append("modules.json: absent, no modules")
        return per_layer
    for n, m in enumerate(reader.load("modules.json", list)):
        where = f"{reader.src / 'modules.json'}: module record {n}"
        lay, mid = _field(m, "layer", "int", where), _field(m, "id", "int", where)
        if lay not in known.widths:
            reader.report.skipped.append(f"modules.json: module {mid} of layer {lay} has no layer data, ignored")
            continue
        members = _field(m, "features", "list", where)
        strangers = sorted({f for f in members if not known.has(lay, f)}, key=str)
        if strangers:
            reader.report.skipped.append(f"modules.json: module {mid} of layer {lay} lists {len(strangers)} feature(s) "
                                         f"that layer does not have (first {strangers[0]!r}), left out")
            members = [f for f in members if known.has(lay, f)]
        top = [t for t in m.get("top_anns", []) if isinstance(t, dict) and isinstance(t.get("t"), str)]
        real = [t["t"] for t in top if t["t"] not in PLACEHOLDER_TERMS]
        rows["modules"].append({"layer": lay, "module": mid, "n_features": len(members),
                                "label": real[0] if real else None, "top_terms": [t["t"] for t in top],
                                "top_term_counts": [int(t.get("c", 0)) for t in top]})
        rows["module_members"] += [{"layer": lay, "module": mid, "feature": f} for f in sorted(set(members))]
        per_layer[lay] += 1
    return per_layer


def _import_cross_layer(reader, names, rows, known: Known) -> list[dict]:
    if "cross_layer_graph.json" not in names:
        reader.report.skipped.append("cross_layer_graph.json: absent, no cross-layer edges")
        return []
    pairs = []
    for key, block in sorted(reader.load("cross_layer_graph.json", dict).items()):
        m = re.fullmatch(r"L(\d+)_L(\d+)", key)
        if not m or not isinstance(block, dict):
            reader.report.skipped.append(f"cross_layer_graph.json: entry {key!r} is not a layer pair, ignored")
            continue
        la, lb = int(m.group(1)), int(m.group(2))
        if la not in known.widths or lb not in known.widths:
            reader.report.skipped.append(f"cross_layer_graph.json: entry {key!r} names a layer without layer data, "
                                         "ignored")
            continue
        edges = {}
        for dep in block.get("deps", []):  # newer layout: per upstream feature, its downstream partners
            for d in dep.get("deps", []):
                edges.setdefault((dep["a"], d["b"]), (d.get("pmi"), None))
        for e in block.get("edges", []):  # older layout: a flat edge list with counts
            edges.setdefault((e["a"], e["b"]), (e.get("pmi"), e.get("c")))
        strangers = [(a, b) for a, b in edges if not (known.has(la, a) and known.has(lb, b))]
        if strangers:
            reader.report.skipped.append(f"cross_layer_graph.json: entry {key!r}: {len(strangers)} edge(s) name a "
                                         f"feature its layers do not have (first {strangers[0]}), left out")
            edges = {(a, b): v for (a, b), v in edges.items() if known.has(la, a) and known.has(lb, b)}
        for (a, b), (pmi, c) in edges.items():
            rows["edges"].append({"kind": "cross_layer_pmi", "layer_a": la, "feature_a": a, "layer_b": lb,
                                  "feature_b": b, "weight": _num(pmi) or 0.0, "count": c, "null_p": None})
        summ = {k: (_num(v) if isinstance(v, float) else v) for k, v in (block.get("summary") or {}).items()}
        pairs.append({"layer_a": la, "layer_b": lb, "edges_imported": len(edges), **summ})
    return pairs


def _import_extras(reader, names, rows, known: Known) -> dict:
    """Side analyses: causal patching (both atlases) and the Geneformer atlas' extra files."""
    extras = {}
    for name, fn in (("causal_patching.json", _causal), ("svd_comparison.json", _svd),
                     ("cross_layer_tracking.json", _tracking), ("novel_clusters.json", _novel),
                     ("perturbation_response.json", _perturbation)):
        if name in names:
            try:
                fn(reader, name, rows, extras, known)
            except (KeyError, TypeError, ValueError, AttributeError) as e:  # any shape the checks did not foresee
                raise AtlasError(f"{reader.src / name}: unexpected content ({type(e).__name__}: {e})") from None
    return extras


PUBLISHED_CAUSAL = ("published: zeroing the feature in its SAE's top-k at layer-L positions, unmasked inputs; "
                    "target_change / other_change = mean change of the logit of the position's own gene for the "
                    "feature's top-20 genes / other genes; specificity_ratio = |target| / |other|")
CAUSAL_LACKS = ("no per-gene effects, no intervals, no null and no p-values; the readout is the logit of a gene the "
                "model sees at that position, and the ratio has a near-zero denominator for some features")
PUBLISHED_DATASET = "published K562 CRISPRi (replogle_concat)"
PERTURBATION_LACKS = ("effects are (mean - control mean) / control SD over 20 cells, top 5 per perturbation; no "
                      "intervals, p-values or tests; n_specific counts features whose top-20 genes hold a TRRUST "
                      "target or the perturbed gene")


def _database(to):
    return to if isinstance(to, str) and to and to != "none" else None


def _label(lb):
    """The predecessor writes "unlabeled" or "" for a feature without a label."""
    return None if lb in (None, "", "unlabeled", "unlabelled") else lb


def _place(reader, name: str, stated, records: list[tuple], known: Known) -> tuple[int | None, set, dict]:
    """The layer of an intervention file's records [(feature, lb, top genes)] or None (unknown), the features of
    records to leave out, and for manifest extras how the layer was found (also one note of the report) when the
    file did not state it."""
    lay, how = _find_layer(reader.src / name, stated, records, known)
    if how is not None:
        reader.report.notes.append(f"{name}: {how}")
    left_out = set()
    if lay is None:  # an unknown layer still needs a feature within some layer
        widest = max(known.widths.values(), default=0)
        left_out = {i for i, *_ in records if not 0 <= i < widest}
        if left_out:
            reader.report.skipped.append(f"{name}: {len(left_out)} record(s) name a feature beyond every layer "
                                         f"(first {min(left_out)}), left out")
    return lay, left_out, ({"layer_source": how} if how else {})


def _find_layer(path: Path, stated, records: list[tuple], known: Known) -> tuple[int | None, str | None]:
    """The file's `layer` field when its layer holds every record's feature. Without one, the one layer whose
    layer_NN_features.json agrees with every record: by top genes first (five gene names, the most specific
    evidence), then by labels. If neither decides, the recognised Geneformer atlas takes the layer its study
    documents; any other source keeps the records with their layer unknown (None): an optional file never sinks
    the import. Also how the layer was found (None: stated by the file)."""
    if stated is not None:
        if not isinstance(stated, int) or isinstance(stated, bool):
            raise AtlasError(f"{path}: field 'layer' is {json.dumps(stated)[:40]}, expected an integer")
        missing = [i for i, *_ in records if not known.has(stated, i)]
        if not missing:
            return stated, None
        why = "has no layer data" if stated not in known.widths else f"has no feature {missing[0]}"
        return None, f"its layer {stated} {why}; imported with the layer unknown"
    if not records:
        return None, None
    reasons = []
    for what, pos in (("top genes", 2), ("labels", 1)):
        usable = [r for r in records if r[pos] is not None]
        if not usable:
            continue
        fits = [lay for lay in sorted(known.widths)
                if all(_agrees(known.published.get((lay, r[0])), r, pos) for r in usable)]
        if len(fits) == 1:
            return fits[0], (f"no 'layer' field; layer {fits[0]}, the only layer whose {what} "
                             f"(layer_{fits[0]:02d}_features.json) match its {len(usable)} record(s)")
        reasons.append(f"the {what} match " + ("no layer" if not fits else f"layers {', '.join(map(str, fits))}"))
    why = "; ".join(reasons) or "its records carry neither top genes nor labels"
    doc = known.documented_layer
    if doc is not None and all(known.has(doc, i) for i, *_ in records):
        return doc, f"no 'layer' field; layer {doc}, documented by the study of the Geneformer atlas ({why})"
    return None, f"no 'layer' field; imported with the layer unknown ({why})"


def _agrees(feature, record, pos) -> bool:
    """Whether a feature of layer_NN_features.json, (label, top genes), agrees with a record's label (pos 1) or
    top genes (pos 2: the shorter list's genes are the longer list's first ones, in any order)."""
    if feature is None:
        return False
    if pos == 1:
        return feature[0] == _label(record[1])
    k = min(len(feature[1]), len(record[2]))
    return k > 0 and set(feature[1][:k]) == set(record[2][:k])


def _causal(reader, name, rows, extras, known):
    path = reader.src / name
    data = reader.load(name, dict)
    feats = _field(data, "features", "list", str(path))
    recs = []
    for n, f in enumerate(feats):
        where = f"{path}: feature record {n}"
        i = _field(f, "i", "int", where)
        for key in ("td", "od", "sr"):
            _field(f, key, "num", where)
        top = f.get("tg", [])
        if not isinstance(top, list) or not all(isinstance(g, str) for g in top):
            raise AtlasError(f"{path}: feature {i}: field 'tg' is not a list of gene names")
        recs.append((i, f["lb"] if "lb" in f else None, top or None))
    lay, left_out, source = _place(reader, name, data.get("layer", (data.get("summary") or {}).get("layer")), recs,
                                   known)
    for f in feats:
        if f["i"] in left_out:
            continue
        rows["causal_summary"].append({"layer": lay, "feature": f["i"], "method": PUBLISHED_CAUSAL,
                                       "n_cells": f.get("nc") if isinstance(f.get("nc"), int) else None,
                                       "target_change": _num(f["td"]), "other_change": _num(f["od"]),
                                       "specificity_ratio": _num(f["sr"]), "top_genes": f.get("tg", [])})
    extras["causal_summary"] = {**_clean(data.get("summary") or {}), "layer": lay, "lacks": CAUSAL_LACKS, **source}


def _svd(reader, name, rows, extras, known):
    path = reader.src / name
    data = reader.load(name, dict)
    per_layer = _field(data, "per_layer", "dict", str(path))
    for lay, metrics in sorted(per_layer.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1):
        if not lay.isdigit() or not isinstance(metrics, dict):
            raise AtlasError(f"{path}: per_layer entry {lay!r}: expected a layer number with an object of metrics")
        if int(lay) not in known.widths:
            reader.report.skipped.append(f"{name}: layer {lay} has no layer data, ignored")
            continue
        for metric, v in sorted(metrics.items()):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                rows["svd_comparison"].append({"layer": int(lay), "metric": metric, "value": _num(v)})
    extras["svd_comparison"] = _clean(data.get("aggregate") or {})


def _tracking(reader, name, rows, extras, known):
    path = reader.src / name
    data = reader.load(name, dict)
    for kind in ("adjacent_persistence", "long_range_persistence"):
        recs = data.get(kind) or []
        if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
            raise AtlasError(f"{path}: field {kind!r}: expected an array of objects")
        for n, r in enumerate(recs):
            rows["persistence"].append({"kind": kind, "row": n, **_flat(r)})
    extras["persistence"] = {k: _clean(data[k]) for k in ("config", "lifecycle_summary", "persistence_vs_biology")
                             if isinstance(data.get(k), dict)}


def _novel(reader, name, rows, extras, known):
    path = reader.src / name
    data = reader.load(name, dict)
    summaries = {}
    for lay, block in sorted(data.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1):
        if not lay.isdigit() or int(lay) not in known.widths:
            reader.report.skipped.append(f"{name}: entry {lay!r} is not a layer with layer data, ignored")
            continue
        clusters = block.get("clusters", []) if isinstance(block, dict) else None
        if not isinstance(clusters, list) or not all(isinstance(c, dict) for c in clusters):
            raise AtlasError(f"{path}: layer {lay}: field 'clusters': expected an array of objects")
        for n, r in enumerate(clusters):
            rows["novel_clusters"].append({"layer": int(lay), "row": n, **_flat(r)})
        summaries[lay] = _clean(block.get("summary") or {})
    extras["novel_clusters"] = summaries


def _perturbation(reader, name, rows, extras, known):
    path = reader.src / name
    data = reader.load(name, dict)
    targets = _field(data, "targets", "list", str(path))
    hits = []
    for n, t in enumerate(targets):
        where = f"{path}: target record {n}"
        gene = _field(t, "gene", "str", where)
        for rank, hit in enumerate(_field(t, "top", "list", where), 1):
            hw = f"{where} ({gene}): top entry {rank}"
            hits.append((gene, rank, t, _field(hit, "i", "int", hw), _num(_field(hit, "es", "num", hw)), hit.get("lb")))
    recs = sorted({(i, lb, None) for *_, i, _, lb in hits}, key=str)
    lay, left_out, source = _place(reader, name, data.get("layer"), recs, known)
    for gene, rank, t, i, es, lb in hits:
        if i in left_out:
            continue
        rows["perturbation_response"].append({"dataset": PUBLISHED_DATASET, "perturbation": gene, "layer": lay,
                                              "feature": i, "effect": es, "rank": rank, "label": _label(lb)})
    for t in targets:
        nums = {k: t.get(k) if isinstance(t.get(k), int) and not isinstance(t.get(k), bool) else None
                for k in ("nk", "nr", "ns")}
        rows["tf_specificity"].append({"dataset": PUBLISHED_DATASET, "perturbation": t["gene"],
                                       "is_tf": t.get("tf") if isinstance(t.get("tf"), bool) else None,
                                       "n_targets": nums["nk"], "n_responding": nums["nr"], "n_specific": nums["ns"]})
    extras["perturbation_response"] = {**_clean(data.get("summary") or {}), "layer": lay, "dataset": PUBLISHED_DATASET,
                                       "lacks": PERTURBATION_LACKS, **source}


def _clean(obj):
    """JSON-safe copy: non-finite numbers become None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _flat(rec) -> dict:
    """Scalars kept, anything nested stored as its JSON text."""
    if not isinstance(rec, dict):
        return {"value": json.dumps(_clean(rec))}
    return {k: (v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(_clean(v)))
            for k, v in rec.items() if k not in ("kind", "row", "layer")}


def _free_form(records: list[dict]) -> pa.Table:
    """A table from records with any columns: a column of mixed kinds is stored as text."""
    cols = list(dict.fromkeys(k for r in records for k in r))
    data = {}
    for c in cols:
        vals = [r.get(c) for r in records]
        kinds = {type(v) for v in vals if v is not None}
        if kinds <= {int}:
            data[c] = pa.array(vals, pa.int64())
        elif kinds <= {int, float}:
            data[c] = pa.array([_num(v) for v in vals], pa.float64())
        elif kinds <= {bool}:
            data[c] = pa.array(vals, pa.bool_())
        else:
            data[c] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    return pa.table(data)


def _absent_record(absent: list[int], summary: dict | None) -> dict:
    """Which layers' enrichment files were not published, and the count of annotated features global_summary.json
    gives for each (the only trace of their annotation: nothing here can check it)."""
    published = {}
    for s in (summary or {}).get("layers", []):
        if isinstance(s, dict) and s.get("layer") in absent and isinstance(s.get("annotated"), int):
            published[str(s["layer"])] = s["annotated"]
    return {"layers": absent, "files": [f"layer_{lay:02d}_annotations.json" for lay in absent],
            "published_annotated": published, "published_source": "global_summary.json" if published else None}


def _layer_rows(layers, rows, modules, summary, report, absent=frozenset()) -> list[dict]:
    published = {}
    if summary is not None:
        published = {s.get("layer"): s for s in summary.get("layers", []) if isinstance(s, dict)}
    stats = {lay: {"n": 0, "alive": 0, "annotated": 0} for lay in layers}
    for f in rows["features"]:
        s = stats[f["layer"]]
        s["n"] += 1
        s["alive"] += f["alive"]
        s["annotated"] += f["n_enrichments"] > 0
    out = []
    for lay in layers:
        s, p = stats[lay], published.get(lay, {})
        for ours, theirs in (("alive", "alive"), ("annotated", "annotated")):
            if theirs in p and p[theirs] != s[ours] and not (ours == "annotated" and lay in absent):
                report.skipped.append(f"global_summary.json: layer {lay} says {theirs} {p[theirs]}, "
                                      f"the feature files give {s[ours]}; kept the feature files' count")
        out.append({"layer": lay, "n_features": s["n"], "alive": s["alive"], "annotated": s["annotated"],
                    "n_modules": modules.get(lay, 0), "variance_explained": _num(p.get("variance_explained")),
                    "mean_feature_cosine": _num(p.get("mean_feature_cosine")),
                    "n_svd_aligned": p.get("n_svd_aligned"), "annotated_null_rate": None,
                    # the predecessor tested every alive feature; a layer without its annotation file: not known
                    **annotation_rate(s["annotated"], None if lay in absent else s["alive"])})
    return out
