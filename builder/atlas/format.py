"""The atlas data format: Parquet tables plus manifest.json, the contract between pipeline and renderer.

One module reads, writes and validates it. docs/format.md documents every table and column; a test checks
that it and SCHEMA agree.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import __version__
from ..errors import AtlasError
from ..fsutil import atomic_dir, held_folder, sha256_file
from ..jsonio import dumps_json
from ..pausepoint import pause_at

SCHEMA_VERSION = 1

I16, I32, I64, F32, F64, STR, BOOL = pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string(), pa.bool_()
STRS = pa.list_(pa.string())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool = False


@dataclass(frozen=True)
class TableSpec:
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    required: bool = True
    # Free-form tables (side analyses imported as they came) only need their key columns.
    free_form: bool = False

    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])


def _c(name, typ, nullable=False):
    return Column(name, typ, nullable)


LF = (_c("layer", I16), _c("feature", I32))

SCHEMA: dict[str, TableSpec] = {
    "layers": TableSpec(("layer",), (
        _c("layer", I16), _c("n_features", I32), _c("alive", I32), _c("annotated", I32), _c("n_modules", I32),
        _c("variance_explained", F64, True), _c("mean_feature_cosine", F64, True),
        _c("n_svd_aligned", I32, True), _c("annotated_null_rate", F64, True), _c("tested", I32, True),
        _c("annotated_rate", F64, True), _c("annotated_rate_lo", F64, True), _c("annotated_rate_hi", F64, True),
        _c("dead_features", I32, True), _c("sae_steps", I32, True), _c("decoder_init_cosine", F64, True),
    )),
    "features": TableSpec(("layer", "feature"), LF + (
        _c("alive", BOOL), _c("frequency", F64), _c("mean_activation", F64), _c("fire_count", I64),
        _c("n_enrichments", I32), _c("label", STR, True), _c("label_database", STR, True),
        _c("label_q", F64, True), _c("module", I32, True), _c("map_x", F32, True), _c("map_y", F32, True),
        _c("svd_aligned", BOOL, True),
    )),
    "feature_genes": TableSpec(("layer", "feature", "rank"), LF + (
        _c("rank", I16), _c("gene", STR), _c("activation", F64, True), _c("fire_count", I64, True),
        _c("gene_tokens", I64, True), _c("score", F64, True),
    )),
    "enrichments": TableSpec(("layer", "feature", "database", "term"), LF + (
        _c("database", STR), _c("term", STR), _c("p", F64, True), _c("q", F64, True),
        _c("odds_ratio", F64, True), _c("overlap", I32), _c("overlap_genes", STRS), _c("set_size", I32, True),
        _c("edge_density", F64, True),
    )),
    "celltypes": TableSpec(("layer", "feature", "level", "name"), LF + (
        _c("level", STR), _c("name", STR), _c("q", F64, True), _c("odds_ratio", F64, True), _c("n_top", I32, True),
        _c("p", F64, True), _c("auc", F64, True), _c("n_cells", I32, True), _c("n_firing", I32, True),
    )),
    "top_cells": TableSpec(("layer", "feature", "rank"), LF + (
        _c("rank", I16), _c("cell_type", STR), _c("tissue", STR, True), _c("activation", F64),
    )),
    "modules": TableSpec(("layer", "module"), (
        _c("layer", I16), _c("module", I32), _c("n_features", I32), _c("label", STR, True),
        _c("top_terms", STRS), _c("top_term_counts", pa.list_(I32)),
    )),
    "module_members": TableSpec(("layer", "module", "feature"), (
        _c("layer", I16), _c("module", I32), _c("feature", I32),
    )),
    "edges": TableSpec(("kind", "layer_a", "feature_a", "layer_b", "feature_b"), (
        _c("kind", STR), _c("layer_a", I16), _c("feature_a", I32), _c("layer_b", I16), _c("feature_b", I32),
        _c("weight", F64), _c("count", I64, True), _c("null_p", F64, True),
    )),
    # Interventions (docs/interventions.md): causal patching of features, and perturbation response. A built
    # atlas fills them with intervals, p and q; an imported one with what the published files hold.
    # An imported file may leave its layer unknown (null): the site then shows the feature number alone.
    "causal_summary": TableSpec(("layer", "feature"), (_c("layer", I16, True), _c("feature", I32)) + (
        _c("method", STR), _c("selection", STR, True), _c("n_cells", I32, True), _c("frequency", F64, True),
        _c("specificity", F64, True), _c("null_mean", F64, True), _c("null_sd", F64, True), _c("z", F64, True),
        _c("p", F64, True), _c("p_empirical", F64, True), _c("q", F64, True), _c("n_null", I32, True),
        _c("null_values", pa.list_(F32), True), _c("n_top_genes", I32, True), _c("total_effect", F64, True),
        _c("total_lo", F64, True), _c("total_hi", F64, True), _c("objective_change", F64, True),
        _c("attribution", F64, True), _c("target_change", F64, True), _c("other_change", F64, True),
        _c("specificity_ratio", F64, True), _c("top_genes", STRS, True),
    ), required=False),
    "causal_effects": TableSpec(("layer", "feature", "rank"), LF + (
        _c("rank", I32), _c("gene", STR), _c("delta", F64), _c("ci_lo", F64, True), _c("ci_hi", F64, True),
        _c("n_cells", I32), _c("top_gene", BOOL),
    ), required=False),
    "perturbation_response": TableSpec(("dataset", "perturbation", "layer", "feature"), (
        _c("dataset", STR), _c("perturbation", STR), _c("layer", I16, True), _c("feature", I32),
        _c("effect", F64), _c("ci_lo", F64, True), _c("ci_hi", F64, True), _c("p", F64, True), _c("q", F64, True),
        _c("n_pert", I32, True), _c("n_ctrl", I32, True), _c("rank", I16, True), _c("label", STR, True),
        _c("mean_pert", F64, True), _c("mean_ctrl", F64, True), _c("active_pert", F64, True),
        _c("active_ctrl", F64, True),
    ), required=False),
    "tf_specificity": TableSpec(("dataset", "perturbation"), (
        _c("dataset", STR), _c("perturbation", STR), _c("is_tf", BOOL, True), _c("n_cells", I32, True),
        _c("kd_efficiency", F64, True), _c("n_de", I32, True), _c("n_targets", I32, True),
        _c("n_responding", I32, True), _c("n_specific", I32, True), _c("odds", F64, True), _c("p", F64, True),
        _c("q", F64, True), _c("ceiling_odds", F64, True), _c("ceiling_q", F64, True), _c("verdict", STR, True),
        _c("n_ctrl", I32, True), _c("target_set", STR, True), _c("overlap", I32, True), _c("ceiling_p", F64, True),
        _c("ceiling_overlap", I32, True),
    ), required=False),
    "svd_comparison": TableSpec(("layer", "metric"), (
        _c("layer", I16), _c("metric", STR), _c("value", F64, True),
    ), required=False),
    # The null beside every rate a built atlas reports (annotation, modules, cross-layer edges, SVD).
    "null_baseline": TableSpec(("layer", "analysis", "measure", "baseline"), (
        _c("layer", I16), _c("analysis", STR), _c("measure", STR), _c("observed", F64, True),
        _c("expected", F64, True), _c("note", STR, True), _c("baseline", STR, True), _c("observed_n", I32, True),
        _c("expected_n", I32, True), _c("observed_lo", F64, True), _c("observed_hi", F64, True),
        _c("expected_lo", F64, True), _c("expected_hi", F64, True),
    ), required=False),
    # The cell map: the dataset's cells in 2-D (manifest dataset.cell_map says which embedding), and on a bounded
    # display sample of them, per-cell feature activations and top-gene expression (non-zero values only).
    "cells": TableSpec(("cell",), (
        _c("cell", I32), _c("cell_id", STR), _c("cell_type", STR, True), _c("x", F32), _c("y", F32),
    ), required=False),
    "cell_activations": TableSpec(("layer", "feature", "cell"), LF + (_c("cell", I32), _c("value", F32)),
                                  required=False),
    "cell_expression": TableSpec(("gene", "cell"), (_c("gene", STR), _c("cell", I32), _c("value", F32)),
                                 required=False),
    # `atlas link`: each feature's best matches in another atlas built on the same cells (or in the untrained twin),
    # by the correlation of per-cell activation profiles, beside two nulls (docs/statistics.md "Links"). `layer` and
    # `feature` are this atlas' (validated here); `other_layer`, `other_feature` the other atlas'.
    "feature_links": TableSpec(("other_atlas", "layer", "feature", "other_layer", "rank"), (
        _c("other_atlas", STR), _c("layer", I16), _c("feature", I32), _c("other_layer", I16),
        _c("other_feature", I32), _c("rank", I16), _c("r", F64), _c("null_r", F64), _c("null_sd", F64),
        _c("z", F64, True), _c("skew", F64, True), _c("p", F64), _c("q", F64), _c("n_candidates", I32), _c("n_cells", I32),
        _c("n_firing", I32), _c("other_n_firing", I32), _c("twin_feature", I32, True), _c("twin_r", F64, True),
        _c("twin_p", F64, True), _c("twin_q", F64, True), _c("beyond_nulls", BOOL), _c("mutual", BOOL),
        _c("overlap", I32, True), _c("overlap_genes", STRS, True), _c("gene_universe", I32, True),
        _c("gene_p", F64, True), _c("gene_q", F64, True), _c("gene_odds_ratio", F64, True),
        _c("shared_cell_types", STRS, True), _c("other_label", STR, True),
    ), required=False),
    "persistence": TableSpec(("kind", "row"), (_c("kind", STR), _c("row", I32)), required=False, free_form=True),
    "novel_clusters": TableSpec(("layer", "row"), (_c("layer", I16), _c("row", I32)), required=False, free_form=True),
}

# JSON types of the manifest's fields: `a.b` a field of an object, `a[]` every element of an array, `a.*`
# every value of an object. Absent fields are allowed, except `tables`.
NONE = type(None)
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "atlas": (dict,), "atlas.id": (str,), "atlas.title": (str, NONE), "atlas.description": (str, NONE),
    "model": (dict,), "model.family": (str, NONE), "model.name": (str, NONE), "model.n_layers": (int, NONE),
    "model.layers": (list,), "model.layers[]": (int,), "model.card": (str,), "model.pretraining": (dict,),
    "sae": (dict,), "dataset": (dict,), "genesets": (list,), "genesets[]": (dict,), "parameters": (dict,),
    "cross_layer_pairs": (list,), "cross_layer_pairs[]": (dict,), "extras": (dict,), "source": (dict,),
    "notes": (list,), "notes[]": (str,), "provenance": (dict,), "perturbation": (dict,), "perturbation.*": (dict,),
    "cache": (dict,), "links": (dict,), "links.*": (dict,),
    "tables": (dict,), "tables.*": (dict,), "tables.*.rows": (int,), "tables.*.sha256": (str,),
}
JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", NONE: "null"}


def layer_refs(name: str) -> list[tuple[str, str | None]]:
    """The table's columns that name a layer (`layer`, `layer_a`, ...), each with the feature column beside it
    (`feature`, `feature_a`, ...) or None. Every such layer must be one of the atlas' layers and every such
    feature lie within its layer's width (layers.n_features); a null layer (nullable columns) means unknown."""
    names = [c.name for c in SCHEMA[name].columns]
    return [(c, c.replace("layer", "feature", 1) if c.replace("layer", "feature", 1) in names else None)
            for c in names if c == "layer" or c.startswith("layer_")]


UNIT_INTERVAL = {"features": ["frequency", "label_q"], "enrichments": ["p", "q"], "celltypes": ["q", "p", "auc"],
                 "causal_summary": ["specificity", "p", "p_empirical", "q"], "perturbation_response": ["p", "q"],
                 "tf_specificity": ["p", "q", "ceiling_q", "ceiling_p"],
                 "feature_links": ["p", "q", "twin_p", "twin_q", "gene_p", "gene_q"]}


@dataclass
class Atlas:
    """An atlas on disk: its manifest and its tables (read on first use)."""

    path: Path
    manifest: dict
    _tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def has(self, table: str) -> bool:
        return table in self.manifest.get("tables", {})

    def table(self, name: str) -> pa.Table:
        if name not in self._tables:
            if not self.has(name):
                spec = SCHEMA[name]
                self._tables[name] = spec.schema().empty_table()
            else:
                self._tables[name] = with_optional_columns(name, pq.read_table(self.path / f"{name}.parquet"))
        return self._tables[name]


def annotation_rate(annotated: int, tested: int | None) -> dict:
    """A layer's annotation rate, the one place it is computed (export and the importer call it; the site and the
    CLI read the columns): annotated / tested, tested = the features with a top-gene list, with the exact
    (Clopper-Pearson) 95% interval."""
    from ..pipeline.multitest import clopper_pearson  # scipy: imported only by the writers

    if not tested:
        return {"tested": tested, "annotated_rate": None, "annotated_rate_lo": None, "annotated_rate_hi": None}
    lo, hi = clopper_pearson(annotated, tested)
    return {"tested": tested, "annotated_rate": annotated / tested, "annotated_rate_lo": lo, "annotated_rate_hi": hi}


def totals(layers: pa.Table, null_baseline: pa.Table | None = None) -> dict:
    """The atlas' totals over its layers (manifest `totals`): features, alive, tested and annotated features,
    modules, the annotation rate of all layers together with its interval (annotation_rate), and each annotation
    baseline's share pooled over the layers (lists annotated / lists, with its interval) beside the features'
    share in the same rows (for pca and coexpression: their most frequent features, as many as the lists)."""
    from ..pipeline.multitest import clopper_pearson  # scipy: imported only by the writers

    t = conform("layers", layers).to_pylist()
    out = {k: sum(r[k] for r in t) for k in ("n_features", "alive", "annotated", "n_modules")}
    measured = [r for r in t if r["tested"] is not None]
    out |= annotation_rate(sum(r["annotated"] for r in measured), sum(r["tested"] for r in measured) if measured else None)
    if null_baseline is not None and null_baseline.num_rows:
        nb = conform("null_baseline", null_baseline).to_pylist()
        rows = [r for r in nb if r["analysis"] == "annotation" and r["measure"] == "any database"
                and r["expected_n"] and r["observed_n"]]
        baselines = {}
        for name in sorted({r["baseline"] for r in rows}):
            mine = [r for r in rows if r["baseline"] == name]
            k_exp = sum(round(r["expected"] * r["expected_n"]) for r in mine)
            n_exp = sum(r["expected_n"] for r in mine)
            k_obs = sum(round(r["observed"] * r["observed_n"]) for r in mine)
            n_obs = sum(r["observed_n"] for r in mine)
            (lo, hi), (olo, ohi) = clopper_pearson(k_exp, n_exp), clopper_pearson(k_obs, n_obs)
            baselines[name] = {"rate": k_exp / n_exp, "lo": lo, "hi": hi, "lists": n_exp,
                               "observed": k_obs / n_obs, "observed_lo": olo, "observed_hi": ohi,
                               "observed_lists": n_obs}
        out["baselines"] = baselines
    return out


def with_optional_columns(name: str, table: pa.Table) -> pa.Table:
    """Nullable columns added to the schema after a table was written read as all-null columns."""
    for c in SCHEMA[name].columns:
        if c.nullable and c.name not in table.column_names:
            table = table.append_column(pa.field(c.name, c.type, True), pa.nulls(table.num_rows, c.type))
    return table


def conform(name: str, table: pa.Table) -> pa.Table:
    """Cast a table to its schema (free-form tables keep their extra columns) and sort it by its key."""
    spec = SCHEMA[name]
    cols = [c.name for c in spec.columns]
    table = with_optional_columns(name, table)
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise AtlasError(f"table {name}: missing column(s) {', '.join(missing)}")
    if spec.free_form:
        extra = [c for c in table.column_names if c not in cols]
        table = table.select(cols + extra)
        fields = [pa.field(c.name, c.type, c.nullable) for c in spec.columns] + [table.schema.field(c) for c in extra]
    else:
        table = table.select(cols)
        fields = list(spec.schema())
    try:
        table = table.cast(pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        for f in fields:  # find the column that does not fit, e.g. a layer number beyond int16
            try:
                table.column(f.name).cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                raise AtlasError(f"table {name}: column {f.name!r} does not fit {f.type} ({e})") from None
        raise
    if table.num_rows:
        table = table.sort_by([(k, "ascending") for k in spec.key])
    return table


def write_atlas(path: Path, manifest: dict, tables: dict[str, pa.Table]) -> Atlas:
    """Write an atlas folder atomically: every table conformed, validated, then swapped into place."""
    path = Path(path)
    unknown = sorted(set(tables) - set(SCHEMA))
    if unknown:
        raise AtlasError(f"unknown table(s) {', '.join(unknown)}")
    manifest = dict(manifest)
    manifest["schema_version"] = SCHEMA_VERSION
    manifest.setdefault("provenance", {})["package_version"] = __version__
    if "layers" in tables:
        manifest["totals"] = totals(tables["layers"], tables.get("null_baseline"))
    # an existing atlas is held while it is replaced, so a read-modify-write of it (atlas perturb) never straddles
    with held_folder(path) if path.is_dir() else contextlib.nullcontext(), atomic_dir(path) as tmp:
        listing = {name: _write_table(tmp, name, tables[name]) for name in sorted(tables)}
        _seal(tmp, path, manifest, listing)
    return read_atlas(path, check=False)


def _write_table(folder: Path, name: str, table: pa.Table) -> dict:
    """One conformed table as folder/NAME.parquet; its manifest listing entry."""
    t = conform(name, table)
    file = folder / f"{name}.parquet"
    # Fixed writer settings keep the bytes identical for identical input.
    pq.write_table(t, file, compression="zstd", row_group_size=1 << 20, write_statistics=True)
    return {"rows": t.num_rows, "sha256": sha256_file(file)}


def _seal(tmp: Path, path: Path, manifest: dict, listing: dict) -> None:
    """The manifest with its table listing, written beside the tables; the whole folder validated."""
    manifest["tables"] = listing
    (tmp / "manifest.json").write_bytes(dumps_json(manifest, indent=True))
    problems = validate(tmp)
    if problems:
        raise AtlasError(f"refusing to write {path}: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def update_atlas(path: Path, change: Callable[[Atlas], tuple[dict, dict[str, pa.Table]]],
                 on_wait=lambda: None) -> Atlas:
    """Read the atlas at `path`, apply change(atlas) -> (manifest, tables to replace), write the result; all of it
    with the atlas held (fsutil.held_folder), so two updates never lose each other's rows. Every other table file
    is copied byte for byte. Atomic and validated, as write_atlas."""
    path = Path(path)
    with held_folder(path, on_wait):
        pause_at(f"atlas held {path.name}")
        manifest, tables = change(read_atlas(path))
        return _replace_tables(path, manifest, tables)


def update_atlases(paths: list[Path], change: Callable[[list[Atlas]], list[tuple[dict, dict[str, pa.Table]]]],
                   on_wait=lambda path: None) -> list[Atlas]:
    """update_atlas for several atlases changed together (`atlas link` writes both of its atlases): every one held (in
    a fixed order, so two such commands never wait for each other), change(atlases) -> one (manifest, tables) per
    atlas, every new folder written and validated before the first is swapped in; a failure writes none."""
    paths = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack:
        for p in sorted(paths, key=lambda p: str(p.resolve())):
            stack.enter_context(held_folder(p, lambda p=p: on_wait(p)))
        pause_at("atlases held " + " ".join(p.name for p in paths))
        changes = change([read_atlas(p) for p in paths])
        with contextlib.ExitStack() as swaps:  # entered in order, swapped in (on exit) only once all are sealed
            for p, (manifest, tables) in zip(paths, changes):
                _fill(swaps.enter_context(atomic_dir(p)), p, manifest, tables)
    return [read_atlas(p, check=False) for p in paths]


def _replace_tables(path: Path, manifest: dict, tables: dict[str, pa.Table]) -> Atlas:
    with atomic_dir(path) as tmp:
        _fill(tmp, path, manifest, tables)
    return read_atlas(path, check=False)


def _fill(tmp: Path, path: Path, manifest: dict, tables: dict[str, pa.Table]) -> None:
    """The atlas at `path` with `tables` replaced, written into tmp: other tables copied byte for byte, sealed."""
    listed = read_manifest(path).get("tables", {})
    manifest = {**manifest, "schema_version": SCHEMA_VERSION}
    listing = {}
    for name in sorted(set(listed) | set(tables)):
        if name in tables:
            listing[name] = _write_table(tmp, name, tables[name])
        else:
            shutil.copyfile(path / f"{name}.parquet", tmp / f"{name}.parquet")
            listing[name] = listed[name]
    _seal(tmp, path, manifest, listing)


def read_manifest(path: Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise AtlasError(f"{path}: no such atlas folder")
    mf = path / "manifest.json"
    if not mf.is_file():
        raise AtlasError(f"{mf}: missing (an atlas folder needs manifest.json)")
    try:
        manifest = orjson.loads(mf.read_bytes())
    except orjson.JSONDecodeError as e:
        raise AtlasError(f"{mf}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise AtlasError(f"{mf}: expected a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise AtlasError(f"{mf}: unknown schema_version {version!r} (this version of feature-atlas reads {SCHEMA_VERSION})")
    return manifest


def read_atlas(path: Path, check: bool = True) -> Atlas:
    """Open an atlas; with `check`, refuse one that does not validate, naming the first problem."""
    path = Path(path)
    if check:
        problems = validate(path)
        if problems:
            more = f" (and {len(problems) - 1} more; run `atlas validate {path}`)" if len(problems) > 1 else ""
            raise AtlasError(problems[0] + more)
    return Atlas(path, read_manifest(path))


def atlas_names(data_dir: Path) -> list[str]:
    """The atlas folders (those with a manifest.json) in data_dir."""
    data_dir = Path(data_dir)
    return sorted(p.name for p in data_dir.iterdir() if (p / "manifest.json").is_file()) if data_dir.is_dir() else []


def require_atlas(name: str, data_dir: Path, available: list[str] | None = None) -> Path:
    """data_dir/name, or one line naming the atlases there."""
    available = atlas_names(data_dir) if available is None else available
    if name not in available:
        raise AtlasError(f"atlas {name!r} not found in {data_dir} (available: {', '.join(available) or 'none'})")
    return Path(data_dir) / name


def validate(path: Path) -> list[str]:
    """Every problem found in an atlas folder, one line each; an empty list means it is valid."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except AtlasError as e:
        return [str(e)]
    if "tables" not in manifest:
        return [f"{path / 'manifest.json'}: field 'tables' missing"]
    problems = _check_manifest(path / "manifest.json", manifest)
    if problems:
        return problems
    listed = manifest["tables"]
    tables: dict[str, pa.Table] = {}
    for name, spec in SCHEMA.items():
        file = path / f"{name}.parquet"
        if name not in listed:
            if spec.required:
                problems.append(f"{file}: required table missing from manifest 'tables'")
            continue
        if not file.is_file():
            problems.append(f"{file}: listed in the manifest but missing")
            continue
        try:
            t = pq.read_table(file)
        except Exception as e:  # pyarrow raises several types for a damaged file
            problems.append(f"{file}: not a readable Parquet file ({e})")
            continue
        bad = _check_columns(file, spec, t)
        problems += bad
        if bad:
            continue
        if listed[name].get("rows") != t.num_rows:
            problems.append(f"{file}: {t.num_rows} rows, manifest says {listed[name].get('rows')}")
        if "sha256" in listed[name] and sha256_file(file) != listed[name]["sha256"]:
            problems.append(f"{file}: sha256 differs from the manifest's (the file changed after it was written)")
        problems += _check_keys(file, spec, t)
        tables[name] = t
    for name in sorted(set(listed) - set(SCHEMA)):
        problems.append(f"{path / 'manifest.json'}: unknown table {name!r} in 'tables'")
    if "features" in tables and "layers" in tables:
        problems += _check_consistency(path, manifest, tables)
    return problems


def _check_manifest(file: Path, manifest: dict) -> list[str]:
    """Every manifest field of the wrong JSON type, per MANIFEST_TYPES."""
    out = []

    def walk(value, pattern: str, shown: str):
        allowed = MANIFEST_TYPES.get(pattern)
        if allowed is not None:
            ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
            if not ok:
                want = " or ".join(JSON_NAMES[a] for a in allowed)
                out.append(f"{file}: field {shown!r} is {_json_kind(value)}, expected {want}")
                return
        if isinstance(value, dict):
            for k, v in value.items():
                sub = f"{pattern}.{k}" if pattern else k
                walk(v, sub if sub in MANIFEST_TYPES else f"{pattern}.*", f"{shown}.{k}" if shown else k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{pattern}[]", f"{shown}[{i}]")

    walk(manifest, "", "")
    return out


def _json_kind(value) -> str:
    kinds = {bool: "true/false", dict: "an object", list: "an array", str: "a string", int: "an integer",
             float: "a number", NONE: "null"}
    return kinds.get(type(value), type(value).__name__)


def _check_columns(file: Path, spec: TableSpec, t: pa.Table) -> list[str]:
    out = []
    if not spec.free_form:
        known = {c.name for c in spec.columns}
        out += [f"{file}: unknown column {c!r} (the schema has {', '.join(sorted(known))})"
                for c in t.column_names if c not in known]
    for c in spec.columns:
        if c.name not in t.column_names:
            if not c.nullable:  # a nullable column may postdate the file: it reads as empty
                out.append(f"{file}: missing column {c.name!r} ({c.type})")
            continue
        actual = t.schema.field(c.name).type
        if actual != c.type:
            out.append(f"{file}: column {c.name!r} has type {actual}, expected {c.type}")
        elif not c.nullable and t.column(c.name).null_count:
            out.append(f"{file}: column {c.name!r} has {t.column(c.name).null_count} null value(s), expected none")
    return out


def _check_keys(file: Path, spec: TableSpec, t: pa.Table) -> list[str]:
    if t.num_rows == 0:
        return []
    groups = t.group_by(list(spec.key)).aggregate([([], "count_all")])
    dup = groups.filter(pc.greater(groups["count_all"], 1))
    if dup.num_rows:
        first = {k: dup.column(k)[0].as_py() for k in spec.key}
        return [f"{file}: {dup.num_rows} duplicate key(s) on ({', '.join(spec.key)}), first {first}"]
    return []


def _check_consistency(path: Path, manifest: dict, tables: dict[str, pa.Table]) -> list[str]:
    out = []
    layers, features = tables["layers"], tables["features"]
    layer_ids = layers.column("layer").to_pylist()
    # An atlas may hold a subset of the model's model.n_layers layers (`--layers`): model.layers lists them.
    listed_layers = manifest.get("model", {}).get("layers")
    if listed_layers is not None and sorted(listed_layers) != sorted(layer_ids):
        out.append(f"{path / 'manifest.json'}: model.layers is {listed_layers}, layers.parquet has {layer_ids}")
    counts = features.group_by("layer").aggregate([([], "count_all"), ("alive", "sum")])
    per_layer = {r["layer"]: (r["count_all"], r["alive_sum"]) for r in counts.to_pylist()}
    for row in layers.to_pylist():
        n, alive = per_layer.get(row["layer"], (0, 0))
        if n != row["n_features"]:
            out.append(f"{path / 'layers.parquet'}: layer {row['layer']} says n_features {row['n_features']}, "
                       f"features.parquet has {n}")
        if alive != row["alive"]:
            out.append(f"{path / 'layers.parquet'}: layer {row['layer']} says alive {row['alive']}, "
                       f"features.parquet has {alive}")
    widths = {r["layer"]: r["n_features"] for r in layers.to_pylist()}
    for name in sorted(tables):
        out += check_refs(path / f"{name}.parquet", name, tables[name], widths)
    for name, cols in UNIT_INTERVAL.items():
        if name not in tables:
            continue
        for col in cols:
            if col not in tables[name].column_names:
                continue
            vals = [v for v in tables[name].column(col).to_pylist() if v is not None]
            bad = [v for v in vals if not (0.0 <= v <= 1.0) or math.isnan(v)]
            if bad:
                out.append(f"{path / (name + '.parquet')}: column {col!r} has {len(bad)} value(s) outside "
                           f"[0, 1], first {bad[0]}")
    return out


def check_refs(file: Path, name: str, t: pa.Table, widths: dict[int, int]) -> list[str]:
    """One line per column of `t` that names a layer the atlas does not have (`widths`: layer -> n_features),
    or a feature outside its layer's width (0 to n_features - 1), naming the offending values."""
    out = []
    known = sorted(widths)
    ids = pa.array(known, I16)
    for lcol, fcol in layer_refs(name):
        if lcol not in t.column_names:
            continue
        idx = pc.index_in(t.column(lcol).cast(I16), value_set=ids)  # null: layer unknown here, or null
        unlisted = pc.and_(pc.is_valid(t.column(lcol)), pc.is_null(idx))
        n = pc.sum(unlisted).as_py() or 0
        if n:
            bad = sorted(pc.unique(t.column(lcol).filter(unlisted)).to_pylist())
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            out.append(f"{file}: column {lcol!r} holds layer {shown} ({n} row(s)), not one of the atlas' layers "
                       f"{known} (manifest model.layers, layers.parquet)")
        if fcol is None or fcol not in t.column_names:
            continue
        widest = max(widths.values(), default=0)  # a null (unknown) layer still needs a feature within some layer
        width = pc.fill_null(pc.take(pa.array([widths[k] for k in known], I64), idx), widest)
        feature = t.column(fcol).cast(I64)
        beyond = pc.and_(pc.invert(unlisted), pc.or_(pc.less(feature, 0), pc.greater_equal(feature, width)))
        n = pc.sum(beyond).as_py() or 0
        if n:
            row = t.filter(beyond).slice(0, 1).to_pylist()[0]
            lay = row[lcol]
            where = (f"on layer {lay} (n_features {widths[lay]})" if lay is not None else
                     f"with {lcol} unknown (the widest layer has n_features {widest})")
            out.append(f"{file}: column {fcol!r} holds feature {row[fcol]} {where}, outside the layer's width "
                       f"({n} row(s) out of range)")
    return out

