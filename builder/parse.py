"""Parsers of the values the CLI and the build share: atlas names and layer lists."""

from __future__ import annotations

import re

from .errors import AtlasError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def atlas_name(value: str) -> str:
    if not NAME.match(value):
        raise AtlasError(f"atlas name {value!r} must be letters, digits, '.', '_' or '-' (it becomes a URL path)")
    return value


def layer_list(value: str | None) -> list[int] | None:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]; None means every layer."""
    if value is None:
        return None
    out = []
    try:
        for part in value.split(","):
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise AtlasError(f"--layers {value!r}: expected numbers and ranges such as 0,3,5-7") from None
    return out
