"""Atomic output: write to a temporary name in the same folder, fsync, then rename.

A failed or interrupted run never leaves a half-written file, and earlier outputs stay intact.
Temporary names are ``.<name>.<pid>.<random>.tmp``; one that a killed run left behind (kill -9,
power loss) is removed by the next write to that folder: see :func:`clean_stale_temps`.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from edgekit.errors import InputFileError, OutputError

# .<target name>.[<writer pid>.]<8 random characters of tempfile.mkstemp>.tmp (names without the pid
# come from edgekit versions before the pid was added)
_TEMP_NAME = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>[0-9]+)\.)?[a-z0-9_]{8}\.tmp$")
# A temp file whose writer is gone (no such pid here) and that was not touched for this long is stale.
STALE_DEAD_WRITER_S = 30.0
# Any temp file of edgekit's naming not touched for this long is stale, whoever wrote it.
STALE_ANY_S = 15 * 60.0


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    ensure_dir(path.parent)
    clean_stale_temps(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write in {path.parent}: {e.strerror}",
                          hint="choose an output folder you can write to") from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, skip_if_same: bool = True) -> bool:
    """Atomically write ``data``; returns False (and leaves the file alone) when it already holds it.

    Keeping unchanged files untouched keeps build systems' up-to-date checks happy.
    """
    path = Path(path)
    if skip_if_same and path.is_file():
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
        except OSError:
            pass
    with atomic_open(path, "wb") as f:
        f.write(data)
    return True


def write_text(path: str | os.PathLike, text: str, *, skip_if_same: bool = True) -> bool:
    return write_bytes(path, text.encode("utf-8"), skip_if_same=skip_if_same)


def write_group(folder: str | os.PathLike, files: dict[str, bytes]) -> list[str]:
    """Write several files that belong together (a model and its report) as one step.

    Every changed file is first written in full to a temporary name; only then are they renamed into
    place, one right after the other. An error or Ctrl-C while writing leaves all old files as they
    were. Unchanged files are left untouched. Returns the names that were (re)written.
    """
    folder = ensure_dir(folder)
    clean_stale_temps(folder)
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            path = folder / name
            try:
                if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                    continue
            except OSError:
                pass
            try:
                fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(name), suffix=".tmp", dir=folder)
            except OSError as e:
                raise OutputError(f"cannot write in {folder}: {e.strerror}",
                                  hint="choose an output folder you can write to") from e
            staged.append((name, Path(tmp)))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for name, tmp in staged:
            os.replace(tmp, folder / name)
    finally:
        for _, tmp in staged:
            if tmp.exists():
                tmp.unlink()
    return [name for name, _ in staged]


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True          # os.kill(pid, 0) would send CTRL_C_EVENT there: rely on the age alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True          # exists but belongs to someone else (or cannot be asked): keep its files
    return True


def clean_stale_temps(folder: str | os.PathLike, *, now: float | None = None) -> list[str]:
    """Remove temp files of edgekit's own naming that a killed run left in ``folder``; returns their names.

    Only regular files named ``.<name>.[<pid>.]<8 random>.tmp`` are candidates, and only when their
    writer cannot be writing them any more: its pid (in the name) does not exist on this machine and
    the file was not modified for :data:`STALE_DEAD_WRITER_S`, or the file was not modified for
    :data:`STALE_ANY_S` whoever wrote it. A write in progress touches its temp file within
    milliseconds and renames it right after, so a concurrent edgekit run never loses its files; the
    age guard on a dead pid keeps a writer on another machine (a shared folder) safe too. Nothing
    here raises: cleaning is a courtesy, never a reason for a write to fail.
    """
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age_s = now - entry.stat(follow_symlinks=False).st_mtime
            pid = m.group("pid")
            dead_writer = pid is not None and int(pid) != os.getpid() and not _pid_alive(int(pid))
            if age_s >= STALE_ANY_S or (dead_writer and age_s >= STALE_DEAD_WRITER_S):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed


def check_output_dir(path: str | os.PathLike) -> Path:
    """Fail at once, before any work, when ``path`` cannot become a folder edgekit can write in.

    Creates nothing (the folder is made when there is something to write): ``path`` must be a
    writable folder, or not exist under a writable folder. A path under a regular file, an existing
    file, or a folder without write permission is an :class:`~edgekit.errors.OutputError`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder",
                          hint="remove it or choose another output folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise OutputError(f"cannot create folder {path}: {existing} is a file, not a folder",
                          hint="choose an output folder whose parents are folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing} is the nearest existing folder)"
        raise OutputError(f"cannot write in {existing}: permission denied{where}",
                          hint="choose an output folder you can write to")
    return path


def ensure_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder",
                          hint="remove it or choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {path}: {e.strerror}") from e
    return path


def read_input(path: str | os.PathLike, what: str = "file") -> bytes:
    """Read an input file with one clear error for missing / folder / unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputFileError(f"{path} is a folder, expected a {what}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputFileError(f"cannot read {path}: {e.strerror}") from e


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
