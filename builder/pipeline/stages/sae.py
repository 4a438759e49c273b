"""The SAE stage: one TopK SAE per layer, trained on the sample (--train-sae) or given (--sae DIR: layer_LL/ folders
or layer_LL.pt files, checked against the model's width).

Stage folder SAE-LL/ (trained): sae/ (SAELens layout, its training record in cfg.json's metadata), and two
untrained dictionaries for the random_dictionary baseline: random_dictionary/ (this SAE before its first step) and
random_dictionary_2/ (the start another seed would have given). Every layer has its own seed
(sae.train.layer_seed), and the layers train in parallel processes, one torch thread each, so the bytes do not
depend on the number of cores. read() gives Saes: each layer's SAE, its untrained dictionaries, the key later stages
hash (a trained SAE's stage key, a given one's content hash), its training record, and where they came from.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ...errors import AtlasError
from ...jsonio import read_json
from ..cache import commit_once, is_done, key_of, tree_hash
from ..sae.topk import load_sae
from ..stage import LayerStage, folder_key


DICTIONARIES = ("random_dictionary", "random_dictionary_2")  # the baseline's names and their folders


@dataclass(frozen=True)
class Saes:
    paths: dict[int, Path]
    keys: dict[int, str]
    source: str  # "trained by atlas build" or "given (--sae)"
    dictionaries: dict[int, dict[str, Path]]  # per trained layer: the untrained dictionaries (none when given)
    training: dict[int, dict]  # each trained layer's record (steps, curve, stop, decoder distance from its start)


def train_layer(sample_dir: str, layer: int, cfg: dict, model_name: str, target: str) -> None:
    """Train one layer's SAE into the cache folder `target` (committed once), beside the untrained
    dictionaries. Run in a worker process."""
    import copy

    import torch

    from ..sae.train import TrainConfig, initial_sae, layer_seed, sample_mean, train
    from .sample import read_sample

    torch.set_num_threads(1)  # multi-threaded reductions vary run to run; the cache must not
    base = TrainConfig(**cfg)
    tc = replace(base, seed=layer_seed(base.seed, layer))
    sample = read_sample(Path(sample_dir), layer)
    where = f"layer {layer}"
    mean = sample_mean(sample, tc.block, where)
    start = initial_sae(sample.shape[1], tc, mean, tc.seed)
    other = initial_sae(sample.shape[1], tc, mean, layer_seed(base.seed, layer, draw=2))
    meta = {"layer": layer, "model_name": model_name}
    with commit_once(Path(target)) as tmp:
        start.save(tmp / DICTIONARIES[0], {**meta, "baseline": "this SAE before its first step"})
        other.save(tmp / DICTIONARIES[1], {**meta, "baseline": "the start of another seed, never trained"})
        model, metrics = train(sample, tc, where=where, start=copy.deepcopy(start))
        model.save(tmp / "sae", {**meta, "training": metrics})


class SaeStage(LayerStage):
    name = "sae"

    def key(self, b, unit) -> str:
        return key_of("sae-train", folder_key(b.results["sample"]), unit[0], asdict(b.train_cfg))

    def read(self, folder: Path) -> tuple[Path, dict, str, dict]:
        folder = Path(folder)
        meta = read_json(folder / "sae" / "cfg.json")["metadata"]
        return folder / "sae", {n: folder / n for n in DICTIONARIES}, folder_key(folder), meta.get("training", {})

    def make(self, b) -> Saes:
        if not b.cfg.train_sae:
            return given(b)
        targets = {L: b.cache / f"sae-{L:02d}-{self.key(b, (L,))}" for L in b.layers}
        todo = [L for L, t in targets.items() if not is_done(t)]
        for L in b.layers:
            if L not in todo:
                b.timings.cached["sae"] += 1
        if todo:
            self._train(b, todo, targets)
        got = {L: self.read(t) for L, t in targets.items()}
        return Saes({L: g[0] for L, g in got.items()}, {L: g[2] for L, g in got.items()}, "trained by atlas build",
                    {L: g[1] for L, g in got.items()}, {L: g[3] for L, g in got.items()})

    def _train(self, b, todo: list[int], targets: dict[int, Path]) -> None:
        import time

        t0 = time.perf_counter()
        for L in todo:
            b.log(f"sae-{L:02d}: computing")
        args = [(str(b.results["sample"]), L, asdict(b.train_cfg), b.model_name, str(targets[L])) for L in todo]
        workers = min(len(todo), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        if workers <= 1:
            for a in args:
                train_layer(*a)
        else:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for future in [pool.submit(train_layer, *a) for a in args]:
                    future.result()
        b.timings.done("sae", time.perf_counter() - t0)
        b.timings.computed["sae"] += len(todo)


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
    return Saes(paths, keys, "given (--sae)", {}, {})
