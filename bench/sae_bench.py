"""SAE encode and feature statistics at scGPT layer scale: 1M tokens x 512 -> 2,048 features, k = 32.

    python bench/sae_bench.py [--tokens 1000000] [--loop-tokens 20000]

Prints, each against a baseline measured in the same run:
- encode throughput (`atlas sae encode`, into code shards) vs a dense torch matmul of the same shape;
- the statistics map + merge of the build (stats.map_layer over shards of 256 whole cells, folded in order:
  fire counts, sums, maxima, histograms, feature x gene sums, top cells, co-occurrence counts) vs a per-token
  Python loop like the published analysis, on the first --loop-tokens tokens, with a check that both give the
  same fire counts, sums, maxima, top genes and co-occurrence counts;
- peak memory, and the disk size of the codes vs dense float32 activations.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from builder.pipeline.statistics import features as st
from builder.pipeline.codes import Codes
from builder.pipeline.sae.encode import encode_stream, read_codes
from builder.pipeline.sae.topk import TopKSAE

PER_CELL = 1000  # tokens per synthetic cell
SHARD_CELLS = 256


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def python_loop(c: Codes, n_features: int, cfg: st.StatsConfig):
    """The published way: one token at a time, dictionaries of per-gene sums and of feature pairs."""
    fire, total, vmax = [0] * n_features, [0.0] * n_features, [0.0] * n_features
    gene_sum, gene_sq, gene_fire, gene_tokens, pairs = {}, {}, {}, {}, {}
    for t in range(len(c.cell)):
        g = int(c.gene[t])
        gene_tokens[g] = gene_tokens.get(g, 0) + 1
        on = []
        for j in range(c.idx.shape[1]):
            v = float(c.val[t, j])
            if v > 0:
                f = int(c.idx[t, j])
                on.append(f)
                fire[f] += 1
                total[f] += v
                vmax[f] = max(vmax[f], v)
                gene_sum[f, g] = gene_sum.get((f, g), 0.0) + v
                gene_sq[f, g] = gene_sq.get((f, g), 0.0) + v * v
                gene_fire[f, g] = gene_fire.get((f, g), 0) + 1
        for a, b in combinations(sorted(on), 2):
            pairs[a, b] = pairs.get((a, b), 0) + 1
    tops = {}
    for (f, g), s in gene_sum.items():
        if gene_fire[f, g] >= cfg.min_support:
            n = gene_tokens[g]
            mean = s / n
            sd = np.sqrt(max(gene_sq[f, g] / n - mean ** 2, 0) * n / max(n - 1, 1))
            tops.setdefault(f, []).append((mean - cfg.lcb_z * sd / np.sqrt(n), gene_fire[f, g], -g, g))
    top_genes = {f: [g for *_, g in sorted(v, reverse=True)[:cfg.top_genes]] for f, v in tops.items()}
    return np.array(fire), np.array(total), np.array(vmax), top_genes, pairs


def statistics(c: Codes, n_features: int, n_genes: int, cfg: st.StatsConfig) -> dict:
    """The build's map over shards of whole cells, folded in shard order."""
    n_cells = int(c.cell.max()) + 1
    n_tok = np.bincount(c.cell, minlength=n_cells)
    bounds = np.searchsorted(c.cell, np.arange(0, n_cells + SHARD_CELLS, SHARD_CELLS))

    def parts():
        for s in range(0, n_cells, SHARD_CELLS):
            lo, hi = bounds[s // SHARD_CELLS], bounds[s // SHARD_CELLS + 1]
            shard = Codes(c.idx[lo:hi], c.val[lo:hi], c.cell[lo:hi], c.gene[lo:hi])
            yield st.map_layer(shard, st.ShardCells(s, n_tok[s:s + SHARD_CELLS]), n_features, n_genes, cfg.top_cells)

    m = st.merge(parts(), cfg.top_cells)
    return {"m": m, "features": st.feature_table(m, n_features), "genes": st.top_genes(m, n_genes, cfg)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--loop-tokens", type=int, default=20_000)
    args = ap.parse_args()
    T, d, n, k = args.tokens, args.width, args.features, args.k
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    print(f"{T:,} tokens x {d} -> {n:,} features, k = {k}; torch threads {torch.get_num_threads()}")

    x = rng.standard_normal((T, d), dtype=np.float32)
    cells = (np.arange(T) // PER_CELL).astype(np.int64)
    genes = np.concatenate([rng.choice(20_000, PER_CELL, replace=False) for _ in range(-(-T // PER_CELL))])[:T]
    sae = TopKSAE(d, n, k)
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(n, d))
        sae.normalise_decoder()
        sae.W_enc.copy_(sae.W_dec.T)
    print(f"peak RSS after making the data: {peak_mb():,.0f} MB")

    batch = 16_384
    W = sae.W_enc.detach()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, T, batch):
            torch.from_numpy(x[s : s + batch]) @ W
    dense_s = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="sae-bench-"))
    try:
        step = 65_536
        chunks = ((x[s : s + step], cells[s : s + step], genes[s : s + step]) for s in range(0, T, step))
        t0 = time.perf_counter()
        encode_stream(sae, chunks, tmp / "codes", {"layer": 0}, batch=batch)
        enc_s = time.perf_counter() - t0
        print(f"encode: {T / enc_s:,.0f} tokens/s ({enc_s:.1f} s); dense matmul of the same shape: {dense_s:.1f} s; "
              f"encode / matmul time = {enc_s / dense_s:.2f}x; peak RSS {peak_mb():,.0f} MB")
        codes_bytes = sum(p.stat().st_size for p in (tmp / "codes").iterdir())
        dense_bytes = T * d * 4
        print(f"disk: codes {codes_bytes / 1e6:,.0f} MB vs dense float32 activations {dense_bytes / 1e6:,.0f} MB "
              f"({codes_bytes / dense_bytes:.1%})")
        parts = list(read_codes(tmp / "codes")[1])
        c = Codes(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in ("idx", "val", "cell", "gene")))
        cfg = st.StatsConfig()
        statistics(Codes(c.idx[:1000], c.val[:1000], c.cell[:1000], c.gene[:1000]), n, 20_000, cfg)  # compile once
        t0 = time.perf_counter()
        statistics(c, n, 20_000, cfg)
        stats_s = time.perf_counter() - t0
        print(f"statistics over {T:,} tokens: {stats_s:.1f} s ({T / stats_s:,.0f} tokens/s); peak RSS {peak_mb():,.0f} MB")
        compare_with_loop(c, args.loop_tokens, n, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_with_loop(c: Codes, m: int, n: int, cfg: st.StatsConfig) -> None:
    sub = Codes(*(np.asarray(a[:m]) for a in (c.idx, c.val, c.cell, c.gene)))
    t0 = time.perf_counter()
    ours = statistics(sub, n, 20_000, cfg)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fire, total, vmax, top, pairs = python_loop(sub, n, cfg)
    loop_s = time.perf_counter() - t0
    F, G, M = ours["features"], ours["genes"], ours["m"]
    co = dict(zip(map(tuple, np.column_stack(np.divmod(M["co_key"], n)).tolist()), M["co_n"].tolist()))
    same = (np.array_equal(F["fire_count"], fire) and np.allclose(F["mean_activation"] * m, total)
            and np.allclose(F["max_activation"], vmax) and co == pairs
            and all(G["token_id"][G["feature"] == f].tolist() == top.get(f, []) for f in range(n)))
    print(f"statistics on the first {m:,} tokens: ours {ours_s:.2f} s, per-token Python loop {loop_s:.1f} s: "
          f"{loop_s / ours_s:,.0f}x faster; identical fire counts, sums, maxima, top genes, co-occurrence: {same}")


if __name__ == "__main__":
    main()
