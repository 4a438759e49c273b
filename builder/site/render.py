"""Render an atlas folder into a static site: HTML shell, the site's JS/CSS, JSON shards, downloadable tables.

site/NAME/
  index.html                 the shell, with a small bootstrap object inlined (no extra request on first paint)
  assets/<hash>/...          static/ copied under a content hash, so hosts may cache it for long
  data/<hash>/...            the shards of shards.py, likewise under a content hash
  downloads/                 every table as Parquet and CSV, and manifest.json
The whole folder is built aside and swapped in, so a failed render leaves the previous site intact.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shutil
from pathlib import Path

import jinja2
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..atlas.format import Atlas, read_atlas
from ..atlas.format import totals as format_totals
from ..jsonio import dumps_json
from ..errors import AtlasError
from ..fsutil import atomic_dir, atomic_write
from .encode import columns, sig
from .indexes import TERM_BUCKET
from .links import links_boot
from .perturbation import interventions_summary
from .shards import BUCKET, build_shards

PKG = Path(__file__).resolve().parent.parent  # the builder package


def _resource(name: str) -> Path:
    """templates/ and static/ sit inside the installed package, or at the repository top in a checkout."""
    for p in (PKG / name, PKG.parent / name):
        if p.is_dir():
            return p
    raise AtlasError(f"package data folder {name!r} not found next to {PKG}")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(_resource("templates")),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def _hash_files(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:10]


def static_files() -> dict[str, bytes]:
    root = _resource("static")
    # Scripts beside vendored files (how to reproduce them) are not part of the site.
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".sh"}


def render(atlas_dir: Path, site_root: Path) -> Path:
    """Render atlas_dir into site_root/<atlas name>/ and refresh the site_root index page."""
    atlas = read_atlas(atlas_dir)
    shards = {path: orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) for path, obj in build_shards(atlas).items()}
    assets = static_files()
    data_dir, asset_dir = f"data/{_hash_files(shards)}/", f"assets/{_hash_files(assets)}/"
    target = Path(site_root) / atlas.name
    with atomic_dir(target) as tmp:
        for files, base in ((shards, data_dir), (assets, asset_dir)):
            for rel, blob in files.items():
                out = tmp / base / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(blob)
        downloads = _write_downloads(atlas, tmp / "downloads")
        _write_model_card(atlas, tmp / "model", f"../{asset_dir}")
        listing = _env().get_template("downloads.html").render(title=atlas.manifest.get("atlas", {}).get("title")
                                                               or atlas.name, names=downloads)
        (tmp / "downloads" / "index.html").write_text(listing, encoding="utf-8")
        gene_keys = sorted(p[len("genes/n/"):-5] for p in shards if p.startswith("genes/n/"))
        boot = bootstrap(atlas, data_dir, downloads, gene_keys)
        # Which tf/p/KK.json exist, so the gene page asks only for a shard that is there.
        boot["tf_keys"] = sorted(p[len("tf/p/"):-5] for p in shards if p.startswith("tf/p/"))
        # Cell-type names in shard order, so a cell type's page fetches its shard without the index first.
        boot["celltypes"] = orjson.loads(shards["celltypes/index.json"]).get("name", [])
        boot["deps"] = module_deps(assets)
        if boot["interventions"]:  # overview.js imports it on demand; preloaded with the view when it is needed
            boot["deps"]["overview"] = sorted(boot["deps"]["overview"] + ["lib/interventions_summary.js"])
        html = _env().get_template("atlas.html").render(title=boot["title"], assets=asset_dir, boot=boot)
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "atlas.json").write_bytes(dumps_json({k: boot[k] for k in ("id", "title", "description", "totals")},
                                                    indent=True))
    render_index(Path(site_root))
    return target


def bootstrap(atlas: Atlas, data_dir: str, downloads: list[str], gene_keys: list[str]) -> dict:
    """What the first paint needs, inlined into index.html: titles, per-layer summary, where shards live."""
    m = atlas.manifest
    layers = _layers(atlas)
    # the rates and totals are the atlas' own (format.annotation_rate, format.totals): read, never recomputed here
    totals = {k: sig(v) for k, v in (m.get("totals") or format_totals(atlas.table("layers"))).items()}
    totals["layers"] = len(layers)
    return {
        "id": atlas.name, "title": m.get("atlas", {}).get("title") or atlas.name,
        "description": m.get("atlas", {}).get("description") or "",
        "model": _model(m), "sae": _sae(m), "dataset": m.get("dataset", {}),
        "genesets": m.get("genesets", []), "notes": m.get("notes", []),
        "layers": layers, "totals": totals, "data": data_dir, "bucket": BUCKET, "term_bucket": TERM_BUCKET,
        "downloads": downloads, "gene_keys": gene_keys, "nulls": _nulls(atlas), "db_counts": _db_counts(atlas),
        "has_map": atlas.table("features").column("map_x").null_count < atlas.table("features").num_rows,
        "has_cells": atlas.has("cells") and atlas.table("cells").num_rows > 0,
        "has_comparisons": any(atlas.has(t) for t in ("svd_comparison", "persistence", "causal_summary")),
        "has_causal": atlas.has("causal_summary"),
        "interventions": interventions_summary(atlas), "links": links_boot(atlas, BUCKET),
        "parameters": m.get("parameters", {}), "source": _source(m),
    }


def _layers(atlas: Atlas) -> list[dict]:
    """The layers table, and for a layer whose annotation data was not published (an import's manifest
    extras.annotations_absent) `annotations_absent` and the count the publication gives (`published_annotated`),
    so no page shows its empty enrichments as a finding."""
    layers = [{k: sig(v) for k, v in r.items()} for r in atlas.table("layers").to_pylist()]
    absent = (atlas.manifest.get("extras") or {}).get("annotations_absent") or {}
    published = absent.get("published_annotated") or {}
    for r in layers:
        if r["layer"] in (absent.get("layers") or []):
            r["annotations_absent"] = True
            r["published_annotated"] = published.get(str(r["layer"]))
    return layers


def _sae(m: dict) -> dict:
    """The manifest's SAE without its file list; training per layer with its curve, as recorded (export.py)."""
    return _rounded({k: v for k, v in (m.get("sae") or {}).items() if k != "files"})


def _rounded(obj):
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return sig(obj)


def _model(m: dict) -> dict:
    """The manifest's model without its card; a pretrained model's facts for the overview in `pretrained`."""
    model = {k: v for k, v in (m.get("model") or {}).items() if k not in ("card", "pretraining")}
    rec = (m.get("model") or {}).get("pretraining")
    if isinstance(rec, dict) and isinstance(rec.get("data"), dict) and isinstance(rec.get("config"), dict):
        d, c = rec["data"], rec["config"]
        model["pretrained"] = {"cells": d.get("train_cells"), "data": d.get("file"), "data_cells": d.get("cells"),
                               "steps": c.get("steps"),
                               "layers": c.get("layers"), "width": c.get("width"), "trained": rec.get("trained"),
                               "card": "model/" if isinstance((m.get("model") or {}).get("card"), str) else None}
    return model


IMPORT = re.compile(r'^import [^;]*? from "(\.{1,2}/[\w/]+\.js)";', re.M)


def module_deps(assets: dict[str, bytes]) -> dict[str, list[str]]:
    """Every view module's transitive imports, so the router can preload them with the view in one round trip."""
    def direct(name):
        base = posixpath.dirname(name)
        return {posixpath.normpath(posixpath.join(base, m)) for m in IMPORT.findall(assets[name].decode())}

    out = {}
    for name in sorted(n for n in assets if n.startswith("views/") and n.endswith(".js")):
        seen, todo = set(), list(direct(name))
        while todo:
            dep = todo.pop()
            if dep not in seen and dep in assets:
                seen.add(dep)
                todo += direct(dep)
        out[name[len("views/"):-3]] = sorted(seen - {"lib/dom.js", "lib/data.js", "lib/format.js"})  # preloaded by the shell
    return out


def _source(m: dict) -> dict:
    """What the About page says about an import: the origin's kind and what was skipped (no hashes)."""
    src = m.get("source") or {}
    return {"kind": src.get("kind"), "skipped": src.get("skipped", [])[:50]} if src else {}


def _db_counts(atlas: Atlas) -> dict:
    """Enrichments per database and layer (overview chart), counted here, not in the browser."""
    t = atlas.table("enrichments")
    counts = t.group_by(["layer", "database"]).aggregate([([], "count_all")]).to_pylist()
    dbs = sorted({r["database"] for r in counts})
    layers = sorted({r["layer"] for r in counts})
    cell = {(r["layer"], r["database"]): r["count_all"] for r in counts}
    return {"databases": dbs, "layers": layers, "counts": [[cell.get((lay, d), 0) for d in dbs] for lay in layers]}


def _nulls(atlas: Atlas) -> dict:
    """The null_baseline rows, small, so inlined: table {layer, analysis, measure, baseline, observed, expected,
    note, observed_n, expected_n, observed_lo, observed_hi, expected_lo, expected_hi} (columnar, encode.py)."""
    if not atlas.has("null_baseline"):
        return {}
    t = atlas.table("null_baseline").to_pylist()
    fields = ("layer", "analysis", "measure", "baseline", "observed", "expected", "note", "observed_n", "expected_n",
              "observed_lo", "observed_hi", "expected_lo", "expected_hi")
    real = {"observed", "expected", "observed_lo", "observed_hi", "expected_lo", "expected_hi"}
    return columns({f: [sig(x[f]) if f in real else x[f] for x in t] for f in fields})


def _csv_ready(t: pa.Table) -> pa.Table:
    """CSV has no lists: list columns become `; `-joined text."""
    cols = []
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_list(col.type):
            col = pc.binary_join(pc.cast(col, pa.list_(pa.string())), "; ")
        cols.append(col)
    return pa.table(cols, names=t.column_names)


def _write_downloads(atlas: Atlas, out: Path) -> list[str]:
    out.mkdir(parents=True)
    names = sorted(atlas.manifest["tables"])
    for name in names:
        shutil.copyfile(atlas.path / f"{name}.parquet", out / f"{name}.parquet")
        pacsv.write_csv(_csv_ready(atlas.table(name)), out / f"{name}.csv")
    shutil.copyfile(atlas.path / "manifest.json", out / "manifest.json")
    return names


def card_html(markdown: str) -> str:
    """A model card's Markdown as HTML. Raw HTML is off, so tags in the card show as text; markdown-it also
    refuses javascript:, vbscript:, file: and data: links."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def _write_model_card(atlas: Atlas, out: Path, assets: str) -> None:
    """model/: the card of a model pretrained by `atlas pretrain` (manifest model.card, model.pretraining),
    with its loss curve drawn again from the recorded numbers rather than copied from the checkpoint."""
    from ..losscurve import loss_svg

    model = atlas.manifest.get("model", {})
    card, record = model.get("card"), model.get("pretraining")
    if not isinstance(card, str) or not isinstance(record, dict):
        return
    out.mkdir(parents=True)
    try:
        svg = loss_svg(record) if record.get("trained") else None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise AtlasError(f"{atlas.path / 'manifest.json'}: field 'model.pretraining' is not a record of atlas "
                         f"pretrain ({type(e).__name__}: {e})") from None
    if svg is not None:
        (out / "loss_curve.svg").write_text(svg, encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    (out / "pretrain.json").write_bytes(dumps_json(record, indent=True))
    title = card.lstrip("# ").splitlines()[0] if card.strip() else "Model card"
    html = _env().get_template("model.html").render(title=title, card=card_html(card), assets=assets)
    (out / "index.html").write_text(html, encoding="utf-8")


def render_index(site_root: Path) -> None:
    """site_root/index.html lists every rendered atlas (the GitHub Pages landing page)."""
    entries = []
    for d in sorted(p for p in site_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        info = d / "atlas.json"
        if info.is_file():
            entries.append({"path": f"{d.name}/", **orjson.loads(info.read_bytes())})
    # The documentation, when built into site_root/docs/ (the Pages workflow does), is linked; the page is
    # otherwise unchanged, and no atlas folder depends on it.
    docs = site_root / "docs"
    has_docs = (docs / "index.html").is_file() and not (docs / "atlas.json").exists()
    html = _env().get_template("index.html").render(atlases=entries, title="Feature atlases", docs=has_docs)
    atomic_write(site_root / "index.html", html.encode("utf-8"))
