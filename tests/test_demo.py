"""The demo builds: `atlas build --model scgpt|geneformer` alone, from the bundled checkpoints and labelled cells.

They say what they are (one line on the command line; the overview and a model card on the site), their bundled
inputs are checked by checksum, and their default names never replace an atlas that came from elsewhere."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder.atlas.format import read_atlas, validate, write_atlas
from builder.atlas.synthetic import make_synthetic
from builder.errors import AtlasError
from builder.models import bundled
from builder.pipeline.build import BuildConfig
from builder.pipeline.targets import check_provenance
from builder.site.render import card_html
from test_cli import run

FAMILIES = ["scgpt", "geneformer"]


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_saes_leave_their_random_start_and_say_how_they_trained(demo_build, family):
    """Issue 26: decoders that keep cosine 0.96 with their random start describe the start, not the model. Every
    layer's SAE must move its decoder rows away (mean cosine with the start below 0.9), each layer from its own
    start (no two layers share feature i's direction), and the atlas records how training went."""
    import numpy as np

    from builder.pipeline.sae.topk import load_sae

    atlas = read_atlas(demo_build.data / f"{family}-demo")
    layers = atlas.table("layers").to_pandas()
    assert (layers["decoder_init_cosine"] < 0.9).all(), layers[["layer", "decoder_init_cosine"]]
    training = atlas.manifest["sae"]["training"]
    assert sorted(map(int, training)) == layers["layer"].tolist()
    for L, t in training.items():
        assert t["steps"] == layers.set_index("layer").loc[int(L), "sae_steps"] and t["curve"], t
        assert t["curve"][-1]["val_loss"] < t["curve"][0]["val_loss"]
        assert t["stopped"].startswith(("converged", "cap"))
    cache = demo_build.root / "cache"
    starts = [load_sae(cache / f["cache_entry"].replace("/sae", "/random_dictionary")).W_dec.detach().numpy()
              for _, f in sorted(atlas.manifest["sae"]["files"].items())]
    for a, b in zip(starts, starts[1:]):  # feature i of one layer is not feature i of the next
        assert np.abs((a * b).sum(1)).mean() < 0.3
    heldout = atlas.manifest["dataset"]["heldout_source"]
    assert heldout["kind"] == "the model's held-out cells" and heldout["in_this_data"] > 0
    assert heldout["in_this_data"] + heldout["model_training_cells_in_data"] == atlas.manifest["dataset"]["cells"]


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_build_says_what_it_is_and_carries_the_card(demo_build, family):
    name = f"{family}-demo"
    first = demo_build.printed[family].splitlines()[0]
    assert first.startswith(f"demo: building {name} from the bundled {family} demo model (4 layers x 128, pretrained "
                            "by this project on 630 cells of pbmc68k_counts.h5ad)"), first
    atlas = read_atlas(demo_build.data / name)
    assert validate(atlas.path) == []
    m = atlas.manifest
    assert m["model"]["pretraining"]["data"]["train_cells"] == 630 and m["model"]["pretraining"]["trained"] is True
    assert m["model"]["card"] == (bundled.CHECKPOINTS[family] / "MODEL_CARD.md").read_text()
    assert m["dataset"]["cell_type_column"] == "cell_type" and m["sae"]["source"] == "trained by atlas build"
    assert atlas.table("celltypes").num_rows > 0  # the labelled cells give cell-type tests
    card = demo_build.site / name / "model"
    html = (card / "index.html").read_text()
    assert "Held-out masked prediction" in html and '<img src="loss_curve.svg"' in html and "<table>" in html
    ET.fromstring((card / "loss_curve.svg").read_text())  # well-formed SVG, drawn from the recorded curve
    boot = (demo_build.site / name / "index.html").read_text()
    assert "Held-out masked prediction" not in boot  # the card is not inlined into the first paint


def test_overview_names_the_demo_model_and_links_its_card(page, server):
    page.goto(server + "scgpt-demo/#/")
    page.locator(".demo-model").wait_for()
    text = page.locator(".demo-model").inner_text()
    assert "A small demo model" in text and "pretrained by this project on 630 cells of pbmc68k_counts.h5ad" in text
    assert "atlas build --model scgpt --checkpoint DIR --data FILE.h5ad" in text
    page.click(".demo-model a:text-is('Model card')")
    page.wait_for_url("**/scgpt-demo/model/")
    assert "scGPT demo model, pretrained" in page.locator("h1").inner_text()
    assert page.evaluate("document.querySelector('img').naturalWidth") > 0
    assert page.problems == []


def test_card_html_shows_html_as_text_and_drops_script_links():
    html = card_html("# Card\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=alert(2)>\n")
    assert "<script" not in html and "<img src=x" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def inputs_copy(tmp_path: Path, monkeypatch) -> Path:
    """A working folder whose atlas_data/inputs is a copy of the bundled inputs, to damage."""
    shutil.copytree(bundled.INPUTS, tmp_path / "atlas_data" / "inputs")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "atlas_data" / "inputs"


@pytest.mark.parametrize("damage, says", [
    (lambda p: p.unlink(), "bundled file missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "bundled file damaged"),
])
def test_a_damaged_bundled_file_is_named_with_its_remedy(tmp_path, monkeypatch, capsys, damage, says):
    inputs = inputs_copy(tmp_path, monkeypatch)
    damage(inputs / "models" / "scgpt" / "best_model.pt")
    code, out, err = run(["build", "--model", "scgpt"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert says in err and "git checkout -- atlas_data/inputs/models/scgpt/best_model.pt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas_data"]  # no cache, no site
    assert sorted(p.name for p in (tmp_path / "atlas_data").iterdir()) == ["inputs"]


def test_the_demo_name_never_replaces_an_import(tmp_path, monkeypatch, capsys):
    inputs_copy(tmp_path, monkeypatch)
    manifest, tables = make_synthetic(2, 16, seed=3)
    manifest["source"] = {"kind": "biodyn-json", "path": "/data/published-atlas"}
    write_atlas(tmp_path / "atlas_data" / "scgpt-demo", manifest, tables)
    before = (tmp_path / "atlas_data" / "scgpt-demo" / "manifest.json").read_bytes()
    code, out, err = run(["build", "--model", "scgpt"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "atlas_data/scgpt-demo: holds an atlas imported from /data/published-atlas" in err and "--replace" in err
    assert (tmp_path / "atlas_data" / "scgpt-demo" / "manifest.json").read_bytes() == before
    assert not (tmp_path / ".atlas_cache").exists()


def test_a_default_name_replaces_only_a_build_of_the_same_checkpoint(demo_build, tmp_path):
    cfg = BuildConfig(model="scgpt", checkpoint=str(bundled.CHECKPOINTS["scgpt"]))
    check_provenance(cfg, "scgpt-demo", demo_build.data)  # the same checkpoint: replaced without a word
    other = BuildConfig(model="geneformer", checkpoint=str(bundled.CHECKPOINTS["geneformer"]))
    with pytest.raises(AtlasError, match="holds an atlas built from .*not from the checkpoint"):
        check_provenance(other, "scgpt-demo", demo_build.data)
    check_provenance(other, "no-such-atlas", demo_build.data)


def test_bundled_inputs_are_found_from_another_folder(tmp_path):
    code = ("import sys; sys.path.insert(0, %r); from builder.models import bundled; "
            "print(bundled.INPUTS.is_absolute(), bundled.DATA.is_file())" % str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.stdout.split() == ["True", "True"], out.stderr
