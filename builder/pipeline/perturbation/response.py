"""The perturbation response (`atlas perturb`): an atlas' model and SAEs run over a Perturb-seq .h5ad.

1. Design: cells of obs[perturbation_column]; `control` marks the controls. Perturbations with fewer than
   min_cells cells are skipped and listed (a dataset where none qualifies is refused). With a batch column, a
   perturbation is compared with the controls of its own batches only, and its cells in batches without a
   control are left out. With on_target > 0 (select_on_target), only cells with on-target knockdown are kept
   (D2): those whose perturbed gene's CP10k is at or below the on_target quantile of the controls'. The same rule
   selects the controls P is compared with: selecting perturbed cells alone by their expression selects a cell
   state (on the synthetic screen, pseudo-perturbations so selected reach a false-positive rate of 0.2), while
   one rule on both sides keeps the groups exchangeable when the knockdown does nothing.
2. Cell-level summaries per feature of every layer: mean activation over the cell's gene positions (0 where the
   feature does not fire) and the fraction of positions where it fires. The knocked-down gene's own token must
   not create an effect (research/perturbation.md D2): perturbation P is compared with controls on inputs
   tokenized *without P's gene on both sides*. Controls are encoded once with every gene; the controls in which
   P's gene has counts are encoded again without it, for P only.
3. Per perturbation x feature: effect with interval, p, BH q within the perturbation (perturb_stats.compare).
   Pseudo-perturbations: random control subsets of the perturbation's size (and batch make-up), held apart from
   the remaining controls they are compared with, through the same test.
4. Per TF (a perturbation that regulates targets in the TRRUST file): gene scores = the responding features'
   loadings (mean activation per gene over the control cells, each feature scaled to a maximum of 1, summed);
   curated targets among the top_genes genes, universe = genes detected in >= min_expressed of the analysed
   cells that the model has a token for (the TF itself left out); the ceiling = the same test on the genes
   ranked by expression DE (log1p CP10k) of the same cells; BH across TFs. Negative control: every non-TF
   perturbation through the same path, tested against the targets of the TF nearest to it in cell count and
   knockdown efficiency; BH across them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ...errors import AtlasError
from ...models import stream
from ...models.dataset import Dataset
from . import stats as ps
from ..annotation.genesets import normalise_gene
from .stats import PerturbConfig

PSEUDO_STREAM, CONTROL_STREAM = 0x5053, 0x4354  # separate the pseudo-perturbation and control draws


@dataclass
class Design:
    path: str
    column: str
    control: str
    batch_column: str | None
    controls: np.ndarray            # dataset rows of the control cells used
    groups: dict[str, np.ndarray]   # perturbation -> dataset rows (qualifying perturbations only)
    skipped: dict[str, int]         # perturbation -> cells, below min_cells after the batch rule
    batch: np.ndarray | None        # batch label per dataset row
    thresholds: dict[str, float] = field(default_factory=dict)  # perturbation -> on-target CP10k cut-off
    kd: dict[str, float | None] = field(default_factory=dict)   # perturbation -> knockdown before the selection
    on_target: dict[str, dict] = field(default_factory=dict)    # perturbation -> kept, removed, threshold


def _column(dataset: Dataset, name: str, option: str) -> pd.Series:
    if name not in dataset.obs.columns:
        have = ", ".join(map(str, dataset.obs.columns)) or "none"
        raise AtlasError(f"{dataset.path}: obs has no column {name!r} ({option}; has: {have})")
    return dataset.obs[name]


def read_design(dataset: Dataset, column: str, control: str, batch_column: str | None, cfg: PerturbConfig) -> Design:
    labels = _column(dataset, column, "--perturbation-column")
    text = labels.astype(object).where(labels.notna(), None).map(lambda v: None if v is None else str(v)).to_numpy()
    batch = None
    if batch_column:
        b = _column(dataset, batch_column, "--batch-column")
        batch = b.astype(str).where(b.notna(), "").to_numpy()
    controls = np.flatnonzero(text == control)
    if controls.size == 0:
        values = sorted({v for v in text if v is not None})
        raise AtlasError(f"--control {control!r}: no cell of {dataset.path} has this value in obs[{column!r}] "
                         f"(values: {', '.join(values[:8])}{', ...' if len(values) > 8 else ''})")
    if cfg.max_controls and controls.size > cfg.max_controls:
        rng = np.random.default_rng([cfg.seed, CONTROL_STREAM])
        controls = np.sort(rng.choice(controls, cfg.max_controls, replace=False))
    if controls.size < cfg.min_cells:
        raise AtlasError(f"--control {control!r}: {controls.size} control cells, fewer than --min-cells "
                         f"{cfg.min_cells}")
    groups, skipped = {}, {}
    for name in sorted({v for v in text if v is not None and v != control}):
        rows = np.flatnonzero(text == name)
        if batch is not None:  # only batches that hold controls can be compared
            rows = rows[np.isin(batch[rows], batch[controls])]
        if rows.size >= cfg.min_cells:
            groups[name] = rows
        else:
            skipped[name] = int(rows.size)
    if not groups:
        big = max(skipped.items(), key=lambda kv: (kv[1], kv[0])) if skipped else ("none", 0)
        raise AtlasError(f"--min-cells {cfg.min_cells}: no perturbation in obs[{column!r}] has that many cells"
                         + (" in batches with controls" if batch is not None else "")
                         + f" (largest: {big[0]} with {big[1]})")
    return Design(str(dataset.path), column, control, batch_column, controls, groups, skipped, batch)


def cp10k(dataset: Dataset, cells: np.ndarray) -> sp.csr_matrix:
    """Counts per 10,000 of each cell's total, (cells, var rows), in `cells` order."""
    counts = sp.vstack([dataset.counts[int(c)] for c in cells]).tocsr()
    return (sp.diags(1e4 / np.maximum(dataset.total_counts()[cells], 1e-12)) @ counts).tocsr()


def select_on_target(dataset: Dataset, design: Design, index: dict[str, np.ndarray], cfg: PerturbConfig) -> Design:
    """Keep the cells with on-target knockdown: the perturbed gene's CP10k at or below the cfg.on_target quantile of
    the controls' (the controls of its batches); test_perturbation applies the same cut-off to those controls. A
    perturbation whose gene the data does not measure keeps every cell; one left with fewer than min_cells
    perturbed or control cells is skipped. Recorded per perturbation in design.on_target; the knockdown efficiency
    is that of every cell, before the selection."""
    if not cfg.on_target:
        return design
    analysed = np.unique(np.concatenate([design.controls, *design.groups.values()]))
    level = cp10k(dataset, analysed).tocsc()  # read once; a gene's (summed) CP10k in given cells below

    def at(cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.asarray(level[:, rows][np.searchsorted(analysed, cells)].sum(1)).ravel()

    groups, skipped, thresholds, kd, record = {}, dict(design.skipped), {}, {}, {}
    for name, cells in design.groups.items():
        rows = index.get(name.upper(), np.zeros(0, np.int64))
        if not rows.size:
            groups[name] = cells
            record[name] = {"kept": int(cells.size), "removed": 0, "controls": None, "threshold": None}
            continue
        ctrl = design.controls
        if design.batch is not None:
            ctrl = ctrl[np.isin(design.batch[ctrl], design.batch[cells])]
        vc, vp = at(ctrl, rows), at(cells, rows)
        thr = float(np.quantile(vc, cfg.on_target))
        kept, under = cells[vp <= thr], ctrl[vc <= thr]
        if design.batch is not None:  # as before the cut-off: only batches that hold (kept) controls
            kept = kept[np.isin(design.batch[kept], design.batch[under])]
            under = under[np.isin(design.batch[under], design.batch[kept])]
        n_ctrl = int(under.size)
        record[name] = {"kept": int(kept.size), "removed": int(cells.size - kept.size), "controls": n_ctrl,
                        "threshold": thr}
        if kept.size >= cfg.min_cells and n_ctrl >= cfg.min_cells:
            groups[name], thresholds[name], kd[name] = kept, thr, ps.kd_efficiency(vp, vc)
        else:
            skipped[name] = int(kept.size)
    if not groups:
        raise AtlasError(f"--on-target {cfg.on_target:g}: no perturbation keeps --min-cells {cfg.min_cells} perturbed "
                         f"and control cells with its gene at or below the cut-off in {design.path}")
    return replace(design, groups=groups, skipped=skipped, thresholds=thresholds, kd=kd, on_target=record)


def gene_columns(dataset: Dataset) -> dict[str, np.ndarray]:
    """Upper-cased gene symbol -> var rows, from every text column of var and its index (Ensembl ids through the
    bundled GENCODE map), so a perturbation named by its symbol finds a gene given by Ensembl id."""
    out: dict[str, set[int]] = {}
    cols = [dataset.var.index.to_numpy().astype(str)]
    cols += [dataset.var[c].astype(str).to_numpy() for c in dataset.var.columns
             if dataset.var[c].dtype == object or isinstance(dataset.var[c].dtype, pd.CategoricalDtype)]
    for values in cols:
        for j, v in enumerate(values):
            sym = normalise_gene(v)
            if sym:
                out.setdefault(sym, set()).add(j)
    return {k: np.array(sorted(v), np.int64) for k, v in out.items()}


def token_symbols(adapter, tokens: np.ndarray) -> list[str | None]:
    """The symbol of each token id (Geneformer's Ensembl ids through GENCODE), as TRRUST names genes."""
    return [normalise_gene(str(adapter.gene_names.get(int(t), ""))) for t in tokens]


class Encoder:
    """Runs the model and the SAEs over cells; returns per-cell feature summaries (and control loadings)."""

    def __init__(self, adapter, prepared, saes: dict, layers: list[int], batch_size: int = 1, device=None,
                 memo: bool = False):
        self.adapter, self.prepared, self.saes, self.layers = adapter, prepared, saes, layers
        # memo: keep every cell's summaries per dropped gene, so repeated runs on one dataset (the tests, the
        # benchmark) encode each cell once; off for the command, where each input is encoded once anyway.
        self.memo: dict | None = {} if memo else None
        self.batch_size, self.device = batch_size, device
        self.width = {L: saes[L].d_sae for L in layers}
        self.offset = dict(zip(layers, np.cumsum([0] + [self.width[L] for L in layers[:-1]]).tolist()))
        self.n_features = sum(self.width.values())
        self.layer_of = np.concatenate([np.full(self.width[L], L, np.int64) for L in layers])
        self.feature_of = np.concatenate([np.arange(self.width[L], dtype=np.int64) for L in layers])
        self.n_tokens = int(max(prepared.token_of_gene.max(), 0)) + 1

    def without(self, tokens: np.ndarray):
        """The prepared dataset with these token ids left out of every cell's input."""
        tog = self.prepared.token_of_gene.copy()
        tog[np.isin(tog, tokens)] = -1
        return replace(self.prepared, token_of_gene=tog)

    @torch.no_grad()
    def summarise(self, cells: np.ndarray, drop: np.ndarray | None = None, loadings: bool = False):
        """(mean activation, active fraction), each (cells, all features) float32 in `cells` order; with
        `loadings`, per layer a (features, tokens) CSR of summed activations and the positions per token."""
        cells = np.asarray(cells, np.int64)
        drop = np.zeros(0, np.int64) if drop is None else np.asarray(drop, np.int64)
        if self.memo is not None:
            return self._memo(cells, drop, loadings)
        return self._summarise(cells, drop, loadings)

    def _memo(self, cells: np.ndarray, drop: np.ndarray, loadings: bool):
        if loadings:
            key = ("loadings", cells.tobytes(), drop.tobytes())
            if key not in self.memo:
                self.memo[key] = self._summarise(cells, drop, True)
            return self.memo[key]
        store = self.memo.setdefault(drop.tobytes(), {})
        todo = np.array([c for c in cells if int(c) not in store], np.int64)
        if todo.size:
            m, a, _ = self._summarise(todo, drop, False)
            store.update({int(c): (m[r], a[r]) for r, c in enumerate(todo)})
        rows = [store[int(c)] for c in cells]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), None

    def _summarise(self, cells: np.ndarray, drop: np.ndarray, loadings: bool):
        prepared = self.prepared if drop.size == 0 else self.without(drop)
        row_of = {int(c): r for r, c in enumerate(cells)}
        mean = np.zeros((cells.size, self.n_features), np.float32)
        active = np.zeros_like(mean)
        parts: dict[int, list] = {L: [] for L in self.layers}
        positions = np.zeros(self.n_tokens, np.int64)
        for chunk in stream(self.adapter, prepared, self.layers, self.batch_size, self.device, cells):
            if chunk.cells.size == 0:
                continue
            rows, local = np.unique([row_of[int(c)] for c in chunk.cells], return_inverse=True)
            n_pos = np.bincount(local, minlength=rows.size).astype(np.float64)[:, None]
            if loadings:
                positions += np.bincount(chunk.genes, minlength=self.n_tokens)
            for L in self.layers:
                v, i = self.saes[L].encode(torch.from_numpy(chunk.acts[L]))
                v, i = v.numpy(), i.numpy().astype(np.int64)
                on = v > 0
                f, a = i[on], v[on].astype(np.float64)
                idx = np.broadcast_to(local[:, None], v.shape)[on] * self.width[L] + f
                size = rows.size * self.width[L]
                cols = slice(self.offset[L], self.offset[L] + self.width[L])
                mean[rows, cols] = np.bincount(idx, a, size).reshape(rows.size, -1) / n_pos
                active[rows, cols] = np.bincount(idx, minlength=size).reshape(rows.size, -1) / n_pos
                if loadings:
                    parts[L].append((a, f, np.broadcast_to(chunk.genes[:, None], v.shape)[on]))
        if not loadings:
            return mean, active, None
        load = {}
        for L in self.layers:
            if parts[L]:
                a, f, g = (np.concatenate(x) for x in zip(*parts[L]))
            else:
                a, f, g = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
            load[L] = sp.csr_matrix((a, (f, g)), shape=(self.width[L], self.n_tokens))  # duplicates are summed
        return mean, active, (load, positions)


@dataclass
class Expression:
    """Normalised expression of the analysed cells, per model token (CP10k), and the universe of genes."""

    cells: np.ndarray        # dataset rows, ascending
    tokens: sp.csr_matrix    # (cells, model tokens) CP10k summed over the var rows of each token
    genes: sp.csr_matrix     # (cells, var rows) CP10k, for knockdown of genes the model may not know
    universe: np.ndarray     # token ids detected in >= min_expressed of the cells
    symbols: np.ndarray      # symbol (or None) per universe token

    def rows(self, cells: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cells, cells)


def expression(dataset: Dataset, cells: np.ndarray, enc: Encoder, min_expressed: float) -> Expression:
    cells = np.unique(cells)
    genes = cp10k(dataset, cells)
    tog = enc.prepared.token_of_gene
    known = np.flatnonzero(tog >= 0)
    to_token = sp.csr_matrix((np.ones(known.size), (known, tog[known])), shape=(tog.size, enc.n_tokens))
    tokens = (genes @ to_token).tocsr()
    detected = np.asarray((tokens > 0).sum(0)).ravel() / max(cells.size, 1)
    universe = np.flatnonzero((detected >= min_expressed) & (detected > 0))
    symbols = np.array(token_symbols(enc.adapter, universe), dtype=object)
    return Expression(cells, tokens, genes, universe, symbols)


def pseudo_draw(ctrl: np.ndarray, batch_p, batch_c, n: int, rng) -> np.ndarray | None:
    """Positions (into ctrl) of a random control subset of size n, with the perturbation's batch make-up when
    batches are given; None when the controls cannot spare it (at least 2 must remain per batch)."""
    if batch_p is None:
        return np.sort(rng.choice(ctrl.size, n, replace=False)) if ctrl.size - n >= 2 else None
    picked = []
    for b, k in zip(*np.unique(batch_p, return_counts=True)):
        pool = np.flatnonzero(batch_c == b)
        if pool.size - k < 2:
            return None
        picked.append(rng.choice(pool, k, replace=False))
    return np.sort(np.concatenate(picked))


@dataclass
class Result:
    """One perturbation's tests: the feature test, the expression DE and its pseudo-perturbations."""

    name: str
    n_pert: int
    n_ctrl: int
    drop: np.ndarray         # token ids left out of both sides
    features: dict           # perturb_stats.compare over every feature (+ active_pert, active_ctrl)
    de: dict                 # perturb_stats.compare over the universe genes
    kd: float | None
    pseudo: list[dict]       # per pseudo-perturbation: tests, p below alpha, responding


def test_perturbation(enc: Encoder, design: Design, expr: Expression, base: tuple, name: str, k: int,
                      gene_rows: np.ndarray, cfg: PerturbConfig, drop_gene: bool = True) -> Result:
    cells = design.groups[name]
    drop = np.unique(enc.prepared.token_of_gene[gene_rows]) if drop_gene else np.zeros(0, np.int64)
    drop = drop[drop >= 0]
    ctrl = design.controls
    if design.batch is not None:
        ctrl = ctrl[np.isin(design.batch[ctrl], design.batch[cells])]
    if name in design.thresholds:  # the on-target rule selects the controls too
        level = np.asarray(expr.genes[expr.rows(ctrl)][:, gene_rows].sum(1)).ravel()
        ctrl = ctrl[level <= design.thresholds[name] * (1 + 1e-9)]  # the same CP10k, summed in another order
    pos = np.searchsorted(design.controls, ctrl)
    cm, ca = base[0][pos], base[1][pos]
    if drop.size:  # controls whose input held the gene: encode them again without it
        redo = np.flatnonzero(np.asarray(expr.tokens[expr.rows(ctrl)][:, drop].sum(1)).ravel() > 0)
        if redo.size:
            cm[redo], ca[redo], _ = enc.summarise(ctrl[redo], drop)
    pm, pa, _ = enc.summarise(cells, drop)
    b1, b0 = (design.batch[cells], design.batch[ctrl]) if design.batch is not None else (None, None)
    feats = ps.compare(pm, cm, b1, b0, cfg.level)
    feats["active_pert"], feats["active_ctrl"] = pa.mean(0, dtype=np.float64), ca.mean(0, dtype=np.float64)
    pseudo = []
    for r in range(cfg.pseudo):
        sel = pseudo_draw(ctrl, b1, b0, cells.size, np.random.default_rng([cfg.seed, PSEUDO_STREAM, k, r]))
        if sel is None:
            continue
        rest = np.setdiff1d(np.arange(ctrl.size), sel)
        t = ps.compare(cm[sel], cm[rest], None if b0 is None else b0[sel], None if b0 is None else b0[rest], cfg.level)
        pseudo.append({"tests": int(t["tested"].sum()), "below_alpha": int((t["p"][t["tested"]] < cfg.alpha).sum()),
                       "responding": int((t["q"][t["tested"]] < cfg.alpha).sum())})
    U = expr.universe
    x1 = np.log1p(expr.tokens[expr.rows(cells)][:, U].toarray())
    x0 = np.log1p(expr.tokens[expr.rows(ctrl)][:, U].toarray())
    de = ps.compare(x1, x0, b1, b0, cfg.level)
    kd = design.kd.get(name)
    if gene_rows.size and name not in design.kd:
        g = expr.genes[:, gene_rows]
        kd = ps.kd_efficiency(np.asarray(g[expr.rows(cells)].sum(1)).ravel(),
                              np.asarray(g[expr.rows(ctrl)].sum(1)).ravel())
    return Result(name, int(cells.size), int(ctrl.size), drop, feats, de, kd, pseudo)


def response_rows(enc: Encoder, res: Result, dataset: str, cfg: PerturbConfig) -> list[dict]:
    """Rows of perturbation_response: every responding feature (q < alpha) and the `keep` largest |effect| of each
    layer; rank = by |effect| within the perturbation and layer (tested features only)."""
    f = res.features
    out = []
    for L in enc.layers:
        cols = np.flatnonzero((enc.layer_of == L) & f["tested"])
        order = cols[np.lexsort((cols, -np.abs(f["effect"][cols])))]
        for rank, c in enumerate(order, 1):
            if rank > cfg.keep and not f["q"][c] < cfg.alpha:
                continue
            out.append({"dataset": dataset, "perturbation": res.name, "layer": int(L),
                        "feature": int(enc.feature_of[c]),
                        "effect": float(f["effect"][c]), "ci_lo": float(f["lo"][c]), "ci_hi": float(f["hi"][c]),
                        "p": float(f["p"][c]), "q": float(f["q"][c]), "n_pert": res.n_pert, "n_ctrl": res.n_ctrl,
                        "rank": rank, "mean_pert": float(f["mean_pert"][c]), "mean_ctrl": float(f["mean_ctrl"][c]),
                        "active_pert": float(f["active_pert"][c]), "active_ctrl": float(f["active_ctrl"][c])})
    return out
