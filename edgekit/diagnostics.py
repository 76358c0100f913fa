"""`edgekit doctor`: what this machine has for building, flashing and running models.

External tools are found on PATH and asked for their version through the one seam
(:func:`edgekit.runners.seam.run_tool`); Python runtimes are imported in child processes (in
parallel), so TensorFlow's import time is paid once, off the main process; serial ports are listed
and their access checked without opening them.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.runners import seam

# program -> (version arguments, or None for a program without a version flag; what edgekit uses it for).
# Every tool a runner declares (Capabilities.tools) is here (tests/unit/test_doctor.py).
TOOLS = {
    "arduino-cli": (["version"], "build and upload Arduino sketches (nano33ble)"),
    "esptool": (["version"], "write ESP32 flash (esp32s3)"),
    "pio": (["--version"], "build PlatformIO projects (esp32s3, pico)"),
    "picotool": (["version"], "load UF2 images onto RP2040 boards (pico)"),
    "adb": (["version"], "run models on Android devices"),
    "ssh": (["-V"], "run models on Raspberry Pis"),
    "scp": (None, "copy models and the agent to Raspberry Pis (OpenSSH, no version flag: found on PATH)"),
    "qemu-system-arm": (["--version"], "run the emulated Cortex-M4 (qemu-m4, --emulate)"),
    "arm-none-eabi-gcc": (["--version"], "cross-compile the Cortex-M4 firmware with TFLM (qemu-m4, --emulate)"),
}

# import name -> (distribution, what it is for)
RUNTIMES = {
    "tensorflow": ("tensorflow", "optimize and convert Keras models"),
    "ai_edge_litert": ("ai-edge-litert", "run .tflite models on the host (LiteRT)"),
    "tflite_runtime": ("tflite-runtime", "older LiteRT runtime (Raspberry Pi)"),
    "tflite_micro": ("tflite-micro", "run models on the host TFLM runtime (arena, validation)"),
}

TOOL_TIMEOUT_S = 15.0
RUNTIME_TIMEOUT_S = 90.0

_VERSION_PROBE = (
    "import importlib, os, sys\n"
    "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
    "os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
    "m = importlib.import_module(sys.argv[1])\n"
    "v = getattr(m, '__version__', None)\n"
    "if v is None:\n"
    "    from importlib import metadata\n"
    "    try:\n"
    "        v = metadata.version(sys.argv[2])\n"
    "    except metadata.PackageNotFoundError:\n"
    "        v = 'unknown'\n"
    "print('EDGEKIT_VERSION=' + str(v))\n"
)


@dataclass
class ToolCheck:
    name: str
    purpose: str
    installed: bool
    path: str | None = None
    version: str | None = None
    install_hint: str | None = None
    error: str | None = None


@dataclass
class RuntimeCheck:
    module: str
    purpose: str
    available: bool
    version: str | None = None
    error: str | None = None


@dataclass
class DoctorReport:
    python: str
    edgekit: str
    tools: list[ToolCheck] = field(default_factory=list)
    runtimes: list[RuntimeCheck] = field(default_factory=list)
    ports: list[dict] = field(default_factory=list)
    boards: int = 0
    problems: list[str] = field(default_factory=list)
    tflm_trees: list[dict] = field(default_factory=list)    # TFLM source trees found, and what they run
    tflm_refused: list[dict] = field(default_factory=list)  # folders given that are no usable tree

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def check_tool(name: str, tool=seam.run_tool) -> ToolCheck:
    args, purpose = TOOLS[name]
    path = seam.which(name)
    if path is None:
        return ToolCheck(name, purpose, False, install_hint=seam.INSTALL_HINTS.get(name))
    if args is None:
        return ToolCheck(name, purpose, True, path=path)
    try:
        result = tool([name, *args], timeout=TOOL_TIMEOUT_S)
        return ToolCheck(name, purpose, True, path=path, version=_first_line(result.output) or None)
    except EdgekitError as e:
        return ToolCheck(name, purpose, True, path=path, error=e.message)


def check_runtime(module: str, tool=seam.run_tool) -> RuntimeCheck:
    dist, purpose = RUNTIMES[module]
    try:
        result = tool([sys.executable, "-c", _VERSION_PROBE, module, dist], timeout=RUNTIME_TIMEOUT_S)
    except EdgekitError as e:
        tail = str(getattr(e, "context", {}).get("output_tail", "") or e.message).strip().splitlines()
        return RuntimeCheck(module, purpose, False, error=tail[-1] if tail else e.message)
    version = None
    for line in result.output.splitlines():
        if line.startswith("EDGEKIT_VERSION="):
            version = line.split("=", 1)[1].strip()
    return RuntimeCheck(module, purpose, True, version=version)


def tflm_trees(explicit=None, tool=seam.run_tool) -> tuple[list[dict], list[dict]]:
    """The TFLM source trees edgekit can build firmware from, with their facts (edgekit.tflm.tree)."""
    from edgekit.tflm.tree import find_trees

    search = find_trees(explicit, tool=tool)
    trees = []
    for t in search.trees:
        d = t.to_dict()
        d.pop("resolver_methods")
        trees.append(d)
    return trees, search.refused


def doctor(*, tools: bool = True, runtimes: bool = True, ports: bool = True, trees: bool = True,
           tflm_src=None) -> DoctorReport:
    """Check tools, runtimes, TFLM trees and ports; never raises for a missing piece (it is reported)."""
    from edgekit._version import __version__

    report = DoctorReport(python=sys.version.split()[0], edgekit=__version__)
    if trees:
        try:
            report.tflm_trees, report.tflm_refused = tflm_trees(tflm_src)
        except EdgekitError as e:
            report.problems.append(f"--tflm-src: {e.message}")
        for t in report.tflm_trees:
            for problem in t["problems"]:
                report.problems.append(f"TFLM tree {t['root']}: {problem}")
    with ThreadPoolExecutor(max_workers=6) as pool:
        runtime_jobs = [pool.submit(check_runtime, m) for m in RUNTIMES] if runtimes else []
        tool_jobs = [pool.submit(check_tool, t) for t in TOOLS] if tools else []
        report.tools = [j.result() for j in tool_jobs]
        report.runtimes = [j.result() for j in runtime_jobs]
    try:
        from edgekit.boards import list_boards

        boards = list_boards()
        report.boards = len(boards)
    except EdgekitError as e:
        boards = []
        report.problems.append(f"board files: {e.message}")
    if ports:
        from edgekit.ports import find_devices

        try:
            report.ports = [d.to_dict() for d in find_devices(boards)]
        except Exception as e:  # noqa: BLE001 - a broken port listing is a finding, not a crash
            report.problems.append(f"serial ports cannot be listed: {e}")
    for p in report.ports:
        if p["access"] == "no-permission":
            report.problems.append(f"no permission to open {p['device']}: {p['detail']}")
    return report

