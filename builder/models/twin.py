"""The randomly initialised twin of a checkpoint: the same family, architecture, vocabulary and dictionaries,
with the weights replaced by the family's initialisation under a seed (`atlas pretrain`'s code). A build on the
twin with the same SAE settings, seed and cells is issue 16's `random_init_model` baseline: what an untrained
network of the same shape already gives (the residual stream alone carries each gene's token from layer to
layer). For a checkpoint of `atlas pretrain` and its own seed, the twin's weights equal `--random-init`'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import AtlasError
from ..fsutil import atomic_dir
from ..jsonio import dumps_json
from .init import init_geneformer, init_scgpt
from .heldout import heldout_cells

RECORD = "twin.json"


def _scgpt(checkpoint: Path, tmp: Path, seed: int) -> None:
    from .scgpt import ScGPTAdapter

    ad = ScGPTAdapter(checkpoint)  # checks the checkpoint; its architecture is what the twin copies
    args = json.loads((checkpoint / "args.json").read_text())
    head = ad.model.decoder
    model = init_scgpt(len(ad.vocab), ad.width, int(args["nheads"]), int(args["d_hid"]), ad.n_layers, ad.pad_id,
                       seed, zero_prob=head is not None and head.zero_logit is not None)
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, tmp / "best_model.pt")
    for name in ("args.json", "vocab.json"):
        shutil.copyfile(checkpoint / name, tmp / name)


def _geneformer(checkpoint: Path, tmp: Path, seed: int) -> None:
    import transformers

    from .geneformer import GeneformerAdapter

    GeneformerAdapter(checkpoint)  # checks the checkpoint
    config = transformers.BertConfig.from_pretrained(checkpoint, local_files_only=True)
    model = init_geneformer(config, seed)
    shown = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # save_pretrained's shard bar is noise
    try:
        model.save_pretrained(tmp)
    finally:
        if shown:
            transformers.utils.logging.enable_progress_bar()
    for pkl in sorted(checkpoint.glob("*.pkl")):  # token, median, name and mapping dictionaries
        shutil.copyfile(pkl, tmp / pkl.name)


WRITERS = {"scgpt": _scgpt, "geneformer": _geneformer}


def write_twin(family: str, checkpoint: Path, out: Path, seed: int, checkpoint_sha256: str = "") -> Path:
    """Write the twin of `checkpoint` into `out` (atomically) with a twin.json record; returns `out`."""
    if family not in WRITERS:
        raise AtlasError(f"random_init_model: no random-init twin for model family {family!r} (known for "
                         f"{', '.join(WRITERS)}); switch the baseline off (--no-random-init-model)")
    checkpoint, out = Path(checkpoint), Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with atomic_dir(out) as tmp:
            WRITERS[family](checkpoint, tmp, seed)
            (tmp / RECORD).write_bytes(dumps_json({
                "twin_of": {"family": family, "checkpoint": checkpoint.name, "sha256": checkpoint_sha256},
                "seed": seed, "trained": False, "heldout_cells": heldout_cells(checkpoint),
                "initialisation": "the family's initialisation of atlas pretrain (scGPT: PyTorch defaults, "
                                  "embedding uniform(-0.1, 0.1); Geneformer: transformers' BERT init)"}, indent=True))
    finally:
        torch.set_num_threads(threads)
    return out
