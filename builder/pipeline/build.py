"""`atlas build`: hashes inputs and parameters, caches stages, schedules the map stages on an engine, calls.

Stages (each CACHE/<stage>-<key>/, key = hash of its inputs, parameters and the keys of the stages it reads):
  plan        cells, gene tokens per cell, shards, held-out cells            (plan.py; no model)
  sample      --train-sae: keyed uniform training sample per layer           (sample.py; map over shards)
  sae-LL      --train-sae: a TopK SAE trained on the sample                  (sae.py)
  stream      codes of every layer + dense sums, one pass over the shards    (stream.py; map over shards)
  stats       feature statistics, top genes and cells, cell-type tests,      (describe.py over stats.py;
              co-occurrence and cross-layer counts                            map over code shards)
  annotate    enrichments, labels, null baseline                              (annotate.py)
  graph-LL    modules with their null, map, SVD comparison, PCA gene lists   (graphs.py)
  cross-LL-MM cross-layer edges of an adjacent pair, decoder-cosine matches  (graphs.py)
  interventions  --interventions: causal patching on held-out cells          (interventions.py)
  twin        random_init_model: the checkpoint's untrained twin, then the   (models/twin.py; the same
              same build on it, every stage under its own keys               stages, keyed by the twin)
  baselines   pca, coexpression and random_init_model rows beside the rates  (baseline_stage.py)
Map stages commit every shard folder on its own, so a killed build resumes at the first unfinished shard.
This module imports neither builder.atlas nor builder.site: the CLI exports and renders what `run` returns.
"""

from __future__ import annotations

import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from .. import __version__
from ..errors import AtlasError
from ..fsutil import sha256_file
from ..pausepoint import pause_at
from ..models import FAMILIES, check_layers, load
from ..parse import atlas_name
from .model import dense
from .stages import stats as describe, sample, stream
from . import engine
from .annotation.annotate import AnnotateConfig
from .stages.baselines import BaselinesConfig
from .cache import commit_once, folder_bytes, is_done, key_of, tree_hash
from .codes import shard_name
from .model.forward import ModelSpec
from .graphs.modules import GraphConfig
from .interventions.stats import InterventionsConfig
from .stages.plan import PlanConfig, read_plan
from .sae.train import TrainConfig
from .statistics.features import StatsConfig

DEFAULT_DATA = Path("atlas_data/inputs/immune_sample.h5ad")


@dataclass(frozen=True)
class BuildConfig:
    model: str = ""
    checkpoint: str = ""
    data: str = str(DEFAULT_DATA)
    sae: str = ""                 # folder with layer_LL/ SAEs (SAELens) or layer_LL.pt (published format)
    train_sae: bool = False
    genesets: tuple[str, ...] = ()  # empty: the bundled defaults
    trrust: str = ""
    string: str = ""
    string_info: str = ""
    string_min_score: int = 700
    string_channels: str = "experimental,database"  # or "combined" (see genesets.read_string)
    layers: tuple[int, ...] = ()  # empty: every layer
    atlas: str = ""               # default: the model family
    title: str = ""
    max_cells: int = 0            # 0: every cell
    batch_size: int = 0           # 0: 1 on the CPU, 16 on a GPU
    device: str = "cpu"
    gene_column: str = ""
    cell_type_column: str = ""
    donor_column: str = ""
    seed: int = 0
    shard_cells: int = 256        # cells per shard: the unit of work, resume and memory
    backed: bool = True           # read the .h5ad in chunks; false loads it whole (same results, tested)
    keep_partials: bool = False   # keep per-shard partials after their merge (for inspection)
    engine: engine.EngineConfig = field(default_factory=engine.EngineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # its seed is replaced by `seed`
    stats: StatsConfig = field(default_factory=StatsConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    graphs: GraphConfig = field(default_factory=GraphConfig)
    interventions: InterventionsConfig = field(default_factory=InterventionsConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)


SECTIONS = {"engine": engine.EngineConfig, "train": TrainConfig, "stats": StatsConfig, "annotate": AnnotateConfig,
            "graphs": GraphConfig, "interventions": InterventionsConfig, "baselines": BaselinesConfig}
# Settings that cannot change any output byte stay out of cache keys and the manifest.
NOT_RESULTS = ("backed", "keep_partials", "engine")


def _value(key: str, value):
    """A setting as BuildConfig holds it: paths as text, layer lists and gene-set lists as tuples."""
    if isinstance(value, Path):
        return str(value)
    if key in ("layers", "genesets") and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def read_config(path: Path | None, overrides: dict, defaults: Callable[[dict], dict] | None = None) -> BuildConfig:
    """Defaults, then the TOML file, then command-line options (keys as in the file: `seed`, `engine.workers`).
    defaults(values given) can add defaults that depend on what was given (the demo build's, for one).
    Every value of the file goes through the type of its command-line option (options.SETTINGS), so both refuse
    the same values in the same words, naming the file and key; cross-field rules are checked after."""
    from ..options import check_setting

    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AtlasError(f"{path}: no such config file")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise AtlasError(f"{path}: not valid TOML ({e})") from None
        for key, value in raw.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise AtlasError(f"{path}: [{key}] must be a table")
                values.update({f"{key}.{k}": check_setting(f"{key}.{k}", v, str(path)) for k, v in value.items()})
            else:
                values[key] = check_setting(key, value, str(path))
    # None, "" and () mean "not given"; 0 and False given on the command line override the file.
    values.update({k: v for k, v in overrides.items() if v is not None and not (isinstance(v, (str, tuple)) and not v)})
    if defaults is not None:
        values = {**defaults(dict(values)), **values}
    cfg = BuildConfig()
    top = {k: _value(k, v) for k, v in values.items() if "." not in k}
    sections = {sec: replace(getattr(cfg, sec), **{k.split(".", 1)[1]: _value(k, v) for k, v in values.items()
                                                    if k.startswith(sec + ".")}) for sec in SECTIONS}
    cfg = replace(cfg, **top, **sections)
    check_config(cfg)
    return cfg


def check_config(cfg: BuildConfig) -> None:
    """Every parameter checked before any expensive stage."""
    if cfg.model not in FAMILIES:
        raise AtlasError(f"model {cfg.model or '(none)'!r}: expected {' or '.join(FAMILIES)} (--model or `model` in the config)")
    if not cfg.checkpoint:
        raise AtlasError("no checkpoint: give --checkpoint DIR (or `checkpoint` in the config)")
    if bool(cfg.sae) == cfg.train_sae:
        raise AtlasError("give exactly one of --sae DIR and --train-sae")
    checks = [("max_cells", cfg.max_cells >= 0, "0 (every cell) or more"), ("shard_cells", cfg.shard_cells >= 1, "at least 1"),
              ("batch_size", cfg.batch_size >= 0, "0 (the default) or more"),
              ("train.holdout", 0 < cfg.train.holdout < 1, "in (0, 1): held-out cells give variance explained, "
               "dead features and the principal axes"),
              ("graphs.pca_components", 1 <= cfg.graphs.pca_components <= dense.PCA_MAX, f"between 1 and {dense.PCA_MAX}"),
              ("train.k", 1 <= cfg.train.k, "at least 1"), ("train.expansion", cfg.train.expansion >= 1, "at least 1"),
              ("train.epochs", cfg.train.epochs >= 1, "at least 1"),
              ("stats.alpha", 0 < cfg.stats.alpha <= 1, "in (0, 1]"),
              ("stats.auc_floor", 0 < cfg.stats.auc_floor <= 1, "in (0, 1]"),
              ("stats.top_genes", cfg.stats.top_genes >= 1, "at least 1"), ("stats.top_cells", cfg.stats.top_cells >= 1, "at least 1"),
              ("annotate.alpha", 0 < cfg.annotate.alpha <= 1, "in (0, 1]"),
              ("graphs.cross_alpha", 0 < cfg.graphs.cross_alpha <= 1, "in (0, 1]"),
              ("interventions.mask_rate", 0 < cfg.interventions.mask_rate < 1, "in (0, 1)"),
              ("interventions.level", 0 < cfg.interventions.level < 1, "in (0, 1)")]
    for name, ok, expected in checks:
        if not ok:
            value = cfg
            for part in name.split("."):
                value = getattr(value, part)
            raise AtlasError(f"{name} {value!r}: must be {expected}")
    if cfg.train.sample_tokens is not None and cfg.train.sample_tokens < 1:
        raise AtlasError(f"train.sample_tokens {cfg.train.sample_tokens}: must be at least 1")
    if cfg.donor_column and not cfg.cell_type_column:
        raise AtlasError("--donor-column needs --cell-type-column (the donor-level test is per cell type)")
    engine.check(cfg.engine)
    from .stages.baselines import decide

    decide(cfg, FAMILIES[cfg.model])


def results_config(cfg: BuildConfig) -> dict:
    """The parameters that decide the output: the manifest's `parameters`."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_RESULTS}


@dataclass
class Stage:
    """Timing, cache hits, peak RSS (MB) and shard throughput per stage, for the summary and the benchmarks."""

    seconds: Counter = field(default_factory=Counter)
    cached: Counter = field(default_factory=Counter)
    computed: Counter = field(default_factory=Counter)
    peak_mb: dict = field(default_factory=dict)
    shards: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)

    def done(self, kind: str, seconds: float) -> None:
        import resource

        self.seconds[kind] += seconds
        self.peak_mb[kind] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Progress:
    """What a map stage reports; the CLI draws it (shards done, tokens/s, projected time left)."""

    def start(self, stage: str, units: int, tokens: int, done_units: int, done_tokens: int, unit: str = "shards") -> None: ...

    def advance(self, shards: int, tokens: int) -> None: ...

    def finish(self) -> None: ...


@dataclass
class Outputs:
    """Everything export needs: the stage folders and what the build learnt on the way."""

    cfg: BuildConfig
    name: str
    layers: list[int]
    plan: Path
    record: dict  # plan.json
    inputs: dict  # hashes of the checkpoint and the data
    saes: dict  # layer -> SAE path
    sae_source: str
    stream: Path
    stats: Path
    annotation: Path
    graphs: dict  # layer -> folder
    cross: dict  # (a, b) -> folder
    databases: list
    networks: list
    modules: dict  # layer -> module rows (labels from annotation)
    training: dict  # layer -> SAE training record
    stage: Stage
    cache_bytes: dict = field(default_factory=dict)
    interventions: Path | None = None  # the interventions stage folder, with --interventions
    baselines: Path | None = None  # the baselines stage folder (baseline_stage.py)


class Builder:
    def __init__(self, cfg: BuildConfig, cache: Path, log: Callable[[str], None] = lambda s: None,
                 progress: Progress | None = None):
        self.cfg, self.cache, self.log = cfg, Path(cache), log
        self.progress = progress or Progress()
        self.stage = Stage()
        self.name = cfg.atlas or cfg.model

    def cached(self, stage: str, key: str, make: Callable[[Path], None]) -> Path:
        """CACHE/stage-key/, made by make(tmp) in a private folder unless it is already there."""
        out = self.cache / f"{stage}-{key}"
        kind = stage.split("-")[0]
        if is_done(out):
            self.stage.cached[kind] += 1
            return out
        t0 = time.perf_counter()
        self.log(f"{stage}: computing")
        with commit_once(out) as tmp:
            make(tmp)
        self.stage.done(kind, time.perf_counter() - t0)
        self.stage.computed[kind] += 1
        return out

    def mapped(self, stage: str, key: str, worker, kwargs: dict, units: list[tuple[str, int]],
               finish: Callable[[Path], None], unit: str = "shards", on_unit: Callable[[], None] | None = None) -> Path:
        """A map stage: units[i] = (folder under CACHE/stage-key/ that unit i commits, its gene tokens), run by the
        engine (`worker(i)`), then finish(folder) and the .done marker. on_unit runs after each finished unit."""
        out = self.cache / f"{stage}-{key}"
        if is_done(out):
            self.stage.cached[stage] += 1
            return out
        t0 = time.perf_counter()
        self.log(f"{stage}: computing")
        out.mkdir(parents=True, exist_ok=True)
        todo = [i for i, (rel, _) in enumerate(units) if not is_done(out / rel)]
        done_tokens = sum(t for i, (_, t) in enumerate(units) if i not in set(todo))
        self.progress.start(stage, len(units), sum(t for _, t in units), len(units) - len(todo), done_tokens, unit)

        def advance(status):
            self.stage.shards[stage] += 1
            self.stage.tokens[stage] += status["tokens"]
            self.progress.advance(1, status["tokens"])
            if on_unit is not None:
                on_unit()
            pause_at(f"{stage} unit {self.stage.shards[stage]}")

        try:
            engine.run_map(self.cfg.engine, worker, kwargs, todo, stage, advance)
        finally:
            self.progress.finish()
        finish(out)
        (out / ".done").write_text(key + "\n")
        self.stage.done(stage, time.perf_counter() - t0)
        self.stage.computed[stage] += 1
        return out

    def run(self) -> Outputs:
        cfg = self.cfg
        atlas_name(self.name)
        data = Path(cfg.data)
        if not data.is_file():
            raise AtlasError(f"{data}: no such dataset file")
        adapter = load(cfg.model, Path(cfg.checkpoint), seed=cfg.seed)  # checks the checkpoint before any work
        if cfg.interventions.enabled:
            from .interventions.patching import check_head

            check_head(adapter)
        layers = check_layers(adapter, list(cfg.layers) or None)
        if cfg.train_sae and cfg.train.k > cfg.train.expansion * adapter.width:  # before any stage writes
            raise AtlasError(f"train.k {cfg.train.k}: larger than the SAE width {cfg.train.expansion * adapter.width} "
                             f"(train.expansion {cfg.train.expansion} x model width {adapter.width})")
        dbs, nets = self._genesets()  # parsed now, so a bad file fails before the model runs
        inputs = {"checkpoint": tree_hash(Path(cfg.checkpoint)), "data": sha256_file(data)}
        pkey = key_of("plan", __version__, cfg.model, inputs, cfg.max_cells, cfg.gene_column, cfg.seed, cfg.shard_cells,
                      cfg.train.holdout, cfg.cell_type_column, cfg.donor_column)
        from .stages.plan import run as plan_run

        pdir = self.cached("plan", pkey, partial(
            lambda ad, tmp: plan_run(ad, data, tmp, PlanConfig(cfg.shard_cells, cfg.train.holdout), cfg.seed,
                                     cfg.max_cells or None, cfg.gene_column or None, cfg.cell_type_column or None,
                                     cfg.donor_column or None, cfg.backed), adapter))
        record, cells = read_plan(pdir)
        from .stages import baselines as baseline_stage

        decided = baseline_stage.decide(cfg, FAMILIES[cfg.model])
        if not decided["pca"]:
            baseline_stage.check_pca(record, cfg.graphs.pca_components)
        spec = ModelSpec(cfg.model, str(cfg.checkpoint), str(data), tuple(layers), cfg.seed, cfg.max_cells or None,
                         record["dataset"]["gene_column"], cfg.backed, cfg.batch_size, cfg.device, cfg.engine.threads)
        if cfg.train_sae:
            saes, skeys, training = self._train(adapter, layers, pdir, pkey, record, cells, spec)
        else:
            saes, skeys, training = self._given(adapter, layers)
        del adapter
        n_features = {L: _sae_width(saes[L]) for L in layers}
        n_shards = len(record["shards"])
        shards = [(f"shards/{shard_name(i)}", t) for i, (_, _, t) in enumerate(record["shards"])]
        xkey = key_of("stream", pkey, layers, skeys, cfg.batch_size)
        xdir = self.cache / f"stream-{xkey}"
        sdir = self.mapped("stream", xkey, stream.StreamWorker,
                           {"spec": spec, "saes": {L: str(p) for L, p in saes.items()}, "plan_dir": str(pdir),
                            "out": str(xdir)}, shards,
                           lambda out: dense.finalize(out, layers, n_shards, cfg.keep_partials),
                           on_unit=lambda: dense.fold(xdir, layers, n_shards, cfg.keep_partials))
        tkey = key_of("stats", xkey, asdict(cfg.stats))
        units = [(describe.task_dir(t), record["tokens"]) for t in describe.tasks(layers)]
        tdir = self.mapped("stats", tkey, describe.StatsWorker,
                           {"stream": str(sdir), "plan_dir": str(pdir), "out": str(self.cache / f"stats-{tkey}"),
                            "layers": layers, "n_features": n_features, "cfg": asdict(cfg.stats)}, units,
                           lambda out: describe.finish(out, layers, cfg.stats), unit="tasks")
        akey = key_of("annotate", tkey, [d.meta.get("sha256") for d in dbs + nets], [d.name for d in dbs + nets],
                      asdict(cfg.annotate))
        adir = self.cached("annotate", akey, lambda tmp: self._annotate(layers, tdir, pdir, dbs, nets, tmp))
        from .stages.graph import cross_stage, graph_stage, module_rows

        gdirs, cdirs = {}, {}
        for L in layers:
            gkey = key_of("graph", tkey, skeys[L], asdict(cfg.graphs))
            gdirs[L] = self.cached(f"graph-{L:02d}", gkey, lambda tmp, L=L: graph_stage(
                L, pdir, tdir, sdir, saes[L], record, cfg.graphs, cfg.stats, tmp))
        for a, b in zip(layers, layers[1:]):
            ckey = key_of("cross", tkey, skeys[a], skeys[b], asdict(cfg.graphs))
            cdirs[a, b] = self.cached(f"cross-{a:02d}-{b:02d}", ckey, lambda tmp, a=a, b=b: cross_stage(
                a, b, tdir, saes[a], saes[b], record, cfg.graphs, tmp))
        modules = {L: module_rows(gdirs[L], adir, L) for L in layers}
        sizes = {"stream": folder_bytes(sdir), "stats": folder_bytes(tdir)}
        idir = None
        if cfg.interventions.enabled:
            ikey = key_of("interventions", xkey, asdict(cfg.interventions), asdict(cfg.stats), cfg.seed)
            idir = self.cached("interventions", ikey, lambda tmp: self._interventions(layers, saes, sdir, pdir, spec, tmp))
        bdir = self._baselines(decided, inputs, layers, akey, adir, gdirs, cdirs, tdir, pdir, cells, dbs, nets)
        return Outputs(cfg, self.name, layers, pdir, record, inputs, saes,
                       "trained by atlas build" if cfg.train_sae else "given (--sae)", sdir, tdir, adir, gdirs, cdirs,
                       dbs, nets, modules, training, self.stage, sizes, idir, bdir)

    def _interventions(self, layers, saes, sdir, pdir, spec, tmp):
        from .model.forward import ModelRunner
        from .interventions.run import run as run_interventions
        from .sae.topk import load_sae

        runner = ModelRunner(spec)
        record, cells = read_plan(pdir)
        run_interventions(runner.adapter, runner.prepared, {L: load_sae(saes[L]) for L in layers}, layers, sdir, record,
                          cells, self.cfg.stats, self.cfg.interventions, self.cfg.seed, tmp, self.log)

    def _baselines(self, decided, inputs, layers, akey, adir, gdirs, cdirs, tdir, pdir, cells, dbs, nets) -> Path:
        """The baselines stage (baseline_stage.py), after the twin's build when random_init_model runs."""
        from .stages import baselines as baseline_stage

        cfg = self.cfg
        twin = None if decided["random_init_model"] else self._twin(inputs["checkpoint"], layers)
        bkey = key_of("baselines", akey, [p.name for p in gdirs.values()], [p.name for p in cdirs.values()],
                      asdict(cfg.baselines), decided, twin and twin["folders"], cfg.seed)
        return self.cached("baselines", bkey, lambda tmp: baseline_stage.run(
            tmp, layers=layers, decided=decided, cfg=cfg, annotation=adir, gdirs=gdirs, cdirs=cdirs,
            universe=self._universe(layers, tdir, pdir), dbs=dbs, nets=nets, data=Path(cfg.data),
            cells=cells.loc[cells["n_tokens"] > 0, "cell"].to_numpy(), twin=twin and twin["record"]))

    def _twin(self, checkpoint_hash: str, layers: list[int]) -> dict:
        """The random_init_model baseline: write the checkpoint's untrained twin, then run this build on it (SAE
        settings, seed, cells and layers unchanged; its own baselines off). Its stages are cached like any other."""
        from .stages.baselines import summaries
        from .model.dense import heldout_metrics, read_dense

        cfg = self.cfg
        key = key_of("twin", __version__, cfg.model, checkpoint_hash, cfg.seed)
        folder = self.cached("twin", key, lambda tmp: FAMILIES[cfg.model].write_twin(
            Path(cfg.checkpoint), tmp / "checkpoint", cfg.seed))
        sub = replace(cfg, checkpoint=str(folder / "checkpoint"), annotate=replace(cfg.annotate, random_genes=False),
                      baselines=BaselinesConfig(pca=False, coexpression=False, random_init_model=False),
                      interventions=replace(cfg.interventions, enabled=False))
        self.log("random_init_model: the same build on the untrained twin")
        t0 = time.perf_counter()
        twin = Builder(sub, self.cache, self.log, self.progress)
        out = twin.run()
        if sum(twin.stage.computed.values()):
            self.stage.done("twin", time.perf_counter() - t0)
            self.stage.computed["twin"] += 1
        else:
            self.stage.cached["twin"] += 1
        folders = [out.annotation.name, *(p.name for p in out.graphs.values()), *(p.name for p in out.cross.values())]
        record = {"checkpoint_sha256": out.inputs["checkpoint"], "seed": cfg.seed, "layers": layers,
                  "same_as_the_model": "SAE settings, seed, cells, layers, statistics and graph settings",
                  "sae_variance_explained": {str(L): heldout_metrics(read_dense(out.stream, L))["variance_explained"]
                                             for L in layers},
                  "summary": summaries(out.annotation, out.graphs, out.cross)}
        return {"folders": folders, "record": record}

    def _universe(self, layers, tdir, pdir) -> dict:
        """Per layer, the genes that can enter a top list: at least min_support tokens in the data."""
        names = pq.read_table(pdir / "genes.parquet").to_pandas().set_index("token_id")["gene"]
        universe = {}
        for L in layers:
            counts = describe.read_counts(tdir, L)
            ids = counts["gene_ids"][counts["gene_n"] >= self.cfg.stats.min_support]
            universe[L] = names.reindex(ids).dropna().tolist()
        return universe

    def _genesets(self):
        from ..parse import string_channels
        from .annotation.genesets import load_genesets, read_string, read_trrust

        cfg = self.cfg
        dbs, nets = load_genesets(cfg.genesets), []
        if cfg.trrust:
            s, e = read_trrust(Path(cfg.trrust))
            dbs.append(s)
            nets.append(e)
        if cfg.string:
            nets.append(read_string(Path(cfg.string), Path(cfg.string_info) if cfg.string_info else None,
                                    cfg.string_min_score, string_channels(cfg.string_channels)))
        return dbs, nets

    def _given(self, adapter, layers):
        from .sae.topk import load_sae

        root = Path(self.cfg.sae)
        saes, keys = {}, {}
        for L in layers:
            for cand in (root / f"layer_{L:02d}", root / f"layer_{L}", root / f"layer_{L:02d}.pt", root / f"layer_{L}.pt"):
                if cand.exists():
                    model = load_sae(cand)
                    if model.d_in != adapter.width:
                        raise AtlasError(f"{cand}: SAE input width {model.d_in} does not fit layer {L} of "
                                         f"{adapter.name} (width {adapter.width})")
                    saes[L], keys[L] = cand, key_of("sae-file", tree_hash(cand))
                    break
            else:
                raise AtlasError(f"{root}: no SAE for layer {L} (expected layer_{L:02d}/ or layer_{L:02d}.pt)")
        return saes, keys, {}

    def _train(self, adapter, layers, pdir, pkey, record, cells, spec):
        import torch

        from .sae.train import train

        cfg = self.cfg
        tc = replace(cfg.train, seed=cfg.seed)
        cut, n = sample.threshold(cells, tc.sample_tokens, cfg.seed)
        mkey = key_of("sample", pkey, layers, n)
        shards = [(f"shards/{shard_name(i)}", t) for i, (_, _, t) in enumerate(record["shards"])]
        mdir = self.mapped("sample", mkey, sample.SampleWorker,
                           {"spec": spec, "plan_dir": str(pdir), "out": str(self.cache / f"sample-{mkey}"), "cut": cut},
                           shards, lambda out: sample.merge(out, layers, len(record["shards"]), n, adapter.width,
                                                            cfg.keep_partials))
        saes, keys, training = {}, {}, {}
        for L in layers:
            key = key_of("sae-train", mkey, L, asdict(tc))

            def make(tmp, L=L):
                threads = torch.get_num_threads()
                torch.set_num_threads(1)  # multi-threaded reductions vary run to run; the cache must not
                try:
                    model, metrics = train(sample.read_sample(mdir, L), tc, where=f"layer {L}")
                finally:
                    torch.set_num_threads(threads)
                model.save(tmp / "sae", {"layer": L, "model_name": record["model"]["name"], "training": metrics})

            saes[L], keys[L] = self.cached(f"sae-{L:02d}", key, make) / "sae", key
            training[L] = {"train_tokens": n}
        return saes, keys, training

    def _annotate(self, layers, tdir, pdir, dbs, nets, tmp):
        from .annotation.annotate import annotate, write_annotation

        parts = [describe.read_table(tdir, L, "feature_genes")[["feature", "gene", "rank"]].assign(layer=L)
                 for L in layers]
        universe = self._universe(layers, tdir, pdir)
        table = pd.concat(parts, ignore_index=True)
        write_annotation(tmp / "annotation", annotate(table, dbs, nets, universe=universe, cfg=self.cfg.annotate))


def _sae_width(path: Path) -> int:
    from .sae.topk import load_sae

    return load_sae(path).d_sae
