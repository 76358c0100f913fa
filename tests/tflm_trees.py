"""The TFLM source trees the emulated-target tests build with.

They come from ``EDGEKIT_TFLM_SRC`` (one folder, or several separated by ``os.pathsep``; ``make test``
points it at the trees it finds). Without the tree a test needs, it is skipped with a loud reason.
"""
from __future__ import annotations

import shutil

import pytest

TOOLS = ("qemu-system-arm", "arm-none-eabi-gcc", "arm-none-eabi-g++")


def require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"EMULATED TARGET SKIPPED: needs {', '.join(missing)} (Debian: qemu-system-arm "
                    "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib)")


def require_tree(layout: str, name: str | None = None):
    """The first tree of ``layout`` ("tflite-micro" or "arduino-library"), optionally of library ``name``."""
    from edgekit.tflm.tree import ENV_VAR, find_trees

    require_tools()
    for tree in find_trees().trees:
        if tree.layout == layout and (name is None or tree.name.lower() == name.lower()) and not tree.problems:
            return tree
    what = f"a {layout} TFLM tree" + (f" ({name})" if name else "")
    pytest.skip(f"TFLM TREE NOT GIVEN: set {ENV_VAR} to {what} to build firmware for the emulated Cortex-M4")
