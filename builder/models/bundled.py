"""The bundled inputs of the demo atlases (atlas_data/inputs/): the labelled PBMC counts and the two demo
checkpoints, with the checksums recorded in atlas_data/inputs/SHA256SUMS so that a damaged file is named."""

from __future__ import annotations

from pathlib import Path

from ..errors import AtlasError
from ..fsutil import sha256_file

# Relative to the working folder, as every default path; a checkout run from elsewhere finds its own.
INPUTS = Path("atlas_data/inputs")
if not INPUTS.is_dir() and (Path(__file__).resolve().parents[2] / INPUTS).is_dir():
    INPUTS = Path(__file__).resolve().parents[2] / INPUTS
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


# The SAE settings of a demo build, chosen so that `atlas build --model scgpt` fits in 5 minutes on 2 CPU cores
# (bench/demo_bench.py): the whole data (174,400 gene tokens per layer) is the training sample.
# The demo's SAE training: small batches and a higher learning rate, so that the convergence rule (stop when two
# validation measurements 100 steps apart gain under 2%) ends in about a thousand steps on 160k tokens; at
# most 40 passes.
DEMO_TRAIN = {"train.epochs": 40, "train.batch_size": 1024, "train.lr": 4e-3, "train.min_delta": 0.02,
              "train.patience": 2}


def demo_name(family: str) -> str:
    return f"{family}-demo"


def demo_defaults(family: str, given: dict) -> dict:
    """Settings that turn `atlas build --model FAMILY` without --checkpoint into the demo build: the bundled
    checkpoint and labelled cells, SAEs trained on the spot. Settings in `given` (options, config) win."""
    if given.get("checkpoint") or family not in CHECKPOINTS:
        return {}
    label = {"scgpt": "scGPT", "geneformer": "Geneformer"}[family]
    out = {"checkpoint": CHECKPOINTS[family], "atlas": demo_name(family), "train_sae": not given.get("sae"),
           "title": f"{label} demo atlas: a small model pretrained on bundled PBMCs",
           **{k: v for k, v in DEMO_TRAIN.items() if not given.get("sae")}}
    if not given.get("data"):
        out.update(data=DATA, cell_type_column=CELL_TYPE_COLUMN)
    return out


def demo_sentence(family: str, cfg) -> str:
    """The one line a demo build says about itself: which bundled model and data, what is trained now."""
    import json

    rec = json.loads((CHECKPOINTS[family] / "pretrain.json").read_text())
    c, d = rec["config"], rec["data"]
    what = "SAEs trained now" if cfg.train_sae else f"SAEs from {cfg.sae}"
    return (f"demo: building {cfg.atlas} from the bundled {family} demo model ({c['layers']} layers x {c['width']}, "
            f"pretrained by this project on {d['train_cells']} cells of {DATA.name}) on {Path(cfg.data).name}, {what}; "
            f"for your own model give --checkpoint DIR --data FILE.h5ad")
