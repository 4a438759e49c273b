"""The `atlas` command: parses options, calls the library, turns AtlasError into one line and exit status 2."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import AtlasError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _atlas_name(value: str) -> str:
    if not NAME.match(value):
        raise AtlasError(f"atlas name {value!r} must be letters, digits, '.', '_' or '-' (it becomes a URL path)")
    return value


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
    from .atlasdata import read_atlas
    from .import_biodyn import import_biodyn

    out, report = import_biodyn(src, data_dir / _atlas_name(name), name, title, family)
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
    from .atlasdata import validate as check

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
    from .render import render as render_one

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


@cli.command()
@site_option
@click.option("--port", type=int, default=8000, show_default=True, help="Port on the loopback address.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
def serve(site_dir, port, host):
    """Preview the rendered sites with gzip, as GitHub Pages serves them."""
    from .serve import make_server

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
