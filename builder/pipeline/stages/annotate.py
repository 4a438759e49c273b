"""The annotation stage: every feature's top genes tested against the gene-set databases and networks
(annotation/annotate.py), with labels, rates per database and the random_genes baseline.

Stage folder ANNOTATE/annotation/: enrichments, labels, rates, baselines (Parquet) and annotate.json.
read() gives annotation.annotate.Annotation.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from ..annotation.annotate import Annotation, annotate, read_annotation, write_annotation
from ..cache import key_of
from ..stage import Stage, folder_key


class AnnotateStage(Stage):
    name = "annotate"

    def key(self, b) -> str:
        sources = b.databases + b.networks
        return key_of("annotate", folder_key(b.results["stats"].folder), [d.meta.get("sha256") for d in sources],
                      [d.name for d in sources], asdict(b.cfg.annotate))

    def run(self, b, tmp: Path) -> None:
        stats = b.results["stats"]
        table = pd.concat([stats.table(L, "feature_genes")[["feature", "gene", "rank"]].assign(layer=L)
                           for L in b.layers], ignore_index=True)
        write_annotation(tmp / "annotation", annotate(table, b.databases, b.networks, universe=b.universe(),
                                                      cfg=b.cfg.annotate))

    def read(self, folder: Path) -> Annotation:
        return replace(read_annotation(Path(folder) / "annotation"), folder=Path(folder))
