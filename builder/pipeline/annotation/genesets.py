"""Readers for gene-set databases and gene networks: GMT, TRRUST, STRING, and the bundled defaults.

Every gene is normalised the same way: symbols upper-cased, Ensembl ids mapped to symbols with the bundled
GENCODE table. A file with numbers where genes should be (Entrez ids) is refused with its file and line,
because matching numbers against symbols would silently find nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import AtlasError
from ...fsutil import read_maybe_gzip, sha256_file
from ...geneids import gencode, is_ensembl, normalise_ensembl
from ...parse import COMBINED, STRING_CHANNELS

ENTREZ = re.compile(r"^\d+$")
STRING_PROTEIN = re.compile(r"^\d+\.ENS[A-Z]*P\d+")


@dataclass
class GeneSets:
    """One database of named gene sets (terms)."""

    name: str
    terms: list[str]
    genes: list[list[str]]
    meta: dict = field(default_factory=dict)


@dataclass
class Network:
    """Undirected gene-gene edges (self-loops and duplicates removed), e.g. STRING links or TRRUST TF -> target."""

    name: str
    edges: list[tuple[str, str]]
    meta: dict = field(default_factory=dict)


@lru_cache(maxsize=1 << 17)
def normalise_gene(value: str) -> str | None:
    """Upper-cased symbol; Ensembl ids become their GENCODE symbol (None if unknown)."""
    v = str(value).strip()
    if is_ensembl(v):
        return gencode()[0].get(normalise_ensembl(v), None)
    return v.upper() or None


def _check_gene(token: str, where: str) -> None:
    if ENTREZ.match(token):
        raise AtlasError(f"{where}: {token!r} looks like an Entrez gene id (a number); gene symbols or Ensembl "
                         "ids were expected")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_lines(path: Path):
    return gzip.open(path, "rt", encoding="utf-8", errors="replace") if _is_gzip(path) else \
        open(path, encoding="utf-8", errors="replace")


def _open_text(path: Path):
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: no such file")
    raw = read_maybe_gzip(path)
    try:
        return raw, io.StringIO(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise AtlasError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def _meta(path: Path, raw: bytes, **extra) -> dict:
    return {"file": str(path), "sha256": hashlib.sha256(raw).hexdigest(), **extra}


def read_gmt(path: Path, name: str | None = None, prefix: str | None = None,
             exclude_prefix: str | None = None, meta: dict | None = None) -> GeneSets:
    """MSigDB (term, URL, genes...) and Enrichr (term, '', genes..., trailing tab) styles; weights 'GENE,1.0' cut."""
    path = Path(path)
    raw, text = _open_text(path)
    terms, genes, seen = [], [], set()
    lines = text.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    for no, line in enumerate(lines, 1):
        where = f"{path}:{no}"
        line = line.rstrip("\r")
        if not line.strip():
            raise AtlasError(f"{where}: empty line in a GMT file (each line is term, description, genes...)")
        fields = line.split("\t")
        term = fields[0].strip()
        if len(fields) < 3 or not term:
            raise AtlasError(f"{where}: malformed GMT line: expected term<TAB>description<TAB>gene..., "
                             f"got {len(fields)} tab-separated field(s)")
        if prefix and not term.startswith(prefix) or exclude_prefix and term.startswith(exclude_prefix):
            continue
        if term in seen:
            raise AtlasError(f"{where}: term {term!r} appears twice")
        seen.add(term)
        members = []
        for token in fields[2:]:
            token = token.split(",", 1)[0].strip()
            if not token:
                continue
            _check_gene(token, where)
            g = normalise_gene(token)
            if g:
                members.append(g)
        if not members:
            raise AtlasError(f"{where}: term {term!r} has no genes")
        terms.append(term)
        genes.append(sorted(set(members)))
    if not terms:
        raise AtlasError(f"{path}: no gene sets found")
    return GeneSets(name or _stem(path), terms, genes, _meta(path, raw, **(meta or {})))


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".gmt", ".txt", ".tsv"):
        name = name.removesuffix(suffix)
    return name


def read_trrust(path: Path) -> tuple[GeneSets, Network]:
    """TRRUST TSV (TF, target, mode, PubMed ids; header row optional) -> TF target sets and TF-target edges."""
    path = Path(path)
    raw, text = _open_text(path)
    targets: dict[str, set[str]] = {}
    edges = set()
    for no, line in enumerate(text.read().splitlines(), 1):
        where = f"{path}:{no}"
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise AtlasError(f"{where}: a TRRUST line has 4 tab-separated columns (TF, target, mode, PubMed ids), "
                             f"got {len(fields)}")
        if no == 1 and fields[0].strip().upper() == "TF" and fields[1].strip().upper() == "TARGET":
            continue  # header row
        tf, target = fields[0].strip(), fields[1].strip()
        for token in (tf, target):
            _check_gene(token, where)
        tf, target = normalise_gene(tf), normalise_gene(target)
        if not tf or not target:
            continue
        targets.setdefault(tf, set()).add(target)
        if tf != target:
            edges.add(tuple(sorted((tf, target))))
    if not targets:
        raise AtlasError(f"{path}: no TRRUST rows found")
    meta = _meta(path, raw, title="TRRUST transcription factor targets")
    tfs = sorted(targets)
    return (GeneSets("TRRUST", tfs, [sorted(targets[t]) for t in tfs], meta),
            Network("TRRUST edges", sorted(edges), dict(meta, title="TRRUST TF-target edges among top genes")))


# Experiments and curated databases: evidence that two proteins interact, not that their genes are expressed
# together. The combined score also counts co-expression and text mining, which favour lists made from
# expression data by construction.
DEFAULT_STRING_CHANNELS = ("experimental", "database")
STRING_PRIOR = 0.041  # STRING's prior of a link: removed from each channel, put back once


def string_score(channels: dict[str, np.ndarray]) -> np.ndarray:
    """STRING's combined score (0-1000) from channel scores (0-1000), as STRING's combine_subscores does.

    Each score s/1000 loses the prior, s' = (max(s, prior) - prior) / (1 - prior); a channel's direct and
    transferred parts combine as 1 - (1 - a')(1 - b'); the channels as 1 - prod(1 - s'); the prior is put
    back once and the result truncated to an integer. Homology is left out, as in STRING v12.
    """
    one_minus = None
    for name in STRING_CHANNELS:
        if name not in channels:
            continue
        parts = channels[name] if isinstance(channels[name], tuple) else (channels[name],)
        rest = 1.0
        for v in parts:
            rest = rest * (1.0 - (np.maximum(np.asarray(v, np.float64) / 1000, STRING_PRIOR) - STRING_PRIOR)
                           / (1 - STRING_PRIOR))
        both = 1.0 - rest  # STRING's own order of operations, so the truncation agrees to the unit
        one_minus = (1.0 - both) if one_minus is None else one_minus * (1.0 - both)
    combined = (1.0 - one_minus) * (1.0 - STRING_PRIOR) + STRING_PRIOR
    return np.floor(combined * 1000).astype(np.int64)


def read_string(links: Path, info: Path | None = None, min_score: int = 700,
                channels: tuple[str, ...] | str = DEFAULT_STRING_CHANNELS) -> Network:
    """STRING links whose score, recombined from `channels` (or the file's combined_score), is >= min_score.

    The channel columns come from STRING's detailed links file (protein1 protein2 neighborhood ... combined_score)
    or its full one (with the *_transferred columns, and `experiments` for experimental). A file without them
    is refused unless `channels` is COMBINED. Ids are STRING protein ids (9606.ENSP...), translated with the
    protein.info file, or gene symbols.
    """
    links = Path(links)
    if not links.is_file():
        raise AtlasError(f"{links}: no such file")
    names = _string_info(Path(info)) if info else None
    header, columns = _string_header(links, channels)
    edges, kept = set(), 0
    for chunk in _string_chunks(links, header):
        score = _chunk_score(links, chunk, columns, header)
        chunk = chunk[score >= min_score]
        kept += len(chunk)
        for a, b in zip(_string_genes(links, chunk, "protein1", names, header),
                        _string_genes(links, chunk, "protein2", names, header)):
            if a and b and a != b:
                edges.add((a, b) if a < b else (b, a))
    what = "combined score" if channels == COMBINED else f"score of the {'+'.join(channels)} channels"
    if not edges:
        raise AtlasError(f"{links}: no STRING links with a {what} >= {min_score}")
    meta = {"file": str(links), "sha256": sha256_file(links), "min_score": min_score,
            "channels": COMBINED if channels == COMBINED else list(channels),
            "title": f"STRING interactions ({what} >= {min_score}) among top genes"}
    return Network("STRING", sorted(edges), meta)


def _string_header(links: Path, channels) -> tuple[bool, dict]:
    """(has a header, {channel or 'combined': (column names)}): the columns each requested score comes from."""
    try:
        with _open_lines(links) as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, EOFError, zlib.error) as e:
        raise AtlasError(f"{links}: not a readable gzip file ({e or 'truncated'})") from None
    fields = first.split()
    header = bool(fields) and not fields[-1].lstrip("-").replace(".", "", 1).isdigit()
    if not header:
        if channels != COMBINED:
            raise AtlasError(f"{links}: no channel columns (no header naming {', '.join(channels)}); give "
                             "STRING's protein.links.detailed or .full file, or ask for combined scores "
                             "explicitly (--string-channels combined)")
        if len(fields) < 3:
            raise AtlasError(f"{links}:1: STRING line has no score: expected protein1 protein2 combined_score, "
                             f"got {len(fields)} column(s)")
        return False, {COMBINED: (len(fields) - 1,)}
    present = set(fields)
    if channels == COMBINED:
        if "combined_score" not in present:
            raise AtlasError(f"{links}:1: no combined_score column (first line: {' '.join(fields[:12])})")
        return True, {COMBINED: ("combined_score",)}
    out = {}
    for c in channels:
        direct = next((n for n in ((c, "experiments") if c == "experimental" else (c,)) if n in present), None)
        if direct is None:
            raise AtlasError(f"{links}:1: no {c!r} channel column (first line: {' '.join(fields[:12])}); give "
                             "STRING's protein.links.detailed or .full file, or ask for combined scores "
                             "explicitly (--string-channels combined)")
        out[c] = tuple(n for n in (direct, f"{direct}_transferred") if n in present)
    return True, out


def _string_chunks(links: Path, header: bool, rows: int = 1 << 18):
    """The file in chunks of rows, every column as text (all of them, so a line with extra fields is caught)."""
    try:
        reader = pd.read_csv(links, sep=r"\s+", header=0 if header else None, dtype=str, chunksize=rows,
                             compression="gzip" if _is_gzip(links) else None)
        for chunk in reader:
            if not header:
                chunk = chunk.rename(columns={0: "protein1", 1: "protein2"})
            yield chunk
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        where = f"{links}:{m[2]}: expected {m[1]} columns, got {m[3]}" if m else f"{links}: {e}"
        raise AtlasError(f"{where} (STRING links: whitespace-separated, one value per column)") from None
    except UnicodeDecodeError as e:
        raise AtlasError(f"{links}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise AtlasError(f"{links}: not a readable gzip file ({e or 'truncated'})") from None


def _chunk_score(links: Path, chunk, columns: dict, header: bool) -> np.ndarray:
    first_line = int(chunk.index[0]) + (2 if header else 1) if len(chunk) else 0
    values = {}
    for name, cols in columns.items():
        parts = []
        for col in cols:
            raw = chunk[col]
            v = pd.to_numeric(raw, errors="coerce")
            if v.isna().any():
                i = int(np.flatnonzero(v.isna().to_numpy())[0])
                shown = "a missing value" if pd.isna(raw.iloc[i]) else repr(raw.iloc[i])
                raise AtlasError(f"{links}:{first_line + i}: STRING score column {col!r} has {shown} (expected a "
                                 "number; each line needs protein1 protein2 and a score per column)")
            parts.append(v.to_numpy(np.float64))
        values[name] = tuple(parts)
    if COMBINED in values:
        return values[COMBINED][0]
    return string_score(values)


def _string_genes(links: Path, chunk, col: str, names: dict | None, header: bool) -> list:
    ids = chunk[col].astype(str)
    bad = ids.str.fullmatch(r"\d+")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        _check_gene(ids.iloc[i], f"{links}:{int(chunk.index[i]) + (2 if header else 1)}")
    protein = ids.str.match(STRING_PROTEIN.pattern)
    if protein.any() and names is None:
        i = int(np.flatnonzero(protein.to_numpy())[0])
        raise AtlasError(f"{links}:{int(chunk.index[i]) + (2 if header else 1)}: {ids.iloc[i]!r} is a STRING "
                         "protein id; give the protein.info file (--string-info) to map it to a gene")
    mapped = {u: names.get(u) if names is not None and STRING_PROTEIN.match(u) else normalise_gene(u)
              for u in dict.fromkeys(ids)}
    return [mapped[x] for x in ids]


def _string_info(path: Path) -> dict[str, str]:
    raw, text = _open_text(path)
    out = {}
    for no, line in enumerate(text.read().splitlines(), 1):
        if not line.strip() or line.startswith("#") or (no == 1 and "preferred_name" in line):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise AtlasError(f"{path}:{no}: a STRING protein.info line has protein id<TAB>preferred name...")
        out[fields[0].strip()] = normalise_gene(fields[1])
    return out


@lru_cache(maxsize=1)
def bundled_sources() -> dict:
    return json.loads(resources.files("builder").joinpath("data/genesets/SOURCES.json").read_text())


DEFAULT_DATABASES = tuple(k for k, v in bundled_sources().items() if not v.get("optional"))


def bundled(name: str) -> GeneSets:
    """One of the databases shipped with the package (see SOURCES.json), by name (case-insensitive)."""
    sources = {k.lower(): k for k in bundled_sources()}
    key = sources.get(name.lower())
    if key is None:
        raise AtlasError(f"unknown bundled gene-set database {name!r} (bundled: {', '.join(bundled_sources())})")
    src = dict(bundled_sources()[key])
    res = resources.files("builder").joinpath("data/genesets", src["file"])
    with resources.as_file(res) as path:
        meta = {k: v for k, v in src.items() if k not in ("prefix", "exclude_prefix", "optional")}
        gs = read_gmt(path, key, src.get("prefix"), src.get("exclude_prefix"), meta)
    gs.meta["file"] = f"builder/data/genesets/{src['file']}"
    return gs


def load_genesets(specs: list[str] | tuple[str, ...]) -> list[GeneSets]:
    """Each spec is a bundled name, a GMT path, or NAME=PATH. No specs: the bundled defaults."""
    out = []
    for spec in specs or DEFAULT_DATABASES:
        name, _, path = spec.partition("=") if "=" in spec else (None, "", spec)
        if name is None and spec.lower() in {k.lower() for k in bundled_sources()}:
            out.append(bundled(spec))
        else:
            out.append(read_gmt(Path(path), name))
    names = [g.name for g in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AtlasError(f"gene-set database name {dup[0]!r} given twice (use NAME=PATH to rename)")
    return out
