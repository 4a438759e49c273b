"""Where a build writes, checked before any work: atlas_data/NAME/, site/NAME/ and the stage cache.

Nothing a build writes may be, hold or sit inside one of its inputs or another of its outputs; an existing
atlas or site folder must be an earlier output of that kind; and a default atlas name never replaces an atlas
that came from somewhere else (an import, another checkpoint) unless the user says --replace.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AtlasError
from ..fsutil import check_disjoint, check_replaceable
from ..jsonio import read_json
from .cache import tree_hash


def inputs_of(cfg) -> list[tuple[str, Path | None]]:
    """The build's input paths, labelled by their options (bundled gene-set names are no paths)."""
    paths = [("--checkpoint", cfg.checkpoint), ("--data", cfg.data), ("--sae", cfg.sae), ("--trrust", cfg.trrust),
             ("--string", cfg.string), ("--string-info", cfg.string_info)]
    paths += [("--genesets", g.partition("=")[2] or g) for g in cfg.genesets if "=" in g or "/" in g]
    return [(label, Path(p)) for label, p in paths if p]


def check_targets(cfg, name: str, cache: Path, data_dir: Path, site_dir: Path) -> None:
    """Refuse overlapping or foreign outputs (one line naming the options) before anything is computed."""
    atlas, site = Path(data_dir) / name, Path(site_dir) / name
    check_replaceable(atlas, "manifest.json", "an atlas")
    check_replaceable(site, "atlas.json", "a rendered site")
    outputs = [("--data-dir/--atlas", atlas), ("--site/--atlas", site), ("--cache", Path(cache))]
    check_disjoint(outputs, inputs_of(cfg))
    check_disjoint([("--site", Path(site_dir))], [("--data-dir", Path(data_dir)), ("--cache", Path(cache))])
    check_disjoint([("--data-dir/--atlas", atlas)], [("--cache", Path(cache))])
    if Path(cache).exists() and not Path(cache).is_dir():
        raise AtlasError(f"--cache {cache}: is a file, expected a folder")


def check_provenance(cfg, name: str, data_dir: Path) -> None:
    """A default name (the family, or FAMILY-demo) replaces only an atlas built from the same checkpoint."""
    mf = Path(data_dir) / name / "manifest.json"
    if not mf.is_file():
        return
    how = "give --atlas NAME to build beside it, or --replace to replace it"
    try:
        m = read_json(mf)
    except AtlasError:
        raise AtlasError(f"{mf.parent}: holds an atlas whose manifest cannot be read; {how}") from None
    source = m.get("source")
    if isinstance(source, dict) and source:
        origin = source.get("path") or source.get("kind") or "elsewhere"
        raise AtlasError(f"{mf.parent}: holds an atlas imported from {origin}, not built by atlas build; {how}")
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    if model.get("checkpoint_sha256") != tree_hash(Path(cfg.checkpoint)):
        what = f"{model.get('name') or 'another model'}" if model.get("checkpoint_sha256") else "something else"
        raise AtlasError(f"{mf.parent}: holds an atlas built from {what}, not from the checkpoint {cfg.checkpoint}; {how}")
