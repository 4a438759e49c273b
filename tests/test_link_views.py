"""The links in the browser: the planted atlases of tests/linkdata.py, linked and rendered side by side under one site
index, checked in headless Chromium: the overview's shares, the #/links view, the feature page's section, and the
link that opens the partner's page in the other atlas."""

from __future__ import annotations

import threading

import pytest

from builder.cli import main
from builder.site.serve import make_server
from linkdata import planted
from test_views import check_view, ready


@pytest.fixture(scope="module")
def link_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("linksite")
    planted(root / "data", root / "cache")
    try:
        main(["link", "--atlas", "la", "--atlas", "lb", "--cache", str(root / "cache"), "--data-dir",
              str(root / "data"), "--quiet"])
    except SystemExit as e:
        assert e.code == 0
    main(["render", "--data-dir", str(root / "data"), "--site", str(root / "site")])
    srv = make_server(root / "site", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("width", [1280, 390])
def test_the_link_views_are_clean(browser, link_server, width):
    ctx = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
    page = ctx.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    found = {}
    for view in ("la/#/", "la/#/links", "la/#/feature/1/5", "la/#/feature/0/0", "lb/#/links", "lb/#/feature/0/7"):
        got = check_view(page, link_server + view, width) + problems
        problems.clear()
        if got:
            found[view] = got
    ctx.close()
    assert found == {}


def test_the_planted_pair_is_shown_and_its_link_opens_the_partner(page, link_server):
    page.goto(link_server + "la/#/")
    ready(page)
    shares = page.locator("table.links-shares")
    assert shares.count() == 1 and "Matched in" in page.locator("main").inner_text()
    assert "%" in shares.locator("tbody tr").nth(1).locator("td").nth(1).inner_text()  # layer 1 x other layer 0
    page.goto(link_server + "la/#/links")
    ready(page)
    row = page.locator("table.links-strong tbody tr").first
    assert row.locator("td").first.inner_text() == "L1:F5"
    assert "GENE0" in row.inner_text() and "T" in row.inner_text()
    partner = row.locator("a", has_text="L0:F7")
    assert partner.get_attribute("href") == "../lb/#/feature/0/7"
    partner.click()
    page.wait_for_url("**/lb/#/feature/0/7")
    ready(page)
    assert page.locator("main h1").inner_text().startswith("L0:F7")
    section = page.locator("details#links-h")
    section.locator("table").first.wait_for()
    text = section.inner_text()
    assert "The same program in la (synthetic)" in text and "Best match beyond both nulls: L1:F5" in text
    assert section.locator("a", has_text="L1:F5").first.get_attribute("href") == "../la/#/feature/1/5"
