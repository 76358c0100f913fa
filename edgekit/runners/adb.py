"""The adb runner: profile a model with LiteRT's ``benchmark_model`` on an Android device.

``adb`` (Debian package ``adb``, or the SDK platform-tools) runs through the seam. The user supplies
the ``benchmark_model`` binary for the phone's ABI (``--benchmark-binary``, or one on PATH); edgekit
pushes it and the model to ``/data/local/tmp/edgekit`` (names edgekit makes, so nothing the user
typed reaches the device shell unquoted), runs it with warm-up and run counts and op profiling,
and turns its output (parsed by :mod:`edgekit.runners.benchmark_model`) into an
``edgekit.profile/1`` document with runner ``"adb"``.

benchmark_model prints aggregate numbers only: ``latency_samples_us`` is empty and ``p90``/``p99``
are null; ``median`` is filled when the binary prints it (newer versions); memory is the tool's own
footprint estimate in MB, not an arena.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError, ToolMissing, UsageError
from edgekit.runners import seam
from edgekit.runners.base import Capabilities, Runner, RunnerOption

DEVICE_DIR = "/data/local/tmp/edgekit"
BENCHMARK_NAME = "benchmark_model"
BENCHMARK_HINT = ("download LiteRT's benchmark_model for the phone's ABI (android_aarch64_benchmark_model, "
                  "https://ai.google.dev/edge/litert/models/measurement) and pass --benchmark-binary")


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str            # device, unauthorized, offline, no permissions, ...
    properties: dict

    def to_dict(self) -> dict:
        return {"serial": self.serial, "state": self.state, **self.properties}


def parse_devices(text: str) -> list[AdbDevice]:
    """Devices from ``adb devices -l`` output (daemon start-up chatter is skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("*") or line.startswith("List of devices") or line.startswith("adb "):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, rest = parts[0], parts[1:]
        state_words = []
        while rest and ":" not in rest[0]:
            state_words.append(rest.pop(0))
        props = dict(p.split(":", 1) for p in rest if ":" in p)
        out.append(AdbDevice(serial, " ".join(state_words), props))
    return out


class AdbRunner(Runner):
    name = "adb"
    description = "run models with LiteRT on an Android device over adb"
    capabilities = Capabilities(run=True, profile=True, model_upload=True, tools=("adb",))

    @classmethod
    def options_spec(cls):
        return [RunnerOption("serial", "adb device serial (adb -s); required when several are connected"),
                RunnerOption("benchmark_binary", "LiteRT benchmark_model built for the device (default: on PATH)"),
                RunnerOption("timeout", "seconds one adb command may take", 300, int),
                RunnerOption("threads", "LiteRT CPU threads", 1, int),
                RunnerOption("xnnpack", "use the XNNPACK delegate", True, bool)]

    # -- devices ------------------------------------------------------------------------------------
    def devices(self) -> list[AdbDevice]:
        return parse_devices(self.tool(["adb", "devices", "-l"], timeout=30).output)

    def pick_device(self) -> str:
        wanted = self.options.get("serial")
        found = self.devices()
        if self.dry_run:
            return wanted or "SERIAL"
        listing = ", ".join(f"{d.serial} ({d.state})" for d in found)
        if wanted:
            match = [d for d in found if d.serial == wanted]
            if not match:
                raise DeviceError(f"no Android device {wanted} connected",
                                  hint=f"connected: {listing}" if found else "connect it and enable USB debugging")
            dev = match[0]
        else:
            if not found:
                raise DeviceError("no Android device connected (adb devices lists none)",
                                  hint="connect the phone by USB and enable USB debugging in Developer options")
            if len(found) > 1:
                raise UsageError(f"{len(found)} Android devices connected; pick one with --device",
                                 hint=f"connected: {listing}")
            dev = found[0]
        if dev.state == "unauthorized":
            raise DeviceError(f"Android device {dev.serial} is unauthorized",
                              hint="unlock the phone and accept the 'Allow USB debugging' prompt, then retry")
        if dev.state != "device":
            raise DeviceError(f"Android device {dev.serial} is {dev.state or 'not ready'}",
                              hint="reconnect the cable; `adb kill-server` if it stays offline")
        return dev.serial

    def benchmark_binary(self) -> Path:
        given = self.options.get("benchmark_binary")
        path = Path(given) if given else (Path(seam.which(BENCHMARK_NAME)) if seam.which(BENCHMARK_NAME) else None)
        if path is None:
            raise ToolMissing("no benchmark_model binary for the device", hint=BENCHMARK_HINT, tool=BENCHMARK_NAME)
        if not path.is_file():
            raise ToolMissing(f"benchmark_model binary {path} does not exist", hint=BENCHMARK_HINT,
                              tool=BENCHMARK_NAME)
        return path

    # -- command lines ------------------------------------------------------------------------------
    def adb(self, serial: str, *args: str, timeout: float | None = None):
        return self.tool(["adb", "-s", serial, *args], timeout=timeout or self.options["timeout"])

    @staticmethod
    def benchmark_command(remote_model: str, *, runs: int, warmup: int, threads: int, xnnpack: bool) -> str:
        from edgekit.runners.benchmark_model import command_args

        return shlex.join([f"{DEVICE_DIR}/{BENCHMARK_NAME}",
                           *command_args(remote_model, runs=runs, warmup=warmup, threads=threads, xnnpack=xnnpack)])

    # -- commands -----------------------------------------------------------------------------------
    def do_profile(self, model_path=None, runs: int = 50, warmup: int = 5, threads: int | None = None,
                   xnnpack: bool | None = None, **_) -> Any:
        threads = self.options["threads"] if threads is None else threads
        xnnpack = self.options["xnnpack"] if xnnpack is None else xnnpack
        if model_path is None:
            raise UsageError(f"runner {self.name}: profile needs a model", hint="pass the .tflite file to profile")
        from edgekit.fileio import read_input
        from edgekit.profiling import model_facts
        from edgekit.runners.benchmark_model import parse, to_profile

        if runs < 1 or warmup < 0 or threads < 1:
            raise UsageError(f"runs and threads must be >= 1 and warmup >= 0, got {runs}, {warmup}, {threads}")
        path = Path(model_path)
        facts = model_facts(read_input(path, "model"), str(path))
        binary = self.benchmark_binary()
        serial = self.pick_device()
        remote_model = f"{DEVICE_DIR}/model-{facts.sha256[:16]}.tflite"
        remote_bin = f"{DEVICE_DIR}/{BENCHMARK_NAME}"
        self.adb(serial, "shell", f"mkdir -p {DEVICE_DIR}", timeout=60)
        self.adb(serial, "push", str(binary.resolve()), remote_bin)
        self.adb(serial, "shell", f"chmod 755 {remote_bin}", timeout=60)
        self.adb(serial, "push", str(path.resolve()), remote_model)
        result = self.adb(serial, "shell", self.benchmark_command(remote_model, runs=runs, warmup=warmup,
                                                                   threads=threads, xnnpack=xnnpack))
        if self.dry_run:
            return None
        return to_profile(parse(result.output, expect_ops=True), path=path, facts=facts, board=self.board,
                          device={"serial": serial, "threads": threads, "xnnpack": xnnpack}, runs=runs,
                          warmup=warmup, runner="adb")

    def do_run(self, model_path=None, **kw):
        return self.do_profile(model_path, **kw)
