"""Where edgekit's own data lives: board files, firmware templates, and the build cache.

One place for all three, so a source checkout and an installed wheel (which carries targets/ and
firmware_templates/ as package data under edgekit/_data/) are found the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgekit.errors import BoardError

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str, marker: str) -> Path:
    for cand in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if (cand / marker).exists():
            return cand
    raise BoardError(f"no {name}/ folder found next to the edgekit package",
                     hint=f"reinstall edgekit; its {name.replace('_', ' ')} are missing")


def targets_dir() -> Path:
    """targets/ (one YAML file per board)."""
    return _data_dir("targets", "virtual.yaml")


def templates_dir() -> Path:
    """firmware_templates/ (device-side code: protocol core, sketches, QEMU firmware, Pi agent)."""
    return _data_dir("firmware_templates", "core")


def cache_dir() -> Path:
    """Built firmware and cached objects: $EDGEKIT_CACHE, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit."""
    env = os.environ.get("EDGEKIT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit"
