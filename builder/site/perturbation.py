"""Shards and boot data of the interventions views: the TF pages and the overview's interventions block.

  tf/index.json   every perturbation of every dataset (the TF list, gene-page links): {datasets, rows: table
                  {perturbation, dataset (index into datasets), is_tf, verdict, n_responding, n_specific, q,
                  ceiling_q, kd_efficiency}}
  tf/p/KK.json    per perturbed gene (KK: the gene index's two-character key, indexes.gene_keys): {gene: [one
                  record per dataset: {TF_FIELDS that are set, dataset, published, alpha (when recorded), n_listed,
                  features: table {layer, feature, effect, ci_lo, ci_hi, q, n_pert, n_ctrl, label}}]}, the
                  knockdown, target enrichment against its expression ceiling, verdict and responding features
Tables are columnar (encode.py).
The overview block (`interventions` in the boot data, a few hundred bytes) holds the specificity histogram of the
patched features against their pooled null values, and per perturbation dataset the fraction of specific TFs
with its interval beside the ceiling, the negative control and the pseudo-perturbation false-positive rate.
Counts, histograms and intervals are computed here; the browser only draws them.
"""

from __future__ import annotations

import math
from collections import defaultdict, namedtuple

from ..pipeline.multitest import clopper_pearson

from .encode import sig, table
from .indexes import gene_keys

TF_ROWS = 200        # responding features listed per TF and dataset (all are counted in n_responding)
HIST_BINS = 20       # specificity (an AUC in [0, 1]) histogram bins of width 0.05
TF_FIELDS = ("is_tf", "n_cells", "kd_efficiency", "n_de", "n_targets", "target_set", "n_responding", "n_specific",
             "odds", "p", "q", "ceiling_odds", "ceiling_q", "verdict")
Responding = namedtuple("Responding", "layer feature effect ci_lo ci_hi q n_pert n_ctrl label")
Perturbation = namedtuple("Perturbation", "perturbation dataset is_tf verdict n_responding n_specific q ceiling_q "
                                          "kd_efficiency")


def _responding(rows: list[dict], labels: dict, alpha: float | None) -> tuple[dict, int]:
    """A perturbation's responding features (a table), q first then |effect|, cut at TF_ROWS: rows with a q below
    alpha; published rows (no q) are all listed. And how many responded."""
    keep = [r for r in rows if r["q"] is None or (alpha is not None and r["q"] < alpha)]
    keep.sort(key=lambda r: (r["q"] if r["q"] is not None else 2.0, -abs(r["effect"] or 0), r["rank"] or 0,
                             r["layer"] if r["layer"] is not None else -1, r["feature"]))
    out = table(Responding(r["layer"], r["feature"], sig(r["effect"], 3), sig(r["ci_lo"], 3), sig(r["ci_hi"], 3),
                           sig(r["q"], 3), r["n_pert"], r["n_ctrl"],
                           labels.get((r["layer"], r["feature"])) or _published_label(r["label"])) for r in keep[:TF_ROWS])
    return out, len(keep)


# Published labels that name no gene set: the predecessor's placeholders and its "unlabeled".
NOT_LABELS = {"transcription_factors", "pairwise_enrichment", "unlabeled", "unlabelled"}


def _published_label(label) -> str:
    return "" if not label or label in NOT_LABELS else label


def tf_shards(atlas, labels: dict) -> dict[str, object]:
    """tf/index.json and tf/p/KK.json; none when the atlas has no perturbation data."""
    tfs = atlas.table("tf_specificity").to_pylist()
    resp = defaultdict(list)
    for r in atlas.table("perturbation_response").to_pylist():
        resp[(r["dataset"], r["perturbation"])].append(r)
    if not tfs and not resp:
        return {}
    by_key = {(r["dataset"], r["perturbation"]): r for r in tfs}
    published = (atlas.manifest.get("extras", {}).get("perturbation_response") or {}).get("dataset")
    runs = atlas.manifest.get("perturbation") or {}
    # each dataset's own level (atlas perturb --alpha, in its record); a published dataset has none (no q)
    alpha = {ds: (rec.get("parameters") or {}).get("alpha") for ds, rec in runs.items() if isinstance(rec, dict)}
    datasets = sorted({k[0] for k in by_key} | {k[0] for k in resp})
    index, shards = [], defaultdict(dict)
    for ds, gene in sorted(set(by_key) | set(resp), key=lambda k: (k[1].upper(), k[1], k[0])):
        t = by_key.get((ds, gene), {})
        feats, n_listed = _responding(resp.get((ds, gene), []), labels, alpha.get(ds))
        rec = {k: sig(t.get(k), 4) for k in TF_FIELDS if t.get(k) is not None}
        rec.update(dataset=ds, published=ds == published, features=feats, n_listed=n_listed)
        if alpha.get(ds) is not None:
            rec["alpha"] = alpha[ds]
        shards[f"tf/p/{gene_keys(gene)[1]}.json"].setdefault(gene, []).append(rec)
        index.append(Perturbation(gene, datasets.index(ds), None if t.get("is_tf") is None else int(t["is_tf"]),
                                  t.get("verdict"), t.get("n_responding", n_listed), t.get("n_specific"),
                                  sig(t.get("q"), 3), sig(t.get("ceiling_q"), 3), sig(t.get("kd_efficiency"), 3)))
    out: dict[str, object] = dict(shards)
    out["tf/index.json"] = {"datasets": datasets, "rows": table(index)}
    return out


def _histogram(values: list[float]) -> list[int]:
    counts = [0] * HIST_BINS
    for v in values:
        if v is not None and math.isfinite(v):
            counts[min(HIST_BINS - 1, max(0, int(v * HIST_BINS)))] += 1
    return counts


def _causal_summary(atlas) -> dict | None:
    """Built atlases: the specificity of every scored feature against the pooled null values of all of them.
    Imported: the published ratios (no null), summarised."""
    rows = atlas.table("causal_summary").to_pylist()
    if not rows:
        return None
    scored = [r for r in rows if r["specificity"] is not None]
    alpha = (atlas.manifest.get("interventions") or {}).get("alpha")
    if scored:
        nulls = [v for r in scored for v in (r["null_values"] or [])]
        return {"n_tested": len(rows), "n_scored": len(scored), "alpha": alpha,
                "n_specific": None if alpha is None else sum(r["q"] is not None and r["q"] < alpha for r in scored),
                "layers": sorted({r["layer"] for r in rows} - {None}), "bins": HIST_BINS,
                "observed": _histogram([r["specificity"] for r in scored]), "null": _histogram(nulls),
                "n_null": len(nulls), "median": sig(_median([r["specificity"] for r in scored]), 3),
                "null_median": sig(_median(nulls), 3), "method": rows[0]["method"]}
    ratios = [r["specificity_ratio"] for r in rows if r["specificity_ratio"] is not None]
    if not ratios:
        return None
    return {"published": True, "n_tested": len(rows), "layers": sorted({r["layer"] for r in rows} - {None}),
            "median_ratio": sig(_median(ratios), 3), "n_above_2": sum(v > 2 for v in ratios),
            "lacks": (atlas.manifest.get("extras", {}).get("causal_summary") or {}).get("lacks")}


def _median(vals):
    vals = sorted(v for v in vals if v is not None and math.isfinite(v))
    if not vals:
        return None
    m = len(vals) // 2
    return vals[m] if len(vals) % 2 else (vals[m - 1] + vals[m]) / 2


SUMMARY_FIELDS = ("n_tf", "n_specific", "fraction", "ci_lo", "ci_hi", "ceiling_n_specific", "ceiling_fraction",
                  "ceiling_ci_lo", "ceiling_ci_hi", "negative_n", "negative_n_specific", "negative_fraction")


def _scalars(d) -> dict:
    return {str(k): (sig(v, 4) if isinstance(v, float) else v) for k, v in (d or {}).items()
            if isinstance(v, (str, int, float, bool)) or v is None}


def _perturbation_summaries(atlas) -> list[dict]:
    """One entry per dataset of manifest["perturbation"] (atlas perturb), then the published summary of an import."""
    out = []
    for ds, rec in sorted((atlas.manifest.get("perturbation") or {}).items()):
        if not isinstance(rec, dict):
            continue
        s = rec.get("summary") or {}
        entry = {"dataset": ds, **{k: sig(s.get(k), 4) for k in SUMMARY_FIELDS},
                 "source": _scalars(rec.get("source")), "parameters": _scalars(rec.get("parameters"))}
        pseudo = s.get("pseudo") or {}
        entry["pseudo"] = {k: sig(pseudo.get(k), 4) for k in ("n_pseudo", "mean_responding", "false_positive_rate")}
        out.append(entry)
    pub = (atlas.manifest.get("extras") or {}).get("perturbation_response")
    if isinstance(pub, dict):
        k, n = pub.get("n_tfs_with_specific_response"), pub.get("n_trrust_tfs")
        entry = {"dataset": pub.get("dataset") or "published", "published": True, "n_tf": n, "n_specific": k,
                 "fraction": sig(pub.get("frac_tfs_specific"), 4), "n_targets": pub.get("n_targets_processed"),
                 "lacks": pub.get("lacks"), "ci_computed": False}
        if isinstance(k, int) and isinstance(n, int) and 0 <= k <= n and n > 0:
            lo, hi = clopper_pearson(k, n)
            entry.update(ci_lo=sig(lo, 4), ci_hi=sig(hi, 4), ci_computed=True)
        out.append(entry)
    return out


def interventions_summary(atlas) -> dict | None:
    """The overview's interventions block, or None when the atlas has no interventions data."""
    causal, pert = _causal_summary(atlas), _perturbation_summaries(atlas)
    if causal is None and not pert:
        return None
    return {"causal": causal, "perturbation": pert}
