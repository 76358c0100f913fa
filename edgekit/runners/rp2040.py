"""picotool / UF2 (RP2040): build the PlatformIO project, turn firmware.bin into a UF2, load it.

With picotool on PATH: ``picotool load -v -x firmware.uf2`` (verify, then run). Without it, the
UF2 is copied to the board's mass-storage drive (label ``RPI-RP2``) when one is mounted. Either
way the board must be in BOOTSEL mode first: the board file's 1200-bps touch does that for
Arduino-core firmware; a blank board needs BOOTSEL held while plugging it in.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from edgekit.errors import DeviceError, ToolMissing, UsageError
from edgekit.fileio import read_input, write_bytes
from edgekit.runners import seam
from edgekit.runners.base import BuildResult, Capabilities, RunnerOption
from edgekit.runners.link import LinkRunner
from edgekit.runners.esp import build_with_platformio

UPLOAD_TIMEOUT_S = 120.0

UF2_MAGIC_START0 = 0x0A324655
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_FAMILY_ID = 0x00002000
RP2040_FAMILY_ID = 0xE48BFF56
RP2040_FLASH_BASE = 0x10000000
UF2_PAYLOAD = 256


def bin_to_uf2(data: bytes, base_address: int = RP2040_FLASH_BASE, family_id: int = RP2040_FAMILY_ID) -> bytes:
    """A UF2 image of ``data`` at ``base_address``: 256 payload bytes in each 512-byte block."""
    blocks = [data[i:i + UF2_PAYLOAD] for i in range(0, len(data), UF2_PAYLOAD)] or [b""]
    out = bytearray()
    for number, chunk in enumerate(blocks):
        header = struct.pack("<8I", UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_FLAG_FAMILY_ID,
                             base_address + number * UF2_PAYLOAD, UF2_PAYLOAD, number, len(blocks), family_id)
        out += header + chunk.ljust(476, b"\x00") + struct.pack("<I", UF2_MAGIC_END)
    return bytes(out)


def find_uf2_volume(label: str) -> Path | None:
    """The mount point of a mounted UF2 drive with this label (reads /proc/mounts; the one seam)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [line.split()[1].replace("\\040", " ") for line in f if len(line.split()) > 1]
    except OSError:
        mounts = []
    for mount in mounts:
        path = Path(mount)
        if path.name == label and (path / "INFO_UF2.TXT").exists():
            return path
    return None


class PicotoolRunner(LinkRunner):
    name = "picotool"
    description = "build with PlatformIO, load the UF2 with picotool (or copy it to the RPI-RP2 drive)"
    project_format = "platformio"
    capabilities = Capabilities(build=True, flash=True, reset=True, run=True, profile=True, validate=True,
                                needs_port=False, link=True, tools=("pio", "picotool"))

    @classmethod
    def options_spec(cls):
        return [*super().options_spec(), RunnerOption("method", "auto | picotool | uf2-copy", "auto")]

    def do_build(self, project_dir, **_) -> BuildResult:
        result = build_with_platformio(self, Path(project_dir))
        result.artifacts["firmware.uf2"] = result.artifacts["build_dir"] / "firmware.uf2"
        bin_path = result.artifacts["firmware.bin"]
        self.log(f"# write {result.artifacts['firmware.uf2']} from {bin_path} (RP2040 family, base 0x10000000)")
        if not self.dry_run:
            write_bytes(result.artifacts["firmware.uf2"], bin_to_uf2(read_input(bin_path, "firmware image")))
        return result

    def _method(self) -> str:
        method = self.options.get("method") or "auto"
        if method not in ("auto", "picotool", "uf2-copy"):
            raise UsageError(f"picotool runner: method must be auto, picotool or uf2-copy, got {method!r}")
        if method != "auto":
            return method
        if self.dry_run or seam.which("picotool"):
            return "picotool"
        return "uf2-copy"

    def do_flash(self, build: BuildResult, port: str | None = None, **_) -> str | None:
        uf2 = build.artifacts["firmware.uf2"]
        method = self._method()
        if method == "picotool":
            self.tool(["picotool", "load", "-v", "-x", str(uf2)], timeout=UPLOAD_TIMEOUT_S)
            return port
        label = (self.board.upload or {}).get("uf2_volume_label", "RPI-RP2")
        volume = find_uf2_volume(label)
        if volume is None:
            raise ToolMissing(f"picotool is not installed and no {label} drive is mounted",
                              hint=f"{seam.INSTALL_HINTS['picotool']}; or hold BOOTSEL while plugging the "
                                   f"board in and mount the {label} drive")
        self.log(f"# copy {uf2} to {volume}/")
        if not self.dry_run:
            try:
                shutil.copyfile(uf2, volume / os.path.basename(uf2))
            except OSError as e:
                raise DeviceError(f"cannot copy the UF2 to {volume}: {e.strerror}",
                                  hint="is the drive still mounted and writable?") from e
        return port

    def do_reset(self, **_) -> None:
        self.tool(["picotool", "reboot"], timeout=30.0)
