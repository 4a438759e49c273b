"""The tour's screenshots (README.md, docs/index.md), taken in headless Chromium from a built demo atlas.

    python docs/screenshots.py [--site site] [--data atlas_data] [--atlas scgpt-demo]

Writes docs/img/overview.png (the overview at 1280 px), layer.png (the layer explorer of the layer holding the
most significant enrichment) and feature.png (that feature's page at 390 px, as a phone shows it).
"""

import argparse
import threading
from pathlib import Path

import pandas as pd
from playwright.sync_api import sync_playwright

from builder.site.serve import make_server

OUT = Path(__file__).resolve().parent / "img"


def best_feature(atlas: Path) -> tuple[int, int]:
    """The feature with the most significant gene-set enrichment (ties: lowest layer, then feature)."""
    e = pd.read_parquet(atlas / "enrichments.parquet").dropna(subset=["q"]).sort_values(["q", "layer", "feature"])
    return int(e.layer.iloc[0]), int(e.feature.iloc[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, default=Path("site"))
    ap.add_argument("--data", type=Path, default=Path("atlas_data"))
    ap.add_argument("--atlas", default="scgpt-demo")
    a = ap.parse_args()
    layer, feature = best_feature(a.data / a.atlas)
    server = make_server(a.site, 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/{a.atlas}/"
    shots = [("overview.png", "#/", 1280, 900), ("layer.png", f"#/layer/{layer}", 1280, 800),
             ("feature.png", f"#/feature/{layer}/{feature}", 390, 1400)]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            for name, view, width, height in shots:
                ctx = browser.new_context(viewport={"width": width, "height": height}, is_mobile=width < 600,
                                          has_touch=width < 600, device_scale_factor=1)
                page = ctx.new_page()
                page.goto(base + view)
                page.wait_for_function("document.querySelector('main h1')")
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(300)  # canvas maps draw on the next frame
                page.screenshot(path=str(OUT / name))
                print(f"{OUT / name}: {view} at {width} px")
                ctx.close()
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
