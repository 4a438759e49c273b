"""`atlas build`: checks the inputs, then runs the stages in order, each cached by a hash of its inputs.

The stages (STAGES below; the contract is in stage.py; each module's docstring describes its folder):
  plan           cells, gene tokens per cell, shards, held-out cells (no model)       stages/plan.py
  sample         --train-sae: keyed uniform training sample per layer (map)          stages/sample.py
  sae            one TopK SAE per layer: trained on the sample, or given (--sae)     stages/sae.py
  stream         codes of every layer + dense sums, one pass over the shards (map)   stages/stream.py
  stats          feature statistics, top genes and cells, cell-type tests,          stages/stats.py
                 co-occurrence and cross-layer counts (map over tasks)
  annotate       enrichments, labels, rates, random_genes baseline                   stages/annotate.py
  graph          per layer: modules with their null, map, SVD comparison, PCA lists stages/graph.py
  cross          per adjacent pair: cross-layer edges, decoder-cosine matches       stages/cross.py
  interventions  --interventions: causal patching on held-out cells                 stages/interventions.py
  baselines      pca, coexpression, random_init_model (the same build on the         stages/baselines.py
                 untrained twin, every stage under its own keys)
Map stages commit every unit on its own, so a killed build resumes at the first unfinished shard.
This module imports neither builder.atlas nor builder.site: the CLI exports and renders the finished Builder.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import AtlasError
from ..fsutil import sha256_file
from ..models import FAMILIES, check_layers, load
from ..parse import atlas_name
from ..pausepoint import pause_at
from . import engine
from .annotation.annotate import AnnotateConfig
from .cache import commit_once, is_done, tree_hash
from .graphs.modules import GraphConfig
from .interventions.stats import InterventionsConfig
from .model import dense
from .model.forward import ModelSpec
from .sae.train import TrainConfig
from .stages.annotate import AnnotateStage
from .stages.baselines import BaselinesConfig, BaselinesStage, decide
from .stages.cross import CrossStage
from .stages.graph import GraphStage
from .stages.interventions import InterventionsStage
from .stages.plan import PlanStage
from .stages.sae import SaeStage
from .stages.sample import SampleStage
from .stages.stats import StatsStage
from .stages.stream import StreamStage
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


def make_config(values: dict) -> BuildConfig:
    """The defaults with `values` on top (keys as in the config file: `seed`, `engine.workers`; each value already
    converted by its option type), then every cross-field rule checked."""
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
    decide(cfg, FAMILIES[cfg.model])


def results_config(cfg: BuildConfig) -> dict:
    """The parameters that decide the output: the manifest's `parameters`."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_RESULTS}


@dataclass
class Timings:
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

    @contextlib.contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """done(kind, the seconds the block took) when the block ends without an error."""
        t0 = time.perf_counter()
        yield
        self.done(kind, time.perf_counter() - t0)


class Progress:
    """What a map stage reports; the CLI draws it (shards done, tokens/s, projected time left)."""

    def start(self, stage: str, units: int, tokens: int, done_units: int, done_tokens: int, unit: str = "shards") -> None: ...

    def advance(self, shards: int, tokens: int) -> None: ...

    def finish(self) -> None: ...


STAGES = [PlanStage(), SampleStage(), SaeStage(), StreamStage(), StatsStage(), AnnotateStage(), GraphStage(),
          CrossStage(), InterventionsStage(), BaselinesStage()]


class Builder:
    """One build: the checked inputs, then `results[stage name]`, the read() result of every stage that ran."""

    def __init__(self, cfg: BuildConfig, cache: Path, log: Callable[[str], None] = lambda s: None,
                 progress: Progress | None = None):
        self.cfg, self.cache, self.log = cfg, Path(cache), log
        self.progress = progress or Progress()
        self.timings = Timings()
        self.name = cfg.atlas or cfg.model
        self.train_cfg = replace(cfg.train, seed=cfg.seed)  # the build's seed is the SAEs' seed
        self.results: dict = {}
        self.memo: dict = {}

    def run(self) -> Builder:
        cfg = self.cfg
        atlas_name(self.name)
        data = Path(cfg.data)
        if not data.is_file():
            raise AtlasError(f"{data}: no such dataset file")
        self.adapter = load(cfg.model, Path(cfg.checkpoint), seed=cfg.seed)  # checks the checkpoint before any work
        if cfg.interventions.enabled:
            from .interventions.patching import check_head

            check_head(self.adapter)
        self.width, self.model_name = self.adapter.width, self.adapter.name
        self.layers = check_layers(self.adapter, list(cfg.layers) or None)
        if cfg.train_sae and cfg.train.k > cfg.train.expansion * self.width:  # before any stage writes
            raise AtlasError(f"train.k {cfg.train.k}: larger than the SAE width {cfg.train.expansion * self.width} "
                             f"(train.expansion {cfg.train.expansion} x model width {self.width})")
        self.databases, self.networks = self._genesets()  # parsed now, so a bad file fails before the model runs
        self.inputs = {"checkpoint": tree_hash(Path(cfg.checkpoint)), "data": sha256_file(data)}
        self.decided = decide(cfg, FAMILIES[cfg.model])
        plan, *rest = STAGES
        self.results[plan.name] = plan.make(self)  # cheap, and what the checks below read
        self.adapter = None  # the map stages load their own model; the plan was the last reader of this one
        wanted = [s for s in rest if s.wanted(self)]
        for s in wanted:
            s.check(self)
        for s in wanted:
            self.results[s.name] = s.make(self)
        return self

    def sub_build(self, cfg: BuildConfig) -> Builder:
        """Another build (the untrained twin's) on the same cache, log and progress."""
        return Builder(cfg, self.cache, self.log, self.progress).run()

    # --- what stages share -----------------------------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        """How a map stage's worker loads the model and reads the data (after the plan)."""
        cfg = self.cfg
        return ModelSpec(cfg.model, str(cfg.checkpoint), str(cfg.data), tuple(self.layers), cfg.seed,
                         cfg.max_cells or None, self.results["plan"].record["dataset"]["gene_column"], cfg.backed,
                         cfg.batch_size, cfg.device, cfg.engine.threads)

    def sae_width(self, layer: int) -> int:
        from .sae.topk import load_sae

        widths = self.memo.setdefault("sae_width", {})
        if layer not in widths:
            widths[layer] = load_sae(self.results["sae"].paths[layer]).d_sae
        return widths[layer]

    def universe(self) -> dict:
        """Per layer, the genes that can enter a top list: at least min_support tokens in the data."""
        names = self.results["plan"].gene_names()
        return {L: self.results["stats"].universe(names, L, self.cfg.stats.min_support) for L in self.layers}

    def cached(self, stage: str, key: str, make: Callable[[Path], None]) -> Path:
        """CACHE/stage-key/, made by make(tmp) in a private folder unless it is already there."""
        out = self.cache / f"{stage}-{key}"
        kind = stage.split("-")[0]
        if is_done(out):
            self.timings.cached[kind] += 1
            return out
        t0 = time.perf_counter()
        self.log(f"{stage}: computing")
        with commit_once(out) as tmp:
            make(tmp)
        self.timings.done(kind, time.perf_counter() - t0)
        self.timings.computed[kind] += 1
        return out

    def mapped(self, stage: str, key: str, worker, kwargs: dict, units: list[tuple[str, int]],
               finish: Callable[[Path], None], unit: str = "shards", on_unit: Callable[[], None] | None = None) -> Path:
        """A map stage: units[i] = (folder under CACHE/stage-key/ that unit i commits, its gene tokens), run by the
        engine (`worker(i)`), then finish(folder) and the .done marker. on_unit runs after each finished unit."""
        out = self.cache / f"{stage}-{key}"
        if is_done(out):
            self.timings.cached[stage] += 1
            return out
        t0 = time.perf_counter()
        self.log(f"{stage}: computing")
        out.mkdir(parents=True, exist_ok=True)
        todo = [i for i, (rel, _) in enumerate(units) if not is_done(out / rel)]
        done_tokens = sum(t for i, (_, t) in enumerate(units) if i not in set(todo))
        self.progress.start(stage, len(units), sum(t for _, t in units), len(units) - len(todo), done_tokens, unit)

        def advance(status):
            self.timings.shards[stage] += 1
            self.timings.tokens[stage] += status["tokens"]
            self.progress.advance(1, status["tokens"])
            if on_unit is not None:
                on_unit()
            pause_at(f"{stage} unit {self.timings.shards[stage]}")

        try:
            engine.run_map(self.cfg.engine, worker, kwargs, todo, stage, advance)
        finally:
            self.progress.finish()
        finish(out)
        (out / ".done").write_text(key + "\n")
        self.timings.done(stage, time.perf_counter() - t0)
        self.timings.computed[stage] += 1
        return out

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
