"""Write small random-weight checkpoints in the real file layouts, for tests and end-to-end builds.

    python -m builder.models.tiny OUT_DIR        # OUT_DIR/scgpt, OUT_DIR/geneformer-v1, OUT_DIR/geneformer-v2

The vocabularies are real: every GENCODE v44 gene (symbols for scGPT, Ensembl ids for Geneformer), so a real
dataset matches them the way it matches a published checkpoint. Only the weights are random (seeded). The
same functions write full-width models for the benchmarks.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from ..geneids import gencode
from .scgpt import ScGPT

# Heads of the whole-human best_model.pt that the adapter lists and ignores, with their real shapes (d = width):
# the generative flag embedding and the MVC decoder ("inner product" style).
SCGPT_OTHER_HEADS = {"flag_encoder.weight": lambda d: (2, d), "mvc_decoder.gene2query.weight": lambda d: (d, d),
                     "mvc_decoder.gene2query.bias": lambda d: (d,), "mvc_decoder.W.weight": lambda d: (d, d)}


def write_scgpt(out: Path, n_layers: int = 2, width: int = 64, heads: int = 4, d_hid: int | None = None,
                attention: str = "flash", seed: int = 0, n_genes: int | None = None) -> Path:
    """attention: 'flash' (self_attn.Wqkv, whole-human), 'fa2' (self_attn._impl.Wqkv) or 'pytorch' (in_proj_*)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    symbols = sorted({s for s in gencode()[0].values()})[:n_genes]
    vocab = {"<pad>": 0, "<cls>": 1, "<eoc>": 2} | {s: i + 3 for i, s in enumerate(symbols)}
    d_hid = d_hid or width
    torch.manual_seed(seed)
    model = ScGPT(len(vocab), width, heads, d_hid, n_layers, pad_id=0, head=True)  # with the expression decoder
    state = {}
    for k, v in model.state_dict().items():
        if attention == "fa2":
            k = k.replace("self_attn.", "self_attn._impl.")
        elif attention == "pytorch":
            k = k.replace("self_attn.Wqkv.weight", "self_attn.in_proj_weight").replace(
                "self_attn.Wqkv.bias", "self_attn.in_proj_bias")
        state[k] = v.clone()
    for key, shape in SCGPT_OTHER_HEADS.items():
        state[key] = torch.randn(shape(width)) * 0.02
    torch.save(state, out / "best_model.pt")
    args = {"embsize": width, "nheads": heads, "d_hid": d_hid, "nlayers": n_layers, "n_layers_cls": 3,
            "dropout": 0.2, "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "n_bins": 51,
            "max_seq_len": 1200, "input_style": "binned", "input_emb_style": "continuous",
            "fast_transformer": attention != "pytorch", "MVC": True, "USE_GENERATIVE_TRAINING": True}
    (out / "args.json").write_text(json.dumps(args, indent=2) + "\n")
    (out / "vocab.json").write_text(json.dumps(vocab) + "\n")
    return out


def write_geneformer(out: Path, version: int = 2, n_layers: int = 2, width: int = 64, heads: int = 4,
                     intermediate: int | None = None, seed: int = 0, n_genes: int | None = None) -> Path:
    """V1: 2,048 tokens, pytorch_model.bin, *_gc30M dictionaries. V2: 4,096 tokens, <cls>/<eos>,
    model.safetensors, *_gc104M dictionaries with the Ensembl mapping dictionary."""
    import transformers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = sorted(gencode()[0])[:n_genes]
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if version == 2 else [])
    tokens = {t: i for i, t in enumerate(specials)} | {g: i + len(specials) for i, g in enumerate(ids)}
    rng = np.random.default_rng(seed)
    medians = dict(zip(ids, np.round(rng.lognormal(0.0, 1.0, len(ids)), 4).tolist()))
    names = {s: g for g, s in gencode()[0].items() if g in medians}
    tag = "gc30M" if version == 1 else "gc104M"
    dumps = {f"token_dictionary_{tag}.pkl": tokens, f"gene_median_dictionary_{tag}.pkl": medians,
             f"gene_name_id_dict_{tag}.pkl": names}
    if version == 2:
        dumps[f"ensembl_mapping_dict_{tag}.pkl"] = {g: g for g in ids}
    for name, value in dumps.items():
        with open(out / name, "wb") as f:
            pickle.dump(value, f)
    config = transformers.BertConfig(
        vocab_size=len(tokens), hidden_size=width, num_hidden_layers=n_layers, num_attention_heads=heads,
        intermediate_size=intermediate or 2 * width, hidden_act="relu", max_position_embeddings=2048 if version == 1 else 4096,
        pad_token_id=0, layer_norm_eps=1e-12, hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02,
        architectures=["BertForMaskedLM"])
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(config)
    if version == 1:
        config.save_pretrained(out)
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    else:
        # save_pretrained draws a "Writing model shards" tqdm bar on stderr; a library must not print.
        shown = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        try:
            model.save_pretrained(out)
        finally:
            if shown:
                transformers.utils.logging.enable_progress_bar()
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m builder.models.tiny OUT_DIR")
    out = Path(argv[0])
    print(write_scgpt(out / "scgpt"))
    print(write_geneformer(out / "geneformer-v1", version=1))
    print(write_geneformer(out / "geneformer-v2", version=2))


if __name__ == "__main__":
    main(sys.argv[1:])
