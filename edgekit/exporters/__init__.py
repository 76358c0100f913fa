"""Export a .tflite model into what a device build eats.

``FORMATS`` maps a format name to its exporter; the `edgekit export` command dispatches through this
table, so a new format is one entry here. Every exporter has the signature
``fn(model, out_dir, *, name=None, board=None, **options) -> result`` where ``model`` is a .tflite
path or bytes, ``board`` a board id or edgekit.boards.Board (optional), and the result has
``to_dict()``.
"""
from __future__ import annotations

import os
from typing import Any, Callable


def _export_c(model, out_dir, *, name=None, board=None, **options):
    from edgekit.exporters.c_arrays import export_c

    return export_c(model, out_dir, name=name, board=board, **options)


def _export_firmware(fmt: str) -> Callable[..., Any]:
    def run(model, out_dir, *, name=None, board=None, **options):
        from edgekit.exporters.firmware import render_project

        return render_project(model, board, out_dir, fmt=fmt)

    return run


def _export_android(model, out_dir, *, name=None, board=None, **options):
    from edgekit.exporters.android import export_android

    return export_android(model, out_dir, name=name, board=board, **options)


FORMATS: dict[str, Callable[..., Any]] = {
    "c": _export_c,
    "arduino": _export_firmware("arduino"),
    "platformio": _export_firmware("platformio"),
    "android": _export_android,
}


def export(model: str | os.PathLike | bytes, out_dir: str | os.PathLike, *, format: str = "c",
           name: str | None = None, board: Any = None, **options) -> Any:
    """Export ``model`` to ``out_dir`` in ``format`` (a key of FORMATS)."""
    from edgekit.errors import UsageError

    fn = FORMATS.get(format)
    if fn is None:
        raise UsageError(f"unknown export format '{format}'",
                         hint="choose one of: " + ", ".join(sorted(FORMATS)))
    return fn(model, out_dir, name=name, board=board, **options)


def export_c(model: str | os.PathLike | bytes, out_dir: str | os.PathLike, *, name: str | None = None,
             board: Any = None, **options):
    """model_data.h / model_data.cc / model_ops.h for TFLM firmware (see edgekit.exporters.c_arrays)."""
    return FORMATS["c"](model, out_dir, name=name, board=board, **options)
