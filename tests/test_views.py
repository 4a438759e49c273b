"""Every view of the site, at desktop and phone width, in a real headless Chromium: no console error, no failed
request, no horizontal overflow, no text node reading null/undefined/NaN, no word broken inside a table cell, no
chart without tick labels on both axes, no phone page taller than 4 screens, and no rate or "no term passed" shown
for a layer whose annotation data is absent; bad routes and ids give a message; accessibility checked with axe-core
in both themes."""
import re
import urllib.parse

import pytest

from conftest import ROOT

AXE = ROOT / ".cache" / "node_modules" / "axe-core" / "axe.min.js"  # installed by tests/run.sh, never shipped
WIDTHS = (1280, 390)
DEMO_VIEWS = ["#/", "#/layer/0", "#/layer/1", "#/feature/0/0", "#/feature/1/40", "#/genes", "#/genes/CD74", "#/genes/cd74",
              "#/terms", "#/celltypes", "#/celltypes/" + urllib.parse.quote("T cell"), "#/modules", "#/modules/1", "#/flow",
              "#/comparisons", "#/about", "#/glossary", "#/glossary/q"]
SCGPT_VIEWS = ["#/", "#/layer/7", "#/feature/7/917", "#/feature/0/0", "#/genes/CD74", "#/terms/" + urllib.parse.quote("KEGG:Autophagy"),
               "#/celltypes", "#/celltypes/monocyte", "#/modules", "#/flow", "#/comparisons", "#/about"]
# The import missing layers 0-3 and 11's annotation files (conftest mirror_atlas): its absent and present layers.
MIRROR_VIEWS = ["#/", "#/layer/0", "#/layer/11", "#/layer/5", "#/feature/0/0", "#/feature/11/2", "#/feature/5/0",
                "#/genes/G0x0x0", "#/terms", "#/terms/" + urllib.parse.quote("GO_BP:Term 5-0"), "#/modules", "#/flow",
                "#/comparisons", "#/tf", "#/tf/GATA1", "#/about", "#/glossary"]
BAD = {"#/no/such/view": "Page not found", "#/feature/0/99999": "has no feature 99999", "#/layer/99": "has no layer 99",
       "#/genes/NOTAGENE": "No feature has NOTAGENE", "#/celltypes/nobody": "No feature marks a cell type",
       "#/glossary/nothing": "No glossary entry"}

# Text nodes that read "null", "undefined" or "NaN": a value the page failed to format. The site also uses "null"
# as the statistical noun ("edges beyond gene null to 1", "its null beside it", "no null, no interval"): those
# phrases are not values.
BAD_TEXT_JS = """() => {
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const out = [];
  for (let n = w.nextNode(); n; n = w.nextNode()) {
    if (n.parentElement.closest('script,style,noscript')) continue;
    const text = n.textContent.replace(/\\b(gene|its|no) null\\b/g, "");
    if (/(^|[^\\w-])(null|undefined|NaN)([^\\w-]|$)/.test(text)) out.push(n.textContent.slice(0, 80));
  }
  return out;
}"""
# Words split across two lines inside a table cell (a single word wider than the room its text has may still break,
# as a long path beside its label in a phone's stacked row; a break after a hyphen, as in R-HSA-69278, is an
# ordinary line-break opportunity). The room: from where the cell's text starts to the cell's right padding.
BROKEN_WORDS_JS = """() => {
  const out = [];
  for (const cell of document.querySelectorAll('main td, main th, main .vt-row span')) {
    if (!cell.offsetParent) continue;
    const w = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    const right = cell.getBoundingClientRect().right - parseFloat(getComputedStyle(cell).paddingRight);
    for (let n = w.nextNode(); n; n = w.nextNode()) {
      const whole = document.createRange();
      whole.selectNodeContents(n);
      const room = right - Math.min(...[...whole.getClientRects()].map((x) => x.left));
      const re = /[^\\s-]+/g;
      let m;
      while ((m = re.exec(n.textContent))) {
        const r = document.createRange();
        r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
        const parts = [...r.getClientRects()].filter((x) => x.width > 0);
        const lines = new Set(parts.map((x) => Math.round(x.top)));
        const width = parts.reduce((sum, x) => sum + x.width, 0);  // the word's width unbroken
        if (lines.size > 1 && width < room - 4) out.push(m[0]);
      }
    }
  }
  return out.slice(0, 10);
}"""


# Every chart has tick labels on both axes (lib/chart.js marks them tick-x and tick-y), one axis at least two.
TICKS_JS = """() => [...document.querySelectorAll('main svg.chart')].map((c) => {
  const x = c.querySelectorAll('.tick-x').length, y = c.querySelectorAll('.tick-y').length;
  return x >= 1 && y >= 1 && x + y >= 3 ? null : `${c.getAttribute('aria-label')}: ${x} x and ${y} y tick labels`;
}).filter(Boolean)"""
# A layer whose annotation data is absent (boot layers[].annotations_absent, from an import's manifest) never shows
# a rate, an annotated count or "no term passed" as if it were a result: its feature and layer pages say "not
# published", no annotation or enrichment chart has a mark for it, and in any table its row's rate, annotated and
# tested cells say "not published" (or give the publication's own count, marked as such).
ABSENT_JS = r"""() => {
  const boot = JSON.parse(document.getElementById('boot').textContent);
  const absent = new Set(boot.layers.filter((l) => l.annotations_absent).map((l) => l.layer));
  const out = [], main = document.querySelector('main');
  if (!absent.size) return out;
  const m = location.hash.match(/^#\/(feature|layer)\/(\d+)/);
  if (m && absent.has(Number(m[2]))) {
    const text = main.innerText;
    if (/no term passed|database not recorded|unlabelled: no gene-set term/i.test(text)) out.push(`${location.hash}: absent annotation shown as a result`);
    if (!/not published/i.test(text)) out.push(`${location.hash}: does not say the layer's annotation was not published`);
    const line = main.querySelector('nav.pills + p');
    if (m[1] === 'layer' && line && /%|\d annotated\b|tested annotated/.test(line.textContent.replace(/the publication counts [\d,]+ annotated/, ''))) out.push(`layer line: ${line.textContent}`);
  }
  for (const c of main.querySelectorAll('svg.chart')) {
    if (!/annot|enrich|rate|features per layer for/i.test(c.getAttribute('aria-label') || '')) continue;
    for (const t of c.querySelectorAll('[data-tip]')) {
      if (/^alive\b/.test(t.dataset.tip)) continue;  // alive counts are published for every layer
      const k = t.dataset.tip.match(/layer (\d+):/);
      if (k && absent.has(Number(k[1]))) out.push(`chart "${c.getAttribute('aria-label')}" has a mark for layer ${k[1]}: ${t.dataset.tip}`);
    }
  }
  for (const row of main.querySelectorAll('tr')) {
    const k = row.cells[0] && row.cells[0].textContent.trim().match(/^Layer (\d+)$/);
    if (!k || !absent.has(Number(k[1]))) continue;
    for (const td of row.cells) {
      if (/rate|annotated|tested|trained/i.test(td.dataset.label || '') && !/not published|published count/.test(td.textContent)) out.push(`layer ${k[1]}, ${td.dataset.label}: ${td.textContent}`);
    }
  }
  return out;
}"""


def ready(page):
    page.wait_for_function("document.querySelector('main h1')")
    page.wait_for_load_state("networkidle")


def check_view(page, url, width):
    page.goto("about:blank")  # a fresh load: a hash change alone would leave the previous view's h1 in place
    page.goto(url)
    ready(page)
    problems = []
    title = page.locator("main h1").inner_text()
    if title in ("Could not show this page", "Page not found"):
        problems.append(f"{title}: {page.locator('main').inner_text()[:200]}")
    if page.evaluate("document.documentElement.scrollWidth") > width + 1:
        problems.append("horizontal overflow")
    bad = page.evaluate(BAD_TEXT_JS)
    if bad:
        problems.append(f"text reads null/undefined/NaN: {bad[:3]}")
    broken = page.evaluate(BROKEN_WORDS_JS)
    if broken:
        problems.append(f"words broken in table cells: {broken[:5]}")
    problems += page.evaluate(TICKS_JS) + page.evaluate(ABSENT_JS)
    screens = page.evaluate("document.documentElement.scrollHeight / window.innerHeight")
    if width < 600 and screens > 4:
        problems.append(f"{screens:.1f} screens tall at {width} px")
    return problems


@pytest.fixture
def sized_page(browser):
    pages = []

    def make(width):
        ctx = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
        pg = ctx.new_page()
        pg.problems = []
        pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
        pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
        pg.on("requestfailed", lambda r: pg.problems.append(f"requestfailed: {r.url}"))
        pg.on("response", lambda r: r.status >= 400 and pg.problems.append(f"HTTP {r.status}: {r.url}"))
        pages.append(ctx)
        return pg

    yield make
    for ctx in pages:
        ctx.close()


BUILT_VIEWS = ["#/", "#/layer/0", "#/layer/3", "#/feature/0/0", "#/feature/3/100", "#/genes/CD74", "#/terms",
               "#/celltypes", "#/celltypes/" + urllib.parse.quote("CD19+ B"), "#/modules", "#/modules/2", "#/flow",
               "#/comparisons", "#/about"]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("atlas", ["demo", "scgpt", "scgpt-demo", "geneformer-demo", "gf-mirror"])
def test_every_view_is_clean(sized_page, server, site, atlas, width):
    if not (site / atlas).is_dir():
        pytest.skip(f"{atlas} not rendered (reference data missing)")
    page = sized_page(width)
    found = {}
    for view in {"demo": DEMO_VIEWS, "scgpt": SCGPT_VIEWS, "gf-mirror": MIRROR_VIEWS}.get(atlas, BUILT_VIEWS):
        problems = check_view(page, server + f"{atlas}/{view}", width)
        problems += page.problems
        page.problems.clear()
        if problems:
            found[view] = problems
    assert found == {}


@pytest.mark.parametrize("route, message", sorted(BAD.items()))
def test_bad_route_or_id_gives_a_message(page, server, route, message):
    page.goto("about:blank")
    page.goto(server + "demo/" + route)
    ready(page)
    assert message in page.locator("main").inner_text()
    assert page.locator("main a[href='#/']").count() + page.locator("main a[href='#/celltypes']").count() + \
        page.locator("main #gene-search").count() + page.locator("main .glossary details").count() >= 1
    assert page.problems == []


def test_missing_shard_is_named_and_the_rest_of_the_page_works(page, server, site):
    page.route("**/cellact/**", lambda route: route.fulfill(status=404, body="not found"))
    page.on("console", lambda m: None)
    page.goto(server + "demo/#/feature/0/3")
    page.locator("main .warn").first.wait_for()
    text = page.locator("main").inner_text()
    assert "The cell map is not available" in text and "cellact/0/0.json" in text
    assert page.locator("table.genes-table tbody tr").count() == 20  # the rest of the page is there
    page.route("**/flow.json", lambda route: route.fulfill(status=404, body="not found"))
    page.goto("about:blank")  # a whole view's shard missing: one message, navigation still works
    page.goto(server + "demo/#/flow")
    page.locator("main .warn").wait_for()
    assert "flow.json" in page.locator("main").inner_text()
    page.click("nav a:text-is('Overview')")
    page.locator("main .cards").wait_for()


def test_skip_link_focuses_content_and_gene_links_ignore_case(page, server):
    page.goto(server + "demo/#/glossary")
    ready(page)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.evaluate("location.hash") == "#/glossary"
    page.goto(server + "demo/#/genes/cd74")
    page.locator(".results .summary").wait_for()
    assert page.locator(".results h2").first.inner_text() == "CD74"


def test_term_search_matches_whole_words_from_their_start(page, server, site):
    page.goto(server + "demo/#/terms")
    ready(page)
    page.fill("#term-search", "apoptosis")
    page.locator(".suggest button").first.wait_for()
    texts = page.locator(".suggest .name").all_inner_texts()
    assert texts and all(re.search(r"(^|\W)apoptosis", t, re.I) for t in texts), texts
    page.fill("#term-search", "poptosis")  # only inside a word ("Apoptosis"): no suggestion
    page.locator(".suggest li.none").wait_for()


def test_layer_map_colour_legend_keyboard_and_preview(page, server):
    page.goto(server + "demo/#/layer/0")
    page.locator(".vt-row").first.wait_for()
    assert "Module" in page.locator(".map-legend").inner_text()
    page.select_option("#colour-by", "frequency")
    assert "Activation frequency" in page.locator(".map-legend").inner_text()
    page.uncheck("#only-alive")
    total = page.locator(".count").inner_text()
    page.check("#only-alive")
    assert "alive features" in page.locator(".count").inner_text() and total != page.locator(".count").inner_text()
    page.focus(".map-wrap canvas")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.locator(".preview h2", has_text="L0:F").wait_for()
    page.locator(".vt-row").nth(2).click()
    page.locator(".preview h2", has_text="L0:F2").wait_for()
    assert page.evaluate("location.hash") == "#/layer/0"  # a preview, not a navigation
    page.click(".preview a:text('Open the feature page')")
    page.locator("h1", has_text="L0:F2").wait_for()
    assert page.problems == []


def test_phone_menu_and_stacked_tables(browser, server):
    ctx = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    page = ctx.new_page()
    page.goto(server + "demo/#/feature/0/0")
    ready(page)
    assert not page.locator("#views").is_visible()
    page.click("#menu")
    assert page.locator("#views").is_visible()
    page.click("#views a:text-is('Genes')")
    page.locator("#gene-search").wait_for()
    assert not page.locator("#views").is_visible()
    page.goto(server + "demo/#/feature/0/0")
    ready(page)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= 4 * 800, height  # at most 4 screens: sections fold, with a summary line each
    label = page.evaluate("getComputedStyle(document.querySelector('table.stack td'), '::before').content")
    assert label == '"Gene"'
    ctx.close()


@pytest.mark.skipif(not AXE.is_file(), reason=f"axe-core not installed at {AXE} (tests/run.sh installs it)")
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_accessibility_no_serious_violation(browser, server, theme):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_init_script(f"try {{ localStorage.setItem('atlas-theme', '{theme}') }} catch (e) {{}}")
    page = ctx.new_page()
    found = {}
    for view in DEMO_VIEWS + ["#/no/such/view"]:
        page.goto(server + "demo/" + view)
        ready(page)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [f"{v['id']}: {v['nodes'][0]['target']}" for v in result["violations"] if v["impact"] in ("serious", "critical")]
        if bad:
            found[view] = bad
    ctx.close()
    assert found == {}


def test_hostile_atlas_new_views_run_nothing(page, server):
    hostile = "<img src=x onerror=alert(1)>"
    for view in ("#/celltypes", "#/celltypes/" + urllib.parse.quote(hostile), "#/feature/0/0", "#/flow", "#/comparisons", "#/about",
                 "#/layer/0"):
        page.goto(server + "hostile/" + view)
        ready(page)
        page.wait_for_timeout(100)
        assert page.locator("main img").count() == 0, view
    assert not any(p.startswith("dialog") for p in page.problems), page.problems


# Names whose shard keys are easy to get wrong: case, digits, punctuation, empty and one-character names, letters
# whose upper case is not one ASCII letter (ß -> SS, ﬁ -> FI) or is one although they are not ASCII (ı -> I,
# ſ -> S), combining marks, characters beyond the BMP (two UTF-16 units in JavaScript, one character in Python),
# and hostile markup.
TRICKY_NAMES = ["", "A", "a", "z", "7", "_", "-", " ", "CD74", "cd74", "1AB", "HLA-DRA", "-A", "A-", "a1", " a",
                "é", "éA", "Ä1", "ß", "ßA", "ﬁx", "ǅ", "ı", "ıa", "İ", "ſt", "µ", "\u212a", "Ω", "ｚ", "٣", "²",
                "\u0301A", "A\u0301", "日本", "😀", "😀A", "A😀", "𝐀B", "\t", "\n", "<img src=x onerror=alert(1)>",
                "\"quoted'name", "<script>alert(2)</script>"]


def with_data_js(page, body, arg):
    """Run `body` (JavaScript, given `d`: the site's lib/data.js module, and `arg`) in the page."""
    app = page.locator("script[type=module]").get_attribute("src")  # assets/HASH/app.js
    return page.evaluate(f"""async ([app, arg]) => {{
      const d = await import(new URL(app.replace(/app\\.js$/, "lib/data.js"), location.href).href);
      {body}
    }}""", [app, arg])


def test_the_browser_s_shard_keys_are_python_s(page, server):
    """static/lib/data.js nameKey, the site's one copy of builder/site/indexes.py name_key, gives the same keys: on
    tricky names, and on every single character (those whose key is not `_`)."""
    from builder.site.indexes import gene_keys, name_key, shard_key

    page.goto(server + "demo/#/about")
    ready(page)
    got = with_data_js(page, "return arg.map((n) => [d.nameKey(n, 1), d.nameKey(n), d.nameKey(n, 3)]);", TRICKY_NAMES)
    want = [[name_key(n, 1), name_key(n), name_key(n, 3)] for n in TRICKY_NAMES]
    assert dict(zip(TRICKY_NAMES, got)) == dict(zip(TRICKY_NAMES, want))
    assert all(list(gene_keys(n)) == w[:2] for n, w in zip(TRICKY_NAMES, want))
    assert all(re.fullmatch(r"[A-Z0-9_]+", k) for w in want for k in w)  # file-safe
    keyed = with_data_js(page, """
      const out = {};
      for (let c = 0; c <= 0x10ffff; c++) {
        if (c >= 0xd800 && c <= 0xdfff) continue;  // lone surrogates are no characters
        const ch = String.fromCodePoint(c), k = d.nameKey(ch, 1);
        if (k !== "_") out[ch] = k;
      }
      return out;""", None)
    chars = (chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert keyed == {ch: shard_key(ch) for ch in chars if shard_key(ch) != "_"}
    assert set(keyed) >= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    assert page.problems == []


def test_the_view_checks_catch_what_they_guard(page, server, site):
    """The checks of test_every_view_is_clean fail a page that breaks them: a layer whose annotation is absent shown
    with "no term passed" or a rate, a chart with its tick labels gone."""
    page.goto(server + "gf-mirror/#/feature/0/0")
    ready(page)
    assert page.evaluate(ABSENT_JS) == []
    page.evaluate("document.querySelector('main').append(Object.assign(document.createElement('p'), {textContent: 'No term passed the threshold.'}))")
    assert any("shown as a result" in p for p in page.evaluate(ABSENT_JS))
    page.goto("about:blank")
    page.goto(server + "gf-mirror/#/")
    ready(page)
    assert page.evaluate(ABSENT_JS) == [] and page.evaluate(TICKS_JS) == []
    page.evaluate("""() => { const td = [...document.querySelectorAll('main tr')].find((r) => r.cells[0].textContent.trim() === 'Layer 0')
      .querySelector('td[data-label^="Rate"]'); td.textContent = '0%'; }""")
    assert any("layer 0, Rate" in p for p in page.evaluate(ABSENT_JS))
    page.evaluate("document.querySelectorAll('main svg.chart .tick-y').forEach((t) => t.remove())")
    assert len(page.evaluate(TICKS_JS)) == page.locator("main svg.chart").count() > 0
    assert page.problems == []


def test_absent_annotation_reads_as_not_published(page, server, site):
    """gf-mirror's layers 0-3 and 11 have no annotation file: the overview, the layer explorer, its preview and the
    feature page say so, with the publication's own count, and keep those layers out of the rates."""
    page.goto(server + "gf-mirror/#/")
    ready(page)
    text = page.locator("main").inner_text()
    assert "Not published: the enrichment files of layers 0, 1, 2, 3, 11" in text
    assert "52 of 104 tested features" in text and "over the 13 layers whose annotation data was published" in text
    row = page.locator("main tr", has=page.locator("td", has_text="Layer 0")).first.inner_text()
    assert "2,600 (published count)" in row and "%" not in row
    page.goto(server + "gf-mirror/#/layer/0")
    page.locator(".vt-row").first.wait_for()
    assert "annotation not published for this layer (the publication counts 2,600 annotated)" in page.locator("main nav.pills + p").inner_text()
    page.locator(".vt-row").first.click()
    page.locator(".preview", has_text="enrichments not published for this layer").wait_for()
    page.goto("about:blank")  # a hash change alone would leave the layer page's h1 in place for ready()
    page.goto(server + "gf-mirror/#/feature/0/0")
    ready(page)
    text = page.locator("main").inner_text()
    assert "Term 0-0" in text and "GO biological process, the published label" in text  # its database from the features file
    assert "The publication counts 2,600 annotated features in this layer" in text and "No term passed" not in text
    page.goto(server + "gf-mirror/#/feature/5/0")
    ready(page)
    assert "Enrichments (1)" in page.locator("main").inner_text()  # a layer with its file: its enrichments
    assert page.problems == []


def test_phone_tap_on_a_layer_row_brings_its_preview_into_view(browser, server):
    ctx = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    page.goto(server + "scgpt-demo/#/layer/1")
    page.locator(".vt-row").first.wait_for()
    page.locator(".vt-row").nth(3).tap()
    page.locator(".preview h2", has_text="L1:F3").wait_for()
    page.wait_for_timeout(600)  # the smooth scroll
    top = page.evaluate("document.querySelector('.preview').getBoundingClientRect().top")
    assert 0 <= top < 800, top
    ctx.close()


def test_overview_shows_training_baselines_and_cells(page, server, demo_build):
    """The demo overview reads the atlas' own numbers: the rate with its interval, the untrained-dictionary sentence
    that the null_baseline rows support, one loss curve per trained layer, which cells pretrained the model."""
    import json

    import pandas as pd

    m = json.loads((demo_build.data / "scgpt-demo" / "manifest.json").read_text())
    nb = pd.read_parquet(demo_build.data / "scgpt-demo" / "null_baseline.parquet")
    page.goto(server + "scgpt-demo/#/")
    ready(page)
    text = page.locator("main").inner_text()
    t = m["totals"]
    assert f"{t['annotated']:,} of {t['tested']:,} tested features" in text
    d = nb[(nb.analysis == "annotation") & (nb.measure == "any database") & nb.baseline.str.startswith("random_dictionary")]
    if len(d):
        fewer = d.groupby("layer").apply(lambda g: (g.observed < g.expected).all())
        sentence = "In every layer the untrained dictionar"
        assert (sentence in text) == bool(fewer.all()), text
    training = m["sae"]["training"]
    assert page.locator("main svg.chart[aria-label^='SAE training loss']").count() == len(training)
    steps = [c.inner_text() for c in page.locator("main table.training-table tbody tr td:nth-child(2)").all()]
    assert steps == [f"{training[k]['steps']:,}" for k in sorted(training, key=int)]
    src = m["dataset"]["heldout_source"]
    assert (f"{src['model_training_cells_in_data']} of them pretrained the model; the other {src['in_this_data']} are the "
            "model's held-out cells") in text
    assert page.problems == []


def test_chart_views_load_no_chart_library(page, server):
    """#/flow and #/comparisons draw their charts with the site's SVG code: no request for a chart library."""
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    for view in ("#/flow", "#/comparisons"):
        page.goto("about:blank")
        page.goto(server + "scgpt-demo/" + view)
        ready(page)
        page.locator("main svg.chart").first.wait_for()
        # force: a flow ribbon may lie under another; the one on top shows its own tip
        page.locator("main svg.chart [data-tip]").first.hover(force=True)
        page.locator("main .chart-wrap .tip:not([hidden])").first.wait_for()  # a tooltip on hover
    assert not [u for u in urls if "plotly" in u or "vendor/" in u]
    assert page.problems == []
