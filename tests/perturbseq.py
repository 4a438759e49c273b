"""A synthetic Perturb-seq dataset made from the bundled PBMC counts, and a TRRUST-format file of its planted TFs.

Cells are bundled dendritic cells drawn with replacement and thinned (each count kept with probability 0.8), so
no two are equal. Perturbations (obs['gene']; controls are 'non-targeting'):
- SPI1 (a TF): its counts kept with probability 0.1, and its 30 planted targets' counts with probability 0.05;
- KLF6 (a TF): its counts kept with probability 0.1, targets untouched;
- two non-TF genes (NT): their counts kept with probability 0.1, nothing else changed;
- `extra` perturbations as given (gene -> keep probability), for the tests' own cases.
With `escape`, that share of each perturbation's cells escapes the knockdown (no planted change; obs['escaped']).
Batches (obs['batch']) b1 and b2 at random, independent of everything; with `confound`, perturbation CONF (a
non-TF knockdown of `confound`) is placed 85% in b2, the controls 85% in b1, and batch b2 has a technical shift
(60 genes kept with probability 0.05).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
COUNTS = ROOT / "atlas_data" / "inputs" / "pbmc68k_counts.h5ad"
TF_SHIFTED, TF_UNSHIFTED = "SPI1", "KLF6"
CONTROL = "non-targeting"
CELL_TYPE = "Dendritic"


def _source():
    """The bundled dendritic cells: one cell type, as a screen in one cell line (SPI1 is a myeloid TF)."""
    a = ad.read_h5ad(COUNTS)
    a = a[a.obs["cell_type"] == CELL_TYPE].copy()
    X = sp.csr_matrix(a.X, dtype=np.float64)
    return a, X, np.asarray((X > 0).mean(0)).ravel()


def planted_genes(seed: int = 0) -> dict:
    """The genes the dataset plants: TF targets, non-TF knockdowns, the batch-shifted genes."""
    a, _, det = _source()
    genes = a.var.index.to_numpy().astype(str)
    rng = np.random.default_rng(seed)
    busy = {TF_SHIFTED, TF_UNSHIFTED}
    common = [g for g, d in zip(genes, det) if d > 0.3 and g not in busy]
    picked = rng.permutation(common)
    nt = sorted(g for g, d in zip(genes, det) if 0.4 < d < 0.7 and g not in busy)[:2]
    pool = [g for g in picked if g not in nt]
    return {"targets": {TF_SHIFTED: sorted(pool[:30]), TF_UNSHIFTED: sorted(pool[30:60])}, "non_tf": nt,
            "batch_genes": sorted(pool[60:120])}


def write_trrust(path: Path, seed: int = 0) -> Path:
    rows = ["TF\tTarget\tMode\tPMID"]
    for tf, targets in planted_genes(seed)["targets"].items():
        rows += [f"{tf}\t{t}\tActivation\t{10000 + i}" for i, t in enumerate(targets)]
    Path(path).write_text("\n".join(rows) + "\n")
    return Path(path)


def make_perturbseq(path: Path, n_ctrl: int = 200, n_pert: int = 30, seed: int = 0, extra: dict | None = None,
                    confound: str | None = None, tfs: bool = True, escape: float = 0.0) -> Path:
    a, X, _ = _source()
    genes = list(a.var.index.astype(str))
    col = {g: i for i, g in enumerate(genes)}
    plan = planted_genes(seed)
    rng = np.random.default_rng([seed, 7])
    groups: list[tuple[str, int, dict]] = [(CONTROL, n_ctrl, {})]
    if tfs:
        groups += [(TF_SHIFTED, n_pert, {TF_SHIFTED: 0.1, **{t: 0.05 for t in plan["targets"][TF_SHIFTED]}}),
                   (TF_UNSHIFTED, n_pert, {TF_UNSHIFTED: 0.1})]
        groups += [(g, n_pert, {g: 0.1}) for g in plan["non_tf"]]
    groups += [(g, n_pert, {g: p}) for g, p in (extra or {}).items()]
    if confound:
        groups.append(("CONF", n_pert, {confound: 0.1}))
    blocks, labels, batches, escaped = [], [], [], []
    for name, n, keep in groups:
        src = rng.integers(0, X.shape[0], n)
        counts = X[src].toarray()
        factor = np.full(len(genes), 0.8)
        for g, p in keep.items():
            factor[col[g]] *= p
        if confound and name in ("CONF", CONTROL):
            b = np.where(rng.random(n) < 0.85, "b2" if name == "CONF" else "b1", "b1" if name == "CONF" else "b2")
        else:
            b = np.where(rng.random(n) < 0.5, "b1", "b2")
        f = np.broadcast_to(factor, counts.shape).copy()
        esc = rng.random(n) < escape if escape and name != CONTROL else np.zeros(n, bool)
        f[esc] = 0.8
        if confound:
            shifted = [col[g] for g in plan["batch_genes"]]
            f[np.ix_(b == "b2", shifted)] *= 0.05
        blocks.append(rng.binomial(counts.astype(np.int64), f))
        labels += [name] * n
        batches += list(b)
        escaped += list(esc)
    M = np.vstack(blocks).astype(np.float32)
    obs = pd.DataFrame({"gene": labels, "batch": batches}, index=[f"cell{i}" for i in range(len(labels))])
    if escape:
        obs["escaped"] = escaped
    out = ad.AnnData(sp.csr_matrix(M), obs=obs, var=a.var.copy())
    out.write_h5ad(path)
    return Path(path)
