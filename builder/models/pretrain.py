"""`atlas pretrain`: this project's own pretraining of small scGPT and Geneformer models on an .h5ad of counts,
each with its family's objective, written in the family's real checkpoint layout (loadable by the adapters).

- scGPT: masked-value prediction. A cell is the adapter's official input (<cls> + non-zero genes, values binned
  per cell into 1..50); 40% of its gene positions (scGPT's mask_ratio) get mask_value -1 as input value, and
  the expression decoder's MSE on those positions is the loss (scGPT's masked_mse_loss).
- Geneformer: masked gene prediction over rank-value encoded cells (the adapter's tokenizer, V2 layout with
  <cls>/<eos>). 15% of gene tokens are chosen; 80% of them become <mask>, 10% a random gene, 10% stay (BERT,
  as Geneformer's data collator); the loss is the masked-LM head's cross-entropy on the chosen positions.

A seeded share of the cells (`holdout`) never enters training; the held-out loss and accuracy on fixed masks
are measured every `eval_every` steps and at the start (the untrained twin). The vocabulary is the genes seen
in training cells, so the checkpoint stays small. Same data, config and seed: the same bytes (CPU).
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AtlasError
from ..fsutil import atomic_dir, sha256_file
from ..geneids import is_ensembl, normalise_ensembl
from ..jsonio import dumps_json
from .dataset import read_h5ad
from .init import init_geneformer, init_scgpt

MIN_CELLS = 50  # with 10% held out, fewer leaves too few cells to train on or to measure
SCGPT_SPECIALS = ("<pad>", "<cls>", "<eoc>")
GENEFORMER_SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")
MASK_RATIO = {"scgpt": 0.4, "geneformer": 0.15}
OBJECTIVE = {
    "scgpt": "masked-value prediction: 40% of gene positions get input value -1; MSE of the expression decoder's "
             "predicted bin on those positions (scGPT's masked_mse_loss)",
    "geneformer": "masked gene prediction over rank-value encoded cells: 15% of gene tokens chosen (80% <mask>, "
                  "10% random gene, 10% unchanged); cross-entropy of the masked-LM head on them (BERT, Geneformer)",
}


@dataclass(frozen=True)
class PretrainConfig:
    layers: int = 4
    width: int = 128
    heads: int = 4
    steps: int = 1500
    batch_size: int = 16  # cells per step
    lr: float = 1e-3  # AdamW peak; linear warm-up over `warmup` of the steps, then linear decay to 0 (Geneformer)
    warmup: float = 0.05
    weight_decay: float = 0.01
    dropout: float = 0.1  # a few hundred cells overfit without it
    holdout: float = 0.1  # share of cells never trained on
    eval_every: int = 100
    seed: int = 0


def check_config(cfg: PretrainConfig) -> None:
    if cfg.layers < 1 or cfg.width < 1 or cfg.heads < 1 or cfg.steps < 0 or cfg.batch_size < 1:
        raise AtlasError("--layers, --width, --heads and --batch-size must be at least 1, --steps at least 1")
    if cfg.width % cfg.heads:
        raise AtlasError(f"--width {cfg.width} must divide by --heads {cfg.heads}")
    if not 0 < cfg.holdout < 0.5:
        raise AtlasError(f"--holdout {cfg.holdout}: expected a share in (0, 0.5)")


@dataclass
class Corpus:
    path: Path
    genes: list[str]  # vocabulary genes, as named in the dataset (symbols for scGPT, Ensembl ids for Geneformer)
    column: str
    train: np.ndarray  # dataset rows
    heldout: np.ndarray
    dataset: object


def read_corpus(family: str, data: Path, cfg: PretrainConfig) -> Corpus:
    """The dataset, its vocabulary and the seeded train / held-out split of the cells with >= 2 known genes."""
    ds = read_h5ad(data)
    if family == "geneformer":
        column, names = ds.gene_column(None, lambda col: sum(is_ensembl(n) for n in col))
        names = np.array([normalise_ensembl(n) if is_ensembl(n) else "" for n in names])
        if not (names != "").any():
            raise AtlasError(f"{data}: no Ensembl gene ids in var; Geneformer's vocabulary needs them (var['ensembl_id'])")
    else:
        column, names = ds.gene_column(None, lambda col: sum(bool(n) and not is_ensembl(n) for n in col))
    _, first = np.unique(names, return_index=True)
    valid = np.zeros(len(names), bool)
    valid[first] = names[first] != ""  # one column per gene name: duplicates would give one token two values
    known = ds.counts.matrix()[:, valid]
    usable = np.flatnonzero(np.diff(known.indptr) >= 2)
    if len(usable) < MIN_CELLS:
        raise AtlasError(f"{data}: {len(usable)} cells with at least 2 genes counted; pretraining needs at least "
                         f"{MIN_CELLS}")
    perm = np.random.default_rng(cfg.seed).permutation(usable)
    n_hold = max(1, int(round(cfg.holdout * len(usable))))
    heldout, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    seen = np.zeros(len(names), bool)
    seen[np.flatnonzero(valid)[np.unique(known[train].indices)]] = True
    return Corpus(Path(data), sorted(names[seen].tolist()), column, train, heldout, ds)


# --- initial models and the family layouts ------------------------------------------------------------------

def _scgpt_model(n_tokens: int, cfg: PretrainConfig):
    return init_scgpt(n_tokens, cfg.width, cfg.heads, cfg.width, cfg.layers, 0, cfg.seed, cfg.dropout)


def _write_scgpt(folder: Path, genes: list[str], cfg: PretrainConfig, model) -> None:
    import json

    vocab = {t: i for i, t in enumerate(SCGPT_SPECIALS)} | {g: i + len(SCGPT_SPECIALS) for i, g in enumerate(genes)}
    args = {"embsize": cfg.width, "nheads": cfg.heads, "d_hid": cfg.width, "nlayers": cfg.layers, "dropout": cfg.dropout,
            "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "mask_ratio": MASK_RATIO["scgpt"], "n_bins": 51,
            "max_seq_len": 1200, "input_style": "binned", "input_emb_style": "continuous", "fast_transformer": True,
            "MVC": False, "explicit_zero_prob": False, "seed": cfg.seed}
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, folder / "best_model.pt")
    (folder / "args.json").write_text(json.dumps(args, indent=2) + "\n")
    (folder / "vocab.json").write_text(json.dumps(vocab) + "\n")


def _geneformer_model(n_tokens: int, cfg: PretrainConfig):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # save_pretrained's shard bar is noise on the CLI
    config = transformers.BertConfig(
        vocab_size=n_tokens, hidden_size=cfg.width, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        intermediate_size=2 * cfg.width, hidden_act="relu", max_position_embeddings=4096,  # V2's input size
        pad_token_id=0, layer_norm_eps=1e-12, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, initializer_range=0.02, architectures=["BertForMaskedLM"])
    return init_geneformer(config, cfg.seed)


def gene_medians(corpus: Corpus) -> dict[str, float]:
    """Geneformer's normalisation factors: each gene's median over training cells of count / total x 10,000,
    non-zero values only (as Geneformer computed them over its corpus)."""
    ds = corpus.dataset
    _, names = ds.gene_column(corpus.column, None)
    names = np.array([normalise_ensembl(n) for n in names])
    col = {g: i for i, g in reversed(list(enumerate(names)))}  # first column of each id, as read_corpus
    m = ds.counts.matrix()[corpus.train][:, [col[g] for g in corpus.genes]].tocsc()
    m = m.multiply(1e4 / ds.total_counts()[corpus.train][:, None]).tocsc()
    return {g: float(np.median(m.data[m.indptr[j]: m.indptr[j + 1]])) for j, g in enumerate(corpus.genes)}


def _write_geneformer(folder: Path, corpus: Corpus, model) -> None:
    tokens = {t: i for i, t in enumerate(GENEFORMER_SPECIALS)} | {
        g: i + len(GENEFORMER_SPECIALS) for i, g in enumerate(corpus.genes)}
    dumps = {"token_dictionary.pkl": tokens, "gene_median_dictionary.pkl": gene_medians(corpus),
             "ensembl_mapping_dict.pkl": {g: g for g in corpus.genes}}
    var = corpus.dataset.var
    if corpus.column != "index":  # symbols in the index: Geneformer's gene name -> id dictionary
        ids = {normalise_ensembl(i): s for s, i in zip(var.index.astype(str), var[corpus.column].astype(str))}
        dumps["gene_name_id_dict.pkl"] = {ids[g]: g for g in corpus.genes if g in ids}
    for name, value in dumps.items():
        (folder / name).write_bytes(pickle.dumps(value, protocol=4))
    model.save_pretrained(folder)


def write_checkpoint(family: str, folder: Path, corpus: Corpus, cfg: PretrainConfig, model) -> None:
    if family == "scgpt":
        _write_scgpt(folder, corpus.genes, cfg, model)
    else:
        _write_geneformer(folder, corpus, model)


def new_model(family: str, corpus: Corpus, cfg: PretrainConfig):
    specials = SCGPT_SPECIALS if family == "scgpt" else GENEFORMER_SPECIALS
    build = _scgpt_model if family == "scgpt" else _geneformer_model
    return build(len(specials) + len(corpus.genes), cfg)


# --- masks, losses, evaluation ------------------------------------------------------------------------------

def choose(maskable: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Exactly max(1, round(ratio x n)) random positions of each cell's n maskable ones (scGPT masks a fixed
    share per cell; BERT's Bernoulli draw would leave short cells unmasked)."""
    n = maskable.sum(1)
    k = torch.clamp(torch.round(n * ratio), min=1).minimum(n)
    scores = torch.rand(maskable.shape, generator=gen).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(1).argsort(1)
    return ranks < k[:, None]


def scgpt_step(model, adapter, batch, gen, train: bool = True):
    """(loss, predicted bins, true bins) on the masked positions of one batch."""
    mask = choose(adapter.maskable(batch), MASK_RATIO["scgpt"], gen)
    inp = adapter.mask_inputs(batch, mask)
    keep = batch["input_ids"] != adapter.pad_id
    pred = model.decoder(model.run(model.embed(inp["input_ids"], inp["values"]), keep))  # (B, T)
    target = batch["values"][mask]
    return F.mse_loss(pred[mask], target), pred[mask], target


def geneformer_step(model, adapter, batch, gen, train: bool = True):
    """(loss, logits, true token ids) on the chosen positions; evaluation masks every chosen one with <mask>."""
    ids = batch["input_ids"]
    chosen = choose(adapter.maskable(batch), MASK_RATIO["geneformer"], gen)
    inp = ids.clone()
    r = torch.rand(ids.shape, generator=gen)
    if train:
        inp[chosen & (r < 0.8)] = adapter.mask_id
        swap = chosen & (r >= 0.8) & (r < 0.9)
        first = len(GENEFORMER_SPECIALS)
        inp[swap] = torch.randint(first, model.config.vocab_size, (int(swap.sum()),), generator=gen)
    else:
        inp[chosen] = adapter.mask_id
    mask = batch["attention_mask"]
    h = model.bert(input_ids=inp, attention_mask=None if bool(mask.all()) else mask).last_hidden_state
    logits = model.cls(h[chosen])  # the head only where it is read: (masked, V)
    return F.cross_entropy(logits, ids[chosen]), logits, ids[chosen]


STEP = {"scgpt": scgpt_step, "geneformer": geneformer_step}


def evaluate(family: str, model, adapter, cells: list, seed: int, batch_size: int = 32) -> dict:
    """Held-out loss and accuracy on masks drawn from a fixed seed (the same positions at every evaluation)."""
    gen = torch.Generator().manual_seed(seed + 7919)
    was_training = model.training
    model.eval()
    losses, weights, hits = [], [], 0
    with torch.no_grad():
        for i in range(0, len(cells), batch_size):
            loss, out, target = STEP[family](model, adapter, adapter.collate(cells[i: i + batch_size]), gen, train=False)
            guess = torch.clamp(torch.round(out), 1, 50) if family == "scgpt" else out.argmax(-1)
            hits += int((guess == target).sum())
            losses.append(float(loss) * len(target))
            weights.append(len(target))
    model.train(was_training)
    n = sum(weights)
    return {"loss": sum(losses) / n, "accuracy": hits / n, "positions": n}


def baselines(family: str, adapter, train_cells: list, heldout_cells: list) -> dict:
    """What needs no model, measured on the held-out cells: scGPT, the most frequent bin and each gene's mean
    bin (from training cells); Geneformer, the most frequent gene and the gene frequencies (unigram)."""
    if family == "scgpt":
        def tokens(cells):
            ids = np.concatenate([c.ids[1:] for c in cells])
            return ids, np.concatenate([c.values[1:] for c in cells])

        ids, bins = tokens(train_cells)
        hids, hbins = tokens(heldout_cells)
        top = np.bincount(bins.astype(int)).argmax()
        total, count = np.bincount(ids, bins), np.bincount(ids)
        gene_mean = np.divide(total, count, out=np.full(len(total), bins.mean()), where=count > 0)
        gm = gene_mean[np.minimum(hids, len(gene_mean) - 1)]
        gm[hids >= len(gene_mean)] = bins.mean()
        return {"most_frequent_bin": int(top), "most_frequent_bin_accuracy": float((hbins == top).mean()),
                "mean_bin_mse": float(((hbins - bins.mean()) ** 2).mean()),
                "gene_mean_bin_accuracy": float((np.clip(np.round(gm), 1, 50) == hbins).mean()),
                "gene_mean_bin_mse": float(((hbins - gm) ** 2).mean())}
    special = np.array(sorted(adapter.special_ids))
    ids = np.concatenate([c.ids for c in train_cells])
    hids = np.concatenate([c.ids for c in heldout_cells])
    ids, hids = ids[~np.isin(ids, special)], hids[~np.isin(hids, special)]
    freq = np.bincount(ids, minlength=len(adapter.token_dict)).astype(np.float64)
    p = (freq + 1) / (freq + 1).sum()  # add-one smoothing: a gene unseen in training still has a probability
    return {"most_frequent_gene": adapter.gene_names[int(freq.argmax())],
            "most_frequent_gene_accuracy": float((hids == freq.argmax()).mean()),
            "unigram_loss": float(-np.log(p[hids]).mean())}


# --- the run ------------------------------------------------------------------------------------------------

def _schedule(cfg: PretrainConfig):
    warm = max(1, int(cfg.warmup * cfg.steps))
    return lambda step: min((step + 1) / warm, max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm)))


def train(family: str, model, adapter, cells: list, heldout: list, cfg: PretrainConfig, progress=None) -> list[dict]:
    """Run cfg.steps optimiser steps over the training cells (seeded order, masks and dropout); returns the
    curve: mean training loss since the previous point, and the held-out loss and accuracy, every eval_every."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    rng = np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    torch.manual_seed(cfg.seed + 3)  # dropout
    curve = [{"step": 0, "train_loss": None, **_point(evaluate(family, model, adapter, heldout, cfg.seed))}]
    model.train()
    order, losses = np.array([], dtype=np.int64), []
    for step in range(1, cfg.steps + 1):
        if len(order) < cfg.batch_size:  # a new epoch: every training cell once, in a fresh order
            order = np.concatenate([order, rng.permutation(len(cells))])
        pick, order = order[: cfg.batch_size], order[cfg.batch_size:]
        loss, _, _ = STEP[family](model, adapter, adapter.collate([cells[i] for i in pick]), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve.append({"step": step, "train_loss": float(np.mean(losses)),
                          **_point(evaluate(family, model, adapter, heldout, cfg.seed))})
            losses = []
        if progress:
            progress(1)
    model.eval()
    return curve


def _point(metrics: dict) -> dict:
    return {"heldout_loss": metrics["loss"], "heldout_accuracy": metrics["accuracy"]}


def pretrain(family: str, data: Path, out: Path, cfg: PretrainConfig, command: str | None = None,
             started=None, progress=None, replace_out: bool = False) -> dict:
    """Pretrain (cfg.steps > 0) or write the untrained twin (cfg.steps == 0) into `out`, atomically. Returns the
    record written to out/pretrain.json."""
    from . import load

    if family not in MASK_RATIO:
        raise AtlasError(f"--model {family!r}: pretraining knows {', '.join(MASK_RATIO)}")
    check_config(cfg)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not replace_out:
        raise AtlasError(f"{out}: already exists and is not empty; pass --replace to overwrite it")
    corpus = read_corpus(family, data, cfg)
    model = new_model(family, corpus, cfg)
    with tempfile.TemporaryDirectory() as tmp:  # the initial checkpoint, read back by the adapter to tokenize
        write_checkpoint(family, Path(tmp), corpus, cfg, model)
        adapter = load(family, Path(tmp), seed=cfg.seed)
    prep = adapter.prepare(corpus.dataset, corpus.column)
    train_cells = [adapter.tokenize(prep, int(i)) for i in corpus.train]
    heldout_cells = [adapter.tokenize(prep, int(i)) for i in corpus.heldout]
    if started:
        started(cfg.steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded reductions round differently: one thread gives the same bytes anywhere
    try:
        curve = train(family, model, adapter, train_cells, heldout_cells, cfg, progress)
    finally:
        torch.set_num_threads(threads)
    record = {
        "family": family, "config": asdict(cfg), "objective": OBJECTIVE[family], "command": command,
        "trained": cfg.steps > 0,
        "data": {"file": corpus.path.name, "sha256": sha256_file(corpus.path), "gene_column": corpus.column,
                 "cells": int(len(corpus.train) + len(corpus.heldout)), "train_cells": int(len(corpus.train)),
                 "heldout_cells": corpus.dataset.obs.index[corpus.heldout].astype(str).tolist(),
                 "genes_in_vocabulary": len(corpus.genes)},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "curve": curve, "heldout": curve[-1], "untrained": curve[0],
        "baselines": baselines(family, adapter, train_cells, heldout_cells),
    }
    from ..losscurve import loss_svg
    from .modelcard import model_card

    with atomic_dir(out) as tmp:
        write_checkpoint(family, tmp, corpus, cfg, model)
        (tmp / "pretrain.json").write_bytes(dumps_json(record, indent=True))
        if cfg.steps > 0:
            (tmp / "loss_curve.svg").write_text(loss_svg(record))
        (tmp / "MODEL_CARD.md").write_text(model_card(record))
    return record


def write_random_init(family: str, data: Path, out: Path, cfg: PretrainConfig, command: str | None = None,
                      replace_out: bool = False) -> dict:
    """The untrained twin of `pretrain(family, data, out, cfg)`: same vocabulary, architecture and seed, so the
    same initial weights, and no step taken (issue 16's random_init_model baseline)."""
    return pretrain(family, data, out, replace(cfg, steps=0), command, replace_out=replace_out)


def twin_of(checkpoint: Path, data: Path, out: Path, replace_out: bool = False) -> dict:
    """The untrained twin of a checkpoint that `atlas pretrain` wrote: its recorded family and options on the
    same data (checked by hash), no step taken. Refused for checkpoints from elsewhere (no pretrain.json)."""
    import json

    path = Path(checkpoint) / "pretrain.json"
    try:
        rec = json.loads(path.read_text())
        family, cfg, digest = rec["family"], PretrainConfig(**rec["config"]), rec["data"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AtlasError(f"{path}: not a pretrain record of `atlas pretrain` ({type(e).__name__}: {e}); a random "
                         f"twin needs the options the checkpoint was trained with") from None
    if sha256_file(data) != digest:
        raise AtlasError(f"{data}: not the data {checkpoint} was trained on (sha256 differs from {path})")
    return write_random_init(family, data, out, cfg, replace_out=replace_out)

