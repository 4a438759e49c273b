"""JSON written one way everywhere: sorted keys, numpy values, optional indent; byte-stable."""

from __future__ import annotations

import orjson


def dumps_json(obj, indent: bool = False) -> bytes:
    opt = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(obj, option=opt) + (b"\n" if indent else b"")
