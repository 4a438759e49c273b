"""Annotation vs a per-test scipy.stats.fisher_exact loop like the published one.

    python bench/annotate_bench.py [--loop-features 6] [--big 82944]

Feature gene lists are real: the top genes of layer 0 of the published scGPT atlas
(../shared/reference/scgpt-atlas, imported in this run; 2,048 features). The Geneformer-scale case
(18 layers x 4,608 = 82,944 features) resamples those lists. Databases: the bundled defaults (GO_BP, KEGG,
Reactome, Hallmark) plus TRRUST target sets from ../shared/reference.

Prints for each case: our wall time and peak RSS (each case in its own process), the loop's time per test
measured on the first --loop-features features against every term (and the identity of the p-values on
those), and the ratio with the loop extrapolated to the same number of tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / ".." / "shared" / "reference"


def real_lists(tmp: Path) -> pd.DataFrame:
    from builder.atlas.format import read_atlas
    from builder.atlas.import_biodyn import import_biodyn

    out, _ = import_biodyn(REF / "scgpt-atlas", tmp / "ref", "ref")
    return read_atlas(out, check=False).table("feature_genes").to_pandas()[["layer", "feature", "gene", "rank"]]


def databases():
    from builder.pipeline.genesets import load_genesets, read_trrust

    dbs = load_genesets([])
    dbs.append(read_trrust(REF / "genesets" / "trrust_rawdata.human.tsv")[0])
    return dbs


def run_case(table_path: str) -> dict:
    from builder.pipeline.annotate import AnnotateConfig, annotate

    table = pd.read_parquet(table_path)
    universe = sorted(set(table["gene"]))
    dbs = databases()
    t0 = time.perf_counter()
    ann = annotate(table, dbs, [], universe, AnnotateConfig())
    wall = time.perf_counter() - t0
    meta = ann.meta["layers"]
    tests = sum(d["tests"] for lay in meta.values() for d in lay["databases"].values())
    return {"seconds": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tests": tests, "features": int(table.groupby(["layer", "feature"]).ngroups),
            "enrichments": ann.enrichments.num_rows}


def loop_baseline(table: pd.DataFrame, n_features: int) -> dict:
    """The published way: for each feature, for each term, build the 2x2 table and call fisher_exact."""
    from scipy.stats import fisher_exact

    from builder.pipeline.annotate import AnnotateConfig, membership, set_tests, _term_matrix

    cfg = AnnotateConfig()
    layer0 = table[table.layer == 0]
    universe = sorted(set(table["gene"]))
    index = {g: i for i, g in enumerate(universe)}
    N = len(universe)
    feats = [sorted({index[g] for g in grp["gene"]}) for _, grp in layer0.groupby("feature", sort=True)][:n_features]
    worst, calls, t = 0.0, 0, 0.0
    for db in databases():
        T, terms, sizes = _term_matrix(db, index, N, cfg)
        term_sets = [set(T.indices[T.indptr[j]:T.indptr[j + 1]]) for j in range(T.shape[1])]
        r, c, k, p = set_tests(membership(feats, N), T)
        ours = {(int(a), int(b)): v for a, b, v in zip(r, c, p)}
        t0 = time.perf_counter()
        ref = {}
        for i, genes in enumerate(feats):
            gs = set(genes)
            for j, members in enumerate(term_sets):
                ov = len(gs & members)
                n, K = len(gs), len(members)
                ref[i, j] = fisher_exact([[ov, n - ov], [K - ov, N - K - n + ov]], alternative="greater").pvalue
                calls += 1
        t += time.perf_counter() - t0
        for key, v in ref.items():
            worst = max(worst, abs(ours.get(key, 1.0) - v) / v)
    return {"seconds": t, "calls": calls, "per_test_us": 1e6 * t / calls, "max_rel_err": worst}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop-features", type=int, default=6)
    ap.add_argument("--big", type=int, default=82944, help="Features of the Geneformer-scale case.")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = real_lists(tmp)
        small = table[table.layer == 0]
        small.to_parquet(tmp / "small.parquet")
        # Geneformer scale: 18 layers x 4,608 features, lists resampled from the real ones.
        rng = np.random.default_rng(0)
        groups = [g for _, g in table.groupby(["layer", "feature"], sort=True)]
        per_layer = args.big // 18
        big = []
        for layer in range(18):
            for f, i in enumerate(rng.integers(0, len(groups), per_layer)):
                big.append(groups[i].assign(layer=layer, feature=f))
        pd.concat(big, ignore_index=True).to_parquet(tmp / "big.parquet")
        loop = loop_baseline(table, args.loop_features)
        print(f"loop: {loop['calls']:,} fisher_exact calls in {loop['seconds']:.1f} s = {loop['per_test_us']:.1f} us/test; "
              f"max relative difference of our p-values on those tests: {loop['max_rel_err']:.2e}")
        for name in ("small", "big"):
            res = json.loads(subprocess.run([sys.executable, __file__, "--case", str(tmp / f"{name}.parquet")],
                                            check=True, capture_output=True, text=True).stdout)
            loop_s = res["tests"] * loop["per_test_us"] / 1e6
            print(f"{name}: {res['features']:,} features, {res['tests']:,} tests (ours runs as many again on the null), "
                  f"ours {res['seconds']:.1f} s, peak RSS {res['peak_mb']:.0f} MB, {res['enrichments']:,} enrichments; "
                  f"loop (extrapolated) {loop_s:,.0f} s; ratio {loop_s / res['seconds']:,.0f}x")


if __name__ == "__main__":
    main()
