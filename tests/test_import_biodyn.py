import json

import pyarrow.compute as pc
import pytest

from builder.atlas.format import read_atlas, validate
from builder.errors import AtlasError
from builder.atlas.import_biodyn import import_biodyn

from conftest import SCGPT_SRC


def test_scgpt_counts_equal_the_source(scgpt_atlas):
    a = read_atlas(scgpt_atlas)
    layers = a.table("layers")
    assert layers.num_rows == 12
    assert pc.sum(layers["n_features"]).as_py() == 24576
    assert pc.sum(layers["alive"]).as_py() == 24527
    assert pc.sum(layers["annotated"]).as_py() == 7595
    assert a.table("modules").num_rows == 76
    summary = json.loads((SCGPT_SRC / "global_summary.json").read_text())
    assert [r["annotated"] for r in layers.to_pylist()] == [s["annotated"] for s in summary["layers"]]
    assert [r["n_modules"] for r in layers.to_pylist()] == [s["n_modules"] for s in summary["layers"]]
    assert validate(scgpt_atlas) == []


def test_scgpt_values_follow_the_source(scgpt_atlas):
    a = read_atlas(scgpt_atlas)
    src = json.loads((SCGPT_SRC / "layer_07_features.json").read_text())
    f917 = next(f for f in src if f["i"] == 917)
    row = a.table("features").filter(pc.and_(pc.equal(a.table("features")["layer"], 7),
                                             pc.equal(a.table("features")["feature"], 917))).to_pylist()[0]
    assert row["label"] == f917["lb"] and row["fire_count"] == f917["fc"] and row["frequency"] == f917["f"]
    genes = a.table("feature_genes").filter(pc.and_(pc.equal(a.table("feature_genes")["layer"], 7),
                                                    pc.equal(a.table("feature_genes")["feature"], 917)))
    anns = json.loads((SCGPT_SRC / "layer_07_annotations.json").read_text())["917"]
    assert genes.column("gene").to_pylist() == [g["n"] for g in anns["genes"]]
    # Infinity odds ratios in the source survive as infinity (the predecessor's site failed on them).
    ct = a.table("celltypes")
    assert pc.sum(pc.is_inf(ct["odds_ratio"])).as_py() > 0


def write(folder, name, obj):
    (folder / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))


def tiny_source(folder, n=3):
    folder.mkdir()
    feats = [{"i": i, "d": i == 2, "f": 0.01 * i, "ma": 0.5, "fc": 10 * i, "na": 1 if i == 0 else 0, "m": 0 if i < 2 else -1,
              "sv": False, "lb": "Term A" if i == 0 else "", "to": "GO_BP" if i == 0 else "none",
              "tg": [{"n": f"G{i}{j}", "a": 1.0 - j / 10} for j in range(5)]} for i in range(n)]
    write(folder, "layer_00_features.json", feats)
    write(folder, "layer_01_features.json", feats)
    write(folder, "layer_00_annotations.json",
          '{"0": {"genes": [{"n": "G00", "a": 1.0, "fc": 3}], "anns": [{"o": "GO_BP", "t": "Term A", "p": 0.001, "or": Infinity, "n": 2, "g": ["G00", "G01"]}]}}')
    return folder


def test_tolerates_quirks_and_reports_what_was_skipped(tmp_path):
    src = tiny_source(tmp_path / "src")
    write(src, "gene_index.json", {})
    write(src, "notes.txt", "hello")
    write(src, "svd_comparison.json", {"aggregate": {"total_svd_aligned": 3}, "per_layer": {"0": {"svd_variance": 0.5, "n_aligned": 2}}})
    write(src, "cross_layer_tracking.json", {"adjacent_persistence": [{"from": 0, "to": 1, "jaccard": 0.3, "pairs": [1, 2]}]})
    write(src, "novel_clusters.json", {"0": {"summary": {}, "clusters": [{"id": 0, "size": 5, "genes": ["A"]}]}})
    write(src, "perturbation_response.json", {"summary": {"n": 1}, "targets": [{"gene": "TP53", "tf": True, "nk": 3, "nr": 2, "ns": 1, "top": [{"i": 1, "es": 0.4, "lb": ""}]}]})
    out, report = import_biodyn(src, tmp_path / "out", "tiny")
    a = read_atlas(out)
    assert a.table("features").num_rows == 6
    assert a.table("layers").column("alive").to_pylist() == [2, 2]
    assert a.table("layers").column("annotated").to_pylist() == [1, 0]
    assert a.table("enrichments").column("odds_ratio").to_pylist() == [float("inf")]
    assert a.table("enrichments").column("q").to_pylist() == [0.001]
    assert a.table("svd_comparison").num_rows == 2
    assert a.table("persistence").column("jaccard").to_pylist() == [0.3]
    assert a.table("novel_clusters").column("size").to_pylist() == [5]
    assert a.table("perturbation").column("gene").to_pylist() == ["TP53"]
    assert a.manifest["model"]["family"] == "geneformer"
    text = "\n".join(report.skipped)
    assert "gene_index.json: not imported" in text and "notes.txt: not part of the format" in text
    assert "layer_01_annotations.json: absent" in text and "modules.json: absent" in text
    assert report.nonstandard_numbers == {"layer_00_annotations.json": 1}


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no such source folder"),
    (lambda d: d.mkdir(), "no layer_NN_features.json file"),
    (lambda d: (tiny_source(d), write(d, "layer_01_features.json", "[{\"i\": 0,")), "layer_01_features.json: not valid JSON (line 1"),
    (lambda d: (tiny_source(d), write(d, "layer_01_features.json", [{"i": "zero"}])), "layer_01_features.json: feature record 0: field 'i' is \"zero\", expected an integer"),
    (lambda d: (tiny_source(d), write(d, "layer_01_features.json", [{"i": 0, "d": False}])), "feature record 0: missing field 'f'"),
    (lambda d: (tiny_source(d), write(d, "modules.json", {"a": 1})), "modules.json: expected a JSON array"),
    (lambda d: (tiny_source(d), write(d, "layer_00_positions.json", [[0, 1]])), "1 positions for 3 features"),
])
def test_bad_source_is_refused_with_one_line_and_nothing_written(tmp_path, setup, message):
    src = tmp_path / "src"
    setup(src)
    with pytest.raises(AtlasError, match=None) as e:
        import_biodyn(src, tmp_path / "data" / "x", "x")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "data" / "x").exists()
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())
