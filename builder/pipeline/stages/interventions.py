"""The interventions stage (--interventions): causal patching of features on held-out cells
(interventions/run.py). Stage folder: causal_summary.parquet, causal_effects.parquet, interventions.json.
read() gives Interventions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..cache import key_of
from ..interventions.run import read_interventions, run
from ..stage import Stage, folder_key


@dataclass(frozen=True)
class Interventions:
    summary: pd.DataFrame   # one row per patched feature
    effects: pd.DataFrame   # its most affected genes
    record: dict            # interventions.json: method, config, cells patched, agreement


class InterventionsStage(Stage):
    name = "interventions"

    def wanted(self, b) -> bool:
        return b.cfg.interventions.enabled

    def key(self, b) -> str:
        cfg = b.cfg
        return key_of("interventions", folder_key(b.results["stream"].folder), asdict(cfg.interventions),
                      asdict(cfg.stats), cfg.seed)

    def run(self, b, tmp: Path) -> None:
        from ..model.forward import ModelRunner
        from ..sae.topk import load_sae

        runner = ModelRunner(b.spec)
        plan = b.results["plan"]
        run(runner.adapter, runner.prepared, {L: load_sae(p) for L, p in b.results["sae"].paths.items()}, b.layers,
            b.results["stream"].folder, plan.record, plan.cells, b.cfg.stats, b.cfg.interventions, b.cfg.seed, tmp,
            b.log)

    def read(self, folder: Path) -> Interventions:
        return Interventions(*read_interventions(folder))
