"""The SAE stage: one TopK SAE per layer, trained on the sample (--train-sae, CACHE/sae-LL-KEY/sae/, SAELens
layout) or given (--sae DIR: layer_LL/ folders or layer_LL.pt files, checked against the model's width).

read() gives Saes: each layer's SAE path and the key later stages hash (a trained SAE's stage key, a given one's
content hash), and where they came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import AtlasError
from ..cache import key_of, tree_hash
from ..sae.topk import load_sae
from ..sae.train import train
from ..stage import LayerStage, folder_key
from .sample import read_sample


@dataclass(frozen=True)
class Saes:
    paths: dict[int, Path]
    keys: dict[int, str]
    source: str  # "trained by atlas build" or "given (--sae)"


class SaeStage(LayerStage):
    name = "sae"

    def key(self, b, unit) -> str:
        return key_of("sae-train", folder_key(b.results["sample"]), unit[0], asdict(b.train_cfg))

    def run(self, b, unit, tmp: Path) -> None:
        import torch

        L = unit[0]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # multi-threaded reductions vary run to run; the cache must not
        try:
            model, metrics = train(read_sample(b.results["sample"], L), b.train_cfg, where=f"layer {L}")
        finally:
            torch.set_num_threads(threads)
        model.save(tmp / "sae", {"layer": L, "model_name": b.results["plan"].record["model"]["name"],
                                 "training": metrics})

    def read(self, folder: Path) -> tuple[Path, str]:
        return Path(folder) / "sae", folder_key(folder)

    def make(self, b) -> Saes:
        if not b.cfg.train_sae:
            return given(b)
        layers = super().make(b)
        return Saes({L: p for L, (p, _) in layers.items()}, {L: k for L, (_, k) in layers.items()},
                    "trained by atlas build")


def given(b) -> Saes:
    root = Path(b.cfg.sae)
    paths, keys = {}, {}
    for L in b.layers:
        for cand in (root / f"layer_{L:02d}", root / f"layer_{L}", root / f"layer_{L:02d}.pt", root / f"layer_{L}.pt"):
            if cand.exists():
                model = load_sae(cand)
                if model.d_in != b.width:
                    raise AtlasError(f"{cand}: SAE input width {model.d_in} does not fit layer {L} of "
                                     f"{b.model_name} (width {b.width})")
                paths[L], keys[L] = cand, key_of("sae-file", tree_hash(cand))
                break
        else:
            raise AtlasError(f"{root}: no SAE for layer {L} (expected layer_{L:02d}/ or layer_{L:02d}.pt)")
    return Saes(paths, keys, "given (--sae)")
