"""edgekit: shrink Keras models and put them on phones, Raspberry Pis and microcontrollers.

The public API is re-exported here lazily, so ``import edgekit`` stays instant and TensorFlow is only
imported by the functions that need it::

    import edgekit
    result = edgekit.convert("digits.keras", data="train.npz", eval_data="test.npz",
                             recipe=edgekit.Recipe.from_flags(prune=0.75, quantize="int8"),
                             out_dir="build/digits")
"""
from __future__ import annotations

import importlib

from edgekit._version import __version__

# public name -> "module:attribute"
_LAZY = {
    "convert": "edgekit.conversion.pipeline:convert",
    "ConvertResult": "edgekit.conversion.pipeline:ConvertResult",
    "Recipe": "edgekit.optimize.recipe:Recipe",
    "diagnose": "edgekit.conversion.doctor:diagnose",
    "Diagnosis": "edgekit.conversion.doctor:Diagnosis",
    "load_recipe": "edgekit.optimize.recipe:load_recipe",
    "load_data": "edgekit.conversion.data:load_data",
    "load_model": "edgekit.optimize.loading:load_model",
    "errors": "edgekit.errors",
    "profile": "edgekit.profiling:profile",
    "ProfileResult": "edgekit.profiling:ProfileResult",
    "validate": "edgekit.validation:validate",
    "ValidationResult": "edgekit.validation:ValidationResult",
    "report": "edgekit.report",
    "ReportData": "edgekit.report:ReportData",
    "VirtualBoard": "edgekit.link.virtual_board:VirtualBoard",
    "DeviceSession": "edgekit.link.session:DeviceSession",
    "inspect": "edgekit.model.inspect:inspect",
    "InspectResult": "edgekit.model.inspect:InspectResult",
    "export": "edgekit.exporters:export",
    "export_c": "edgekit.exporters:export_c",
    "export_android": "edgekit.exporters.android:export_android",
    "load_tflite": "edgekit.model.load:load_tflite",
    "flash": "edgekit.flashing:flash",
    "FlashResult": "edgekit.flashing:FlashResult",
    "check_fit": "edgekit.flashing:check_fit",
    "load_board": "edgekit.boards:load_board",
    "list_boards": "edgekit.boards:list_boards",
    "find_devices": "edgekit.ports:find_devices",
    "doctor": "edgekit.diagnostics:doctor",
    "render_project": "edgekit.exporters.firmware:render_project",
    "farm": "edgekit.farm",
    "farm_profile": "edgekit.farm:farm_profile",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    mod_name, _, attr = target.partition(":")
    mod = importlib.import_module(mod_name)
    value = getattr(mod, attr) if attr else mod
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
