"""Whole-site snapshot: a fixed small atlas renders to exactly the stored site (tests/snapshots/site/).

Content hashes in folder names and sha256 digests are renumbered, Parquet files are compared by content (their
bytes name the writer's version), and any vendored file by its digest, so snapshots do not churn.
On a mismatch the new tree is written to tests/snapshots/site-changed/ to diff. Refresh after an intended change:
    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_snapshot.py
"""
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from builder.atlas.format import write_atlas
from builder.atlas.synthetic import make_synthetic
from builder.site.render import render

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
HASHED = re.compile(rb"(assets|data)/[0-9a-f]{10}/")
DIGEST = re.compile(rb'"sha256": "[0-9a-f]{64}"')


def normalise(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = HASHED.sub(rb"\1/HASH/", p.relative_to(root).as_posix().encode()).decode()
        blob = p.read_bytes()
        if p.suffix == ".parquet":
            t = pq.read_table(p)  # the CSV beside it holds the same rows as text: here the schema and a digest
            rows = json.dumps(t.to_pylist(), default=str, sort_keys=True).encode()
            blob = f"{t.schema}\nrows {t.num_rows} sha256 {hashlib.sha256(rows).hexdigest()}\n".encode()
        elif "vendor/" in rel:
            blob = f"sha256 {hashlib.sha256(blob).hexdigest()}\n".encode()
        else:
            blob = DIGEST.sub(b'"sha256": "SHA256"', HASHED.sub(rb"\1/HASH/", blob))
        out[rel] = blob
    return out


def test_site_matches_snapshot(tmp_path):
    manifest, tables = make_synthetic(2, 24, seed=7, title="Snapshot atlas (synthetic data)")
    write_atlas(tmp_path / "data" / "snap", manifest, tables)
    got = normalise(render(tmp_path / "data" / "snap", tmp_path / "site"))
    want_dir, changed = SNAPSHOTS / "site", SNAPSHOTS / "site-changed"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        shutil.rmtree(want_dir, ignore_errors=True)
        for rel, blob in got.items():
            (want_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (want_dir / rel).write_bytes(blob)
    want = {p.relative_to(want_dir).as_posix(): p.read_bytes() for p in sorted(want_dir.rglob("*")) if p.is_file()}
    diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    shutil.rmtree(changed, ignore_errors=True)
    if diff:
        for rel, blob in got.items():
            (changed / rel).parent.mkdir(parents=True, exist_ok=True)
            (changed / rel).write_bytes(blob)
    assert diff == [], f"{len(diff)} file(s) differ from {want_dir} (new tree in {changed}; refresh with UPDATE_SNAPSHOTS=1)"
