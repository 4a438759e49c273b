"""Safe output: folders built aside and swapped into place, stale leftovers tidied, inputs kept apart from outputs.

A folder `T` is written as `.T.tmp-<owner>-<pid>-<random>` beside it, then swapped in. On Linux the swap is one
renameat2(RENAME_EXCHANGE): `T` always exists, holding either the old or the new content. Elsewhere (or on a
file system without it) the swap is two renames, old content out to `.T.old-...`, new content in; a process
killed between them leaves no `T`, and the next run in that folder moves the old content back. Swaps and the
tidying run under an exclusive flock on the parent folder, so two processes swapping the same folder never
interleave. A temporary or old folder whose process is gone (SIGKILL, power loss) is removed by the next run
in the same parent folder. <owner> is a hash of the host and PID namespace, so a folder shared between
machines or containers is only ever tidied by the host that wrote it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gzip
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import AtlasError
from .pausepoint import pause_at

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<owner>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]+")


def _owner() -> str:
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return hashlib.sha1(f"{socket.gethostname()}:{ns}".encode()).hexdigest()[:8]


OWNER = _owner()


def _aside(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{OWNER}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` itself (no lock file left behind); released when the fd closes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks (some network mounts): swap unlocked
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def held(lock_file: Path, on_wait=lambda: None) -> Iterator[None]:
    """An exclusive flock on `lock_file` (created if needed) for the whole block: a second process waits,
    after calling on_wait() once, instead of working beside the first. Released when the process ends."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # no locks on this file system: run unlocked, as the swaps do
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def held_cache(cache: Path, on_wait=lambda: None) -> Iterator[None]:
    """held() on CACHE/.build.lock: one build at a time per cache. A cache folder this call creates is removed
    again when the block fails before anything but the lock was written in it (a refused build leaves no cache)."""
    cache = Path(cache)
    lock, fresh = cache / ".build.lock", not cache.exists()
    try:
        with held(lock, on_wait):
            yield
    except BaseException:
        if fresh and cache.is_dir() and {p.name for p in cache.iterdir()} <= {lock.name}:
            lock.unlink(missing_ok=True)
            cache.rmdir()
        raise


@contextlib.contextmanager
def held_folder(folder: Path, on_wait=lambda: None) -> Iterator[None]:
    """Exclusive use of an existing output folder for a read-modify-write, by every process that holds it this
    way: a flock on the folder itself (no lock file left behind), taken again when the folder was swapped while
    we waited, since our lock then held its old content. Swap the folder with atomic_dir inside the block."""
    folder = Path(folder)
    waited = False
    while True:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited:
                on_wait()
                waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # no locks on this file system: run unlocked, as the swaps do
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
        here, now = os.fstat(fd), os.stat(folder)
        if (here.st_dev, here.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)  # swapped while we waited: hold the folder that is there now
    try:
        yield
    finally:
        os.close(fd)


def tidy(folder: Path) -> list[Path]:
    """Remove leftovers of dead processes in `folder`; move back an old folder whose swap was cut short.

    Call with the folder locked. Returns what was removed or restored.
    """
    done = []
    for entry in sorted(Path(folder).iterdir()):
        m = _LEFTOVER.fullmatch(entry.name)
        if not m or m["owner"] != OWNER or _alive(int(m["pid"])):
            continue
        target = entry.parent / m["name"]
        if m["kind"] == "old" and not target.exists():
            entry.rename(target)  # killed between the two renames of the fallback swap: keep the old content
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)  # a file of atomic_write()
        done.append(entry)
    return done


_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
AT_FDCWD, RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the system or file system cannot (then fall back)."""
    if _renameat2 is None:
        return False
    if _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, target: Path) -> Path | None:
    """Put `tmp` at `target`; returns the path now holding the old content (to delete), if any."""
    if not target.exists() and not target.is_symlink():
        tmp.rename(target)
        return None
    if _exchange(tmp, target):
        return tmp
    old = _aside(target, "old")
    target.rename(old)
    try:
        tmp.rename(target)  # a kill between the renames leaves `old`, which tidy() moves back
    except BaseException:
        old.rename(target)
        raise
    return old


# The outputs this process has swapped in, for the line of an interrupted command (what was already replaced).
REPLACED: list[Path] = []


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """SIGINT held back for the block, so a swap is done whole; a Ctrl-C during it acts right after it."""
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):  # no POSIX signal masks here
        before = None
    try:
        yield
    finally:
        if before is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty folder next to `target`; on success it replaces `target`, on failure it is removed.

    The previous `target` stays whole until the swap, so a failed or killed run leaves it intact. An interrupt
    before the swap leaves the previous `target`; one during the swap acts after it (then `target` is new).
    """
    target = Path(target)
    if target.is_file():  # one stat: a folder being swapped by another process must not look like a file
        raise AtlasError(f"{target}: is a file, expected a folder to write")
    tmp = _aside(target, "tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent):
            tidy(target.parent)
        tmp.mkdir()
    except (PermissionError, NotADirectoryError, FileExistsError) as e:
        raise AtlasError(f"{target}: cannot write here ({e.strerror}: {e.filename})") from None
    try:
        yield tmp
        pause_at(f"swap {target.name}")
        with _no_sigint():
            with _locked(target.parent):
                old = _swap_in(tmp, target)
            # a folder inside a stage's temporary folder (.NAME.tmp-...) is not a user's output
            if not any(p.name.startswith(".") and ".tmp-" in p.name for p in target.parents):
                REPLACED.append(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    pause_at(f"swapped {target.name}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and rename it into place."""
    path = Path(path)
    tmp = _aside(path, "tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_maybe_gzip(path: Path) -> bytes:
    """The bytes of a file, gunzipped when it starts with the gzip magic number; damage is named."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise AtlasError(f"{path}: not a readable gzip file ({e or 'truncated'})") from None


def read_parquet(path: Path, columns: list[str] | None = None):
    """A Parquet table; a missing or damaged file, or a missing column, is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"{path}: missing")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise AtlasError(f"{path}: not a readable Parquet file with columns {', '.join(columns or ['(any)'])} "
                         f"({str(e).splitlines()[0]})") from None


def check_replaceable(path: Path, marker: str, what: str) -> Path:
    """Refuse to replace `path` unless it is absent, an empty folder, or a folder holding `marker`."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise AtlasError(f"{path}: exists and is not a folder; refusing to replace it with {what}")
    if path.is_dir() and not (path / marker).is_file() and any(path.iterdir()):
        raise AtlasError(f"{path}: exists and is not {what} (no {marker}); refusing to replace it")
    return path


def check_disjoint(outputs: Iterable[tuple[str, Path]], inputs: Iterable[tuple[str, Path | None]]) -> None:
    """Refuse an output that is an input, holds one, or sits inside one (labels name the options)."""
    inputs = [(label, Path(p), Path(p).resolve()) for label, p in inputs if p is not None]
    for olabel, out in outputs:
        o = Path(out).resolve()
        for ilabel, shown, i in inputs:
            if o == i:
                how = "are the same path"
            elif o in i.parents:
                how = f"overlap: {ilabel} is inside {olabel}"
            elif i in o.parents:
                how = f"overlap: {olabel} is inside {ilabel}"
            else:
                continue
            raise AtlasError(f"{olabel} {out} and {ilabel} {shown} {how}; write the output somewhere else")
