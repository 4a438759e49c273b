"""What every model adapter offers, and the batched loop that streams per-layer activations out of it.

An adapter turns one cell of a Dataset into token ids (its official input pipeline), pads a list of cells
into a batch, and returns the residual stream after the requested transformer layers. `stream` runs the
batches and yields, per batch, only the rows of gene tokens (no <cls>, <eos> or padding), each with its
cell index and token id, so that consumers never see model-specific layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .dataset import Dataset
from ..errors import AtlasError
from .precision import autocast, place


@dataclass(frozen=True)
class CellTokens:
    ids: np.ndarray  # int64 token ids, special tokens included, no padding
    values: np.ndarray | None = None  # per-token input values (scGPT's expression bins), same length


@dataclass(frozen=True)
class Prepared:
    """A dataset matched to a model's vocabulary: what `cell(i)` needs, plus a report of the matching."""

    dataset: Dataset
    gene_column: str
    token_of_gene: np.ndarray  # per dataset gene (column of counts): token id, or -1 when not in the vocabulary
    matched: int  # dataset genes with a token
    report: dict = field(default_factory=dict)  # what to tell the user: genes, matched, gene column
    extra: dict = field(default_factory=dict)  # per-dataset arrays the adapter's tokenize needs


def some(keys, n: int = 3) -> str:
    """'a, b, c and 2 more': the first n of a list of checkpoint keys, for a message."""
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_unique_genes(prepared: Prepared) -> None:
    """Refuse a dataset whose gene column names a known gene more than once: one cell would carry one gene token
    twice. Every command that runs a model on a dataset (extract, build, perturb) checks its input here."""
    column = prepared.gene_column
    var = prepared.dataset.var
    names = (var.index if column == "index" else var[column]).astype(str).to_numpy()
    uniq, counts = np.unique(names[prepared.token_of_gene >= 0], return_counts=True)
    dup = uniq[counts > 1]
    if dup.size:
        raise AtlasError(f"{prepared.dataset.path}: var column {column!r} names {dup.size} gene(s) more than once (e.g. "
                         f"{', '.join(map(str, dup[:3]))}), so one cell would carry one gene token twice; make the "
                         f"names unique or pick another --gene-column")


@dataclass(frozen=True)
class Chunk:
    """The gene-token rows of one batch: row r is token `genes[r]` of dataset cell `cells[r]`."""

    cells: np.ndarray  # int64, dataset row of each token
    genes: np.ndarray  # int64, token id of each token
    acts: dict[int, np.ndarray]  # layer -> float32 (rows, width)
    n_cells: int  # cells in the batch, including any without a gene token


class Adapter(Protocol):
    family: str
    name: str  # model name for the manifest, e.g. "scGPT whole-human" or "Geneformer V2"
    n_layers: int
    width: int
    max_tokens: int  # longest input the model takes, special tokens included
    special_ids: frozenset[int]  # token ids that are not genes (<cls>, <eos>, <pad>, ...)
    gene_names: dict[int, str]  # token id -> gene name (symbol or Ensembl id) for every gene token
    model: torch.nn.Module
    ignored_keys: list[str]  # checkpoint keys the adapter does not use, listed for the user
    has_head: bool  # the checkpoint carries the family's prediction head (causal patching needs it)
    # Why a head the checkpoint carries was left out (incomplete, mis-shaped), naming its file and keys; None when
    # the head loaded or the checkpoint has none. Commands that need no head print it as one note and go on.
    head_problem: str | None

    def prepare(self, dataset: Dataset, gene_column: str | None = None) -> Prepared: ...

    def tokenize(self, prepared: Prepared, cell: int) -> CellTokens: ...

    def collate(self, cells: Sequence[CellTokens]) -> dict[str, torch.Tensor]: ...

    def layer_outputs(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> dict[int, torch.Tensor]: ...

    # The prediction head, for causal patching: run the model from `layer` with its output replaced by `hidden`
    # (or unchanged when None) and read the head, at every position or only at `positions` ((B, T) bool).
    def predict(self, batch: dict[str, torch.Tensor], layer: int | None = None,
                hidden: torch.Tensor | None = None) -> torch.Tensor: ...

    def predict_at(self, batch: dict[str, torch.Tensor], positions: torch.Tensor, layer: int | None = None,
                   hidden: torch.Tensor | None = None) -> torch.Tensor: ...


def pad(seqs: Sequence[np.ndarray], value, dtype) -> torch.Tensor:
    """Right-pad 1-D arrays into one (batch, longest) tensor."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=dtype)
    return out


def pick_device(device: str | None) -> torch.device:
    """'auto' (or None) takes CUDA, then Apple's MPS, then the CPU."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise AtlasError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AtlasError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise AtlasError(f"--device {device}: MPS is not available on this machine")
    return dev


def default_batch_size(device: torch.device) -> int:
    """On a CPU one cell already fills the matrix products and padding masks slow attention down
    (bench/models_throughput.py), so cells go one at a time; GPUs get batches of 16."""
    return 1 if device.type == "cpu" else 16


def check_layers(adapter: Adapter, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(adapter.n_layers))
    bad = [L for L in layers if not 0 <= L < adapter.n_layers]
    if bad:
        raise AtlasError(f"--layers {bad[0]}: the model has layers 0..{adapter.n_layers - 1}")
    return sorted(set(layers))


def stream(adapter: Adapter, prepared: Prepared, layers: Sequence[int], batch_size: int = 1,
           device: torch.device | None = None, cells: Sequence[int] | None = None) -> Iterator[Chunk]:
    """Run the model over `cells` (default: all) in batches; yield the gene-token rows of each batch.

    Every cell of `cells` is tokenized first (callers pass a shard, so this stays small); batches are formed
    longest cells first, so rows come in that order, not the dataset's.
    """
    device = device or torch.device("cpu")
    # fp32 weights, matrix products under autocast on accelerators: LayerNorms, softmax and residual sums stay fp32
    # (a bf16 cast of the whole model left 1% median relative error at layer 11 of scGPT; precision.py).
    place(adapter.model, device)
    special = torch.tensor(sorted(adapter.special_ids), dtype=torch.long)
    order = np.arange(prepared.dataset.n_cells) if cells is None else np.asarray(cells, dtype=np.int64)
    tokens = [adapter.tokenize(prepared, int(i)) for i in order]
    # Longest cells first, so a batch holds cells of similar length: less padding, and a memory error, if
    # any, comes at once.
    by_length = np.argsort(-np.array([len(t.ids) for t in tokens], dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        pick = by_length[start : start + batch_size]
        rows = order[pick]
        batch = adapter.collate([tokens[j] for j in pick])
        ids = batch["input_ids"]
        keep = ~torch.isin(ids, special)  # gene tokens only; padding is a special id too
        cell_of = torch.as_tensor(rows, dtype=torch.long)[:, None].expand_as(ids)
        if not keep.any():  # no cell of the batch has a gene token: nothing to run
            yield Chunk(np.zeros(0, np.int64), np.zeros(0, np.int64),
                        {L: np.zeros((0, adapter.width), np.float32) for L in layers}, len(rows))
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode(), autocast(device):
            out = adapter.layer_outputs(batch, layers)
        yield Chunk(cells=cell_of[keep].numpy(), genes=ids[keep].numpy(),
                    acts={L: out[L][keep.to(device)].float().cpu().numpy() for L in layers}, n_cells=len(rows))


def gene_token_count(adapter: Adapter, cell: CellTokens) -> int:
    """Gene tokens of a tokenized cell (special tokens left out), as `stream` hands them out."""
    return int((~np.isin(cell.ids, np.fromiter(adapter.special_ids, np.int64))).sum())
