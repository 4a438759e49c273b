"""The annotation rate of the demo models beside each baseline of `atlas build`, with the time and memory of each.

    python bench/baselines.py [--data atlas_data/inputs/pbmc68k_counts.h5ad] [--max-cells 0]
                              [--families scgpt,geneformer] [--work bench/out/baselines]

For each bundled demo checkpoint (atlas_data/inputs/models/), on the bundled labelled dataset it was trained on,
with the build's defaults (--train-sae, bundled gene sets): first the build with every baseline off (the model
alone), then one build per baseline with only that baseline on, all on one cache. The later builds reuse the
model's cached stages, so each one's time and peak RSS are that baseline's own (plus reading the cache and the
imports, the floor the model-alone row shows when it is rerun cached: the `cached` row). random_init_model is a
whole second build on the checkpoint's untrained twin; random_genes re-annotates the features (its annotate
stage key changes). Each build runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("random_genes", "pca", "coexpression", "random_init_model")
OFF = {"random_genes": "[annotate]\nrandom_genes = false\n", "pca": "pca = false\n",
       "coexpression": "coexpression = false\n", "random_init_model": "random_init_model = false\n"}


def config(only: str | None, max_cells: int) -> str:
    """A config with every baseline off but `only`."""
    top = f"max_cells = {max_cells}\n" if max_cells else ""
    base = "".join(OFF[b] for b in ("pca", "coexpression", "random_init_model") if b != only)
    ann = OFF["random_genes"] if only != "random_genes" else ""
    return top + ann + "[baselines]\n" + base


def child(args: list[str], out: Path) -> None:
    from builder.cli import main

    t0 = time.perf_counter()
    try:
        main(args)
    except SystemExit as e:
        if e.code:
            raise
    out.write_text(json.dumps({"seconds": time.perf_counter() - t0,
                               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def build(family: str, case: str, only: str | None, a, work: Path) -> dict:
    cfg = work / f"{family}-{case}.toml"
    cfg.write_text(config(only, a.max_cells))
    args = ["build", "--model", family, "--checkpoint", str(ROOT / "atlas_data" / "inputs" / "models" / family),
            "--data", str(a.data), "--train-sae", "--cell-type-column", "cell_type", "--config", str(cfg),
            "--atlas", f"{family}-{case}", "--cache", str(work / "cache"), "--data-dir", str(work / "data"),
            "--site", str(work / "site"), "--quiet"]
    rec = work / f"{family}-{case}.json"
    subprocess.run([sys.executable, __file__, "--child", str(rec), "--", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    res = json.loads(rec.read_text())
    nb = pd.read_parquet(work / "data" / f"{family}-{case}" / "null_baseline.parquet")
    res["rows"] = nb[(nb.analysis != "svd")].to_dict("records")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "atlas_data" / "inputs" / "pbmc68k_counts.h5ad")
    ap.add_argument("--max-cells", type=int, default=0, help="0: every cell.")
    ap.add_argument("--families", default="scgpt,geneformer")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "baselines")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a, rest = ap.parse_known_args()
    if a.child:
        child([x for x in rest if x != "--"], a.child)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    rates, costs = [], []
    for family in a.families.split(","):
        runs = {"model": build(family, "model", None, a, a.work), "cached": build(family, "cached", None, a, a.work)}
        for b in BASELINES:
            runs[b] = build(family, b, b, a, a.work)
        for case, r in runs.items():
            costs.append((family, case, r["seconds"], r["peak_mb"]))
        ann = pd.DataFrame([row for b in BASELINES for row in runs[b]["rows"]])
        ann = ann[(ann.analysis == "annotation") & (ann.measure == "any database") & ann.baseline.isin(BASELINES)]
        for L, g in ann.groupby("layer"):
            share = dict(zip(g["baseline"], g["expected"]))
            rates.append((family, int(L), float(g["observed"].iloc[0]), *[share.get(b) for b in BASELINES]))
        twin = pd.DataFrame(runs["random_init_model"]["rows"])
        twin = twin[(twin.baseline == "random_init_model") & (twin.analysis != "annotation")]
        for r in twin.itertuples():
            print(f"{family} layer {r.layer} {r.analysis} {r.measure}: trained {r.observed:g}, untrained twin {r.expected:g}")
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    print("| model | layer | trained model | " + " | ".join(BASELINES) + " |")
    print("|---|---:|---:|" + "---:|" * len(BASELINES))
    for family, L, obs, *base in rates:
        print(f"| {family} | {L} | {pct(obs)} | " + " | ".join(pct(v) for v in base) + " |")
    print("\n| model | build | seconds | peak RSS MB |\n|---|---|---:|---:|")
    for family, case, s, mb in costs:
        print(f"| {family} | {case} | {s:.1f} | {mb:.0f} |")


if __name__ == "__main__":
    main()
