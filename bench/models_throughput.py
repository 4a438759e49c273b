"""Model forward throughput: gene tokens per second and peak memory, batch size 1 (as the predecessor ran)
vs batch size 16, tiny and full-width random-weight checkpoints, on the bundled 559-cell sample.

    python bench/models_throughput.py [--quick]

Each configuration runs in its own process so that its peak RSS is its own. Prints a table and the ratio
of batched to one-cell-at-a-time throughput measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "out" / "checkpoints"
SAMPLE = ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad"

# name: (family, writer kwargs, cells)
MODELS = {
    "scgpt-tiny": ("scgpt", dict(n_layers=2, width=64, heads=4), 64),
    "scgpt-full": ("scgpt", dict(n_layers=12, width=512, heads=8, d_hid=512), 32),  # whole-human
    "geneformer-v1-tiny": ("geneformer", dict(version=1, n_layers=2, width=64, heads=4), 64),
    "geneformer-v1-full": ("geneformer", dict(version=1, n_layers=6, width=256, heads=4, intermediate=512), 32),  # V1-10M
    "geneformer-v2-tiny": ("geneformer", dict(version=2, n_layers=2, width=64, heads=4), 64),
    "geneformer-v2-full": ("geneformer", dict(version=2, n_layers=18, width=1152, heads=18, intermediate=4608), 16),  # V2-316M
}


def checkpoint(name: str) -> Path:
    from builder.models.tiny import write_geneformer, write_scgpt

    family, kw, _ = MODELS[name]
    out = CACHE / name
    if not (out / ".done").exists():
        (write_scgpt if family == "scgpt" else write_geneformer)(out, **kw)
        (out / ".done").touch()
    return out


def one(name: str, batch_size: int, cells: int) -> dict:
    """Run one configuration in this process: load, warm up on one batch, time the stream over `cells`."""
    from builder import models
    from builder.models.dataset import read_h5ad

    family = MODELS[name][0]
    t0 = time.perf_counter()
    adapter = models.load(family, checkpoint(name))
    prep = adapter.prepare(read_h5ad(SAMPLE, max_cells=cells))
    load_s = time.perf_counter() - t0
    layers = list(range(adapter.n_layers))
    for _ in models.stream(adapter, prep, layers, batch_size, cells=range(min(batch_size, cells))):
        pass
    t0 = time.perf_counter()
    tokens = sum(len(c.cells) for c in models.stream(adapter, prep, layers, batch_size))
    seconds = time.perf_counter() - t0
    return {"model": name, "batch_size": batch_size, "cells": cells, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "load_s": load_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny checkpoints only")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "BATCH", "CELLS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    names = args.models or [n for n in MODELS if not (args.quick and n.endswith("full"))]
    print(f"CPU threads: {os.cpu_count()}; dataset: {SAMPLE.name}; all layers captured; fp32")
    print(f"{'model':<20} {'batch':>5} {'cells':>5} {'tokens':>8} {'tok/s':>9} {'s':>7} {'peak MB':>8}")
    for name in names:
        checkpoint(name)
        rows = {}
        for bs in (1, 16):
            res = subprocess.run([sys.executable, __file__, "--one", name, str(bs), str(MODELS[name][2])],
                                 capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            r = rows[bs] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name:<20} {bs:>5} {r['cells']:>5} {r['tokens']:>8} {r['tokens_per_s']:>9.0f} "
                  f"{r['seconds']:>7.1f} {r['peak_rss_mb']:>8.0f}", flush=True)
        print(f"{name:<20} batched / one-at-a-time throughput: {rows[16]['tokens_per_s'] / rows[1]['tokens_per_s']:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
