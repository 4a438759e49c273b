"""Whole-build throughput, memory and cache size at scGPT scale, each against a baseline measured in the same run.

    python bench/build_bench.py [--cells 50,200,800] [--shard-cells 100] [--ray-cells 200] [--gf-cells 2] [--fresh]

Full-width scGPT architecture (12 x 512, random weights), TopK SAEs of 2,048 features (k = 32, random tied
weights, SAELens layout) given for every layer, cells resampled with replacement from the bundled sample (with a
cell-type and a donor column, so the cell-type tests run). Every measurement runs in a process of its own, so
each peak RSS is its own. For each cell count:
- the bare forward: the model over the same cells with every layer captured, as the build runs it;
- the whole build (`--sae`, fresh cache): plan, stream, stats, annotate, graphs, cross-layer, export, render;
  gene tokens/s of both and their ratio, peak RSS, the cache size after the build and its peak during the build
  (polled) against dense float32 activations of all layers.
Then `--engine ray --workers 2` against the local build of --ray-cells cells (wall time ratio, bytes compared),
the post-forward cost per token and layer on synthetic activations at scGPT and Geneformer V2 widths, the
Geneformer V2-316M forward rate on --gf-cells cells (0: skip), and a projection for the published atlases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "build"
CKPT = ROOT / "bench" / "out" / "checkpoints"
SAMPLE = ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad"
SCGPT = dict(n_layers=12, width=512, heads=8, d_hid=512)  # whole-human
GF_V2 = dict(version=2, n_layers=18, width=1152, heads=18, intermediate=4608)  # V2-316M
FEATURES, K = 2048, 32
# Published atlases: cells, gene tokens per layer, layers, width, SAE features.
PUBLISHED = {"scGPT whole-human": (3000, 3_600_000, 12, 512, 2048), "Geneformer V2-316M": (2000, 4_100_000, 18, 1152, 4608)}
A100 = (312e12, 0.4)  # bf16 dense peak FLOP/s, and the share of it a tuned forward sustains (assumption)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def checkpoint(name: str, kw: dict) -> Path:
    from builder.models.tiny import write_geneformer, write_scgpt

    out = CKPT / name
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        (write_scgpt if name.startswith("scgpt") else write_geneformer)(out, **kw)
        (out / ".done").touch()
    return out


def saes(n_layers: int, width: int) -> Path:
    """Random tied TopK SAEs (unit-norm decoder rows, W_enc = W_decᵀ), one per layer, seeded."""
    import torch

    from builder.pipeline.sae.topk import TopKSAE

    out = OUT / f"saes-{width}-{FEATURES}"
    if (out / ".done").exists():
        return out
    torch.manual_seed(0)
    for L in range(n_layers):
        sae = TopKSAE(width, FEATURES, K)
        with torch.no_grad():
            sae.W_dec.copy_(torch.randn(FEATURES, width))
            sae.normalise_decoder()
            sae.W_enc.copy_(sae.W_dec.T)
        sae.save(out / f"layer_{L:02d}", {"layer": L, "note": "random tied weights (benchmark)"})
    (out / ".done").touch()
    return out


def dataset(n: int) -> Path:
    """n cells resampled with replacement from the bundled sample, with `kind` (by total counts) and `donor`."""
    import anndata as ad

    out = OUT / f"cells-{n}.h5ad"
    if out.exists():
        return out
    a = ad.read_h5ad(SAMPLE)
    pick = np.random.default_rng(n).choice(a.n_obs, n, replace=True)
    a = ad.AnnData(a.X[pick], obs=a.obs.iloc[pick].set_axis([f"c{i}" for i in range(n)]), var=a.var)
    counts = a.obs["n_counts"].to_numpy()
    a.obs["kind"] = np.digitize(counts, np.quantile(counts, [1 / 3, 2 / 3])).astype(str)
    a.obs["donor"] = [f"d{i % 4}" for i in range(n)]
    a.write_h5ad(out)
    return out


def one_forward(n: int) -> dict:
    """The bare forward over the cells: every layer captured, batch 1, as the streaming pass runs it."""
    from builder.pipeline.model.forward import ModelRunner, ModelSpec

    t0 = time.perf_counter()
    runner = ModelRunner(ModelSpec("scgpt", str(checkpoint("scgpt-full", SCGPT)), str(dataset(n)), tuple(range(12))))
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = sum(len(c.cells) for c in runner.run(range(n)))
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "load_s": load, "peak_rss_mb": rss_mb()}


class CachePoll(threading.Thread):
    """The largest size the cache folder reaches while the build runs (polled every 0.5 s)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.peak, self.stop = path, 0, threading.Event()

    def size(self) -> int:
        total = 0
        for root, _, files in os.walk(self.path):
            for f in files:
                try:
                    total += os.stat(os.path.join(root, f)).st_size
                except FileNotFoundError:  # a temporary folder renamed or removed meanwhile
                    pass
        return total

    def run(self):
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, self.size())


def one_build(n: int, shard_cells: int, engine: str) -> dict:
    from builder.atlas.export import export
    from builder.options import read_config
    from builder.pipeline.build import Builder
    from builder.site.render import render

    run = OUT / f"run-{engine}-{n}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = read_config(None, {
        "model": "scgpt", "checkpoint": str(checkpoint("scgpt-full", SCGPT)), "data": str(dataset(n)),
        "sae": str(saes(12, 512)), "atlas": "bench", "shard_cells": shard_cells, "cell_type_column": "kind",
        "donor_column": "donor", "engine.engine": engine, "engine.workers": 2 if engine == "ray" else None})
    poll = CachePoll(run / "cache")
    poll.start()
    t0 = time.perf_counter()
    out = Builder(cfg, run / "cache").run()
    path = export(out, run / "data")
    render(path, run / "site")
    seconds = time.perf_counter() - t0
    poll.stop.set()
    poll.join()
    after = poll.size()
    by_stage: dict = {}
    for d in (run / "cache").iterdir():
        stage = d.name.rsplit("-", 1)[0]
        by_stage[stage] = by_stage.get(stage, 0) + sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    codes = sum(p.stat().st_size for p in out.results["stream"].folder.glob("shards/*/*.npy"))
    rec = out.results["plan"].record
    return {"tokens": rec["tokens"], "seconds": seconds, "stages": dict(out.timings.seconds), "peak_rss_mb": rss_mb(),
            "cache_after": after, "cache_peak": max(poll.peak, after), "cache_by_stage": by_stage, "codes": codes,
            "dense_f32": rec["tokens"] * 12 * 512 * 4, "shards": len(rec["shards"]),
            "data": tree_digest(path), "site": tree_digest(run / "site" / "bench")}


def one_post(width: int, features: int, tokens: int = 24_000) -> dict:
    """Seconds per token and layer of everything after the forward (encode, dense sums, codes, statistics map),
    on synthetic activations of one shard: what a GPU forward would leave to the host."""
    import torch

    from builder.pipeline.statistics import features as st
    from builder.pipeline.codes import Codes
    from builder.pipeline.sae.topk import TopKSAE
    from builder.pipeline.stages.stream import DenseSums

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    sae = TopKSAE(width, features, K)
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(features, width))
        sae.normalise_decoder()
        sae.W_enc.copy_(sae.W_dec.T)
    per_cell = 1200
    x = torch.from_numpy(rng.standard_normal((tokens, width), dtype=np.float32))
    cells = np.repeat(np.arange(tokens // per_cell), per_cell)
    genes = np.concatenate([rng.choice(20_000, per_cell, replace=False) for _ in range(tokens // per_cell)])
    held = cells % 10 == 0
    t0 = time.perf_counter()
    with torch.no_grad():
        idx, val = [], []
        uniq, gidx = np.unique(genes, return_inverse=True)
        sums = DenseSums(width, features, uniq.size)
        for s in range(0, tokens, per_cell):
            v, i = sae.encode(x[s:s + per_cell])
            sums.add(x[s:s + per_cell], v, i, held[s:s + per_cell], gidx[s:s + per_cell], sae)
            idx.append(i.numpy().astype(np.uint16))
            val.append(v.numpy())
    stream_s = time.perf_counter() - t0
    c = Codes(np.concatenate(idx), np.concatenate(val), cells.astype(np.int32), genes.astype(np.int32))
    cells_of = st.ShardCells(0, np.full(tokens // per_cell, per_cell))
    head = Codes(c.idx[:per_cell], c.val[:per_cell], c.cell[:per_cell], c.gene[:per_cell])
    st.map_layer(head, st.ShardCells(0, np.full(1, per_cell)), features, 20_000, 10)  # compile the kernels first
    st.map_pair(head, head, features, features)
    t0 = time.perf_counter()
    st.map_layer(c, cells_of, features, 20_000, 10)
    st.map_pair(c, c, features, features)
    stats_s = time.perf_counter() - t0
    return {"width": width, "features": features, "tokens": tokens, "stream_us": stream_s / tokens * 1e6,
            "stats_us": stats_s / tokens * 1e6}  # stats: one layer task and one pair task per layer


def one_gf_forward(n: int) -> dict:
    from builder.pipeline.model.forward import ModelRunner, ModelSpec

    runner = ModelRunner(ModelSpec("geneformer", str(checkpoint("geneformer-v2-full", GF_V2)), str(SAMPLE),
                                   tuple(range(18)), max_cells=n))
    t0 = time.perf_counter()
    tokens = sum(len(c.cells) for c in runner.run(range(n)))
    return {"tokens": tokens, "seconds": time.perf_counter() - t0}


def child(*args) -> dict:
    """Run one measurement in a fresh process; results are kept in OUT/results.json, so a long benchmark can run
    in parts (each under the heavy-job lock) and the last part prints every figure (--fresh forgets them)."""
    store = OUT / "results.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    key = " ".join(map(str, args))
    if key in done:
        return done[key]
    res = subprocess.run([sys.executable, __file__, "--one", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    if res.returncode:
        sys.exit(f"{args}: failed\n{res.stderr[-3000:]}")
    done[key] = json.loads(res.stdout.strip().splitlines()[-1])
    store.write_text(json.dumps(done, indent=1))
    return done[key]


def scgpt_flops(n_tokens_cell: float) -> tuple[float, float]:
    """(forward, SAE encode) FLOPs per gene token and layer: 2 x (4 d^2 + 2 d d_hid) + 4 n d; 2 d F."""
    d, h = SCGPT["width"], SCGPT["d_hid"]
    return 2 * (4 * d * d + 2 * d * h) + 4 * n_tokens_cell * d, 2 * d * FEATURES


def gf_flops(n_tokens_cell: float) -> tuple[float, float]:
    d, h = GF_V2["width"], GF_V2["intermediate"]
    return 2 * (4 * d * d + 2 * d * h) + 4 * n_tokens_cell * d, 2 * d * 4608


def report(rows: dict, ray: dict | None, post: list, gf: dict | None, cells: list, shard_cells: int) -> None:
    print(f"\nscGPT 12 x 512, SAEs 2,048 features k = {K} given for every layer, shard_cells {shard_cells}, "
          f"torch threads {os.cpu_count()}")
    print("| cells | gene tokens | forward tok/s | build tok/s | build / forward | stream s | stats s | other s "
          "| peak RSS MB | cache after / peak | dense f32 | after / dense | peak / dense |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in cells:
        f, b = rows[n]
        fr, br = f["tokens"] / f["seconds"], b["tokens"] / b["seconds"]
        st = b["stages"]
        other = b["seconds"] - st.get("stream", 0) - st.get("stats", 0)
        print(f"| {n} | {b['tokens']:,} | {fr:,.0f} | {br:,.0f} | **{br / fr:.2f}** | {st.get('stream', 0):.1f} | "
              f"{st.get('stats', 0):.1f} | {other:.1f} | {b['peak_rss_mb']:,.0f} (forward {f['peak_rss_mb']:,.0f}) | "
              f"{b['cache_after'] / 1e6:,.0f} / {b['cache_peak'] / 1e6:,.0f} MB | {b['dense_f32'] / 1e6:,.0f} MB | "
              f"{b['cache_after'] / b['dense_f32']:.1%} | {b['cache_peak'] / b['dense_f32']:.1%} |")
    for n in cells:
        b = rows[n][1]
        print(f"{n} cells: stages " + ", ".join(f"{k} {v:.1f} s" for k, v in b["stages"].items())
              + "; cache by stage " + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in sorted(b["cache_by_stage"].items())))
    if len(cells) > 1:
        lo, hi = rows[cells[-2]][1]["peak_rss_mb"], rows[cells[-1]][1]["peak_rss_mb"]
        print(f"peak RSS {cells[-1]} vs {cells[-2]} cells: {hi / lo:.3f}x")
    if ray:
        local = rows[ray["cells"]][1]
        print(f"ray (2 workers) vs local, {ray['cells']} cells: wall {ray['seconds']:.1f} s vs {local['seconds']:.1f} s "
              f"= {ray['seconds'] / local['seconds']:.2f}x; stream {ray['stages'].get('stream', 0):.1f} s vs "
              f"{local['stages'].get('stream', 0):.1f} s; atlas data identical: {ray['data'] == local['data']}, "
              f"site identical: {ray['site'] == local['site']}")
    for p in post:
        print(f"after the forward, width {p['width']} -> {p['features']:,} features: stream (encode, dense sums) "
              f"{p['stream_us']:.1f} us + statistics map {p['stats_us']:.1f} us per token and layer")
    project(rows, post, gf, cells)


def project(rows: dict, post: list, gf: dict | None, cells: list) -> None:
    f, b = rows[cells[-1]]
    n_cell = b["tokens"] / cells[-1]
    fwd, enc = scgpt_flops(n_cell)
    cpu_flops = fwd * 12 * f["tokens"] / f["seconds"]
    eff = A100[0] * A100[1]
    print(f"\nmeasured forward: {cpu_flops / 1e9:,.0f} GFLOP/s on this CPU ({fwd / 1e6:.1f} MFLOP per token and layer "
          f"at {n_cell:,.0f} tokens per cell). GPU assumption: an A100 sustains {A100[1]:.0%} of its "
          f"{A100[0] / 1e12:.0f} TFLOP/s bf16 peak = {eff / 1e12:.0f} TFLOP/s for forward + encode; the "
          f"statistics map stays on the host (2 cores here).")
    print("| atlas | cells | tokens / layer | this CPU, whole build | GPU: forward + encode | host: statistics map |")
    print("|---|---:|---:|---:|---:|---:|")
    post_by = {p["width"]: p for p in post}
    for name, (n, tokens, layers, width, feats) in PUBLISHED.items():
        if width == 512:
            cpu = tokens / (b["tokens"] / b["seconds"])
            flo = fwd + enc
        else:
            if gf is None or width not in post_by:
                continue
            per_cell = tokens / n
            fl, en = gf_flops(per_cell)
            p = post_by[width]
            cpu = tokens / (gf["tokens"] / gf["seconds"]) + tokens * layers * (p["stream_us"] + p["stats_us"]) * 1e-6
            flo = fl + en
        host = tokens * layers * post_by[width]["stats_us"] * 1e-6 if width in post_by else float("nan")
        gpu = tokens * layers * flo / eff
        print(f"| {name} | {n:,} | {tokens:,} | {cpu / 3600:,.1f} h | {gpu / 60:,.1f} min | {host / 60:,.1f} min |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="50,200,800")
    ap.add_argument("--shard-cells", type=int, default=100)
    ap.add_argument("--ray-cells", type=int, default=200, help="0: skip the Ray comparison")
    ap.add_argument("--gf-cells", type=int, default=2, help="Geneformer V2-316M forward on N cells (0: skip)")
    ap.add_argument("--fresh", action="store_true", help="forget the results of earlier parts")
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fresh:
        (OUT / "results.json").unlink(missing_ok=True)
    if args.one:
        mode, rest = args.one[0], [int(a) if a.isdigit() else a for a in args.one[1:]]
        fn = {"forward": one_forward, "build": one_build, "post": one_post, "gf": one_gf_forward}[mode]
        print(json.dumps(fn(*rest)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    cells = [int(c) for c in args.cells.split(",")]
    checkpoint("scgpt-full", SCGPT)
    saes(12, 512)
    rows = {}
    for n in cells:
        dataset(n)
        rows[n] = (child("forward", n), child("build", n, args.shard_cells, "local"))
        print(f"{n} cells: forward {rows[n][0]}\n  build {rows[n][1]}", flush=True)
    ray = None
    if args.ray_cells:
        ray = dict(child("build", args.ray_cells, args.shard_cells, "ray"), cells=args.ray_cells)
        if args.ray_cells not in rows:
            rows[args.ray_cells] = (child("forward", args.ray_cells), child("build", args.ray_cells, args.shard_cells, "local"))
        print(f"ray: {ray}", flush=True)
    post = [child("post", 512, 2048), child("post", 1152, 4608)]
    gf = child("gf", args.gf_cells) if args.gf_cells else None
    print(f"post: {post}\ngeneformer forward: {gf}", flush=True)
    report(rows, ray, post, gf, cells, args.shard_cells)


if __name__ == "__main__":
    main()
