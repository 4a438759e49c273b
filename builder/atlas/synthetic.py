"""Synthetic atlas data with realistic field sizes, for the bundled demo, the scale benchmark and tests.

Every value is random (seeded); nothing here describes a real model. The atlas says so in its title.
`hostile=True` plants names that try to run code (`<img src=x onerror=...>`), quotes and very long names,
so the tests can check that the site shows them as text.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .format import annotation_rate

# Well-known human gene symbols, so that gene search in the demo can be tried with familiar names.
KNOWN_GENES = """CD74 MKI67 GAPDH ACTB PTPRC CD3E CD4 CD8A CD19 MS4A1 CD14 LYZ FCGR3A NKG7 GNLY HLA-DRA HLA-DRB1
IL7R CCR7 S100A8 S100A9 PPBP PF4 HBB HBA1 EPCAM KRT8 KRT18 VIM COL1A1 COL1A2 COL3A1 DCN LUM PECAM1 VWF CDH5
TOP2A CDK1 CCNB1 PLK1 BIRC5 UBE2C CENPF TYMS PCNA MCM2 MCM7 TP53 MYC JUN FOS EGR1 ATF3 KLF6 SOX4 SOX9 PAX6
GATA1 GATA2 GATA3 TAL1 SPI1 CEBPA CEBPB IRF4 IRF8 STAT1 STAT3 NFKBIA TNF IL1B IL6 CXCL8 CCL2 CCL5 IFIT1 ISG15
MX1 OAS1 HMGCR FDFT1 SREBF2 LDLR INSIG1 SCD FASN ACACA ALB APOA1 TTR SFTPC SFTPB AGER NPHS1 UMOD SLC34A1 CUBN
LRP2 MT1X MT2A FTL FTH1 RPL13 RPS6 EEF1A1 TPT1 MALAT1 NEAT1 XIST CALM2 DSTN EPAS1 PDGFRB ACTA2 TAGLN MYH11
RGS5 CSPG4 KIT CPA3 TPSAB1 MZB1 JCHAIN IGKC IGHM CD79A CD79B PAX5 TCF7 LEF1 FOXP3 CTLA4 PDCD1 LAG3 HAVCR2""".split()
WORDS = """regulation response apoptosis signaling transport metabolic biosynthetic catabolic process pathway cell cycle
mitotic immune inflammatory apoptotic differentiation development migration adhesion activation protein
RNA DNA repair replication translation splicing chromatin transcription receptor kinase cytokine interferon
lipid cholesterol fatty acid oxidative stress hypoxia angiogenesis epithelial mesenchymal transition
lymphocyte myeloid neutrophil T B antigen presentation complement coagulation extracellular matrix""".split()
DATABASES = ("SYN_GO", "SYN_PATHWAY", "SYN_TF")
CELL_TYPES = ("T cell", "B cell", "NK cell", "monocyte", "macrophage", "neutrophil", "plasma cell", "erythrocyte",
              "endothelial cell", "fibroblast", "epithelial cell", "pericyte", "mast cell", "dendritic cell")
TISSUES = ("blood", "lung", "kidney")
HOSTILE = ['<img src=x onerror=alert(1)>', '"quoted\'name', "<script>alert(2)</script>", "X" * 300]


def _vocab(rng, n_genes: int) -> list[str]:
    genes = list(KNOWN_GENES)
    letters = np.array(list("ABCDEFGHIKLMNPRSTVZ"))
    while len(genes) < n_genes:
        stem = "".join(rng.choice(letters, size=int(rng.integers(3, 5))))
        genes.append(f"{stem}{int(rng.integers(1, 40))}")
    return list(dict.fromkeys(genes))[:n_genes]


def _terms(rng, n_terms: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n_terms):
        words = rng.choice(WORDS, size=int(rng.integers(3, 7)))
        name = " ".join(w.capitalize() for w in words)
        out.append((DATABASES[i % len(DATABASES)], f"{name} (SYN:{i:07d})"))
    return out


def make_synthetic(n_layers: int = 2, n_features: int = 256, seed: int = 0, hostile: bool = False,
                   n_genes: int | None = None, title: str | None = None) -> tuple[dict, dict[str, pa.Table]]:
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng, n_genes or max(len(KNOWN_GENES), min(20000, n_features * 4)))
    terms = _terms(rng, max(60, n_features // 2))
    if hostile:
        vocab[:len(HOSTILE)] = HOSTILE
        terms[:len(HOSTILE)] = [(DATABASES[0], h) for h in HOSTILE]
    # Gene popularity follows a flat power law, as in the published scGPT atlas: there the most frequent
    # top gene tops 141 of 24,576 features and the median gene 5.
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 0.2
    weights /= weights.sum()
    rows = {name: [] for name in ("features", "feature_genes", "enrichments", "celltypes", "top_cells",
                                  "modules", "module_members", "edges", "layers", "null_baseline", "svd_comparison")}
    for lay in range(n_layers):
        n_mod = max(2, n_features // 340)
        centers = rng.normal(0, 6, size=(n_mod, 2))
        module = rng.integers(-1, n_mod, size=n_features)  # -1: no module
        alive = rng.random(n_features) > 0.01
        annotated = 0
        for f in range(n_features):
            m = int(module[f])
            genes = rng.choice(len(vocab), size=20, replace=False, p=weights)
            if hostile and f == 0:
                genes[:len(HOSTILE)] = np.arange(len(HOSTILE))
            acts = np.sort(rng.gamma(3.0, 1.5, size=20))[::-1]
            for r, (g, a) in enumerate(zip(genes, acts), 1):
                support = int(rng.integers(1, 3000)) if r < 18 else int(rng.integers(1, 8))  # a few below 5
                rows["feature_genes"].append({"layer": lay, "feature": f, "rank": r, "gene": vocab[g],
                                              "activation": float(a), "fire_count": support,
                                              "gene_tokens": support + int(rng.integers(0, 5000)),
                                              "score": float(a) * (21 - r) / 20})
            n_enr = int(rng.poisson(7)) if alive[f] and (rng.random() < 0.32 or (hostile and f == 0)) else 0
            picked = sorted(set(rng.choice(len(terms), size=n_enr, replace=False).tolist())) if n_enr else []
            if hostile and f == 0:
                picked = sorted(set(picked) | set(range(len(HOSTILE))))
            enr = []
            for t in picked:
                db, term = terms[t]
                q = float(10 ** -rng.uniform(1.5, 12))
                overlap = int(rng.integers(2, 8))
                enr.append({"layer": lay, "feature": f, "database": db, "term": term, "p": q / 20, "q": q,
                            "odds_ratio": float(rng.uniform(3, 200)), "overlap": overlap,
                            "overlap_genes": [vocab[g] for g in genes[:overlap]],
                            "set_size": int(rng.integers(10, 500)), "edge_density": None})
            rows["enrichments"] += enr
            best = min(enr, key=lambda e: (e["q"], -e["overlap"])) if enr else None
            annotated += bool(enr)
            x, y = (centers[m] if m >= 0 else (0.0, 0.0)) + rng.normal(0, 1.0 if m >= 0 else 4.0, size=2)
            freq = float(rng.beta(0.6, 60)) if alive[f] else 0.0
            rows["features"].append({
                "layer": lay, "feature": f, "alive": bool(alive[f]), "frequency": freq,
                "mean_activation": float(freq * rng.uniform(1, 4)), "fire_count": int(freq * 1_000_000),
                "n_enrichments": len(enr), "label": best["term"] if best else None,
                "label_database": best["database"] if best else None, "label_q": best["q"] if best else None,
                "module": m if m >= 0 else None, "map_x": float(x), "map_y": float(y), "svd_aligned": False})
            if alive[f]:
                for ct in rng.choice(len(CELL_TYPES), size=int(rng.integers(0, 5)), replace=False):
                    name = HOSTILE[0] if hostile and f == 0 and ct == 0 else CELL_TYPES[ct]
                    q = float(10 ** -rng.uniform(1.5, 30))
                    n_cells = int(rng.integers(40, 600))
                    rows["celltypes"].append({"layer": lay, "feature": f, "level": "cell_type", "name": name,
                                              "q": q, "p": q / 10, "auc": float(rng.uniform(0.55, 0.98)),
                                              "odds_ratio": float(rng.uniform(1.2, 40)), "n_top": int(rng.integers(1, 10)),
                                              "n_cells": n_cells, "n_firing": int(rng.integers(1, n_cells))})
                for r in range(1, 6):
                    rows["top_cells"].append({"layer": lay, "feature": f, "rank": r,
                                              "cell_type": CELL_TYPES[int(rng.integers(len(CELL_TYPES)))],
                                              "tissue": TISSUES[int(rng.integers(len(TISSUES)))],
                                              "activation": float(rng.gamma(3, 2))})
        for m in range(n_mod):
            members = np.flatnonzero(module == m).tolist()
            labels = [rows["features"][-n_features + f]["label"] for f in members]
            top = sorted({lb for lb in labels if lb}, key=lambda lb: (-labels.count(lb), lb))[:5]
            rows["modules"].append({"layer": lay, "module": m, "n_features": len(members),
                                    "label": (HOSTILE[2] if hostile and m == 0 else (top[0] if top else None)),
                                    "top_terms": top, "top_term_counts": [labels.count(t) for t in top]})
            rows["module_members"] += [{"layer": lay, "module": m, "feature": f} for f in members]
        if lay > 0:
            pairs = {(int(a), int(b)) for a, b in rng.integers(0, n_features, size=(max(8, n_features // 14), 2))}
            for a, b in sorted(pairs):
                rows["edges"].append({"kind": "cross_layer_pmi", "layer_a": lay - 1, "feature_a": a, "layer_b": lay,
                                      "feature_b": b, "weight": float(rng.uniform(4, 11)),
                                      "count": int(rng.integers(5, 500)), "null_p": float(rng.uniform(0, 0.05))})
        rows["layers"].append({"layer": lay, "n_features": n_features, "alive": int(alive.sum()),
                               "annotated": annotated, "n_modules": n_mod,
                               "variance_explained": float(rng.uniform(0.8, 0.95)), "mean_feature_cosine": None,
                               "n_svd_aligned": 0, "annotated_null_rate": float(rng.uniform(0.02, 0.08)),
                               **annotation_rate(annotated, int(alive.sum()))})
        rows["null_baseline"] += _nulls(rng, lay, annotated / max(1, int(alive.sum())))
        rows["svd_comparison"] += _svd(rng, lay)
    from .format import SCHEMA

    tables = {name: pa.Table.from_pylist(r, schema=SCHEMA[name].schema()) for name, r in rows.items()}
    tables.update(_cells(rng, n_layers, n_features, tables["feature_genes"], hostile))
    manifest = {
        "atlas": {"id": "synthetic", "title": title or ("Hostile <b>names</b> test atlas" if hostile else
                                                        "Demo atlas (synthetic data)"),
                  "description": "Synthetic, seeded random data in the atlas format: it shows the site, "
                                 "not what any model learned."},
        "model": {"family": "synthetic", "name": None, "n_layers": n_layers, "layers": list(range(n_layers))},
        "sae": {"kind": "synthetic", "n_features": n_features},  # per layer, as a build records it
        "dataset": {"cells": tables["cells"].num_rows, "cell_map": {
            "embedding": "synthetic 2-D positions, one cluster per cell type", "display_cells": tables["cells"].num_rows,
            "activations": "non-zero values of each feature on the display cells"}},
        "genesets": [{"name": db, "version": "synthetic"} for db in DATABASES],
        "parameters": {"seed": seed, "n_layers": n_layers, "n_features": n_features, "hostile": hostile},
        "notes": ["Every number in this atlas is random (builder/synthetic.py)."],
    }
    return manifest, tables


# (analysis, measure, baselines): every rate of a built atlas beside each null it was measured against.
NULLS = (("annotation", "annotated_share", ("random_genes", "random_init_model", "pca", "coexpression")),
         ("modules", "modules", ("within_gene_shuffle",)),
         ("cross_layer", "edges", ("within_gene_shuffle",)),
         ("svd", "share_aligned", ("random_direction",)))


def _nulls(rng, lay: int, annotated_share: float) -> list[dict]:
    out = []
    for analysis, measure, baselines in NULLS:
        observed = annotated_share if analysis == "annotation" else float(rng.uniform(2, 40))
        for b in baselines:
            out.append({"layer": lay, "analysis": analysis, "measure": measure, "baseline": b, "observed": observed,
                        "expected": observed * float(rng.uniform(0.05, 0.9)), "note": f"synthetic null ({b})"})
    return out


def _svd(rng, lay: int, d: int = 512) -> list[dict]:
    out = []
    for k in (10, 50):
        out += [{"layer": lay, "metric": f"decoder_norm_top{k}_pcs", "value": float(rng.uniform(k / d, 0.6))},
                {"layer": lay, "metric": f"decoder_norm_top{k}_pcs_random", "value": k / d},
                {"layer": lay, "metric": f"r2_top{k}_pc_scores", "value": float(rng.uniform(0.1, 0.7))}]
    return out


def _cells(rng, n_layers, n_features, gene_table, hostile) -> dict[str, pa.Table]:
    """A display sample of cells in 2-D with per-cell activations and top-gene expression (non-zero only)."""
    n_cells = 300 if n_features <= 256 else 1500
    types = rng.integers(0, len(CELL_TYPES), size=n_cells)
    centers = rng.normal(0, 8, size=(len(CELL_TYPES), 2))
    xy = (centers[types] + rng.normal(0, 1.2, size=(n_cells, 2))).astype(np.float32)
    names = [CELL_TYPES[t] for t in types]
    if hostile:
        names[0] = HOSTILE[0]
    cells = pa.table({"cell": pa.array(np.arange(n_cells), pa.int32()),
                      "cell_id": [f"cell_{c:05d}" for c in range(n_cells)], "cell_type": names,
                      "x": xy[:, 0], "y": xy[:, 1]})
    # Each feature fires on most cells of one preferred type and on a few others.
    cols = {"layer": [], "feature": [], "cell": []}
    by_type = [np.flatnonzero(types == t) for t in range(len(CELL_TYPES))]
    for lay in range(n_layers):
        prefer = rng.integers(0, len(CELL_TYPES), size=n_features)
        for f in range(n_features):
            pool = by_type[prefer[f]]
            hit = np.unique(np.concatenate([pool[rng.random(len(pool)) < 0.6],
                                            rng.integers(0, n_cells, size=int(rng.integers(0, 12)))]))
            cols["layer"].append(np.full(len(hit), lay, np.int16))
            cols["feature"].append(np.full(len(hit), f, np.int32))
            cols["cell"].append(hit.astype(np.int32))
    cols = {k: np.concatenate(v) for k, v in cols.items()}
    acts = pa.table({**cols, "value": rng.gamma(2.0, 1.5, size=len(cols["cell"])).astype(np.float32)})
    genes = sorted(set(gene_table.column("gene").to_pylist()))
    mask = rng.random((len(genes), n_cells)) < 0.06
    g_idx, c_idx = np.nonzero(mask)
    expr = pa.table({"gene": pa.array(np.array(genes, dtype=object)[g_idx], pa.string()),
                     "cell": c_idx.astype(np.int32), "value": rng.gamma(1.5, 1.0, size=len(c_idx)).astype(np.float32)})
    return {"cells": cells, "cell_activations": acts, "cell_expression": expr}



# Perturbations of the synthetic interventions data: (gene, is a TF, its verdict). GATA1 is planted specific.
PERTURBED = (("GATA1", True, "specific"), ("SPI1", True, "not specific"), ("TAL1", True, "no signal"),
             ("CEBPA", True, "specific"), ("IRF8", True, "not specific"), ("STAT1", True, "no signal"),
             ("MYC", True, "not specific"), ("JUN", True, "no signal"), ("GAPDH", False, "no signal"),
             ("ACTB", False, "no signal"), ("MKI67", False, "not specific"))
SYN_DATASET = "synthetic CRISPRi"


def add_interventions(manifest: dict, tables: dict[str, pa.Table], seed: int = 0, hostile: bool = False,
                      per_layer: int = 24, n_perturbations: int = 0, per_perturbation: int = 30,
                      ) -> tuple[dict, dict[str, pa.Table]]:
    """Causal patching and perturbation-response tables in the atlas schema, with their manifest records, for
    the interventions views: random but consistent (p from the null test, q by BH, verdicts from the q's).
    PERTURBED (and a gene named as HTML when hostile) are always there; n_perturbations adds more, named after
    genes of the vocabulary, for page-weight benchmarks at screen scale."""
    from .format import SCHEMA

    rng = np.random.default_rng(seed + 7)
    feats = tables["features"].to_pydict()
    alive = [(lay, f) for lay, f, a in zip(feats["layer"], feats["feature"], feats["alive"]) if a]
    genes = sorted(set(tables["feature_genes"].column("gene").to_pylist()))
    summary, effects = _synthetic_causal(rng, alive, genes, per_layer)
    perturbed = list(PERTURBED) + ([(HOSTILE[0], True, "specific")] if hostile else [])
    extra = [g for g in genes if g not in {p[0] for p in perturbed} and g not in HOSTILE][:n_perturbations]
    perturbed += [(g, bool(rng.random() < 0.3), str(rng.choice(["specific", "not specific", "no signal"], p=[.06, .5, .44])))
                  for g in extra]
    response, tf = _synthetic_perturbation(rng, alive, perturbed, per_perturbation)
    out = dict(tables)
    for name, rows in (("causal_summary", summary), ("causal_effects", effects), ("perturbation_response", response),
                       ("tf_specificity", tf)):
        out[name] = pa.Table.from_pylist(rows, schema=SCHEMA[name].schema())
    interventions = {"method": summary[0]["method"] if summary else "", "cells_patched": 200, "tested": len(summary),
                     "agreement": {}, "alpha": 0.05}  # as a build records it (export.causal)
    return {**manifest, "perturbation": {SYN_DATASET: _perturbation_record(tf)}, "interventions": interventions}, out


def _synthetic_causal(rng, alive, genes, per_layer):
    from ..pipeline.interventions import stats as cs

    layers = sorted({lay for lay, _ in alive})
    tested = [k for lay in layers for k in sorted(rng.permutation([k for k in alive if k[0] == lay])[:per_layer].tolist())]
    summary, effects = [], []
    for j, (lay, f) in enumerate(tested):
        spec = float(np.clip(rng.beta(6, 3) if j % 3 == 0 else rng.beta(4, 4), 0, 1))
        nulls = np.clip(rng.normal(0.5, 0.08, 20), 0, 1).tolist()
        summary.append({"layer": lay, "feature": f, "method": "synthetic", "selection": "stratified_random",
                        "n_cells": int(rng.integers(5, 200)), "specificity": spec, **cs.null_test(spec, nulls),
                        "null_values": nulls, "n_top_genes": 10, "total_effect": float(rng.gamma(2, 0.05))})
        for rank, g in enumerate(rng.choice(genes, 8, replace=False).tolist(), 1):
            d = float(rng.normal(0, 0.3))
            effects.append({"layer": lay, "feature": f, "rank": rank, "gene": g, "delta": d, "ci_lo": d - 0.1,
                            "ci_hi": d + 0.1, "n_cells": int(rng.integers(5, 60)), "top_gene": rank % 4 == 0})
    for r, q in zip(summary, cs.fdr([r["p"] for r in summary])):
        r["q"] = q
    return summary, effects


def _synthetic_perturbation(rng, alive, perturbed, per_perturbation):
    from scipy import stats as sps

    response, tf = [], []
    for n, (gene, is_tf, verdict) in enumerate(perturbed):
        picks = rng.permutation(len(alive))[:per_perturbation]
        p = rng.uniform(0, 1, picks.size) ** (4 if verdict == "specific" else 1)
        q = sps.false_discovery_control(p)
        for rank, (i, pv, qv) in enumerate(zip(picks, p, q), 1):
            e = float(rng.normal(0, 1))
            response.append({"dataset": SYN_DATASET, "perturbation": gene, "layer": alive[i][0], "feature": alive[i][1],
                             "effect": e, "ci_lo": e - 0.3, "ci_hi": e + 0.3, "p": float(pv), "q": float(qv),
                             "n_pert": 80 + n % 100, "n_ctrl": 1000, "rank": rank, "label": None})
        odds, p_t = sps.fisher_exact([[int(rng.integers(5, 15)), 40], [int(rng.integers(20, 60)), 800]], alternative="greater")
        tf.append({"dataset": SYN_DATASET, "perturbation": gene, "is_tf": is_tf, "n_cells": 80 + n % 100,
                   "kd_efficiency": float(rng.uniform(0.5, 0.95)), "n_de": int(rng.integers(10, 400)),
                   "n_targets": int(rng.integers(5, 60)) if is_tf else None, "n_responding": int((q < 0.05).sum()),
                   "n_specific": int(rng.integers(0, 4)), "odds": float(odds), "p": float(p_t),
                   "q": {"specific": 0.01}.get(verdict, 0.4), "ceiling_odds": float(odds) * 2,
                   "ceiling_q": {"no signal": 0.6}.get(verdict, 0.001), "verdict": verdict})
    return response, tf


def _perturbation_record(tf: list[dict]) -> dict:
    """manifest["perturbation"][dataset] as `atlas perturb` writes it, counted from the tf rows."""
    from scipy import stats as sps

    tfs, neg = [r for r in tf if r["is_tf"]], [r for r in tf if not r["is_tf"]]
    k, kc, n = sum(r["verdict"] == "specific" for r in tfs), sum(r["ceiling_q"] < 0.05 for r in tfs), len(tfs)
    ci, cci = (sps.binomtest(x, n).proportion_ci(method="exact") for x in (k, kc))
    return {"source": {"file": "synthetic.h5ad", "sha256": "0" * 64, "version": "synthetic"},
            "parameters": {"perturbation_column": "gene", "control": "non-targeting", "alpha": 0.05},
            "summary": {"n_tf": n, "n_specific": k, "fraction": k / n, "ci_lo": ci.low, "ci_hi": ci.high,
                        "ceiling_n_specific": kc, "ceiling_fraction": kc / n, "ceiling_ci_lo": cci.low,
                        "ceiling_ci_hi": cci.high, "negative_n": len(neg), "negative_n_specific": 0,
                        "negative_fraction": 0.0,
                        "pseudo": {"n_pseudo": 50, "mean_responding": 0.8, "false_positive_rate": 0.04}}}
