"""arduino-cli: compile the rendered Arduino sketch and upload it with --fqbn and --port.

The pinned core platform and libraries come from the board file (``build.arduino_core``,
``build.arduino_libraries``) and are installed first; installing what is already there is a no-op.
arduino-cli itself performs the 1200-bps touch and waits for the bootloader port when the core's
boards.txt asks for it; edgekit's reset strategy then waits for the sketch's port to come back.
"""
from __future__ import annotations

from pathlib import Path

from edgekit.errors import BoardError
from edgekit.runners.base import BuildResult, Capabilities, RunnerOption
from edgekit.runners.link import LinkRunner

SKETCH_NAME = "edgekit_runner"
BUILD_TIMEOUT_S = 1800.0   # a first TFLM build with a fresh core download is slow
UPLOAD_TIMEOUT_S = 180.0


class ArduinoCliRunner(LinkRunner):
    name = "arduino-cli"
    description = "compile with arduino-cli and upload over the board's USB serial port"
    project_format = "arduino"
    enters_bootloader_itself = True
    capabilities = Capabilities(build=True, flash=True, run=True, profile=True, validate=True, needs_port=True,
                                link=True, tools=("arduino-cli",))

    @classmethod
    def options_spec(cls):
        return [*super().options_spec(), RunnerOption("fqbn", "override the board file's fully qualified board name"),
                RunnerOption("skip_install", "do not install the pinned core and libraries", False, bool)]

    def _fqbn(self) -> str:
        fqbn = self.options.get("fqbn") or (self.board.build or {}).get("fqbn")
        if not fqbn:
            raise BoardError(f"board {self.board.id} has no build.fqbn for arduino-cli",
                             hint="add build.fqbn to its board file")
        return fqbn

    @staticmethod
    def sketch_dir(project_dir: Path) -> Path:
        return Path(project_dir) / SKETCH_NAME

    def do_build(self, project_dir, **_) -> BuildResult:
        project_dir = Path(project_dir)
        fqbn = self._fqbn()
        build = self.board.build or {}
        if not self.options.get("skip_install"):
            if build.get("arduino_core"):
                self.tool(["arduino-cli", "core", "install", build["arduino_core"]], timeout=BUILD_TIMEOUT_S)
            for lib in build.get("arduino_libraries", []) or []:
                self.tool(["arduino-cli", "lib", "install", lib], timeout=BUILD_TIMEOUT_S)
        out_dir = project_dir / "build"
        self.tool(["arduino-cli", "compile", "--fqbn", fqbn, "--output-dir", str(out_dir),
                   str(self.sketch_dir(project_dir))], timeout=BUILD_TIMEOUT_S)
        return BuildResult(project_dir, {"input_dir": out_dir,
                                         "firmware.bin": out_dir / f"{SKETCH_NAME}.ino.bin"})

    def do_flash(self, build: BuildResult, port: str, **_) -> str:
        self.tool(["arduino-cli", "upload", "--fqbn", self._fqbn(), "--port", port,
                   "--input-dir", str(build.artifacts["input_dir"]), str(self.sketch_dir(build.project_dir))],
                  timeout=UPLOAD_TIMEOUT_S)
        return port
