"""Training a TopK SAE (topk.py) on activations streamed from disk, and evaluating it on held-out cells.

Each epoch visits the training sample in blocks, in a fresh seeded order, shuffled within the block; the decoder
rows are renormalised to unit norm after every step; AuxK (Gao et al. 2024) revives dead features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AtlasError
from ..heldout import heldout_flags
from .topk import TopKSAE


@dataclass(frozen=True)
class TrainConfig:
    expansion: int = 4  # features = expansion x width (the published: 4 for scGPT)
    k: int = 32
    centering: str = "pre-bias"  # pre-bias (trained b_dec, initialised at the mean), mean (fixed), none
    epochs: int = 5
    batch_size: int = 4096
    lr: float = 5e-4
    aux_k: int | None = None  # features used by the AuxK loss; None: half the width
    aux_coef: float = 1 / 32  # 0 turns AuxK off
    # A feature that has not fired for this many training tokens counts as dead (AuxK). None: 10% of one
    # epoch's tokens, at least one batch, so the window scales with the training set.
    dead_tokens: int | None = None
    holdout: float = 0.1  # share of cells held out of training, for evaluation
    sample_tokens: int | None = None  # training tokens per layer; None: 2,000,000 or every token when fewer
    block: int = 65_536  # tokens read from disk at a time
    seed: int = 0


def _blocks(n: int, block: int, rng: np.random.Generator | None = None):
    starts = np.arange(0, n, block)
    if rng is not None:
        starts = rng.permutation(starts)
    for s in starts:
        yield int(s), int(min(s + block, n))


def n_nonfinite(block: np.ndarray) -> int:
    return block.size - int(np.isfinite(block).sum())


def split_cells(cells: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: all tokens of the cells drawn as held out from (seed, cell)."""
    uniq = np.unique(cells)
    out = uniq[heldout_flags(uniq, holdout, seed)] if uniq.size > 1 else uniq[:0]
    return np.isin(cells, out)


def dead_window(cfg: TrainConfig, n: int) -> int:
    return cfg.dead_tokens if cfg.dead_tokens is not None else max(cfg.batch_size, n // 10)


def _mean(sample: np.ndarray, block: int, where: str) -> np.ndarray:
    total, bad = np.zeros(sample.shape[1]), 0
    for s, e in _blocks(len(sample), block):
        x = np.asarray(sample[s:e], dtype=np.float64)
        bad += n_nonfinite(x)
        total += x.sum(axis=0)
    if bad:
        raise AtlasError(f"{where}: {bad} NaN or infinite activation values; refusing to train on them")
    return total / len(sample)


def train(sample: np.ndarray, cfg: TrainConfig, where: str = "activations",
          log: Callable[[str], None] | None = None) -> tuple[TopKSAE, dict]:
    """Train on `sample` (tokens x width, e.g. a memmap; already globally shuffled, held-out cells excluded),
    read sequentially: each epoch visits the blocks in a fresh seeded order, shuffled within the block."""
    n, d = sample.shape
    if n == 0:
        raise AtlasError(f"{where}: no training tokens")
    if cfg.centering not in ("pre-bias", "mean", "none"):
        raise AtlasError(f"--centering {cfg.centering!r}: expected pre-bias, mean or none")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    mean = _mean(sample, cfg.block, where)
    d_sae = cfg.expansion * d
    sae = TopKSAE(d, d_sae, cfg.k, apply_b_dec_to_input=cfg.centering != "none")
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(d_sae, d))
        sae.normalise_decoder()
        sae.W_enc.copy_(sae.W_dec.T)  # tied initialisation (Gao et al. 2024)
        sae.b_dec.copy_(torch.as_tensor(mean, dtype=torch.float32))
    if cfg.centering == "mean":
        sae.b_dec.requires_grad_(False)
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=cfg.lr)
    state = {"since": torch.zeros(d_sae, dtype=torch.long), "window": dead_window(cfg, n),
             "aux_k": cfg.aux_k or d // 2}
    steps, losses = 0, []
    for epoch in range(cfg.epochs):
        for s, e in _blocks(n, cfg.block, rng):
            block = np.asarray(sample[s:e], dtype=np.float32)
            block = block[rng.permutation(len(block))]
            for b in range(0, len(block), cfg.batch_size):
                losses.append(_step(sae, opt, torch.from_numpy(block[b : b + cfg.batch_size]), cfg, state))
                steps += 1
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses[-max(1, steps // (epoch + 1)):]):.4f}")
    return sae, {"steps": steps, "train_tokens": int(n), "dead_window": state["window"], "config": asdict(cfg)}


def _step(sae: TopKSAE, opt, x: torch.Tensor, cfg: TrainConfig, state: dict) -> float:
    pre = sae.pre_acts(x)
    values, indices = torch.topk(pre, cfg.k, dim=-1)
    values = F.relu(values)
    err = x - sae.decode(values, indices)
    loss = err.pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    fired[indices[values > 0]] = True
    state["since"] = torch.where(fired, 0, state["since"] + len(x))
    dead = state["since"] >= state["window"]
    if cfg.aux_coef > 0 and dead.any():
        # AuxK: the dead features' largest pre-activations try to explain what the live ones missed.
        kk = min(state["aux_k"], int(dead.sum()))
        av, ai = torch.topk(pre.masked_fill(~dead, -torch.inf), kk, dim=-1)
        e_hat = torch.einsum("tk,tkd->td", F.relu(av), sae.W_dec[ai])
        target = err.detach()
        aux = (target - e_hat).pow(2).sum(-1).mean() / (target - target.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        loss = loss + cfg.aux_coef * torch.nan_to_num(aux)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sae.normalise_decoder()
    return loss.item()


def shuffled_rows(acts: np.ndarray, rows: np.ndarray, out: Path, seed: int, block: int = 65_536) -> np.ndarray:
    """The rows of `acts` selected by the mask `rows`, in a seeded random order, written to `out` (.npy)."""
    idx = np.flatnonzero(rows)
    idx = idx[np.random.default_rng(seed).permutation(idx.size)]
    dst = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(idx.size, acts.shape[1]))
    for s in range(0, idx.size, block):
        part = idx[s:s + block]
        o = np.argsort(part)
        dst[s + o] = np.asarray(acts[part[o]], np.float32)  # read in file order, write in sample order
    dst.flush()
    return np.load(out, mmap_mode="r")


def train_heldout(acts: np.ndarray, cells: np.ndarray, cfg: TrainConfig, scratch: Path, where: str = "activations",
                  log: Callable[[str], None] | None = None) -> tuple[TopKSAE, dict]:
    """`atlas sae train` on an activations folder: hold out cells, train on the others shuffled, evaluate."""
    if len(acts) == 0:
        raise AtlasError(f"{where}: the layer has no tokens")
    held = split_cells(cells, cfg.holdout, cfg.seed)
    if (~held).sum() == 0:
        raise AtlasError(f"{where}: no training tokens left after holding out cells")
    sample = shuffled_rows(acts, ~held, Path(scratch) / "train.npy", cfg.seed)
    sae, metrics = train(sample, cfg, where, log)
    metrics.update(evaluate(sae, acts, held, cfg.block))
    metrics.update(heldout_tokens=int(held.sum()), heldout_cells=int(np.unique(cells[held]).size))
    return sae, metrics


def train_folder(activations: Path, layer: int, out: Path, cfg: TrainConfig,
                 log: Callable[[str], None] | None = None) -> tuple[TopKSAE, dict]:
    """`atlas sae train`: an SAE trained on one layer of an activations folder of `atlas extract` (cells held out
    by cfg.holdout, train_heldout), saved to `out` in the SAELens layout; (the SAE, its training and held-out
    metrics). The layer, its cells (tokens.parquet) and k against the SAE's width are checked first."""
    import tempfile

    from ...fsutil import read_parquet
    from ..model.extract import read_activations

    activations, out = Path(activations), Path(out)
    acts, record = read_activations(activations, layer)
    width = acts.shape[1]
    if cfg.k > cfg.expansion * width:
        raise AtlasError(f"--k {cfg.k}: more than the SAE's {cfg.expansion * width} features "
                         f"(--expansion {cfg.expansion} x width {width})")
    cells = read_parquet(activations / "tokens.parquet", columns=["cell"])["cell"].to_numpy()
    if len(cells) != len(acts):
        raise AtlasError(f"{activations}/tokens.parquet: {len(cells)} rows for {len(acts)} activation rows")
    with tempfile.TemporaryDirectory(prefix=".sae-train-", dir=out.parent if out.parent.is_dir() else None) as scratch:
        model, metrics = train_heldout(acts, cells, cfg, Path(scratch), where=f"{activations}/layer {layer}", log=log)
    model.save(out, {"layer": layer, "model_name": record["model"]["name"], "hook_name": f"layer {layer} residual",
                     "activations": str(activations), "training": metrics})
    return model, metrics


@torch.no_grad()
def evaluate(sae: TopKSAE, acts: np.ndarray, rows: np.ndarray, block: int = 65_536) -> dict:
    """Variance explained, L0 and dead features over `rows` (a boolean mask), streamed in blocks."""
    n_rows = int(rows.sum())
    if n_rows == 0:
        return {"variance_explained": None, "l0": None, "dead_features": None}
    sse, s1, s2 = 0.0, np.zeros(sae.d_in), 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    l0 = 0
    for s, e in _blocks(len(acts), block):
        x = torch.from_numpy(np.asarray(acts[s:e], dtype=np.float32)[rows[s:e]])
        if len(x) == 0:
            continue
        v, i = sae.encode(x)
        sse += float((x - sae.decode(v, i)).double().pow(2).sum())
        s1 += x.double().sum(0).numpy()
        s2 += float(x.double().pow(2).sum())
        fired[i[v > 0]] = True
        l0 += int((v > 0).sum())
    sst = s2 - float((s1 ** 2).sum()) / n_rows  # sum of squares about the held-out mean
    return {"variance_explained": 1 - sse / sst if sst > 0 else None, "l0": l0 / n_rows,
            "dead_features": int((~fired).sum()), "dead_fraction": float((~fired).float().mean())}
