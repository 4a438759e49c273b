"""Types and ranges of every setting, as click parameter types shared by the options and the config file.

An option takes its `type=` from here, and `check_setting` runs the same conversion on a value read from a
config file, so both refuse the same values and the message names the setting where it came from:
"Invalid value for '--alpha': 1.5 is not in the range 0<x<1." or "atlas.toml: [annotate] alpha: 1.5 is not
in the range 0<x<1.". SETTINGS holds every option of every command: BUILD_SETTINGS, those of `atlas build --config`
(docs/configuration.md documents them), and COMMAND_SETTINGS, the options of one command or a few. An option's
default is the field of the dataclass that holds its setting (DEFAULTS), never a number restated here or in cli.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import AtlasError
from .fsutil import check_replaceable
from .parse import MAX_LAYER, atlas_name, layer_list, string_channels


class Number(click.FloatRange):
    """A finite number within an optional range (click's FloatRange lets NaN through every bound)."""

    name = "number"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv!r} is not a finite number.", param, ctx)
        return rv


class Integer(click.IntRange):
    name = "integer"


class Device(click.ParamType):
    name = "device"

    def convert(self, value, param, ctx):
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(value)):
            self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps.", param, ctx)
        return str(value)


class AtlasName(click.ParamType):
    name = "name"

    def convert(self, value, param, ctx):
        try:
            return atlas_name(str(value))
        except AtlasError as e:
            self.fail(str(e).removeprefix("atlas name "), param, ctx)


class Label(click.ParamType):
    """A name given as text, such as a dataset name: on one line, and not empty (an empty one would silently
    stand for the default)."""

    name = "text"

    def convert(self, value, param, ctx):
        value = str(value)
        if not value.strip():
            self.fail("must not be empty (leave the option out for the default).", param, ctx)
        if not value.isprintable():
            self.fail(f"{value!r} holds a line break or another control character.", param, ctx)
        return value


class LayerList(click.ParamType):
    """'0,3,5-7' -> [0, 3, 5, 6, 7]."""

    name = "layers"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return layer_list(str(value), option="")
        except AtlasError as e:
            self.fail(str(e).strip(), param, ctx)


class StringChannels(click.ParamType):
    """'experimental,database' (a subset of STRING's channels) or 'combined'; kept as the text given."""

    name = "channels"

    def convert(self, value, param, ctx):
        try:
            string_channels(str(value))
        except AtlasError as e:
            self.fail(str(e).removeprefix("STRING channels ") + ".", param, ctx)
        return str(value)


class OutputFolder(click.ParamType):
    """A folder this command replaces as a whole: absent, empty, or an earlier output (holding `marker`).

    Also refused up front: a file in its place, and a parent folder this user cannot write in.
    """

    name = "folder"

    def __init__(self, marker: str | None, what: str = "an earlier output of this command"):
        self.marker, self.what = marker, what

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.exists() and not path.is_dir():
            self.fail(f"{path} is a file, expected a folder.", param, ctx)
        if self.marker:
            try:
                check_replaceable(path, self.marker, self.what)
            except AtlasError as e:
                self.fail(str(e), param, ctx)
        # The output is built beside `path`, in its parent: the nearest existing ancestor must be writable.
        probe = path if self.marker is None else path.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
            self.fail(f"cannot write in {probe} (permission denied).", param, ctx)
        if probe.exists() and not probe.is_dir():
            self.fail(f"{probe} is a file, so {path} cannot be created.", param, ctx)
        return path


class GeneListFile(click.ParamType):
    """A text file with one gene per line; an empty one is refused (it would make every test empty)."""

    name = "file"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        path = Path(value)
        if not path.is_file():
            self.fail(f"{path}: no such file.", param, ctx)
        try:
            genes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            self.fail(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}).", param, ctx)
        if not genes:
            self.fail(f"{path}: holds no gene (expected one gene per line).", param, ctx)
        return genes


class GeneSetSpec(click.ParamType):
    """A bundled database name, a GMT path, or NAME=PATH; paths must exist (names are checked on loading)."""

    name = "database"

    def convert(self, value, param, ctx):
        value = str(value)
        path = value.partition("=")[2] if "=" in value else value
        looks_like_path = "=" in value or "/" in value or path.endswith((".gmt", ".gmt.gz", ".txt"))
        if looks_like_path and not Path(path).is_file():
            self.fail(f"{path}: no such file.", param, ctx)
        return value


def in_file(**kw) -> click.Path:
    return click.Path(exists=True, dir_okay=False, path_type=Path, **kw)


def in_dir(**kw) -> click.Path:
    return click.Path(exists=True, file_okay=False, path_type=Path, **kw)


def in_path(**kw) -> click.Path:
    return click.Path(exists=True, path_type=Path, **kw)


SEED = Integer(0, 2**32 - 1)  # numpy's legacy seeding, used by umap-learn, takes 32 bits
LAYER = Integer(0, MAX_LAYER)
PORT = Integer(0, 65535)  # 0: any free port
POSITIVE = Integer(min=1)
UNIT_OPEN = Number(0, 1, min_open=True, max_open=True)


@dataclass(frozen=True)
class Setting:
    type: click.ParamType
    help: str
    default: object = None  # only for a setting no dataclass holds (DEFAULTS): the workspace folders, say


def _families() -> click.Choice:
    from .models import FAMILIES  # the registry (importing it does not import torch)

    return click.Choice(sorted(FAMILIES))


FAMILY = _families()
NON_NEGATIVE = Integer(min=0)

# The settings of `atlas build`: its options and the keys of its config file (`[section] name` for `section.name`).
BUILD_SETTINGS: dict[str, Setting] = {
    "model": Setting(FAMILY, "Model family of the checkpoint."),
    "checkpoint": Setting(in_dir(), "Checkpoint folder."),
    "data": Setting(in_file(), "Dataset (.h5ad with raw counts)."),
    "sae": Setting(in_path(), "SAE folder or file."),
    "train_sae": Setting(click.BOOL, "Train a TopK SAE per layer."),
    "genesets": Setting(GeneSetSpec(), "Bundled database name, GMT path or NAME=PATH."),
    "trrust": Setting(in_file(), "TRRUST TSV: TF target sets and TF-target edges."),
    "string": Setting(in_file(), "STRING links file."),
    "string_info": Setting(in_file(), "STRING protein.info file (for protein ids)."),
    "string_min_score": Setting(Integer(0, 1000), "Cut-off (0 to 1000) on the STRING score of the chosen channels."),
    "string_channels": Setting(StringChannels(), "STRING channels recombined into the score (comma-separated), "
                               "or 'combined' for the file's combined_score."),
    "layers": Setting(LayerList(), "Layers, e.g. 0,3,5-7 (default: all)."),
    "atlas": Setting(AtlasName(), "Atlas name (a folder under --data-dir and a URL path)."),
    "title": Setting(click.STRING, "Title shown on the site."),
    "max_cells": Setting(POSITIVE, "Use only the first N cells."),
    "batch_size": Setting(POSITIVE, "Cells per forward pass (default: 1 on the CPU, 16 on a GPU)."),
    "device": Setting(Device(), "cpu, cuda, cuda:N, mps or auto."),
    "gene_column": Setting(click.STRING, "var column naming the genes."),
    "cell_type_column": Setting(click.STRING, "obs column with cell types."),
    "donor_column": Setting(click.STRING, "obs column with donors (adds a donor-level cell-type test)."),
    "seed": Setting(SEED, "Seed of every random step."),
    "shard_cells": Setting(POSITIVE, "Cells per shard: the unit of work, resume and memory."),
    "backed": Setting(click.BOOL, "Read the .h5ad in chunks (false: whole; the same results)."),
    "keep_partials": Setting(click.BOOL, "Keep the shards' dense sums and fold checkpoints after the merge."),
    "engine.engine": Setting(click.Choice(["local", "ray"]), "Where the map stages run."),
    "engine.ray_address": Setting(click.STRING, "Address of a running Ray cluster (default: start a local one)."),
    "engine.workers": Setting(NON_NEGATIVE, "Ray actors (0: one per 2 CPUs)."),
    "engine.gpus_per_worker": Setting(Number(0), "GPUs per Ray actor (or for the local engine)."),
    "engine.threads": Setting(NON_NEGATIVE, "torch threads per worker (0: the local default, Ray CPUs / workers)."),
    "train.expansion": Setting(POSITIVE, "Features = expansion x width."),
    "train.k": Setting(POSITIVE, "Active features per token."),
    "train.centering": Setting(click.Choice(["pre-bias", "mean", "none"]),
                               "pre-bias: a trained decoder bias subtracted before encoding; mean: the data "
                               "mean, fixed; none: no centring."),
    "train.epochs": Setting(POSITIVE, "At most this many passes over the training tokens (the convergence rule "
                            "usually stops training first)."),
    "train.eval_every": Setting(POSITIVE, "Steps between two measurements of the validation loss."),
    "train.patience": Setting(POSITIVE, "Stop after this many measurements in a row without a min_delta gain."),
    "train.min_delta": Setting(Number(0, 1, max_open=True), "Relative gain of the validation loss that counts as "
                               "progress."),
    "train.val_tokens": Setting(POSITIVE, "Training-sample tokens set aside to measure the validation loss (at most "
                                "a tenth of the sample)."),
    "train.batch_size": Setting(POSITIVE, "Tokens per step."),
    "train.lr": Setting(Number(0, min_open=True), "Adam learning rate."),
    "train.aux_k": Setting(POSITIVE, "Dead features used by the AuxK loss (default: half the width)."),
    "train.aux_coef": Setting(Number(0), "Weight of the AuxK loss (0: off)."),
    "train.dead_tokens": Setting(POSITIVE, "Training tokens without firing after which a feature counts as dead."),
    "train.holdout": Setting(UNIT_OPEN, "Share of cells held out for evaluation (and the principal axes)."),
    "train.sample_tokens": Setting(POSITIVE, "Training tokens per layer (default: 2,000,000 or every one when fewer)."),
    "train.block": Setting(POSITIVE, "Tokens read from disk at a time."),
    "stats.top_genes": Setting(POSITIVE, "Top genes kept per feature."),
    "stats.min_support": Setting(POSITIVE, "Firing tokens a gene needs before it can rank among a feature's top genes."),
    "stats.top_cells": Setting(POSITIVE, "Most active cells kept per feature."),
    "stats.hist_bins": Setting(POSITIVE, "Bins of the activation histograms."),
    "stats.lcb_z": Setting(Number(0), "Top genes: mean activation minus this many standard errors."),
    "stats.alpha": Setting(UNIT_OPEN, "Benjamini-Hochberg level of the cell-type tests."),
    "stats.auc_floor": Setting(Number(0, 1, min_open=True), "Smallest AUC of a cell type shown."),
    "annotate.top_n": Setting(POSITIVE, "Top genes per feature in the test."),
    "annotate.min_size": Setting(POSITIVE, "Smallest term (inside the universe)."),
    "annotate.max_size": Setting(POSITIVE, "Largest term (inside the universe)."),
    "annotate.alpha": Setting(UNIT_OPEN, "Benjamini-Hochberg level."),
    "annotate.seed": Setting(SEED, "Seed of the random_genes baseline."),
    "annotate.random_genes": Setting(click.BOOL, "Annotate the random_genes baseline (the features' lists with "
                                     "their genes dealt out again)."),
    "graphs.module_min_count": Setting(POSITIVE, "Co-firing tokens for a module edge."),
    "graphs.module_min_pmi": Setting(Number(), "Smallest PMI of a module edge."),
    "graphs.resolution": Setting(Number(0, min_open=True), "Leiden resolution."),
    "graphs.min_module_size": Setting(POSITIVE, "Smallest module kept."),
    "graphs.cross_min_count": Setting(POSITIVE, "Co-firing tokens for a cross-layer edge."),
    "graphs.cross_min_pmi": Setting(Number(), "Smallest PMI of a pair counted in the raw cross-layer rate."),
    "graphs.cross_min_log_ratio": Setting(Number(), "Smallest log(count / within-gene expectation) of a cross-layer edge."),
    "graphs.cross_alpha": Setting(UNIT_OPEN, "Benjamini-Hochberg level against the within-gene null."),
    "graphs.cosine": Setting(Number(0, 1), "Decoder cosine of a match."),
    "graphs.module_null_draws": Setting(POSITIVE, "Draws of the within-gene null the module counts are set beside."),
    "graphs.module_label_share": Setting(Number(0, 1), "A module takes a term as its label only if this share of "
                                         "its members (and at least two) hold it."),
    "graphs.umap_neighbors": Setting(Integer(min=2), "UMAP neighbours."),
    "graphs.umap_min_dist": Setting(Number(0), "UMAP minimum distance."),
    "graphs.umap_epochs": Setting(POSITIVE, "UMAP optimisation epochs."),
    "graphs.pca_components": Setting(Integer(1, 50), "Principal directions (x 2 signs) given top-gene lists."),
    "graphs.seed": Setting(SEED, "Seed of Leiden and UMAP."),
    "interventions.enabled": Setting(click.BOOL, "Patch SAE features on held-out cells (needs the model's head)."),
    "interventions.max_cells": Setting(POSITIVE, "Held-out cells patched per layer (a seeded choice when more)."),
    "interventions.draws": Setting(POSITIVE, "Mask draws per patched cell."),
    "interventions.mask_rate": Setting(UNIT_OPEN, "Share of gene tokens masked per draw."),
    "interventions.n_top": Setting(NON_NEGATIVE, "Features patched per layer by largest |attribution|."),
    "interventions.n_random": Setting(NON_NEGATIVE, "More features patched per layer, evenly across frequency quartiles."),
    "interventions.null_features": Setting(POSITIVE, "Frequency-matched patched features per tested feature (null)."),
    "interventions.null_directions": Setting(NON_NEGATIVE, "Random directions of the same norm at the same positions "
                                             "per tested feature (null)."),
    "interventions.min_cells": Setting(POSITIVE, "Patched cells a feature must fire in to be sampled."),
    "interventions.min_genes": Setting(POSITIVE, "Top genes with a measured effect needed for a specificity."),
    "interventions.bootstrap": Setting(NON_NEGATIVE, "Bootstrap resamples of cells for the intervals (0: none)."),
    "interventions.level": Setting(UNIT_OPEN, "Level of the bootstrap intervals."),
    "interventions.alpha": Setting(UNIT_OPEN, "BH level at which a feature's specificity counts as beyond its nulls."),
    "interventions.effects_top": Setting(POSITIVE, "Most affected genes kept per tested feature."),
    "interventions.min_gene_cells": Setting(POSITIVE, "Patched cells a gene must be measured in to be listed "
                                            "among a feature's most affected genes."),
    "interventions.batch": Setting(POSITIVE, "Interventions run in one forward pass (x mask draws sequences)."),
    "baselines.pca": Setting(click.BOOL, "Annotate the top genes of the top graphs.pca_components principal "
                             "directions (both signs) as the pca baseline."),
    "baselines.coexpression": Setting(click.BOOL, "Annotate equally sized groups of co-expressed genes of the "
                                      "build's cells (no model) as the coexpression baseline."),
    "baselines.coexpression_genes": Setting(Integer(20), "Most detected universe genes the coexpression baseline "
                                            "clusters (its correlation matrix takes genes^2 x 8 bytes)."),
    "baselines.random_init_model": Setting(click.BOOL, "Run the same build on the checkpoint's randomly "
                                           "initialised twin (default: on with --train-sae)."),
    "baselines.random_dictionary": Setting(click.BOOL, "Annotate the features of each SAE's untrained start, and of "
                                           "another seed's, encoding the same activations (default: on with "
                                           "--train-sae)."),
}

DATA_DIR, SITE, CACHE = Path("atlas_data"), Path("site"), Path(".atlas_cache")  # relative to the working folder

# The options of the other commands, and those of `atlas build` that are not settings of its config file (the
# config file refuses these keys). A key's section names its command, or the dataclass holding its default.
COMMAND_SETTINGS: dict[str, Setting] = {
    "folders.data_dir": Setting(OutputFolder(None), "Folder holding one folder per atlas.", DATA_DIR),
    "folders.site": Setting(OutputFolder(None), "Folder the sites are rendered into.", SITE),
    "folders.cache": Setting(click.Path(file_okay=False, path_type=Path), "Stage cache; an interrupted build resumes "
                             "from it.", CACHE),
    "quiet": Setting(click.BOOL, "Print only the summary."),
    "import.model": Setting(click.STRING, "Model family to record, e.g. scgpt or geneformer."),
    "render.data_dir": Setting(in_dir(), "Folder holding one folder per atlas.", DATA_DIR),
    "serve.site": Setting(click.Path(file_okay=False, path_type=Path), "Folder of rendered sites to serve.", SITE),
    "serve.port": Setting(PORT, "Port on the loopback address (0: any free one)."),
    "serve.host": Setting(click.STRING, "Address to bind (loopback by default)."),
    "extract.out": Setting(OutputFolder("extract.json", "an activations folder"),
                           "Activations folder to write (replaced atomically)."),
    "extract.seed": Setting(SEED, "Seed of scGPT's binning ties and gene sampling.", 0),
    "sae.activations": Setting(in_dir(), "Folder written by `atlas extract`."),
    "sae.layer": Setting(LAYER, "Layer of the activations."),
    "sae.train_out": Setting(OutputFolder("cfg.json", "an SAE folder"),
                             "SAE folder to write (SAELens layout, replaced atomically)."),
    "sae.encode_out": Setting(OutputFolder("codes.json", "a codes folder"), "Codes folder to write (replaced atomically)."),
    "sae.codes": Setting(in_dir(), "Folder written by `atlas sae encode`."),
    "sae.stats_out": Setting(OutputFolder("stats.json", "a statistics folder"),
                             "Statistics folder to write (replaced atomically)."),
    "train.seed": Setting(SEED, "Seed of initialisation, shuffling and the held-out cells."),
    "annotate.genes": Setting(in_file(), "Table of top genes: layer, feature, gene, rank (rank 1 = first; Parquet, "
                              "CSV or TSV)."),
    "annotate.universe": Setting(GeneListFile(), "Genes that could enter a top list, one per line (a build: genes "
                                 "with >= min_support tokens)."),
    "annotate.universe_from_table": Setting(click.BOOL, "Use the genes of the table instead: each list is then "
                                            "judged against the other listed genes."),
    "annotate.layer": Setting(LAYER, "Layer of a table without a layer column."),
    "annotate.baselines": Setting(click.STRING, "Comma-separated: random_genes, coexpression (needs --data); or "
                                  "'none'.", "random_genes"),
    "annotate.baseline_lists": Setting(click.STRING, "Any other baseline: a table of gene lists (layer, list, gene, "
                                       "rank), e.g. pca=pca.parquet."),
    "annotate.data": Setting(in_file(), "The dataset (.h5ad, raw counts) whose co-expression the coexpression "
                             "baseline clusters."),
    "annotate.out": Setting(OutputFolder("annotate.json", "an annotation folder"),
                            "Annotation folder to write (replaced atomically)."),
    "coexpression.n_genes": Setting(POSITIVE, "Most detected universe genes clustered by the coexpression baseline."),
    "build.config": Setting(in_file(), "atlas.toml with any of these settings."),
    "build.replace": Setting(click.BOOL, "Let the default atlas name replace an atlas that came from elsewhere."),
    "perturb.perturbation_column": Setting(click.STRING, "obs column naming each cell's perturbed gene."),
    "perturb.control": Setting(click.STRING, "Value of that column marking control cells (e.g. non-targeting)."),
    "perturb.batch_column": Setting(Label(), "obs column of batches (gem groups): controls from the same batches, "
                                    "batch as a covariate."),
    "perturb.dataset_name": Setting(Label(), "Name of the dataset in the tables (default: the file name without "
                                    ".h5ad); its earlier rows are replaced."),
    "perturb.min_cells": Setting(Integer(3), "Perturbations with fewer cells (after the batch rule) are skipped and "
                                 "listed."),
    "perturb.pseudo": Setting(NON_NEGATIVE, "Pseudo-perturbations (random control subsets) per perturbation, for the "
                              "null."),
    "perturb.top_genes": Setting(POSITIVE, "Top-scoring genes in which a TF's targets are counted."),
    "perturb.min_targets": Setting(POSITIVE, "Curated targets in the universe a TF needs to be tested."),
    "perturb.max_controls": Setting(NON_NEGATIVE, "Use at most this many control cells (a seeded choice); 0: all."),
    "perturb.on_target": Setting(Number(0, 1, max_open=True), "Keep only cells with on-target knockdown: perturbed "
                                 "cells whose gene's CP10k is at or below this quantile of the controls' (e.g. 0.25), "
                                 "compared with the controls under the same cut-off; 0: every cell."),
    "perturb.alpha": Setting(UNIT_OPEN, "BH level for every call."),
    "perturb.seed": Setting(SEED, "Seed of the pseudo-perturbations and control choice."),
    "perturb.sae": Setting(in_dir(), "Folder of SAEs (layer_LL/) (default: those the atlas records)."),
    "link.atlas": Setting(AtlasName(), "An atlas (under --data-dir) made by atlas build: two to link them (built from "
                          "the same .h5ad), or one with --twin."),
    "link.twin": Setting(click.BOOL, "Link the one --atlas to its own untrained twin (its build's random_init_model) "
                         "instead of a second atlas."),
    "link.other_layers": Setting(LayerList(), "Layers of the second atlas (or of the twin), e.g. 0,3 (default: "
                                 "every layer)."),
    "link.top": Setting(POSITIVE, "Partners kept per feature and layer of the other atlas (rank 1: the highest "
                        "correlation)."),
    "link.min_cells": Setting(Integer(3), "Shared cells a feature must be active in to be linked."),
    "link.top_genes": Setting(POSITIVE, "Top genes of each feature compared between partners."),
    "link.alpha": Setting(UNIT_OPEN, "BH level of a match beyond a null."),
    "link.block": Setting(POSITIVE, "Features per block of the streamed correlation (memory: 8 bytes x block x the "
                          "other layer's features)."),
    "link.cache": Setting(in_dir(), "Stage cache of the atlases' builds, where their per-cell codes are (repeatable; "
                          "default: .atlas_cache).", CACHE),
    "pretrain.model": Setting(click.Choice(["scgpt", "geneformer"]), "Model family: its architecture, checkpoint "
                              "layout and pretraining objective."),
    "pretrain.out": Setting(OutputFolder("pretrain.json", "a checkpoint folder of atlas pretrain"),
                            "Checkpoint folder to write (atomically), in the family's real layout, with MODEL_CARD.md."),
    "pretrain.layers": Setting(Integer(1, 48), "Transformer layers."),
    "pretrain.width": Setting(Integer(8, 4096), "Hidden width."),
    "pretrain.heads": Setting(Integer(1, 64), "Attention heads."),
    "pretrain.steps": Setting(POSITIVE, "Optimiser steps."),
    "pretrain.batch_size": Setting(POSITIVE, "Cells per step."),
    "pretrain.lr": Setting(Number(0, 1, min_open=True), "Peak AdamW learning rate."),
    "pretrain.holdout": Setting(Number(0, 0.5, min_open=True, max_open=True), "Share of cells held out for evaluation."),
    "pretrain.seed": Setting(SEED, "Seed of the split, initial weights, masks."),
    "pretrain.random_init": Setting(click.BOOL, "Write the untrained twin instead: same vocabulary, architecture and "
                                    "seed, no step taken (--steps is then ignored)."),
}

SETTINGS: dict[str, Setting] = {**BUILD_SETTINGS, **COMMAND_SETTINGS}

# The dataclass holding the defaults of a key's section (top-level keys: the build's BuildConfig), as (module under
# builder, class); the field is the rest of the key. Imported only when a default is needed (parsing a command that
# takes one, or --help): these modules are slow to import, and `atlas validate` needs none of them.
DEFAULTS = {
    "": ("pipeline.build", "BuildConfig"),
    "engine": ("pipeline.engine", "EngineConfig"),
    "train": ("pipeline.sae.train", "TrainConfig"),
    "stats": ("pipeline.statistics.features", "StatsConfig"),
    "annotate": ("pipeline.annotation.annotate", "AnnotateConfig"),
    "coexpression": ("pipeline.annotation.coexpression", "CoexpressionConfig"),
    "graphs": ("pipeline.graphs.modules", "GraphConfig"),
    "interventions": ("pipeline.interventions.stats", "InterventionsConfig"),
    "baselines": ("pipeline.stages.baselines", "BaselinesConfig"),
    "perturb": ("pipeline.perturbation.stats", "PerturbConfig"),
    "link": ("pipeline.links.run", "LinkConfig"),
    "pretrain": ("models.pretrain", "PretrainConfig"),
    "serve": ("site.serve", "ServeConfig"),
}

_KINDS = {  # what a config value must be before its range is checked
    Integer: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    Number: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    type(click.BOOL): ("true or false", lambda v: isinstance(v, bool)),
}


def check_setting(key: str, value, where: str):
    """The config file's `key` (e.g. 'annotate.alpha') converted by its option type, or AtlasError naming both."""
    section, _, name = key.rpartition(".")
    label = f"{where}: [{section}] {name}" if section else f"{where}: {name}"
    if key not in BUILD_SETTINGS:
        raise AtlasError(f"{label}: unknown setting")
    ptype = BUILD_SETTINGS[key].type
    kind, ok = _KINDS.get(type(ptype), ("a string", lambda v: isinstance(v, str)))
    values = value if key == "genesets" and isinstance(value, list) else [value]
    for v in values:
        if not ok(v):
            raise AtlasError(f"{label}: expected {kind}{' or a list of them' if key == 'genesets' else ''}, got {v!r}")
    try:
        out = [ptype.convert(v, None, None) for v in values]
    except click.BadParameter as e:
        raise AtlasError(f"{label}: {e.message}") from None
    return out if key == "genesets" and isinstance(value, list) else out[0]


def default_of(key: str):
    """The default of setting `key`: the field of the dataclass holding its section (DEFAULTS), or the setting's
    own. An empty text or tuple (the build's "not given") is None."""
    section, _, name = key.rpartition(".")
    if section in DEFAULTS:
        module, cls = DEFAULTS[section]
        holder = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
        fields = {f.name: f for f in dataclasses.fields(holder)}
        if name in fields:
            f = fields[name]
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            return None if isinstance(value, (str, tuple)) and not value else value
    return SETTINGS[key].default


class _Default:
    """An option's default, looked up by click only when it needs it (parsing the command, or its --help shows it),
    so a command imports only the dataclasses of its own options. `unset`: the value is None when the option is
    not given (the build's config file and demo defaults then fill it; another command decides itself), and
    --help still shows the dataclass default."""

    def __init__(self, key: str, unset: bool):
        self.key, self.unset = key, unset

    def __call__(self):
        return None if self.unset else default_of(self.key)

    def __str__(self):  # what --help shows
        value = default_of(self.key)
        return "" if value is None else str(value)


def setting_option(flag: str, key: str, *decls: str, unset: bool = False, **kw):
    """A click option whose type and help come from SETTINGS[key] and whose default, shown in --help, is the
    field of the dataclass holding the setting (default_of); type=, help= or default= given here win. A setting of
    type BOOL is a flag (off unless given); a required or repeatable option has no default. `unset`: see _Default."""
    s = SETTINGS[key]
    kw.setdefault("type", s.type)
    kw.setdefault("help", s.help)
    if s.type is click.BOOL:
        if "/" not in flag:
            kw.setdefault("is_flag", True)
        kw.setdefault("default", None if unset else False)
    elif "default" not in kw and not kw.get("required") and not kw.get("multiple"):
        kw["default"] = _Default(key, unset)
        kw.setdefault("show_default", True)
    return click.option(flag, *decls, **kw)


def read_config(path: Path | None, overrides: dict, defaults=None):
    """`atlas build`'s settings: defaults, then the TOML file, then command-line options (keys as in the file:
    `seed`, `engine.workers`). defaults(values given) can add defaults that depend on what was given (the demo
    build's, for one). Every value of the file goes through the type of its command-line option (SETTINGS), so
    both refuse the same values in the same words, naming the file and key; cross-field rules are checked after."""
    import tomllib

    from .pipeline.build import SECTIONS, make_config

    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AtlasError(f"{path}: no such config file")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise AtlasError(f"{path}: not valid TOML ({e})") from None
        for key, value in raw.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise AtlasError(f"{path}: [{key}] must be a table")
                values.update({f"{key}.{k}": check_setting(f"{key}.{k}", v, str(path)) for k, v in value.items()})
            else:
                values[key] = check_setting(key, value, str(path))
    # None, "" and () mean "not given"; 0 and False given on the command line override the file.
    values.update({k: v for k, v in overrides.items() if v is not None and not (isinstance(v, (str, tuple)) and not v)})
    if defaults is not None:
        values = {**defaults(dict(values)), **values}
    return make_config(values)
