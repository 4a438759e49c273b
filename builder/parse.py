"""Parsers of the values the CLI and the build share: atlas names, layer lists, STRING channels."""

from __future__ import annotations

import re

from .errors import AtlasError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: `$` would let a final newline in
# Folders of the project's own under atlas_data/ that an atlas name must never replace.
RESERVED_NAMES = frozenset({"inputs"})
MAX_LAYER = 2**15 - 1  # layers are int16 in the atlas tables


def atlas_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise AtlasError(f"atlas name {value!r} must be letters, digits, '.', '_' or '-' (it becomes a URL path)")
    if value.lower() in RESERVED_NAMES:
        raise AtlasError(f"atlas name {value!r} is reserved (atlas_data/{value}/ holds the project's bundled inputs)")
    return value


def layer_list(value: str | None, option: str = "--layers") -> list[int] | None:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]; None means every layer. Reversed ranges and repeats are refused."""
    if value is None:
        return None
    out: list[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise AtlasError(f"{option} {value!r}: expected numbers and ranges such as 0,3,5-7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise AtlasError(f"{option} {value!r}: range {lo}-{hi} runs backwards (write {hi}-{lo})")
        if hi > MAX_LAYER:
            raise AtlasError(f"{option} {value!r}: layer {hi} is beyond the largest layer number {MAX_LAYER}")
        out.extend(range(lo, hi + 1))
    if len(set(out)) < len(out):
        seen: set[int] = set()
        first = next(x for x in out if x in seen or seen.add(x))
        raise AtlasError(f"{option} {value!r}: layer {first} is given twice")
    return out


STRING_CHANNELS = ("neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database",
                   "textmining")  # STRING's order, which its combination multiplies in
COMBINED = "combined"  # the file's own combined_score instead of recombined channels


def string_channels(spec: str) -> tuple[str, ...] | str:
    """'experimental,database' -> ('experimental', 'database'); 'combined' -> COMBINED."""
    names = [x.strip().lower() for x in str(spec).split(",") if x.strip()]
    if names == [COMBINED]:
        return COMBINED
    bad = [x for x in names if x not in STRING_CHANNELS]
    if bad or not names:
        raise AtlasError(f"STRING channels {spec!r}: expected {COMBINED!r} or a comma-separated subset of "
                         f"{', '.join(STRING_CHANNELS)}")
    return tuple(c for c in STRING_CHANNELS if c in names)
