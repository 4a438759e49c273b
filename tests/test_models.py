"""Model adapters: scGPT against a PyTorch reference, Geneformer against transformers' hidden states,
tokenizers on hand-made cells, checkpoint naming variants and refusals."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from builder import models
from builder.models.dataset import Dataset, read_h5ad
from builder.errors import AtlasError
from builder.models.scgpt import binning
from builder.models.tiny import write_geneformer, write_scgpt

SAMPLE = "atlas_data/inputs/immune_sample.h5ad"


def make_dataset(counts, genes, ensembl=None, path="hand-made.h5ad", obs=None) -> Dataset:
    var = pd.DataFrame(index=pd.Index(genes))
    if ensembl is not None:
        var["ensembl_id"] = ensembl
    m = sp.csr_matrix(np.asarray(counts, dtype=np.float32))
    obs = obs if obs is not None else pd.DataFrame(index=[f"c{i}" for i in range(m.shape[0])])
    return Dataset(path, m, var, obs, "X")


# --- scGPT --------------------------------------------------------------------------------------------------

def reference_scgpt(state: dict, args: dict, ids: torch.Tensor, values: torch.Tensor, start: int = 0,
                    x: torch.Tensor | None = None) -> list[torch.Tensor]:
    """scGPT's embedding written out with functional ops, then nn.TransformerEncoderLayer per layer (from layer
    `start` on, with `x` as its input, when given)."""
    d = args["embsize"]
    g = lambda k: state[k].float()  # noqa: E731
    if x is None:
        x = F.layer_norm(F.embedding(ids, g("encoder.embedding.weight")), (d,), g("encoder.enc_norm.weight"),
                         g("encoder.enc_norm.bias"))
        v = torch.clamp(values.unsqueeze(-1), max=512)
        v = F.linear(F.relu(F.linear(v, g("value_encoder.linear1.weight"), g("value_encoder.linear1.bias"))),
                     g("value_encoder.linear2.weight"), g("value_encoder.linear2.bias"))
        x = x + F.layer_norm(v, (d,), g("value_encoder.norm.weight"), g("value_encoder.norm.bias"))
    outs = []
    for i in range(start, args["nlayers"]):
        layer = nn.TransformerEncoderLayer(d, args["nheads"], args["d_hid"], dropout=0.0, batch_first=True).eval()
        p = f"transformer_encoder.layers.{i}."
        layer.load_state_dict({
            "self_attn.in_proj_weight": g(p + "self_attn.in_proj_weight"), "self_attn.in_proj_bias": g(p + "self_attn.in_proj_bias"),
            "self_attn.out_proj.weight": g(p + "self_attn.out_proj.weight"), "self_attn.out_proj.bias": g(p + "self_attn.out_proj.bias"),
            **{f"{n}.{w}": g(f"{p}{n}.{w}") for n in ("linear1", "linear2", "norm1", "norm2") for w in ("weight", "bias")}})
        with torch.no_grad():
            x = layer(x, src_key_padding_mask=ids == 0)
        outs.append(x)
    return outs


def test_scgpt_forward_matches_pytorch_reference_single_and_padded(tiny):
    ck = tiny / "scgpt-pytorch"
    adapter = models.load("scgpt", ck)
    state = torch.load(ck / "best_model.pt", weights_only=True)
    args = json.loads((ck / "args.json").read_text())
    ds = read_h5ad(SAMPLE, max_cells=6)
    prep = adapter.prepare(ds)
    cells = [adapter.tokenize(prep, i) for i in range(6)]
    assert len({len(c.ids) for c in cells}) > 1, "the padded batch must mix lengths"
    for group in ([cells[0]], [cells[3]], cells):
        batch = adapter.collate(group)
        with torch.no_grad():
            ours = adapter.layer_outputs(batch, [0, 1])
        ref = reference_scgpt(state, args, batch["input_ids"], batch["values"])
        real = batch["input_ids"] != 0
        for L in (0, 1):
            assert (ours[L][real] - ref[L][real]).abs().max().item() <= 1e-5
    # A cell's activations do not depend on what it was batched with.
    single = adapter.layer_outputs(adapter.collate([cells[3]]), [1])[1][0]
    padded = adapter.layer_outputs(adapter.collate(cells), [1])[1][3, : len(cells[3].ids)]
    assert (single - padded).abs().max().item() <= 1e-5


def test_scgpt_naming_variants_load_to_the_same_model(tiny):
    ds = read_h5ad(SAMPLE, max_cells=3)
    outs = []
    for variant in ("scgpt", "scgpt-pytorch", "scgpt-fa2"):
        adapter = models.load("scgpt", tiny / variant)
        assert adapter.ignored_keys == ["flag_encoder.weight", "mvc_decoder.W.weight", "mvc_decoder.gene2query.bias",
                                        "mvc_decoder.gene2query.weight"]
        assert adapter.has_head
        prep = adapter.prepare(ds)
        outs.append(np.concatenate([c.acts[1] for c in models.stream(adapter, prep, [1], batch_size=2)]))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("transformer_encoder.layers.1.linear2.weight"), "missing: transformer_encoder.layers.1.linear2.weight"),
    (lambda s: s.__setitem__("transformer_encoder.layers.0.norm1.weight", torch.ones(65)), "has shape (65,), expected (64,)"),
    (lambda s: s.__setitem__("transformer_encoder.layers.0.self_attn.q_proj.weight", torch.ones(64, 64)),
     "unexpected encoder weight transformer_encoder.layers.0.self_attn.q_proj.weight"),
])
def test_scgpt_refuses_a_bad_encoder(tiny, tmp_path, change, message):
    ck = write_scgpt(tmp_path / "ck", n_genes=200)
    state = torch.load(ck / "best_model.pt", weights_only=True)
    change(state)
    torch.save(state, ck / "best_model.pt")
    with pytest.raises(AtlasError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.load("scgpt", ck)


def test_scgpt_refuses_vocab_not_matching_embedding(tmp_path):
    ck = write_scgpt(tmp_path / "ck", n_genes=200)
    vocab = json.loads((ck / "vocab.json").read_text())
    vocab["EXTRA"] = len(vocab)
    (ck / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(AtlasError, match="vocab.json has 204 tokens but the embedding has 203 rows"):
        models.load("scgpt", ck)


def test_binning_ties_are_seeded_and_within_digitize_bounds():
    values = np.array([1, 1, 1, 1, 2, 3, 3, 10], dtype=np.float64)
    a = binning(values, 51, np.random.default_rng([0, 7]))
    assert np.array_equal(a, binning(values, 51, np.random.default_rng([0, 7])))
    assert a.min() >= 1 and a.max() <= 50
    assert a[-1] == 50
    edges = np.quantile(values, np.linspace(0, 1, 50))
    left, right = np.digitize(values, edges), np.digitize(values, edges, right=True)
    assert ((a >= np.minimum(left, right)) & (a <= np.maximum(left, right))).all()
    # Strictly larger values never get a lower bin than smaller ones, ties aside.
    for i in range(len(values)):
        for j in range(len(values)):
            if values[i] < values[j]:
                assert a[i] <= a[j]
    draws = {tuple(binning(values, 51, np.random.default_rng([s, 7]))) for s in range(20)}
    assert len(draws) > 1, "ties must be broken at random (seeded), not always the same way"


def test_scgpt_tokenizer_on_hand_made_cells(tiny):
    adapter = models.load("scgpt", tiny / "scgpt")
    genes = ["CD74", "HLA-DRA", "NOT_A_GENE", "MALAT1", "ACTB"]
    counts = [[5, 5, 9, 0, 1],  # a tie, a gene missing from the vocabulary
              [0, 0, 0, 0, 3],  # one non-zero gene
              [0, 0, 0, 0, 0],  # an all-zero cell
              [0, 0, 7, 0, 0]]  # only a gene the model does not know
    prep = adapter.prepare(make_dataset(counts, genes))
    assert prep.matched == 4
    v = adapter.vocab
    c0 = adapter.tokenize(prep, 0)
    assert c0.ids.tolist() == [v["<cls>"], v["CD74"], v["HLA-DRA"], v["ACTB"]]
    # The tied 5s sit on many quantile edges: each gets a seeded draw between digitize-right and -left.
    edges = np.quantile([5.0, 5.0, 1.0], np.linspace(0, 1, 50))
    lo, hi = np.digitize(5.0, edges, right=True), np.digitize(5.0, edges)
    assert c0.values[0] == -2 and c0.values[3] == 1 and ((c0.values[1:3] >= lo) & (c0.values[1:3] <= hi)).all()
    c1 = adapter.tokenize(prep, 1)
    assert c1.ids.tolist() == [v["<cls>"], v["ACTB"]] and 1 <= c1.values[1] <= 50
    for cell in (2, 3):
        assert adapter.tokenize(prep, cell).ids.tolist() == [v["<cls>"]]
    chunks = list(models.stream(adapter, prep, [0], batch_size=4))
    assert chunks[0].cells.tolist() == [0, 0, 0, 1] and chunks[0].n_cells == 4


def test_scgpt_samples_at_most_1199_genes_binned_before_sampling(tiny):
    adapter = models.load("scgpt", tiny / "scgpt")
    symbols = [g for g in adapter.vocab if not g.startswith("<")][:3000]
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 40, size=(1, 3000))
    prep = adapter.prepare(make_dataset(counts, symbols))
    a, b = adapter.tokenize(prep, 0), adapter.tokenize(prep, 0)
    assert len(a.ids) == 1200 and np.array_equal(a.ids, b.ids) and np.array_equal(a.values, b.values)
    assert len(set(a.ids.tolist())) == 1200
    # Bins come from all 3,000 genes; the values of the kept ones equal those bins.
    all_bins = binning(counts[0].astype(np.float64), 51, np.random.default_rng([0, 0]))
    col = {adapter.vocab[s]: i for i, s in enumerate(symbols)}
    assert np.array_equal(a.values[1:], all_bins[[col[t] for t in a.ids[1:]]])
    other = models.load("scgpt", tiny / "scgpt", seed=1).tokenize(prep, 0)
    assert not np.array_equal(other.ids, a.ids)


# --- Geneformer -------------------------------------------------------------------------------------------

def test_geneformer_layers_follow_hidden_states_indexing(tiny):
    import transformers

    for version in ("geneformer-v1", "geneformer-v2"):
        adapter = models.load("geneformer", tiny / version)
        prep = adapter.prepare(read_h5ad(SAMPLE, max_cells=4))
        batch = adapter.collate([adapter.tokenize(prep, i) for i in range(4)])
        ref = transformers.BertForMaskedLM.from_pretrained(tiny / version, local_files_only=True).eval()
        with torch.no_grad():  # the encoder alone: the head's logits over the whole vocabulary would be 1.9 GB
            hs = ref.bert(**batch, output_hidden_states=True).hidden_states
            ours = adapter.layer_outputs(batch, [0, 1])
            emb = adapter.model.embeddings(input_ids=batch["input_ids"])
        assert len(hs) == adapter.n_layers + 1
        real = batch["attention_mask"].bool()
        assert torch.allclose(hs[0][real], emb[real], atol=1e-6)
        for L in (0, 1):
            assert (ours[L][real] - hs[L + 1][real]).abs().max().item() <= 1e-5


def test_geneformer_rank_value_tokenizer_on_hand_made_cells(tiny):
    v1 = models.load("geneformer", tiny / "geneformer-v1")
    v2 = models.load("geneformer", tiny / "geneformer-v2")
    ids = [g for g in v1.token_dict if g.startswith("ENSG")][:5]
    med = {g: v1.median[g] for g in ids}
    genes = ["A", "B", "C", "D", "E", "F"]
    ensembl = [ids[0] + ".12", ids[1], ids[2], "ENSG99999999999", ids[3], ids[3]]  # a version, an unknown id, a duplicate
    counts = [[4, 2, 0, 8, 1, 2], [0, 0, 0, 0, 0, 0]]
    obs = pd.DataFrame({"n_counts": [100.0, 10.0]}, index=["x", "y"])
    for adapter in (v1, v2):
        prep = adapter.prepare(make_dataset(counts, genes, ensembl, obs=obs))
        assert prep.gene_column == "ensembl_id" and prep.matched == 5
        value = {ids[0]: 4 / med[ids[0]], ids[1]: 2 / med[ids[1]], ids[3]: 3 / med[ids[3]]}
        expect = [adapter.token_dict[g] for g in sorted(value, key=lambda g: (-value[g], adapter.token_dict[g]))]
        got = adapter.tokenize(prep, 0).ids.tolist()
        empty = adapter.tokenize(prep, 1).ids.tolist()
        if adapter is v2:
            assert got == [adapter.cls_id, *expect, adapter.eos_id] and empty == [adapter.cls_id, adapter.eos_id]
        else:
            assert got == expect and empty == []


def test_geneformer_ties_and_truncation(tmp_path):
    import pickle

    for version, size in ((1, 2048), (2, 4094)):
        ck = write_geneformer(tmp_path / f"v{version}", version=version, n_genes=5000)
        median = next(ck.glob("gene_median_dictionary*.pkl"))
        genes = list(pickle.loads(median.read_bytes()))
        # Equal medians and equal counts give every gene the same value: ties, broken by token id.
        median.write_bytes(pickle.dumps({g: 2.0 for g in genes}))
        adapter = models.load("geneformer", ck)
        order = np.random.default_rng(0).permutation(len(genes))  # columns in shuffled order
        counts = np.full((1, len(genes)), 3.0)
        counts[0, :10] = 9.0  # the genes of the first ten columns come ahead of the tie
        prep = adapter.prepare(make_dataset(counts, [genes[i] for i in order], [genes[i] for i in order]))
        cell = adapter.tokenize(prep, 0)
        got = [int(t) for t in cell.ids if t not in adapter.special_ids]
        assert len(got) == size and len(cell.ids) <= adapter.max_tokens
        top = sorted(adapter.token_dict[genes[i]] for i in order[:10])
        rest = sorted(adapter.token_dict[genes[i]] for i in order[10:])
        assert got == (top + rest)[:size]


def test_geneformer_safetensors_and_bin_and_refusals(tmp_path):
    ck = write_geneformer(tmp_path / "v2", version=2, n_genes=300)
    assert models.load("geneformer", ck).max_tokens == 4096
    ck1 = write_geneformer(tmp_path / "v1", version=1, n_genes=300)
    assert (ck1 / "pytorch_model.bin").is_file() and models.load("geneformer", ck1).max_tokens == 2048

    state = load_file(ck / "model.safetensors")
    key = "bert.encoder.layer.1.output.dense.weight"
    broken = {k: v for k, v in state.items() if k != key}
    save_file(broken, ck / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(AtlasError, match="missing or mis-shaped.*layer.1.output.dense.weight"):
        models.load("geneformer", ck)
    save_file({**state, key: torch.zeros(64, 64)}, ck / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(AtlasError, match="encoder|size mismatch|shape"):
        models.load("geneformer", ck)


def test_stream_rows_are_gene_tokens_with_cell_and_gene(tiny):
    adapter = models.load("geneformer", tiny / "geneformer-v2")
    prep = adapter.prepare(read_h5ad(SAMPLE, max_cells=5))
    chunks = list(models.stream(adapter, prep, [0, 1], batch_size=2))
    cells = np.concatenate([c.cells for c in chunks])
    genes = np.concatenate([c.genes for c in chunks])
    genes_of = {i: [int(t) for t in adapter.tokenize(prep, i).ids if t not in adapter.special_ids] for i in range(5)}
    order = list(dict.fromkeys(cells.tolist()))  # cells in the order they came: longest first
    assert sorted(order) == list(range(5)) and [len(genes_of[i]) for i in order] == sorted(map(len, genes_of.values()), reverse=True)
    assert list(zip(cells.tolist(), genes.tolist())) == [(i, t) for i in order for t in genes_of[i]]
    assert all(c.acts[1].shape == (len(c.cells), 64) and c.acts[1].dtype == np.float32 for c in chunks)


def test_read_h5ad_prefers_counts_and_refuses_normalised(tmp_path):
    x = sp.csr_matrix(np.array([[0, 1.5, 2.25], [0.5, 0, 0]], dtype=np.float32))
    a = ad.AnnData(X=x, var=pd.DataFrame(index=["CD74", "ACTB", "B2M"]))
    a.write_h5ad(tmp_path / "log.h5ad")
    with pytest.raises(AtlasError, match=r"log\.h5ad: no raw counts found: X has non-integer values"):
        read_h5ad(tmp_path / "log.h5ad")
    a.layers["counts"] = sp.csr_matrix(np.array([[0, 3, 4], [1, 0, 0]], dtype=np.float32))
    a.write_h5ad(tmp_path / "ok.h5ad")
    ds = read_h5ad(tmp_path / "ok.h5ad")
    assert ds.counts_source == "layers['counts']" and ds.counts.toarray().tolist() == [[0, 3, 4], [1, 0, 0]]


# --- output heads and running from a layer (what interventions use) ----------------------------------------

def reference_expr_decoder(state: dict, x: torch.Tensor) -> torch.Tensor:
    """scGPT's ExprDecoder written out: Linear, LeakyReLU, Linear, LeakyReLU, Linear(d -> 1)."""
    g = lambda k: state[k].float()  # noqa: E731
    for i in (0, 2):
        x = F.leaky_relu(F.linear(x, g(f"decoder.fc.{i}.weight"), g(f"decoder.fc.{i}.bias")))
    return F.linear(x, g("decoder.fc.4.weight"), g("decoder.fc.4.bias")).squeeze(-1)


def test_scgpt_head_and_run_from_a_layer_match_the_reference(tiny):
    ck = tiny / "scgpt-pytorch"
    adapter = models.load("scgpt", ck)
    state = torch.load(ck / "best_model.pt", weights_only=True)
    args = json.loads((ck / "args.json").read_text())
    assert tuple(state["decoder.fc.0.weight"].shape) == (64, 64) and tuple(state["decoder.fc.4.weight"].shape) == (1, 64)
    prep = adapter.prepare(read_h5ad(SAMPLE, max_cells=3))
    batch = adapter.collate([adapter.tokenize(prep, i) for i in range(3)])
    mask = adapter.maskable(batch) & (torch.arange(batch["input_ids"].shape[1]) % 3 == 1)
    masked = adapter.mask_inputs(batch, mask)
    assert (masked["values"][mask] == -1).all() and torch.equal(masked["values"][~mask], batch["values"][~mask])
    assert not adapter.maskable(batch)[:, 0].any(), "<cls> is never masked"
    real = batch["input_ids"] != 0
    with torch.no_grad():
        ref_last = reference_scgpt(state, args, masked["input_ids"], masked["values"])[-1]
        pred = adapter.predict(masked)
        assert (pred[real] - reference_expr_decoder(state, ref_last)[real]).abs().max() <= 1e-4
        # Replacing layer 0's output by itself changes nothing; by another state, the rest follows it.
        h0 = adapter.layer_outputs(masked, [0])[0]
        assert (adapter.predict(masked, layer=0, hidden=h0) - pred)[real].abs().max() <= 1e-5
        delta = torch.randn(h0.shape, generator=torch.Generator().manual_seed(0))
        ref = reference_scgpt(state, args, masked["input_ids"], None, start=1, x=h0 + delta)[-1]
        got = adapter.predict(masked, layer=0, hidden=h0 + delta)
        assert (got[real] - reference_expr_decoder(state, ref)[real]).abs().max() <= 1e-4
        assert (got - pred)[real].abs().max() > 1e-3
    # Gradients reach the replaced state (attribution patching).
    h = h0.clone().requires_grad_(True)
    adapter.predict(masked, layer=0, hidden=h)[mask].sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_geneformer_head_matches_bert_for_masked_lm(tiny, tmp_path):
    import anndata
    import transformers

    # Three cells over 400 genes: the logits cover the whole GENCODE vocabulary (62,758 tokens), so cells of
    # 1,900 genes made 1.4 GB per batch of logits and the test peaked at 11 GB.
    small = tmp_path / "small.h5ad"
    anndata.read_h5ad(SAMPLE)[:3, :400].copy().write_h5ad(small)
    for version in ("geneformer-v1", "geneformer-v2"):
        adapter = models.load("geneformer", tiny / version)
        assert adapter.has_head
        ref = transformers.BertForMaskedLM.from_pretrained(tiny / version, local_files_only=True).eval()
        prep = adapter.prepare(read_h5ad(small))
        batch = adapter.collate([adapter.tokenize(prep, i) for i in range(3)])
        mask = adapter.maskable(batch) & (torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(1)) < 0.15)
        masked = adapter.mask_inputs(batch, mask)
        assert mask.sum() >= 10 and (masked["input_ids"][mask] == adapter.token_dict["<mask>"]).all()
        real = batch["attention_mask"].bool()
        with torch.no_grad():
            logits = adapter.predict(masked)
            assert logits.shape == (3, batch["input_ids"].shape[1], len(adapter.token_dict))
            # One cell at a time: a cell's logits over the full GENCODE vocabulary (about 1,900 positions x 62,758
            # tokens) are 0.5 GB each, and comparing the batch at once held 11 GB.
            for c in range(3):
                n = int(real[c].sum())
                assert real[c, :n].all()  # padding only at the end: the cell's positions are a prefix (a view)
                expect = ref(**{k: v[c : c + 1, :n] for k, v in masked.items()}).logits[0]
                assert (logits[c, :n] - expect).abs_().max() <= 1e-4
                del expect
            # From layer 0 with a changed state: BERT's last layer and head applied by hand (one cell, no padding).
            one = adapter.mask_inputs(adapter.collate([adapter.tokenize(prep, 0)]), mask[:1, : len(adapter.tokenize(prep, 0).ids)])
            h0 = adapter.layer_outputs(one, [0])[0]
            assert (adapter.predict(one, layer=0, hidden=h0) - ref(**one).logits).abs().max() <= 1e-4
            changed = h0 + 0.5 * torch.randn(h0.shape, generator=torch.Generator().manual_seed(2))
            by_hand = ref.cls(ref.bert.encoder.layer[1](changed))
            assert (adapter.predict(one, layer=0, hidden=changed) - by_hand).abs().max() <= 1e-4


def test_checkpoints_without_a_head_load_and_say_so(tmp_path):
    ck = write_scgpt(tmp_path / "scgpt", n_genes=200)
    state = torch.load(ck / "best_model.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("decoder.")}, ck / "best_model.pt")
    adapter = models.load("scgpt", ck)
    assert not adapter.has_head and adapter.head_problem is None  # no head at all: nothing to note
    batch = adapter.collate([adapter.tokenize(adapter.prepare(read_h5ad(SAMPLE, max_cells=1)), 0)])
    with pytest.raises(AtlasError, match="no expression decoder"):
        adapter.predict(batch)

    gf = write_geneformer(tmp_path / "gf", version=2, n_genes=300)
    weights = load_file(gf / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("cls.")}, gf / "model.safetensors",
              metadata={"format": "pt"})
    adapter = models.load("geneformer", gf)
    assert not adapter.has_head and adapter.head is None and adapter.head_problem is None
    with pytest.raises(AtlasError, match="no masked-LM head"):
        adapter.predict(adapter.collate([adapter.tokenize(adapter.prepare(read_h5ad(SAMPLE, max_cells=1)), 0)]))


def test_incomplete_heads_are_ignored_with_a_note_and_refused_by_interventions(tmp_path, capsys):
    """A head that is there but not whole (keys missing or mis-shaped) is no encoder problem: the encoder loads, one
    note names the head's keys, and only interventions (check_head) refuse the checkpoint, naming them."""
    from builder.pipeline.interventions.patching import check_head
    from test_cli import run

    whole = write_scgpt(tmp_path / "whole", n_genes=2000)
    state = torch.load(whole / "best_model.pt", weights_only=True)
    partial = write_scgpt(tmp_path / "partial", n_genes=2000)
    torch.save({k: v for k, v in state.items() if not k.startswith(("decoder.fc.2.", "decoder.fc.4."))},
               partial / "best_model.pt")
    adapter = models.load("scgpt", partial)
    assert not adapter.has_head and adapter.model.decoder is None
    assert adapter.head_problem == (f"{partial}/best_model.pt: the expression decoder (decoder.*) is incomplete, "
                                    "missing decoder.fc.2.weight, decoder.fc.2.bias, decoder.fc.4.weight and 1 more")
    with pytest.raises(AtlasError, match=r"missing decoder\.fc\.2\.weight.*need the whole head"):
        check_head(adapter)
    ds = read_h5ad(SAMPLE, max_cells=2)
    acts = [np.concatenate([c.acts[1] for c in models.stream(a, a.prepare(ds), [1])])
            for a in (models.load("scgpt", whole), adapter)]
    assert np.array_equal(acts[0], acts[1])  # the same encoder

    code, out, err = run(["extract", "--model", "scgpt", "--checkpoint", str(partial), "--data", SAMPLE, "--out",
                          str(tmp_path / "acts"), "--max-cells", "2"], capsys)
    notes = [line for line in (out + err).splitlines() if line.startswith("note:")]
    assert code == 0 and len(notes) == 1, out + err
    assert "expression decoder (decoder.*) is incomplete, missing decoder.fc.2.weight" in notes[0]
    assert "the head is ignored" in notes[0] and "encoder weight" not in out + err

    torch.save({**state, "decoder.fc.2.weight": torch.ones(3, 64)}, partial / "best_model.pt")
    assert "decoder.fc.2.weight is torch.float32 (3, 64), expected floating-point weights of shape (64, 64)" in \
        models.load("scgpt", partial).head_problem

    gf = write_geneformer(tmp_path / "gf", version=2, n_genes=300)
    weights = load_file(gf / "model.safetensors")
    for change, words in ((lambda w: {k: v for k, v in w.items() if not k.startswith("cls.predictions.transform.")},
                           "is incomplete, missing cls.predictions.transform."),
                          (lambda w: {**w, "cls.predictions.transform.dense.weight": torch.ones(3, 64)},
                           "is incomplete, mis-shaped cls.predictions.transform.dense.weight")):
        save_file(change(weights), gf / "model.safetensors", metadata={"format": "pt"})
        adapter = models.load("geneformer", gf)
        assert not adapter.has_head and adapter.head is None
        assert adapter.head_problem.startswith(f"{gf}/model.safetensors: the masked-LM head") and words in adapter.head_problem
        with pytest.raises(AtlasError, match="masked-LM head .* need the whole head"):
            check_head(adapter)


# --- model inputs (issue 16 point 11) -----------------------------------------------------------------------

def test_geneformer_skips_cells_failing_filter_pass(tiny):
    adapter = models.load("geneformer", tiny / "geneformer-v2")
    ids = [g for g in adapter.token_dict if str(g).startswith("ENSG")][:3]
    obs = pd.DataFrame({"filter_pass": pd.Series([1, 0, True, None, 1.0], dtype=object, index=list("abcde"))})
    prep = adapter.prepare(make_dataset(np.full((5, 3), 2.0), ["A", "B", "C"], ids, obs=obs))
    assert prep.extra["cells"].tolist() == [0, 2, 4] and prep.report["filtered_out"] == 2
    assert len(adapter.tokenize(prep, 0).ids) == 5
    for skipped in (1, 3):
        assert adapter.tokenize(prep, skipped).ids.tolist() == [adapter.cls_id, adapter.eos_id]
    rows = np.concatenate([c.cells for c in models.stream(adapter, prep, [0], cells=prep.extra["cells"])])
    assert sorted(set(rows.tolist())) == [0, 2, 4]
    no_column = adapter.prepare(make_dataset(np.full((2, 3), 2.0), ["A", "B", "C"], ids))
    assert no_column.extra["cells"].tolist() == [0, 1] and no_column.report["filtered_out"] == 0


def test_geneformer_drops_ids_missing_from_the_mapping_dictionary(tmp_path):
    import pickle

    ck = write_geneformer(tmp_path / "v2", version=2, n_genes=300)
    path = next(ck.glob("ensembl_mapping_dict*.pkl"))
    mapping = pickle.loads(path.read_bytes())
    genes = sorted(mapping)[:4]
    del mapping[genes[0]]  # in the token dictionary, but not in the mapping: the official tokenizer drops it
    mapping[genes[1]] = genes[2]  # genes[1] collapses onto genes[2]: counts summed
    path.write_bytes(pickle.dumps(mapping))
    adapter = models.load("geneformer", ck)
    prep = adapter.prepare(make_dataset([[5, 1, 2, 4]], list("ABCD"), genes))
    assert prep.report["unmapped"] == 1 and prep.token_of_gene[0] == -1
    assert prep.token_of_gene[1] == prep.token_of_gene[2] == adapter.token_dict[genes[2]]
    got = [int(t) for t in adapter.tokenize(prep, 0).ids if t not in adapter.special_ids]
    value = {genes[2]: 3 / adapter.median[genes[2]], genes[3]: 4 / adapter.median[genes[3]]}
    assert got == [adapter.token_dict[g] for g in sorted(value, key=lambda g: -value[g])]


# --- bad checkpoints (issue 12) -----------------------------------------------------------------------------

def test_scgpt_refuses_a_non_float_tensor(tmp_path):
    ck = write_scgpt(tmp_path / "ck", n_genes=200)
    state = torch.load(ck / "best_model.pt", weights_only=True)
    state["transformer_encoder.layers.0.linear1.weight"] = state["transformer_encoder.layers.0.linear1.weight"].long()
    torch.save(state, ck / "best_model.pt")
    with pytest.raises(AtlasError, match=r"best_model.pt: transformer_encoder.layers.0.linear1.weight has dtype "
                                         r"torch.int64, expected floating-point weights"):
        models.load("scgpt", ck)


def test_geneformer_refuses_bad_weight_files_and_dictionaries(tmp_path):
    import pickle

    ck = write_geneformer(tmp_path / "v2", version=2, n_genes=300)
    good = (ck / "model.safetensors").read_bytes()
    weights = load_file(ck / "model.safetensors")
    key = "bert.encoder.layer.0.output.dense.weight"
    save_file({**weights, key: weights[key].to(torch.int32)}, ck / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(AtlasError, match=f"model.safetensors: {key} has dtype I32, expected floating-point"):
        models.load("geneformer", ck)
    (ck / "model.safetensors").write_bytes(b"\xff" * 8 + good[8:])  # a header length beyond the file
    with pytest.raises(AtlasError, match="model.safetensors: not a readable safetensors file"):
        models.load("geneformer", ck)
    (ck / "model.safetensors").write_bytes(good)

    ck1 = write_geneformer(tmp_path / "v1", version=1, n_genes=300)
    state = torch.load(ck1 / "pytorch_model.bin", weights_only=True)
    state[key] = state[key].to(torch.int64)
    torch.save(state, ck1 / "pytorch_model.bin")
    with pytest.raises(AtlasError, match=f"pytorch_model.bin: {key} has dtype torch.int64"):
        models.load("geneformer", ck1)

    for pattern, change, message in (
            ("gene_median_dictionary*.pkl", lambda d: d.update({next(iter(d)): "1.5"}), "expected a number"),
            ("token_dictionary*.pkl", lambda d: d.update({"<pad>": "zero"}), "expected a token id"),
            ("ensembl_mapping_dict*.pkl", lambda d: d.update({next(iter(d)): 7}), "expected an Ensembl id")):
        path = next(ck.glob(pattern))
        original = path.read_bytes()
        value = pickle.loads(original)
        change(value)
        path.write_bytes(pickle.dumps(value))
        with pytest.raises(AtlasError, match=f"{path.name}: the value of .* expected"):
            models.load("geneformer", ck)
        with pytest.raises(AtlasError, match=message):
            models.load("geneformer", ck)
        path.write_bytes(original)
    models.load("geneformer", ck)  # restored: loads again
