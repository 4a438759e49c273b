import os
import threading
from types import SimpleNamespace
from pathlib import Path

import pytest

from builder.atlas.format import write_atlas
from builder.atlas.import_biodyn import import_biodyn
from builder.site.render import render
from builder.site.serve import make_server
from builder.atlas.synthetic import make_synthetic

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models load from local folders only
os.chdir(Path(__file__).resolve().parent.parent)  # tests name bundled inputs relative to the repository
ROOT = Path(__file__).resolve().parent.parent
# Reference data beside the clone; ATLAS_SHARED=/nonexistent runs the suite as a fresh clone without it.
SHARED = Path(os.environ.get("ATLAS_SHARED", ROOT.parent / "shared"))
SCGPT_SRC = SHARED / "reference" / "scgpt-atlas"
# The demo builds of the tests: the real demo path (bundled checkpoints and cells), smaller SAE training and fewer
# cells so that both families build in about a minute; without the untrained twin's second build (its rows are
# tested in test_baseline_stage.py), which would double that.
DEMO_TEST_CONFIG = """max_cells = 400
shard_cells = 200
[train]
epochs = 8
sample_tokens = 40000
[baselines]
random_init_model = false
"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny random-weight checkpoints in every real layout (2 layers, width 64, full GENCODE vocabularies)."""
    from builder.models.tiny import write_geneformer, write_scgpt

    root = tmp_path_factory.mktemp("checkpoints")
    for name, attention in (("scgpt", "flash"), ("scgpt-pytorch", "pytorch"), ("scgpt-fa2", "fa2")):
        write_scgpt(root / name, attention=attention)
    write_geneformer(root / "geneformer-v1", version=1)
    write_geneformer(root / "geneformer-v2", version=2)
    return root


@pytest.fixture(scope="session")
def scgpt_atlas(tmp_path_factory):
    """The published scGPT atlas imported once per test run (read from ../shared, never copied into the repo)."""
    if not SCGPT_SRC.is_dir():
        pytest.skip(f"reference data not found at {SCGPT_SRC}")
    out = tmp_path_factory.mktemp("data") / "scgpt"
    import_biodyn(SCGPT_SRC, out, "scgpt", "scGPT whole-human feature atlas")
    return out


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """Atlas data: the small synthetic demo and one planted with hostile names."""
    root = tmp_path_factory.mktemp("atlas_data")
    for name, hostile in (("demo", False), ("hostile", True)):
        manifest, tables = make_synthetic(2, 96, seed=1, hostile=hostile)
        write_atlas(root / name, manifest, tables)
    return root


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """`atlas build --model scgpt` and `--model geneformer` on the bundled inputs, once per test run: atlas data
    in .data, sites in .site, and what each command printed (stdout) in .printed[family]."""
    import contextlib
    import io

    from builder.cli import main

    root = tmp_path_factory.mktemp("demo")
    (root / "small.toml").write_text(DEMO_TEST_CONFIG)
    printed = {}
    for family in ("scgpt", "geneformer"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                main(["build", "--model", family, "--config", str(root / "small.toml"), "--cache", str(root / "cache"),
                      "--data-dir", str(root / "data"), "--site", str(root / "site"), "--quiet"])
            except SystemExit as e:
                assert e.code == 0, buf.getvalue()
        printed[family] = buf.getvalue()
    return SimpleNamespace(root=root, data=root / "data", site=root / "site", printed=printed)


# Layers whose annotation files the published Geneformer mirror lacks, and what its global_summary.json says of them.
MIRROR_ABSENT = (0, 1, 2, 3, 11)


@pytest.fixture(scope="session")
def mirror_atlas(tmp_path_factory):
    """An import in the published Geneformer mirror's shapes (tests/test_import_biodyn.py mirror_source): the
    annotation files of layers 0-3 and 11 absent, global_summary.json giving a published count for every layer."""
    from test_import_biodyn import mirror_source, write

    root = tmp_path_factory.mktemp("mirror")
    src = mirror_source(root / "src")
    write(src, "global_summary.json", {"n_layers": 18, "layers": [
        {"layer": lay, "alive": 8, "dead": 0, "annotated": 2600 + lay if lay in MIRROR_ABSENT else 4, "annotation_rate": 0.5}
        for lay in range(18)]})
    out, _ = import_biodyn(src, root / "data" / "gf-mirror", "gf-mirror", None, "geneformer")
    return out


@pytest.fixture(scope="session")
def site(tmp_path_factory, synthetic_data, demo_build, mirror_atlas, request):
    """Rendered sites: the two demo builds, the synthetic demo, hostile, an import missing some layers' annotation
    files (gf-mirror), and the imported scGPT atlas when the reference data is present."""
    root = tmp_path_factory.mktemp("site")
    for atlas in (synthetic_data / "demo", synthetic_data / "hostile", demo_build.data / "scgpt-demo",
                  demo_build.data / "geneformer-demo", mirror_atlas):
        render(atlas, root)
    if SCGPT_SRC.is_dir():
        render(request.getfixturevalue("scgpt_atlas"), root)
    return root


@pytest.fixture
def scgpt_site(site):
    if not (site / "scgpt").is_dir():
        pytest.skip(f"reference data not found at {SCGPT_SRC}")
    return site / "scgpt"


@pytest.fixture(scope="session")
def server(site):
    srv = make_server(site, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors, page errors, failed requests and dialogs."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.problems = []
    pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
    pg.on("requestfailed", lambda r: pg.problems.append(f"requestfailed: {r.url}"))
    pg.on("dialog", lambda d: (pg.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield pg
    ctx.close()


# The quick tier (`bash tests/run.sh -m quick`): every test that needs none of these fixtures and is not marked
# slow. They build atlases, import the published one, start a browser or run every command of a workspace.
SLOW_FIXTURES = {"demo_build", "site", "mirror_atlas", "scgpt_site", "server", "browser", "page", "scgpt_atlas", "pristine", "ws",
                 "built", "ray_session", "runs", "sites"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.isdisjoint(item.fixturenames) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.quick)
