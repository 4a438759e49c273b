"""The plan: a cheap pass over the dataset, without the model, that fixes everything the expensive passes need.

It reads the .h5ad in chunks (never the whole matrix), picks the counts source, matches the genes, tokenizes
every cell to count its gene tokens, flags held-out cells, cuts the cells into shards of consecutive cells,
and refuses, before any model runs, what would make the build wrong (duplicated gene names, a cell-type or
donor column that does not exist or holds nothing).

Output folder:
  cells.parquet  cell (dataset row), obs_name, n_tokens (gene tokens), shard, heldout, cell_type, donor
  genes.parquet  token_id, gene (name) of every dataset gene the model knows
  plan.json      dataset, counts source, gene matching, shards [start, stop, tokens], totals, settings
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import orjson

from ... import __version__
from ...errors import AtlasError
from ...jsonio import dumps_json
from ..cache import key_of
from ..heldout import heldout_flags
from ..stage import Stage, folder_key



@dataclass(frozen=True)
class PlanConfig:
    shard_cells: int = 256      # cells per shard: the unit of work, of resume and of memory
    holdout: float = 0.1        # share of cells held out of SAE training (drawn per cell from (seed, cell))


def _obs_column(obs: pd.DataFrame, name: str | None, option: str, path: Path) -> np.ndarray | None:
    if not name:
        return None
    if name not in obs.columns:
        raise AtlasError(f"{path}: obs has no column {name!r} for {option} "
                         f"(has: {', '.join(map(str, obs.columns)) or 'none'})")
    col = obs[name]
    values = np.array([None if pd.isna(v) else str(v) for v in col.tolist()], dtype=object)
    if all(v is None for v in values):
        raise AtlasError(f"{path}: obs column {name!r} ({option}) is empty for every cell")
    return values


def run(adapter, data: Path, out: Path, cfg: PlanConfig, seed: int = 0, max_cells: int | None = None,
        gene_column: str | None = None, cell_type_column: str | None = None, donor_column: str | None = None,
        backed: bool = True, model_heldout: list[str] | None = None) -> dict:
    """Write the plan of `data` for `adapter` into `out` (an empty folder). Returns plan.json's record.
    `model_heldout`: the cells (obs names) the model never trained on, when its checkpoint records them; those of
    the data are then the held-out cells, so every held-out measure is on cells neither the model nor the SAE saw.
    Otherwise each cell is held out with probability cfg.holdout."""
    # builder.models imports torch; read_plan (used by the torch-free statistics) must not.
    from ...models import check_unique_genes, gene_token_count
    from ...models.dataset import read_h5ad

    data, out = Path(data), Path(out)
    dataset = read_h5ad(data, max_cells=max_cells, backed=backed)
    types = _obs_column(dataset.obs, cell_type_column, "--cell-type-column", data)
    donors = _obs_column(dataset.obs, donor_column, "--donor-column", data)
    prepared = adapter.prepare(dataset, gene_column)
    check_unique_genes(prepared)
    n = dataset.n_cells
    n_tokens = np.array([gene_token_count(adapter, adapter.tokenize(prepared, c)) for c in range(n)], np.int64)
    if n_tokens.sum() == 0:
        raise AtlasError(f"{data}: no cell has a gene the model knows, so there is nothing to build from")
    cells = np.arange(n, dtype=np.int64)
    names = dataset.obs.index.astype(str)
    unseen = names.isin(model_heldout or []) & (n_tokens > 0)
    if unseen.any():
        held = np.asarray(unseen)
        source = {"kind": "the model's held-out cells", "model_heldout_cells": len(model_heldout),
                  "in_this_data": int(held.sum()), "model_training_cells_in_data": int(n - held.sum())}
    else:
        held = heldout_flags(cells, cfg.holdout, seed)
        source = {"kind": "drawn", "holdout": cfg.holdout, "seed": seed,
                  "why": "the checkpoint records no held-out cells" if not model_heldout
                  else "none of the model's held-out cells is in this data"}
    if n_tokens[held].sum() == 0:
        raise AtlasError(f"{data}: none of the {int((n_tokens > 0).sum())} cells with gene tokens was drawn as held "
                         f"out (holdout {cfg.holdout}); variance explained, dead features and the principal axes are "
                         f"measured on held-out cells: use more cells or a larger train.holdout")
    shard = (cells // cfg.shard_cells).astype(np.int32)
    pq.write_table(pa.table({
        "cell": pa.array(cells, pa.int64()), "obs_name": pa.array(dataset.obs.index.astype(str).tolist()),
        "n_tokens": pa.array(n_tokens, pa.int32()), "shard": pa.array(shard), "heldout": pa.array(held),
        "cell_type": pa.array(types.tolist() if types is not None else [None] * n, pa.string()),
        "donor": pa.array(donors.tolist() if donors is not None else [None] * n, pa.string()),
    }), out / "cells.parquet", compression="zstd")
    tok = np.unique(prepared.token_of_gene[prepared.token_of_gene >= 0])
    pq.write_table(pa.table({"token_id": pa.array(tok, pa.int64()),
                             "gene": pa.array([adapter.gene_names[int(t)] for t in tok])}),
                   out / "genes.parquet", compression="zstd")
    bounds = [(int(s), int(min(s + cfg.shard_cells, n))) for s in range(0, n, cfg.shard_cells)]
    record = {
        "format": "feature-atlas plan 1",
        "dataset": {"path": str(data), "cells": n, "counts": dataset.counts_source, **prepared.report},
        "model": {"family": adapter.family, "name": adapter.name, "n_layers": adapter.n_layers,
                  "width": adapter.width, "max_tokens": adapter.max_tokens,
                  "ignored_checkpoint_keys": adapter.ignored_keys, "head_problem": adapter.head_problem},
        "vocab_size": int(max(adapter.gene_names) + 1),
        "tokens": int(n_tokens.sum()), "cells_with_tokens": int((n_tokens > 0).sum()),
        "heldout_cells": int(held.sum()), "heldout_tokens": int(n_tokens[held].sum()), "heldout_source": source,
        "shards": [[a, b, int(n_tokens[a:b].sum())] for a, b in bounds],
        "config": {"shard_cells": cfg.shard_cells, "holdout": cfg.holdout, "seed": seed,
                   "cell_type_column": cell_type_column or None, "donor_column": donor_column or None},
    }
    (out / "plan.json").write_bytes(dumps_json(record, indent=True))
    return record


def read_plan(folder: Path) -> tuple[dict, pd.DataFrame]:
    """(plan.json record, the per-cell table) of a plan folder."""
    folder = Path(folder)
    return orjson.loads((folder / "plan.json").read_bytes()), pq.read_table(folder / "cells.parquet").to_pandas()


@dataclass(frozen=True)
class Plan:
    """The plan stage's outputs: plan.json's record, the per-cell table and the genes the model knows."""

    folder: Path
    key: str
    record: dict
    cells: pd.DataFrame

    def gene_names(self) -> pd.Series:
        """token id -> gene name."""
        return pq.read_table(self.folder / "genes.parquet").to_pandas().set_index("token_id")["gene"]


class PlanStage(Stage):
    name = "plan"

    def key(self, b) -> str:
        cfg = b.cfg
        # the tag: plans cached before the held-out cells came from the model's own held-out set (heldout_source)
        # chose other cells and lack that field; they must not be reused
        return key_of("plan", __version__, cfg.model, b.inputs, cfg.max_cells, cfg.gene_column, cfg.seed,
                      cfg.shard_cells, cfg.train.holdout, cfg.cell_type_column, cfg.donor_column, "model heldout")

    def run(self, b, tmp: Path) -> None:
        cfg = b.cfg
        from ...models.heldout import heldout_cells

        run(b.adapter, Path(cfg.data), tmp, PlanConfig(cfg.shard_cells, cfg.train.holdout), cfg.seed,
            cfg.max_cells or None, cfg.gene_column or None, cfg.cell_type_column or None, cfg.donor_column or None,
            cfg.backed, heldout_cells(Path(cfg.checkpoint)))

    def read(self, folder: Path) -> Plan:
        record, cells = read_plan(folder)
        return Plan(Path(folder), folder_key(folder), record, cells)
