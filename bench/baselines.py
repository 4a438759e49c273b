"""Annotation rates of model-free gene lists on the bundled dataset, with time and memory.

    python bench/baselines.py [--data atlas_data/inputs/immune_sample.h5ad] [--min-cells 5] [--knn-lists 600]

Universe: the genes detected in at least --min-cells cells (a stand-in for a build's genes with min_support
tokens). Databases: the bundled defaults, plus TRRUST target sets when ../shared/reference has them. Cases, each
in its own process so its peak RSS is its own:
- coexpression: the baseline's groups (builder/pipeline/coexpression.py), 20 genes each;
- knn: the issue's construction, the --knn-lists most detected genes each with its 19 most correlated genes
  (lists overlap, as features' top genes do);
and beside each, random_genes: the same lists with their genes dealt out again (curveball: sizes and each
gene's number of lists kept), annotated by the same pooled family.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TRRUST = ROOT / ".." / "shared" / "reference" / "genesets" / "trrust_rawdata.human.tsv"


def universe(data: Path, min_cells: int) -> list[str]:
    from builder.pipeline.coexpression import CountShards, detection

    shards = CountShards(data, 2048)
    names, det = shards.gene_names(set()), detection(shards)
    shards.close()
    return sorted({n for n, d in zip(names, det) if n and d >= min_cells})


def databases():
    from builder.pipeline.genesets import load_genesets, read_trrust

    dbs = load_genesets([])
    if TRRUST.is_file():
        dbs.append(read_trrust(TRRUST)[0])
    return dbs


def knn_lists(data: Path, uni: list[str], n_lists: int, size: int = 20) -> pd.DataFrame:
    """Each of the n_lists most detected universe genes with its size - 1 most correlated genes."""
    from builder.pipeline.coexpression import CountShards, detection, shard_sums

    shards = CountShards(data, 2048)
    names, det = shards.gene_names(set(uni)), detection(shards)
    inside = np.flatnonzero(np.isin(names, uni) & (det > 0))
    genes = np.asarray(sorted(inside[np.argsort(-det[inside], kind="stable")][:4000]))
    sums = None
    for X in shards:
        part = shard_sums(X, genes)
        sums = part if sums is None else sums.merge(part)
    shards.close()
    r = sums.correlation()
    seeds = np.argsort(-det[genes], kind="stable")[:n_lists]
    rows = []
    for i, s in enumerate(seeds):
        order = np.argsort(-r[s], kind="stable")[:size]  # r[s, s] = 1 puts the seed first
        rows += [(0, i, names[genes[g]], rank) for rank, g in enumerate(order, 1)]
    return pd.DataFrame(rows, columns=["layer", "feature", "gene", "rank"])


def run_case(name: str, data: Path, min_cells: int, n_lists: int) -> dict:
    from builder.pipeline.annotate import AnnotateConfig, annotate
    from builder.pipeline.coexpression import coexpression_baseline

    uni = universe(data, min_cells)
    dbs = databases()
    t0 = time.perf_counter()
    if name == "coexpression":
        lists = coexpression_baseline(data, uni, [0])[0].lists.rename(columns={"list": "feature"})
    else:
        lists = knn_lists(data, uni, n_lists)
    t_lists = time.perf_counter() - t0
    ann = annotate(lists, dbs, universe=uni, cfg=AnnotateConfig())
    t_all = time.perf_counter() - t0
    rates = ann.rates.to_pandas().set_index("database")
    return {"case": name, "universe": len(uni), "lists": int(lists["feature"].nunique()),
            "distinct_genes": int(lists["gene"].nunique()), "lists_seconds": t_lists,
            "annotate_seconds": t_all - t_lists, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "observed": (rates["annotated"] / rates["n_features"]).round(4).to_dict(),
            "random_genes": (rates["null_annotated"] / rates["n_features"]).round(4).to_dict()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad")
    ap.add_argument("--min-cells", type=int, default=5)
    ap.add_argument("--knn-lists", type=int, default=600)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.data, args.min_cells, args.knn_lists)))
        return
    results = []
    for case in ("coexpression", "knn"):
        out = subprocess.run([sys.executable, __file__, "--case", case, "--data", str(args.data), "--min-cells",
                              str(args.min_cells), "--knn-lists", str(args.knn_lists)],
                             check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out))
    dbs = list(results[0]["observed"])
    print(f"universe: {results[0]['universe']:,} genes detected in >= {args.min_cells} cells of {args.data.name}")
    print("| lists | n | distinct genes | " + " | ".join(dbs) + " | lists s | annotate s | peak MB |")
    print("|---|---:|---:|" + "---:|" * len(dbs) + "---:|---:|---:|")
    for r in results:
        for which in ("observed", "random_genes"):
            label = r["case"] if which == "observed" else f"random_genes of {r['case']}"
            cells = " | ".join(f"{r[which][d]:.1%}" for d in dbs)
            timing = (f"{r['lists_seconds']:.1f} | {r['annotate_seconds']:.1f} | {r['peak_mb']:.0f}"
                      if which == "observed" else " | | ")
            print(f"| {label} | {r['lists']} | {r['distinct_genes']:,} | {cells} | {timing} |")


if __name__ == "__main__":
    main()
