"""esptool (ESP32 family): build the PlatformIO project, then write its images with esptool.

Chosen over ``pio run -t upload`` so the exact esptool command line (chip, offsets, reset modes,
all from the board file) is visible, testable, and can be replayed by hand. Needs esptool 5 (the
hyphenated command names; pip install 'esptool>=5').
"""
from __future__ import annotations

from pathlib import Path

from edgekit.errors import BoardError
from edgekit.runners.base import BuildResult, Capabilities, Runner, RunnerOption
from edgekit.runners.link import LinkRunner

UPLOAD_TIMEOUT_S = 300.0
PIO_BUILD_TIMEOUT_S = 1800.0   # a first build downloads the platform and toolchain


def platformio_env(board) -> str:
    return (board.build or {}).get("platformio_env") or board.id


def build_with_platformio(runner: Runner, project_dir: Path) -> BuildResult:
    """`pio run -e <env> -d <project>`; shared by the runners that flash PlatformIO builds."""
    env = platformio_env(runner.board)
    runner.tool(["pio", "run", "-e", env, "-d", str(project_dir)], timeout=PIO_BUILD_TIMEOUT_S)
    out_dir = project_dir / ".pio" / "build" / env
    return BuildResult(project_dir, {"build_dir": out_dir, "firmware.bin": out_dir / "firmware.bin",
                                     "firmware.elf": out_dir / "firmware.elf"})


class EsptoolRunner(LinkRunner):
    name = "esptool"
    description = "build with PlatformIO, write bootloader, partition table and app with esptool"
    project_format = "platformio"
    capabilities = Capabilities(build=True, flash=True, reset=True, run=True, profile=True, validate=True,
                                needs_port=True, link=True, tools=("pio", "esptool"))
    upload_takes_url = True          # esptool opens rfc2217:// ports (its docs: "Remote Serial Ports")

    @classmethod
    def options_spec(cls):
        return [*super().options_spec(), RunnerOption("flash_baud", "baud rate for writing flash (default: board file)", None, int),
                RunnerOption("chip", "esptool --chip (default: board file build.esptool_chip)")]

    def _chip(self) -> str:
        chip = self.options.get("chip") or (self.board.build or {}).get("esptool_chip")
        if not chip:
            raise BoardError(f"board {self.board.id} has no build.esptool_chip", hint="add it to its board file")
        return chip

    def _base(self, port: str) -> list[str]:
        upload = self.board.upload or {}
        baud = self.options.get("flash_baud") or upload.get("flash_baud", 460800)
        return ["esptool", "--chip", self._chip(), "--port", port, "--baud", str(baud),
                "--before", upload.get("before", "default-reset"), "--after", upload.get("after", "hard-reset")]

    def do_build(self, project_dir, **_) -> BuildResult:
        return build_with_platformio(self, Path(project_dir))

    def do_flash(self, build: BuildResult, port: str, **_) -> str:
        offsets = (self.board.upload or {}).get("flash_offsets")
        if not offsets:
            raise BoardError(f"board {self.board.id} has no upload.flash_offsets for esptool",
                             hint="add e.g. firmware.bin: 0x10000 to its board file")
        argv = [*self._base(port), "write-flash", "-z"]
        out_dir = build.artifacts["build_dir"]
        for name, offset in sorted(offsets.items(), key=lambda kv: kv[1]):
            argv += [hex(offset), str(Path(out_dir) / name)]
        self.tool(argv, timeout=UPLOAD_TIMEOUT_S)
        return port

    def do_reset(self, port: str, **_) -> None:
        self.tool(["esptool", "--chip", self._chip(), "--port", port, "--after", "hard-reset", "chip-id"],
                  timeout=60.0)
