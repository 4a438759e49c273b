"""A digest of the demo builds' outputs, to show that a change of code (not of results) leaves every byte alone.

    python bench/digest.py [--family scgpt|geneformer|both] [--full] [--keep DIR]

Builds the demo atlas of each family from the bundled inputs into a temporary folder (by default with the test
suite's small settings, tests/conftest.py DEMO_TEST_CONFIG, about a minute each; --full: the README's main command,
twin included) and prints one sha256 per atlas folder and per site folder, over every file's path and bytes.
Run it before and after a restructuring: equal lines mean byte-identical atlas data and sites.
"""

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(folder: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
            n += 1
    return h.hexdigest()[:16], n


def small_config() -> str:
    """DEMO_TEST_CONFIG, read from the test suite so the two cannot drift."""
    text = (ROOT / "tests" / "conftest.py").read_text()
    return re.search(r'DEMO_TEST_CONFIG = """(.*?)"""', text, re.S).group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["scgpt", "geneformer", "both"], default="both")
    ap.add_argument("--full", action="store_true", help="the README's main command instead of the small settings")
    ap.add_argument("--keep", type=Path, help="build here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    families = ["scgpt", "geneformer"] if args.family == "both" else [args.family]
    with tempfile.TemporaryDirectory() as t:
        root = args.keep or Path(t)
        root.mkdir(parents=True, exist_ok=True)
        extra = []
        if not args.full:
            (root / "small.toml").write_text(small_config())
            extra = ["--config", str(root / "small.toml")]
        for family in families:
            cmd = [sys.executable, "-m", "builder.cli", "build", "--model", family, *extra, "--cache",
                   str(root / "cache"), "--data-dir", str(root / "data"), "--site", str(root / "site"), "--quiet"]
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
            for kind in ("data", "site"):
                digest, n = tree_digest(root / kind / f"{family}-demo")
                print(f"{family}-demo {kind}: {digest} ({n} files){' full' if args.full else ''}")


if __name__ == "__main__":
    main()
