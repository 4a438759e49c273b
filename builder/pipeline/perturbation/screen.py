"""`atlas perturb`'s analysis: find the atlas' model and SAEs, run every perturbation of a Perturb-seq .h5ad against
its controls (response.py), then each TF's target specificity (tf.py). The CLI adds the rows to the atlas
(atlas/perturbation.py). Definitions: response.py's docstring and the docs' "Perturbation response".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...errors import AtlasError
from ...fsutil import sha256_file
from ...models.dataset import Dataset
from ..cache import tree_hash
from .response import (Design, Encoder, expression, gene_columns, read_design, response_rows, select_on_target,
                       test_perturbation)
from .stats import PerturbConfig
from .tf import specificity

METHOD = ("cell-level summaries per feature (mean activation over the cell's gene positions; fraction of positions "
          "active), perturbed cells against controls with the perturbed gene's token left out of both; effect = "
          "{effect}; p = {test}; q = BH over the features of every layer within the perturbation")


@dataclass(frozen=True)
class ModelSource:
    family: str
    checkpoint: Path
    seed: int
    layers: list[int]
    saes: dict[int, Path]
    sae_sha256: dict[str, str]


def _sae_folder(root: Path, layer: int) -> Path | None:
    for cand in (root / f"layer_{layer:02d}", root / f"layer_{layer}", root / f"layer_{layer:02d}.pt",
                 root / f"layer_{layer}.pt"):
        if cand.exists():
            return cand
    return None


def locate(m: dict, name: str, where: Path, layers: list[int] | None, checkpoint: Path | None, sae: Path | None,
           cache: Path) -> ModelSource:
    """The checkpoint and SAEs that the atlas `name` (manifest `m`, folder `where`) was built from, or the given
    ones, checked against its hashes."""
    params, model = m.get("parameters", {}), m.get("model", {})
    if "source" in m and not params.get("checkpoint"):
        raise AtlasError(f"atlas {name}: imported ({m['source'].get('kind', 'from elsewhere')}), it records no model "
                         f"checkpoint and no SAEs this command can load; perturb an atlas made by atlas build")
    built = list(model.get("layers") or [])
    family = model.get("family") or params.get("model")
    if not built or not family:
        raise AtlasError(f"atlas {name} records no model: {where / 'manifest.json'} has no field 'model' with its "
                         f"family and layers; perturb an atlas built by atlas build")
    if checkpoint is None and not params.get("checkpoint"):
        raise AtlasError(f"atlas {name}: records no model checkpoint (it was not made by atlas build); give "
                         f"--checkpoint DIR and --sae DIR")
    ckpt = Path(checkpoint or params["checkpoint"])
    if not ckpt.is_dir():
        raise AtlasError(f"atlas {name}: its checkpoint {ckpt} is not a folder here; give --checkpoint DIR")
    if model.get("checkpoint_sha256") and tree_hash(ckpt) != model["checkpoint_sha256"]:
        raise AtlasError(f"--checkpoint {ckpt}: not the checkpoint atlas {name} was built from (its hash differs)")
    chosen = sorted(set(layers)) if layers else built
    missing = [L for L in chosen if L not in built]
    if missing:
        raise AtlasError(f"--layers {missing[0]}: atlas {name} has layers {', '.join(map(str, built))}")
    files = m.get("sae", {}).get("files") or {}
    saes, hashes = {}, {}
    for L in chosen:
        if sae is not None:
            path = _sae_folder(Path(sae), L)
        elif str(L) in files:
            rec = files[str(L)]
            path = Path(cache) / rec["cache_entry"] if "cache_entry" in rec else Path(rec.get("path", ""))
            if not path.exists() or tree_hash(path) != rec.get("sha256"):
                raise AtlasError(f"atlas {name}: the SAE of layer {L} is not at {path} (or changed since the build); "
                                 f"give --cache of its build or --sae DIR")
        elif params.get("sae"):
            path = _sae_folder(Path(params["sae"]), L)
        else:
            path = None
        if path is None:
            raise AtlasError(f"atlas {name}: records no SAE this command can load for layer {L} (built before SAE "
                             f"hashes were recorded, or not built); give --sae DIR with layer_LL/ folders")
        saes[L], hashes[str(L)] = path, tree_hash(path)
    return ModelSource(family, ckpt, int(params.get("seed", 0)), chosen, saes, hashes)


def run(enc: Encoder, dataset: Dataset, design: Design, targets: dict[str, set[str]] | None, cfg: PerturbConfig,
        name: str, log=lambda s: None, drop_gene: bool = True, index: dict[str, np.ndarray] | None = None,
        ) -> tuple[list[dict], list[dict], dict]:
    """(perturbation_response rows, tf_specificity rows, summary) of every qualifying perturbation; `index` is
    gene_columns(dataset) when the caller has it. drop_gene=False keeps the perturbed gene's token (only to show,
    in the tests, what the drop prevents)."""
    index = gene_columns(dataset) if index is None else index
    expr = expression(dataset, np.concatenate([design.controls, *design.groups.values()]), enc, cfg.min_expressed)
    log(f"perturb: {design.controls.size} control cells through {len(enc.layers)} layer(s) of the model and SAEs")
    mean, active, loadings = enc.summarise(design.controls, loadings=True)
    results, rows = [], []
    for k, pert in enumerate(design.groups):
        log(f"perturb: {pert} ({design.groups[pert].size} cells), {k + 1} of {len(design.groups)}")
        gene_rows = index.get(pert.upper(), np.zeros(0, np.int64))
        res = test_perturbation(enc, design, expr, (mean, active), pert, k, gene_rows, cfg, drop_gene)
        results.append(res)
        rows += response_rows(enc, res, name, cfg)
    tf_rows, summary = specificity(enc, results, expr, loadings, targets, cfg, name)
    pseudo = [p for r in results for p in r.pseudo]
    tests = sum(p["tests"] for p in pseudo)
    summary["pseudo"] = {"n_pseudo": len(pseudo),
                         "mean_responding": float(np.mean([p["responding"] for p in pseudo])) if pseudo else None,
                         "false_positive_rate": sum(p["below_alpha"] for p in pseudo) / tests if tests else None,
                         "tests": tests}
    summary.update(n_perturbations=len(results), n_skipped=len(design.skipped), n_controls=int(design.controls.size),
                   universe=int(expr.universe.size),
                   mean_responding=float(np.mean([t["n_responding"] for t in tf_rows])) if tf_rows else None)
    return rows, tf_rows, summary


def analyse(manifest: dict, name: str, where: Path, data: Path, column: str, control: str, cfg, dataset: str,
            layers=None, trrust: Path | None = None, batch_column: str | None = None, checkpoint: Path | None = None,
            sae: Path | None = None, cache: Path = Path(".atlas_cache"), gene_column: str | None = None,
            device: str = "cpu", log=lambda s: None, note=lambda s: None) -> tuple[list[dict], list[dict], dict]:
    """`atlas perturb` on the atlas `name` (its manifest, its folder `where`): (perturbation_response rows,
    tf_specificity rows, the record of manifest.perturbation[dataset]). Every input is checked (model, SAEs,
    TRRUST, data, columns) before the model runs. `note` gets the checkpoint's head_problem, if any (no head is
    needed here)."""
    from ...models import check_unique_genes, default_batch_size, load, pick_device
    from ...models.dataset import read_h5ad
    from ..annotation.genesets import read_trrust
    from ..sae.topk import load_sae

    src = locate(manifest, name, where, layers, checkpoint, sae, cache)
    targets = None
    if trrust is not None:
        sets, _ = read_trrust(Path(trrust))
        targets = {n: set(g) for n, g in zip(sets.terms, sets.genes)}
    ds = read_h5ad(Path(data))
    design = read_design(ds, column, control, batch_column, cfg)
    index = gene_columns(ds)
    design = select_on_target(ds, design, index, cfg)
    adapter = load(src.family, src.checkpoint, seed=src.seed)
    if adapter.head_problem:
        note(adapter.head_problem)
    saes = {L: load_sae(p) for L, p in src.saes.items()}
    for L, s in saes.items():
        if s.d_in != adapter.width:
            raise AtlasError(f"{src.saes[L]}: SAE input width {s.d_in} does not fit {adapter.name} "
                             f"(width {adapter.width})")
    prepared = adapter.prepare(ds, gene_column)
    check_unique_genes(prepared)
    dev = pick_device(device)
    enc = Encoder(adapter, prepared, saes, src.layers, default_batch_size(dev), dev)
    rows, tf, summary = run(enc, ds, design, targets, cfg, dataset, log, index=index)
    return rows, tf, _record(ds, design, src, cfg, trrust, summary, prepared.report)


def on_target_counts(record: dict) -> dict:
    """Of a record of `analyse` with --on-target: the perturbed cells left out, and the perturbations whose
    knockdown could not be measured (kept whole)."""
    kept = record["on_target"].values()
    return {"removed": sum(r["removed"] for r in kept), "unmeasured": sum(r["threshold"] is None for r in kept)}


def _record(ds, design, src: ModelSource, cfg, trrust, summary: dict, report: dict) -> dict:
    batch = design.batch_column is not None
    method = METHOD.format(
        effect="coefficient of the perturbation in y ~ perturbed + batch over the residual SD" if batch
        else "Cohen's d with its Hedges-Olkin interval",
        test="van Elteren's batch-stratified Wilcoxon test (controls from the same batches)" if batch
        else "two-sided Mann-Whitney U")
    return {
        "source": {"file": Path(ds.path).name, "sha256": sha256_file(Path(ds.path)), "n_cells": int(ds.n_cells),
                   "perturbation_column": design.column, "control": design.control,
                   "batch_column": design.batch_column, "counts": ds.counts_source},
        "parameters": {**asdict(cfg), "layers": src.layers, "trrust": None if trrust is None else Path(trrust).name,
                       "trrust_sha256": None if trrust is None else sha256_file(Path(trrust)),
                       "sae_sha256": src.sae_sha256, "tokenization_seed": src.seed,
                       "gene_column": report.get("gene_column"), "perturbed_gene_token": "dropped from both sides",
                       "method": method},
        "summary": summary,
        "skipped": dict(sorted(design.skipped.items())),
        "on_target": dict(sorted(design.on_target.items())),
    }
