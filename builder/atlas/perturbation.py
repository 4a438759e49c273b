"""`atlas perturb`'s rows into an atlas: only this dataset's rows of perturbation_response and tf_specificity are
replaced (other tables copied byte for byte, other datasets' rows kept), and its manifest entry. The analysis is
pipeline/perturbation/screen.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from .format import SCHEMA, Atlas, update_atlas


def _merged(atlas: Atlas, table: str, dataset: str, rows: list[dict]) -> pa.Table:
    """The atlas' rows of `table` for other datasets, plus the new rows of `dataset`."""
    old = atlas.table(table).to_pandas()
    old = old[old["dataset"] != dataset]
    new = pd.DataFrame(rows, columns=[c.name for c in SCHEMA[table].columns])
    frames = [f for f in (old, new) if len(f)]
    if not frames:
        return SCHEMA[table].schema().empty_table()
    both = pd.concat(frames, ignore_index=True)
    return pa.Table.from_pandas(both.astype(object).where(both.notna(), None), preserve_index=False)


def write(path: Path, dataset: str, response: list[dict], tf: list[dict], record: dict, log=lambda s: None) -> Atlas:
    """Replace `dataset`'s rows and manifest entry in the atlas as it is now (re-read with the atlas held: another
    run may have added its dataset since this one started); labels of responding features come from its features."""
    def change(atlas: Atlas):
        feats = atlas.table("features").to_pandas().set_index(["layer", "feature"])["label"]
        rows = []
        for r in response:
            lab = feats.get((r["layer"], r["feature"]))
            rows.append({**r, "label": None if lab is None or pd.isna(lab) else lab})
        manifest = dict(atlas.manifest)
        manifest["perturbation"] = {**manifest.get("perturbation", {}), dataset: record}
        return manifest, {"perturbation_response": _merged(atlas, "perturbation_response", dataset, rows),
                          "tf_specificity": _merged(atlas, "tf_specificity", dataset, tf)}

    return update_atlas(path, change, lambda: log(f"waiting: another command is writing {path}"))
