"""The README's main command from a fresh clone, timed against its 5-minute budget, beside the same build on the
randomly initialised twin of the demo model.

    python bench/demo_bench.py [--family scgpt|geneformer|both] [--keep DIR]

1. `git clone` of this checkout into a temporary folder (no ../shared beside it);
2. `pip install -e .` into a fresh virtualenv that sees the already installed dependencies
   (--system-site-packages), so the time is that of a machine with the dependencies present;
3. `atlas build --model FAMILY` in the clone, wall and CPU time;
4. `atlas pretrain --random-init` (the untrained twin: same vocabulary, architecture, seed) and the same build on
   it (same data, cell types and demo SAE settings), with the annotated share of alive features of both, and the
   random-gene-list null of each (the null_baseline rows `random_genes`).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's builder, not whichever one is installed
BUDGET = 300.0


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + sys of the children) of one command; its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), p.stdout


def shares(atlas: Path) -> dict:
    """Annotated share of alive features (any database), and the random_genes null, over all layers."""
    lay = pd.read_parquet(atlas / "layers.parquet")
    nb = pd.read_parquet(atlas / "null_baseline.parquet")
    null = nb[(nb.analysis == "annotation") & (nb.measure == "any database") & (nb.baseline == "random_genes")]
    ct = pd.read_parquet(atlas / "celltypes.parquet")
    ct = ct[ct.level == "cell_type"]
    best = ct.groupby(["layer", "feature"]).auc.max()
    return {"alive": int(lay.alive.sum()), "annotated": int(lay.annotated.sum()),
            "share": lay.annotated.sum() / max(lay.alive.sum(), 1), "null": float(null.expected.mean()),
            "celltype_features": len(best), "celltype_auc_ge_0.8": int((best >= 0.8).sum()),
            "celltype_auc_median": float(best.median()) if len(best) else float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["scgpt", "geneformer", "both"], default="scgpt")
    ap.add_argument("--keep", type=Path, help="work here and keep the clone (default: a temporary folder)")
    a = ap.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="demo-bench-"))
    clone, venv = work / "clone", work / "venv"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip_s, _, _ = timed([str(venv / "bin" / "pip"), "install", "-q", "-e", "."], clone)
    atlas = str(venv / "bin" / "atlas")
    print(f"pip install -e .: {pip_s:.1f} s (dependencies already installed)")
    from builder.models.bundled import DEMO_TRAIN

    (clone / "twin.toml").write_text("[train]\n" + "".join(f"{k.split('.')[1]} = {v}\n" for k, v in DEMO_TRAIN.items()))
    for family in (["scgpt", "geneformer"] if a.family == "both" else [a.family]):
        wall, cpu, _ = timed([atlas, "build", "--model", family, "--quiet"], clone)
        total = pip_s + wall
        print(f"atlas build --model {family}: {wall:.1f} s wall, {cpu:.1f} s CPU; with pip {total:.1f} s = "
              f"{total / BUDGET:.2f} x the {BUDGET:.0f} s budget")
        twin = clone / f"{family}-twin"
        timed([atlas, "pretrain", "--model", family, "--data", "atlas_data/inputs/pbmc68k_counts.h5ad",
               "--out", str(twin), "--random-init"], clone)
        twall, tcpu, _ = timed([atlas, "build", "--model", family, "--checkpoint", str(twin), "--train-sae",
                                "--data", "atlas_data/inputs/pbmc68k_counts.h5ad", "--cell-type-column", "cell_type",
                                "--config", "twin.toml", "--atlas", f"{family}-twin", "--quiet"], clone)
        print(f"same build on the random-init twin: {twall:.1f} s wall ({twall / wall:.2f} x the demo build)")
        for label, name in (("pretrained", f"{family}-demo"), ("random-init twin", f"{family}-twin")):
            s = shares(clone / "atlas_data" / name)
            print(f"  {label}: annotated {s['annotated']} of {s['alive']} alive ({s['share']:.2%}); random gene lists "
                  f"{s['null']:.2%}; cell-type test passes for {s['celltype_features']} features "
                  f"({s['celltype_auc_ge_0.8']} with AUC >= 0.8, median best AUC {s['celltype_auc_median']:.2f})")
        print(json.dumps({"family": family, "pip_s": round(pip_s, 1), "build_s": round(wall, 1), "cpu_s": round(cpu, 1),
                          "twin_build_s": round(twall, 1)}))
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
