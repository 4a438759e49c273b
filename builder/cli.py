"""The `atlas` command: parses options, calls the library, prints; `main` is the one place that turns an error into a
line.

Every option comes from SETTINGS in options.py (setting_option): its click type and range, its help, and its
default, the field of the dataclass that holds the setting; so a bad value fails before any work, the config file
of `atlas build` is checked by the same types, and no default is restated here. Outputs are checked up front too: a
folder that is not an earlier output of the command, an output that overlaps an input, a parent folder that cannot
be written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import AtlasError
from . import fsutil
from .fsutil import check_disjoint, check_replaceable
from .pausepoint import pause_at
from .options import in_dir, setting_option

data_dir_option = setting_option("--data-dir", "folders.data_dir")
site_option = setting_option("--site", "folders.site", "site_dir")


def _take(cls, options: dict):
    """A `cls` (a settings dataclass) of the options named as its fields, which leave `options`."""
    return cls(**{f.name: options.pop(f.name) for f in dataclasses.fields(cls) if f.name in options})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="atlas")
@click.option("--debug", is_flag=True, help="Show the traceback of an error, and the warnings of dependencies.")
@click.pass_context
def cli(ctx, debug):
    """Build, import, validate, render and preview feature atlases."""
    ctx.obj = {"debug": debug}


@cli.group(name="import")
def import_():
    """Convert a published atlas into atlas data."""


@import_.command(name="biodyn")
@click.argument("src", type=in_dir())
@setting_option("--atlas", "atlas", "name", required=True,
                help="Name of the new atlas (folder under --data-dir); an existing atlas of that name is replaced.")
@setting_option("--title", "title", unset=True, help="Title shown on the site (default: the model family's name and 'feature atlas (imported)').")
@setting_option("--model", "import.model", "family")
@data_dir_option
def import_biodyn_cmd(src, name, title, family, data_dir):
    """Import SRC, a folder in the predecessor's JSON format (layer_NN_features.json, ...)."""
    from .atlas.import_biodyn import import_biodyn

    target = check_replaceable(data_dir / name, "manifest.json", "an atlas")
    check_disjoint([("--data-dir/--atlas", target)], [("SRC", src)])
    out, report = import_biodyn(src, target, name, title, family)
    c = report.counts
    click.echo(f"imported {src} -> {out}: {c['layers']} layers, {c['features']} features, {c['alive']} alive, "
               f"{c['annotated']} annotated, {c['modules']} modules, {c['edges']} edges")
    for line in report.skipped:
        click.echo(f"skipped: {line}")
    for line in report.notes:
        click.echo(f"note: {line}")
    for file, n in sorted(report.nonstandard_numbers.items()):
        click.echo(f"note: {file}: {n} non-standard number(s) (Infinity/NaN) read; odds ratios kept as infinity, NaN as missing")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
def validate(path):
    """Check an atlas folder; print every problem found, one per line."""
    from .atlas.format import validate as check

    problems = check(path)
    for p in problems:
        click.echo(f"error: {_one_line(p)}", err=True)
    if problems:
        raise click.exceptions.Exit(2)
    click.echo(f"ok: {path}")


@cli.command()
@setting_option("--atlas", "atlas", "names", multiple=True, help="Atlas to render (repeatable; default: every atlas).")
@setting_option("--data-dir", "render.data_dir")
@site_option
def render(names, data_dir, site_dir):
    """Render atlas data into static sites under --site (site/NAME/) and write the index page."""
    from .atlas.format import atlas_names, require_atlas
    from .site.render import render as render_one

    check_disjoint([("--site", site_dir)], [("--data-dir", data_dir)])
    available = atlas_names(data_dir)
    if not names:
        if not available:
            raise AtlasError(f"{data_dir}: no atlas folder (with manifest.json) to render")
        names = available
    for name in names:
        require_atlas(name, data_dir, available)
        check_replaceable(site_dir / name, "atlas.json", "a rendered site")
    for name in names:
        t0 = time.perf_counter()
        out = render_one(data_dir / name, site_dir)
        files = sum(1 for p in out.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        click.echo(f"rendered {name} -> {out}/ ({files} files, {size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")


@contextlib.contextmanager
def _progress(label: str):
    """(started(total), advance(n)) callbacks drawing a progress bar on a terminal; silent otherwise."""
    if not sys.stderr.isatty():
        yield (lambda total: None), (lambda n: None)
        return
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        def started(total):
            bar.length = total

        yield started, bar.update


@cli.command()
@setting_option("--model", "model", "family", required=True)
@setting_option("--checkpoint", "checkpoint", required=True,
                help="Checkpoint folder (scGPT: args.json, vocab.json, best_model.pt; Geneformer: config.json, "
                     "weights, token and gene median dictionaries).")
@setting_option("--data", "data", required=True)
@setting_option("--out", "extract.out", required=True)
@setting_option("--layers", "layers", unset=True, help="Layers to keep, e.g. 0,3,5-7 (default: all).")
@setting_option("--max-cells", "max_cells", unset=True, show_default=False)
@setting_option("--batch-size", "batch_size", unset=True, show_default=False)
@setting_option("--device", "device")
@setting_option("--gene-column", "gene_column", unset=True,
                help="var column naming the genes (default: the index or column matching the vocabulary best).")
@setting_option("--seed", "extract.seed")
def extract(family, checkpoint, data, out, layers, max_cells, batch_size, device, gene_column, seed):
    """Write per-layer activations of a small run: layer_LL.npy, tokens.parquet, extract.json."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .pipeline.model.extract import extract as run

    check_disjoint([("--out", out)], [("--checkpoint", checkpoint), ("--data", data)])
    t0 = time.perf_counter()
    with _progress("cells") as (started, progress):
        record = run(family, checkpoint, data, out, layers, max_cells, batch_size, device, gene_column,
                     seed, progress=progress, started=started)
    ds = record["dataset"]
    click.echo(f"extracted {record['model']['name']}: {ds['cells']} cells, {record['tokens']} gene tokens, "
               f"layers {','.join(map(str, record['layers']))}, width {record['model']['width']} -> {out}/ "
               f"({ds['matched']} of {ds['genes']} genes in the vocabulary, var {ds['gene_column']!r}, "
               f"counts from {ds['counts']}; {time.perf_counter() - t0:.1f} s)")
    if record["model"]["head_problem"]:  # one note: the head's keys are among the ignored ones
        _head_note(record["model"]["head_problem"])
    elif record["model"]["ignored_checkpoint_keys"]:
        click.echo(f"note: ignored {len(record['model']['ignored_checkpoint_keys'])} checkpoint keys outside the "
                   f"encoder (prediction heads), e.g. {record['model']['ignored_checkpoint_keys'][0]}")


def _head_note(problem: str) -> None:
    """The note of a command that needs no prediction head, on a checkpoint whose head is incomplete."""
    click.echo(f"note: {problem}; the head is ignored (only atlas build --interventions needs it)")


@cli.group()
def sae():
    """Train TopK SAEs, encode activations into sparse codes, and compute feature statistics."""


@sae.command(name="train")
@setting_option("--activations", "sae.activations", required=True)
@setting_option("--layer", "sae.layer", required=True, help="Layer to train on.")
@setting_option("--expansion", "train.expansion")
@setting_option("--k", "train.k")
@setting_option("--out", "sae.train_out", required=True)
@setting_option("--centering", "train.centering")
@setting_option("--epochs", "train.epochs")
@setting_option("--batch-size", "train.batch_size")
@setting_option("--lr", "train.lr")
@setting_option("--aux-coef", "train.aux_coef")
@setting_option("--holdout", "train.holdout")
@setting_option("--seed", "train.seed")
def sae_train(activations, layer, out, **settings):
    """Train a TopK SAE on one layer's activations; report held-out variance explained, L0 and dead features."""
    from .pipeline.sae.train import TrainConfig, train_folder

    check_disjoint([("--out", out)], [("--activations", activations)])
    cfg = TrainConfig(**settings)
    t0 = time.perf_counter()
    model, metrics = train_folder(activations, layer, out, cfg, log=lambda m: click.echo(m, err=True))
    ve = metrics["variance_explained"]
    click.echo(f"trained SAE layer {layer}: {model.d_sae} features, k {cfg.k} -> {out}/ "
               f"(held-out: variance explained {'n/a' if ve is None else f'{ve:.3f}'}, L0 {metrics['l0'] or 0:.1f}, "
               f"dead {metrics['dead_features']}; {metrics['steps']} steps, {time.perf_counter() - t0:.1f} s)")


@sae.command(name="encode")
@setting_option("--sae", "sae", "sae_path", required=True,
                help="SAELens TopK folder, or the published study's .pt file.")
@setting_option("--activations", "sae.activations", required=True)
@setting_option("--layer", "sae.layer", required=True, help="Layer of the activations to encode.")
@setting_option("--out", "sae.encode_out", required=True)
def sae_encode(sae_path, activations, layer, out):
    """Encode one layer's activations into sparse codes (top-k indices and values per token)."""
    from .pipeline.sae.encode import encode_activations
    from .pipeline.sae.topk import load_sae

    check_disjoint([("--out", out)], [("--sae", sae_path), ("--activations", activations)])
    model = load_sae(sae_path)
    record = encode_activations(model, activations, layer, out,
                                {"layer": layer, "sae": str(sae_path), "activations": str(activations)})
    click.echo(f"encoded layer {layer}: {record['tokens']} tokens x k {record['k']} of {record['n_features']} features "
               f"-> {out}/ ({len(record['shards'])} shards)")


@sae.command(name="stats")
@setting_option("--codes", "sae.codes", required=True)
@setting_option("--out", "sae.stats_out", required=True)
@setting_option("--cell-type-column", "cell_type_column", unset=True,
                help="obs column of the dataset with cell types (default: none, no test).")
@setting_option("--top-genes", "stats.top_genes")
@setting_option("--min-support", "stats.min_support")
@setting_option("--top-cells", "stats.top_cells")
def sae_stats(codes, out, cell_type_column, **settings):
    """Feature statistics from codes: frequency, means, max, histograms, top genes and cells, cell-type tests."""
    from .pipeline.statistics.features import StatsConfig
    from .pipeline.statistics.folder import stats_command

    s = stats_command(codes, out, cell_type_column, StatsConfig(**settings))
    click.echo(f"statistics of layer {s['layer']}: {s['alive']} of {s['n_features']} features alive, "
               f"{s['tokens']} tokens -> {out}/")


@cli.command()
@setting_option("--genes", "annotate.genes", required=True)
@setting_option("--genesets", "genesets", multiple=True, help="Bundled database name, GMT path or NAME=PATH "
                "(repeatable; default: GO_BP, KEGG, Reactome, Hallmark).")
@setting_option("--trrust", "trrust", unset=True)
@setting_option("--string", "string", unset=True,
                help="STRING links file: protein.links.detailed or .full (with channel columns).")
@setting_option("--string-info", "string_info", unset=True)
@setting_option("--string-channels", "string_channels")
@setting_option("--string-min-score", "string_min_score")
@setting_option("--universe", "annotate.universe")
@setting_option("--universe-from-table", "annotate.universe_from_table")
@setting_option("--layer", "annotate.layer")
@setting_option("--top-n", "annotate.top_n", help="Top genes per feature in the tests (rank <= top-n).")
@setting_option("--min-size", "annotate.min_size")
@setting_option("--max-size", "annotate.max_size")
@setting_option("--alpha", "annotate.alpha", help="Benjamini-Hochberg level of the pooled family of a layer.")
@setting_option("--seed", "annotate.seed")
@setting_option("--baselines", "annotate.baselines")
@setting_option("--baseline-lists", "annotate.baseline_lists", multiple=True, metavar="NAME=TABLE")
@setting_option("--data", "annotate.data")
@setting_option("--gene-column", "gene_column", unset=True,
                help="var column of --data holding gene names (default: the best match).")
@setting_option("--coexpression-genes", "coexpression.n_genes")
@setting_option("--out", "annotate.out", required=True)
def annotate(genes, out, **options):
    """Test every feature's top genes against gene-set databases and networks, beside baselines."""
    from .pipeline.annotation.annotate import AnnotateConfig
    from .pipeline.annotation.folder import annotate_command, rate_summary

    cfg = _take(AnnotateConfig, options)
    result = annotate_command(genes, out, cfg, **options)
    for r in rate_summary(result):
        n, a = r["n_features"], r["annotated"]
        beside = ", ".join(f"{name} {share:.1%}" for name, share in r["baselines"].items())
        click.echo(f"{r['database']}: {a} of {n} features annotated ({a / max(n, 1):.1%})"
                   + (f"; baselines: {beside}" if beside else ""))
    click.echo(f"{result.enrichments.num_rows} enrichments (pooled q <= {cfg.alpha}) -> {out}/")


class _BuildProgress:
    """Progress of the map stages on a terminal: units done, gene tokens/s, projected time left."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None

    def start(self, stage, units, tokens, done_units, done_tokens, unit="shards"):
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn(unit + "  {task.fields[rate]:,.0f} tokens/s"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        self.t0, self.tokens = time.perf_counter(), 0
        self.task = self.bar.add_task(stage, total=units, completed=done_units, rate=0.0)

    def advance(self, units, tokens):
        if self.bar is None:
            return
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(self.task, advance=units, rate=rate)

    def finish(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None




BUILD_KEYS: dict[str, str] = {}  # parameter of `atlas build` -> the setting it gives (a key of the config file)


def build_option(flag: str, key: str, *decls: str, **kw):
    """An option of `atlas build` that gives a setting of its config file: None unless given, so that the file, the
    demo build's defaults, then BuildConfig fill it; --help shows BuildConfig's default."""
    BUILD_KEYS[next((d for d in decls if d.isidentifier()), flag.split("/")[0].lstrip("-").replace("-", "_"))] = key
    return setting_option(flag, key, *decls, unset=True, **kw)


@cli.command()
@build_option("--model", "model", help="Model family. Alone (no --checkpoint): the demo build, from the bundled "
              "demo model of that family and the bundled labelled PBMCs, SAEs trained now.")
@build_option("--checkpoint", "checkpoint", help="Checkpoint folder (scGPT: args.json, vocab.json, best_model.pt; "
              "Geneformer: a transformers folder) [default: the bundled demo model of --model].")
@build_option("--data", "data", help="Dataset .h5ad with raw counts (the demo build: the bundled PBMCs).")
@build_option("--sae", "sae", help="Folder of SAEs, one per layer: layer_LL/ (SAELens) or layer_LL.pt (published).")
@build_option("--train-sae", "train_sae", help="Train a TopK SAE per layer instead ([train] in the config).")
@build_option("--interventions", "interventions.enabled", help="Causal patching of SAE features on held-out cells "
              "([interventions] in the config; needs a checkpoint with its prediction head).")
@build_option("--genesets", "genesets", multiple=True, help="Bundled name, GMT path or NAME=PATH (repeatable; "
              "default: GO_BP, KEGG, Reactome, Hallmark).")
@build_option("--trrust", "trrust")
@build_option("--string", "string")
@build_option("--string-info", "string_info")
@build_option("--string-channels", "string_channels")
@build_option("--layers", "layers")
@build_option("--max-cells", "max_cells", show_default=False)
@build_option("--cell-type-column", "cell_type_column", help="obs column with cell types (cell-type tests, "
              "top-cell labels).")
@build_option("--donor-column", "donor_column")
@build_option("--shard-cells", "shard_cells")
@build_option("--engine", "engine.engine")
@build_option("--ray-address", "engine.ray_address")
@build_option("--workers", "engine.workers")
@build_option("--gpus-per-worker", "engine.gpus_per_worker")
@build_option("--random-init-model/--no-random-init-model", "baselines.random_init_model", "random_init_model")
@build_option("--random-dictionary/--no-random-dictionary", "baselines.random_dictionary", "random_dictionary")
@build_option("--coexpression/--no-coexpression", "baselines.coexpression", "coexpression")
@build_option("--pca-baseline/--no-pca-baseline", "baselines.pca", "pca_baseline")
@setting_option("--config", "build.config")
@build_option("--atlas", "atlas", "name", help="Atlas name (default: the model family; FAMILY-demo for the demo "
              "build). A default name never replaces an atlas imported or built from another checkpoint.")
@setting_option("--replace", "build.replace")
@build_option("--title", "title")
@build_option("--seed", "seed")
@setting_option("--cache", "folders.cache")
@data_dir_option
@site_option
@setting_option("--quiet", "quiet")
def build(config, replace, cache, data_dir, site_dir, quiet, **settings):
    """Run every stage: model, SAE codes, statistics, annotation, graphs; export atlas data; render the site.

    `atlas build --model scgpt` (or geneformer) alone builds the demo atlas from the bundled inputs."""
    from .atlas.export import export
    from .fsutil import held_cache
    from .models import bundled
    from .options import read_config
    from .pipeline.build import Builder
    from .pipeline.targets import check_provenance, check_targets
    from .site.render import render as render_site

    given: dict = {}

    def demo_defaults(values):
        given.update(values)
        return bundled.demo_defaults(values.get("model"), values)

    cfg = read_config(config, {BUILD_KEYS[k]: v for k, v in settings.items()}, demo_defaults)
    demo = not given.get("checkpoint")
    if demo:  # the bundled files, by checksum, before anything reads them
        bundled.verify(cfg.checkpoint)
        if Path(cfg.data) == bundled.DATA:
            bundled.verify(bundled.DATA)
    name = cfg.atlas or cfg.model
    check_targets(cfg, name, cache, data_dir, site_dir)
    if not given.get("atlas") and not replace:
        check_provenance(cfg, name, data_dir)
    if demo:
        click.echo(bundled.demo_sentence(cfg.model, cfg))
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    t0 = time.perf_counter()
    # One build at a time per cache: a second one waits, then finds the first one's stages cached.
    with held_cache(cache, lambda: click.echo(f"waiting: another build is using the cache {cache}", err=True)):
        pause_at("build locked")
        out = Builder(cfg, cache, log, _BuildProgress(quiet)).run()
        st = out.timings
        with st.timed("export"):
            path = export(out, data_dir)
        with st.timed("render"):
            site = render_site(path, site_dir)
    _summary(path, site, st, out, time.perf_counter() - t0)


def _summary(path, site, st, out, seconds):
    from .atlas.format import read_atlas
    from .atlas.summary import build_summary
    from .pipeline.cache import folder_bytes

    s = build_summary(read_atlas(path, check=False))
    t = s["totals"]
    click.echo(f"built {s['name']}: {s['layers']} layers, {t['alive']} of {t['n_features']} features alive")
    ci = lambda lo, hi: "" if lo is None else f" [{lo:.1%}-{hi:.1%}]"  # noqa: E731
    click.echo(f"  annotated {t['annotated']} of {t['tested']} features with a top-gene list "
               f"({t['annotated_rate']:.1%}{ci(t['annotated_rate_lo'], t['annotated_rate_hi'])})")
    if t.get("baselines"):
        click.echo("  baselines, share annotated (the features' share in the same comparison): " + ", ".join(
            f"{name} {b['rate']:.1%}{ci(b['lo'], b['hi'])}" + ("" if b["observed_lists"] == t["tested"] else
                                                            f" (features {b['observed']:.1%})")
            for name, b in t["baselines"].items()))
    if s["celltype_features"]:
        click.echo(f"  cell types: {s['celltype_features']} features pass the cell-type test, best AUC "
                   f"{s['best_auc']:.2f}")
    click.echo(f"  modules {s['modules']} (within-gene null: {s['modules_null']:.1f}); cross-layer edges "
               f"{s['cross_edges']} beyond the within-gene null, {s['decoder_matches']} decoder-cosine matches")
    for stage, unit in (("sample", "shards"), ("stream", "shards"), ("stats", "tasks")):
        if st.shards[stage]:
            rate = st.tokens[stage] / max(st.seconds[stage], 1e-9)
            what = "token-layers" if stage == "stats" else "tokens"
            click.echo(f"  {stage}: {st.shards[stage]} {unit}, {st.tokens[stage]:,} {what}, {rate:,.0f} {what}/s")
    click.echo("  time per stage: " + ", ".join(
        f"{k} {v:.1f} s" + (f" ({st.cached[k]} cached)" if st.cached[k] else "") for k, v in st.seconds.items())
        + (", cached: " + ", ".join(k for k in st.cached if k not in st.seconds) if set(st.cached) - set(st.seconds) else ""))
    sizes = {k: folder_bytes(out.results[k].folder) / 1e6 for k in ("stream", "stats")}
    click.echo(f"  cache: stream {sizes['stream']:,.1f} MB, stats {sizes['stats']:,.1f} MB")
    click.echo(f"  -> {path}/ and {site}/ in {seconds:.1f} s")
    head = out.results["plan"].record["model"].get("head_problem")
    if head:
        _head_note(head)


@cli.command()
@setting_option("--atlas", "atlas", "name", required=True, help="Atlas (under --data-dir) built by atlas build.")
@setting_option("--data", "data", required=True, help="Perturb-seq .h5ad with raw counts.")
@setting_option("--perturbation-column", "perturb.perturbation_column", "column", required=True)
@setting_option("--control", "perturb.control", required=True)
@setting_option("--batch-column", "perturb.batch_column")
@setting_option("--trrust", "trrust", unset=True, help="TRRUST TSV (TF, target, mode, PubMed ids): TF target sets "
                "for the specificity test (without it, no TF test).")
@setting_option("--layers", "layers", unset=True, help="Layers of the atlas to test, e.g. 0,3 (default: every layer).")
@setting_option("--dataset-name", "perturb.dataset_name")
@setting_option("--min-cells", "perturb.min_cells")
@setting_option("--pseudo", "perturb.pseudo")
@setting_option("--top-genes", "perturb.top_genes")
@setting_option("--min-targets", "perturb.min_targets")
@setting_option("--max-controls", "perturb.max_controls")
@setting_option("--on-target", "perturb.on_target")
@setting_option("--alpha", "perturb.alpha")
@setting_option("--seed", "perturb.seed")
@setting_option("--checkpoint", "checkpoint", unset=True, help="Checkpoint folder (default: the one the atlas "
                "records; checked against its hash).")
@setting_option("--sae", "perturb.sae")
@setting_option("--cache", "folders.cache", help="Stage cache of the atlas' build (where its trained SAEs are).")
@setting_option("--gene-column", "gene_column", unset=True,
                help="var column naming the genes (default: the best match).")
@setting_option("--device", "device")
@data_dir_option
@site_option
@setting_option("--quiet", "quiet")
def perturb(name, data, column, control, batch_column, trrust, layers, dataset_name, checkpoint, sae, cache,
            gene_column, device, data_dir, site_dir, quiet, **settings):
    """Run the atlas' model and SAEs over a Perturb-seq dataset; add the perturbation response and TF specificity
    to the atlas (and re-render its site when site/NAME exists)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .atlas.format import read_atlas, require_atlas
    from .atlas.perturbation import write
    from .pipeline.perturbation.screen import analyse, on_target_counts
    from .pipeline.perturbation.stats import PerturbConfig
    from .site.render import render as render_site

    target = require_atlas(name, data_dir)
    site = site_dir / name
    check_disjoint([("--data-dir/--atlas", target)], [("--data", data), ("--trrust", trrust)])
    cfg = PerturbConfig(**settings)
    dataset = dataset_name or Path(data).name.removesuffix(".h5ad")
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    t0 = time.perf_counter()
    atlas = read_atlas(target)
    response, tf, record = analyse(atlas.manifest, atlas.name, atlas.path, data, column, control, cfg, dataset, layers,
                                   trrust, batch_column, checkpoint, sae, cache, gene_column, device, log, _head_note)
    atlas = write(atlas.path, dataset, response, tf, record, log)
    s = record["summary"]
    click.echo(f"perturb {dataset} -> {atlas.path}/: {s['n_perturbations']} perturbations against {s['n_controls']} "
               f"controls ({s['n_skipped']} skipped below --min-cells {cfg.min_cells}), "
               f"{time.perf_counter() - t0:.1f} s")
    if cfg.on_target:
        c = on_target_counts(record)
        click.echo(f"  on-target knockdown (--on-target {cfg.on_target:g}): {c['removed']} perturbed cells left out, "
                   f"{c['unmeasured']} perturbation(s) unmeasured and kept whole")
    ps = s["pseudo"]
    if ps["n_pseudo"]:
        click.echo(f"  pseudo-perturbations: {ps['n_pseudo']}, mean responding features {ps['mean_responding']:.2f}, "
                   f"false-positive rate {ps['false_positive_rate']:.3f} at alpha {cfg.alpha:g}")
    if s["n_tf"]:
        click.echo(f"  TFs specific: {s['n_specific']} of {s['n_tf']} ({s['fraction']:.1%}, 95% CI "
                   f"{s['ci_lo']:.1%}-{s['ci_hi']:.1%}); expression ceiling {s['ceiling_n_specific']} of {s['n_tf']}; "
                   f"non-TF negative control {s['negative_n_specific']} of {s['negative_n']}")
    if (site / "atlas.json").is_file():
        render_site(atlas.path, site_dir)
        click.echo(f"  re-rendered {site}/")


@cli.command()
@setting_option("--atlas", "link.atlas", "names", multiple=True, required=True)
@setting_option("--twin", "link.twin")
@setting_option("--layers", "layers", unset=True, help="Layers of the first atlas, e.g. 0,3 (default: every layer).")
@setting_option("--other-layers", "link.other_layers", unset=True)
@setting_option("--top", "link.top")
@setting_option("--min-cells", "link.min_cells")
@setting_option("--top-genes", "link.top_genes")
@setting_option("--alpha", "link.alpha")
@setting_option("--block", "link.block")
@setting_option("--cache", "link.cache", "caches", multiple=True)
@data_dir_option
@site_option
@setting_option("--quiet", "quiet")
def link(names, twin, layers, other_layers, caches, data_dir, site_dir, quiet, **settings):
    """Link features of two atlases built on the same cells (or of an atlas and its untrained twin) by their per-cell
    activation profiles; write each one's best matches into both atlases (and re-render their sites when site/NAME
    exists)."""
    from .atlas.format import read_atlas, require_atlas
    from .atlas.links import read_input, write
    from .options import CACHE
    from .pipeline.links.run import LinkConfig, analyse, stability
    from .site.render import render as render_site

    if twin and len(names) != 1:
        raise click.UsageError(f"--twin links one --atlas to its own untrained twin; {len(names)} given")
    if not twin and len(set(names)) != 2:
        raise click.UsageError("give two different atlases (--atlas A --atlas B), or one with --twin")
    cfg = LinkConfig(**settings)
    atlases = [read_atlas(require_atlas(n, data_dir)) for n in names]
    inputs = [read_input(a, cfg.top_genes) for a in atlases]
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    t0 = time.perf_counter()
    result = analyse(inputs[0], None if twin else inputs[1], list(caches) or [CACHE], cfg, layers, other_layers, log)
    written = write(atlases, result.sides, log)
    click.echo(f"link {names[0]} <-> {result.sides[0][1]}: {result.cells} shared cells, "
               f"{time.perf_counter() - t0:.1f} s")
    for name, other, rows, record in result.sides:
        for pair in record["layer_pairs"]:
            click.echo(f"  {_link_line(name, other, pair)}")
        same = stability(record)
        if same:
            click.echo(f"  {name}: one model, two SAEs: features found again by {other} beyond both nulls in the same "
                       f"layer (stability across seeds): " + ", ".join(
                           f"layer {p['layer']} {p['share']:.1%} [{p['share_lo']:.1%}-{p['share_hi']:.1%}]"
                           for p in same if p["tested"]))
    for atlas in written:
        if (site_dir / atlas.name / "atlas.json").is_file():
            render_site(atlas.path, site_dir)
            click.echo(f"  re-rendered {site_dir / atlas.name}/")


def _link_line(name: str, other: str, pair: dict) -> str:
    """One pair of layers of `atlas link`'s summary: the share with a match beyond the nulls, and the twin's."""
    if not pair["tested"]:
        return f"{name} layer {pair['layer']} -> {other} layer {pair['other_layer']}: no feature active in enough cells"
    ci = f"{pair['share']:.1%} [{pair['share_lo']:.1%}-{pair['share_hi']:.1%}]"
    what = "beyond both nulls" if pair.get("beyond_twin") is not None else "beyond the cell-type shuffle"
    twin = (f"; the untrained twin's {pair['twin_share']:.1%} [{pair['twin_share_lo']:.1%}-{pair['twin_share_hi']:.1%}]"
            if pair.get("twin_tested") else "")
    return (f"{name} layer {pair['layer']} -> {other} layer {pair['other_layer']}: {pair['beyond_both']} of "
            f"{pair['tested']} features matched {what}, {ci}{twin}")


@cli.command()
@setting_option("--model", "pretrain.model", "family", required=True)
@setting_option("--data", "data", required=True, help="Training cells: .h5ad with raw counts (symbols for scGPT, "
                "var Ensembl ids for Geneformer).")
@setting_option("--out", "pretrain.out", required=True)
@setting_option("--layers", "pretrain.layers")
@setting_option("--width", "pretrain.width")
@setting_option("--heads", "pretrain.heads")
@setting_option("--steps", "pretrain.steps")
@setting_option("--batch-size", "pretrain.batch_size")
@setting_option("--lr", "pretrain.lr")
@setting_option("--holdout", "pretrain.holdout")
@setting_option("--seed", "pretrain.seed")
@setting_option("--random-init", "pretrain.random_init")
def pretrain(family, data, out, random_init, **settings):
    """Pretrain a small scGPT or Geneformer on DATA with the family's objective; write the checkpoint and its
    model card (held-out masked-prediction accuracy against trivial baselines, loss curve)."""
    import shlex

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .models.pretrain import PretrainConfig
    from .models.pretrain import pretrain as run

    check_disjoint([("--out", out)], [("--data", data)])
    cfg = PretrainConfig(**{**settings, "steps": 0 if random_init else settings["steps"]})
    command = "atlas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["pretrain"] else None
    t0 = time.perf_counter()
    with _progress("steps") as (started, progress):
        # --out is absent, empty or an earlier checkpoint of this command (checked by its type): replace it.
        rec = run(family, data, out, cfg, command=command, started=started, progress=progress, replace_out=True)
    h, d = rec["heldout"], rec["data"]
    base = rec["baselines"].get("most_frequent_bin_accuracy", rec["baselines"].get("most_frequent_gene_accuracy"))
    what = f"pretrained {cfg.steps} steps" if rec["trained"] else "wrote the untrained twin"
    click.echo(f"{what}: {family} {cfg.layers} x {cfg.width} on {d['train_cells']} cells ({len(d['heldout_cells'])} "
               f"held out) -> {out}/ ({time.perf_counter() - t0:.0f} s); held-out accuracy {h['heldout_accuracy']:.4f} "
               f"vs {base:.4f} for the most frequent {'bin' if family == 'scgpt' else 'gene'}, loss "
               f"{h['heldout_loss']:.4f}")


@cli.command()
@setting_option("--site", "serve.site", "site_dir")
@setting_option("--port", "serve.port")
@setting_option("--host", "serve.host")
def serve(site_dir, port, host):
    """Preview the rendered sites with gzip, as GitHub Pages serves them."""
    from .site.serve import make_server, served_atlases

    if not site_dir.is_dir():
        raise AtlasError(f"{site_dir}: no rendered site (run `atlas render` first)")
    try:
        server = make_server(site_dir, port, host)
    except OSError as e:
        raise AtlasError(f"--host {host} --port {port}: cannot listen ({e.strerror})") from None
    click.echo(f"serving {site_dir}/ at http://{host}:{server.server_port}/ "
               f"({', '.join(a + '/' for a in served_atlases(site_dir)) or 'no atlas yet'}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "(no message)"


def describe(e: BaseException) -> tuple[str, int]:
    """(the `error:` line's text, exit status) for an exception that reached the command line."""
    if isinstance(e, (KeyboardInterrupt, click.exceptions.Abort)):
        done = fsutil.REPLACED  # outputs swapped in before the interrupt are whole, and new: say which
        return "interrupted" + (f"; already replaced: {', '.join(map(str, done))}" if done else ""), 130
    if isinstance(e, AtlasError):
        return str(e), 2
    if isinstance(e, click.ClickException):
        return e.format_message(), 2
    if isinstance(e, OSError) and e.strerror:  # a file system refusal: read-only folder, disk full, ...
        where = e.filename if e.filename is not None else ""
        return (f"{where}: " if where else "") + e.strerror + (f" -> {e.filename2}" if e.filename2 else ""), 2
    if isinstance(e, MemoryError):
        return "out of memory (try --max-cells or fewer --layers)", 2
    return (f"internal error ({type(e).__name__}: {e}); rerun with --debug for the traceback, and please report "
            "it with the command that caused it"), 1


NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2; 8.1 raises Exit(0)


def _debug_requested(args: list[str]) -> bool:
    """--debug among the options before the subcommand (it is an option of the `atlas` group)."""
    for a in args:
        if a == "--debug":
            return True
        if not a.startswith("-"):
            return False
    return False


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    fsutil.REPLACED.clear()  # tests call main() many times in one process
    if not debug:
        # Dependencies' warnings (pandas FutureWarning, torch UserWarning, transformers' logging) are not
        # the user's to act on; --debug shows them.
        warnings.simplefilter("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        # make_context + invoke rather than cli.main: click's main prints a blank line on Ctrl-C, and the
        # error line must be the only one
        with cli.make_context("atlas", args) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as e:  # --help, --version, and `validate` finding problems
        sys.exit(e.exit_code)
    except NO_ARGS_IS_HELP as e:  # `atlas` or `atlas sae` alone: the help, as click would show it
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except BaseException as e:  # noqa: BLE001 - the one boundary: everything becomes one line
        if debug or isinstance(e, SystemExit):
            raise
        message, status = describe(e)
        click.echo(f"error: {_one_line(message)}", err=True)
        sys.exit(status)


if __name__ == "__main__":
    main()
