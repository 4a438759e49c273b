"""Geneformer V1 (2,048 tokens) and V2 (4,096 tokens, <cls>/<eos>): Hugging Face BERT checkpoints and the
rank-value tokenizer, read from local files only.

Tokenization follows Geneformer's TranscriptomeTokenizer: counts of genes in both dictionaries (Ensembl ids,
version suffix dropped, collapsed through the Ensembl mapping dictionary when the folder has one, counts of
ids that collapse together summed), divided by the cell's total counts, times 10,000, divided by the gene's
non-zero median; non-zero genes ranked by that value, highest first, ties by token id (Geneformer's
unstable argsort leaves them arbitrary); truncated to the model's input size.
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
from .base import CellTokens, Prepared, pad

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


def _pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except Exception as e:
        raise AtlasError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise AtlasError(f"{path}: expected a dictionary, found {type(value).__name__}")
    return value


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
        self.token_dict = _pickle(_one(checkpoint, "token_dictionary*.pkl", "token dictionary"))
        medians = _pickle(_one(checkpoint, "gene_median_dictionary*.pkl", "gene median dictionary"))
        mapping = _one(checkpoint, "ensembl_mapping_dict*.pkl", "Ensembl mapping dictionary", required=False)
        self.mapping = _pickle(mapping) if mapping else None
        if "<pad>" not in self.token_dict:
            raise AtlasError(f"{checkpoint}: the token dictionary has no <pad> token")

        try:
            config = transformers.BertConfig.from_pretrained(checkpoint, local_files_only=True)
            model, info = transformers.BertModel.from_pretrained(
                checkpoint, config=config, local_files_only=True, output_loading_info=True, add_pooling_layer=False,
                ignore_mismatched_sizes=True)  # reported below, in our words
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AtlasError(f"{checkpoint}: cannot load the BERT checkpoint ({first})") from None
        problems = list(info.get("missing_keys", [])) + [str(m[0]) if isinstance(m, tuple) else str(m)
                                                         for m in info.get("mismatched_keys", [])]
        if problems:
            raise AtlasError(f"{checkpoint}: encoder weight missing or mis-shaped: {', '.join(sorted(problems)[:3])}")
        n_emb = model.embeddings.word_embeddings.num_embeddings
        if len(self.token_dict) != n_emb:
            raise AtlasError(f"{checkpoint}: the token dictionary has {len(self.token_dict)} tokens "
                             f"but the embedding has {n_emb} rows")
        self.model = model.eval()
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

    def _ensembl(self, value: str) -> str:
        g = normalise_ensembl(value)
        return str(self.mapping.get(g, g)) if self.mapping is not None else g

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
        return Prepared(dataset, column, token, matched,
                        {"genes": len(names), "matched": matched, "gene_column": column},
                        extra={"median": median, "totals": dataset.total_counts()})

    def tokenize(self, prepared: Prepared, cell: int) -> CellTokens:
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
            mask = batch["attention_mask"]
            # Without padding the mask changes nothing, and leaving it out lets SDPA take its fast kernel.
            self.model(input_ids=batch["input_ids"], attention_mask=None if bool(mask.all()) else mask)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return out
