"""How every shard encodes numbers and lists of rows.

Numbers are rounded to significant digits (sig), so shards stay small and byte-stable.
A list of rows is a columnar table that names its fields: {field: [value of row 0, value of row 1, ...]}, one list
per field, all of one length. A field that is null on every row is left out, so an empty table is {}; the browser
turns a table into row objects with rows() (static/lib/data.js) and reads a left-out field as missing (== null).
The fields of each shard are listed in the docstring of the module that writes it (shards.py, indexes.py,
cellmap.py, perturbation.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def sig(v, digits=4):
    """Round to significant digits; non-finite numbers become the strings the page formats."""
    if v is None or not isinstance(v, float):
        return v
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer():  # a count held as a float (14,298 edges) is shown whole, not as 14,300
        return v
    return float(f"{v:.{digits}g}")


def columns(cols: dict[str, list]) -> dict[str, list]:
    """A columnar table from its columns, without the fields that are null on every row."""
    return {f: v for f, v in cols.items() if any(x is not None for x in v)}


def table(rows: Iterable[tuple]) -> dict[str, list]:
    """A columnar table from rows that are namedtuples (their field names name the columns)."""
    rows = list(rows)
    if not rows:
        return {}
    return columns(dict(zip(rows[0]._fields, map(list, zip(*rows)))))
