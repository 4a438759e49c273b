"""Geneformer V1 (2,048 tokens) and V2 (4,096 tokens, <cls>/<eos>): Hugging Face BERT checkpoints with their
masked-LM head, and the rank-value tokenizer, read from local files only.

Tokenization follows Geneformer's TranscriptomeTokenizer: cells with obs['filter_pass'] != 1 are skipped when
the column exists; counts of genes in both dictionaries (Ensembl ids, version suffix dropped, collapsed through
the Ensembl mapping dictionary when the folder has one, ids missing from it dropped, counts of ids that
collapse together summed), divided by the cell's total counts, times 10,000, divided by the gene's non-zero
median; non-zero genes ranked by that value, highest first, ties by token id (Geneformer's unstable argsort
leaves them arbitrary); truncated to the model's input size.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset
from ..errors import AtlasError
from ..geneids import is_ensembl, normalise_ensembl
from .base import CellTokens, Prepared, pad, some

TARGET_SUM = 10_000
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class _Stop(Exception):
    """Raised by the hook of the last layer asked for, so deeper layers are not computed."""


def _one(folder: Path, pattern: str, what: str, required: bool = True) -> Path | None:
    found = sorted(folder.glob(pattern))
    if len(found) > 1:
        raise AtlasError(f"{folder}: several {what} files ({', '.join(p.name for p in found)}); keep one")
    if not found and required:
        raise AtlasError(f"{folder}: missing the {what} ({pattern}) that came with the checkpoint")
    return found[0] if found else None


def _pickle(path: Path, values: tuple[type, ...], what: str) -> dict:
    """A pickled dictionary whose values are all of `values` types (bool is never a number here)."""
    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except Exception as e:
        raise AtlasError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise AtlasError(f"{path}: expected a dictionary, found {type(value).__name__}")
    for k, v in value.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, values)):
            raise AtlasError(f"{path}: the value of {k!r} is {v!r} ({type(v).__name__}), expected {what}")
    return value


def _check_weights(folder: Path) -> tuple[Path, list[str]]:
    """Refuse a weights file that is damaged or holds non-float tensors, before transformers reads it; returns the
    file and its keys."""
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors import safe_open

        try:
            with safe_open(st, framework="pt") as f:
                dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        except Exception as e:  # SafetensorError, OSError, ...: a damaged header or a truncated file
            raise AtlasError(f"{st}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        bad = {k: t for k, t in dtypes.items() if t not in ("F16", "BF16", "F32", "F64")}
        keys = list(dtypes)
    else:
        path = folder / "pytorch_model.bin"
        state = None
        for mmap in (True, False):  # mmap reads only the headers, but files in the pre-zip format cannot be mapped
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
                break
            except Exception as e:
                error = e
        if state is None:
            raise AtlasError(f"{path}: not a readable PyTorch state dict ({type(error).__name__}: {error})") from None
        if not isinstance(state, dict):
            raise AtlasError(f"{path}: expected a state dict, found {type(state).__name__}")
        bad = {k: v.dtype for k, v in state.items() if torch.is_tensor(v) and not v.is_floating_point()
               and not k.endswith("position_ids")}  # BERT's position_ids buffer is int64 by design
        st, keys = path, list(state)
    if bad:
        k = sorted(bad)[0]
        raise AtlasError(f"{st}: {k} has dtype {bad[k]}, expected floating-point weights")
    return st, keys


class GeneformerAdapter:
    family = "geneformer"

    def __init__(self, checkpoint: Path):
        import transformers

        transformers.logging.set_verbosity_error()  # we report ignored and missing keys ourselves
        transformers.logging.disable_progress_bar()
        checkpoint = Path(checkpoint)
        if not checkpoint.is_dir():
            raise AtlasError(f"{checkpoint}: checkpoint folder not found")
        if not (checkpoint / "config.json").is_file():
            raise AtlasError(f"{checkpoint}: missing config.json (a Hugging Face BERT checkpoint folder)")
        if not any((checkpoint / w).is_file() for w in WEIGHTS):
            raise AtlasError(f"{checkpoint}: missing the weights ({' or '.join(WEIGHTS)})")
        self.token_dict = _pickle(_one(checkpoint, "token_dictionary*.pkl", "token dictionary"), (int,), "a token id")
        medians = _pickle(_one(checkpoint, "gene_median_dictionary*.pkl", "gene median dictionary"), (int, float),
                          "a number")
        mapping = _one(checkpoint, "ensembl_mapping_dict*.pkl", "Ensembl mapping dictionary", required=False)
        self.mapping = _pickle(mapping, (str,), "an Ensembl id") if mapping else None
        if "<pad>" not in self.token_dict:
            raise AtlasError(f"{checkpoint}: the token dictionary has no <pad> token")
        weights, keys = _check_weights(checkpoint)

        try:
            config = transformers.BertConfig.from_pretrained(checkpoint, local_files_only=True)
            mlm, info = transformers.BertForMaskedLM.from_pretrained(
                checkpoint, config=config, local_files_only=True, output_loading_info=True,
                ignore_mismatched_sizes=True)  # reported below, in our words
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AtlasError(f"{checkpoint}: cannot load the BERT checkpoint ({first})") from None
        missing = sorted(info.get("missing_keys", []))
        mismatched = sorted(str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys", []))
        problems = [k for k in missing + mismatched if not k.startswith("cls.")]
        if problems:
            raise AtlasError(f"{checkpoint}: encoder weight missing or mis-shaped: {some(problems)}")
        model = mlm.bert
        n_emb = model.embeddings.word_embeddings.num_embeddings
        if len(self.token_dict) != n_emb:
            raise AtlasError(f"{checkpoint}: the token dictionary has {len(self.token_dict)} tokens "
                             f"but the embedding has {n_emb} rows")
        self.model = model.eval()
        # The masked-LM head (cls.predictions.*) when the checkpoint has all of it; transformers fills missing or
        # mis-shaped head weights with random ones, which must never pass for a prediction.
        head_missing = [k for k in missing if k.startswith("cls.")]
        head_bad = [k for k in mismatched if k.startswith("cls.")]
        self.has_head = not head_missing and not head_bad
        self.head_problem = None
        if not self.has_head and any(k.startswith("cls.") for k in keys):  # a head, but not a whole one
            self.head_problem = (f"{weights}: the masked-LM head (cls.predictions.*) is incomplete, "
                                 + (f"missing {some(head_missing)}" if head_missing else f"mis-shaped {some(head_bad)}"))
        self.head = mlm.cls.eval() if self.has_head else None
        self.mask_id = self.token_dict.get("<mask>")
        self.ignored_keys = sorted(info.get("unexpected_keys", []))
        self.n_layers, self.width = config.num_hidden_layers, config.hidden_size
        self.max_tokens = config.max_position_embeddings
        self.pad_id = self.token_dict["<pad>"]
        self.cls_id, self.eos_id = self.token_dict.get("<cls>"), self.token_dict.get("<eos>")
        self.specials = self.cls_id is not None and self.eos_id is not None
        self.name = f"Geneformer {'V2' if self.specials else 'V1'} ({checkpoint.name})"
        self.special_ids = frozenset(v for k, v in self.token_dict.items() if str(k).startswith("<"))
        self.gene_names = {v: str(k) for k, v in self.token_dict.items() if v not in self.special_ids}
        # Genes that have both a token and a positive median are the ones Geneformer tokenizes.
        self.median = {str(k): float(v) for k, v in medians.items() if v and float(v) > 0}

    def _ensembl(self, value: str) -> str | None:
        """The id the dictionaries use; None for an id the mapping dictionary lacks (the official tokenizer maps
        ids through the dictionary and drops those it does not find)."""
        g = normalise_ensembl(value)
        if self.mapping is None:
            return g
        mapped = self.mapping.get(g)
        return None if mapped is None else str(mapped)

    def prepare(self, dataset: Dataset, gene_column: str | None = None) -> Prepared:
        """Find the Ensembl ids (the var column or index with most known ids, or `gene_column`) and match them."""
        usable = {g for g in self.token_dict if g in self.median}
        column, names = dataset.gene_column(
            gene_column, lambda col: sum(is_ensembl(n) and self._ensembl(n) in usable for n in col))
        if not any(is_ensembl(n) for n in names):
            raise AtlasError(f"{dataset.path}: no Ensembl gene ids in var column {column!r} (e.g. "
                             f"{', '.join(map(str, names[:3]))}); Geneformer needs them, e.g. in var['ensembl_id']")
        ids = [self._ensembl(n) for n in names]
        token = np.array([self.token_dict[g] if g in usable else -1 for g in ids], dtype=np.int64)
        matched = int((token >= 0).sum())
        if matched == 0:
            raise AtlasError(f"{dataset.path}: none of its {len(names)} Ensembl ids (var column {column!r}) is in the "
                             f"Geneformer token dictionary")
        median = np.ones(len(self.token_dict), dtype=np.float64)
        for g in usable:
            median[self.token_dict[g]] = self.median[g]
        cells = passing_cells(dataset)
        report = {"genes": len(names), "matched": matched, "gene_column": column,
                  "unmapped": sum(g is None for g in ids), "filtered_out": dataset.n_cells - len(cells)}
        return Prepared(dataset, column, token, matched, report,
                        extra={"median": median, "totals": dataset.total_counts(), "cells": cells,
                               "skip": np.isin(np.arange(dataset.n_cells), cells, invert=True)})

    def tokenize(self, prepared: Prepared, cell: int) -> CellTokens:
        """Rank-value encoding of one cell; a cell that fails obs['filter_pass'] gets no gene token (the official
        tokenizer leaves it out; run only prepared.extra['cells'] to skip it entirely)."""
        if prepared.extra["skip"][cell]:
            return CellTokens(np.array([self.cls_id, self.eos_id] if self.specials else [], dtype=np.int64))
        row = prepared.dataset.counts[cell]
        tok = prepared.token_of_gene[row.indices]
        known = tok >= 0
        ids, inverse = np.unique(tok[known], return_inverse=True)  # sorted token ids: the tie order
        counts = np.bincount(inverse, weights=row.data[known].astype(np.float64), minlength=ids.size)
        value = counts / prepared.extra["totals"][cell] * TARGET_SUM / prepared.extra["median"][ids]
        ranked = ids[np.argsort(-value, kind="stable")]
        if self.specials:
            ranked = np.concatenate([[self.cls_id], ranked[: self.max_tokens - 2], [self.eos_id]])
        else:
            ranked = ranked[: self.max_tokens]
        return CellTokens(ranked.astype(np.int64))

    def collate(self, cells: Sequence[CellTokens]) -> dict[str, torch.Tensor]:
        ids = pad([c.ids for c in cells], self.pad_id, torch.long)
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}

    def layer_outputs(self, batch, layers):
        """Output of encoder layer L = transformers' hidden_states[L + 1] (index 0 is the embeddings)."""
        out, last = {}, max(layers)

        def hook(i):
            def capture(module, inputs, output):
                if i in layers:
                    out[i] = output[0] if isinstance(output, tuple) else output
                if i == last:
                    raise _Stop

            return capture

        handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(self.model.encoder.layer)]
        try:
            self._run(batch)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return out

    def _run(self, batch):
        mask = batch["attention_mask"]
        # Without padding the mask changes nothing, and leaving it out lets SDPA take its fast kernel.
        return self.model(input_ids=batch["input_ids"], attention_mask=None if bool(mask.all()) else mask)

    # --- what interventions need: masked inputs, the rest of the model from layer L, the head ---------------

    def maskable(self, batch) -> torch.Tensor:
        """(B, T) True at gene tokens: the positions pretraining masks (never <cls>, <eos> or padding)."""
        ids = batch["input_ids"]
        return ~torch.isin(ids, torch.tensor(sorted(self.special_ids), device=ids.device))

    def mask_inputs(self, batch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch with the tokens at `mask` replaced by <mask>, as in Geneformer's masked-gene pretraining."""
        if self.mask_id is None:
            raise AtlasError(f"{self.name}: the token dictionary has no <mask> token")
        ids = batch["input_ids"].clone()
        ids[mask] = self.mask_id
        return {**batch, "input_ids": ids}

    def final_hidden(self, batch, layer: int | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Output of the last layer, (B, T, d). With `layer` and `hidden`, `hidden` replaces the output of
        layer `layer` (a forward hook), so the layers after it see it; layers up to `layer` still run, which
        keeps transformers' own attention-mask handling."""
        if layer is None:
            return self._run(batch).last_hidden_state
        ids = batch["input_ids"]
        if not 0 <= layer < self.n_layers or hidden is None or hidden.shape[:2] != ids.shape:
            raise AtlasError(f"final_hidden: layer {layer} (0..{self.n_layers - 1}) needs a hidden state of shape "
                             f"{tuple(ids.shape)} x {self.width}")

        def replace(module, inputs, output):
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = self.model.encoder.layer[layer].register_forward_hook(replace)
        try:
            return self._run(batch).last_hidden_state
        finally:
            handle.remove()

    def predict(self, batch, layer: int | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The masked-LM head's logits over the vocabulary, (B, T, V); see `final_hidden`. Mask the positions to
        read first (`mask_inputs`): at an unmasked position the model sees the answer."""
        if not self.has_head:
            raise AtlasError(f"{self.name}: the checkpoint has no masked-LM head (cls.predictions.*)")
        h = self.final_hidden(batch, layer, hidden)
        self.head.to(device=h.device, dtype=h.dtype)
        return self.head(h)

    def predict_at(self, batch, positions: torch.Tensor, layer: int | None = None,
                   hidden: torch.Tensor | None = None) -> torch.Tensor:
        """`predict` read only at `positions` ((B, T) bool): logits (P, V). The head runs on those rows alone,
        since logits over the whole vocabulary at every position are large."""
        if not self.has_head:
            raise AtlasError(f"{self.name}: the checkpoint has no masked-LM head (cls.predictions.*)")
        h = self.final_hidden(batch, layer, hidden)[positions]
        self.head.to(device=h.device, dtype=h.dtype)
        return self.head(h)


def passing_cells(dataset: Dataset) -> np.ndarray:
    """Rows of cells the official tokenizer keeps: all, or those with obs['filter_pass'] == 1 when it exists."""
    if "filter_pass" not in dataset.obs.columns:
        return np.arange(dataset.n_cells)
    # The official test, value == 1: 1, 1.0 and True pass; 0, missing values and text such as "1" do not.
    return np.flatnonzero([bool(v == 1) if not isinstance(v, str) else False for v in dataset.obs["filter_pass"]])
