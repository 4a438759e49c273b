"""Option types: the config file refuses exactly what the options refuse, in the same words; every option and
setting is documented."""

import math
from pathlib import Path

import click
import pytest

from builder.cli import cli
from builder.errors import AtlasError
from builder.options import BUILD_SETTINGS, COMMAND_SETTINGS, SETTINGS, check_setting, default_of
from test_cli import run

# The settings of `atlas build --config`, documented in the configuration page of the docs.
CONFIG = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()

# (command, option, setting, the value as typed on the command line, the value as read from TOML)
SAME_REFUSAL = [
    ("annotate", "--alpha", "annotate.alpha", "1.5", 1.5),
    ("annotate", "--alpha", "annotate.alpha", "nan", math.nan),
    ("annotate", "--top-n", "annotate.top_n", "0", 0),
    ("annotate", "--min-size", "annotate.min_size", "-1", -1),
    ("annotate", "--seed", "annotate.seed", "-1", -1),
    ("annotate", "--string-min-score", "string_min_score", "2000", 2000),
    ("sae train", "--lr", "train.lr", "nan", math.nan),
    ("sae train", "--lr", "train.lr", "-1", -1.0),
    ("sae train", "--holdout", "train.holdout", "1", 1.0),
    ("sae train", "--k", "train.k", "0", 0),
    ("sae train", "--centering", "train.centering", "middle", "middle"),
    ("sae stats", "--top-genes", "stats.top_genes", "-3", -3),
    ("extract", "--layers", "layers", "1-0", "1-0"),
    ("extract", "--max-cells", "max_cells", "0", 0),
    ("extract", "--device", "device", "gpu", "gpu"),
    ("import biodyn", "--atlas", "atlas", "inputs", "inputs"),
]


@pytest.mark.parametrize("command, option, key, typed, toml", SAME_REFUSAL, ids=[f"{r[0]} {r[1]} {r[3]}" for r in SAME_REFUSAL])
def test_config_refuses_what_the_option_refuses(command, option, key, typed, toml, capsys):
    code, _, err = run([*command.split(), option, typed], capsys)
    prefix = f"error: Invalid value for '{option}': "
    assert code == 2 and err.startswith(prefix) and err.count("\n") == 1, err
    with pytest.raises(AtlasError) as e:
        check_setting(key, toml, "atlas.toml")
    section, _, name = key.rpartition(".")
    label = f"atlas.toml: [{section}] {name}: " if section else f"atlas.toml: {name}: "
    assert str(e.value) == label + err[len(prefix):].strip()


@pytest.mark.parametrize("key, value, message", [
    ("annotate.alpha", 1.5, "atlas.toml: [annotate] alpha: 1.5 is not in the range 0<x<1."),
    ("graphs.resolution", 0, "atlas.toml: [graphs] resolution: 0.0 is not in the range x>0."),
    ("annotate.alpha", "0.05", "atlas.toml: [annotate] alpha: expected a number, got '0.05'"),
    ("stats.top_genes", True, "atlas.toml: [stats] top_genes: expected an integer, got True"),
    ("stats.top_genes", 2.5, "atlas.toml: [stats] top_genes: expected an integer, got 2.5"),
    ("train_sae", "yes", "atlas.toml: train_sae: expected true or false, got 'yes'"),
    ("genesets", ["GO_BP", "X=/nowhere.gmt"], "atlas.toml: genesets: /nowhere.gmt: no such file."),
    ("stats.block", 256, "atlas.toml: [stats] block: unknown setting"),
])
def test_config_values_are_refused_with_file_and_key(key, value, message):
    with pytest.raises(AtlasError) as e:
        check_setting(key, value, "atlas.toml")
    assert str(e.value) == message


def test_good_config_values_convert():
    assert check_setting("annotate.alpha", 0.01, "f") == 0.01
    assert check_setting("train.lr", 1, "f") == 1.0
    assert check_setting("layers", "0,3,5-7", "f") == [0, 3, 5, 6, 7]
    assert check_setting("genesets", ["GO_BP", "KEGG"], "f") == ["GO_BP", "KEGG"]


def _options(command, path="atlas"):
    for p in command.params:
        if isinstance(p, click.Option) and p.name != "help":
            yield f"{path} {p.opts[0]}", p
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, f"{path} {name}")


def test_every_option_has_help_text():
    assert [name for name, p in _options(cli) if not p.help] == []


def test_every_setting_is_documented_in_the_configuration_page():
    missing = []
    for key in BUILD_SETTINGS:
        section, _, name = key.rpartition(".")
        if section and not (f"[{section}]" in CONFIG and f"{name} =" in CONFIG):
            missing.append(key)
        if not section and f"`{name}`" not in CONFIG:
            missing.append(key)
    assert missing == []


def test_the_config_file_refuses_what_is_only_an_option():
    """Options of one command (perturb's alpha, sae train's seed) are no settings of the build's config file."""
    assert not set(BUILD_SETTINGS) & set(COMMAND_SETTINGS)
    for key, label in [("perturb.alpha", "[perturb] alpha"), ("train.seed", "[train] seed"), ("quiet", "quiet"),
                       ("folders.cache", "[folders] cache")]:
        with pytest.raises(AtlasError) as e:
            check_setting(key, 1, "atlas.toml")
        assert str(e.value) == f"atlas.toml: {label}: unknown setting"


def test_option_defaults_are_the_dataclass_fields():
    """No option restates a default: each comes from the dataclass holding its setting (or from SETTINGS)."""
    from builder.models.pretrain import PretrainConfig
    from builder.pipeline.build import BuildConfig
    from builder.pipeline.perturbation.stats import PerturbConfig
    from builder.pipeline.sae.train import TrainConfig

    ctx = click.Context(cli)
    literal = [name for name, p in _options(cli)
               if isinstance(p.default, (int, float, str, Path, tuple)) and not isinstance(p.default, bool)]
    assert literal == []
    options = dict(_options(cli))

    def default(name):
        return options[name].get_default(ctx)

    assert default("atlas sae train --k") == TrainConfig.k and default("atlas sae train --lr") == TrainConfig.lr
    assert default("atlas perturb --alpha") == PerturbConfig.alpha
    assert default("atlas perturb --min-cells") == PerturbConfig.min_cells
    assert default("atlas pretrain --width") == PretrainConfig.width
    assert default("atlas extract --device") == BuildConfig.device
    # the build's own settings stay unset (None), so its config file can fill them; --help shows the default
    assert default("atlas build --seed") is None and default("atlas build --shard-cells") is None
    assert str(options["atlas build --shard-cells"].default) == str(BuildConfig.shard_cells)
    assert default_of("layers") is None and default_of("folders.cache") == Path(".atlas_cache")


def test_every_section_of_the_config_file_holds_the_defaults_of_its_options():
    import importlib

    from builder.options import DEFAULTS
    from builder.pipeline.build import SECTIONS, BuildConfig

    for section, cls in {"": BuildConfig, **SECTIONS}.items():
        module, name = DEFAULTS[section]
        assert getattr(importlib.import_module(f"builder.{module}"), name) is cls, section


def test_the_command_line_imports_no_pipeline_module_until_a_command_needs_one():
    import subprocess
    import sys

    code = ("import sys; from builder.cli import main\n"
            "try:\n    main(['validate', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('builder.pipeline', 'torch'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr
