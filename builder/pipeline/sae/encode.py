"""SAE encode of an activations folder (`atlas sae encode`): activations in, sparse codes out (top-k feature indices and values per token), in
shards on disk. Later stages read only codes.

Layout of CODES_DIR/:
  codes.json         layer, n_features, k, tokens, shard sizes, index dtype, SAE and activations sources
  NNNNN.idx.npy      (tokens, k) feature indices, uint16 when there are at most 65,536 features, else int32
  NNNNN.val.npy      (tokens, k) float32 activations (ReLU'd; a 0 means the feature did not fire)
  NNNNN.cell.npy     (tokens,) int32 dataset row of each token
  NNNNN.gene.npy     (tokens,) int32 token id (gene) of each token
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ...errors import AtlasError
from ...fsutil import atomic_dir, read_parquet
from ...jsonio import read_json
from ..codes import Codes
from .topk import TopKSAE
from .train import n_nonfinite

SHARD_FIELDS = ("idx", "val", "cell", "gene")
SHARD = 262_144  # tokens per shard, at least (a shard ends at the first chunk boundary past it)


@torch.no_grad()
def encode_stream(sae: TopKSAE, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], out: Path,
                  meta: dict, where: str = "activations", batch: int = 16_384) -> dict:
    """Encode (acts, cells, genes) chunks into shards under `out` (written atomically)."""
    idx_dtype = np.uint16 if sae.d_sae <= 1 << 16 else np.int32
    sae = sae.eval()
    shards, pending, total, bad = [], [], 0, 0
    with atomic_dir(out) as tmp:
        def flush(final=False):
            """Write what is pending as one shard once it reaches SHARD tokens (or at the end)."""
            nonlocal pending
            if not pending or (not final and sum(len(p.cell) for p in pending) < SHARD):
                return
            name = f"{len(shards):05d}"
            for field in ("idx", "val", "cell", "gene"):
                np.save(tmp / f"{name}.{field}.npy", np.concatenate([getattr(p, field) for p in pending]))
            shards.append(sum(len(p.cell) for p in pending))
            pending = []

        for acts, cells, genes in chunks:
            if acts.shape[1] != sae.d_in:
                raise AtlasError(f"{where}: activations have width {acts.shape[1]}, the SAE expects {sae.d_in}")
            bad += n_nonfinite(acts)
            if bad:
                continue  # keep counting, write nothing
            for s in range(0, len(acts), batch):
                v, i = sae.encode(torch.from_numpy(np.array(acts[s : s + batch], dtype=np.float32)))
                pending.append(Codes(i.numpy().astype(idx_dtype), v.numpy(), cells[s : s + batch].astype(np.int32),
                                     genes[s : s + batch].astype(np.int32)))
            total += len(acts)
            flush()
        if bad:
            raise AtlasError(f"{where}: {bad} NaN or infinite activation values; nothing was encoded")
        if total == 0:
            raise AtlasError(f"{where}: the layer has no tokens")
        flush(final=True)
        record = {"format": "feature-atlas codes 1", **meta, "n_features": sae.d_sae, "k": sae.k, "tokens": total,
                  "shards": shards, "index_dtype": np.dtype(idx_dtype).name}
        (tmp / "codes.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def encode_activations(sae: TopKSAE, activations: Path, layer: int, out: Path, meta: dict) -> dict:
    """Encode one layer of an activations folder (written by `extract`) into a codes folder."""
    from ..model.extract import read_activations

    acts, _ = read_activations(activations, layer)
    tokens = read_parquet(Path(activations) / "tokens.parquet", columns=["cell", "token_id"])
    if tokens.num_rows != len(acts):
        raise AtlasError(f"{activations}/tokens.parquet: {tokens.num_rows} rows for {len(acts)} activation rows")
    cells, genes = tokens["cell"].to_numpy(), tokens["token_id"].to_numpy()
    step = 65_536
    chunks = ((np.asarray(acts[s:s + step]), cells[s:s + step], genes[s:s + step]) for s in range(0, len(acts), step))
    return encode_stream(sae, chunks, out, meta, where=f"{activations}/layer_{layer:02d}.npy")


def read_codes(folder: Path) -> tuple[dict, Iterator[Codes]]:
    """(codes.json record, iterator over shards memory-mapped from disk); a damaged folder is named up front."""
    folder = Path(folder)
    if not (folder / "codes.json").is_file():
        raise AtlasError(f"{folder}: not a codes folder (no codes.json; write one with `atlas sae encode`)")
    record = read_json(folder / "codes.json")
    for key, kind in (("layer", int), ("n_features", int), ("k", int), ("tokens", int), ("shards", list)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise AtlasError(f"{folder / 'codes.json'}: field {key!r} missing or not {'a list' if kind is list else 'an integer'}")
    sizes = record["shards"]
    if not sizes or not all(isinstance(n, int) and n > 0 for n in sizes) or sum(sizes) != record["tokens"]:
        raise AtlasError(f"{folder / 'codes.json'}: 'shards' must list positive shard sizes adding up to 'tokens'")
    files = [folder / f"{n:05d}.{f}.npy" for n in range(len(sizes)) for f in SHARD_FIELDS]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise AtlasError(f"{folder}: shard file {missing[0]} missing ({len(missing)} of {len(files)} files); "
                         "write the folder again with `atlas sae encode`")

    def load(n: int, f: str) -> np.ndarray:
        path = folder / f"{n:05d}.{f}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise AtlasError(f"{path}: not a readable .npy file ({e})") from None
        if len(arr) != sizes[n] or (f in ("idx", "val") and arr.shape[1:] != (record["k"],)):
            raise AtlasError(f"{path}: shape {arr.shape}, codes.json expects {sizes[n]} tokens (k {record['k']})")
        if f != "val" and arr.size:  # indices: later stages count into arrays of these sizes
            low, high = int(arr.min()), int(arr.max())
            if f == "idx" and (low < 0 or high >= record["n_features"]):
                raise AtlasError(f"{path}: feature index {low if low < 0 else high} is outside the SAE width "
                                 f"{record['n_features']} (codes.json n_features); write the folder again with "
                                 "`atlas sae encode`")
            if low < 0:
                raise AtlasError(f"{path}: negative {'cell' if f == 'cell' else 'token id'} {low}")
        return arr

    def shards():
        for n in range(len(sizes)):
            yield Codes(*(load(n, f) for f in SHARD_FIELDS))

    return record, shards()
