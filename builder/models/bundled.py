"""The bundled inputs of the demo atlases (atlas_data/inputs/): the labelled PBMC counts and the two demo
checkpoints, with the checksums recorded in atlas_data/inputs/SHA256SUMS so that a damaged file is named."""

from __future__ import annotations

from pathlib import Path

from ..errors import AtlasError
from ..fsutil import sha256_file

INPUTS = Path("atlas_data/inputs")
DATA = INPUTS / "pbmc68k_counts.h5ad"  # 700 PBMCs x 765 genes, counts, obs['cell_type']
CELL_TYPE_COLUMN = "cell_type"
CHECKPOINTS = {"scgpt": INPUTS / "models" / "scgpt", "geneformer": INPUTS / "models" / "geneformer"}
SUMS = "SHA256SUMS"


def recorded(inputs: Path = INPUTS) -> dict[str, str]:
    """Relative path -> sha256, from inputs/SHA256SUMS (`sha256sum` format)."""
    path = Path(inputs) / SUMS
    if not path.is_file():
        raise AtlasError(f"{path}: missing; restore it with `git checkout -- {path}`")
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*")] = digest
    return out


def verify(path: Path, inputs: Path = INPUTS) -> Path:
    """Check a bundled file, or every recorded file of a bundled folder, against SHA256SUMS."""
    path, inputs = Path(path), Path(inputs)
    sums = recorded(inputs)
    rel = path.resolve().relative_to(inputs.resolve()).as_posix()
    names = [n for n in sums if n == rel or n.startswith(rel.rstrip("/") + "/")]
    if not names:
        raise AtlasError(f"{path}: not a bundled input recorded in {inputs / SUMS}")
    for name in names:
        f = inputs / name
        if not f.is_file():
            raise AtlasError(f"{f}: bundled file missing; restore it with `git checkout -- {f}`")
        if sha256_file(f) != sums[name]:
            raise AtlasError(f"{f}: bundled file damaged (sha256 differs from {inputs / SUMS}); restore it with "
                             f"`git checkout -- {f}`")
    return path
