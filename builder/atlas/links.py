"""`atlas link`'s rows written into its atlases: in each, the rows of feature_links for the other atlas are replaced
(rows for other atlases kept, every other table copied byte for byte) and manifest.links[other] set, all atlases
held from their read to their swap and swapped in together (format.update_atlases). The analysis is
pipeline/links/run.py.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from ..errors import AtlasError
from ..pipeline.links.run import AtlasInput, atlas_input
from .format import SCHEMA, Atlas, update_atlases


def read_input(atlas: Atlas, top_genes: int) -> AtlasInput:
    """What link reads of an atlas (its layers, labels, top genes and cell types)."""
    return atlas_input(atlas.name, atlas.manifest, atlas.table("layers").to_pandas(),
                       atlas.table("features").select(["layer", "feature", "label"]).to_pandas(),
                       atlas.table("feature_genes").select(["layer", "feature", "rank", "gene"]).to_pandas(),
                       atlas.table("celltypes").select(["layer", "feature", "name"]).to_pandas(), top_genes)


def _merged(atlas: Atlas, other: str, rows: pd.DataFrame) -> pa.Table:
    old = atlas.table("feature_links").to_pandas()
    old = old[old["other_atlas"] != other]
    cols = [c.name for c in SCHEMA["feature_links"].columns]
    new = rows.reindex(columns=cols)
    frames = [f for f in (old, new) if len(f)]
    if not frames:
        return SCHEMA["feature_links"].schema().empty_table()
    both = pd.concat(frames, ignore_index=True).astype(object)
    return pa.Table.from_pandas(both.where(both.notna(), None), preserve_index=False)


def _fingerprint(atlas: Atlas) -> tuple:
    listed = atlas.manifest.get("tables", {})
    return tuple((listed.get(t) or {}).get("sha256") for t in ("layers", "features", "feature_genes", "celltypes"))


def write(atlases: list[Atlas], sides: list[tuple[str, str, pd.DataFrame, dict]], log=lambda s: None) -> list[Atlas]:
    """Write each side's rows and record into its atlas (`atlases`, as read before the analysis; each must be
    unchanged since, or nothing is written)."""
    before = {a.name: _fingerprint(a) for a in atlases}
    by_name = {a.name: a for a in atlases}
    paths = [by_name[name].path for name, _, _, _ in sides]

    def change(now: list[Atlas]):
        out = []
        for atlas, (name, other, rows, record) in zip(now, sides):
            if _fingerprint(atlas) != before[name]:
                raise AtlasError(f"atlas {name} changed while atlas link ran (rebuilt or re-imported); run atlas "
                                 f"link again")
            manifest = dict(atlas.manifest)
            manifest["links"] = {**(manifest.get("links") or {}), other: record}
            out.append((manifest, {"feature_links": _merged(atlas, other, rows)}))
        return out

    return update_atlases(paths, change, lambda p: log(f"waiting: another command is writing {p}"))

