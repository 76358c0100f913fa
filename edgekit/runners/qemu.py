"""The qemu runner: the edgekit runner firmware on an emulated Cortex-M4 (QEMU ``mps2-an386``) over a pty.

Two firmwares are built from ``firmware_templates/qemu-m4``:

- the **TFLM firmware** (what ``--board qemu-m4`` and ``--emulate`` run): the protocol core, the TFLM
  runner of the Arduino / PlatformIO projects and real TFLM + CMSIS-NN from a source tree
  (:mod:`edgekit.tflm`), cross-compiled through the seam with cached objects. QEMU runs it with
  ``-icount shift=0``, so SysTick counts executed instructions and profiles are deterministic
  instruction counts, not host time. ``--board qemu-m4`` builds an upload firmware (models are sent
  at run time); ``--emulate`` on a real board builds that board's firmware, its model built in, with
  the TFLM library the board pins (a Nano 33 BLE's Chirale library, say).
- the **protocol test firmware** (:func:`build_test_firmware`): the core with the deterministic test
  runner in place of TFLM, for protocol tests.

:class:`QemuMachine` starts ``qemu-system-arm`` halted (``-S``), reads the pty path QEMU prints,
lets the caller open the pty, then continues the CPU through the monitor, so not a byte of the boot
HELLO is lost. Every step has a bounded wait.

:func:`build_host_core` and :class:`HostCoreProcess` do the same for the portable core compiled for
this computer (``firmware_templates/core/host``): a fast stand-in device for tests, with sanitizers.
"""
from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from edgekit.errors import DeviceError, ToolFailed
from edgekit.runners import seam
from edgekit.runners.base import BuildResult, Capabilities, RunnerOption
from edgekit.runners.link import LinkRunner

QEMU = "qemu-system-arm"
CROSS_GCC = "arm-none-eabi-gcc"
MACHINE = "mps2-an386"
ELF_NAME = "edgekit-qemu-m4.elf"
BOOT_SEED_ADDR = 0x21000008      # boot record seed word (firmware_templates/qemu-m4/board.c)
BUILD_TIMEOUT_S = 180.0
# The boot HELLO normally comes within a second; the bound is wide because QEMU with -icount runs
# the firmware at the host's pace, and a loaded host (a TensorFlow job beside it) slows it a lot.
BOOT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

ICOUNT_ARGS = ("-icount", "shift=0")
# SysTick runs on the 25 MHz CPU clock: with -icount shift=0 one tick is 40 instructions
INSTRUCTIONS_PER_TICK = 40

_PTY_LINE = re.compile(r"char device redirected to (\S+) \(label serial0\)")
_PROMPT = b"(qemu) "

ToolFn = Callable[..., seam.ToolResult]
LogFn = Callable[[str], None]


def firmware_templates_dir() -> Path:
    """firmware_templates/ (kept here for callers of the qemu runner; edgekit.resources owns it)."""
    from edgekit.resources import templates_dir

    return templates_dir()


def _sources_digest(folders: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in (".c", ".h", ".ld", "") and "build" not in path.parts:
                h.update(str(path.relative_to(folder.parent)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_test_firmware(out_dir: str | os.PathLike | None = None, *, tool: ToolFn = seam.run_tool,
                        log: LogFn | None = None, dry_run: bool = False,
                        make_vars: dict[str, str] | None = None) -> Path:
    """Build the protocol test firmware (the core + the test runner, no TFLM); return the ELF path.

    Without ``out_dir`` the build goes to the cache, one folder per hash of the sources, and an
    existing build is reused.
    """
    fw_dir = firmware_templates_dir() / "qemu-m4"
    if not dry_run:
        seam.require(CROSS_GCC)
    if out_dir is None:
        digest = _sources_digest([fw_dir, fw_dir.parent / "core"])
        from edgekit.resources import cache_dir

        out = cache_dir() / "firmware" / f"qemu-m4-test-{digest}"
        if (out / ELF_NAME).is_file():
            return out / ELF_NAME
    else:
        out = Path(out_dir)
    argv = ["make", "-C", str(fw_dir), f"OUT={out.resolve()}"]
    argv += [f"{k}={v}" for k, v in (make_vars or {}).items()]
    tool(argv, dry_run=dry_run, timeout=BUILD_TIMEOUT_S, log=log)
    return out / ELF_NAME


def build_host_core(out_dir: str | os.PathLike, *, sanitize: bool = True, defines: dict[str, str] | None = None,
                    cc: str = "gcc", tool: ToolFn = seam.run_tool, log: LogFn | None = None) -> Path:
    """Compile the portable core + ek_host_main for this computer (warnings are errors)."""
    core = firmware_templates_dir() / "core"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    binary = out / "ek_host_main"
    argv = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g", f"-I{core}"]
    if sanitize:
        argv += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    argv += [f"-D{k}={v}" for k, v in (defines or {}).items()]
    argv += [str(core / f) for f in ("ek_cobs.c", "ek_crc32.c", "ek_sha256.c", "ek_proto.c",
                                     "ek_test_runner.c", "host/ek_host_main.c")]
    argv += ["-o", str(binary)]
    tool(argv, timeout=BUILD_TIMEOUT_S, log=log)
    return binary


def _wait_for_line(tool: seam.RunningTool, pattern: re.Pattern, timeout_s: float, what: str) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while True:
        text = tool.output()
        m = pattern.search(text)
        if m:
            return m
        if not tool.running:
            tail = "\n".join(text.strip().splitlines()[-5:]) or "no output"
            raise ToolFailed(f"{what} exited with code {tool.proc.returncode} before it was ready: "
                             f"{tail.splitlines()[-1] if tail else ''}", hint=f"its output ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise ToolFailed(f"{what} did not report its pty within {timeout_s:.0f} s",
                             hint="check that nothing else slows the machine down; run again")
        time.sleep(0.02)


class _Process:
    """A long-running helper program (QEMU, the host core), started through the seam
    (:func:`edgekit.runners.seam.start_tool`: logged, dry run) with its output in a log file."""

    name = "process"

    def __init__(self, *, log: LogFn | None = None, dry_run: bool = False):
        self.log = log or (lambda message: None)
        self.dry_run = dry_run
        self.tool: seam.RunningTool | None = None
        self.workdir: Path | None = None
        self.port: str | None = None
        self._keeper: int | None = None

    def _after_open(self) -> None:
        """Called by :meth:`boot` once the pty is open (QEMU: let the CPU run)."""

    def boot(self, timeout_s: float = BOOT_TIMEOUT_S):
        """Open the pty, let the device boot, and return its boot HELLO (a frames.Hello).

        The pty stays open (without reading) until :meth:`stop`, so the device never sees its port
        closed: any number of sessions may open and close the port afterwards without losing bytes.
        """
        import termios
        import tty

        from edgekit.link import frames as fr

        if self.dry_run:
            self._after_open()
            return None
        if self.port is None:
            raise DeviceError(f"{self.name} is not started", hint="call start() first")
        fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._keeper = fd
        tty.setraw(fd, termios.TCSANOW)
        self._after_open()
        decoder = fr.FrameDecoder()
        hello = None
        deadline = time.monotonic() + timeout_s
        quiet_until = None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            data = b""
            if ready:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    data = b""
            for frame in decoder.feed(data):
                if frame.type == fr.MsgType.HELLO and frame.seq == 0:
                    hello = fr.Hello.unpack(frame.payload)
                    quiet_until = time.monotonic() + 0.3
                elif frame.type == fr.MsgType.LOG and hello is not None:
                    self.log(f"# {self.name}: {fr.Log.unpack(frame.payload).text}")
                    quiet_until = time.monotonic()
            if hello is not None and time.monotonic() >= quiet_until:
                self._until_link_is_live(fd, decoder, deadline)
                return hello
        tail = "\n".join(self.output().strip().splitlines()[-5:])
        raise DeviceError(f"{self.name} sent no boot HELLO within {timeout_s:.0f} s",
                          hint="the firmware did not start" + (f"; its output ends with:\n{tail}" if tail else ""))

    def _until_link_is_live(self, fd: int, decoder, deadline: float) -> None:
        """Hook: wait until bytes from the host reach the device (QEMU needs a moment, see below)."""

    def _close_keeper(self) -> None:
        if self._keeper is not None:
            os.close(self._keeper)
            self._keeper = None

    def _make_workdir(self) -> Path:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"edgekit-{self.name}-"))
        return self.workdir

    def _spawn(self, argv: list[str]) -> seam.RunningTool:
        """Start ``argv`` through the seam, its output in the work folder (made unless it exists)."""
        workdir = self.workdir or self._make_workdir()
        try:
            self.tool = seam.start_tool(argv, output=workdir / "output.log", log=self.log, dry_run=self.dry_run)
        except BaseException:
            self._cleanup()
            raise
        if self.dry_run:
            self._cleanup()
        return self.tool

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.tool.proc if self.tool is not None else None

    def output(self) -> str:
        return self.tool.output() if self.tool is not None else ""

    def _terminate(self) -> None:
        if self.tool is not None:
            self.tool.stop(STOP_TIMEOUT_S)

    def _cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        return self.tool is not None and self.tool.running

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:  # pragma: no cover - overridden
        self._close_keeper()
        self._terminate()
        self._cleanup()


class QemuMachine(_Process):
    """``qemu-system-arm -M mps2-an386`` running one firmware ELF, UART0 on a pty.

    Use::

        with QemuMachine(elf) as qm:
            port = qm.start()          # halted; the pty exists
            hello = qm.boot()          # opens the pty, runs the CPU, returns the boot HELLO
            with DeviceSession.open(port) as session:
                ...

    (or open the port yourself and call ``resume()``: the boot HELLO then arrives on your port).
    With ``dry_run`` it logs the QEMU command and the monitor's ``cont`` and starts nothing (``start``
    and ``boot`` return None).
    """

    name = "qemu"

    def __init__(self, elf: str | os.PathLike, *, qemu: str = QEMU, log: LogFn | None = None,
                 boot_timeout_s: float = BOOT_TIMEOUT_S, extra_args: Sequence[str] = (), icount: bool = False,
                 dry_run: bool = False):
        super().__init__(log=log, dry_run=dry_run)
        self.elf = Path(elf)
        self.qemu = qemu
        self.boot_timeout_s = boot_timeout_s
        # -icount shift=0: one instruction = 1 ns of virtual time, so SysTick counts instructions
        self.extra_args = [*ICOUNT_ARGS, *extra_args] if icount else list(extra_args)
        self.seed = int.from_bytes(os.urandom(4), "little") or 1
        self._mon: socket.socket | None = None

    def command(self, monitor_path: str) -> list[str]:
        # The loader puts a random seed into the firmware's boot record (see board.c) at every
        # reset, so two QEMU runs never share a boot nonce.
        return [self.qemu, "-M", MACHINE, "-nodefaults", "-nographic", "-net", "none",
                "-kernel", str(self.elf), "-serial", "pty",
                "-device", f"loader,addr={BOOT_SEED_ADDR:#x},data={self.seed:#x},data-len=4",
                "-monitor", f"unix:{monitor_path},server=on,wait=off", "-S", *self.extra_args]

    def start(self) -> str | None:
        """Start QEMU halted; return the pty path of UART0 (None in a dry run)."""
        if not self.dry_run:
            seam.require(self.qemu)
            if not self.elf.is_file():
                raise ToolFailed(f"no firmware at {self.elf}",
                                 hint="build it first (QemuRunner.build_for or build_test_firmware)")
        sock = self._make_workdir() / "monitor.sock"
        tool = self._spawn(self.command(str(sock)))
        if self.dry_run:
            return None
        try:
            m = _wait_for_line(tool, _PTY_LINE, self.boot_timeout_s, "QEMU")
            self.port = m.group(1)
            self._connect_monitor(sock)
        except BaseException:
            self.stop()
            raise
        return self.port

    def _connect_monitor(self, path: Path) -> None:
        deadline = time.monotonic() + self.boot_timeout_s
        while True:
            try:
                mon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                mon.settimeout(1.0)
                mon.connect(str(path))
                break
            except OSError as e:
                mon.close()
                if time.monotonic() > deadline:
                    raise ToolFailed(f"cannot reach the QEMU monitor: {e}") from e
                time.sleep(0.02)
        self._mon = mon
        self._read_prompt()

    def _read_prompt(self) -> str:
        assert self._mon is not None
        buf = b""
        deadline = time.monotonic() + self.boot_timeout_s
        while not buf.endswith(_PROMPT):
            if time.monotonic() > deadline:
                raise DeviceError("the QEMU monitor did not answer",
                                  hint="QEMU may be stuck; it is stopped now, run again")
            try:
                chunk = self._mon.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                raise DeviceError("QEMU closed its monitor", hint="see whether QEMU crashed; run again")
            buf += chunk
        return buf[:-len(_PROMPT)].decode(errors="replace")

    def monitor(self, command: str) -> str:
        """Run one human-monitor command (``cont``, ``system_reset``, ``info registers``...)."""
        if self.dry_run:
            self.log(f"$ (qemu monitor) {command}")
            return ""
        if self._mon is None:
            raise DeviceError("QEMU is not running", hint="start() it first")
        self.log(f"$ (qemu monitor) {command}")
        self._mon.sendall(command.encode() + b"\n")
        return self._read_prompt()

    def resume(self) -> None:
        """Let the CPU run (QEMU starts halted so that the pty can be opened first)."""
        self.monitor("cont")

    def _after_open(self) -> None:
        self.resume()

    # QEMU's pty backend notices that the pty was opened only on its next reconnect poll (up to a
    # second later) and reads nothing from the host until then, although the guest's output goes
    # out at once. So boot() asks one HELLO (seq 65535) and waits for its answer: after that the
    # link carries bytes both ways without delay. (The device's "last request" is then that HELLO.)
    PROBE_SEQ = 0xFFFF

    def _until_link_is_live(self, fd: int, decoder, deadline: float) -> None:
        from edgekit.link import frames as fr

        wire = fr.encode_frame(fr.MsgType.HELLO_REQ, self.PROBE_SEQ)
        sent = answered = 0
        next_send = 0.0
        settle_until = deadline
        while time.monotonic() < min(deadline, settle_until):
            if not answered and time.monotonic() >= next_send:
                os.write(fd, wire)          # a re-sent probe is answered from the reply cache
                sent += 1
                next_send = time.monotonic() + 0.5
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    data = b""
                got = sum(1 for f in decoder.feed(data) if f.seq == self.PROBE_SEQ)
                if got and not answered:
                    settle_until = time.monotonic() + 1.0   # bounded wait for the other answers
                answered += got
            if answered and answered >= sent:
                return      # every probe answered: nothing stale is left on the line
        if answered:
            return
        raise DeviceError("QEMU does not pass bytes to the firmware",
                          hint="the emulated UART did not take input; run again")

    def stop(self) -> None:
        """Quit QEMU (monitor ``quit``, then terminate, then kill; each with a bounded wait)."""
        if self._mon is not None:
            try:
                self._mon.sendall(b"quit\n")
            except OSError:
                pass
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
            self._mon.close()
            self._mon = None
        self._close_keeper()
        self._terminate()
        self._cleanup()


class HostCoreProcess(_Process):
    """The host build of the core (:func:`build_host_core`) serving on a pty of its own."""

    name = "c-host"
    _PTY = re.compile(r"^pty: (\S+)$", re.M)

    def __init__(self, binary: str | os.PathLike, *, args: Sequence[str] = (), log: LogFn | None = None,
                 boot_timeout_s: float = BOOT_TIMEOUT_S):
        super().__init__(log=log)
        self.binary = Path(binary)
        self.args = list(args)
        self.boot_timeout_s = boot_timeout_s

    def start(self) -> str:
        """Start it; return the pty path. It sends its boot HELLO once the pty is opened."""
        tool = self._spawn([str(self.binary), "--pty", "--wait-open", str(int(self.boot_timeout_s) + 1), *self.args])
        try:
            m = _wait_for_line(tool, self._PTY, self.boot_timeout_s, self.binary.name)
        except BaseException:
            self.stop()
            raise
        self.port = m.group(1)
        return self.port

    def stop(self) -> None:
        self._close_keeper()
        self._terminate()
        self._cleanup()


UPLOAD_SLOT_BYTES = 512 * 1024       # each of the upload firmware's two model slots
UPLOAD_ARENA_BYTES = 1024 * 1024     # its tensor arena (the machine has 4 MB of RAM)
UPLOAD_TENSOR_BYTES = 64 * 1024      # input and output staging buffers (a 96x96x3 image is 27 KB)
UPLOAD_MAX_PAYLOAD = 4096
# ops of an upload firmware built before any model is known (a reset, a bare link)
DEFAULT_OPS = ("ADD", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
               "QUANTIZE", "DEQUANTIZE", "RESHAPE", "SOFTMAX")

INSTRUCTION_COUNTS = {
    "unit": "instructions", "source": "emulated",
    "label": "instructions executed on the emulated Cortex-M4 (QEMU mps2-an386, -icount shift=0: SysTick "
             f"counts instructions, {INSTRUCTIONS_PER_TICK}-instruction resolution); counts, not time",
    "resolution": INSTRUCTIONS_PER_TICK,
}
TEST_FIRMWARE_TIMING = {
    "unit": "ns", "source": "host",
    "label": "the protocol test firmware under QEMU without -icount: SysTick follows host time",
}


def _ops_of(models: Sequence[bytes]) -> tuple[str, ...]:
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    return tuple(sorted({op.op for m in models for sg in parse(load_tflite(m)).subgraphs for op in sg.operators}))


class QemuRunner(LinkRunner):
    """The runner firmware on QEMU: real TFLM (``firmware=tflm``) or the protocol test runner (``test``).

    ``emulate`` (set by ``--emulate``) builds the board's own firmware instead of the qemu-m4 upload
    firmware: its board id, buffers and model built in, with the TFLM library its board file pins.
    """

    name = "qemu"
    description = ("the runner firmware with real TFLM + CMSIS-NN, cross-compiled for Cortex-M4 and run on QEMU "
                   "mps2-an386 over a pty; profiles count instructions (-icount)")
    capabilities = Capabilities(build=True, run=True, profile=True, validate=True, reset=True, model_upload=True,
                                link=True, tools=(CROSS_GCC, QEMU))

    @classmethod
    def options_spec(cls):
        return [*super().options_spec(), RunnerOption("tflm_src", "TFLM source tree to build with (else $EDGEKIT_TFLM_SRC, else the "
                             "library arduino-cli installed)"),
                RunnerOption("emulate", "build the board's own firmware (set by --emulate)", False, bool),
                RunnerOption("firmware", "tflm (real TFLM) or test (the protocol test runner)", "tflm"),
                RunnerOption("jobs", "parallel compiler runs (default: CPU count)", None, int),
                RunnerOption("out_dir", "build folder for the test firmware (default: the edgekit cache)")]

    def __init__(self, board, **kwargs):
        super().__init__(board, **kwargs)
        if self.options["firmware"] not in ("tflm", "test"):
            from edgekit.errors import UsageError

            raise UsageError(f"runner qemu: firmware must be tflm or test, got {self.options['firmware']!r}")
        self.last_build = None

    @property
    def builds_per_model(self) -> bool:
        """Each model gets its own firmware (a board's, model built in): a second model needs a second build."""
        return self.emulating and not self.board.runtime_model_upload

    @property
    def emulating(self) -> bool:
        return bool(self.options.get("emulate")) and self.board.runner != self.name

    def timing(self) -> dict:
        return dict(INSTRUCTION_COUNTS if self.options["firmware"] == "tflm" else TEST_FIRMWARE_TIMING)

    def takes_uploads(self) -> bool | None:
        return self.board.runtime_model_upload if self.emulating else True

    # -- building ------------------------------------------------------------------------------------
    def tree(self):
        from edgekit.tflm.tree import select_tree

        return select_tree(self.board, self.options.get("tflm_src"), tool=self.tool_fn)

    def firmware_config(self, tree, models: Sequence[bytes]):
        """The FirmwareConfig for ``models`` on this board (raises before any build if it cannot be)."""
        from edgekit._version import __version__
        from edgekit.errors import ModelTooLarge, UsageError
        from edgekit.exporters.firmware import board_config_header
        from edgekit.fileio import sha256
        from edgekit.tflm.build import FirmwareConfig

        if self.emulating:
            if not models:
                raise UsageError(f"emulating {self.board.id} needs the model to build in",
                                 hint="profile or validate a model with --emulate")
            model = models[0]
            from edgekit.exporters.firmware import model_io_bytes

            inputs, outputs = model_io_bytes(model)
            header = board_config_header(
                self.board, sha256(model), inputs, outputs,
                firmware_version=f"edgekit-runner {__version__} (emulated on QEMU {MACHINE}, {tree.label})")
            return FirmwareConfig(board_id=self.board.id, config_header=header, ops=_ops_of([model]),
                                  arena_bytes=0, builtin_model=bytes(model))
        for m in models:
            if len(m) > UPLOAD_SLOT_BYTES:
                raise ModelTooLarge(f"the model is {len(m):,} bytes; the emulated board's upload slot holds "
                                    f"{UPLOAD_SLOT_BYTES:,}", hint="shrink it (edgekit convert), or emulate a "
                                    "board that builds it in: --emulate --board nano33ble")
        header = board_config_header(
            self.board, "none (models are uploaded at run time)", UPLOAD_TENSOR_BYTES, UPLOAD_TENSOR_BYTES,
            firmware_version=f"edgekit-qemu-m4 {__version__} (TFLM: {tree.label}, {tree.kernels})",
            model_slots=2, model_max_bytes=UPLOAD_SLOT_BYTES, max_payload=UPLOAD_MAX_PAYLOAD)
        return FirmwareConfig(board_id=self.board.id, config_header=header,
                              ops=_ops_of(models) if models else DEFAULT_OPS, arena_bytes=UPLOAD_ARENA_BYTES)

    def build_for(self, models: Sequence[bytes] = (), progress=None):
        """Build (or reuse) the TFLM firmware for ``models``; returns a FirmwareBuild."""
        from edgekit.tflm.build import CpuTarget, build_tflm_firmware

        tree = self.tree()
        config = self.firmware_config(tree, models)
        target = CpuTarget.from_board(self.board)
        self.last_build = build_tflm_firmware(tree, config, target=target, tool=self.tool_fn, log=self.log,
                                              dry_run=self.dry_run, jobs=self.options.get("jobs"), progress=progress)
        return self.last_build

    def do_build(self, project_dir=None, models: Sequence[bytes] = (), **_) -> BuildResult:
        if self.options["firmware"] == "test":
            elf = build_test_firmware(self.options.get("out_dir"), tool=self.tool_fn, log=self.log,
                                      dry_run=self.dry_run)
            return BuildResult(project_dir=firmware_templates_dir() / "qemu-m4", artifacts={"firmware.elf": elf})
        build = self.build_for(models)
        return BuildResult(project_dir=build.elf.parent, artifacts={"firmware.elf": build.elf})

    # -- running -------------------------------------------------------------------------------------
    def start_machine(self, elf: Path) -> QemuMachine:
        """Start QEMU (halted) on ``elf`` and boot it; the caller stops it."""
        machine = QemuMachine(elf, log=self.log, icount=self.options["firmware"] == "tflm", dry_run=self.dry_run)
        machine.start()
        try:
            machine.boot_hello = machine.boot()
        except BaseException:
            machine.stop()
            raise
        return machine

    @contextmanager
    def device_port(self, *, port: str | None = None,
                    models: Sequence[bytes] = ()) -> Iterator[tuple[str, bool, dict | None]]:
        if port is not None:                       # a QEMU started elsewhere
            yield port, False, None
            return
        if self.options["firmware"] == "test":
            elf, facts = self.do_build().artifacts["firmware.elf"], None
        else:
            build = self.build_for(models, progress=self.progress)
            elf, facts = build.elf, self.firmware_facts(build)
        machine = self.start_machine(elf)
        try:
            yield machine.port, True, facts
        finally:
            machine.stop()

    def firmware_facts(self, build) -> dict:
        """The profile document's ``firmware`` part: what was built, from which tree, and its size."""
        facts = build.to_dict()
        tree = facts.pop("tree")
        facts["tree"] = {k: tree[k] for k in ("label", "layout", "name", "version", "root", "origin", "kernels",
                                              "decode", "per_channel_fully_connected")}
        facts["machine"] = MACHINE
        if self.emulating:
            b = self.board
            facts["fit"] = {
                "flash_used_bytes": build.flash_used_bytes, "ram_used_bytes": build.ram_used_bytes,
                "flash_bytes": b.flash_bytes, "ram_bytes": b.ram_bytes,
                "firmware_flash_estimate_bytes": b.firmware_flash_bytes,
                "note": "the emulated build holds TFLM, its kernels, the protocol core and the model; the board's "
                        "Arduino core (Mbed OS, USB stack) is not in it"}
        return facts
