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
    assert a.table("perturbation_response").column("perturbation").to_pylist() == ["TP53"]
    tf = a.table("tf_specificity").to_pylist()
    assert [(r["perturbation"], r["is_tf"], r["n_targets"], r["n_responding"], r["n_specific"]) for r in tf] == [
        ("TP53", True, 3, 2, 1)]
    assert "no intervals" in a.manifest["extras"]["perturbation_response"]["lacks"]
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


def geneformer_like_source(folder, n=6):
    """A small folder in the published Geneformer atlas' shapes (Biodyn-AI/geneformer-atlas public/data): the
    causal and perturbation files carry no layer, the annotations of some layers are absent, the tracking and
    cluster files are the raw analysis output. Written here; no third-party data is stored in the repository."""
    folder.mkdir()
    labels = {0: "Cell Cycle, Mitotic R-HSA-69278", 3: "pairwise_enrichment", 4: "transcription_factors"}
    for lay in range(3):
        feats = [{"i": i, "d": i == 5, "f": 0.01 * (i + 1), "ma": 0.02, "fc": 100 + i, "na": 2 if i in labels else 0,
                  "m": i % 2 if i < 5 else -1, "sv": i == 1,
                  "lb": (labels.get(i, "") if lay == 1 else ("DNA Repair (GO:0006281)" if i == 0 else "")),
                  "to": "Reactome" if i in labels else "none",
                  "tg": [{"n": f"GENE{i}{j}", "a": 2.0 - j / 10} for j in range(5)] if i < 5 else []}
                 for i in range(n)]
        write(folder, f"layer_{lay:02d}_features.json", feats)
        write(folder, f"layer_{lay:02d}_positions.json", [[i * 1.5, -i] for i in range(n)])
        write(folder, f"layer_{lay:02d}_celltypes.json", {
            "summary": {"n_cells": 2000, "tissues": ["immune", "kidney", "lung"], "n_cell_types": 40,
                        "n_features_with_enrichment": 3},
            "cell_type_meta": {"T cell": {"n": 500, "t": ["immune"]}},
            "features": {str(i): {"ct": [{"c": "T cell", "p": 1e-8, "or": 4.5, "n": 12},
                                         {"c": "B cell", "p": 0.01, "or": 1.5, "n": 3}],
                                  "ti": [{"t": "immune", "p": 1e-3, "or": 2.0}],
                                  "tc": [{"ct": "T cell", "t": "immune", "a": 3.2}]} for i in range(3)}})
    write(folder, "layer_01_annotations.json", {
        "0": {"genes": [{"n": "GENE00", "a": 2.0, "fc": 3}, {"n": "GENE01", "a": 1.9, "fc": 40}],
              "anns": [{"o": "Reactome", "t": "Cell Cycle, Mitotic R-HSA-69278", "p": 1e-9, "or": 12.0, "n": 4,
                        "g": ["GENE00", "GENE01"]}]},
        "3": {"genes": [], "anns": [{"o": "STRING_edges", "t": "pairwise_enrichment", "p": 0.005263, "or": 0, "n": 1, "g": []},
                                    {"o": "GO_BP", "t": "Translation (GO:0006412)", "p": 0.002, "or": 5.0, "n": 3, "g": ["GENE30"]}]},
        "4": {"genes": [], "anns": [{"o": "TRRUST_TF_enrichment", "t": "transcription_factors", "p": 0.01, "or": 3.0, "n": 3, "g": []}]}})
    write(folder, "global_summary.json", {"total_features": 3 * n, "n_layers": 3, "layers": [
        {"layer": lay, "alive": n - 1, "dead": 1, "annotated": 3 if lay == 1 else 0, "annotation_rate": 0.5,
         "n_modules": 2, "n_svd_aligned": 1, "n_novel": 4, "ontology_counts": {"GO_BP": 1, "KEGG": 0},
         "mean_feature_cosine": 0.03, "variance_explained": 0.84} for lay in range(3)]})
    write(folder, "modules.json", [{"layer": lay, "id": m, "n": 2, "features": [m, m + 2],
                                    "top_anns": [{"t": "transcription_factors", "c": 2}, {"t": "Translation", "c": 1}]}
                                   for lay in range(3) for m in range(2)])
    write(folder, "cross_layer_graph.json", {"L00_L01": {
        "summary": {"n_alive_a": 5, "n_alive_b": 5, "n_features_with_deps": 2, "mean_max_pmi": 6.6,
                    "median_max_pmi": 6.7, "n_highways": 2},
        "deps": [{"a": 0, "deps": [{"b": 1, "pmi": 11.1, "lb": "unlabeled"}, {"b": 2, "pmi": 8.0, "lb": "unlabeled"}]}]}})
    write(folder, "causal_patching.json", {
        "summary": {"n_features_with_activity": 2, "mean_specificity_ratio": 8.9, "frac_specific": 0.6},
        "features": [{"i": 0, "lb": labels[0], "na": 100, "af": 0.09, "tg": ["CENPE", "PLK1"], "td": -2.8, "od": -0.37, "sr": 7.63},
                     {"i": 1, "lb": "", "na": 3, "af": 0.01, "tg": ["MCM2"], "td": 0.13, "od": 0.09, "sr": 1.37}]})
    write(folder, "perturbation_response.json", {
        "summary": {"n_targets_processed": 2, "n_trrust_tfs": 1},
        "targets": [{"gene": "GATA1", "tf": True, "nk": 57, "nr": 20, "ns": 0,
                     "top": [{"i": 0, "es": 8.734, "lb": labels[0]}, {"i": 2, "es": 1.8, "lb": "unlabeled"}]},
                    {"gene": "AATF", "tf": True, "nk": 5, "nr": 0, "ns": 0, "top": []}]})
    write(folder, "svd_comparison.json", {
        "aggregate": {"total_features": 15, "total_svd_aligned": 3, "pct_novel": 99.7},
        "per_layer": {str(lay): {"svd_variance": 0.31, "sae_variance": 0.84, "gain": 2.67, "n_aligned": 1, "n_novel": 4}
                      for lay in range(3)}})
    write(folder, "cross_layer_tracking.json", {
        "config": {"match_threshold": 0.7, "high_match_threshold": 0.9, "n_layers": 3, "reference_layer": 0},
        "adjacent_persistence": [{"from_layer": lay, "to_layer": lay + 1, "n_matches": 2, "n_high_matches": 1,
                                  "persistence_rate": 0.4, "high_persistence_rate": 0.2, "mean_match_cosine": 0.8,
                                  "n_alive_from": 5} for lay in range(2)],
        "long_range_persistence": [{"target_layer": lay, "n_matches": 5 - lay, "persistence_rate": 1.0 / (lay + 1),
                                    "mean_cosine": 0.9} for lay in range(3)],
        "lifecycle_summary": {"n_ref_features": 6, "n_transient": 5, "n_moderate": 1, "n_persistent": 0,
                              "span_histogram": {"1": 5, "2": 1}},
        "persistence_vs_biology": {"transient": {"n_features": 5, "annotation_rate": 0.6, "mean_enrichments": 5.4}},
        "timestamp": "2026-02-26 21:35:56"})
    write(folder, "novel_clusters.json", {"0": {
        "summary": {"n_annotated": 2, "n_unannotated": 3, "n_novel_clusters": 1},
        "clusters": [{"cluster_id": 0, "n_features": 2, "features": [1, 2], "n_unique_genes": 9,
                      "n_consensus_genes": 2, "consensus_genes": ["RPL13", "RPS3"], "mean_jaccard": 0.15,
                      "mean_activation_freq": 0.0075}]}})
    return folder


def test_geneformer_shapes_import_every_file_kind(tmp_path):
    src = geneformer_like_source(tmp_path / "src")
    out, report = import_biodyn(src, tmp_path / "out", "gf")
    a = read_atlas(out)
    assert validate(out) == []
    causal = a.table("causal_summary").to_pylist()
    # No layer in the file: the layer whose labels match every record (layer 1 here, as layer 11 there).
    assert {r["layer"] for r in causal} == {1} and [r["n_cells"] for r in causal] == [None, None]
    # The published ratio lands in specificity_ratio; the AUC, null, p and q it lacks stay empty.
    assert all(r["specificity_ratio"] is not None and r["specificity"] is None and r["p"] is None for r in causal)
    assert all(r["method"].startswith("published") for r in causal) and a.table("causal_effects").num_rows == 0
    pert = a.table("perturbation_response").to_pylist()
    assert {r["layer"] for r in pert} == {1} and [r["perturbation"] for r in pert] == ["GATA1", "GATA1"]
    assert all(r["p"] is None and r["ci_lo"] is None for r in pert)
    assert pert[1]["label"] is None  # "unlabeled" is no label
    assert a.table("svd_comparison").num_rows == 15 and a.table("persistence").num_rows == 5
    assert a.table("novel_clusters").column("consensus_genes").to_pylist() == ['["RPL13", "RPS3"]']
    assert a.manifest["extras"]["persistence"]["lifecycle_summary"]["n_transient"] == 5
    assert a.manifest["extras"]["novel_clusters"]["0"]["n_novel_clusters"] == 1
    feats = {(r["layer"], r["feature"]): r for r in a.table("features").to_pylist()}
    # Placeholders are not labels: a better real term takes over, or the feature stays unlabelled.
    assert feats[(1, 3)]["label"] == "Translation (GO:0006412)" and feats[(1, 3)]["label_database"] == "GO_BP"
    assert feats[(1, 4)]["label"] is None
    assert a.table("modules").column("label").to_pylist() == ["Translation"] * 6
    assert a.table("edges").num_rows == 2
    assert "layer_00_annotations.json: absent" in "\n".join(report.skipped)


@pytest.mark.parametrize("name, content, message", [
    ("causal_patching.json", {"features": [{"lb": "x"}]}, "causal_patching.json: feature record 0: missing field 'i'"),
    ("causal_patching.json", {"features": [{"i": 0, "td": "big", "od": 1, "sr": 1}]}, "field 'td' is \"big\", expected a number"),
    ("causal_patching.json", {"layer": "eleven", "features": []}, "field 'layer' is \"eleven\", expected an integer"),
    ("perturbation_response.json", {"targets": [{"gene": "X", "top": [{"es": 1}]}]}, "target record 0 (X): top entry 1: missing field 'i'"),
    ("perturbation_response.json", {"targets": {"gene": "X"}}, "field 'targets' is"),
    ("svd_comparison.json", {"per_layer": {"zero": {}}}, "svd_comparison.json: per_layer entry 'zero'"),
    ("cross_layer_tracking.json", {"adjacent_persistence": [1, 2]}, "field 'adjacent_persistence': expected an array of objects"),
    ("novel_clusters.json", {"0": {"clusters": {"a": 1}}}, "layer 0: field 'clusters': expected an array of objects"),
    ("cross_layer_graph.json", {"L00_L01": {"deps": [{"deps": [{"b": 1}]}]}}, "cross_layer_graph.json: unexpected content (KeyError"),
    ("modules.json", [{"layer": 0, "id": 0, "features": [1], "top_anns": "x"}], None),
])
def test_unexpected_content_is_one_line_naming_file_and_field(tmp_path, name, content, message):
    src = geneformer_like_source(tmp_path / "src")
    write(src, name, content)
    if message is None:  # tolerated: a malformed optional list is ignored
        import_biodyn(src, tmp_path / "out", "gf")
        return
    with pytest.raises(AtlasError) as e:
        import_biodyn(src, tmp_path / "out", "gf")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "out").exists()


def mirror_source(folder, n_layers=18, n=8, causal_genes="layer 11"):
    """A folder like the published Geneformer atlas' mirror: every layer_NN_features.json (each layer with its own
    top genes), the annotation files of layers 0-3 and 11 absent, and causal_patching.json and
    perturbation_response.json without a layer field. As there, the causal labels are not the features' labels
    (another term of the feature), and the causal top genes begin with the feature's top genes (causal_genes
    "layer 11"; "none of them": genes no feature has). Feature 2 of layer 11 is labelled with the placeholder
    'transcription_factors', which the atlas table cannot hold as a label without the annotation file."""
    folder.mkdir()
    def genes(lay, i):
        return [f"G{lay}x{i}x{j}" for j in range(5)]
    def label(lay, i):
        return "transcription_factors" if (lay, i) == (11, 2) else (f"Term {lay}-{i}" if i % 2 == 0 else "")
    for lay in range(n_layers):
        write(folder, f"layer_{lay:02d}_features.json", [
            {"i": i, "d": False, "f": 0.01, "ma": 0.1, "fc": 10 + i, "na": 1 if i % 2 == 0 else 0, "m": -1, "sv": False,
             "lb": label(lay, i), "to": "GO_BP" if i % 2 == 0 else "none",
             "tg": [{"n": g, "a": 5.0 - j} for j, g in enumerate(genes(lay, i))]} for i in range(n)])
        if lay > 3 and lay != 11:
            write(folder, f"layer_{lay:02d}_annotations.json", {
                str(i): {"genes": [{"n": g, "a": 5.0 - j, "fc": 3} for j, g in enumerate(genes(lay, i))],
                         "anns": [{"o": "GO_BP", "t": label(lay, i), "p": 0.001, "or": 4.0, "n": 2, "g": genes(lay, i)[:2]}]}
                for i in range(0, n, 2)})
    top = (lambda i: genes(11, i) + ["EXTRA1", "EXTRA2"]) if causal_genes == "layer 11" else (lambda i: [f"NOPE{i}"])
    write(folder, "causal_patching.json", {
        "summary": {"n_features_with_activity": 3, "frac_specific": 0.6},
        "features": [{"i": i, "lb": f"Another term {i} (GO:{i:07d})", "na": 2, "af": 0.01, "tg": top(i),
                      "td": -0.2, "od": -0.01, "sr": 20.0} for i in (0, 2, 5)]})
    write(folder, "perturbation_response.json", {
        "summary": {"n_targets_processed": 2, "n_trrust_tfs": 1, "n_tfs_with_specific_response": 0},
        "targets": [{"gene": "GATA1", "tf": True, "nk": 5, "nr": 3, "ns": 0,
                     "top": [{"i": i, "es": 1.0 + i, "lb": label(11, i) or "unlabeled"} for i in (0, 1, 2, 4)]}]})
    write(folder, "svd_comparison.json", {"aggregate": {}, "per_layer": {str(lay): {"gain": 1.0} for lay in range(n_layers)}})
    return folder


def test_geneformer_mirror_imports_with_the_intervention_layer_from_its_features(tmp_path, capsys):
    from test_cli import run

    src = mirror_source(tmp_path / "src")
    code, out, err = run(["import", "biodyn", str(src), "--atlas", "gf", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0 and err == "", err
    atlas = tmp_path / "data" / "gf"
    assert validate(atlas) == []
    a = read_atlas(atlas)
    # The top genes decide the causal file (its labels name other terms); the labels decide the perturbation file,
    # the placeholder included, although layer 11 has no annotation file.
    assert {(r["layer"], r["feature"]) for r in a.table("causal_summary").to_pylist()} == {(11, 0), (11, 2), (11, 5)}
    assert {r["layer"] for r in a.table("perturbation_response").to_pylist()} == {11}
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert ("note: causal_patching.json: no 'layer' field; layer 11, the only layer whose top genes "
            "(layer_11_features.json) match its 3 record(s)") in notes
    assert ("note: perturbation_response.json: no 'layer' field; layer 11, the only layer whose labels "
            "(layer_11_features.json) match its 4 record(s)") in notes
    assert "skipped: layer_11_annotations.json: absent, layer 11 has no enrichments" in out
    extras = a.manifest["extras"]
    assert extras["causal_summary"]["layer"] == 11 and "top genes" in extras["causal_summary"]["layer_source"]
    assert a.manifest["source"]["notes"] == [n[len("note: "):] for n in notes if "'layer'" in n]


def test_layers_without_their_annotation_file_are_recorded_as_absent(tmp_path):
    """The mirror lacks the annotation files of layers 0-3 and 11: those layers have no tested count and no rate
    (nothing was tested that the atlas can show), the manifest lists them with the count global_summary.json gives,
    and a labelled feature keeps the database its features file names."""
    src = mirror_source(tmp_path / "src")
    write(src, "global_summary.json", {"layers": [{"layer": lay, "alive": 8, "annotated": 2600 + lay if lay in (0, 1, 2, 3, 11)
                                                   else 4} for lay in range(18)]})
    out, report = import_biodyn(src, tmp_path / "gf", "gf", None, "geneformer")
    a = read_atlas(out)
    layers = {r["layer"]: r for r in a.table("layers").to_pylist()}
    for lay in (0, 1, 2, 3, 11):
        assert layers[lay]["tested"] is None and layers[lay]["annotated_rate"] is None and layers[lay]["annotated_rate_lo"] is None
    assert layers[5]["tested"] == 8 and layers[5]["annotated"] == 4 and layers[5]["annotated_rate"] == 0.5
    absent = a.manifest["extras"]["annotations_absent"]
    assert absent["layers"] == [0, 1, 2, 3, 11] and absent["files"][0] == "layer_00_annotations.json"
    assert absent["published_annotated"] == {"0": 2600, "1": 2601, "2": 2602, "3": 2603, "11": 2611}
    assert absent["published_source"] == "global_summary.json"
    t = a.manifest["totals"]  # the atlas-wide rate counts only the layers that were tested
    assert (t["tested"], t["annotated"]) == (13 * 8, 13 * 4)
    row = a.table("features").filter(pc.and_(pc.equal(a.table("features")["layer"], 0), pc.equal(a.table("features")["feature"], 0))).to_pylist()[0]
    assert (row["label"], row["label_database"]) == ("Term 0-0", "GO_BP")
    assert not any("global_summary.json: layer 0 says annotated" in line for line in report.skipped)  # not a conflict
    assert a.manifest["atlas"]["title"] == "Geneformer feature atlas (imported)" and a.manifest["sae"]["n_features"] == 8


def test_geneformer_mirror_falls_back_to_the_documented_layer(tmp_path):
    src = mirror_source(tmp_path / "src", causal_genes="none of them")
    write(src, "perturbation_response.json", {"targets": [{"gene": "GATA1", "top": [{"i": 1, "es": 2.0, "lb": "Nowhere"}]}]})
    out, report = import_biodyn(src, tmp_path / "out", "gf")
    assert validate(out) == []
    a = read_atlas(out)
    assert {r["layer"] for r in a.table("causal_summary").to_pylist()} == {11}
    assert {r["layer"] for r in a.table("perturbation_response").to_pylist()} == {11}
    why = "the top genes match no layer; the labels match no layer"
    assert (f"causal_patching.json: no 'layer' field; layer 11, documented by the study of the Geneformer atlas "
            f"({why})") in report.notes
    assert a.manifest["extras"]["causal_summary"]["layer_source"] == (
        f"no 'layer' field; layer 11, documented by the study of the Geneformer atlas ({why})")


@pytest.mark.parametrize("how", ["17 layers", "--model scgpt"])
def test_an_undecidable_layer_elsewhere_is_imported_as_unknown(tmp_path, capsys, how):
    from test_cli import run
    from builder.site.render import render
    from builder.site.shards import build_shards

    src = mirror_source(tmp_path / "src", n_layers=17 if how == "17 layers" else 18, causal_genes="none of them")
    write(src, "causal_patching.json", {"features": [{"i": 0, "lb": "No such label", "tg": ["NOPE"], "td": 1, "od": 1, "sr": 2},
                                                     {"i": 99, "lb": "", "td": 1, "od": 1, "sr": 3}]})
    model = ["--model", "scgpt"] if how == "--model scgpt" else []
    code, out, err = run(["import", "biodyn", str(src), "--atlas", "x", "--data-dir", str(tmp_path / "data"), *model], capsys)
    assert code == 0 and err == "", err
    atlas = tmp_path / "data" / "x"
    assert validate(atlas) == []
    a = read_atlas(atlas)
    assert [(r["layer"], r["feature"]) for r in a.table("causal_summary").to_pylist()] == [(None, 0)]
    assert ("note: causal_patching.json: no 'layer' field; imported with the layer unknown (the top genes match "
            "no layer; the labels match no layer)") in out
    assert "skipped: causal_patching.json: 1 record(s) name a feature beyond every layer (first 99), left out" in out
    assert a.manifest["extras"]["causal_summary"]["layer"] is None
    # The site shows the feature number without a link to a layer.
    causal = build_shards(a)["comparisons.json"]["causal"]
    assert "layer" not in causal and causal["feature"] == [0]  # a field null on every row is left out
    render(atlas, tmp_path / "site")


def test_a_stated_layer_without_layer_data_is_kept_as_unknown(tmp_path):
    src = geneformer_like_source(tmp_path / "src")
    write(src, "causal_patching.json", {"layer": 7, "features": [{"i": 0, "td": 1, "od": 1, "sr": 2}]})
    out, report = import_biodyn(src, tmp_path / "out", "gf")
    assert validate(out) == []
    assert read_atlas(out).table("causal_summary").column("layer").to_pylist() == [None]
    assert "causal_patching.json: its layer 7 has no layer data; imported with the layer unknown" in report.notes


def test_global_files_naming_missing_layers_or_features_are_trimmed_and_reported(tmp_path):
    src = geneformer_like_source(tmp_path / "src")
    write(src, "svd_comparison.json", {"per_layer": {"0": {"gain": 1.0}, "9": {"gain": 2.0}}})
    write(src, "novel_clusters.json", {"9": {"clusters": [{"cluster_id": 0}]}})
    write(src, "modules.json", [{"layer": 0, "id": 0, "features": [0, 1, 60]}])
    write(src, "cross_layer_graph.json", {"L00_L01": {"edges": [{"a": 0, "b": 1, "pmi": 2.0}, {"a": 0, "b": 60, "pmi": 1.0}]},
                                          "L01_L09": {"edges": [{"a": 0, "b": 1, "pmi": 2.0}]}})
    out, report = import_biodyn(src, tmp_path / "out", "gf")
    assert validate(out) == []
    a = read_atlas(out)
    assert a.table("svd_comparison").column("layer").to_pylist() == [0]
    assert a.table("module_members").column("feature").to_pylist() == [0, 1]
    assert a.table("edges").num_rows == 1 and a.table("novel_clusters").num_rows == 0
    text = "\n".join(report.skipped)
    assert "svd_comparison.json: layer 9 has no layer data, ignored" in text
    assert "modules.json: module 0 of layer 0 lists 1 feature(s) that layer does not have (first 60), left out" in text
    assert "cross_layer_graph.json: entry 'L01_L09' names a layer without layer data, ignored" in text
    assert "cross_layer_graph.json: entry 'L00_L01': 1 edge(s) name a feature its layers do not have" in text
    assert "novel_clusters.json: entry '9' is not a layer with layer data, ignored" in text


def test_feature_ids_must_number_a_layer_from_zero(tmp_path):
    src = tiny_source(tmp_path / "src")
    write(src, "layer_01_features.json", [{"i": 5, "d": False, "f": 0.1, "ma": 0.1, "fc": 1}])
    with pytest.raises(AtlasError, match=r"layer_01_features.json: feature record 0: field 'i' is 5, expected 0 to 0"):
        import_biodyn(src, tmp_path / "out", "x")
