"""What `atlas build` prints about the atlas it wrote: numbers read from the atlas (its totals, its tables), never
recomputed from stage outputs."""

from __future__ import annotations

from .format import Atlas, totals


def build_summary(atlas: Atlas) -> dict:
    layers = atlas.table("layers")
    nb = atlas.table("null_baseline").to_pandas()
    mods = nb[(nb.analysis == "modules") & (nb.measure == "modules") & (nb.baseline == "within_gene_shuffle")]
    edges = atlas.table("edges").to_pandas()
    ct = atlas.table("celltypes").to_pandas()
    ct = ct[ct.level == "cell_type"]
    return {"name": atlas.name, "layers": layers.num_rows,
            "totals": atlas.manifest.get("totals") or totals(layers, atlas.table("null_baseline")),
            "celltype_features": ct.groupby(["layer", "feature"]).ngroups if len(ct) else 0,
            "best_auc": float(ct["auc"].max()) if len(ct) else None,
            "modules": int(mods["observed"].sum()), "modules_null": float(mods["expected"].sum()),
            "cross_edges": int((edges.kind == "cross_layer").sum()),
            "decoder_matches": int((edges.kind == "decoder_cosine").sum())}
