"""Training a TopK SAE (topk.py) on activations streamed from disk, and evaluating it on held-out cells.

The training sample (already globally shuffled) loses its last `val_tokens` rows to a validation set. Each epoch
visits the rest in blocks, in a fresh seeded order, shuffled within the block; the decoder rows are renormalised to
unit norm after every step; AuxK (Gao et al. 2024) revives dead features. Every `eval_every` steps the loss on the
validation set is measured; training stops when `patience` measurements in a row improve its best value by less
than `min_delta` (relative), or after `epochs` passes, whichever comes first. The record keeps the curve, why it
stopped, and how far each decoder row moved from its initial direction (a feature still near its random start
describes the initialisation, not the model).
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
    epochs: int = 5          # at most this many passes over the training tokens (the convergence rule stops first)
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
    # The convergence rule (module docstring): validation loss every eval_every steps on val_tokens tokens set aside
    # from the sample (at most a tenth of it); stop after `patience` measurements without a relative gain of
    # min_delta over the best, or after `epochs` passes.
    eval_every: int = 100
    patience: int = 3
    min_delta: float = 0.01
    val_tokens: int = 16_384


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


def sample_mean(sample: np.ndarray, block: int, where: str) -> np.ndarray:
    total, bad = np.zeros(sample.shape[1]), 0
    for s, e in _blocks(len(sample), block):
        x = np.asarray(sample[s:e], dtype=np.float64)
        bad += n_nonfinite(x)
        total += x.sum(axis=0)
    if bad:
        raise AtlasError(f"{where}: {bad} NaN or infinite activation values; refusing to train on them")
    return total / len(sample)


def layer_seed(seed: int, layer: int, draw: int = 1) -> int:
    """The seed of one layer's SAE (draw 1): every layer starts from its own random dictionary. Draw 2 gives the
    second random dictionary of the random_dictionary baseline."""
    return int(np.random.SeedSequence([seed, layer, draw]).generate_state(1)[0])


def initial_sae(d: int, cfg: TrainConfig, mean: np.ndarray | None, seed: int) -> TopKSAE:
    """The SAE before training: unit decoder rows drawn at random, the encoder tied to them (Gao et al. 2024), the
    decoder bias at the data mean. Also the random_dictionary baseline (the same weights, never trained)."""
    torch.manual_seed(seed)
    d_sae = cfg.expansion * d
    sae = TopKSAE(d, d_sae, cfg.k, apply_b_dec_to_input=cfg.centering != "none")
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(d_sae, d))
        sae.normalise_decoder()
        sae.W_enc.copy_(sae.W_dec.T)
        if mean is not None:
            sae.b_dec.copy_(torch.as_tensor(mean, dtype=torch.float32))
    return sae


def train(sample: np.ndarray, cfg: TrainConfig, where: str = "activations",
          log: Callable[[str], None] | None = None, start: TopKSAE | None = None) -> tuple[TopKSAE, dict]:
    """Train on `sample` (tokens x width, e.g. a memmap; already globally shuffled, held-out cells excluded) until the
    convergence rule stops it (module docstring), from `start` (default: initial_sae, trained in place). Returns the
    SAE and its training record."""
    n, d = sample.shape
    if n == 0:
        raise AtlasError(f"{where}: no training tokens")
    if cfg.centering not in ("pre-bias", "mean", "none"):
        raise AtlasError(f"--centering {cfg.centering!r}: expected pre-bias, mean or none")
    n_val = min(cfg.val_tokens, n // 10)
    n_train = n - n_val
    if n_train == 0:
        raise AtlasError(f"{where}: no training tokens")
    rng = np.random.default_rng(cfg.seed)
    sae = start if start is not None else initial_sae(d, cfg, sample_mean(sample, cfg.block, where), cfg.seed)
    initial = sae.W_dec.detach().clone()
    if cfg.centering == "mean":
        sae.b_dec.requires_grad_(False)
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=cfg.lr)
    state = {"since": torch.zeros(sae.d_sae, dtype=torch.long), "window": dead_window(cfg, n_train),
             "aux_k": cfg.aux_k or d // 2}
    val = torch.from_numpy(np.array(sample[n_train:], dtype=np.float32)) if n_val else None
    steps, losses, curve, best, stale, stopped = 0, [], [], np.inf, 0, None
    for epoch in range(cfg.epochs):
        for s, e in _blocks(n_train, cfg.block, rng):
            block = np.asarray(sample[s:e], dtype=np.float32)
            block = block[rng.permutation(len(block))]
            for b in range(0, len(block), cfg.batch_size):
                losses.append(_step(sae, opt, torch.from_numpy(block[b : b + cfg.batch_size]), cfg, state))
                steps += 1
                if val is not None and steps % cfg.eval_every == 0:
                    point = _measure(sae, val, steps, losses[-cfg.eval_every:])
                    curve.append(point)
                    if point["val_loss"] < best * (1 - cfg.min_delta):
                        best, stale = point["val_loss"], 0
                    else:
                        stale += 1
                    if stale >= cfg.patience:
                        stopped = f"converged: {cfg.patience} measurements without a {cfg.min_delta:g} relative gain"
                        break
            if stopped:
                break
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses[-max(1, steps // (epoch + 1)):]):.4f}")
        if stopped:
            break
    if val is not None and (not curve or curve[-1]["step"] != steps):
        curve.append(_measure(sae, val, steps, losses[-(steps % cfg.eval_every or cfg.eval_every):]))
    cos = (sae.W_dec.detach() * initial).sum(1).numpy().astype(np.float64)  # unit rows: the cosine to the start
    return sae, {"steps": steps, "epochs": epoch + 1, "train_tokens": int(n_train), "val_tokens": int(n_val),
                 "stopped": stopped or f"cap: {cfg.epochs} epoch(s)", "curve": curve,
                 "decoder_init_cosine": {"mean": float(cos.mean()), "median": float(np.median(cos)),
                                         "share_above_0.9": float((cos > 0.9).mean())},
                 "dead_window": state["window"], "config": asdict(cfg)}


@torch.no_grad()
def _measure(sae: TopKSAE, val: torch.Tensor, step: int, recent: list[float]) -> dict:
    """The validation loss (the training objective without AuxK: squared error over the total variance) and the
    features that never fire on the validation tokens, after `step` steps."""
    values, indices = torch.topk(sae.pre_acts(val), sae.k, dim=-1, sorted=False)
    values = F.relu(values)
    err = val - _decode(sae, values, indices)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    fired[indices[values > 0]] = True
    loss = float(err.pow(2).sum() / (val - val.mean(0)).pow(2).sum().clamp_min(1e-12))
    return {"step": step, "train_loss": float(np.mean(recent)) if recent else None, "val_loss": loss,
            "val_dead": int((~fired).sum())}


def _decode(sae: TopKSAE, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """decode() through a dense codes matrix: two GEMMs (forward and backward) instead of gathering k decoder rows
    per token and scattering their gradients back, several times faster on a CPU."""
    z = torch.zeros(values.shape[0], sae.d_sae, dtype=values.dtype).scatter(1, indices, values)
    return z @ sae.W_dec + sae.b_dec


def _step(sae: TopKSAE, opt, x: torch.Tensor, cfg: TrainConfig, state: dict) -> float:
    pre = sae.pre_acts(x)
    values, indices = torch.topk(pre, cfg.k, dim=-1, sorted=False)  # the set of the k largest; order unused
    values = F.relu(values)
    err = x - _decode(sae, values, indices)
    loss = err.pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    fired[indices[values > 0]] = True
    state["since"] = torch.where(fired, 0, state["since"] + len(x))
    dead = state["since"] >= state["window"]
    if cfg.aux_coef > 0 and dead.any():
        # AuxK: the dead features' largest pre-activations try to explain what the live ones missed.
        kk = min(state["aux_k"], int(dead.sum()))
        av, ai = torch.topk(pre.masked_fill(~dead, -torch.inf), kk, dim=-1, sorted=False)
        e_hat = _decode(sae, F.relu(av), ai) - sae.b_dec
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
