"""Where `atlas link` finds an atlas' per-cell data, and the profiles it makes of it.

An atlas made by `atlas build` records the stage-cache entries of its plan and stream, and of its untrained twin's
(manifest `cache`, atlas/export.py cache_entries). They are read here through the plan and stream stages' readers.
Two atlases' cells are matched by cell id (the .h5ad's obs names). A feature's profile over the shared cells is its
mean activation over each cell's gene tokens (0 where it never fires), summed from the codes shard by shard, so only
one shard's codes and the sparse (cells, features) profile are in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import AtlasError
from ..cache import is_done, tree_hash
from ..stages.plan import Plan, PlanStage
from ..stages.stream import Stream, StreamStage

CHUNK = 1 << 18  # tokens of a shard summed at a time (k values each): bounds the memory of one step
NO_TYPE = "(no cell type)"


@dataclass(frozen=True)
class CellSource:
    """One build's cells and codes: the results of its plan and stream stages."""

    label: str      # how messages name it: "atlas X" or "the untrained twin of atlas X"
    plan: Plan
    stream: Stream


def _entry(rec: dict, what: str, label: str, caches: list[Path]) -> Path:
    entry = rec["cache_entry"]
    for cache in caches:
        if is_done(Path(cache) / entry):
            return Path(cache) / entry
    where = ", ".join(map(str, caches))
    raise AtlasError(f"{label}: its {what} cache entry {entry} (per-cell data) is not in --cache {where}; give the "
                     f"--cache of the build that made it")


def locate(manifest: dict, name: str, caches: list[Path], twin: bool = False) -> CellSource:
    """The plan and stream of atlas `name` (or of its untrained twin) in one of `caches`, checked against what its
    manifest recorded; one line naming what is missing otherwise."""
    rec = manifest.get("cache")
    if not isinstance(rec, dict) or not rec:
        source = manifest.get("source")
        if isinstance(source, dict) and not (manifest.get("parameters") or {}).get("checkpoint"):
            raise AtlasError(f"atlas {name}: imported ({source.get('kind') or 'from elsewhere'}), it has no per-cell "
                             f"codes (no build cache); link atlases made by atlas build")
        raise AtlasError(f"atlas {name}: its manifest.json records no per-cell data (field 'cache': the cache entries "
                         f"of its cells and codes), as an atlas built before atlas link existed; run its atlas build "
                         f"again (every stage is cached) to record them")
    label = f"atlas {name}"
    if twin:
        if "twin" not in rec:
            raise AtlasError(f"atlas {name}: its build ran no untrained twin (baselines.random_init_model off), whose "
                             f"codes the second null of atlas link needs; build it again with --random-init-model")
        rec, label = rec["twin"], f"the untrained twin of atlas {name}"
    try:
        plan_dir = _entry(rec["plan"], "plan", label, caches)
        if tree_hash(plan_dir) != rec["plan"]["sha256"]:
            raise AtlasError(f"{label}: {plan_dir} is not the plan it was built from (its hash differs)")
        stream_dir = _entry(rec["stream"], "stream", label, caches)
        stream = StreamStage().read(stream_dir)
        if len(stream.shards()) != rec["stream"]["shards"]:
            raise AtlasError(f"{label}: {stream_dir} holds {len(stream.shards())} shards of codes, the atlas "
                             f"recorded {rec['stream']['shards']}")
    except (KeyError, TypeError):
        raise AtlasError(f"atlas {name}: manifest.json field 'cache' is not what atlas build writes "
                         f"({{plan: {{cache_entry, sha256}}, stream: {{cache_entry, shards, tokens}}}})") from None
    return CellSource(label, PlanStage().read(plan_dir), stream)


@dataclass(frozen=True)
class SharedCells:
    """The cells two sources share (by cell id, each with gene tokens in both), in the first source's order."""

    ids: np.ndarray                 # obs names
    groups: np.ndarray              # (cells,) cell-type index
    group_names: list[str]
    type_source: str | None         # which source's cell-type labels (None: no labels, one group)
    rows: dict[str, np.ndarray]     # source label -> dataset row of each shared cell
    n_tokens: dict[str, np.ndarray]  # source label -> gene tokens of each shared cell

    @property
    def n(self) -> int:
        return len(self.ids)


def _cells(src: CellSource) -> pd.DataFrame:
    cells = src.plan.cells
    dup = cells["obs_name"].duplicated()
    if dup.any():
        raise AtlasError(f"{src.label}: cell id {cells['obs_name'][dup].iloc[0]!r} appears more than once in its "
                         f"data, so cells cannot be matched by id")
    return cells.set_index("obs_name")


def shared_cells(sources: list[CellSource], min_cells: int) -> SharedCells:
    tables = [_cells(s) for s in sources]
    ids = tables[0].index[tables[0]["n_tokens"].to_numpy() > 0]
    for t in tables[1:]:
        ids = ids[ids.isin(t.index[t["n_tokens"].to_numpy() > 0])]
    if len(ids) < max(min_cells, 3):
        shown = " and ".join(s.label for s in sources[:2])  # the twins' cells are their models' (same data)
        raise AtlasError(f"{shown} share {len(ids)} cell(s) with gene tokens (matched by cell id), fewer than "
                         f"--min-cells {min_cells}: they were not built on the same cells")
    labels = next(((s.label, t) for s, t in zip(sources, tables) if t["cell_type"].notna().any()), None)
    if labels is None:
        names, groups = [NO_TYPE], np.zeros(len(ids), np.int64)
    else:
        raw = labels[1]["cell_type"].reindex(ids).fillna(NO_TYPE).astype(str)
        names = sorted(raw.unique())
        groups = pd.Categorical(raw, categories=names).codes.astype(np.int64)
    return SharedCells(np.asarray(ids, dtype=object), groups, names, labels and labels[0],
                       {s.label: t.loc[ids, "cell"].to_numpy(np.int64) for s, t in zip(sources, tables)},
                       {s.label: t.loc[ids, "n_tokens"].to_numpy(np.int64) for s, t in zip(sources, tables)})


def profiles(src: CellSource, layer: int, cells: SharedCells, n_features: int) -> sp.csc_matrix:
    """(shared cells, features): each feature's mean activation over the cell's gene tokens. Summed from the codes
    shard by shard and CHUNK tokens at a time; only non-zero values are held."""
    rows = cells.rows[src.label]
    pos = np.full(int(max(rows.max(), src.plan.cells["cell"].max())) + 1, -1, np.int64)
    pos[rows] = np.arange(cells.n)
    parts = []
    for shard, codes in zip(src.stream.shards(), src.stream.codes(layer)):
        for start in range(0, codes.n_tokens, CHUNK):
            val = np.asarray(codes.val[start:start + CHUNK])
            idx = np.asarray(codes.idx[start:start + CHUNK]).astype(np.int64)
            at = pos[np.asarray(codes.cell[start:start + CHUNK], np.int64)]
            on = (val > 0) & (at >= 0)[:, None]
            f = idx[on]
            if f.size and f.max() >= n_features:
                raise AtlasError(f"{shard}: layer {layer} codes hold feature {int(f.max())}, beyond the "
                                 f"{n_features} features of {src.label}'s layer {layer}")
            m = sp.coo_matrix((val[on].astype(np.float64), (np.broadcast_to(at[:, None], val.shape)[on], f)),
                              shape=(cells.n, n_features))
            m.sum_duplicates()
            parts.append((m.row, m.col, m.data))
    r, c, v = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3))
    X = sp.csc_matrix((v, (r.astype(np.int64), c.astype(np.int64))), shape=(cells.n, n_features))
    X.sum_duplicates()  # a cell's tokens may straddle two chunks
    return sp.csc_matrix(X.multiply(1.0 / cells.n_tokens[src.label][:, None]))


def gene_universe(src: CellSource, min_support: int, normalise) -> set[str]:
    """The genes that can enter the source's top-gene lists (at least min_support tokens in its data), named as the
    atlas names them (`normalise`: export's symbols)."""
    ids, counts = src.stream.gene_tokens()
    names = src.plan.gene_names().reindex(ids[counts >= min_support]).dropna()
    return {normalise(g) or g for g in names}
