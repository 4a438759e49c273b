"""Cost of causal patching on the demo checkpoints, and its projection to the published atlases.

    PYTHONPATH=. flock /work/heavy.lock python bench/interventions_bench.py [--cells 8] [--draws 4]

Measured on each demo model (atlas_data/inputs/models/, its last-but-one layer, an SAE of 4 x width random
features): seconds per cell of the attribution pass (one forward + backward of D mask draws: every feature at
once) and seconds per feature per cell of exact patching (D sequences through the rest of the model), the ratio
of the two, and the throughput in FLOP/s that these imply. Projection: the FLOPs of one full layer of the
published atlases (every feature exactly patched on `cells` cells vs one attribution pass) at the measured CPU
rate, and per GPU at an assumed effective 50 TFLOP/s (bf16, ~15-30% of an A100/H100 peak on these sequence
lengths; an assumption, not a measurement).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from builder.models import load
from builder.models.bundled import CHECKPOINTS, DATA
from builder.models.dataset import read_h5ad
from builder.pipeline.interventions.patching import attribution, patch, prepare_cell
from builder.pipeline.sae.topk import TopKSAE

GPU_FLOPS = 50e12
# (layers, width, ffn width, features per layer, mean tokens per cell, layers run by a patch from mid-depth)
PUBLISHED = {"scGPT whole-human (12 x 512, 2,048 features)": (12, 512, 512, 2048, 1200),
             "Geneformer V2-316M (18 x 1,152, 4,608 features)": (18, 1152, 4608, 4608, 4096)}


def flops_per_token_layer(width: int, ffn: int, tokens: int) -> float:
    """Forward FLOPs of one post-norm transformer layer per token: projections, FFN and attention scores."""
    return 2 * (4 * width * width + 2 * width * ffn) + 4 * tokens * width


def bench(family: str, cells: int, draws: int) -> dict:
    ad = load(family, CHECKPOINTS[family])
    prep = ad.prepare(read_h5ad(DATA, max_cells=cells))
    for p in ad.model.parameters():
        p.requires_grad_(False)
    L = ad.n_layers - 2
    g = torch.Generator().manual_seed(0)
    sae = TopKSAE(ad.width, 4 * ad.width, 16, apply_b_dec_to_input=False)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(ad.width, 4 * ad.width, generator=g) / ad.width ** 0.5)
        w = torch.randn(4 * ad.width, ad.width, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
    W = sae.decoder().detach()
    t_attr = t_exact = 0.0
    n_exact = tokens = 0
    for c in range(cells):
        t0 = time.perf_counter()
        cp = prepare_cell(ad, prep, c, L, sae, draws, 0.15, 0, grad=True)
        attribution(cp, sae)
        t_attr += time.perf_counter() - t0
        tokens += cp.hidden.shape[1]
        fired = np.unique(cp.indices[cp.values > 0].numpy())[:16]
        t0 = time.perf_counter()
        patch(ad, cp, L, [(int(f), W[f]) for f in fired])
        t_exact += time.perf_counter() - t0
        n_exact += fired.size
    T = tokens / cells
    ffn = getattr(getattr(ad.model, "config", None), "intermediate_size", None) or ad.model.transformer_encoder.layers[0].linear1.out_features
    run_layers = ad.n_layers if family == "geneformer" else ad.n_layers - L - 1  # Geneformer reruns 0..L (hook)
    exact_flops = draws * T * run_layers * flops_per_token_layer(ad.width, ffn, T)
    return {"family": family, "tokens": T, "attr_s_per_cell": t_attr / cells, "exact_s_per_feature_cell": t_exact / n_exact,
            "flops_rate": exact_flops / (t_exact / n_exact)}


def project(rate: float, cells: int, draws: int) -> list[str]:
    lines = []
    for name, (layers, width, ffn, feats, T) in PUBLISHED.items():
        per_seq = T * layers * flops_per_token_layer(width, ffn, T)  # the whole model (upper bound for any layer)
        exact = feats * cells * draws * per_seq
        attr = cells * draws * 3 * per_seq  # forward + backward ~ 3 forwards
        lines.append(f"| {name} | {exact / rate / 3600:,.0f} h | {exact / GPU_FLOPS / 3600:,.1f} h | "
                     f"{attr / rate / 60:,.1f} min | {attr / GPU_FLOPS:,.1f} s |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--project-cells", type=int, default=200)
    a = ap.parse_args()
    print("| model | tokens/cell | attribution s/cell (all features) | exact s/feature/cell | ratio | CPU FLOP/s |")
    print("|---|---|---|---|---|---|")
    rates = []
    for family in ("scgpt", "geneformer"):
        r = bench(family, a.cells, a.draws)
        rates.append(r["flops_rate"])
        print(f"| demo {family} | {r['tokens']:.0f} | {r['attr_s_per_cell']:.3f} | {r['exact_s_per_feature_cell']:.4f} | "
              f"{r['attr_s_per_cell'] / r['exact_s_per_feature_cell']:.1f} features | {r['flops_rate'] / 1e9:.1f} G |")
    print(f"\nOne full layer, every feature exactly patched vs one attribution pass, {a.project_cells} cells x "
          f"{a.draws} draws (CPU at the measured {min(rates) / 1e9:.1f} GFLOP/s; GPU at an assumed 50 TFLOP/s):\n")
    print("| atlas layer | exact, CPU | exact, 1 GPU | attribution, CPU | attribution, 1 GPU |")
    print("|---|---|---|---|---|")
    print("\n".join(project(min(rates), a.project_cells, a.draws)))


if __name__ == "__main__":
    main()
