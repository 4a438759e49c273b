"""Cost of `atlas perturb` on the demo checkpoints, and its projection to a genome-scale screen.

    PYTHONPATH=. flock /work/heavy.lock python bench/perturb_bench.py [--cells 60] [--repeats 3]

Measured on each demo model (atlas_data/inputs/models/, every layer, SAEs of 4 x width random features, k 16)
over the synthetic Perturb-seq file of the tests (tests/perturbseq.py: dendritic cells, 240 controls, 40 cells per
perturbation):
- seconds per cell of forward + SAE encode + cell summaries (perturb.Encoder) against the bare forward of the same
  cells (models.stream), in the same run;
- seconds per perturbation of the feature tests (perturb_stats.compare: Cohen's d and scipy's Mann-Whitney
  vectorised over every feature; and the batch path, OLS + van Elteren) against a per-feature loop of
  scipy.stats.mannwhitneyu plus the same d, on the same arrays;
- projection: a screen of P perturbations x n cells with C controls, each perturbed gene expressed in a share s of
  the controls (re-encoded without it): cells encoded = C + P (n + s C), at the measured s/cell.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from perturbseq import CONTROL, make_perturbseq  # noqa: E402

from builder.models import load, stream  # noqa: E402
from builder.models.bundled import CHECKPOINTS  # noqa: E402
from builder.models.dataset import read_h5ad  # noqa: E402
from builder.pipeline.perturbation import response as pp
from builder.pipeline.perturbation import stats as ps
from builder.pipeline.sae.topk import TopKSAE


def random_sae(width: int, seed: int) -> TopKSAE:
    g = torch.Generator().manual_seed(seed)
    sae = TopKSAE(width, 4 * width, 16, apply_b_dec_to_input=False)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(width, 4 * width, generator=g) / width ** 0.5)
        w = torch.randn(4 * width, width, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
    return sae


def encode_cost(family: str, data: Path, cells: int, repeats: int) -> dict:
    ad = load(family, CHECKPOINTS[family])
    ds = read_h5ad(data)
    prepared = ad.prepare(ds)
    layers = list(range(ad.n_layers))
    enc = pp.Encoder(ad, prepared, {L: random_sae(ad.width, L) for L in layers}, layers)
    pick = np.arange(cells)
    bare, full = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _chunk in stream(ad, prepared, layers, 1, None, pick):
            pass
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc.summarise(pick)
        full.append(time.perf_counter() - t0)
    return {"bare": min(bare) / cells, "full": min(full) / cells, "features": enc.n_features}


def loop_tests(x1: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """The baseline: one scipy call per feature (and the same d), as a straightforward implementation would."""
    out = np.full(x1.shape[1], np.nan)
    for j in range(x1.shape[1]):
        a, b = x1[:, j], x0[:, j]
        sd = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        if sd > 0:
            _ = (a.mean() - b.mean()) / sd
            out[j] = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
    return out


def test_cost(features: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    # zero-inflated summaries, as mean activations per cell are
    x1 = (rng.random((40, features)) < 0.3) * rng.gamma(1.0, size=(40, features))
    x0 = (rng.random((240, features)) < 0.3) * rng.gamma(1.0, size=(240, features))
    b1, b0 = rng.choice(["b1", "b2"], 40), rng.choice(["b1", "b2"], 240)
    t = {"vectorised": [], "batch": [], "loop": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = ps.compare(x1, x0)
        t["vectorised"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ps.compare(x1, x0, b1, b0)
        t["batch"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = loop_tests(x1, x0)
        t["loop"].append(time.perf_counter() - t0)
    assert np.allclose(r["p"][r["tested"]], ref[r["tested"]])
    return {k: min(v) for k, v in t.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_perturbseq(Path(tmp) / "screen.h5ad", n_ctrl=240, n_pert=40)
        print("| model | features (all layers) | forward s/cell | forward + encode + summaries s/cell | ratio | "
              "tests s/perturbation (vectorised / batch / per-feature loop) | loop / vectorised |")
        print("|---|---|---|---|---|---|---|")
        rows = {}
        for family in ("scgpt", "geneformer"):
            e = encode_cost(family, data, args.cells, args.repeats)
            t = test_cost(e["features"], args.repeats)
            rows[family] = (e, t)
            print(f"| demo {family} | {e['features']:,} | {e['bare']:.4f} | {e['full']:.4f} | "
                  f"{e['full'] / e['bare']:.2f} | {t['vectorised']:.3f} / {t['batch']:.3f} / {t['loop']:.2f} | "
                  f"{t['loop'] / t['vectorised']:.0f}x |")
    # K562 essential screen (Replogle 2022): 2,057 perturbations, ~150 cells each, ~10,000 controls
    P, n, C = 2057, 150, 10_000
    for share, cap in ((0.5, C), (0.5, 1000)):
        cells = cap + P * (n + share * cap)
        for family, (e, t) in rows.items():
            hours = (cells * e["full"] + P * t["vectorised"]) / 3600
            print(f"projection, demo {family}, {P} perturbations x {n} cells, {cap:,} controls "
                  f"({share:.0%} re-encoded per perturbation): {cells / 1e6:.2f} M cell passes, "
                  f"{hours:.1f} h on this CPU")
    print(f"(control re-encoding dominates; --max-controls caps it; the test of a perturbation is "
          f"{rows['scgpt'][1]['vectorised']:.2f} s)")


if __name__ == "__main__":
    main()
