"""Synthetic atlases with the per-cell data `atlas link` reads: each a real atlas folder (make_synthetic's tables,
its layer widths and top genes replaced) whose manifest records plan and stream folders in a stage cache, written in
the stages' own layouts (stages/plan.py, codes.py), for its model and for its untrained twin.

A layer is given as a (cells, features) matrix M of non-negative profile values: every cell has TOKENS gene tokens,
and feature f fires on token f % TOKENS, slot f // TOKENS, with value M[c, f] x TOKENS, so the profile the link
computes (mean activation over the cell's tokens) is exactly M[c, f].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from builder.atlas.format import write_atlas
from builder.atlas.synthetic import make_synthetic
from builder.jsonio import dumps_json
from builder.pipeline.cache import tree_hash

TOKENS = 20
VOCAB = [f"GENE{i}" for i in range(200)]


def write_plan(folder: Path, obs: list[str], cell_types: list[str | None], shard_cells: int) -> dict:
    folder.mkdir(parents=True)
    n = len(obs)
    pq.write_table(pa.table({
        "cell": pa.array(np.arange(n), pa.int64()), "obs_name": pa.array(obs),
        "n_tokens": pa.array(np.full(n, TOKENS), pa.int32()), "shard": pa.array(np.arange(n) // shard_cells, pa.int32()),
        "heldout": pa.array(np.zeros(n, bool)), "cell_type": pa.array(cell_types, pa.string()),
        "donor": pa.array([None] * n, pa.string())}), folder / "cells.parquet")
    pq.write_table(pa.table({"token_id": pa.array(np.arange(len(VOCAB)), pa.int64()), "gene": pa.array(VOCAB)}),
                   folder / "genes.parquet")
    bounds = [(s, min(s + shard_cells, n)) for s in range(0, n, shard_cells)]
    record = {"format": "feature-atlas plan 1", "tokens": n * TOKENS, "vocab_size": len(VOCAB),
              "shards": [[a, b, (b - a) * TOKENS] for a, b in bounds]}
    (folder / "plan.json").write_bytes(dumps_json(record, indent=True))
    (folder / ".done").write_text("")
    return record


def write_stream(folder: Path, plan: dict, layers: dict[int, np.ndarray]) -> None:
    for i, (start, stop, _) in enumerate(plan["shards"]):
        shard = folder / "shards" / f"{i:05d}"
        shard.mkdir(parents=True)
        cells = np.repeat(np.arange(start, stop), TOKENS).astype(np.int32)
        genes = ((np.arange(start, stop)[:, None] * 7 + np.arange(TOKENS)) % len(VOCAB)).ravel().astype(np.int32)
        np.save(shard / "cell.npy", cells)
        np.save(shard / "gene.npy", genes)
        for L, M in layers.items():
            F = M.shape[1]
            k = -(-F // TOKENS)
            idx = np.zeros((len(cells), k), np.uint16)
            val = np.zeros((len(cells), k), np.float32)
            for f in range(F):
                t, s = f % TOKENS, f // TOKENS
                rows = np.arange(stop - start) * TOKENS + t
                idx[rows, s] = f
                val[rows, s] = M[start:stop, f] * TOKENS
            np.save(shard / f"{L:02d}.idx.npy", idx)
            np.save(shard / f"{L:02d}.val.npy", val)
        (shard / ".done").write_text("")
    (folder / ".done").write_text("")


def make_link_atlas(data_dir: Path, cache: Path, name: str, obs: list[str], cell_types: list[str | None],
                    layers: dict[int, np.ndarray], twin: dict[int, np.ndarray] | None,
                    top_genes: dict[tuple[int, int], list[str]] | None = None, data_sha: str = "same-data",
                    labels: dict[tuple[int, int], str] | None = None, celltypes: dict | None = None,
                    shard_cells: int = 150, seed: int = 0) -> Path:
    """An atlas `name` whose build cache (in `cache`) holds these profiles, and its twin's when `twin` is given."""
    widths = {L: M.shape[1] for L, M in layers.items()}
    entries = {}
    for tag, lay in (("", layers), ("twin", twin)):
        if lay is None:
            continue
        plan_dir, stream_dir = cache / f"plan-{name}{tag}", cache / f"stream-{name}{tag}"
        plan = write_plan(plan_dir, obs, cell_types, shard_cells)
        write_stream(stream_dir, plan, lay)
        rec = {"plan": {"cache_entry": plan_dir.name, "sha256": tree_hash(plan_dir)},
               "stream": {"cache_entry": stream_dir.name, "shards": len(plan["shards"]), "tokens": plan["tokens"]}}
        if tag:
            entries["twin"] = rec
        else:
            entries.update(rec)
    manifest, tables = make_synthetic(len(layers), max(widths.values()), seed=seed)
    rng = np.random.default_rng(seed)
    frames = {t: tables[t].to_pandas() for t in ("features", "feature_genes", "celltypes", "layers")}
    keep = lambda df: df[[int(f) < widths[int(L)] for L, f in zip(df["layer"], df["feature"])]]  # noqa: E731
    feats = keep(frames["features"]).copy()
    feats["label"] = [(labels or {}).get((int(L), int(f))) for L, f in zip(feats["layer"], feats["feature"])]
    genes = []
    for L, F in widths.items():
        for f in range(F):
            top = (top_genes or {}).get((L, f)) or [VOCAB[g] for g in rng.choice(len(VOCAB), 20, replace=False)]
            genes += [{"layer": L, "feature": f, "rank": r, "gene": g, "activation": 1.0, "fire_count": 50,
                       "gene_tokens": 100, "score": 1.0} for r, g in enumerate(top, 1)]
    cts = [{"layer": L, "feature": f, "level": "cell_type", "name": n, "q": 0.01, "odds_ratio": None, "n_top": 3}
           for (L, f), names in (celltypes or {}).items() for n in names]
    lay = frames["layers"]
    lay = lay[lay["layer"].isin(list(widths))].copy()
    lay["n_features"] = [widths[int(L)] for L in lay["layer"]]
    lay["alive"] = [int(feats[feats["layer"] == L]["alive"].sum()) for L in lay["layer"]]
    tables.update(features=pa.Table.from_pandas(feats, preserve_index=False),
                  feature_genes=pa.Table.from_pylist(genes),
                  celltypes=pa.Table.from_pylist(cts, schema=tables["celltypes"].schema) if cts
                  else tables["celltypes"].schema.empty_table(),
                  layers=pa.Table.from_pandas(lay, preserve_index=False))
    for t in ("enrichments", "top_cells", "module_members", "edges", "modules"):
        df = tables[t].to_pandas()
        if "feature" in df:
            df = keep(df)
        elif "feature_a" in df:
            df = df[[int(a) < widths[int(La)] and int(b) < widths[int(Lb)] for La, a, Lb, b in
                     zip(df["layer_a"], df["feature_a"], df["layer_b"], df["feature_b"])]]
        tables[t] = pa.Table.from_pandas(df, preserve_index=False, schema=tables[t].schema)
    mods = tables["modules"].to_pandas()
    members = tables["module_members"].to_pandas()
    mods["n_features"] = [int(((members["layer"] == L) & (members["module"] == m)).sum())
                          for L, m in zip(mods["layer"], mods["module"])]
    tables["modules"] = pa.Table.from_pandas(mods, preserve_index=False, schema=tables["modules"].schema)
    manifest = json.loads(json.dumps(manifest))
    manifest["atlas"] = {"id": name, "title": f"{name} (synthetic)", "description": "planted"}
    manifest["model"]["layers"] = sorted(widths)
    manifest.setdefault("dataset", {})["sha256"] = data_sha
    manifest["dataset"]["name"] = "cells.h5ad"
    manifest["cache"] = entries
    manifest.pop("totals", None)
    return write_atlas(data_dir / name, manifest, tables).path


# The planted pair of atlases: what each feature is, so tests can say what must be found and what must not.
PLANTED = {"program": ((1, 5), (0, 7)),       # one program varying within every cell type: la L1 F5 <-> lb L0 F7
           "marker": ((0, 3), (1, 2)),        # both mark NK cells and nothing else: not the same program
           "twin": ((0, 10), (1, 11))}        # a program the untrained twins carry as well: beyond null 1, not null 2
N_CELLS, B_CELLS = 400, 380                   # lb was built on the first 380 cells only
SHARED_GENES = [f"GENE{i}" for i in range(10)]


def planted(data_dir: Path, cache: Path, seed: int = 3, b_data: str = "same-data", b_twin: bool = True,
            b_obs: list[str] | None = None) -> dict:
    """Atlases la (2 layers x 32 features) and lb (2 x 24) with their twins, every other feature independent noise
    (sparse, skewed: 30% of cells non-zero, gamma values). Returns the profiles by name and layer."""
    rng = np.random.default_rng(seed)
    n, types = N_CELLS, ["B", "NK", "T", "mono"]
    group = np.arange(n) % 4
    noise = lambda F: rng.gamma(1.0, 0.2, size=(n, F)) * (rng.random((n, F)) < 0.3)  # noqa: E731
    A, B, At, Bt = ({0: noise(F), 1: noise(F)} for F in (32, 24, 32, 24))
    u = rng.gamma(2.0, 1.0, n)
    A[1][:, 5], B[0][:, 7] = u + 0.3 * rng.random(n), 0.5 * u + 0.2 * rng.random(n)
    nk = (group == 1).astype(float)
    A[0][:, 3], B[1][:, 2] = 2 * nk + 0.05 * rng.random(n), 3 * nk + 0.05 * rng.random(n)
    v = rng.gamma(2.0, 1.0, n)
    A[0][:, 10], B[1][:, 11] = v + 0.3 * rng.random(n), v + 0.3 * rng.random(n)
    for L in (0, 1):
        Bt[L][:, 4], At[L][:, 9] = v + 0.3 * rng.random(n), v + 0.3 * rng.random(n)
    obs, ct = [f"cell{i}" for i in range(n)], [types[g] for g in group]
    make_link_atlas(data_dir, cache, "la", obs, ct, A, At, seed=1,
                    top_genes={(1, 5): SHARED_GENES + [f"GENE{i}" for i in range(100, 110)]},
                    celltypes={(1, 5): ["T", "B"], (0, 3): ["NK"]}, labels={(1, 5): "planted program A"})
    cut = lambda d: {L: M[:B_CELLS] for L, M in d.items()}  # noqa: E731
    make_link_atlas(data_dir, cache, "lb", b_obs or obs[:B_CELLS], ct[:B_CELLS], cut(B), cut(Bt) if b_twin else None, seed=2,
                    top_genes={(0, 7): SHARED_GENES + [f"GENE{i}" for i in range(150, 160)]}, data_sha=b_data,
                    celltypes={(0, 7): ["T"], (1, 2): ["NK"]}, labels={(0, 7): "planted program B"})
    return {"la": A, "lb": cut(B), "la:twin": At, "lb:twin": cut(Bt), "groups": group}
