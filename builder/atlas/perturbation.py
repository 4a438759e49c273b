"""`atlas perturb`: find an atlas' model and SAEs, run the perturbation response (pipeline/perturb.py) over a
Perturb-seq .h5ad, and add its rows to the atlas, replacing only this dataset's rows of perturbation_response
and tf_specificity (other tables copied byte for byte, other datasets' rows kept) and its manifest entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ..errors import AtlasError
from ..fsutil import sha256_file
from ..pipeline.cache import tree_hash
from .format import SCHEMA, Atlas, read_atlas, update_atlas

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


def locate(atlas: Atlas, layers: list[int] | None, checkpoint: Path | None, sae: Path | None,
           cache: Path) -> ModelSource:
    """The checkpoint and SAEs the atlas was built from (or the given ones), checked against its hashes."""
    m, name = atlas.manifest, atlas.name
    params, model = m.get("parameters", {}), m.get("model", {})
    if "source" in m and not params.get("checkpoint"):
        raise AtlasError(f"atlas {name}: imported ({m['source'].get('kind', 'from elsewhere')}), it records no model "
                         f"checkpoint and no SAEs this command can load; perturb an atlas made by atlas build")
    built = list(model.get("layers") or [])
    family = model.get("family") or params.get("model")
    if not built or not family:
        raise AtlasError(f"atlas {name} records no model: {atlas.path / 'manifest.json'} has no field 'model' with its "
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


def _merged(atlas: Atlas, table: str, dataset: str, rows: list[dict]) -> pa.Table:
    """The atlas' rows of `table` for other datasets, plus the new rows of `dataset`."""
    old = atlas.table(table).to_pandas()
    old = old[old["dataset"] != dataset]
    new = pd.DataFrame(rows, columns=[c.name for c in SCHEMA[table].columns])
    frames = [f for f in (old, new) if len(f)]
    if not frames:
        return SCHEMA[table].schema().empty_table()
    both = pd.concat(frames, ignore_index=True)
    return pa.Table.from_pandas(both.astype(object).where(both.notna(), None), preserve_index=False)


def write(path: Path, dataset: str, response: list[dict], tf: list[dict], record: dict, log=lambda s: None) -> Atlas:
    """Replace `dataset`'s rows and manifest entry in the atlas as it is now (re-read with the atlas held: another
    run may have added its dataset since this one started); labels of responding features come from its features."""
    def change(atlas: Atlas):
        feats = atlas.table("features").to_pandas().set_index(["layer", "feature"])["label"]
        rows = []
        for r in response:
            lab = feats.get((r["layer"], r["feature"]))
            rows.append({**r, "label": None if lab is None or pd.isna(lab) else lab})
        manifest = dict(atlas.manifest)
        manifest["perturbation"] = {**manifest.get("perturbation", {}), dataset: record}
        return manifest, {"perturbation_response": _merged(atlas, "perturbation_response", dataset, rows),
                          "tf_specificity": _merged(atlas, "tf_specificity", dataset, tf)}

    return update_atlas(path, change, lambda: log(f"waiting: another command is writing {path}"))


def perturb(atlas_dir: Path, data: Path, column: str, control: str, cfg, dataset: str, layers=None,
            trrust: Path | None = None, batch_column: str | None = None, checkpoint: Path | None = None,
            sae: Path | None = None, cache: Path = Path(".atlas_cache"), gene_column: str | None = None,
            device: str = "cpu", log=lambda s: None, note=lambda s: None) -> tuple[Atlas, dict]:
    """The whole command; returns the rewritten atlas and its manifest.perturbation[dataset] record. Every input is
    checked (atlas, model, SAEs, TRRUST, data, columns) before the model runs. `note` gets the checkpoint's
    head_problem, if any (the command needs no head)."""
    from ..models import check_unique_genes, default_batch_size, load, pick_device
    from ..models.dataset import read_h5ad
    from ..pipeline.perturbation import response as pp
    from ..pipeline.annotation.genesets import read_trrust
    from ..pipeline.sae.topk import load_sae

    atlas = read_atlas(atlas_dir)
    src = locate(atlas, layers, checkpoint, sae, cache)
    targets = None
    if trrust is not None:
        sets, _ = read_trrust(Path(trrust))
        targets = {n: set(g) for n, g in zip(sets.terms, sets.genes)}
    ds = read_h5ad(Path(data))
    design = pp.read_design(ds, column, control, batch_column, cfg)
    index = pp.gene_columns(ds)
    design = pp.select_on_target(ds, design, index, cfg)
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
    enc = pp.Encoder(adapter, prepared, saes, src.layers, default_batch_size(dev), dev)
    response, tf, summary = pp.run(enc, ds, design, targets, cfg, dataset, log, index=index)
    record = _record(ds, design, src, cfg, trrust, summary, prepared.report)
    return write(atlas.path, dataset, response, tf, record, log), record


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
