"""Gene identifiers: symbols upper-cased, Ensembl ids without version, and the bundled GENCODE map between them."""

from __future__ import annotations

import gzip
import re
from functools import lru_cache
from importlib import resources

ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
GENCODE = "GENCODE v44 human genes (via celltypist 1.7.1 samples/GENCODEv44_Gene_id2name.csv, MIT)"


def normalise_ensembl(value: str) -> str:
    """ENSG00000141510.17 -> ENSG00000141510 (Geneformer's dictionaries have no version suffix)."""
    return str(value).strip().upper().split(".", 1)[0]


def is_ensembl(value: str) -> bool:
    return bool(ENSEMBL.match(str(value).strip().upper()))


@lru_cache(maxsize=1)
def gencode() -> tuple[dict[str, str], dict[str, str]]:
    """(Ensembl id -> symbol, symbol -> Ensembl id); a symbol shared by several ids maps to none of them."""
    path = resources.files("builder").joinpath("data/gencode_v44_genes.tsv.gz")
    with gzip.open(path.open("rb"), "rt") as f:
        next(f)
        pairs = [line.rstrip("\n").split("\t") for line in f]
    id_to_symbol = {i: s for i, s in pairs}
    seen: dict[str, int] = {}
    for _, s in pairs:
        seen[s.upper()] = seen.get(s.upper(), 0) + 1
    symbol_to_id = {s.upper(): i for i, s in pairs if seen[s.upper()] == 1}
    return id_to_symbol, symbol_to_id
