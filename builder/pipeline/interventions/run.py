"""The interventions stage (`atlas build --interventions`): causal patching of SAE features on held-out cells.

Per layer:
1. The feature's genes and frequency come from the training cells (the plan's cells not held out), with the
   atlas' own top-gene ranking (stats.top_genes) on their codes: disjoint from the cells patched below.
2. Attribution pass: every held-out cell patched (up to max_cells, a seeded choice) gets one forward and one
   backward with its mask draws; every feature's first-order effect on the objective (patching.attribution).
3. The sample: the n_top features of largest |attribution| and n_random more drawn evenly across frequency
   quartiles (causal_stats.pick_features); each also patched along null_directions random directions of the
   same norm at the same positions.
4. Exact pass: each sampled feature and direction patched in every cell where the feature fires.
5. Per feature: per-gene effects with bootstrap intervals over cells, total effect (mean KL or mean |change|),
   change of the objective, specificity (AUC of its training top genes among the most affected genes), tested
   against its null_features frequency-matched patched features and its random directions; BH q over every
   tested feature of the atlas. Attribution against exact: Spearman over the tested features, per layer.

Stage folder: causal_effects.parquet, causal_summary.parquet (atlas columns, gene names as token ids' names),
interventions.json (parameters, per-layer agreement, cells patched).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scipy import stats as sps

from ...errors import AtlasError
from ...jsonio import dumps_json
from . import stats as cs
from ..statistics import features as st
from .stats import InterventionsConfig
from ..codes import Codes, read_layer, shard_name
from .patching import Effect, attribution, check_head, patch, prepare_cell

SELECTION = {0: "top_attribution", 1: "stratified_random"}
DIRECTION_STREAM = 0x4452  # separates the random directions from the other draws
SAMPLE_STREAM = 0x5350


def training_profile(stream: Path, plan: dict, cells: pd.DataFrame, layer: int, n_features: int,
                     stats_cfg: st.StatsConfig) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(frequency per feature, feature -> top-gene token ids) on the training cells' codes only."""
    train = ~cells["heldout"].to_numpy()
    n_tokens = cells["n_tokens"].to_numpy()
    parts = []
    for s, (start, stop, _) in enumerate(plan["shards"]):
        c = read_layer(Path(stream) / "shards" / shard_name(s), layer, mmap=False)
        keep = train[np.asarray(c.cell, np.int64)]
        sub = Codes(c.idx[keep], c.val[keep], c.cell[keep], c.gene[keep])
        parts.append(st.map_layer(sub, st.ShardCells(start, n_tokens[start:stop]), n_features, plan["vocab_size"], 1))
    m = st.merge(parts, 1)
    if int(m["tokens"]) == 0:
        raise AtlasError(f"layer {layer}: the training cells have no gene token, so no feature has genes to test")
    freq = m["fire"] / m["tokens"]
    g = st.top_genes(m, plan["vocab_size"], stats_cfg)
    order = np.argsort(g["feature"], kind="stable")
    f, tok = g["feature"][order], g["token_id"][order]
    bounds = np.searchsorted(f, np.arange(n_features + 1))
    return freq, {i: tok[bounds[i]:bounds[i + 1]] for i in range(n_features) if bounds[i + 1] > bounds[i]}


def patched_cells(cells: pd.DataFrame, n: int, seed) -> np.ndarray:
    """Held-out cells with gene tokens, at most n of them (a seeded choice), ascending."""
    held = cells.loc[cells["heldout"] & (cells["n_tokens"] > 0), "cell"].to_numpy(np.int64)
    if held.size > n:
        held = np.sort(np.random.default_rng([int(seed), SAMPLE_STREAM]).choice(held, n, replace=False))
    return held


def random_direction(u: torch.Tensor, seed, layer: int, feature: int, r: int) -> torch.Tensor:
    g = np.random.default_rng([int(seed), DIRECTION_STREAM, layer, feature, r]).standard_normal(u.shape[0])
    return torch.from_numpy(g / np.linalg.norm(g) * float(u.norm())).to(u.dtype)


def run_layer(adapter, prepared, sae, layer: int, cells: np.ndarray, freq: np.ndarray, top: dict, cfg,
              seed, log=lambda s: None) -> dict:
    """Attribution, sample, exact patching and statistics of one layer (rows of the two tables, agreement)."""
    check_head(adapter)
    sae = sae.eval()
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    attr_sum, fired = np.zeros(sae.d_sae), np.zeros(sae.d_sae, np.int64)
    for c in cells:
        cp = prepare_cell(adapter, prepared, int(c), layer, sae, cfg.draws, cfg.mask_rate, seed, grad=True)
        if cp is None:
            continue
        a, on = attribution(cp, sae)
        attr_sum += a
        fired += on
    feats, why = cs.pick_features(attr_sum / max(len(cells), 1), fired, freq, cfg.n_top, cfg.n_random, cfg.min_cells,
                                  [int(seed), SAMPLE_STREAM, layer])
    log(f"layer {layer}: patching {feats.size} features x (1 + {cfg.null_directions} random directions) "
        f"on {len(cells)} held-out cells")
    W = sae.decoder().detach()
    dirs = [(int(f), W[f]) for f in feats]
    dirs += [(int(f), random_direction(W[f], seed, layer, int(f), r)) for f in feats for r in range(cfg.null_directions)]
    effects: list[list[tuple[int, Effect]]] = [[] for _ in dirs]
    for c in cells:
        cp = prepare_cell(adapter, prepared, int(c), layer, sae, cfg.draws, cfg.mask_rate, seed, grad=False)
        if cp is None:
            continue
        for j, e in enumerate(patch(adapter, cp, layer, dirs, cfg.batch)):
            if e is not None:
                effects[j].append((int(c), e))
    return _layer_results(layer, feats, why, effects, freq, top, attr_sum, fired, cfg, seed)


def _profile(effects: list[tuple[int, Effect]], cfg, seed) -> dict:
    """Per-gene ratio estimates with intervals, and per-cell totals, of one intervention over its cells."""
    if not effects:
        return {"genes": np.zeros(0, np.int64), "est": np.zeros(0), "lo": np.zeros(0), "hi": np.zeros(0),
                "n": np.zeros(0, np.int64), "cells": 0}
    genes = np.unique(np.concatenate([e.genes for _, e in effects]))
    S, N = np.zeros((len(effects), genes.size)), np.zeros((len(effects), genes.size))
    for r, (_, e) in enumerate(effects):
        cols = np.searchsorted(genes, e.genes)
        S[r, cols], N[r, cols] = e.sums, e.counts
    est, lo, hi = cs.ratio_bootstrap(S, N, cfg.bootstrap, seed, cfg.level)
    totals = np.array([[e.total, e.objective] for _, e in effects])
    t_est, t_lo, t_hi = cs.ratio_bootstrap(totals[:, :1], np.ones((len(effects), 1)), cfg.bootstrap, seed, cfg.level)
    return {"genes": genes, "est": est, "lo": lo, "hi": hi, "n": (N > 0).sum(0), "cells": len(effects),
            "total": (float(t_est[0]), float(t_lo[0]), float(t_hi[0])), "objective": float(totals[:, 1].mean())}


def _specificity(top_genes: np.ndarray | None, prof: dict, min_genes: int) -> float | None:
    if top_genes is None or prof["genes"].size == 0:
        return None
    in_set = np.isin(prof["genes"], top_genes)
    if in_set.sum() < min_genes:
        return None
    return cs.auc(in_set, np.abs(prof["est"]))


def _layer_results(layer, feats, why, effects, freq, top, attr_sum, fired, cfg, seed) -> dict:
    n_f = feats.size
    profiles = [_profile(e, cfg, [int(seed), layer, j]) for j, e in enumerate(effects)]
    matched = cs.matched_nulls(feats, freq, cfg.null_features)
    pos = {int(f): j for j, f in enumerate(feats)}
    summary, genes = [], []
    for j, f in enumerate(feats):
        f = int(f)
        prof, tg = profiles[j], top.get(f)
        spec = _specificity(tg, prof, cfg.min_genes)
        nulls = [_specificity(tg, profiles[pos[int(m)]], cfg.min_genes) for m in matched[f]]
        nulls += [_specificity(tg, profiles[n_f + j * cfg.null_directions + r], cfg.min_genes)
                  for r in range(cfg.null_directions)]
        test = cs.null_test(spec, nulls)
        summary.append({"layer": layer, "feature": f, "selection": SELECTION[int(why[j])], "n_cells": prof["cells"],
                        "frequency": float(freq[f]), "specificity": spec, **test,
                        "null_values": [float(v) for v in nulls if v is not None],
                        "n_top_genes": 0 if tg is None else int(np.isin(prof["genes"], tg).sum()),
                        "total_effect": prof.get("total", (None,) * 3)[0], "total_lo": prof.get("total", (None,) * 3)[1],
                        "total_hi": prof.get("total", (None,) * 3)[2], "objective_change": prof.get("objective"),
                        "attribution": float(attr_sum[f] / fired[f]) if fired[f] else None})
        genes += _gene_rows(layer, f, prof, tg, cfg.effects_top, cfg.min_gene_cells)
    return {"summary": summary, "effects": genes, "agreement": _agreement(summary)}


def _gene_rows(layer: int, f: int, prof: dict, tg, keep: int, min_cells: int) -> list[dict]:
    """The `keep` most affected genes and the feature's top genes, among genes measured in >= min_cells cells;
    rank 1 = largest |effect| among those genes."""
    ok = np.flatnonzero(prof["n"] >= min_cells)
    if ok.size == 0:
        return []
    order = ok[np.lexsort((prof["genes"][ok], -np.abs(prof["est"][ok])))]
    is_top = np.isin(prof["genes"], tg if tg is not None else [])
    chosen = np.union1d(order[:keep], np.intersect1d(np.flatnonzero(is_top), ok))
    rank = np.zeros(prof["genes"].size, np.int64)
    rank[order] = np.arange(1, order.size + 1)
    return [{"layer": layer, "feature": f, "token_id": int(prof["genes"][i]), "delta": float(prof["est"][i]),
             "ci_lo": float(prof["lo"][i]), "ci_hi": float(prof["hi"][i]), "n_cells": int(prof["n"][i]),
             "rank": int(rank[i]), "top_gene": bool(is_top[i])} for i in chosen]


def _agreement(summary: list[dict]) -> dict:
    """Spearman correlations of attribution and the exact change of the objective over the tested features: signed,
    and of their magnitudes (the ranking attribution is used for)."""
    pairs = [(r["attribution"], r["objective_change"]) for r in summary
             if r["attribution"] is not None and r["objective_change"] is not None]
    out = {"n": len(pairs), "spearman": None, "p": None, "spearman_abs": None, "p_abs": None}
    if len(pairs) < 3:
        return out
    a, e = np.array(pairs).T
    for suffix, (x, y) in (("", (a, e)), ("_abs", (np.abs(a), np.abs(e)))):
        rho, p = sps.spearmanr(x, y)
        out["spearman" + suffix] = None if np.isnan(rho) else float(rho)
        out["p" + suffix] = None if np.isnan(p) else float(p)
    return out


def run(adapter, prepared, saes: dict, layers: list[int], stream: Path, plan: dict, cells: pd.DataFrame,
        stats_cfg: st.StatsConfig, cfg: InterventionsConfig, seed: int, out: Path, log=lambda s: None) -> dict:
    """Every layer; writes the stage folder `out` (already a private temporary folder) and returns its record."""
    check_head(adapter)
    chosen = patched_cells(cells, cfg.max_cells, seed)
    if chosen.size == 0:
        raise AtlasError("interventions: no held-out cell with gene tokens to patch (raise train.holdout or add cells)")
    summary, effects, agreement = [], [], {}
    for L in layers:
        freq, top = training_profile(stream, plan, cells, L, saes[L].d_sae, stats_cfg)
        r = run_layer(adapter, prepared, saes[L], L, chosen, freq, top, cfg, seed, log)
        summary += r["summary"]
        effects += r["effects"]
        agreement[str(L)] = r["agreement"]
    q = cs.fdr([r["p"] for r in summary])
    for r, v in zip(summary, q):
        r["q"] = v
    names = adapter.gene_names
    eff = pd.DataFrame(effects, columns=["layer", "feature", "token_id", "delta", "ci_lo", "ci_hi", "n_cells", "rank",
                                         "top_gene"])
    eff.insert(3, "gene", [names.get(int(t), str(t)) for t in eff["token_id"]])
    pq.write_table(pa.Table.from_pandas(eff.drop(columns="token_id"), preserve_index=False),
                   Path(out) / "causal_effects.parquet", compression="zstd")
    pq.write_table(pa.Table.from_pylist(summary) if summary else pa.table({}), Path(out) / "causal_summary.parquet",
                   compression="zstd")
    record = {"method": method(adapter.family, cfg), "config": asdict(cfg), "seed": seed,
              "cells_patched": int(chosen.size), "layers": layers, "tested": len(summary), "agreement": agreement}
    (Path(out) / "interventions.json").write_bytes(dumps_json(record, indent=True))
    return record


def method(family: str, cfg: InterventionsConfig) -> str:
    read = ("change in log p(true gene) at masked positions (masked-LM head); total effect = mean KL of the output"
            if family == "geneformer" else
            "change in predicted expression at masked values (expression decoder); total effect = mean |change|")
    return (f"ablation of the feature's decoder contribution where it fires (SAE error kept), held-out cells, "
            f"{cfg.draws} mask draws of {cfg.mask_rate:g}; {read}")


def read_interventions(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(causal_summary, causal_effects, interventions.json record) of a stage folder."""
    import orjson

    folder = Path(folder)
    return (pq.read_table(folder / "causal_summary.parquet").to_pandas(),
            pq.read_table(folder / "causal_effects.parquet").to_pandas(),
            orjson.loads((folder / "interventions.json").read_bytes()))
