"""SAE encode and feature statistics at scGPT layer scale: 1M tokens x 512 -> 2,048 features, k = 32.

    python bench/sae_bench.py [--tokens 1000000] [--loop-tokens 50000]

Prints, each against a baseline measured in the same run:
- encode throughput vs a dense torch matmul of the same shape (x @ W_enc over the same tokens and batches);
- statistics vs a per-token Python loop like the published analysis (on the first --loop-tokens tokens,
  with a check that both give identical fire counts, sums, maxima and top genes);
- peak memory, and the disk size of the codes vs dense float32 activations.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from builder.pipeline.encode import Codes, encode_stream, read_codes
from builder.pipeline.sae import TopKSAE
from builder.pipeline.stats import StatsConfig, feature_stats


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def python_loop(c: Codes, n_features: int, top: int, min_support: int):
    """The published way: one token at a time, dictionaries of per-gene sums."""
    fire = [0] * n_features
    total = [0.0] * n_features
    vmax = [0.0] * n_features
    gene_sum, gene_fire, gene_tokens = {}, {}, {}
    for t in range(len(c.cell)):
        g = int(c.gene[t])
        gene_tokens[g] = gene_tokens.get(g, 0) + 1
        for j in range(c.idx.shape[1]):
            v = float(c.val[t, j])
            if v > 0:
                f = int(c.idx[t, j])
                fire[f] += 1
                total[f] += v
                vmax[f] = max(vmax[f], v)
                gene_sum[f, g] = gene_sum.get((f, g), 0.0) + v
                gene_fire[f, g] = gene_fire.get((f, g), 0) + 1
    tops = {}
    for (f, g), s in gene_sum.items():
        if gene_fire[f, g] >= min_support:
            tops.setdefault(f, []).append((s / gene_tokens[g], gene_fire[f, g], -g, g))
    top_genes = {f: [g for *_, g in sorted(v, reverse=True)[:top]] for f, v in tops.items()}
    return np.array(fire), np.array(total), np.array(vmax), top_genes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--loop-tokens", type=int, default=50_000)
    args = ap.parse_args()
    T, d, n, k = args.tokens, args.width, args.features, args.k
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    print(f"{T:,} tokens x {d} -> {n:,} features, k = {k}; torch threads {torch.get_num_threads()}")

    x = rng.standard_normal((T, d), dtype=np.float32)
    cells = (np.arange(T) // 1000).astype(np.int64)  # 1,000 tokens per cell
    genes = np.minimum(rng.zipf(1.3, T), 20_000).astype(np.int64)  # skewed gene frequencies
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
              f"({dense_bytes / codes_bytes:.1f}x smaller)")

        cfg = StatsConfig()
        t0 = time.perf_counter()
        feature_stats(lambda: read_codes(tmp / "codes")[1], n, int(cells.max()) + 1, int(genes.max()) + 1, cfg)
        stats_s = time.perf_counter() - t0
        print(f"statistics over {T:,} tokens: {stats_s:.1f} s ({T / stats_s:,.0f} tokens/s); peak RSS {peak_mb():,.0f} MB")

        m = args.loop_tokens
        first = next(read_codes(tmp / "codes")[1])
        sub = Codes(*(np.asarray(a[:m]) for a in (first.idx, first.val, first.cell, first.gene)))
        t0 = time.perf_counter()
        ours = feature_stats(lambda: iter([sub]), n, int(sub.cell.max()) + 1, int(genes.max()) + 1, cfg)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fire, total, vmax, top = python_loop(sub, n, cfg.top_genes, cfg.min_support)
        loop_s = time.perf_counter() - t0
        F = ours["features"]
        same = (np.array_equal(F["fire_count"], fire) and np.allclose(F["mean_activation"] * m, total)
                and np.allclose(F["max_activation"], vmax)
                and all(ours["genes"]["token_id"][ours["genes"]["feature"] == f].tolist() == top.get(f, [])
                        for f in range(n)))
        print(f"statistics on the first {m:,} tokens: ours {ours_s:.2f} s, per-token Python loop {loop_s:.1f} s: "
              f"{loop_s / ours_s:,.0f}x faster; identical results: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
