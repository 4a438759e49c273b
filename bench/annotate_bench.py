"""Annotation speed against the published way, a scipy fisher_exact call per feature x term.

    python bench/annotate_bench.py [--loop-features 6] [--sizes 2027,8190,24576,82944] [--no-coexpression]

Gene lists: the top genes of the published scGPT atlas (../shared/reference/scgpt-atlas, imported in the run):
one layer (2,027 features) and all 12 layers (24,527) as published, where most lists hold only 5 genes; the
other sizes are 18 layers of lists resampled from the full 20-gene ones.
Databases: the bundled defaults plus TRRUST target sets. Our time includes the build's four baselines:
random_genes (as many tests again), coexpression (groups of the bundled dataset, built once in the case and
annotated in every layer), pca (20 lists per layer) and random_init_model (the twin's lists: as many tests as
the features again; stand-ins of the real sizes, see build_baselines). The loop is timed on a few features x every term and extrapolated to the features' tests.
Each case runs in its own process, so its peak RSS is its own.
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
DATA = ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad"


def real_lists(tmp: Path) -> pd.DataFrame:
    from builder.atlas.format import read_atlas
    from builder.atlas.import_biodyn import import_biodyn

    out, _ = import_biodyn(REF / "scgpt-atlas", tmp / "ref", "ref")
    return read_atlas(out, check=False).table("feature_genes").to_pandas()[["layer", "feature", "gene", "rank"]]


def databases():
    from builder.pipeline.annotation.genesets import load_genesets, read_trrust

    dbs = load_genesets([])
    dbs.append(read_trrust(REF / "genesets" / "trrust_rawdata.human.tsv")[0])
    return dbs


def run_case(table_path: str, coexpression: bool) -> dict:
    from builder.pipeline.annotation.annotate import AnnotateConfig, annotate
    from builder.pipeline.annotation.coexpression import coexpression_baseline

    table = pd.read_parquet(table_path)
    universe = sorted(set(table["gene"]))
    dbs = databases()
    t0 = time.perf_counter()
    extra = [coexpression_baseline(DATA, universe, sorted(set(table["layer"])))[0]] if coexpression else []
    t_coex = time.perf_counter() - t0
    extra += build_baselines(table)
    ann = annotate(table, dbs, [], universe=universe, cfg=AnnotateConfig(), baselines=extra)
    wall = time.perf_counter() - t0
    tests = sum(lay["family_tests"] for lay in ann.meta["layers"].values())
    base = ann.baselines.to_pandas()
    anyrow = base[base.measure == "any database"].groupby("baseline")["expected"].mean().round(3).to_dict()
    rates = ann.rates.to_pandas().query("database == 'any database'")
    return {"seconds": wall, "coexpression_seconds": t_coex, "tests": tests,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "features": int(table.groupby(["layer", "feature"]).ngroups), "enrichments": ann.enrichments.num_rows,
            "annotated": round(float(rates["annotated"].sum() / rates["n_features"].sum()), 3), "baselines": anyrow}


def build_baselines(table: pd.DataFrame) -> list:
    """Stand-ins of the build's other baselines with their real sizes: `pca`, 20 lists per layer (10 principal
    directions x 2 signs; here the layer's first 20 lists), and `random_init_model`, as many lists as features (the
    twin's top genes; here each layer gets the next layer's lists)."""
    from builder.pipeline.annotation.baselines import Baseline

    layers = sorted(set(table["layer"]))
    t = table.rename(columns={"feature": "list"})
    pca = t[t.groupby("layer")["list"].rank(method="dense") <= 20]
    nxt = dict(zip(layers, layers[1:] + layers[:1]))
    twin = t.assign(layer=t["layer"].map(nxt))
    return [Baseline("pca", pca, "pca stand-in"), Baseline("random_init_model", twin, "twin stand-in")]


def loop_baseline(table: pd.DataFrame, n_features: int) -> dict:
    """The published way: for each feature, for each term, build the 2x2 table and call fisher_exact."""
    from scipy.stats import fisher_exact

    from builder.pipeline.annotation.annotate import AnnotateConfig, _term_matrix
    from builder.pipeline.annotation.enrichment import SfTable, membership, set_tests

    cfg = AnnotateConfig()
    layer0 = table[table.layer == 0]
    index = pd.Index(sorted(set(table["gene"])))
    N = len(index)
    feats = [sorted(index.get_indexer(grp["gene"])) for _, grp in layer0.groupby("feature", sort=True)][:n_features]
    worst, calls, t = 0.0, 0, 0.0
    for db in databases():
        T, terms, sizes = _term_matrix(db, index, N, cfg)
        term_sets = [set(T.indices[T.indptr[j]:T.indptr[j + 1]]) for j in range(T.shape[1])]
        r, c, k, p = set_tests(membership(feats, N), T, SfTable(N, sizes, cfg.top_n))
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


def write_cases(table: pd.DataFrame, sizes: list[int], tmp: Path) -> list[tuple[str, Path]]:
    """One layer, all 12 real layers, and 18-layer tables of lists resampled from the real ones."""
    rng = np.random.default_rng(0)
    groups = [g for _, g in table.groupby(["layer", "feature"], sort=True)]
    full = [g for g in groups if len(g) == 20]  # resample full top-20 lists (most published ones hold 5 genes)
    cases = []
    for size in sizes:
        path = tmp / f"case{size}.parquet"
        if size == table[table.layer == 0].groupby("feature").ngroups:
            table[table.layer == 0].to_parquet(path)
        elif size == len(groups):
            table.to_parquet(path)
        else:
            per = size // 18
            pd.concat([full[i].assign(layer=layer, feature=f) for layer in range(18)
                       for f, i in enumerate(rng.integers(0, len(full), per))], ignore_index=True).to_parquet(path)
        cases.append((str(size), path))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop-features", type=int, default=6)
    ap.add_argument("--sizes", default="2027,8190,24527,82944", help="Features per case (comma-separated).")
    ap.add_argument("--no-coexpression", action="store_true", help="Leave the coexpression baseline out.")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, not args.no_coexpression)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = real_lists(tmp)
        loop = loop_baseline(table, args.loop_features)
        print(f"loop: {loop['calls']:,} fisher_exact calls in {loop['seconds']:.1f} s = {loop['per_test_us']:.1f} us/test; "
              f"max relative difference of our p-values on those tests: {loop['max_rel_err']:.2e}")
        for name, path in write_cases(table, [int(x) for x in args.sizes.split(",")], tmp):
            cmd = [sys.executable, __file__, "--case", str(path)] + (["--no-coexpression"] if args.no_coexpression else [])
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            loop_s = res["tests"] * loop["per_test_us"] / 1e6
            print(f"{res['features']:,} features, {res['tests']:,} tests: ours {res['seconds']:.1f} s (coexpression "
                  f"groups {res['coexpression_seconds']:.1f} s), peak RSS {res['peak_mb']:.0f} MB; loop (extrapolated) "
                  f"{loop_s:,.0f} s; ratio {loop_s / res['seconds']:,.0f}x; any database {res['annotated']:.1%}, "
                  f"baselines {res['baselines']}")


if __name__ == "__main__":
    main()
