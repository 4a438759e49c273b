"""Patching SAE features in one cell: masked readouts, attribution (gradient x delta) and exact interventions.

A cell is run with `draws` seeded mask draws at once (a batch of D copies), masked as in pretraining: Geneformer
replaces the gene token by <mask> and reads log p(true gene) from the masked-LM head; scGPT replaces the value
by its mask value and reads the predicted expression from the expression decoder. The readout is taken only at
masked positions: at an unmasked one the model sees the answer.

An intervention on layer L adds delta = -a_f(t) * u at every gene position t where feature f fires (a_f(t) > 0
among the top k), with u = the feature's decoder direction (ablation: the SAE error and every other feature are
kept) or a random direction of the same norm (the null). The rest of the model runs from the patched output of
layer L (adapter.final_hidden).

Attribution: the first-order change of the pretraining objective (sum of log p(true gene), or minus the squared
error of the predicted values) for every feature at once: sum over t of grad_t . delta_f(t), one forward and
one backward per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import AtlasError

MASK_STREAM = 0x4D41  # separates the mask draws of a cell from its other random draws


def check_head(adapter) -> None:
    if getattr(adapter, "head_problem", None):  # a head, but not a whole one: name its missing keys
        raise AtlasError(f"{adapter.head_problem}; interventions read the model's prediction, so they need the "
                         f"whole head")
    if not getattr(adapter, "has_head", False):
        what = "masked-LM head (cls.predictions.*)" if adapter.family == "geneformer" else "expression decoder (decoder.fc.*)"
        raise AtlasError(f"{adapter.name}: the checkpoint has no {what}; interventions read the model's prediction, "
                         f"so they need a checkpoint with its head")


@dataclass
class CellPass:
    batch: dict               # D masked copies of the cell
    hidden: torch.Tensor      # (D, T, d) output of layer L on the masked inputs
    gene_pos: torch.Tensor    # (T,) True at gene tokens
    masked: torch.Tensor      # (D, T) True at masked positions
    target: torch.Tensor      # (M,) true token id (Geneformer) or true value (scGPT) per masked position
    genes: np.ndarray         # (M,) token id of each masked position
    clean: torch.Tensor       # (M,) clean readout: log p(true gene) or predicted value
    clean_logp: torch.Tensor | None  # (M, V) clean log-probabilities (Geneformer, for the KL)
    metric: float             # clean objective, summed over the draws
    values: torch.Tensor      # (D*G, k) SAE codes at the gene positions
    indices: torch.Tensor
    grad: torch.Tensor | None = None  # (D, T, d) gradient of the objective at layer L

    @property
    def draws(self) -> int:
        return self.hidden.shape[0]


def mask_draws(gene_pos: np.ndarray, draws: int, rate: float, seed, cell: int) -> np.ndarray:
    """(draws, T) masks: round(rate x gene tokens) gene positions (at least 1) per draw, seeded by (seed, cell, draw)."""
    where = np.flatnonzero(gene_pos)
    m = max(1, int(round(rate * where.size)))
    out = np.zeros((draws, gene_pos.size), bool)
    for d in range(draws):
        rng = np.random.default_rng([int(seed), MASK_STREAM, int(cell), d])
        out[d, rng.choice(where, m, replace=False)] = True
    return out


def readout(adapter, batch: dict, layer: int, hidden: torch.Tensor, masked: torch.Tensor, target: torch.Tensor):
    """(value per masked position, log-probabilities or None, objective) with `hidden` as the output of `layer`.
    The head runs only at masked positions (Geneformer's vocabulary makes full logits large)."""
    out = adapter.predict_at(batch, masked, layer, hidden)
    if adapter.family == "geneformer":
        logp = F.log_softmax(out.float(), dim=-1)
        value = logp.gather(1, target[:, None]).squeeze(1)
        return value, logp, value.sum()
    value = out.float()
    return value, None, -((value - target) ** 2).sum()


def _expand(batch: dict, n: int) -> dict:
    return {k: v.expand(n, *v.shape[1:]).clone() if v.shape[0] == 1 else v.repeat(n, *[1] * (v.dim() - 1))
            for k, v in batch.items()}


def prepare_cell(adapter, prepared, cell: int, layer: int, sae, draws: int, rate: float, seed,
                 grad: bool) -> CellPass | None:
    """Tokenize, mask, run to layer L, read the clean prediction (with its gradient at layer L when `grad`) and
    encode layer L with the SAE. None for a cell with fewer than 2 gene tokens."""
    base = adapter.collate([adapter.tokenize(prepared, cell)])
    gene_pos = adapter.maskable(base)[0]
    if int(gene_pos.sum()) < 2:
        return None
    masked = torch.from_numpy(mask_draws(gene_pos.numpy(), draws, rate, seed, cell))
    batch = adapter.mask_inputs(_expand(base, draws), masked)
    ids = base["input_ids"].expand(draws, -1)
    if adapter.family == "geneformer":
        target = ids[masked]
    else:
        target = base["values"].expand(draws, -1)[masked].float()
    with torch.no_grad():
        hidden = adapter.layer_outputs(batch, [layer])[layer].detach().float()
    h = hidden.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        value, logp, metric = readout(adapter, batch, layer, h, masked, target)
        if grad:
            metric.backward()
    x = hidden[:, gene_pos].reshape(-1, hidden.shape[-1])
    with torch.no_grad():
        v, i = sae.encode(x)
    return CellPass(batch, hidden, gene_pos, masked, target, ids[masked].numpy(), value.detach(),
                    None if logp is None else logp.detach(), float(metric.detach()), v, i,
                    h.grad if grad else None)


@torch.no_grad()
def attribution(cp: CellPass, sae) -> tuple[np.ndarray, np.ndarray]:
    """(first-order change of the objective per feature, averaged over the draws; fired: bool per feature)."""
    d = cp.hidden.shape[-1]
    g = cp.grad[:, cp.gene_pos].reshape(-1, d)  # (D*G, d)
    W = sae.decoder()
    proj = torch.einsum("rd,rkd->rk", g, W[cp.indices])  # grad . decoder row of each active slot
    on = cp.values > 0
    contrib = -(cp.values * proj)[on].double().numpy()
    feats = cp.indices[on].numpy().astype(np.int64)
    attr = np.bincount(feats, contrib, minlength=sae.d_sae) / cp.draws
    return attr, np.bincount(feats, minlength=sae.d_sae) > 0


def coefficients(cp: CellPass, feature: int) -> torch.Tensor:
    """(D*G,) activation of `feature` at each gene position (0 where it is not among the top k or not > 0)."""
    return torch.where((cp.indices == feature) & (cp.values > 0), cp.values, 0.0).sum(1)


@dataclass
class Effect:
    """One intervention in one cell: per-gene sums and counts of the readout change, and per-cell totals."""

    genes: np.ndarray    # distinct token ids of the masked positions
    sums: np.ndarray     # sum of the change per gene
    counts: np.ndarray   # masked positions per gene
    total: float         # mean KL (Geneformer) or mean |change| (scGPT) over the masked positions
    objective: float     # change of the objective, averaged over the draws


@torch.no_grad()
def patch(adapter, cp: CellPass, layer: int, directions: list[tuple[int, torch.Tensor]], batch: int = 8) -> list[Effect | None]:
    """Exact interventions: for each (feature, u), remove a_f(t) * u where the feature fires; None where it never
    fires in this cell (no intervention happens)."""
    D, G, d = cp.draws, int(cp.gene_pos.sum()), cp.hidden.shape[-1]
    out: list[Effect | None] = [None] * len(directions)
    todo = []
    for j, (f, u) in enumerate(directions):
        a = coefficients(cp, f)
        if bool((a > 0).any()):
            todo.append((j, -(a[:, None] * u[None, :]).reshape(D, G, d)))
    uniq, inv = np.unique(cp.genes, return_inverse=True)
    for s in range(0, len(todo), batch):
        part = todo[s:s + batch]
        n = len(part)
        hp = cp.hidden.repeat(n, 1, 1)
        for b, (_, delta) in enumerate(part):
            hp[b * D:(b + 1) * D, cp.gene_pos] += delta
        value, logp, _ = readout(adapter, _expand(cp.batch, n) if n > 1 else cp.batch, layer, hp,
                                 cp.masked.repeat(n, 1), cp.target.repeat(n))
        M = cp.clean.shape[0]
        for b, (j, _) in enumerate(part):
            change = (value[b * M:(b + 1) * M] - cp.clean).double().numpy()
            if logp is not None:
                lp = logp[b * M:(b + 1) * M]
                total = float((cp.clean_logp.exp() * (cp.clean_logp - lp)).sum(1).mean())
                objective = float(change.sum()) / D
            else:
                total = float(np.abs(change).mean())
                v = value[b * M:(b + 1) * M].double()
                t = cp.target.double()
                objective = float(-((v - t) ** 2).sum() + ((cp.clean.double() - t) ** 2).sum()) / D
            out[j] = Effect(uniq, np.bincount(inv, change, uniq.size), np.bincount(inv, minlength=uniq.size),
                            total, objective)
    return out
