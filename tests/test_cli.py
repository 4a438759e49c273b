import json
import shutil

import pytest

from builder.cli import main
from builder.atlas.format import write_atlas
from builder.atlas.synthetic import make_synthetic


def run(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir(tmp_path):
    m, t = make_synthetic(2, 32, seed=5)
    write_atlas(tmp_path / "atlas_data" / "demo", m, t)
    return tmp_path / "atlas_data"


def test_render_default_renders_every_atlas(data_dir, tmp_path, capsys):
    code, out, err = run(["render", "--data-dir", str(data_dir), "--site", str(tmp_path / "site")], capsys)
    assert code == 0, err
    assert out.startswith("rendered demo -> ") and (tmp_path / "site/demo/index.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["render", "--atlas", "nope"], "error: atlas 'nope' not found in {data} (available: demo)"),
    (["import", "biodyn", "{tmp}/missing", "--atlas", "x"],
     "error: Invalid value for 'SRC': Directory '{tmp}/missing' does not exist."),
    (["import", "biodyn", "{tmp}", "--atlas", "../evil"],
     "error: Invalid value for '--atlas': '../evil' must be letters, digits"),
    (["validate", "{tmp}/none"], "error: {tmp}/none: no such atlas folder"),
    (["render", "--bogus"], "error: No such option"),
    (["serve", "--site", "{tmp}/nosite"], "error: {tmp}/nosite: no rendered site (run `atlas render` first)"),
])
def test_bad_input_gives_one_line_and_status_2(data_dir, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, data=data_dir) for a in args]
    if args[0] == "render":
        args += ["--data-dir", str(data_dir), "--site", str(tmp_path / "site")]
    code, out, err = run(args, capsys)
    assert code == 2
    assert err.startswith(message.format(tmp=tmp_path, data=data_dir))
    assert err.count("\n") == 1, err
    assert not (tmp_path / "site").exists()


def test_validate_lists_each_problem(data_dir, capsys):
    (data_dir / "demo" / "edges.parquet").unlink()
    (data_dir / "demo" / "modules.parquet").write_text("not parquet")
    code, out, err = run(["validate", str(data_dir / "demo")], capsys)
    assert code == 2
    lines = err.strip().split("\n")
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    code, out, err = run(["validate", str(data_dir.parent / "atlas_data" / "demo")], capsys)
    assert code == 2


def test_unknown_schema_version_and_unknown_atlas(data_dir, tmp_path, capsys):
    mf = data_dir / "demo" / "manifest.json"
    mf.write_text(json.dumps({**json.loads(mf.read_text()), "schema_version": 7}))
    code, out, err = run(["render", "--data-dir", str(data_dir), "--site", str(tmp_path / "site")], capsys)
    assert code == 2 and "unknown schema_version 7" in err and err.count("\n") == 1


def test_import_then_render(tmp_path, capsys):
    from conftest import SCGPT_SRC
    if not SCGPT_SRC.is_dir():
        pytest.skip(f"reference data not found at {SCGPT_SRC}")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("layer_00_features.json", "layer_00_annotations.json", "modules.json"):
        shutil.copy(SCGPT_SRC / name, src / name)
    code, out, err = run(["import", "biodyn", str(src), "--atlas", "one", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert "1 layers, 2048 features, 2027 alive, 662 annotated" in out
    assert "skipped: modules.json: module" in out  # modules of the layers that were not copied
    code, out, err = run(["render", "--data-dir", str(tmp_path / "d"), "--site", str(tmp_path / "s")], capsys)
    assert code == 0, err
