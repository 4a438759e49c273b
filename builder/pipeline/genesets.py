"""Readers for gene-set databases and gene networks: GMT, TRRUST, STRING, and the bundled defaults.

Every gene is normalised the same way: symbols upper-cased, Ensembl ids mapped to symbols with the bundled
GENCODE table. A file with numbers where genes should be (Entrez ids) is refused with its file and line,
because matching numbers against symbols would silently find nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import AtlasError
from ..fsutil import read_maybe_gzip
from ..geneids import gencode, is_ensembl, normalise_ensembl

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


def read_string(links: Path, info: Path | None = None, min_score: int = 700) -> Network:
    """STRING links (protein1 protein2 [...] combined_score; header optional) with a combined-score cut-off.

    Ids are STRING protein ids (9606.ENSP...), translated with the protein.info file, or gene symbols.
    """
    links = Path(links)
    raw, text = _open_text(links)
    names = _string_info(Path(info)) if info else None
    edges = set()
    score_col = -1
    for no, line in enumerate(text.read().splitlines(), 1):
        where = f"{links}:{no}"
        fields = line.split()
        if not fields:
            continue
        if no == 1 and not fields[-1].lstrip("-").isdigit():
            if "combined_score" not in fields:
                raise AtlasError(f"{where}: no combined_score: STRING links need a score column for the "
                                 "cut-off (header protein1 protein2 ... combined_score, or three columns)")
            score_col = fields.index("combined_score")
            continue
        if len(fields) < 3:
            raise AtlasError(f"{where}: STRING line has no score: expected protein1 protein2 combined_score, "
                             f"got {len(fields)} column(s)")
        try:
            score = int(float(fields[score_col]))
        except ValueError:
            raise AtlasError(f"{where}: STRING score {fields[score_col]!r} is not a number") from None
        if score < min_score:
            continue
        pair = []
        for token in fields[:2]:
            _check_gene(token, where)
            if STRING_PROTEIN.match(token):
                if names is None:
                    raise AtlasError(f"{where}: {token!r} is a STRING protein id; give the protein.info file "
                                     "(--string-info) to map it to a gene")
                g = names.get(token)
            else:
                g = normalise_gene(token)
            pair.append(g)
        if pair[0] and pair[1] and pair[0] != pair[1]:
            edges.add(tuple(sorted(pair)))
    if not edges:
        raise AtlasError(f"{links}: no STRING links with combined_score >= {min_score}")
    meta = _meta(links, raw, title=f"STRING interactions (combined score >= {min_score}) among top genes",
                 min_score=min_score)
    return Network("STRING", sorted(edges), meta)


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
