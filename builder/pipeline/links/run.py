"""`atlas link`'s analysis: two atlases built on the same cells (or an atlas and its untrained twin), every pair of
their layers, each feature's best partners by the correlation of per-cell profiles beside two nulls, the top-gene
overlap of each pair, BH over every pair tested, and the shares per pair of layers. atlas/links.py writes the rows
into both atlases. Definitions: docs/statistics.md "Links".
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import AtlasError
from ..annotation.genesets import normalise_gene
from ..multitest import bh, clopper_pearson
from ..statistics.features import StatsConfig
from .correlate import Partners, Profile, correlate, pair_r, profile, shuffle_moments
from .source import SharedCells, gene_universe, locate, profiles, shared_cells
from .store import ProfileStore
from .stats import gene_overlap, overlap_tests, shuffle_p, williams

PROFILE = "mean activation over the cell's gene tokens (0 where the feature does not fire)"
METHOD = ("Pearson correlation of per-cell profiles ({profile}) over the shared cells; each feature's `top` best "
          "partners per layer of the other atlas; null 1: cells shuffled within cell type (exact mean and variance "
          "of the shuffle, normal tail, Bonferroni over the candidate partners); null 2: the feature's best "
          "correlation with the other model's untrained twin (Williams' t, one-sided); top-gene overlap: "
          "hypergeometric; q: BH over every pair tested")
METHOD_TWIN = ("Pearson correlation of per-cell profiles ({profile}) of the atlas' features and of its untrained "
               "twin's; each feature's `top` best partners per layer of the twin; null: cells shuffled within cell "
               "type (exact mean and variance of the shuffle, normal tail, Bonferroni over the candidate partners); "
               "q: BH over every pair tested")


@dataclass(frozen=True)
class LinkConfig:
    top: int = 3             # partners kept per feature and layer of the other atlas (rank 1 = highest r)
    min_cells: int = 10      # shared cells a feature must be active in to be linked (the shuffle's normal tail
                             #   needs more than a handful of non-zero values)
    top_genes: int = 20      # genes of each feature's top list compared
    alpha: float = 0.05      # BH level of a match beyond a null
    block: int = 1024        # features per block of the streamed product: memory 8 x block x the other layer's features


@dataclass(frozen=True)
class AtlasInput:
    """What link reads of one atlas: its manifest, layer widths and the tables its rows draw on."""

    name: str
    manifest: dict
    widths: dict[int, int]               # layer -> n_features
    labels: dict = field(default_factory=dict)       # (layer, feature) -> label
    genes: dict = field(default_factory=dict)        # (layer, feature) -> top genes in rank order
    celltypes: dict = field(default_factory=dict)    # (layer, feature) -> set of cell types it passes

    @property
    def layers(self) -> list[int]:
        return sorted(self.widths)

    @property
    def min_support(self) -> int:
        stats = (self.manifest.get("parameters") or {}).get("stats") or {}
        return int(stats.get("min_support", StatsConfig().min_support))


def atlas_input(name: str, manifest: dict, layers: pd.DataFrame, features: pd.DataFrame, genes: pd.DataFrame,
                celltypes: pd.DataFrame, top_genes: int) -> AtlasInput:
    """An AtlasInput from an atlas' manifest and tables (pandas: layers, features, feature_genes, celltypes)."""
    lab = features.dropna(subset=["label"])
    top = genes[genes["rank"] <= top_genes].sort_values(["layer", "feature", "rank"])
    return AtlasInput(name, manifest, dict(zip(layers["layer"].astype(int), layers["n_features"].astype(int))),
                      dict(zip(zip(lab["layer"].astype(int), lab["feature"].astype(int)), lab["label"])),
                      {k: list(g["gene"]) for k, g in top.groupby(["layer", "feature"])},
                      {k: set(g["name"]) for k, g in celltypes.groupby(["layer", "feature"])})


@dataclass
class LinkResult:
    """Per atlas written: (atlas name, the other's name, its feature_links rows, its manifest.links record)."""

    sides: list[tuple[str, str, pd.DataFrame, dict]]
    cells: int


def _same_data(a: AtlasInput, b: AtlasInput) -> None:
    da, db = a.manifest.get("dataset") or {}, b.manifest.get("dataset") or {}
    if not da.get("sha256") or da.get("sha256") != db.get("sha256"):
        show = lambda x, d: f"{x.name}: {d.get('name') or '?'} sha256 {str(d.get('sha256'))[:12]}"  # noqa: E731
        raise AtlasError(f"atlases {a.name} and {b.name} were built from different data ({show(a, da)}, "
                         f"{show(b, db)}); atlas link compares atlases built from the same .h5ad, cell by cell")


def _layers(inp: AtlasInput, chosen, option: str) -> list[int]:
    if not chosen:
        return inp.layers
    missing = [L for L in chosen if L not in inp.widths]
    if missing:
        raise AtlasError(f"{option} {missing[0]}: atlas {inp.name} has layers {', '.join(map(str, inp.layers))}")
    return sorted(set(chosen))


def _rows(P: Profile, Q: Profile, part: Partners, back: Partners, twin: Partners | None, Qt: Profile | None,
          layer: int, other_layer: int) -> pd.DataFrame:
    """One direction's rows for one pair of layers: every kept partner of every P feature, with null 1 and null 2."""
    feat, rank = np.nonzero(part.idx >= 0)
    j, r = part.idx[feat, rank], part.r[feat, rank]
    null_r, null_sd, z, skew = shuffle_moments(P, Q, feat, j, r)
    out = pd.DataFrame({
        "layer": layer, "feature": feat, "other_layer": other_layer, "other_feature": j, "rank": rank + 1, "r": r,
        "null_r": null_r, "null_sd": null_sd, "z": z, "skew": skew, "p": shuffle_p(z, skew, Q.n_candidates),
        "n_candidates": Q.n_candidates, "n_cells": P.n, "n_firing": P.firing[feat], "other_n_firing": Q.firing[j],
        "mutual": back.idx[j, 0] == feat})
    if twin is not None:
        h, rt = twin.idx[feat, 0], twin.r[feat, 0]
        has = h >= 0
        tp = np.full(len(feat), np.nan)
        tp[has] = williams(r[has], rt[has], pair_r(Q, Qt, j[has], h[has]), P.n)[1]
        out["twin_feature"] = pd.array(np.where(has, h, 0), dtype="Int64")
        out.loc[~has, "twin_feature"] = pd.NA
        out["twin_r"], out["twin_p"] = np.where(has, rt, np.nan), tp
    return out


def _twin_family(P: Profile, Qt: Profile, twin: Partners, layer: int, other_layer: int) -> pd.DataFrame:
    """Each P feature's best partner in the untrained twin, by the same shuffle test: how often an untrained model
    would be called to share a program (the twin's share beside the model's)."""
    feat = np.flatnonzero(twin.idx[:, 0] >= 0)
    h, r = twin.idx[feat, 0], twin.r[feat, 0]
    _, _, z, skew = shuffle_moments(P, Qt, feat, h, r)
    return pd.DataFrame({"layer": layer, "other_layer": other_layer, "feature": feat,
                         "p": shuffle_p(z, skew, Qt.n_candidates)})


def _genes(rows: pd.DataFrame, me: AtlasInput, other: AtlasInput, universe: set[str]) -> None:
    ov = [gene_overlap(me.genes.get((a, f), []), other.genes.get((b, g), []), universe)
          for a, f, b, g in zip(rows["layer"], rows["feature"], rows["other_layer"], rows["other_feature"])]
    k = np.array([o["overlap"] for o in ov], np.int64)
    n, N = np.array([o["n_a"] for o in ov], np.int64), np.array([o["n_b"] for o in ov], np.int64)
    p, odds = overlap_tests(k, len(universe), n, N)
    rows["overlap"], rows["overlap_genes"] = k, [o["genes"] for o in ov]
    rows["gene_universe"], rows["gene_p"] = len(universe), p
    rows["gene_odds_ratio"] = np.where(np.isnan(odds), np.nan, odds)
    rows["shared_cell_types"] = [sorted(me.celltypes.get((a, f), set()) & other.celltypes.get((b, g), set()))
                                 for a, f, b, g in zip(rows["layer"], rows["feature"], rows["other_layer"],
                                                       rows["other_feature"])]
    rows["other_label"] = [other.labels.get((b, g)) for b, g in zip(rows["other_layer"], rows["other_feature"])]


def _summary(rows: pd.DataFrame, family: pd.DataFrame | None, alpha: float, pairs) -> list[dict]:
    """Per pair of layers of one direction: the features tested and the share with a match beyond the nulls."""
    out = []
    for a, b in pairs:
        r = rows[(rows["layer"] == a) & (rows["other_layer"] == b)]
        by = r.groupby("feature")
        tested = int(by.ngroups)
        count = lambda col: int(by[col].any().sum()) if tested else 0  # noqa: E731
        both = count("beyond_nulls")
        lo, hi = clopper_pearson(both, tested)
        rec = {"layer": a, "other_layer": b, "tested": tested, "matched": int((by["q"].min() <= alpha).sum()),
               "beyond_twin": int((by["twin_q"].min() <= alpha).sum()) if "twin_q" in r and tested else None,
               "beyond_both": both, "share": both / tested if tested else None, "share_lo": lo, "share_hi": hi,
               "mutual": int((r["beyond_nulls"] & r["mutual"] & (r["rank"] == 1)).sum())}
        if family is not None:
            f = family[(family["layer"] == a) & (family["other_layer"] == b)]
            k, n = int((f["q"] <= alpha).sum()), len(f)
            tlo, thi = clopper_pearson(k, n)
            rec.update(twin_tested=n, twin_matched=k, twin_share=k / n if n else None, twin_share_lo=tlo,
                       twin_share_hi=thi)
        out.append(rec)
    return out


def link_layers(get: Callable[[str, int], Profile], la: list[int], lb: list[int], top: int, block: int,
                twin_mode: bool, log=lambda s: None) -> tuple[list, list, list, list]:
    """Every pair of layers: (rows of A's features, rows of B's, A's twin family, B's twin family), one frame per
    pair. get(side, layer) gives a profile, side "A", "B" or their twins "At", "Bt"; one pair's four are held at a
    time."""
    mine, theirs, fam_a, fam_b = [], [], [], []
    for La in la:
        P, Pt = get("A", La), None if twin_mode else get("At", La)
        for Lb in lb:
            log(f"link: layer {La} x {Lb}")
            Q, Qt = get("B", Lb), None if twin_mode else get("Bt", Lb)
            Z = Q.standardised()
            fwd, rev = correlate(P, Q, top, block, Z=Z)
            tw_f = None
            if not twin_mode:
                tw_f = correlate(P, Qt, 1, block, cols=False)[0]
                tw_r = correlate(Pt, Q, 1, block, rows=False, Z=Z)[1]
                fam_a.append(_twin_family(P, Qt, tw_f, La, Lb))
                fam_b.append(_twin_family(Q, Pt, tw_r, Lb, La))
                theirs.append(_rows(Q, P, rev, fwd, tw_r, Pt, Lb, La))
            mine.append(_rows(P, Q, fwd, rev, tw_f, Qt, La, Lb))
            del Z
    return mine, theirs, fam_a, fam_b


def analyse(a: AtlasInput, b: AtlasInput | None, caches: list[Path], cfg: LinkConfig, layers=None,
            other_layers=None, log=lambda s: None) -> LinkResult:
    """Link atlas a to atlas b, or with b None to a's own untrained twin (no second null then)."""
    twin_mode = b is None
    la = _layers(a, layers, "--layers")
    lb = _layers(a if twin_mode else b, other_layers, "--other-layers")
    A = locate(a.manifest, a.name, caches)
    if twin_mode:
        B, At, Bt, other = locate(a.manifest, a.name, caches, twin=True), None, None, a
    else:
        B, other = locate(b.manifest, b.name, caches), b
        _same_data(a, b)
        At, Bt = locate(a.manifest, a.name, caches, twin=True), locate(b.manifest, b.name, caches, twin=True)
    cells = shared_cells([s for s in (A, B, At, Bt) if s is not None], cfg.min_cells)
    log(f"link: {cells.n} shared cells, {len(cells.group_names)} cell type(s); layers {la} x {lb}")
    sources = {"A": (A, a), "At": (At, a), "B": (B, other), "Bt": (Bt, other)}
    with tempfile.TemporaryDirectory(prefix="atlas-link-") as tmp:
        store = ProfileStore(Path(tmp), cells.groups, len(cells.group_names), cfg.min_cells)

        def get(side: str, L: int) -> Profile:
            src, inp = sources[side]
            return store.get(side, L, lambda: profiles(src, L, cells, inp.widths[L]))

        mine, theirs, fam_a, fam_b = link_layers(get, la, lb, cfg.top, cfg.block, twin_mode, log)
    sides = [(a, pd.concat(mine, ignore_index=True), [(x, y) for x in la for y in lb])]
    families = [pd.concat(fam_a, ignore_index=True)] if not twin_mode else [None]
    if not twin_mode:
        sides.append((b, pd.concat(theirs, ignore_index=True), [(y, x) for y in lb for x in la]))
        families.append(pd.concat(fam_b, ignore_index=True))
    frames = [rows for _, rows, _ in sides]
    _tests(frames, families, cfg.alpha, twin_mode)
    if not twin_mode:
        universe = gene_universe(A, a.min_support, _symbol) & gene_universe(B, b.min_support, _symbol)
        _genes(frames[0], a, b, universe)
        _genes(frames[1], b, a, universe)
        q = bh(np.concatenate([f["gene_p"].to_numpy() for f in frames]))
        frames[0]["gene_q"], frames[1]["gene_q"] = q[:len(frames[0])], q[len(frames[0]):]
    out = []
    for (me, rows, pairs), family in zip(sides, families):
        other_name = f"{a.name}:twin" if twin_mode else (b.name if me is a else a.name)
        rec = _record(me, other_name, cells, cfg, la if me is a else lb, lb if me is a else la,
                      _summary(rows, family, cfg.alpha, pairs), None if twin_mode else (b if me is a else a))
        out.append((me.name, other_name, rows.assign(other_atlas=other_name), rec))
    return LinkResult(out, cells.n)


def _symbol(g: str) -> str | None:
    return normalise_gene(g)


def _tests(frames: list[pd.DataFrame], families: list[pd.DataFrame | None], alpha: float, twin_mode: bool) -> None:
    """q of null 1 over every row of every direction (the pairs tested), of null 2 likewise, and of the twin's own
    best partners (the twin share) over their family; beyond_nulls."""
    cut = np.cumsum([0] + [len(f) for f in frames])
    q = bh(np.concatenate([f["p"].to_numpy() for f in frames]))
    for i, f in enumerate(frames):
        f["q"] = q[cut[i]:cut[i + 1]]
        f["beyond_nulls"] = f["q"] <= alpha
    if twin_mode:
        return
    tp = np.concatenate([f["twin_p"].to_numpy(np.float64) for f in frames])
    tq = np.full(len(tp), np.nan)
    has = ~np.isnan(tp)
    tq[has] = bh(tp[has])
    fcut = np.cumsum([0] + [len(f) for f in families])
    fq = bh(np.concatenate([f["p"].to_numpy() for f in families]))
    for i, f in enumerate(frames):
        f["twin_q"] = tq[cut[i]:cut[i + 1]]
        f["beyond_nulls"] = (f["q"] <= alpha) & (f["twin_q"] <= alpha)
        families[i]["q"] = fq[fcut[i]:fcut[i + 1]]


def _checkpoint(inp: AtlasInput) -> str | None:
    return (inp.manifest.get("model") or {}).get("checkpoint_sha256")


def stability(record: dict) -> list[dict]:
    """Of a link between two SAEs of one model (record["same_model"]): per layer, the pair of that layer with itself
    (the share of its features the other seed finds again beyond both nulls)."""
    return [p for p in record["layer_pairs"] if p["layer"] == p["other_layer"]] if record.get("same_model") else []


def _record(me: AtlasInput, other_name: str, cells: SharedCells, cfg: LinkConfig, layers, others,
            pairs: list[dict], other: AtlasInput | None) -> dict:
    """manifest.links[other] of one atlas: what was linked, how, and the shares per pair of layers."""
    return {
        "other": other_name, "kind": "atlas" if other is not None else "twin",
        "other_title": None if other is None else ((other.manifest.get("atlas") or {}).get("title") or other.name),
        "other_features_sha256": None if other is None
        else ((other.manifest.get("tables") or {}).get("features") or {}).get("sha256"),
        "same_model": other is not None and _checkpoint(me) is not None and _checkpoint(me) == _checkpoint(other),
        "cells": cells.n, "cell_types": {"from": cells.type_source, "groups": len(cells.group_names)},
        "profile": PROFILE, "method": (METHOD if other is not None else METHOD_TWIN).format(profile=PROFILE),
        "parameters": {**asdict(cfg), "layers": layers, "other_layers": others},
        "layer_pairs": pairs,
    }
