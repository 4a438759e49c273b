"""The `atlas` command: parses options, calls the library, turns AtlasError into one line and exit status 2."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import AtlasError
from .parse import atlas_name, layer_list

data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=Path("atlas_data"),
                               show_default=True, help="Folder holding one folder per atlas.")
site_option = click.option("--site", "site_dir", type=click.Path(path_type=Path), default=Path("site"),
                           show_default=True, help="Folder the sites are rendered into.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="atlas")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def cli(ctx, debug):
    """Build, import, validate, render and preview feature atlases."""
    ctx.obj = {"debug": debug}


@cli.group(name="import")
def import_():
    """Convert a published atlas into atlas data."""


@import_.command(name="biodyn")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--atlas", "name", required=True, help="Name of the new atlas (folder under --data-dir).")
@click.option("--title", help="Title shown on the site (default: the atlas name).")
@click.option("--model", "family", help="Model family to record, e.g. scgpt or geneformer.")
@data_dir_option
def import_biodyn_cmd(src, name, title, family, data_dir):
    """Import SRC, a folder in the predecessor's JSON format (layer_NN_features.json, ...)."""
    from .atlas.format import read_atlas
    from .atlas.import_biodyn import import_biodyn

    out, report = import_biodyn(src, data_dir / atlas_name(name), name, title, family)
    atlas = read_atlas(out, check=False)
    layers = atlas.table("layers").to_pylist()
    click.echo(f"imported {src} -> {out}: {len(layers)} layers, {sum(r['n_features'] for r in layers)} features, "
               f"{sum(r['alive'] for r in layers)} alive, {sum(r['annotated'] for r in layers)} annotated, "
               f"{atlas.table('modules').num_rows} modules, {atlas.table('edges').num_rows} edges")
    for line in report.skipped:
        click.echo(f"skipped: {line}")
    for file, n in sorted(report.nonstandard_numbers.items()):
        click.echo(f"note: {file}: {n} non-standard number(s) (Infinity/NaN) read; odds ratios kept as infinity, NaN as missing")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
def validate(path):
    """Check an atlas folder; print every problem found, one per line."""
    from .atlas.format import validate as check

    problems = check(path)
    for p in problems:
        click.echo(f"error: {p}", err=True)
    if problems:
        sys.exit(2)
    click.echo(f"ok: {path}")


@cli.command()
@click.option("--atlas", "names", multiple=True, help="Atlas to render (repeatable; default: every atlas).")
@data_dir_option
@site_option
def render(names, data_dir, site_dir):
    """Render atlas data into static sites under --site (site/NAME/) and write the index page."""
    from .site.render import render as render_one

    available = sorted(p.name for p in data_dir.iterdir() if (p / "manifest.json").is_file()) \
        if data_dir.is_dir() else []
    if not names:
        if not available:
            raise AtlasError(f"{data_dir}: no atlas folder (with manifest.json) to render")
        names = available
    for name in names:
        if name not in available:
            raise AtlasError(f"atlas {name!r} not found in {data_dir} (available: {', '.join(available) or 'none'})")
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


model_option = click.option("--model", "family", type=click.Choice(["scgpt", "geneformer"]), required=True,
                            help="Model family of the checkpoint.")
checkpoint_option = click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
                                 help="Checkpoint folder (scGPT: args.json, vocab.json, best_model.pt; Geneformer: "
                                      "config.json, weights, token and gene median dictionaries).")


@cli.command()
@model_option
@checkpoint_option
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Dataset (.h5ad with raw counts).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (replaced atomically).")
@click.option("--layers", help="Layers to keep, e.g. 0,3,5-7 (default: all).")
@click.option("--max-cells", type=int, help="Use only the first N cells.")
@click.option("--batch-size", type=int, help="Cells per forward pass (default: 1 on the CPU, 16 on a GPU).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@click.option("--gene-column", help="var column naming the genes (default: the index or column matching the "
                                    "vocabulary best).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of scGPT's binning ties and gene sampling.")
def extract(family, checkpoint, data, out, layers, max_cells, batch_size, device, gene_column, seed):
    """Write per-layer activations of a small run: layer_LL.npy, tokens.parquet, extract.json."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .pipeline.extract import extract as run

    t0 = time.perf_counter()
    with _progress("cells") as (started, progress):
        record = run(family, checkpoint, data, out, layer_list(layers), max_cells, batch_size, device, gene_column,
                     seed, progress=progress, started=started)
    ds = record["dataset"]
    click.echo(f"extracted {record['model']['name']}: {ds['cells']} cells, {record['tokens']} gene tokens, "
               f"layers {','.join(map(str, record['layers']))}, width {record['model']['width']} -> {out}/ "
               f"({ds['matched']} of {ds['genes']} genes in the vocabulary, var {ds['gene_column']!r}, "
               f"counts from {ds['counts']}; {time.perf_counter() - t0:.1f} s)")
    if record["model"]["ignored_checkpoint_keys"]:
        click.echo(f"note: ignored {len(record['model']['ignored_checkpoint_keys'])} checkpoint keys outside the "
                   f"encoder (prediction heads), e.g. {record['model']['ignored_checkpoint_keys'][0]}")


@cli.group()
def sae():
    """Train TopK SAEs, encode activations into sparse codes, and compute feature statistics."""


@sae.command(name="train")
@click.option("--activations", type=click.Path(path_type=Path), required=True, help="Folder written by `atlas extract`.")
@click.option("--layer", type=int, required=True, help="Layer to train on.")
@click.option("--expansion", type=int, default=4, show_default=True, help="Features = expansion x width.")
@click.option("--k", type=int, default=32, show_default=True, help="Active features per token.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="SAE folder to write (SAELens layout).")
@click.option("--centering", type=click.Choice(["pre-bias", "mean", "none"]), default="pre-bias", show_default=True,
              help="pre-bias: a trained decoder bias subtracted before encoding; mean: the data mean, fixed.")
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=4096, show_default=True, help="Tokens per step.")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Adam learning rate.")
@click.option("--aux-coef", type=float, default=1 / 32, show_default=True, help="Weight of the AuxK loss (0: off).")
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Share of cells held out for evaluation.")
@click.option("--seed", type=int, default=0, show_default=True)
def sae_train(activations, layer, expansion, k, out, centering, epochs, batch_size, lr, aux_coef, holdout, seed):
    """Train a TopK SAE on one layer's activations; report held-out variance explained, L0 and dead features."""
    import pyarrow.parquet as pq

    from .pipeline.extract import read_activations
    from .pipeline.sae import TrainConfig, train

    acts, record = read_activations(activations, layer)
    if not 0 <= holdout < 1:
        raise AtlasError(f"--holdout {holdout}: must be in [0, 1)")
    for name, value in (("--expansion", expansion), ("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise AtlasError(f"{name} {value}: must be at least 1")
    cells = pq.read_table(Path(activations) / "tokens.parquet", columns=["cell"])["cell"].to_numpy()
    cfg = TrainConfig(expansion=expansion, k=k, centering=centering, epochs=epochs, batch_size=batch_size, lr=lr,
                      aux_coef=aux_coef, holdout=holdout, seed=seed)
    t0 = time.perf_counter()
    model, metrics = train(acts, cells, cfg, where=f"{activations}/layer {layer}", log=lambda m: click.echo(m, err=True))
    model.save(out, {"layer": layer, "model_name": record["model"]["name"], "hook_name": f"layer {layer} residual",
                     "activations": str(activations), "training": metrics})
    ve = metrics["variance_explained"]
    click.echo(f"trained SAE layer {layer}: {model.d_sae} features, k {k} -> {out}/ "
               f"(held-out: variance explained {'n/a' if ve is None else f'{ve:.3f}'}, L0 {metrics['l0'] or 0:.1f}, "
               f"dead {metrics['dead_features']}; {metrics['steps']} steps, {time.perf_counter() - t0:.1f} s)")


@sae.command(name="encode")
@click.option("--sae", "sae_path", type=click.Path(path_type=Path), required=True,
              help="SAELens TopK folder, or the published study's .pt file.")
@click.option("--activations", type=click.Path(path_type=Path), required=True, help="Folder written by `atlas extract`.")
@click.option("--layer", type=int, required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Codes folder to write.")
def sae_encode(sae_path, activations, layer, out):
    """Encode one layer's activations into sparse codes (top-k indices and values per token)."""
    from .pipeline.encode import encode_activations
    from .pipeline.sae import load_sae

    model = load_sae(sae_path)
    record = encode_activations(model, activations, layer, out,
                                {"layer": layer, "sae": str(sae_path), "activations": str(activations)})
    click.echo(f"encoded layer {layer}: {record['tokens']} tokens x k {record['k']} of {record['n_features']} features "
               f"-> {out}/ ({len(record['shards'])} shards)")


@sae.command(name="stats")
@click.option("--codes", type=click.Path(path_type=Path), required=True, help="Folder written by `atlas sae encode`.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Statistics folder to write.")
@click.option("--cell-type-column", help="obs column of the dataset with cell types (default: none, no test).")
@click.option("--top-genes", type=int, default=20, show_default=True)
@click.option("--min-support", type=int, default=5, show_default=True,
              help="Firing tokens a gene needs before it can rank among a feature's top genes.")
@click.option("--top-cells", type=int, default=10, show_default=True)
def sae_stats(codes, out, cell_type_column, top_genes, min_support, top_cells):
    """Feature statistics from codes: frequency, means, max, histograms, top genes and cells, cell-type tests."""
    import json

    import anndata
    import pyarrow.parquet as pq

    from .pipeline.encode import read_codes
    from .pipeline.stats import StatsConfig, feature_stats, write_stats

    record, _ = read_codes(codes)
    acts_dir = Path(record["activations"])
    extract = json.loads((acts_dir / "extract.json").read_text())
    tokens = pq.read_table(acts_dir / "tokens.parquet", columns=["token_id", "gene"]).to_pandas().drop_duplicates()
    names = dict(zip(tokens["token_id"].tolist(), tokens["gene"].tolist()))
    obs = anndata.read_h5ad(extract["dataset"]["path"], backed="r").obs.iloc[: extract["dataset"]["cells"]]
    types = None
    if cell_type_column is not None:
        if cell_type_column not in obs.columns:
            raise AtlasError(f"{extract['dataset']['path']}: obs has no column {cell_type_column!r} "
                             f"(has: {', '.join(map(str, obs.columns)) or 'none'})")
        types = obs[cell_type_column].astype(str).to_numpy()
    cfg = StatsConfig(top_genes=top_genes, min_support=min_support, top_cells=top_cells)
    result = feature_stats(lambda: read_codes(codes)[1], record["n_features"], len(obs), max(names) + 1, cfg, types)
    write_stats(out, result, names, obs.index.to_numpy(), {"layer": record["layer"], "codes": str(codes),
                                                           "config": cfg.__dict__, "cell_type_column": cell_type_column})
    f = result["features"]
    click.echo(f"statistics of layer {record['layer']}: {int(f['alive'].sum())} of {len(f['alive'])} features alive, "
               f"{result['tokens']} tokens -> {out}/")


@cli.command()
@click.option("--genes", type=click.Path(path_type=Path), required=True,
              help="Table of top genes: layer, feature, gene, rank (Parquet, CSV or TSV).")
@click.option("--genesets", multiple=True, help="Bundled database name, GMT path or NAME=PATH (repeatable; "
              "default: GO_BP, KEGG, Reactome, Hallmark).")
@click.option("--trrust", type=click.Path(path_type=Path), help="TRRUST TSV: TF target sets and TF-target edges.")
@click.option("--string", "string_links", type=click.Path(path_type=Path), help="STRING links file.")
@click.option("--string-info", type=click.Path(path_type=Path), help="STRING protein.info file (for protein ids).")
@click.option("--string-min-score", type=int, default=700, show_default=True, help="combined_score cut-off.")
@click.option("--universe", type=click.Path(path_type=Path),
              help="Genes the model could see, one per line (default: the table's genes, which is conservative).")
@click.option("--layer", type=int, help="Layer of a table without a layer column.")
@click.option("--top-n", type=int, default=20, show_default=True, help="Top genes per feature in the test.")
@click.option("--min-size", type=int, default=5, show_default=True, help="Smallest term (inside the universe).")
@click.option("--max-size", type=int, default=500, show_default=True, help="Largest term (inside the universe).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Benjamini-Hochberg level.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the null pseudo-features.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (replaced atomically).")
def annotate(genes, genesets, trrust, string_links, string_info, string_min_score, universe, layer, top_n,
             min_size, max_size, alpha, seed, out):
    """Test every feature's top genes against gene-set databases and networks, beside a null baseline."""
    from .pipeline import annotate as ann_mod
    from .pipeline.genesets import load_genesets, read_string, read_trrust

    if not 0 < alpha < 1 or top_n < 1 or not 1 <= min_size <= max_size:
        raise AtlasError("need 0 < --alpha < 1, --top-n >= 1 and 1 <= --min-size <= --max-size")
    table = ann_mod.read_gene_table(genes, layer)
    dbs = load_genesets(genesets)
    nets = []
    if trrust:
        sets, edges = read_trrust(trrust)
        dbs.append(sets)
        nets.append(edges)
    if string_links:
        nets.append(read_string(string_links, string_info, string_min_score))
    uni = None
    if universe:
        if not universe.is_file():
            raise AtlasError(f"{universe}: no such file")
        uni = [x.strip() for x in universe.read_text().splitlines() if x.strip()]
    cfg = ann_mod.AnnotateConfig(top_n=top_n, min_size=min_size, max_size=max_size, alpha=alpha, seed=seed)
    result = ann_mod.annotate(table, dbs, nets, uni, cfg)
    ann_mod.write_annotation(out, result)
    rates = result.rates.to_pandas()
    for db, r in rates.groupby("database", sort=False):
        n = r["n_features"].sum()
        click.echo(f"{db}: {r['annotated'].sum()} of {n} features annotated ({r['annotated'].sum() / max(n, 1):.1%}), "
                   f"null {r['null_annotated'].sum() / max(n, 1):.1%}")
    click.echo(f"{result.enrichments.num_rows} enrichments (q <= {alpha}) -> {out}/")


@cli.command()
@click.option("--model", type=click.Choice(["scgpt", "geneformer"]), help="Model family.")
@click.option("--checkpoint", help="Checkpoint folder (scGPT: args.json, vocab.json, best_model.pt; "
              "Geneformer: a transformers folder).")
@click.option("--data", help="Dataset .h5ad with raw counts [default: atlas_data/inputs/immune_sample.h5ad].")
@click.option("--sae", help="Folder of SAEs, one per layer: layer_LL/ (SAELens) or layer_LL.pt (published).")
@click.option("--train-sae", is_flag=True, help="Train a TopK SAE per layer instead ([train] in the config).")
@click.option("--genesets", multiple=True, help="Bundled name, GMT path or NAME=PATH (repeatable; default: "
              "GO_BP, KEGG, Reactome, Hallmark).")
@click.option("--trrust", help="TRRUST TSV (TF target sets and TF-target edges).")
@click.option("--string", "string_links", help="STRING links file.")
@click.option("--string-info", help="STRING protein.info file.")
@click.option("--layers", help="Layers, e.g. 0,3,5-7 (default: all).")
@click.option("--max-cells", type=int, help="Use only the first N cells.")
@click.option("--cell-type-column", help="obs column with cell types (cell-type tests, top-cell labels).")
@click.option("--config", "config", type=click.Path(path_type=Path), help="atlas.toml with any of these settings.")
@click.option("--atlas", "name", help="Atlas name (default: the model family).")
@click.option("--title", help="Title shown on the site.")
@click.option("--seed", type=int, help="Seed of every random step (default 0).")
@click.option("--cache", type=click.Path(path_type=Path), default=Path(".atlas_cache"), show_default=True,
              help="Stage cache; an interrupted build resumes from it.")
@data_dir_option
@site_option
@click.option("--quiet", is_flag=True, help="Print only the summary.")
def build(model, checkpoint, data, sae, train_sae, genesets, trrust, string_links, string_info, layers, max_cells,
          cell_type_column, config, name, title, seed, cache, data_dir, site_dir, quiet):
    """Run every stage: model, SAE codes, statistics, annotation, graphs; export atlas data; render the site."""
    from .pipeline.build import Builder, read_config

    cfg = read_config(config, {
        "model": model, "checkpoint": checkpoint, "data": data, "sae": sae, "train_sae": train_sae,
        "genesets": tuple(genesets), "trrust": trrust, "string": string_links, "string_info": string_info,
        "layers": layers, "max_cells": max_cells, "cell_type_column": cell_type_column, "atlas": name,
        "title": title, "seed": seed})
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    res = Builder(cfg, cache, data_dir, site_dir, log).run()
    from .atlas.format import read_atlas

    atlas = read_atlas(res["atlas"], check=False)
    lay = atlas.table("layers").to_pylist()
    nb = atlas.table("null_baseline").to_pandas()
    st = res["stages"]

    def null(analysis, measure):
        r = nb[(nb.analysis == analysis) & (nb.measure == measure)]
        return r["observed"].sum(), r["expected"].sum()

    mods, mods0 = null("modules", "modules")
    ann = nb[(nb.analysis == "annotation") & (nb.measure == "any database")]
    edges = atlas.table("edges").to_pandas()
    click.echo(f"built {atlas.name}: {len(lay)} layers, {sum(r['alive'] for r in lay)} of "
               f"{sum(r['n_features'] for r in lay)} features alive")
    click.echo(f"  annotated {sum(r['annotated'] for r in lay)} "
               f"({ann['observed'].mean():.1%} of features; null {ann['expected'].mean():.1%})")
    click.echo(f"  modules {int(mods)} (shuffled codes: {int(mods0)}); cross-layer edges "
               f"{int((edges.kind == 'cross_layer_pmi').sum())} beyond the within-gene null, "
               f"{int((edges.kind == 'decoder_cosine').sum())} decoder-cosine matches")
    click.echo("  time per stage: " + ", ".join(
        f"{k} {v:.1f} s" + (f" ({st.cached[k]} cached)" if st.cached[k] else "") for k, v in st.seconds.items())
        + (", cached: " + ", ".join(k for k in st.cached if k not in st.seconds) if set(st.cached) - set(st.seconds) else ""))
    click.echo(f"  -> {res['atlas']}/ and {res['site']}/ in {res['seconds']:.1f} s")


@cli.command()
@site_option
@click.option("--port", type=int, default=8000, show_default=True, help="Port on the loopback address.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
def serve(site_dir, port, host):
    """Preview the rendered sites with gzip, as GitHub Pages serves them."""
    from .site.serve import make_server

    if not site_dir.is_dir():
        raise AtlasError(f"{site_dir}: no rendered site (run `atlas render` first)")
    try:
        server = make_server(site_dir, port, host)
    except OSError as e:
        raise AtlasError(f"cannot listen on {host}:{port} ({e.strerror})") from None
    atlases = sorted(p.name for p in site_dir.iterdir() if (p / "index.html").is_file())
    click.echo(f"serving {site_dir}/ at http://{host}:{server.server_port}/ "
               f"({', '.join(a + '/' for a in atlases) or 'no atlas yet'}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="atlas", standalone_mode=False)
    except AtlasError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        if debug:
            raise
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
