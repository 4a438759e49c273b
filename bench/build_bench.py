"""Co-occurrence counting at scGPT layer scale, and graph stages, against the published per-token loop.

    python bench/build_bench.py [--tokens 1000000] [--features 2048] [--k 32] [--loop-tokens 20000] [--tiny-cells 200]

Synthetic codes (k of --features fire on each token, frequencies log-normal as in real SAEs). Prints:
- co-occurrence by one sparse product XᵀX vs a per-token Python loop over the pairs of fired features
  like the published one (on the first --loop-tokens tokens, extrapolated; counts checked identical);
- modules with their null, and cross-layer edges against the within-gene null, on the full run;
- peak RSS (high-water mark) after each step;
- first, an end-to-end `atlas build` of tiny scGPT and Geneformer V2 checkpoints (fresh cache, --tiny-cells
  cells of the bundled dataset): wall time per stage and the RSS high-water mark after it.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from itertools import combinations

import numpy as np
import scipy.sparse as sp

from builder.pipeline.graphs import GraphConfig, cross_layer, modules_with_null


def synthetic(tokens: int, features: int, k: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0, 1.5, features)
    w /= w.sum()
    # k distinct features per token: Gumbel top-k over log-weights, in blocks.
    idx = np.empty((tokens, k), dtype=np.int64)
    for s in range(0, tokens, 50_000):
        n = min(50_000, tokens - s)
        keys = np.log(w)[None, :] - np.log(-np.log(rng.random((n, features))))
        idx[s:s + n] = np.argpartition(-keys, k, axis=1)[:, :k]
    rows = np.repeat(np.arange(tokens), k)
    return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=(tokens, features))


def loop_counts(X: sp.csr_matrix, n_tokens: int) -> dict:
    counts: dict = {}
    for t in range(n_tokens):
        fired = X.indices[X.indptr[t]:X.indptr[t + 1]].tolist()
        for a, b in combinations(sorted(fired), 2):
            counts[a, b] = counts.get((a, b), 0) + 1
    return counts


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_builds(cells: int) -> None:
    from builder.pipeline.build import Builder, read_config
    from builder.models.tiny import write_geneformer, write_scgpt

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_scgpt(tmp / "scgpt")
        write_geneformer(tmp / "geneformer", version=2)
        for family in ("scgpt", "geneformer"):
            cfg = read_config(None, {"model": family, "checkpoint": str(tmp / family), "train_sae": True,
                                     "max_cells": cells, "atlas": family})
            t0 = time.perf_counter()
            res = Builder(cfg, tmp / "cache", tmp / "data", tmp / "site").run()
            st = res["stages"]
            print(f"tiny {family} build, {cells} cells: {time.perf_counter() - t0:.1f} s; " + ", ".join(
                f"{k} {v:.1f} s (RSS {st.peak_mb[k]:.0f} MB)" for k, v in st.seconds.items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--loop-tokens", type=int, default=20_000)
    ap.add_argument("--tiny-cells", type=int, default=200)
    args = ap.parse_args()
    tiny_builds(args.tiny_cells)
    X = synthetic(args.tokens, args.features, args.k, 0)
    t0 = time.perf_counter()
    C = (X.T @ X).tocsr()
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = loop_counts(X, args.loop_tokens)
    loop = (time.perf_counter() - t0) * args.tokens / args.loop_tokens
    small = sp.triu((X[:args.loop_tokens].T @ X[:args.loop_tokens]).tocoo(), 1)
    same = dict(zip(zip(small.row.tolist(), small.col.tolist()), small.data.astype(int).tolist())) == ref
    print(f"co-occurrence, {args.tokens:,} tokens x {args.features:,} features, k {args.k}: sparse product "
          f"{ours:.1f} s (RSS {rss_mb():.0f} MB); per-token loop {loop:,.0f} s (extrapolated from {args.loop_tokens:,} tokens); "
          f"ratio {loop / ours:,.0f}x; counts identical on the loop's tokens: {same}; nnz {C.nnz:,}")
    t0 = time.perf_counter()
    real, null = modules_with_null(X, GraphConfig())
    print(f"modules + shuffled null: {time.perf_counter() - t0:.1f} s (RSS {rss_mb():.0f} MB); {real['modules']} modules "
          f"({real['edges']:,} edges) vs null {null['modules']} ({null['edges']:,} edges)")
    genes = np.random.default_rng(1).integers(0, 5000, args.tokens)
    Y = synthetic(args.tokens, args.features, args.k, 1)
    t0 = time.perf_counter()
    res = cross_layer(X, Y, genes, GraphConfig())
    print(f"cross-layer (within-gene null + one shuffle): {time.perf_counter() - t0:.1f} s (RSS {rss_mb():.0f} MB); raw {res['raw_edges']:,}, "
          f"shuffled {res['shuffled_raw_edges']:,}, kept {res['edges']:,}")


if __name__ == "__main__":
    main()
