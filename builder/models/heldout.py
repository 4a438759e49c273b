"""Which cells a model never trained on, as its checkpoint records them: `atlas pretrain` lists them in
pretrain.json, and the untrained twin of such a checkpoint copies the list into twin.json."""

from __future__ import annotations

from pathlib import Path


def heldout_cells(checkpoint: Path) -> list[str] | None:
    """The cells (obs names) a checkpoint of `atlas pretrain`, or its untrained twin, never trained on: what an
    atlas of it should hold out too. None for a checkpoint from elsewhere."""
    import json

    for name, path in (("pretrain.json", ("data", "heldout_cells")), ("twin.json", ("heldout_cells",))):
        file = Path(checkpoint) / name
        if file.is_file():
            try:
                value = json.loads(file.read_text())
                for key in path:
                    value = value[key]
            except (ValueError, KeyError, TypeError):
                return None
            return [str(c) for c in value] if isinstance(value, list) else None
    return None
