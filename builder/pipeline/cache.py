"""The stage cache: content keys, folders committed once, and the `.done` marker that says a folder is whole.

Every cached folder is computed in a private temporary sibling and renamed into place. When two builds share
a cache and compute the same folder, the first rename wins and the second discards its copy (both hold the
same bytes), so concurrent builds stay correct without locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import AtlasError
from ..fsutil import sha256_file

DONE = ".done"


def key_of(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode() + b"\0")
    return h.hexdigest()[:16]


def tree_hash(path: Path) -> str:
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise AtlasError(f"{path}: no such file or folder")
    return key_of(sorted((p.relative_to(path).as_posix(), sha256_file(p)) for p in path.rglob("*") if p.is_file()))


def is_done(folder: Path) -> bool:
    return (Path(folder) / DONE).is_file()


@contextlib.contextmanager
def commit_once(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `target` (with a .done marker) unless another
    process committed `target` first, in which case ours is dropped. On failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        (tmp / DONE).write_text("")
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:  # target exists: the first one finished wins
            if not is_done(target):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
