"""Atomic output: write to a temporary name in the same folder, fsync, then rename.

A failed or interrupted run never leaves a half-written file, and earlier outputs stay intact.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from edgekit.errors import InputFileError, OutputError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
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
