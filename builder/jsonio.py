"""JSON written one way everywhere: sorted keys, numpy values, optional indent; byte-stable."""

from __future__ import annotations

import orjson


def dumps_json(obj, indent: bool = False) -> bytes:
    opt = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(obj, option=opt) + (b"\n" if indent else b"")


def read_json(path, expect: type = dict):
    """A JSON file whose top level is `expect` (dict or list); a missing, damaged or wrong file is named."""
    import json
    from pathlib import Path

    from .errors import AtlasError

    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: missing")
    try:  # the standard library's reader: it accepts the NaN that json.dumps writes
        value = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise AtlasError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                         "the file may be truncated") from None
    except UnicodeDecodeError:
        raise AtlasError(f"{path}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(value, expect):
        kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
                 bool: "true/false", type(None): "null"}
        raise AtlasError(f"{path}: expected {kinds.get(expect, expect.__name__)} at the top level, "
                         f"found {kinds.get(type(value), type(value).__name__)}")
    return value
