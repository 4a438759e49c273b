"""Freshly initialised models of each family, seeded: `atlas pretrain` starts from them, and the untrained twin of
a checkpoint (twin.py) is one of them with the checkpoint's sizes."""

from __future__ import annotations

import torch


def init_scgpt(n_tokens: int, d: int, heads: int, d_hid: int, n_layers: int, pad_id: int, seed: int,
               dropout: float = 0.0, zero_prob: bool = False):
    """A freshly initialised scGPT with its expression head: PyTorch's defaults, then scGPT's init_weights."""
    from .scgpt import ScGPT

    torch.manual_seed(seed)
    model = ScGPT(n_tokens, d, heads, d_hid, n_layers, pad_id=pad_id, head=True, zero_prob=zero_prob, dropout=dropout)
    torch.nn.init.uniform_(model.encoder.embedding.weight, -0.1, 0.1)  # scGPT's init_weights
    return model



def init_geneformer(config, seed: int):
    """A freshly initialised BertForMaskedLM of `config` (transformers' own initialisation, seeded)."""
    import transformers

    torch.manual_seed(seed)
    return transformers.BertForMaskedLM(config)
