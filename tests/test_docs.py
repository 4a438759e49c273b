"""The documentation (docs/, built with MkDocs) documents every table, every column, every subcommand and every
option, and builds in strict mode, so the docs cannot drift from the code and no link in them is broken."""
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from builder.atlas.format import SCHEMA
from builder.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FORMAT = (DOCS / "format.md").read_text()
COMMANDS = (DOCS / "commands.md").read_text()


def test_every_table_and_column_is_documented():
    missing = [f"{t}.{c.name}" for t, spec in SCHEMA.items() for c in spec.columns if f"`{c.name}`" not in FORMAT
               and c.name not in spec.key]
    missing += [t for t in SCHEMA if f"`{t}`" not in FORMAT]
    assert missing == []


def test_every_subcommand_is_documented():
    names = []
    for name, cmd in cli.commands.items():
        names += [f"atlas {name} {sub}" for sub in getattr(cmd, "commands", {})] or [f"atlas {name}"]
    assert [n for n in names if n not in COMMANDS] == []
    assert [n for n in names if f"## `{n}`" not in COMMANDS] == []  # each has a section of its own


def _commands(command, path=("atlas",)):
    """(path, command) for the group and every command under it, recursively."""
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _synopsis() -> dict[str, str]:
    """The Usage block of the commands page: command path -> its lines (a line starting `atlas X` and the
    indented lines after it; `atlas --debug ...` belongs to `atlas`)."""
    block = COMMANDS.split("## Usage", 1)[1].split("```", 2)[1]
    paths = sorted((p for p, _ in _commands(cli)), key=len, reverse=True)
    lines: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("atlas"):
            current = next(p for p in paths if line == p or line.startswith(p + " "))
        if current is not None:
            lines[current] = lines.get(current, "") + line + "\n"
    return lines


def test_every_option_of_every_command_is_in_the_commands_page():
    synopsis = _synopsis()
    missing = []
    for path, command in _commands(cli):
        for p in command.params:
            if not isinstance(p, click.Option):
                continue
            for opt in [*p.opts, *p.secondary_opts]:
                word = re.compile(rf"(?<![\w-]){re.escape(opt)}(?![\w-])")
                if opt.startswith("--") and not word.search(synopsis.get(path, "")):
                    missing.append(f"{path} {opt}")
    assert missing == []


def test_readme_links_resolve():
    """README.md links into docs/ and shows screenshots: every relative link names a file that exists."""
    readme = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not re.match(r"[a-z]+:", t)]
    assert targets and [t for t in targets if t and not (ROOT / t).exists()] == []


def test_the_documentation_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    out = tmp_path / "site-docs"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    pages = list(out.rglob("*.html"))
    assert (out / "index.html").is_file() and (out / "commands" / "index.html").is_file()
    # Nothing is loaded from another host: no stylesheet, font or script URL outside the site.
    external = [(p.relative_to(out), tag) for p in pages for tag in re.findall(r"<(?:link|script)\b[^>]*>", p.read_text())
                if re.search(r"""(?:href|src)=["']?(?:https?:)?//""", tag)]
    assert external == []


def test_the_site_index_links_the_documentation_only_when_it_is_built(tmp_path):
    """The Pages workflow builds the docs into site/docs/ before rendering; the index page links them then, and
    only then (a site without docs gets the same index bytes as before; no atlas folder depends on it)."""
    import json

    from builder.site.render import render_index

    info = json.dumps({"title": "Demo", "description": "A demo.", "totals": {"n_features": 10, "layers": 2, "annotated": 3}})
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "atlas.json").write_text(info)
    render_index(tmp_path)
    without = (tmp_path / "index.html").read_text()
    assert "docs/" not in without and 'href="demo/"' in without
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_text("<!doctype html>")
    render_index(tmp_path)
    with_docs = (tmp_path / "index.html").read_text()
    link = next(line for line in with_docs.splitlines(keepends=True) if 'href="docs/"' in line)
    assert with_docs.replace(link, "", 1) == without
    (tmp_path / "docs" / "atlas.json").write_text(info)  # an atlas named docs is not the documentation
    render_index(tmp_path)
    assert ">Documentation</a>" not in (tmp_path / "index.html").read_text()
