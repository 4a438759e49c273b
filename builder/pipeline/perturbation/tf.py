"""Per-TF regulatory specificity of the perturbation response (research/perturbation.md D2), from the tests of
perturb.py: target enrichment among the genes loaded by the responding features, beside the expression ceiling
and the non-TF negative control. Definitions in perturb.py's docstring and docs/interventions.md ("Perturbation response").
"""

from __future__ import annotations

import math
import numpy as np

from . import stats as ps
from .response import Encoder, Expression, Result
from .stats import PerturbConfig


def gene_scores(enc: Encoder, loadings: tuple, responding: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Sum over the responding features of their loadings on the universe genes (mean activation per gene over
    the control cells), each feature scaled to a maximum of 1 so that no feature's scale dominates."""
    load, positions = loadings
    per_gene = np.maximum(positions[universe], 1).astype(np.float64)
    score = np.zeros(universe.size)
    for L in enc.layers:
        feats = enc.feature_of[responding[enc.layer_of[responding] == L]]
        if feats.size == 0:
            continue
        m = load[L][feats][:, universe].toarray() / per_gene
        top = m.max(1, keepdims=True)
        score += (m / np.where(top > 0, top, 1.0)).sum(0)
    return score


def _test(res: Result, tf: str, targets: set[str], expr: Expression, scores: np.ndarray | None,
          cfg: PerturbConfig) -> dict:
    """The TF's targets among the top genes of the feature scores and of the expression DE of `res`."""
    keep = ~(np.isin(expr.universe, res.drop) | (expr.symbols == tf) | (expr.symbols == res.name.upper()))
    is_target = np.isin(expr.symbols[keep].astype(str), sorted(targets))
    out = {"target_set": tf, "n_targets": int(is_target.sum()), "odds": None, "p": None, "overlap": None,
           "ceiling_odds": None, "ceiling_p": None, "ceiling_overlap": None}
    if out["n_targets"] < cfg.min_targets:
        return out
    if scores is not None:
        out["odds"], out["p"], out["overlap"] = ps.enrichment(ps.top_set(scores[keep], cfg.top_genes), is_target)
    de = np.where(res.de["tested"], -np.log10(np.maximum(np.nan_to_num(res.de["p"], nan=1.0), 1e-300)), 0.0)
    out["ceiling_odds"], out["ceiling_p"], out["ceiling_overlap"] = ps.enrichment(
        ps.top_set(de[keep], cfg.top_genes), is_target)
    return out


def _nearest_tf(res: Result, tfs: list[Result]) -> Result:
    """The TF most like a non-TF perturbation: nearest in log cell count, then knockdown efficiency, then name."""
    def gap(t):
        kd = abs((res.kd or 0.0) - (t.kd or 0.0))
        return (abs(math.log(res.n_pert) - math.log(t.n_pert)), kd, t.name)
    return min(tfs, key=gap)


def responding(res: Result, alpha: float) -> np.ndarray:
    """Indices (over every feature of every layer) of the features with q < alpha."""
    f = res.features
    return np.flatnonzero(f["tested"] & (np.nan_to_num(f["q"], nan=1.0) < alpha))


def specificity(enc: Encoder, results: list[Result], expr: Expression, loadings: tuple,
                targets: dict[str, set[str]] | None, cfg: PerturbConfig, dataset: str) -> tuple[list[dict], dict]:
    """Rows of tf_specificity (one per perturbation) and the summary of manifest.perturbation[dataset]."""
    rows, tests = [], {}

    def test(res: Result, tf: str) -> dict:
        hits = responding(res, cfg.alpha)
        scores = gene_scores(enc, loadings, hits, expr.universe) if hits.size else None
        return _test(res, tf, targets[tf], expr, scores, cfg)

    for res in results:
        is_tf = None if targets is None else res.name.upper() in targets
        rows.append({"dataset": dataset, "perturbation": res.name, "is_tf": is_tf, "n_cells": res.n_pert,
                     "n_ctrl": res.n_ctrl, "kd_efficiency": res.kd,
                     "n_de": int((np.nan_to_num(res.de["q"], nan=1.0) < cfg.alpha).sum()),
                     "n_responding": int(responding(res, cfg.alpha).size), "n_specific": None})
        if is_tf:
            tests[res.name] = test(res, res.name.upper())
    tested_tfs = [r for r in results if r.name in tests and tests[r.name]["ceiling_p"] is not None]
    for res in results if tested_tfs else []:  # the negative control: non-TFs against their nearest TF's targets
        if res.name.upper() not in targets:
            tests[res.name] = test(res, _nearest_tf(res, tested_tfs).name.upper())
    by_name = {r["perturbation"]: r for r in rows}
    for is_tf in (True, False):  # BH across the TFs, and separately across the negative controls
        group = [n for n in tests if by_name[n]["is_tf"] is is_tf and tests[n]["ceiling_p"] is not None]
        q = ps.fdr_with_missing([tests[n]["p"] for n in group])
        cq = ps.fdr_with_missing([tests[n]["ceiling_p"] for n in group])
        for n, a, b in zip(group, q, cq):
            by_name[n].update(tests[n], q=a, ceiling_q=b, verdict=ps.verdict(a, b, cfg.alpha))
    for n, t in tests.items():  # too few targets: the counts only, no verdict
        by_name[n].setdefault("target_set", t["target_set"])
        by_name[n].setdefault("n_targets", t["n_targets"])
    return rows, summary(rows, cfg)


def summary(rows: list[dict], cfg: PerturbConfig) -> dict:
    tf = [r for r in rows if r["is_tf"] and r.get("verdict")]
    neg = [r for r in rows if r["is_tf"] is False and r.get("verdict")]
    k = sum(r["verdict"] == "specific" for r in tf)
    kc = sum(r["ceiling_q"] is not None and r["ceiling_q"] < cfg.alpha for r in tf)
    kn = sum(r["verdict"] == "specific" for r in neg)
    main, ceiling, negative = ps.proportion(k, len(tf)), ps.proportion(kc, len(tf)), ps.proportion(kn, len(neg))
    return {"n_tf": len(tf), "n_specific": k, **main,
            "ceiling_n_specific": kc, "ceiling_fraction": ceiling["fraction"], "ceiling_ci_lo": ceiling["ci_lo"],
            "ceiling_ci_hi": ceiling["ci_hi"], "negative_n": len(neg), "negative_n_specific": kn,
            "negative_fraction": negative["fraction"], "negative_ci_lo": negative["ci_lo"],
            "negative_ci_hi": negative["ci_hi"]}
