"""Boards are data: one YAML file per board in targets/, the file name is the id.

Required keys are checked when a file is loaded, with an error naming the file and the key. No code
anywhere branches on a board's name; it reads these fields.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgekit.errors import BoardError
from edgekit.resources import targets_dir  # noqa: F401  (re-exported: edgekit.boards.targets_dir)


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    cpu: str
    clock_hz: int
    flash_bytes: int
    ram_bytes: int
    firmware_flash_bytes: int      # what the firmware (runtime, protocol core, kernels) takes; estimate
    firmware_ram_bytes: int        # stacks, heap, driver buffers; estimate
    peak_int8_macs_per_cycle: float
    active_power_mw: float
    runtime: str                   # "tflm" | "litert"
    runner: str                    # a runner name from edgekit.runners
    aliases: tuple[str, ...] = ()
    arch: str = ""
    int8_only: bool = False        # the runtime on this board cannot run float kernels usefully
    runtime_model_upload: bool = False   # takes a model over the link at run time (no re-flash)
    usb_hwids: tuple[tuple[int, int], ...] = ()
    baud: int = 115200
    build: dict = field(default_factory=dict)
    upload: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)   # where each number comes from
    notes: str = ""
    # the TFLM runtime the board builds with, and what it is known to run (edgekit.tflm.compat)
    tflm: dict | None = None
    # the emulated core that runs this board's firmware (edgekit.runners.qemu, --emulate)
    emulator: dict = field(default_factory=dict)

    @property
    def usable_flash_bytes(self) -> int:
        return self.flash_bytes - self.firmware_flash_bytes

    @property
    def usable_ram_bytes(self) -> int:
        return self.ram_bytes - self.firmware_ram_bytes

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["aliases"] = list(self.aliases)
        out["usb_hwids"] = [f"{v:04x}:{p:04x}" for v, p in self.usb_hwids]
        return out


_REQUIRED = {
    "name": str, "cpu": str, "clock_hz": int, "flash_bytes": int, "ram_bytes": int,
    "firmware_flash_bytes": int, "firmware_ram_bytes": int, "peak_int8_macs_per_cycle": (int, float),
    "active_power_mw": (int, float), "runtime": str, "runner": str,
}
_OPTIONAL = {
    "aliases": list, "arch": str, "int8_only": bool, "runtime_model_upload": bool, "usb_hwids": list,
    "baud": int, "build": dict, "upload": dict, "sources": dict, "notes": str, "tflm": dict,
    "emulator": dict,
}
TFLM_KEYS = ("library", "decode", "per_channel_fully_connected", "ops_missing", "ops_16x8", "source")
EMULATOR_KEYS = ("machine", "cpu", "fpu", "float_abi")
RUNTIMES = ("tflm", "litert")

# Keys that runners read from a board's `build:` and `upload:` mappings. Other keys are allowed (a new
# runner may need its own), but a key that looks like a misspelling of one of these is an error.
BUILD_KEYS = ("fqbn", "platformio_board", "platformio_env", "esptool_chip", "project_format",
              "arduino_core", "arduino_libraries")
UPLOAD_KEYS = ("use_1200bps_touch", "wait_for_upload_port", "upload_port_timeout_s", "flash_baud",
               "before", "after", "flash_offsets", "uf2_volume_label", "boot_wait_s")
PROJECT_FORMATS = ("arduino", "platformio")


def _parse_hwid(text: Any, path: Path) -> tuple[int, int]:
    try:
        vid, pid = str(text).split(":")
        return int(vid, 16), int(pid, 16)
    except ValueError as e:
        raise BoardError(f"{path.name}: usb_hwids entry {text!r} is not VID:PID in hex (e.g. 2341:805a)") from e


def parse_board_file(path: Path) -> Board:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BoardError(f"board file {path.name} cannot be read: {e}") from e
    if not isinstance(raw, dict):
        raise BoardError(f"board file {path.name} must hold a mapping of keys")
    for key, typ in _REQUIRED.items():
        if key not in raw:
            raise BoardError(f"board file {path.name} is missing the required key '{key}'")
        if not isinstance(raw[key], typ) or isinstance(raw[key], bool):
            raise BoardError(f"board file {path.name}: key '{key}' must be "
                             f"{getattr(typ, '__name__', 'a number')}, got {raw[key]!r}")
    for key, val in raw.items():
        if key in _REQUIRED:
            continue
        if key not in _OPTIONAL:
            close = difflib.get_close_matches(key, [*_REQUIRED, *_OPTIONAL], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BoardError(f"board file {path.name}: unknown key '{key}'{hint}")
        if not isinstance(val, _OPTIONAL[key]):
            raise BoardError(f"board file {path.name}: key '{key}' must be {_OPTIONAL[key].__name__}")
    if raw["runtime"] not in RUNTIMES:
        raise BoardError(f"board file {path.name}: runtime must be one of {', '.join(RUNTIMES)}")
    from edgekit.runners import RUNNER_NAMES  # a table of names; imports no runner code

    if raw["runner"] not in RUNNER_NAMES:
        close = difflib.get_close_matches(str(raw["runner"]), RUNNER_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BoardError(f"board file {path.name}: unknown runner '{raw['runner']}'{hint}",
                         hint=f"runners: {', '.join(RUNNER_NAMES)}")
    for section, known in (("build", BUILD_KEYS), ("upload", UPLOAD_KEYS)):
        for key in raw.get(section, {}) or {}:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
            if close:
                raise BoardError(f"board file {path.name}: unknown key '{section}.{key}' "
                                 f"(did you mean '{section}.{close[0]}'?)")
    for section, known in (("tflm", TFLM_KEYS), ("emulator", EMULATOR_KEYS)):
        for key in raw.get(section) or {}:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
                raise BoardError(f"board file {path.name}: unknown key '{section}.{key}'{hint}",
                                 hint=f"{section} keys: {', '.join(known)}")
    if raw.get("emulator") and "machine" not in raw["emulator"]:
        raise BoardError(f"board file {path.name}: emulator needs a 'machine' (e.g. mps2-an386)")
    fmt = (raw.get("build") or {}).get("project_format")
    if fmt is not None and fmt not in PROJECT_FORMATS:
        raise BoardError(f"board file {path.name}: build.project_format must be one of "
                         f"{', '.join(PROJECT_FORMATS)}, got {fmt!r}")
    offsets = (raw.get("upload") or {}).get("flash_offsets")
    if offsets is not None and (not isinstance(offsets, dict)
                                or not all(isinstance(v, int) and v >= 0 for v in offsets.values())):
        raise BoardError(f"board file {path.name}: upload.flash_offsets must map file names to "
                         "non-negative integer offsets (e.g. firmware.bin: 0x10000)")
    for key in ("clock_hz", "flash_bytes", "ram_bytes"):
        if raw[key] <= 0:
            raise BoardError(f"board file {path.name}: key '{key}' must be positive")
    kwargs = {k: raw[k] for k in _REQUIRED}
    kwargs.update({k: raw[k] for k in _OPTIONAL if k in raw})
    kwargs["aliases"] = tuple(str(a) for a in raw.get("aliases", []))
    kwargs["usb_hwids"] = tuple(_parse_hwid(h, path) for h in raw.get("usb_hwids", []))
    return Board(id=path.stem, **kwargs)


@lru_cache(maxsize=None)
def _all_boards(folder: str) -> dict[str, Board]:
    boards = {}
    for p in sorted(Path(folder).glob("*.yaml")):
        boards[p.stem] = parse_board_file(p)
    return boards


def list_boards(folder: Path | None = None) -> list[Board]:
    return list(_all_boards(str(folder or targets_dir())).values())


def load_board(name: str, folder: Path | None = None) -> Board:
    """Return the board with this id or alias; unknown names get the closest ids suggested."""
    boards = _all_boards(str(folder or targets_dir()))
    if name in boards:
        return boards[name]
    for b in boards.values():
        if name in b.aliases:
            return b
    names = [*boards, *(a for b in boards.values() for a in b.aliases)]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise BoardError(f"unknown board '{name}'",
                     hint=f"{hint}`edgekit boards` lists them ({', '.join(sorted(boards))})")
