"""The model card that `atlas pretrain` writes beside a checkpoint, from its pretrain.json record (its loss curve:
losscurve.py)."""

from __future__ import annotations

from ..losscurve import METRIC

FAMILY = {"scgpt": "scGPT", "geneformer": "Geneformer (V2 layout)"}


def _table(record: dict) -> list[str]:
    fam, b = record["family"], record["baselines"]
    loss, acc = METRIC[fam]
    rows = [f"| model | held-out {loss} | held-out {acc} |", "|---|---|---|"]
    if record["trained"]:
        h = record["heldout"]
        rows.append(f"| this checkpoint (step {h['step']}) | {h['heldout_loss']:.4f} | {h['heldout_accuracy']:.4f} |")
    u = record["untrained"]
    rows.append(f"| untrained twin (same seed, step 0) | {u['heldout_loss']:.4f} | {u['heldout_accuracy']:.4f} |")
    if fam == "scgpt":
        rows += [f"| baseline: most frequent bin ({b['most_frequent_bin']}) / mean bin | {b['mean_bin_mse']:.4f} | "
                 f"{b['most_frequent_bin_accuracy']:.4f} |",
                 f"| baseline: each gene's mean bin (no context) | {b['gene_mean_bin_mse']:.4f} | "
                 f"{b['gene_mean_bin_accuracy']:.4f} |"]
    else:
        rows += [f"| baseline: gene frequencies (unigram) / most frequent gene ({b['most_frequent_gene']}) | "
                 f"{b['unigram_loss']:.4f} | {b['most_frequent_gene_accuracy']:.4f} |"]
    return rows


def model_card(record: dict) -> str:
    fam, cfg, data = record["family"], record["config"], record["data"]
    kind = "pretrained" if record["trained"] else "untrained (randomly initialised twin)"
    lines = [
        f"# {FAMILY[fam]} demo model, {kind}",
        "",
        "A small model trained by this project's `atlas pretrain` on the cells named below; it is not a published "
        "checkpoint and says nothing about the published models. It exists so that an atlas can be built and "
        "checked on bundled data: its features can be compared with those of its untrained twin.",
        "",
        f"- **Architecture**: {cfg['layers']} layer(s), width {cfg['width']}, {cfg['heads']} heads, "
        f"{record['parameters']:,} parameters; vocabulary: the {data['genes_in_vocabulary']} genes seen in training "
        f"cells (var column `{data['gene_column']}`).",
        f"- **Data**: `{data['file']}` (sha256 `{data['sha256'][:16]}...`), {data['cells']} cells with at least 2 "
        f"genes: {data['train_cells']} for training, {len(data['heldout_cells'])} held out (listed in pretrain.json).",
        f"- **Objective**: {record['objective']}.",
        f"- **Training**: {cfg['steps']} AdamW steps of {cfg['batch_size']} cells, peak learning rate {cfg['lr']}, "
        f"warm-up {cfg['warmup']:.0%} then linear decay, weight decay {cfg['weight_decay']}, dropout "
        f"{cfg['dropout']}, gradient norm clipped at 1; seed {cfg['seed']}.",
        "",
        "## Held-out masked prediction",
        "",
        "Measured on the held-out cells with the same masked positions at every evaluation.",
        "",
        *_table(record),
        "",
    ]
    if record["trained"]:
        lines += ["## Loss curve", "", "![loss curve](loss_curve.svg)", ""]
    if record.get("command"):
        lines += ["## Command", "", "```", record["command"], "```", ""]
    lines += ["The untrained twin: the same command with `--random-init` (same vocabulary, architecture and seed, "
              "no step taken).", ""]
    return "\n".join(lines)
