"""`atlas annotate`: a table of top genes (any source) into an annotation folder, by the same tests as the build.

annotate_command checks the options that depend on one another, reads the table, the universe, the gene-set
databases, the networks and the baseline lists, makes the coexpression baseline when asked, annotates and writes;
rate_summary gives the per-database counts the command prints.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...errors import AtlasError
from ...fsutil import check_disjoint
from ...parse import string_channels as parse_channels
from .annotate import AnnotateConfig, Annotation, annotate, read_gene_table, write_annotation
from .baselines import Baseline
from .genesets import load_genesets, read_string, read_trrust

OWN_BASELINES = ("random_genes", "coexpression")  # made here; any other list comes in with --baseline-lists


def annotate_command(genes: Path, out: Path, cfg: AnnotateConfig, *, universe: list[str] | None,
                     universe_from_table: bool, layer: int | None, genesets: tuple[str, ...], trrust: Path | None,
                     string: Path | None, string_info: Path | None, string_channels: str, string_min_score: int,
                     baselines: str, baseline_lists: tuple[str, ...], data: Path | None, gene_column: str | None,
                     coexpression_genes: int) -> Annotation:
    """`atlas annotate`: the features of `genes` tested against the databases (`genesets`, TRRUST's sets) and the
    networks (TRRUST's edges, STRING's links), beside the baselines named in `baselines` (random_genes needs
    nothing, coexpression the dataset `data`) and the tables of `baseline_lists` (NAME=TABLE); written to `out`.
    `cfg.random_genes` follows `baselines`. Every option is checked, and `out` against every input, before any
    file is read."""
    if cfg.min_size > cfg.max_size:
        raise AtlasError(f"--min-size {cfg.min_size} is larger than --max-size {cfg.max_size}")
    if (universe is not None) == universe_from_table:
        raise AtlasError("give one of --universe FILE (the genes that could enter a top list) or "
                         "--universe-from-table")
    wanted = baseline_names(baselines, data)
    lists = [baseline_spec(spec) for spec in baseline_lists]
    gmts = [Path(g.partition("=")[2] or g) for g in genesets]  # bundled names are no paths
    check_disjoint([("--out", out)], [("--genes", genes), ("--trrust", trrust), ("--string", string),
                                      ("--string-info", string_info), ("--data", data),
                                      *(("--genesets", p) for p in gmts if p.is_file()),
                                      *(("--baseline-lists", p) for _, p in lists)])
    table = read_gene_table(genes, layer)
    uni = universe if universe is not None else sorted(set(table["gene"].astype(str)))
    extra = [Baseline(name, read_gene_table(path, layer, id_column="list"), f"{name}: gene lists from {path.name}")
             for name, path in lists]
    dbs = load_genesets(genesets)
    nets = []
    if trrust:
        sets, edges = read_trrust(trrust)
        dbs.append(sets)
        nets.append(edges)
    if string:
        nets.append(read_string(string, string_info, string_min_score, parse_channels(string_channels)))
    cfg = replace(cfg, random_genes="random_genes" in wanted)
    if "coexpression" in wanted:
        from .coexpression import CoexpressionConfig, coexpression_baseline

        coex = CoexpressionConfig(n_genes=coexpression_genes, size=cfg.top_n, seed=cfg.seed)
        extra.append(coexpression_baseline(data, uni, sorted(set(table["layer"].astype(int))), coex, gene_column)[0])
    result = annotate(table, dbs, nets, universe=uni, cfg=cfg, baselines=extra)
    write_annotation(out, result)
    return result


def baseline_names(spec: str, data: Path | None) -> list[str]:
    """The baselines of `--baselines` ('random_genes,coexpression', 'none'); coexpression needs the dataset."""
    names = [x.strip() for x in spec.split(",") if x.strip()]
    if names == ["none"]:
        return []
    bad = [x for x in names if x not in OWN_BASELINES]
    if bad:
        raise AtlasError(f"--baselines: unknown baseline {bad[0]!r} (expected random_genes, coexpression or none; "
                         "other lists go in with --baseline-lists NAME=TABLE)")
    if "coexpression" in names and data is None:
        raise AtlasError("--baselines coexpression needs --data FILE.h5ad (the dataset whose co-expression is "
                         "clustered)")
    return names


def baseline_spec(spec: str) -> tuple[str, Path]:
    """NAME=TABLE of `--baseline-lists`: the baseline's name and its table, which must exist."""
    name, eq, path = spec.partition("=")
    if not eq or not name or not path:
        raise AtlasError(f"--baseline-lists {spec!r}: expected NAME=TABLE")
    if not Path(path).is_file():
        raise AtlasError(f"--baseline-lists {spec!r}: {path}: no such file")
    return name, Path(path)


def rate_summary(result: Annotation) -> list[dict]:
    """Per database, in the order of the rates table: the features over every layer (`n_features`), those
    annotated, and each baseline's mean share of lists annotated (`baselines`: name -> share, in their order)."""
    rates = result.rates.to_pandas()
    base = result.baselines.to_pandas()
    out = []
    for db, r in rates.groupby("database", sort=False):
        shares = base[base.measure == db].groupby("baseline", sort=False)["expected"].mean()
        out.append({"database": db, "n_features": int(r["n_features"].sum()), "annotated": int(r["annotated"].sum()),
                    "baselines": {str(k): float(v) for k, v in shares.items()}})
    return out
