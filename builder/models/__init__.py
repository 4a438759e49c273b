"""Model adapters, one module per family; `load` picks one by name."""

from __future__ import annotations

from pathlib import Path

from ..errors import AtlasError
from .base import Adapter, Chunk, Prepared, check_layers, default_batch_size, pick_device, stream

FAMILIES = ("scgpt", "geneformer")

__all__ = ["FAMILIES", "Adapter", "Chunk", "Prepared", "check_layers", "default_batch_size", "load", "pick_device", "stream"]


def load(family: str, checkpoint: Path, seed: int = 0) -> Adapter:
    """Load the checkpoint folder of a model family (local files only)."""
    if family == "scgpt":
        from .scgpt import ScGPTAdapter

        return ScGPTAdapter(checkpoint, seed=seed)
    if family == "geneformer":
        from .geneformer import GeneformerAdapter

        return GeneformerAdapter(checkpoint)
    raise AtlasError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
