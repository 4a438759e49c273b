"""Atomic folder swaps: always an output folder, leftovers of dead processes tidied, overlap checks."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builder import fsutil
from builder.errors import AtlasError
from builder.fsutil import OWNER, atomic_dir, atomic_write, check_disjoint, check_replaceable, read_maybe_gzip, tidy

ROOT = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write(target: Path, text: str):
    with atomic_dir(target) as tmp:
        (tmp / "content").write_text(text)


def test_swap_replaces_and_leaves_nothing_beside(tmp_path):
    write(tmp_path / "out", "one")
    write(tmp_path / "out", "two")
    assert (tmp_path / "out" / "content").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_keeps_previous_output(tmp_path):
    write(tmp_path / "out", "one")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "content").write_text("half")
            raise RuntimeError("stage failed")
    assert (tmp_path / "out" / "content").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exchange_is_used_on_linux(tmp_path):
    if fsutil._renameat2 is None:
        pytest.skip("no renameat2 in this C library: the two-rename fallback is used")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    assert fsutil._exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "x").read_text() == "a" and not (tmp_path / "a" / "x").exists()


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_two_processes_swapping_one_folder(tmp_path, mode):
    """Two writers swap the same folder 40 times each. With the exchange a reader never finds it missing or
    half-written; with the two-rename fallback it may find it missing for a moment, never half-written."""
    if mode == "exchange" and fsutil._renameat2 is None:
        pytest.skip("no renameat2 in this C library")
    write(tmp_path / "out", "start")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from builder import fsutil
        if {mode!r} == "fallback":
            fsutil._exchange = lambda a, b: False
        for i in range(40):
            with fsutil.atomic_dir(Path({str(tmp_path / 'out')!r})) as tmp:
                (tmp / "content").write_text(sys.argv[1] * 1000)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, w]) for w in "ab"]
    problems = []
    while any(p.poll() is None for p in procs):
        try:
            text = (tmp_path / "out" / "content").read_text()
        except FileNotFoundError as e:
            if mode == "exchange":
                problems.append(str(e))
            continue
        if text not in ("start", "a" * 1000, "b" * 1000):
            problems.append(f"half-written: {text[:20]!r}")
    assert [p.returncode for p in procs] == [0, 0]
    assert problems == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_leftovers_of_dead_processes_are_tidied(tmp_path):
    pid = dead_pid()
    stale = tmp_path / f".out.tmp-{OWNER}-{pid}-0a0b"
    stale.mkdir()
    (stale / "junk").write_text("x")
    stale_file = tmp_path / f".index.html.tmp-{OWNER}-{pid}-0c0d"
    stale_file.write_text("x")
    live = tmp_path / f".out.tmp-{OWNER}-{os.getpid()}-0e0f"  # this process: still working on it
    live.mkdir()
    other_host = tmp_path / f".out.tmp-00000000-{pid}-0a0b"  # another machine's: its pid means nothing here
    other_host.mkdir()
    user = tmp_path / ".out.tmp-mine"  # not our pattern: never touched
    user.mkdir()
    newline = tmp_path / f".out.tmp-{OWNER}-{pid}-0a0b\n"  # our pattern but for a final newline: not ours
    newline.mkdir()
    write(tmp_path / "out", "new")
    assert not stale.exists() and not stale_file.exists()
    assert live.exists() and other_host.exists() and user.exists() and newline.exists()


def test_interrupted_fallback_swap_is_recovered(tmp_path):
    """Killed between the two renames of the fallback: no `out`, the old content aside. The next run restores it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from builder import fsutil
        fsutil._exchange = lambda a, b: False      # as on a system without renameat2
        real = Path.rename
        def rename(self, target):
            out = real(self, target)
            if ".old-" in str(target):             # the old content is out, the new not yet in
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        Path.rename = rename
        with fsutil.atomic_dir(Path({str(tmp_path / 'out')!r})) as tmp:
            (tmp / "content").write_text("new")
    """)
    write(tmp_path / "out", "old")
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists()
    assert any(".out.old-" in p.name for p in tmp_path.iterdir())
    with fsutil._locked(tmp_path):
        tidy(tmp_path)
    assert (tmp_path / "out" / "content").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_and_file_in_place_of_folder(tmp_path):
    atomic_write(tmp_path / "index.html", b"<html>")
    assert (tmp_path / "index.html").read_bytes() == b"<html>"
    with pytest.raises(AtlasError, match="is a file, expected a folder"):
        with atomic_dir(tmp_path / "index.html"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


@pytest.mark.parametrize("out, inp, message", [
    ("a", "a", "are the same path"),
    ("a", "a/b.h5ad", "overlap: --in is inside --out"),
    ("a/b", "a", "overlap: --out is inside --in"),
])
def test_overlapping_paths_are_refused(tmp_path, out, inp, message):
    with pytest.raises(AtlasError, match=message):
        check_disjoint([("--out", tmp_path / out)], [("--in", tmp_path / inp)])
    check_disjoint([("--out", tmp_path / "x")], [("--in", tmp_path / "xy"), ("--none", None)])


def test_only_earlier_outputs_are_replaceable(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "codes.json").write_text("{}")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("years of work")
    for ok in ("absent", "empty", "mine"):
        check_replaceable(tmp_path / ok, "codes.json", "a codes folder")
    with pytest.raises(AtlasError, match="theirs: exists and is not a codes folder"):
        check_replaceable(tmp_path / "theirs", "codes.json", "a codes folder")


def test_garbage_gzip_is_named(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(AtlasError, match="x.gz: not a readable gzip file"):
        read_maybe_gzip(tmp_path / "x.gz")
    (tmp_path / "plain").write_bytes(b"text")
    assert read_maybe_gzip(tmp_path / "plain") == b"text"
