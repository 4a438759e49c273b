import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builder.atlas.format import SCHEMA, SCHEMA_VERSION, read_atlas, validate, write_atlas
from builder.errors import AtlasError
from builder.atlas.synthetic import make_synthetic


@pytest.fixture
def atlas(tmp_path):
    manifest, tables = make_synthetic(2, 40, seed=3)
    return write_atlas(tmp_path / "a", manifest, tables)


def test_roundtrip_keeps_rows_and_types(atlas):
    assert validate(atlas.path) == []
    again = read_atlas(atlas.path)
    assert again.manifest["schema_version"] == SCHEMA_VERSION
    for name in SCHEMA:
        if again.has(name):
            assert again.table(name).schema.equals(SCHEMA[name].schema(), check_metadata=False) or SCHEMA[name].free_form
    assert again.table("features").num_rows == 80
    assert again.manifest["tables"]["features"]["rows"] == 80


def test_write_is_deterministic(tmp_path):
    m, t = make_synthetic(2, 40, seed=3)
    a = write_atlas(tmp_path / "a", m, t)
    b = write_atlas(tmp_path / "b", m, t)
    for f in sorted(p.name for p in a.path.iterdir()):
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f


def test_validate_reports_every_problem(atlas):
    p = atlas.path
    t = pq.read_table(p / "features.parquet")
    t = t.set_column(t.column_names.index("frequency"), "frequency", pa.array([str(v) for v in t.column("frequency").to_pylist()]))
    pq.write_table(t, p / "features.parquet")
    (p / "modules.parquet").unlink()
    problems = validate(p)
    assert any("features.parquet: column 'frequency' has type string, expected double" in x for x in problems)
    assert any("modules.parquet: listed in the manifest but missing" in x for x in problems)
    assert len(problems) >= 2


def test_validate_catches_orphans_duplicates_and_ranges(atlas):
    p = atlas.path
    g = pq.read_table(p / "feature_genes.parquet")
    extra = pa.Table.from_pylist([{**g.slice(0, 1).to_pylist()[0], "feature": 999}], schema=g.schema)
    pq.write_table(pa.concat_tables([g, g.slice(0, 1), extra]), p / "feature_genes.parquet")
    e = pq.read_table(p / "enrichments.parquet")
    q = e.column("q").to_pylist()
    q[0] = 1.5
    pq.write_table(e.set_column(e.column_names.index("q"), "q", pa.array(q)), p / "enrichments.parquet")
    problems = "\n".join(validate(p))
    assert "duplicate key" in problems
    assert "feature_genes.parquet: column 'feature' holds feature 999 on layer 0 (n_features 40), outside" in problems
    assert "column 'q' has 1 value(s) outside [0, 1], first 1.5" in problems
    assert "rows, manifest says" in problems


def test_unknown_schema_version_is_refused(atlas):
    mf = atlas.path / "manifest.json"
    m = json.loads(mf.read_text())
    m["schema_version"] = 99
    mf.write_text(json.dumps(m))
    assert validate(atlas.path) == [f"{mf}: unknown schema_version 99 (this version of feature-atlas reads 1)"]
    with pytest.raises(AtlasError, match="unknown schema_version 99"):
        read_atlas(atlas.path)


def test_failed_write_leaves_previous_atlas(atlas):
    before = {f.name: f.read_bytes() for f in atlas.path.iterdir()}
    m, t = make_synthetic(2, 40, seed=3)
    bad = t["features"].set_column(3, "frequency", pa.array([2.0] * t["features"].num_rows))
    with pytest.raises(AtlasError, match="refusing to write"):
        write_atlas(atlas.path, m, {**t, "features": bad})
    assert {f.name: f.read_bytes() for f in atlas.path.iterdir()} == before
    assert not [x for x in atlas.path.parent.iterdir() if x.name.startswith(".")]


def test_missing_manifest(tmp_path):
    (tmp_path / "x").mkdir()
    assert validate(tmp_path / "x") == [f"{tmp_path / 'x' / 'manifest.json'}: missing (an atlas folder needs manifest.json)"]
    shutil.rmtree(tmp_path / "x")
    assert validate(tmp_path / "x") == [f"{tmp_path / 'x'}: no such atlas folder"]
