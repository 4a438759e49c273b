"""Pretraining cost and the demo checkpoints' quality.

    python bench/pretrain_bench.py [--steps 20]

1. Seconds per optimiser step of `atlas pretrain` (one thread, as pretraining runs) for both families at the
   demo configuration (4 layers x 128, 16 cells a step, the bundled 700 PBMCs), next to a forward pass in
   eval mode over the same batches measured in the same run: the ratio is what the backward pass and the
   optimiser add.
2. The bundled demo checkpoints' held-out masked prediction against their baselines and their untrained twin,
   read from atlas_data/inputs/models/<family>/pretrain.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "atlas_data" / "inputs" / "pbmc68k_counts.h5ad"
MODELS = ROOT / "atlas_data" / "inputs" / "models"


def step_times(family: str, steps: int) -> tuple[float, float]:
    """(seconds per training step, seconds per eval forward of the same batch) at the demo configuration."""
    import numpy as np

    from builder import models
    from builder.models import pretrain as pt

    cfg = pt.PretrainConfig()
    corpus = pt.read_corpus(family, DATA, cfg)
    model = pt.new_model(family, corpus, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        pt.write_checkpoint(family, Path(tmp), corpus, cfg, model)
        adapter = models.load(family, Path(tmp))
    prep = adapter.prepare(corpus.dataset, corpus.column)
    cells = [adapter.tokenize(prep, int(i)) for i in corpus.train]
    rng = np.random.default_rng(0)
    batches = [adapter.collate([cells[i] for i in rng.choice(len(cells), cfg.batch_size, replace=False)])
               for _ in range(steps)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    torch.set_num_threads(1)
    model.train()
    t0 = time.perf_counter()
    for batch in batches:
        loss, _, _ = pt.STEP[family](model, adapter, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = (time.perf_counter() - t0) / steps
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            pt.STEP[family](model, adapter, batch, gen, train=False)
    return train_s, (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print(f"pretraining step cost, demo configuration (4 x 128, 16 cells/step), 1 thread, {args.steps} steps")
    print(f"{'family':<11} {'s/step':>7} {'fwd s':>7} {'step/fwd':>9} {'10 min of steps':>16}")
    for family in ("scgpt", "geneformer"):
        train_s, fwd_s = step_times(family, args.steps)
        print(f"{family:<11} {train_s:>7.3f} {fwd_s:>7.3f} {train_s / fwd_s:>8.1f}x {int(600 / train_s):>16}", flush=True)
    print("\ndemo checkpoints, held-out masked prediction (loss: scGPT MSE of the bin, Geneformer cross-entropy)")
    for family in ("scgpt", "geneformer"):
        path = MODELS / family / "pretrain.json"
        if not path.is_file():
            print(f"{family}: {path} missing")
            continue
        rec = json.loads(path.read_text())
        h, u, b = rec["heldout"], rec["untrained"], rec["baselines"]
        if family == "scgpt":
            base = (f"most frequent bin acc {b['most_frequent_bin_accuracy']:.4f} (mean-bin MSE {b['mean_bin_mse']:.1f}); "
                    f"gene mean bin acc {b['gene_mean_bin_accuracy']:.4f} (MSE {b['gene_mean_bin_mse']:.1f})")
        else:
            base = (f"most frequent gene acc {b['most_frequent_gene_accuracy']:.4f}; "
                    f"unigram loss {b['unigram_loss']:.3f}")
        print(f"{family}: {rec['config']['steps']} steps; held-out acc {h['heldout_accuracy']:.4f}, loss "
              f"{h['heldout_loss']:.3f}; untrained twin acc {u['heldout_accuracy']:.4f}, loss {u['heldout_loss']:.3f}; "
              f"{base}")


if __name__ == "__main__":
    main()
