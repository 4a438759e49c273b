"""Model adapters, one module per family, and the registry of families the build and the CLI read.

Importing this package does not import torch: the CLI reads FAMILIES for its choices at start-up, and the
adapter interface (base.py, which needs torch) loads on first use of one of its names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AtlasError

if TYPE_CHECKING:
    from .base import Adapter

_BASE = ("Adapter", "Chunk", "Prepared", "check_layers", "check_unique_genes", "default_batch_size",
         "gene_token_count", "pick_device", "stream")


def __getattr__(name: str):
    if name in _BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Family:
    """What the build needs of a model family: how to load it and how to write a tiny checkpoint of it."""

    name: str
    load: Callable[[Path, int], Adapter]  # (checkpoint folder, seed) -> adapter
    write_tiny: Callable[..., Path]  # (out folder, **sizes) -> checkpoint folder with random weights
    checkpoint_files: str  # what the checkpoint folder holds, for help texts
    # (checkpoint, out folder, seed) -> the randomly initialised twin (random_init_model baseline); None: none
    write_twin: Callable[[Path, Path, int], Path] | None = None


def _scgpt(checkpoint: Path, seed: int) -> Adapter:
    from .scgpt import ScGPTAdapter

    return ScGPTAdapter(checkpoint, seed=seed)


def _geneformer(checkpoint: Path, seed: int) -> Adapter:
    from .geneformer import GeneformerAdapter

    return GeneformerAdapter(checkpoint)


def _tiny_scgpt(out: Path, **kw) -> Path:
    from .tiny import write_scgpt

    return write_scgpt(out, **kw)


def _tiny_geneformer(out: Path, **kw) -> Path:
    from .tiny import write_geneformer

    return write_geneformer(out, **kw)


def _twin(family: str) -> Callable[[Path, Path, int], Path]:
    def write(checkpoint: Path, out: Path, seed: int) -> Path:
        from .twin import write_twin

        return write_twin(family, checkpoint, out, seed)

    return write


FAMILIES: dict[str, Family] = {
    "scgpt": Family("scgpt", _scgpt, _tiny_scgpt, "args.json, vocab.json, best_model.pt", _twin("scgpt")),
    "geneformer": Family("geneformer", _geneformer, _tiny_geneformer,
                         "config.json, weights, token and gene median dictionaries", _twin("geneformer")),
}

__all__ = ["FAMILIES", "Adapter", "Chunk", "Family", "Prepared", "check_layers", "check_unique_genes",
           "default_batch_size", "gene_token_count", "load", "pick_device", "stream"]


def load(family: str, checkpoint: Path, seed: int = 0) -> Adapter:
    """Load the checkpoint folder of a model family (local files only)."""
    if family not in FAMILIES:
        raise AtlasError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[family].load(Path(checkpoint), seed)
