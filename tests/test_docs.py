"""The README documents every table, every column and every subcommand, so docs cannot drift from code."""
from pathlib import Path

from builder.atlas.format import SCHEMA
from builder.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_table_and_column_is_documented():
    missing = [f"{t}.{c.name}" for t, spec in SCHEMA.items() for c in spec.columns if f"`{c.name}`" not in README
               and c.name not in spec.key]
    missing += [t for t in SCHEMA if f"`{t}`" not in README]
    assert missing == []


def test_every_subcommand_is_documented():
    names = []
    for name, cmd in cli.commands.items():
        names += [f"atlas {name} {sub}" for sub in getattr(cmd, "commands", {})] or [f"atlas {name}"]
    assert [n for n in names if n not in README] == []
