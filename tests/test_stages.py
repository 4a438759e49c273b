"""The stage contract (builder/pipeline/stage.py): the worked example of docs/architecture.md, "Adding a stage",
run as written on a tiny build: one module and one line in STAGES give a stage that is computed once per layer,
read by later stages through `b.results`, and found in the cache on the next build."""
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np

from builder.options import read_config
from builder.pipeline import build

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "atlas_data" / "inputs" / "immune_sample.h5ad"


def example_module():
    """The module of the docs' example, loaded as builder.pipeline.stages.norms."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page[page.index("## Adding a stage"):], re.S)[0]
    name = "builder.pipeline.stages.norms"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "builder.pipeline.stages"
    sys.modules[name] = module
    exec(compile(code, "docs/architecture.md", "exec"), module.__dict__)
    return module


def test_the_docs_example_stage_runs_is_read_and_is_cached(tiny, tmp_path, monkeypatch):
    norms = example_module().NormsStage()
    stages = list(build.STAGES)
    stages.insert(next(i for i, s in enumerate(stages) if s.name == "sae") + 1, norms)  # the one line
    monkeypatch.setattr(build, "STAGES", stages)
    cfg = read_config(None, {"model": "scgpt", "checkpoint": tiny / "scgpt", "data": SAMPLE, "train_sae": True,
                             "max_cells": 24, "shard_cells": 12, "train.k": 8, "train.epochs": 1,
                             "train.sample_tokens": 5000, "graphs.umap_neighbors": 5,
                             "baselines.random_init_model": False, "baselines.coexpression": False})
    first = build.Builder(cfg, tmp_path / "cache").run()
    assert sorted(first.results["norms"]) == first.layers
    for L, values in first.results["norms"].items():
        assert values.shape == (first.sae_width(L),) and np.allclose(values, 1, atol=1e-5)  # unit decoder rows
    assert first.timings.computed["norms"] == len(first.layers)
    assert len(list((tmp_path / "cache").glob("norms-*-*"))) == len(first.layers)
    again = build.Builder(cfg, tmp_path / "cache").run()
    assert again.timings.computed["norms"] == 0 and again.timings.cached["norms"] == len(first.layers)
    assert all(np.array_equal(again.results["norms"][L], first.results["norms"][L]) for L in first.layers)
