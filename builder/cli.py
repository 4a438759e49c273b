"""The `atlas` command: parses options, calls the library; `main` is the one place that turns an error into a line.

Every option's type and range is a click type from options.py, so a bad value fails before any work, and the
config file of `atlas build` is checked by the same types. Outputs are checked up front too: a folder that is
not an earlier output of the command, an output that overlaps an input, a parent folder that cannot be written.
"""

from __future__ import annotations

import contextlib
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
from .options import (FAMILY, LAYER, PORT, POSITIVE, SEED, SETTINGS, UNIT_OPEN, AtlasName, GeneListFile,
                      GeneSetSpec, Label, OutputFolder, in_dir, in_file, in_path, setting_option)

data_dir_option = click.option("--data-dir", type=OutputFolder(None), default=Path("atlas_data"),
                               show_default=True, help="Folder holding one folder per atlas.")
site_option = click.option("--site", "site_dir", type=OutputFolder(None), default=Path("site"),
                           show_default=True, help="Folder the sites are rendered into.")


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
@click.option("--atlas", "name", required=True, type=AtlasName(),
              help="Name of the new atlas (folder under --data-dir); an existing atlas of that name is replaced.")
@click.option("--title", help="Title shown on the site (default: the atlas name).")
@click.option("--model", "family", help="Model family to record, e.g. scgpt or geneformer.")
@data_dir_option
def import_biodyn_cmd(src, name, title, family, data_dir):
    """Import SRC, a folder in the predecessor's JSON format (layer_NN_features.json, ...)."""
    from .atlas.format import read_atlas
    from .atlas.import_biodyn import import_biodyn

    target = check_replaceable(data_dir / name, "manifest.json", "an atlas")
    check_disjoint([("--data-dir/--atlas", target)], [("SRC", src)])
    out, report = import_biodyn(src, target, name, title, family)
    atlas = read_atlas(out, check=False)
    layers = atlas.table("layers").to_pylist()
    click.echo(f"imported {src} -> {out}: {len(layers)} layers, {sum(r['n_features'] for r in layers)} features, "
               f"{sum(r['alive'] for r in layers)} alive, {sum(r['annotated'] for r in layers)} annotated, "
               f"{atlas.table('modules').num_rows} modules, {atlas.table('edges').num_rows} edges")
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


def atlas_names(data_dir: Path) -> list[str]:
    """The atlas folders (those with a manifest.json) in data_dir."""
    return sorted(p.name for p in data_dir.iterdir() if (p / "manifest.json").is_file()) if data_dir.is_dir() else []


def require_atlas(name: str, data_dir: Path, available: list[str] | None = None) -> Path:
    """data_dir/name, or one line naming the atlases there."""
    available = atlas_names(data_dir) if available is None else available
    if name not in available:
        raise AtlasError(f"atlas {name!r} not found in {data_dir} (available: {', '.join(available) or 'none'})")
    return data_dir / name


@cli.command()
@click.option("--atlas", "names", multiple=True, type=AtlasName(), help="Atlas to render (repeatable; default: every atlas).")
@click.option("--data-dir", type=in_dir(), default=Path("atlas_data"), show_default=True,
              help="Folder holding one folder per atlas.")
@site_option
def render(names, data_dir, site_dir):
    """Render atlas data into static sites under --site (site/NAME/) and write the index page."""
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


model_option = click.option("--model", "family", type=FAMILY, required=True,
                            help="Model family of the checkpoint.")
checkpoint_option = click.option("--checkpoint", type=in_dir(), required=True,
                                 help="Checkpoint folder (scGPT: args.json, vocab.json, best_model.pt; Geneformer: "
                                      "config.json, weights, token and gene median dictionaries).")


@cli.command()
@model_option
@checkpoint_option
@setting_option("--data", "data", required=True)
@click.option("--out", type=OutputFolder("extract.json", "an activations folder"), required=True,
              help="Activations folder to write (replaced atomically).")
@setting_option("--layers", "layers", help="Layers to keep, e.g. 0,3,5-7 (default: all).")
@setting_option("--max-cells", "max_cells")
@setting_option("--batch-size", "batch_size")
@setting_option("--device", "device", default="cpu", show_default=True)
@setting_option("--gene-column", "gene_column",
                help="var column naming the genes (default: the index or column matching the vocabulary best).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of scGPT's binning ties and gene sampling.")
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


activations_option = click.option("--activations", type=in_dir(), required=True,
                                  help="Folder written by `atlas extract`.")


@sae.command(name="train")
@activations_option
@click.option("--layer", type=LAYER, required=True, help="Layer to train on.")
@setting_option("--expansion", "train.expansion", default=4, show_default=True)
@setting_option("--k", "train.k", default=32, show_default=True)
@click.option("--out", type=OutputFolder("cfg.json", "an SAE folder"), required=True,
              help="SAE folder to write (SAELens layout, replaced atomically).")
@setting_option("--centering", "train.centering", default="pre-bias", show_default=True)
@setting_option("--epochs", "train.epochs", default=5, show_default=True)
@setting_option("--batch-size", "train.batch_size", default=4096, show_default=True)
@setting_option("--lr", "train.lr", default=5e-4, show_default=True)
@setting_option("--aux-coef", "train.aux_coef", default=1 / 32, show_default=True)
@setting_option("--holdout", "train.holdout", default=0.1, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of initialisation, shuffling and the held-out cells.")
def sae_train(activations, layer, expansion, k, out, centering, epochs, batch_size, lr, aux_coef, holdout, seed):
    """Train a TopK SAE on one layer's activations; report held-out variance explained, L0 and dead features."""
    import tempfile

    from .fsutil import read_parquet
    from .pipeline.model.extract import read_activations
    from .pipeline.sae.train import TrainConfig, train_heldout

    check_disjoint([("--out", out)], [("--activations", activations)])
    acts, record = read_activations(activations, layer)
    if k > expansion * acts.shape[1]:
        raise AtlasError(f"--k {k}: more than the SAE's {expansion * acts.shape[1]} features "
                         f"(--expansion {expansion} x width {acts.shape[1]})")
    cells = read_parquet(Path(activations) / "tokens.parquet", columns=["cell"])["cell"].to_numpy()
    if len(cells) != len(acts):
        raise AtlasError(f"{activations}/tokens.parquet: {len(cells)} rows for {len(acts)} activation rows")
    cfg = TrainConfig(expansion=expansion, k=k, centering=centering, epochs=epochs, batch_size=batch_size, lr=lr,
                      aux_coef=aux_coef, holdout=holdout, seed=seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".sae-train-", dir=out.parent if out.parent.is_dir() else None) as scratch:
        model, metrics = train_heldout(acts, cells, cfg, Path(scratch), where=f"{activations}/layer {layer}",
                                       log=lambda m: click.echo(m, err=True))
    model.save(out, {"layer": layer, "model_name": record["model"]["name"], "hook_name": f"layer {layer} residual",
                     "activations": str(activations), "training": metrics})
    ve = metrics["variance_explained"]
    click.echo(f"trained SAE layer {layer}: {model.d_sae} features, k {k} -> {out}/ "
               f"(held-out: variance explained {'n/a' if ve is None else f'{ve:.3f}'}, L0 {metrics['l0'] or 0:.1f}, "
               f"dead {metrics['dead_features']}; {metrics['steps']} steps, {time.perf_counter() - t0:.1f} s)")


@sae.command(name="encode")
@click.option("--sae", "sae_path", type=in_path(), required=True,
              help="SAELens TopK folder, or the published study's .pt file.")
@activations_option
@click.option("--layer", type=LAYER, required=True, help="Layer of the activations to encode.")
@click.option("--out", type=OutputFolder("codes.json", "a codes folder"), required=True,
              help="Codes folder to write (replaced atomically).")
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
@click.option("--codes", type=in_dir(), required=True, help="Folder written by `atlas sae encode`.")
@click.option("--out", type=OutputFolder("stats.json", "a statistics folder"), required=True,
              help="Statistics folder to write (replaced atomically).")
@click.option("--cell-type-column", help="obs column of the dataset with cell types (default: none, no test).")
@setting_option("--top-genes", "stats.top_genes", default=20, show_default=True)
@setting_option("--min-support", "stats.min_support", default=5, show_default=True)
@setting_option("--top-cells", "stats.top_cells", default=10, show_default=True)
def sae_stats(codes, out, cell_type_column, top_genes, min_support, top_cells):
    """Feature statistics from codes: frequency, means, max, histograms, top genes and cells, cell-type tests."""
    from .fsutil import read_parquet
    from .jsonio import read_json
    from .pipeline.sae.encode import read_codes
    from .pipeline.statistics.features import StatsConfig
    from .pipeline.statistics.folder import stats_of_codes

    record, _ = read_codes(codes)
    if not isinstance(record.get("activations"), str):
        raise AtlasError(f"{codes / 'codes.json'}: field 'activations' must name the activations folder")
    acts_dir = Path(record["activations"])
    extract = read_json(acts_dir / "extract.json")
    ds = extract.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("path"), str) or not isinstance(ds.get("cells"), int):
        raise AtlasError(f"{acts_dir / 'extract.json'}: field 'dataset' must be an object with a path and cells")
    h5ad = Path(ds["path"])
    check_disjoint([("--out", out)], [("--codes", codes), ("the activations of codes.json", acts_dir),
                                      ("the dataset of extract.json", h5ad)])
    tokens = read_parquet(acts_dir / "tokens.parquet", ["token_id", "gene"]).to_pandas().drop_duplicates()
    names = dict(zip(tokens["token_id"].tolist(), tokens["gene"].tolist()))
    obs = _read_obs(h5ad).iloc[: ds["cells"]]
    types = None
    if cell_type_column is not None:
        if cell_type_column not in obs.columns:
            raise AtlasError(f"{h5ad}: obs has no column {cell_type_column!r} "
                             f"(has: {', '.join(map(str, obs.columns)) or 'none'})")
        types = obs[cell_type_column].astype(str).to_numpy()
    cfg = StatsConfig(top_genes=top_genes, min_support=min_support, top_cells=top_cells)
    result = stats_of_codes(codes, out, names, obs, types, cfg,
                            {"layer": record["layer"], "codes": str(codes), "cell_type_column": cell_type_column})
    f = result["features"]
    click.echo(f"statistics of layer {record['layer']}: {int(f['alive'].sum())} of {len(f['alive'])} features alive, "
               f"{result['tokens']} tokens -> {out}/")


def _read_obs(path: Path):
    import anndata

    if not path.is_file():
        raise AtlasError(f"{path}: dataset not found (named by extract.json)")
    try:
        return anndata.read_h5ad(path, backed="r").obs
    except Exception as e:  # h5py and anndata raise many kinds for a damaged file
        raise AtlasError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from None


@cli.command()
@click.option("--genes", type=in_file(), required=True,
              help="Table of top genes: layer, feature, gene, rank (rank 1 = first; Parquet, CSV or TSV).")
@click.option("--genesets", multiple=True, type=GeneSetSpec(), help="Bundled database name, GMT path or NAME=PATH "
              "(repeatable; default: GO_BP, KEGG, Reactome, Hallmark).")
@setting_option("--trrust", "trrust")
@setting_option("--string", "string", "string_links",
                help="STRING links file: protein.links.detailed or .full (with channel columns).")
@setting_option("--string-info", "string_info")
@setting_option("--string-channels", "string_channels", default="experimental,database", show_default=True)
@setting_option("--string-min-score", "string_min_score", default=700, show_default=True)
@click.option("--universe", type=GeneListFile(),
              help="Genes that could enter a top list, one per line (a build: genes with >= min_support tokens).")
@click.option("--universe-from-table", is_flag=True,
              help="Use the genes of the table instead: each list is then judged against the other listed genes.")
@click.option("--layer", type=LAYER, help="Layer of a table without a layer column.")
@setting_option("--top-n", "annotate.top_n", default=20, show_default=True,
                help="Top genes per feature in the tests (rank <= top-n).")
@setting_option("--min-size", "annotate.min_size", default=5, show_default=True)
@setting_option("--max-size", "annotate.max_size", default=500, show_default=True)
@setting_option("--alpha", "annotate.alpha", default=0.05, show_default=True,
                help="Benjamini-Hochberg level of the pooled family of a layer.")
@setting_option("--seed", "annotate.seed", default=0, show_default=True)
@click.option("--baselines", default="random_genes", show_default=True,
              help="Comma-separated: random_genes, coexpression (needs --data); or 'none'.")
@click.option("--baseline-lists", multiple=True, metavar="NAME=TABLE",
              help="Any other baseline: a table of gene lists (layer, list, gene, rank), e.g. pca=pca.parquet.")
@click.option("--data", type=in_file(),
              help="The dataset (.h5ad, raw counts) whose co-expression the coexpression baseline clusters.")
@click.option("--gene-column", help="var column of --data holding gene names (default: the best match).")
@click.option("--coexpression-genes", type=POSITIVE, default=4000, show_default=True,
              help="Most detected universe genes clustered by the coexpression baseline.")
@click.option("--out", type=OutputFolder("annotate.json", "an annotation folder"), required=True,
              help="Annotation folder to write (replaced atomically).")
def annotate(genes, genesets, trrust, string_links, string_info, string_channels, string_min_score, universe,
             universe_from_table, layer, top_n, min_size, max_size, alpha, seed, baselines, baseline_lists, data,
             gene_column, coexpression_genes, out):
    """Test every feature's top genes against gene-set databases and networks, beside baselines."""
    from .parse import string_channels as parse_channels
    from .pipeline.annotation import annotate as ann_mod
    from .pipeline.annotation.genesets import load_genesets, read_string, read_trrust

    if min_size > max_size:
        raise AtlasError(f"--min-size {min_size} is larger than --max-size {max_size}")
    if (universe is not None) == universe_from_table:
        raise AtlasError("give one of --universe FILE (the genes that could enter a top list) or "
                         "--universe-from-table")
    wanted = _baseline_names(baselines, data)
    lists = [_baseline_spec(spec) for spec in baseline_lists]
    gmts = [Path(g.partition("=")[2] or g) for g in genesets]  # bundled names are no paths
    check_disjoint([("--out", out)], [("--genes", genes), ("--trrust", trrust), ("--string", string_links),
                                      ("--string-info", string_info), ("--data", data),
                                      *(("--genesets", p) for p in gmts if p.is_file()),
                                      *(("--baseline-lists", p) for _, p in lists)])
    table = ann_mod.read_gene_table(genes, layer)
    uni = universe if universe is not None else sorted(set(table["gene"].astype(str)))
    extra = [_baseline_table(name, path, layer) for name, path in lists]
    dbs = load_genesets(genesets)
    nets = []
    if trrust:
        sets, edges = read_trrust(trrust)
        dbs.append(sets)
        nets.append(edges)
    if string_links:
        nets.append(read_string(string_links, string_info, string_min_score, parse_channels(string_channels)))
    cfg = ann_mod.AnnotateConfig(top_n=top_n, min_size=min_size, max_size=max_size, alpha=alpha, seed=seed,
                                 random_genes="random_genes" in wanted)
    if "coexpression" in wanted:
        from .pipeline.annotation.coexpression import CoexpressionConfig, coexpression_baseline

        coex = CoexpressionConfig(n_genes=coexpression_genes, size=top_n, seed=seed)
        extra.append(coexpression_baseline(data, uni, sorted(set(table["layer"].astype(int))), coex, gene_column)[0])
    result = ann_mod.annotate(table, dbs, nets, universe=uni, cfg=cfg, baselines=extra)
    ann_mod.write_annotation(out, result)
    _print_rates(result, alpha, out)


def _baseline_names(spec: str, data) -> list[str]:
    names = [x.strip() for x in spec.split(",") if x.strip()]
    if names == ["none"]:
        return []
    bad = [x for x in names if x not in ("random_genes", "coexpression")]
    if bad:
        raise AtlasError(f"--baselines: unknown baseline {bad[0]!r} (expected random_genes, coexpression or none; "
                         "other lists go in with --baseline-lists NAME=TABLE)")
    if "coexpression" in names and data is None:
        raise AtlasError("--baselines coexpression needs --data FILE.h5ad (the dataset whose co-expression is "
                         "clustered)")
    return names


def _baseline_spec(spec: str) -> tuple[str, Path]:
    name, eq, path = spec.partition("=")
    if not eq or not name or not path:
        raise AtlasError(f"--baseline-lists {spec!r}: expected NAME=TABLE")
    if not Path(path).is_file():
        raise AtlasError(f"--baseline-lists {spec!r}: {path}: no such file")
    return name, Path(path)


def _baseline_table(name: str, path: Path, layer):
    from .pipeline.annotation.annotate import read_gene_table
    from .pipeline.annotation.baselines import Baseline

    return Baseline(name, read_gene_table(path, layer, id_column="list"), f"{name}: gene lists from {path.name}")


def _print_rates(result, alpha, out) -> None:
    rates = result.rates.to_pandas()
    base = result.baselines.to_pandas()
    for db, r in rates.groupby("database", sort=False):
        n, a = r["n_features"].sum(), r["annotated"].sum()
        beside = [f"{name} {grp['expected'].mean():.1%}" for name, grp in base[base.measure == db].groupby(
            "baseline", sort=False)]
        click.echo(f"{db}: {a} of {n} features annotated ({a / max(n, 1):.1%})"
                   + (f"; baselines: {', '.join(beside)}" if beside else ""))
    click.echo(f"{result.enrichments.num_rows} enrichments (pooled q <= {alpha}) -> {out}/")


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


@cli.command()
@setting_option("--model", "model", help="Model family. Alone (no --checkpoint): the demo build, from the bundled "
                "demo model of that family and the bundled labelled PBMCs, SAEs trained now.")
@setting_option("--checkpoint", "checkpoint", help="Checkpoint folder (scGPT: args.json, vocab.json, best_model.pt; "
                "Geneformer: a transformers folder) [default: the bundled demo model of --model].")
@setting_option("--data", "data", help="Dataset .h5ad with raw counts [default: the bundled PBMCs for the demo build, "
                "else atlas_data/inputs/immune_sample.h5ad].")
@setting_option("--sae", "sae", help="Folder of SAEs, one per layer: layer_LL/ (SAELens) or layer_LL.pt (published).")
@click.option("--train-sae", is_flag=True, help="Train a TopK SAE per layer instead ([train] in the config).")
@click.option("--interventions", is_flag=True, help="Causal patching of SAE features on held-out cells "
              "([interventions] in the config; needs a checkpoint with its prediction head).")
@setting_option("--genesets", "genesets", multiple=True, help="Bundled name, GMT path or NAME=PATH (repeatable; "
                "default: GO_BP, KEGG, Reactome, Hallmark).")
@setting_option("--trrust", "trrust")
@setting_option("--string", "string", "string_links")
@setting_option("--string-info", "string_info")
@setting_option("--string-channels", "string_channels")
@setting_option("--layers", "layers")
@setting_option("--max-cells", "max_cells")
@setting_option("--cell-type-column", "cell_type_column", help="obs column with cell types (cell-type tests, "
                "top-cell labels).")
@setting_option("--donor-column", "donor_column")
@setting_option("--shard-cells", "shard_cells", help="Cells per shard (default 256): the unit of work and resume.")
@setting_option("--engine", "engine.engine", help="Where the map stages run (default local).")
@setting_option("--ray-address", "engine.ray_address")
@setting_option("--workers", "engine.workers")
@setting_option("--gpus-per-worker", "engine.gpus_per_worker")
@click.option("--random-init-model/--no-random-init-model", "random_init_model", default=None,
              help=SETTINGS["baselines.random_init_model"].help)
@click.option("--coexpression/--no-coexpression", "coexpression", default=None,
              help=SETTINGS["baselines.coexpression"].help)
@click.option("--pca-baseline/--no-pca-baseline", "pca_baseline", default=None, help=SETTINGS["baselines.pca"].help)
@click.option("--config", "config", type=in_file(), help="atlas.toml with any of these settings.")
@setting_option("--atlas", "atlas", "name", help="Atlas name (default: the model family; FAMILY-demo for the demo "
                "build). A default name never replaces an atlas imported or built from another checkpoint.")
@click.option("--replace", is_flag=True, help="Let the default atlas name replace an atlas that came from elsewhere.")
@setting_option("--title", "title")
@setting_option("--seed", "seed", help="Seed of every random step (default 0).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=Path(".atlas_cache"),
              show_default=True, help="Stage cache; an interrupted build resumes from it.")
@data_dir_option
@site_option
@click.option("--quiet", is_flag=True, help="Print only the summary.")
def build(model, checkpoint, data, sae, train_sae, interventions, genesets, trrust, string_links, string_info, string_channels,
          layers, max_cells, cell_type_column, donor_column, shard_cells, engine, ray_address, workers,
          gpus_per_worker, random_init_model, coexpression, pca_baseline, config, name, title, seed, replace, cache,
          data_dir, site_dir, quiet):
    """Run every stage: model, SAE codes, statistics, annotation, graphs; export atlas data; render the site.

    `atlas build --model scgpt` (or geneformer) alone builds the demo atlas from the bundled inputs."""
    from .atlas.export import export
    from .fsutil import held
    from .models import bundled
    from .options import read_config
    from .pipeline.build import Builder
    from .pipeline.targets import check_provenance, check_targets
    from .site.render import render as render_site

    given: dict = {}

    def demo_defaults(values):
        given.update(values)
        return bundled.demo_defaults(values.get("model"), values)

    cfg = read_config(config, {
        "model": model, "checkpoint": checkpoint, "data": data, "sae": sae, "train_sae": train_sae or None,
        "interventions.enabled": interventions or None,
        "genesets": tuple(genesets), "trrust": trrust, "string": string_links, "string_info": string_info,
        "string_channels": string_channels, "layers": layers, "max_cells": max_cells,
        "cell_type_column": cell_type_column, "donor_column": donor_column, "shard_cells": shard_cells,
        "atlas": name, "title": title, "seed": seed, "engine.engine": engine, "engine.ray_address": ray_address,
        "engine.workers": workers, "engine.gpus_per_worker": gpus_per_worker,
        "baselines.random_init_model": random_init_model, "baselines.coexpression": coexpression,
        "baselines.pca": pca_baseline}, demo_defaults)
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
    lock, fresh = Path(cache) / ".build.lock", not Path(cache).exists()
    try:
        # One build at a time per cache: a second one waits, then finds the first one's stages cached.
        with held(lock, lambda: click.echo(f"waiting: another build is using the cache {cache}", err=True)):
            pause_at("build locked")
            out = Builder(cfg, cache, log, _BuildProgress(quiet)).run()
            st = out.timings
            t1 = time.perf_counter()
            path = export(out, data_dir)
            st.done("export", time.perf_counter() - t1)
            t1 = time.perf_counter()
            site = render_site(path, site_dir)
            st.done("render", time.perf_counter() - t1)
    except BaseException:
        if fresh and Path(cache).is_dir() and {p.name for p in Path(cache).iterdir()} <= {lock.name}:  # refused before any stage: leave no cache
            lock.unlink(missing_ok=True)
            Path(cache).rmdir()
        raise
    _summary(path, site, st, out, time.perf_counter() - t0)


def _summary(path, site, st, out, seconds):
    from .atlas.format import read_atlas
    from .pipeline.cache import folder_bytes

    atlas = read_atlas(path, check=False)
    lay = atlas.table("layers").to_pylist()
    nb = atlas.table("null_baseline").to_pandas()
    mods = nb[(nb.analysis == "modules") & (nb.measure == "modules") & (nb.baseline == "within_gene_shuffle")]
    ann = nb[(nb.analysis == "annotation") & (nb.measure == "any database") & (nb.baseline == "random_genes")]
    edges = atlas.table("edges").to_pandas()
    click.echo(f"built {atlas.name}: {len(lay)} layers, {sum(r['alive'] for r in lay)} of "
               f"{sum(r['n_features'] for r in lay)} features alive")
    rate = sum(r["annotated"] for r in lay) / max(sum(r["alive"] for r in lay), 1)
    click.echo(f"  annotated {sum(r['annotated'] for r in lay)} ({rate:.1%} of alive features"
               + (f"; random gene lists {ann['expected'].mean():.1%})" if len(ann) else ")"))
    others = nb[(nb.analysis == "annotation") & (nb.measure == "any database") & (nb.baseline != "random_genes")]
    if len(others):
        click.echo("  other baselines, share annotated: " + ", ".join(
            f"{name} {g['expected'].mean():.1%}" for name, g in others.groupby("baseline", sort=True)))
    ct = atlas.table("celltypes").to_pandas()
    ct = ct[ct.level == "cell_type"]
    if len(ct):
        click.echo(f"  cell types: {ct.groupby(['layer', 'feature']).ngroups} features pass the cell-type test, "
                   f"best AUC {ct['auc'].max():.2f}")
    click.echo(f"  modules {int(mods['observed'].sum())} (within-gene null: {int(mods['expected'].sum())}); "
               f"cross-layer edges {int((edges.kind == 'cross_layer').sum())} beyond the within-gene null, "
               f"{int((edges.kind == 'decoder_cosine').sum())} decoder-cosine matches")
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
@click.option("--atlas", "name", type=AtlasName(), required=True, help="Atlas (under --data-dir) built by atlas build.")
@click.option("--data", type=in_file(), required=True, help="Perturb-seq .h5ad with raw counts.")
@click.option("--perturbation-column", "column", required=True, help="obs column naming each cell's perturbed gene.")
@click.option("--control", required=True, help="Value of that column marking control cells (e.g. non-targeting).")
@click.option("--batch-column", type=Label(), help="obs column of batches (gem groups): controls from the same batches, batch as "
              "a covariate.")
@setting_option("--trrust", "trrust", help="TRRUST TSV (TF, target, mode, PubMed ids): TF target sets for the "
                "specificity test (without it, no TF test).")
@setting_option("--layers", "layers", help="Layers of the atlas to test, e.g. 0,3 (default: every layer).")
@click.option("--dataset-name", type=Label(), help="Name of the dataset in the tables (default: the file name without .h5ad); "
              "its earlier rows are replaced.")
@click.option("--min-cells", type=click.IntRange(3), default=20, show_default=True,
              help="Perturbations with fewer cells (after the batch rule) are skipped and listed.")
@click.option("--pseudo", type=click.IntRange(0), default=1, show_default=True,
              help="Pseudo-perturbations (random control subsets) per perturbation, for the null.")
@click.option("--top-genes", type=POSITIVE, default=100, show_default=True,
              help="Top-scoring genes in which a TF's targets are counted.")
@click.option("--min-targets", type=POSITIVE, default=5, show_default=True,
              help="Curated targets in the universe a TF needs to be tested.")
@click.option("--max-controls", type=click.IntRange(0), default=0, show_default=True,
              help="Use at most this many control cells (a seeded choice); 0: all.")
@click.option("--on-target", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Keep only cells with on-target knockdown: perturbed cells whose gene's CP10k is at or below this "
              "quantile of the controls' (e.g. 0.25), compared with the controls under the same cut-off; 0: every cell.")
@click.option("--alpha", type=UNIT_OPEN, default=0.05, show_default=True, help="BH level for every call.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the pseudo-perturbations and control choice.")
@click.option("--checkpoint", type=in_dir(), help="Checkpoint folder (default: the one the atlas records; checked "
              "against its hash).")
@click.option("--sae", type=in_dir(), help="Folder of SAEs (layer_LL/) (default: those the atlas records).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=Path(".atlas_cache"),
              show_default=True, help="Stage cache of the atlas' build (where its trained SAEs are).")
@setting_option("--gene-column", "gene_column", help="var column naming the genes (default: the best match).")
@setting_option("--device", "device", default="cpu", show_default=True)
@data_dir_option
@site_option
@click.option("--quiet", is_flag=True, help="Print only the summary.")
def perturb(name, data, column, control, batch_column, trrust, layers, dataset_name, min_cells, pseudo, top_genes,
            min_targets, max_controls, on_target, alpha, seed, checkpoint, sae, cache, gene_column, device, data_dir, site_dir,
            quiet):
    """Run the atlas' model and SAEs over a Perturb-seq dataset; add the perturbation response and TF specificity
    to the atlas (and re-render its site when site/NAME exists)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .atlas.format import read_atlas
    from .atlas.perturbation import write
    from .pipeline.perturbation.screen import analyse
    from .pipeline.perturbation.stats import PerturbConfig
    from .site.render import render as render_site

    target = require_atlas(name, data_dir)
    site = site_dir / name
    check_disjoint([("--data-dir/--atlas", target)], [("--data", data), ("--trrust", trrust)])
    cfg = PerturbConfig(min_cells=min_cells, alpha=alpha, pseudo=pseudo, top_genes=top_genes, min_targets=min_targets,
                        max_controls=max_controls, on_target=on_target, seed=seed)
    dataset = dataset_name or Path(data).name.removesuffix(".h5ad")
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    t0 = time.perf_counter()
    atlas = read_atlas(target)
    response, tf, record = analyse(atlas.manifest, atlas.name, atlas.path, data, column, control, cfg, dataset, layers,
                                   trrust, batch_column, checkpoint, sae, cache, gene_column, device, log, _head_note)
    atlas = write(atlas.path, dataset, response, tf, record, log)
    s = record["summary"]
    click.echo(f"perturb {dataset} -> {atlas.path}/: {s['n_perturbations']} perturbations against {s['n_controls']} "
               f"controls ({s['n_skipped']} skipped below --min-cells {min_cells}), {time.perf_counter() - t0:.1f} s")
    if on_target:
        kept = record["on_target"].values()
        click.echo(f"  on-target knockdown (--on-target {on_target:g}): {sum(r['removed'] for r in kept)} perturbed "
                   f"cells left out, {sum(r['threshold'] is None for r in kept)} perturbation(s) unmeasured and kept whole")
    ps = s["pseudo"]
    if ps["n_pseudo"]:
        click.echo(f"  pseudo-perturbations: {ps['n_pseudo']}, mean responding features {ps['mean_responding']:.2f}, "
                   f"false-positive rate {ps['false_positive_rate']:.3f} at alpha {alpha:g}")
    if s["n_tf"]:
        click.echo(f"  TFs specific: {s['n_specific']} of {s['n_tf']} ({s['fraction']:.1%}, 95% CI "
                   f"{s['ci_lo']:.1%}-{s['ci_hi']:.1%}); expression ceiling {s['ceiling_n_specific']} of {s['n_tf']}; "
                   f"non-TF negative control {s['negative_n_specific']} of {s['negative_n']}")
    if (site / "atlas.json").is_file():
        render_site(atlas.path, site_dir)
        click.echo(f"  re-rendered {site}/")


@cli.command()
@click.option("--model", "family", type=click.Choice(["scgpt", "geneformer"]), required=True,
              help="Model family: its architecture, checkpoint layout and pretraining objective.")
@click.option("--data", type=in_file(), required=True,
              help="Training cells: .h5ad with raw counts (symbols for scGPT, var Ensembl ids for Geneformer).")
@click.option("--out", type=OutputFolder("pretrain.json", "a checkpoint folder of atlas pretrain"), required=True,
              help="Checkpoint folder to write (atomically), in the family's real layout, with MODEL_CARD.md.")
@click.option("--layers", type=click.IntRange(1, 48), default=4, show_default=True, help="Transformer layers.")
@click.option("--width", type=click.IntRange(8, 4096), default=128, show_default=True, help="Hidden width.")
@click.option("--heads", type=click.IntRange(1, 64), default=4, show_default=True, help="Attention heads.")
@click.option("--steps", type=POSITIVE, default=1500, show_default=True, help="Optimiser steps.")
@click.option("--batch-size", type=POSITIVE, default=16, show_default=True, help="Cells per step.")
@click.option("--lr", type=click.FloatRange(0, 1, min_open=True), default=1e-3, show_default=True,
              help="Peak AdamW learning rate.")
@click.option("--holdout", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Share of cells held out for evaluation.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the split, initial weights, masks.")
@click.option("--random-init", is_flag=True, help="Write the untrained twin instead: same vocabulary, architecture "
                                                  "and seed, no step taken (--steps is then ignored).")
def pretrain(family, data, out, layers, width, heads, steps, batch_size, lr, holdout, seed, random_init):
    """Pretrain a small scGPT or Geneformer on DATA with the family's objective; write the checkpoint and its
    model card (held-out masked-prediction accuracy against trivial baselines, loss curve)."""
    import os
    import shlex

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .models.pretrain import PretrainConfig
    from .models.pretrain import pretrain as run

    check_disjoint([("--out", out)], [("--data", data)])
    cfg = PretrainConfig(layers=layers, width=width, heads=heads, steps=0 if random_init else steps,
                         batch_size=batch_size, lr=lr, holdout=holdout, seed=seed)
    command = "atlas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["pretrain"] else None
    t0 = time.perf_counter()
    with _progress("steps") as (started, progress):
        # --out is absent, empty or an earlier checkpoint of this command (checked by its type): replace it.
        rec = run(family, data, out, cfg, command=command, started=started, progress=progress, replace_out=True)
    h, d = rec["heldout"], rec["data"]
    base = rec["baselines"].get("most_frequent_bin_accuracy", rec["baselines"].get("most_frequent_gene_accuracy"))
    what = f"pretrained {cfg.steps} steps" if rec["trained"] else "wrote the untrained twin"
    click.echo(f"{what}: {family} {layers} x {width} on {d['train_cells']} cells ({len(d['heldout_cells'])} held "
               f"out) -> {out}/ ({time.perf_counter() - t0:.0f} s); held-out accuracy {h['heldout_accuracy']:.4f} "
               f"vs {base:.4f} for the most frequent {'bin' if family == 'scgpt' else 'gene'}, loss "
               f"{h['heldout_loss']:.4f}")


@cli.command()
@click.option("--site", "site_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("site"),
              show_default=True, help="Folder of rendered sites to serve.")
@click.option("--port", type=PORT, default=8000, show_default=True, help="Port on the loopback address (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
def serve(site_dir, port, host):
    """Preview the rendered sites with gzip, as GitHub Pages serves them."""
    from .site.serve import make_server

    if not site_dir.is_dir():
        raise AtlasError(f"{site_dir}: no rendered site (run `atlas render` first)")
    try:
        server = make_server(site_dir, port, host)
    except OSError as e:
        raise AtlasError(f"--host {host} --port {port}: cannot listen ({e.strerror})") from None
    atlases = sorted(p.name for p in site_dir.iterdir() if (p / "index.html").is_file())
    click.echo(f"serving {site_dir}/ at http://{host}:{server.server_port}/ "
               f"({', '.join(a + '/' for a in atlases) or 'no atlas yet'}); Ctrl-C stops")
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
