"""The baselines stage of `atlas build`: every annotation rate beside gene lists made without the trained SAE,
by the same tests on the same data (issue 16, point 1), and modules and cross-layer edges beside an untrained
twin of the model (point 4).

- random_genes: made inside the annotate stage (the features' own lists dealt out again);
- pca: the top genes of the top `graphs.pca_components` principal directions of each layer, both signs (so
  2 x n lists), from the held-out covariance the streaming pass accumulates over shards (graph stages);
- coexpression: equally sized groups of co-expressed genes of the build's cells, no model (coexpression.py);
- random_init_model: the same build (SAE settings, seed, cells, layers) on the randomly initialised twin of the
  checkpoint (models/twin.py): its annotation rates, its modules and its cross-layer edges. Its stages are
  cached under their own keys (the twin's checkpoint hash enters every key), so a rebuild reuses them.

Stage folder baselines-KEY/: baselines.parquet (rows of the atlas null_baseline table) and baselines.json (which
ran, with their parameters and seconds, and which did not, with the reason).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import AtlasError
from ...jsonio import dumps_json
from ..annotation.annotate import BASELINE_ROWS, annotate_baselines, rate_row
from ..annotation.baselines import Baseline
from ..cache import key_of
from ..stage import Stage, folder_key
from .sae import DICTIONARIES


@dataclass(frozen=True)
class BaselinesConfig:
    pca: bool = True                 # lists of the principal directions (cheap: the axes come with the stream)
    coexpression: bool = True        # two passes over the counts and a genes x genes correlation matrix
    coexpression_genes: int = 4000   # most detected universe genes clustered (the matrix is genes^2 x 8 bytes)
    random_init_model: bool | None = None  # a second build on the untrained twin; None: on with --train-sae
    random_dictionary: bool | None = None  # the SAEs' untrained starts encode the same activations; None: with --train-sae


def decide(cfg, family) -> dict[str, str]:
    """name -> '' (runs) or why it does not; AtlasError when one is switched on without what it needs.
    `cfg` is the BuildConfig, `family` its models.Family."""
    b = cfg.baselines
    out = {"random_genes": "" if cfg.annotate.random_genes else "switched off (annotate.random_genes = false)",
           "pca": "" if b.pca else "switched off (baselines.pca = false)",
           "coexpression": "" if b.coexpression else "switched off (baselines.coexpression = false)"}
    need = ""
    if family.write_twin is None:
        need = f"model family {family.name!r} has no random-init twin"
    elif not cfg.train_sae:
        need = "SAEs given with --sae; the twin needs SAEs trained by the build on its own activations (--train-sae)"
    if b.random_init_model and need:
        raise AtlasError(f"baselines.random_init_model: {need}; switch it off (--no-random-init-model)")
    if b.random_init_model is False:
        out["random_init_model"] = "switched off (baselines.random_init_model = false)"
    else:
        out["random_init_model"] = need
    untrained = "" if cfg.train_sae else "SAEs given with --sae: their untrained start is unknown (--train-sae)"
    if b.random_dictionary and untrained:
        raise AtlasError(f"baselines.random_dictionary: {untrained}; switch it off (--no-random-dictionary)")
    out["random_dictionary"] = ("switched off (baselines.random_dictionary = false)" if b.random_dictionary is False
                                else untrained)
    return out


def check_pca(record: dict, n_components: int) -> None:
    """The principal axes need more held-out tokens than components, and no more components than the width."""
    width, held = record["model"]["width"], record["heldout_tokens"]
    if n_components > width:
        raise AtlasError(f"graphs.pca_components {n_components}: larger than the model width {width}")
    if held <= n_components:
        raise AtlasError(f"baselines.pca: {held} held-out gene tokens are too few for {n_components} principal axes "
                         "(raise train.holdout or the cells, lower graphs.pca_components, or --no-pca-baseline)")


def pca_lists(graphs: dict) -> pd.DataFrame:
    """The graph stages' PCA gene lists as a (layer, list, gene, rank) table; list = 2 x component (+1 if negative).
    `graphs`: layer -> the graph stage's result."""
    parts = []
    for L, graph in sorted(graphs.items()):
        t = graph.pca_genes()
        parts.append(pd.DataFrame({"layer": np.int64(L), "list": 2 * t["component"] + (t["sign"] < 0),
                                   "gene": t["gene"].astype(str), "rank": t["rank"].astype(np.int64)}))
    return pd.concat(parts, ignore_index=True)


def twin_rows(layers: list[int], rates: pd.DataFrame, own: dict, twin: dict) -> list[dict]:
    """random_init_model rows: the twin's annotation rates (from its own annotate stage) beside the trained model's,
    and its modules and cross-layer edges. `own`/`twin`: {"rates", "graphs": {L: graph.json}, "cross": {(a, b):
    cross.json}} of each build."""
    note = "random_init_model: the same build (SAE settings, seed, cells) on the randomly initialised twin"
    rows = []
    trained = {(int(r.layer), r.database): (int(r.annotated), int(r.n_features)) for r in rates.itertuples()}
    for r in twin["rates"].itertuples():
        k, n = trained.get((int(r.layer), r.database), (None, None))
        rows.append(rate_row(int(r.layer), "annotation", r.database, "random_init_model", k, n, int(r.annotated),
                             int(r.n_features), f"{note}; share of its features with a top-gene list annotated"))
    for L in layers:
        mine, theirs = own["graphs"][L], twin["graphs"][L]
        for measure in ("modules", "in_modules"):
            rows.append(_row(L, "modules", measure, "random_init_model", mine["modules"][measure],
                             theirs["modules"][measure], f"{note}; its {measure.replace('_', ' ')}"))
            rows.append(_row(L, "modules", f"{measure}_of_random_init_model", "within_gene_shuffle",
                             theirs["modules"][measure], theirs["modules_null"][measure],
                             f"the twin's {measure.replace('_', ' ')} beside its own within-gene null"))
    for (a, b), mine in own["cross"].items():
        theirs = twin["cross"][a, b]
        rows.append(_row(a, "cross_layer", f"edges_beyond_gene_null_to_{b}", "random_init_model", mine["edges"],
                         theirs["edges"], f"{note}; its cross-layer edges by the same test"))
    return rows


def _row(layer, analysis, measure, baseline, observed, expected, note) -> dict:
    """A null_baseline row of two numbers that are not proportions (counts, modularity): no interval."""
    f = lambda v: None if v is None else float(v)  # noqa: E731
    return {"layer": int(layer), "analysis": analysis, "measure": measure, "baseline": baseline,
            "observed": f(observed), "expected": f(expected), "note": note}


def leading_lists(results: dict, layers: list[int]) -> pd.DataFrame:
    """The features' own top-gene lists with `lead`, the feature's place by firing (0: the most frequent), so that a
    baseline with fewer lists is compared with as many of the most frequent features (annotate_baselines)."""
    stats, parts = results["stats"], []
    for L in layers:
        fire = stats.table(L, "features").set_index("feature")["fire_count"]
        lead = pd.Series(np.argsort(np.argsort(-fire.to_numpy(), kind="stable"), kind="stable"), index=fire.index)
        genes = stats.table(L, "feature_genes")[["feature", "gene", "rank"]]
        parts.append(genes.assign(layer=np.int64(L), lead=lead.reindex(genes["feature"]).to_numpy()))
    return pd.concat(parts, ignore_index=True)


DICTIONARY_NOTES = {
    "random_dictionary": "random_dictionary: each layer's SAE before its first step (its random start: unit decoder "
                         "rows, tied encoder, the same k) encoding the same activations, through the same statistics",
    "random_dictionary_2": "random_dictionary_2: the start of another seed, never trained, the same way"}


def dictionary_lists(results: dict, layers: list[int], name: str, stats_cfg) -> pd.DataFrame:
    """The top genes of every feature of an untrained dictionary, by the features' own rule (statistics.features.
    top_genes on the stream's sums), as (layer, list, gene, rank) lists."""
    from ..statistics.features import top_genes

    plan, names = results["plan"], results["plan"].gene_names()
    parts = []
    for L in layers:
        t = top_genes(results["stream"].dictionary(L, name), plan.record["vocab_size"], stats_cfg)
        parts.append(pd.DataFrame({"layer": np.int64(L), "list": t["feature"].astype(np.int64),
                                   "gene": names.reindex(t["token_id"]).astype(str).to_numpy(),
                                   "rank": t["rank"].astype(np.int64)}))
    return pd.concat(parts, ignore_index=True)


def summaries(results: dict) -> dict:
    """What twin_rows reads of one build's stage results."""
    return {"rates": results["annotate"].rates.to_pandas(),
            "graphs": {L: g.summary for L, g in results["graph"].items()},
            "cross": {k: c.summary for k, c in results["cross"].items()}}


def run(tmp: Path, *, layers, decided: dict, cfg, results: dict, universe: dict, dbs, nets, data: Path,
        cells: np.ndarray, twin: dict | None) -> None:
    """Write baselines.parquet and baselines.json into `tmp` (see the module docstring)."""
    from ..annotation.coexpression import CoexpressionConfig, coexpression_baseline

    rates = results["annotate"].rates.to_pandas()
    record = {"ran": {}, "not_run": {k: v for k, v in decided.items() if v}}
    if not decided["random_genes"]:
        record["ran"]["random_genes"] = {"lists": "one per feature", "seed": cfg.annotate.seed}
    lists, rows = [], []
    if not decided["pca"]:
        t0 = time.perf_counter()
        lists.append(Baseline("pca", pca_lists(results["graph"]), f"pca: top {cfg.stats.top_genes} genes of each of the top "
                              f"{cfg.graphs.pca_components} principal directions of the layer, both signs (held-out "
                              "covariance accumulated over shards; same minimum support as the features)"))
        record["ran"]["pca"] = {"components": cfg.graphs.pca_components, "signs": 2, "seconds": time.perf_counter() - t0}
    if not decided["random_dictionary"]:
        t0 = time.perf_counter()
        for name in DICTIONARIES:
            lists.append(Baseline(name, dictionary_lists(results, layers, name, cfg.stats), DICTIONARY_NOTES[name]))
            record["ran"][name] = {"seconds": time.perf_counter() - t0}
    if not decided["coexpression"]:
        t0 = time.perf_counter()
        cc = CoexpressionConfig(n_genes=cfg.baselines.coexpression_genes, size=cfg.annotate.top_n, seed=cfg.seed)
        base, made = coexpression_baseline(data, universe, layers, cc, rows=cells)
        lists.append(base)
        record["ran"]["coexpression"] = {k: v for k, v in made.items() if k != "dataset"} | {
            "seconds": time.perf_counter() - t0}
    if lists:
        t0 = time.perf_counter()
        table = annotate_baselines(lists, rates, dbs, nets, universe=universe, cfg=cfg.annotate,
                                   features=leading_lists(results, layers))
        rows += table.to_pylist()
        for b in lists:  # the tests of every baseline share one prepared universe: their time is reported together
            record["ran"][b.name] |= {"note": b.note, "annotate_seconds_all_lists": time.perf_counter() - t0}
    if twin is not None:
        rows += twin_rows(layers, rates, summaries(results), twin["summary"])
        record["ran"]["random_init_model"] = {k: v for k, v in twin.items() if k != "summary"}
    pq.write_table(pa.Table.from_pylist(rows, schema=BASELINE_ROWS), tmp / "baselines.parquet", compression="zstd")
    record["config"] = asdict(cfg.baselines)
    (tmp / "baselines.json").write_bytes(dumps_json(record, indent=True))


@dataclass(frozen=True)
class Baselines:
    rows: pa.Table   # rows of the atlas null_baseline table
    record: dict     # baselines.json: which ran (with their parameters) and which did not (with the reason)
    twin: dict | None = None  # the untrained twin's build: {"plan": Plan, "stream": Stream}, when it ran


class BaselinesStage(Stage):
    """pca, coexpression and random_init_model beside the annotation rates; the untrained twin's build first."""

    name = "baselines"

    def check(self, b) -> None:
        if not b.decided["pca"]:
            check_pca(b.results["plan"].record, b.cfg.graphs.pca_components)

    def make(self, b) -> Baselines:
        b.memo["twin"] = tw = None if b.decided["random_init_model"] else twin(b)
        return replace(super().make(b), twin=tw and {"plan": tw["plan"], "stream": tw["stream"]})

    def key(self, b) -> str:
        cfg, tw = b.cfg, b.memo["twin"]
        return key_of("baselines", folder_key(b.results["annotate"].folder),
                      [g.folder.name for g in b.results["graph"].values()],
                      [c.folder.name for c in b.results["cross"].values()],
                      asdict(cfg.baselines), b.decided, tw and tw["folders"], cfg.seed)

    def run(self, b, tmp: Path) -> None:
        cells = b.results["plan"].cells
        tw = b.memo["twin"]
        run(tmp, layers=b.layers, decided=b.decided, cfg=b.cfg, results=b.results, universe=b.universe(),
            dbs=b.databases, nets=b.networks, data=Path(b.cfg.data),
            cells=cells.loc[cells["n_tokens"] > 0, "cell"].to_numpy(), twin=tw and tw["record"])

    def read(self, folder: Path) -> Baselines:
        folder = Path(folder)
        return Baselines(pq.read_table(folder / "baselines.parquet"), json.loads((folder / "baselines.json").read_text()))


def twin(b) -> dict:
    """The random_init_model baseline: write the checkpoint's untrained twin, then run this build on it (SAE
    settings, seed, cells and layers unchanged; its own baselines off). Its stages are cached like any other."""
    from ... import __version__
    from ...models import FAMILIES

    cfg = b.cfg
    key = key_of("twin", __version__, cfg.model, b.inputs["checkpoint"], cfg.seed, "with heldout_cells")
    folder = b.cached("twin", key, lambda tmp: FAMILIES[cfg.model].write_twin(
        Path(cfg.checkpoint), tmp / "checkpoint", cfg.seed))
    sub = replace(cfg, checkpoint=str(folder / "checkpoint"), annotate=replace(cfg.annotate, random_genes=False),
                  baselines=BaselinesConfig(pca=False, coexpression=False, random_init_model=False,
                                            random_dictionary=False),
                  interventions=replace(cfg.interventions, enabled=False))
    b.log("random_init_model: the same build on the untrained twin")
    t0 = time.perf_counter()
    out = b.sub_build(sub)
    if sum(out.timings.computed.values()):
        b.timings.done("twin", time.perf_counter() - t0)
        b.timings.computed["twin"] += 1
    else:
        b.timings.cached["twin"] += 1
    r = out.results
    folders = [r["annotate"].folder.name, *(g.folder.name for g in r["graph"].values()),
               *(c.folder.name for c in r["cross"].values())]
    record = {"checkpoint_sha256": out.inputs["checkpoint"], "seed": cfg.seed, "layers": b.layers,
              "same_as_the_model": "SAE settings, seed, cells, layers, statistics and graph settings",
              "sae_variance_explained": {str(L): r["stream"].heldout(L)["variance_explained"] for L in b.layers},
              "summary": summaries(r)}
    # the twin's plan and stream results (its cells and per-token codes), which the export records for `atlas link`
    # (its second null); not in the baselines key, whose folders above already depend on them
    return {"folders": folders, "record": record, "plan": r["plan"], "stream": r["stream"]}


__all__ = ["Baselines", "BaselinesConfig", "BaselinesStage", "check_pca", "decide", "pca_lists", "run", "twin_rows"]
