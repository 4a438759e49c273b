"""scGPT (whole-human layout: args.json, vocab.json, best_model.pt) and its official zero-shot input pipeline.

The module below is scGPT's gene encoder, continuous value encoder, post-norm transformer encoder and
expression decoder (the masked-value head, loaded when the checkpoint has it), with the checkpoint's own
parameter names, so a checkpoint loads without translation tables beyond the three spellings of the attention
projection. Layers are looped explicitly: PyTorch's nested-tensor fast path (`nn.TransformerEncoder` in eval
mode) would change what padded batches compute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dataset import Dataset
from ..errors import AtlasError
from .base import CellTokens, Prepared, pad, some

FILES = ("args.json", "vocab.json", "best_model.pt")
PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")  # the encoder
HEAD = "decoder."  # scGPT's ExprDecoder; other heads (mvc_decoder, cls_decoder, flag_encoder) are ignored


class GeneEncoder(nn.Module):
    def __init__(self, n_tokens: int, d: int, pad_id: int):
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, d, padding_idx=pad_id)
        self.enc_norm = nn.LayerNorm(d)

    def forward(self, ids):
        return self.enc_norm(self.embedding(ids))


class ContinuousValueEncoder(nn.Module):
    """Expression value (a bin number) -> vector; values are clipped at 512 as in scGPT."""

    def __init__(self, d: int, max_value: float = 512):
        super().__init__()
        self.linear1 = nn.Linear(1, d)
        self.linear2 = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.max_value = max_value

    def forward(self, x):
        x = torch.clamp(x.unsqueeze(-1), max=self.max_value)
        return self.norm(self.linear2(F.relu(self.linear1(x))))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one packed q|k|v projection (flash-attn's `Wqkv`, PyTorch's `in_proj`)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.Wqkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, keep):  # keep: (B, T) True for real tokens
        b, t, d = x.shape
        q, k, v = self.Wqkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer with ReLU, as scGPT's FlashTransformerEncoderLayer and nn.TransformerEncoderLayer.
    Dropout (scGPT's three, in the same places) acts only in training mode: pretraining uses it, extraction not."""

    def __init__(self, d: int, heads: int, d_hid: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = SelfAttention(d, heads)
        self.linear1 = nn.Linear(d, d_hid)
        self.linear2 = nn.Linear(d_hid, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, keep):
        x = self.norm1(x + self.drop(self.self_attn(x, keep)))
        return self.norm2(x + self.drop(self.linear2(self.drop(F.relu(self.linear1(x))))))


def _mlp(d: int) -> nn.Sequential:
    """Linear-LeakyReLU-Linear-LeakyReLU-Linear(d -> 1): indices 0, 2, 4 hold the weights, as in the checkpoint."""
    return nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, 1))


class ExprDecoder(nn.Module):
    """scGPT's expression head: each token's output vector -> its predicted expression value (a bin number).
    Checkpoints trained with explicit_zero_prob also carry `zero_logit`, the probability that the value is 0."""

    def __init__(self, d: int, zero_prob: bool = False):
        super().__init__()
        self.fc = _mlp(d)
        self.zero_logit = _mlp(d) if zero_prob else None

    def forward(self, x):  # (B, T, d) -> (B, T)
        return self.fc(x).squeeze(-1)


class Encoder(nn.Module):
    def __init__(self, d: int, heads: int, d_hid: int, n_layers: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, d_hid, dropout) for _ in range(n_layers))


class ScGPT(nn.Module):
    def __init__(self, n_tokens: int, d: int, heads: int, d_hid: int, n_layers: int, pad_id: int,
                 head: bool = False, zero_prob: bool = False, dropout: float = 0.0):
        super().__init__()
        assert d % heads == 0, f"width {d} must divide by the {heads} heads"
        self.encoder = GeneEncoder(n_tokens, d, pad_id)
        self.value_encoder = ContinuousValueEncoder(d)
        self.transformer_encoder = Encoder(d, heads, d_hid, n_layers, dropout)
        self.decoder = ExprDecoder(d, zero_prob) if head else None

    def embed(self, ids, values):
        """Input of layer 0: gene embedding + value embedding, (B, T, d)."""
        return self.encoder(ids) + self.value_encoder(values.to(self.encoder.embedding.weight.dtype))

    def run(self, x, keep, start: int = 0, stop: int | None = None):
        """Apply layers start..stop-1 to `x`, the input of layer `start`."""
        for layer in self.transformer_encoder.layers[start:stop]:
            x = layer(x, keep)
        return x

    def forward(self, ids, values, keep, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Residual stream after each layer in `layers` (0-based); stops after the last one asked for."""
        x = self.embed(ids, values)
        out = {}
        for i, layer in enumerate(self.transformer_encoder.layers[: max(layers) + 1]):
            x = layer(x, keep)
            if i in layers:
                out[i] = x
        return out


def canonical_key(key: str) -> str:
    """Map the checkpoint spellings onto ours: DDP's `module.`, FA2's `self_attn._impl.`, PyTorch's `in_proj_*`."""
    if key.startswith("module."):
        key = key[len("module."):]
    key = key.replace("self_attn._impl.", "self_attn.")
    return key.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight").replace(
        "self_attn.in_proj_bias", "self_attn.Wqkv.bias")


def load_state(model: nn.Module, state: dict, where: Path) -> list[str]:
    """Load strictly on the encoder (and the head, when the model has one): every weight present, floating point,
    with its shape. Returns the ignored keys (other heads)."""
    ours = model.state_dict()
    found, ignored = {}, []
    for key, value in state.items():
        k = canonical_key(key)
        if k in ours:
            if not torch.is_tensor(value) or not value.is_floating_point():
                what = value.dtype if torch.is_tensor(value) else type(value).__name__
                raise AtlasError(f"{where}: {key} has dtype {what}, expected floating-point weights")
            found[k] = value
        else:
            ignored.append(key)
    missing = [k for k in ours if k not in found]
    if missing:
        raise AtlasError(f"{where}: encoder weight(s) missing: {some(missing)}")
    for k, v in found.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise AtlasError(f"{where}: {k} has shape {tuple(v.shape)}, expected {tuple(ours[k].shape)} from args.json")
    stray = [k for k in ignored if canonical_key(k).startswith(PREFIXES)]
    if stray:
        raise AtlasError(f"{where}: unexpected encoder weight {stray[0]} (not part of the scGPT architecture in args.json)")
    model.load_state_dict(found, strict=True)
    return sorted(ignored)


def _head(state: dict, d: int, where: Path) -> tuple[dict | None, str | None]:
    """(layout, problem) of the expression decoder the checkpoint holds. A whole plain decoder (input = the d-wide
    token output) gives its layout; an incomplete, mis-shaped or non-float one gives the problem (the decoder is
    then left out, and only interventions refuse the checkpoint); no decoder, or one that also takes batch labels
    (input 2 x d, fine-tuned models, left out with the other heads), gives neither."""
    keys = {canonical_key(k): v for k, v in state.items() if canonical_key(k).startswith(HEAD)}
    first = keys.get("decoder.fc.0.weight")
    if not keys or (torch.is_tensor(first) and tuple(first.shape) == (d, 2 * d)):
        return None, None
    zero_prob = any(k.startswith("decoder.zero_logit.") for k in keys)
    with torch.device("meta"):  # the shapes of our decoder, without allocating it
        expected = {f"{HEAD}{k}": tuple(v.shape) for k, v in ExprDecoder(d, zero_prob).state_dict().items()}
    missing = [k for k in expected if k not in keys]
    if missing:
        return None, f"{where}: the expression decoder (decoder.*) is incomplete, missing {some(missing)}"
    for k, shape in expected.items():
        v = keys[k]
        if not torch.is_tensor(v) or not v.is_floating_point() or tuple(v.shape) != shape:
            what = f"{v.dtype} {tuple(v.shape)}" if torch.is_tensor(v) else type(v).__name__
            return None, (f"{where}: the expression decoder (decoder.*) is unusable: {k} is {what}, expected "
                          f"floating-point weights of shape {shape}")
    return {"zero_prob": zero_prob}, None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AtlasError(f"{path}: not valid JSON ({e})") from None


def binning(values: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scGPT's per-cell quantile binning of non-zero values into 1..n_bins-1.

    Edges are the cell's quantiles; a value that sits on edges (ties) gets a bin drawn uniformly between the
    digitize-left and digitize-right answers, as scGPT's `_digitize`, but from a seeded generator.
    """
    if values.size == 0 or values.max() == 0:
        return np.zeros_like(values, dtype=np.float32)
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(values, edges)
    right = np.digitize(values, edges, right=True)
    return np.ceil(rng.random(values.size) * (right - left) + left).astype(np.float32)


class ScGPTAdapter:
    family = "scgpt"

    def __init__(self, checkpoint: Path, seed: int = 0):
        checkpoint = Path(checkpoint)
        if not checkpoint.is_dir():
            raise AtlasError(f"{checkpoint}: checkpoint folder not found")
        missing = [f for f in FILES if not (checkpoint / f).is_file()]
        if missing:
            raise AtlasError(f"{checkpoint}: missing {', '.join(missing)} (scGPT needs {', '.join(FILES)})")
        args = _read_json(checkpoint / "args.json")
        vocab = _read_json(checkpoint / "vocab.json")
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise AtlasError(f"{checkpoint / 'vocab.json'}: expected an object of gene -> token id")
        try:
            d, heads, d_hid, n_layers = (int(args[k]) for k in ("embsize", "nheads", "d_hid", "nlayers"))
        except (KeyError, TypeError, ValueError) as e:
            raise AtlasError(f"{checkpoint / 'args.json'}: field {e} missing or not a number") from None
        style = args.get("input_emb_style", "continuous")
        if style != "continuous":
            raise AtlasError(f"{checkpoint / 'args.json'}: input_emb_style {style!r} is not supported (continuous is)")
        self.pad_token = args.get("pad_token", "<pad>")
        for tok in (self.pad_token, "<cls>"):
            if tok not in vocab:
                raise AtlasError(f"{checkpoint / 'vocab.json'}: has no {tok} token")
        self.pad_id, self.cls_id = vocab[self.pad_token], vocab["<cls>"]
        self.pad_value = float(args.get("pad_value", -2))
        self.n_bins = int(args.get("n_bins", 51))
        self.max_tokens = int(args.get("max_seq_len", 1200))
        self.seed = seed

        try:
            state = torch.load(checkpoint / "best_model.pt", map_location="cpu", weights_only=True)
        except Exception as e:
            raise AtlasError(f"{checkpoint / 'best_model.pt'}: not a readable PyTorch state dict ({e})") from None
        if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
            state = state["model_state_dict"]
        emb = next((v for k, v in state.items() if canonical_key(k) == "encoder.embedding.weight"), None)
        if emb is not None and emb.shape[0] != len(vocab):
            raise AtlasError(f"{checkpoint}: vocab.json has {len(vocab)} tokens but the embedding has {emb.shape[0]} rows")
        if d % heads:
            raise AtlasError(f"{checkpoint / 'args.json'}: embsize {d} does not divide by nheads {heads}")
        head, self.head_problem = _head(state, d, checkpoint / "best_model.pt")
        self.model = ScGPT(len(vocab), d, heads, d_hid, n_layers, self.pad_id, head=head is not None,
                           zero_prob=bool(head and head["zero_prob"]))
        self.ignored_keys = load_state(self.model, state, checkpoint / "best_model.pt")
        self.model.eval()
        self.has_head = head is not None
        self.mask_value = float(args.get("mask_value", -1))

        self.vocab = vocab
        self.n_layers, self.width = n_layers, d
        self.name = f"scGPT ({checkpoint.name})"
        self.special_ids = frozenset(v for k, v in vocab.items() if k.startswith("<") and k.endswith(">"))
        self.gene_names = {v: k for k, v in vocab.items() if v not in self.special_ids}

    def prepare(self, dataset: Dataset, gene_column: str | None = None) -> Prepared:
        """Match the dataset's gene symbols to the vocabulary (the var column with most matches, or `gene_column`)."""
        genes = {k for k, v in self.vocab.items() if v not in self.special_ids}
        column, names = dataset.gene_column(gene_column, lambda col: sum(n in genes for n in col))
        token = np.array([self.vocab[n] if n in genes else -1 for n in names], dtype=np.int64)
        matched = int((token >= 0).sum())
        if matched == 0:
            raise AtlasError(f"{dataset.path}: none of its {len(names)} genes (var column {column!r}) is in the scGPT "
                             f"vocabulary (e.g. {', '.join(map(str, names[:3]))}); scGPT expects gene symbols")
        return Prepared(dataset, column, token, matched,
                        {"genes": len(names), "matched": matched, "gene_column": column})

    def tokenize(self, prepared: Prepared, cell: int) -> CellTokens:
        """Official zero-shot input: <cls> + non-zero genes in the vocabulary, values binned per cell, at most
        max_seq_len - 1 genes sampled without replacement. Random draws are seeded by (seed, cell)."""
        row = prepared.dataset.counts[cell]
        tok = prepared.token_of_gene[row.indices]
        known = tok >= 0
        ids, values = tok[known], row.data[known].astype(np.float64)
        rng = np.random.default_rng([self.seed, cell])
        bins = binning(values, self.n_bins, rng)
        if ids.size > self.max_tokens - 1:
            keep = np.sort(rng.permutation(ids.size)[: self.max_tokens - 1])
            ids, bins = ids[keep], bins[keep]
        return CellTokens(np.concatenate([[self.cls_id], ids]).astype(np.int64),
                          np.concatenate([[self.pad_value], bins]).astype(np.float32))

    def collate(self, cells: Sequence[CellTokens]) -> dict[str, torch.Tensor]:
        return {"input_ids": pad([c.ids for c in cells], self.pad_id, torch.long),
                "values": pad([c.values for c in cells], self.pad_value, torch.float32)}

    def layer_outputs(self, batch, layers):
        ids = batch["input_ids"]
        return self.model(ids, batch["values"], ids != self.pad_id, layers)

    # --- what interventions need: masked inputs, the rest of the model from layer L, the head ---------------

    def maskable(self, batch) -> torch.Tensor:
        """(B, T) True at gene tokens: the positions pretraining masks (never <cls> or padding)."""
        return ~torch.isin(batch["input_ids"], torch.tensor(sorted(self.special_ids), device=batch["input_ids"].device))

    def mask_inputs(self, batch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch with the values at `mask` replaced by mask_value (-1), as scGPT's masked-value training."""
        values = batch["values"].clone()
        values[mask] = self.mask_value
        return {**batch, "values": values}

    def final_hidden(self, batch, layer: int | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Output of the last layer, (B, T, d). With `layer` and `hidden`, `hidden` replaces the output of
        layer `layer` and only the layers after it run."""
        ids = batch["input_ids"]
        keep = ids != self.pad_id
        if layer is None:
            return self.model.run(self.model.embed(ids, batch["values"]), keep)
        if not 0 <= layer < self.n_layers or hidden is None or hidden.shape[:2] != ids.shape:
            raise AtlasError(f"final_hidden: layer {layer} (0..{self.n_layers - 1}) needs a hidden state of shape "
                             f"{tuple(ids.shape)} x {self.width}")
        return self.model.run(hidden, keep, start=layer + 1)

    def predict(self, batch, layer: int | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The expression head's predicted value (a bin number) per token, (B, T); see `final_hidden`."""
        if not self.has_head:
            raise AtlasError(f"{self.name}: the checkpoint has no expression decoder (decoder.fc.*)")
        return self.model.decoder(self.final_hidden(batch, layer, hidden))

    def predict_at(self, batch, positions: torch.Tensor, layer: int | None = None,
                   hidden: torch.Tensor | None = None) -> torch.Tensor:
        """`predict` read only at `positions` ((B, T) bool): the predicted values there, (P,)."""
        if not self.has_head:
            raise AtlasError(f"{self.name}: the checkpoint has no expression decoder (decoder.fc.*)")
        return self.model.decoder(self.final_hidden(batch, layer, hidden)[positions])
