"""The one seam through which edgekit runs every external program.

:func:`run_tool` logs the shell-quoted command, honours ``dry_run`` (logs and returns without running),
turns a program that is not installed into :class:`~edgekit.errors.ToolMissing` (one line naming it
and how to install it), a non-zero exit into :class:`~edgekit.errors.ToolFailed` (with the tail of
its output), and never waits longer than ``timeout`` seconds. Tests patch this one function and
assert the exact command lines.

:func:`start_tool` is the same door for a program that keeps running while edgekit talks to it (QEMU,
the host build of the device core): logged, dry run, ToolMissing alike; it returns a
:class:`RunningTool` whose output goes to a file and whose :meth:`~RunningTool.stop` ends the program
and everything it started, each step with a bounded wait.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from edgekit.errors import ToolFailed, ToolMissing

LogFn = Callable[[str], None]

DEFAULT_TIMEOUT_S = 600.0
OUTPUT_TAIL_LINES = 15
FULL_OUTPUT_MAX_CHARS = 1 << 20     # ToolFailed.context["output"]: the whole output, up to this much

# How to install each program edgekit may call. One line each; shown in ToolMissing hints and doctor.
INSTALL_HINTS = {
    "arduino-cli": "install arduino-cli (https://arduino.github.io/arduino-cli/latest/installation/) "
                   "and put it on PATH",
    "esptool": "pip install 'esptool>=5' (or: pip install 'edgekit[flash]')",
    "pio": "pip install platformio (or: pip install 'edgekit[flash]')",
    "picotool": "apt-get install picotool (Debian 12+, Ubuntu 23.04+) or build it from "
                "github.com/raspberrypi/picotool",
    "adb": "apt-get install adb (or the Android SDK platform-tools)",
    "ssh": "apt-get install openssh-client",
    "scp": "apt-get install openssh-client",
    "qemu-system-arm": "apt-get install qemu-system-arm",
    "arm-none-eabi-gcc": "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
    "labgrid-client": "install labgrid in an environment of its own (pipx install labgrid; it brings a pyserial "
                      "fork that must not replace pyserial beside edgekit) and put labgrid-client on PATH or "
                      "in EDGEKIT_LABGRID_CLIENT",
}
INSTALL_HINTS["arm-none-eabi-g++"] = INSTALL_HINTS["arm-none-eabi-ar"] = INSTALL_HINTS["arm-none-eabi-gcc"]

# Other names a program is installed under (tried in order when the first is not on PATH).
ALTERNATIVE_NAMES = {
    "esptool": ("esptool.py",),
    "pio": ("platformio",),
}


@dataclass
class _Command:
    argv: list[str]

    @property
    def command(self) -> str:
        return quote(self.argv)


@dataclass
class ToolResult(_Command):
    returncode: int
    output: str
    dry_run: bool = False


def quote(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)


def which(tool: str) -> str | None:
    """Path of ``tool`` (or of one of its alternative names) on PATH, else None."""
    for name in (tool, *ALTERNATIVE_NAMES.get(tool, ())):
        found = shutil.which(name)
        if found:
            return found
    return None


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    kept = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        proc.send_signal(sig)


def _announce(argv: Sequence[str], cwd, log: LogFn | None) -> list[str]:
    """``argv`` as strings, after logging ``$ <quoted command>`` (with the folder it runs in)."""
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("the seam needs a program to run")
    if log is not None:
        log(f"$ (cd {shlex.quote(str(cwd))} && {quote(argv)})" if cwd else f"$ {quote(argv)}")
    return argv


def require(tool: str) -> str:
    """The path of ``tool`` (a name on PATH, or a path to an executable); else ToolMissing."""
    path = which(tool) if os.sep not in tool else (tool if os.access(tool, os.X_OK) else None)
    if path is None:
        raise ToolMissing(f"{tool} is not installed (not found on PATH)",
                          hint=INSTALL_HINTS.get(os.path.basename(tool), f"install {tool} and put it on PATH"),
                          tool=tool)
    return path


def _environment(env: Mapping[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return None
    full_env = dict(os.environ)
    full_env.update(env)
    return full_env


def run_tool(argv: Sequence[str], *, dry_run: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
             cwd: str | os.PathLike | None = None, log: LogFn | None = None,
             env: Mapping[str, str] | None = None) -> ToolResult:
    """Run ``argv`` (a list, never a shell string) and return its combined output.

    ``log`` receives ``$ <quoted command>`` before anything runs (and in dry-run mode that is all
    that happens). Raises ToolMissing / ToolFailed as described in the module docstring.
    """
    argv = _announce(argv, cwd, log)
    if dry_run:
        return ToolResult(argv, 0, "", dry_run=True)
    tool = argv[0]
    path = require(tool)
    try:
        # Own process group, so a timeout also stops what the tool started (compilers, uploaders).
        proc = subprocess.Popen([path, *argv[1:]], cwd=cwd, env=_environment(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise ToolFailed(f"{tool} could not be started: {e.strerror}", tool=tool,
                         command=quote(argv)) from e
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except BaseException as e:
        _kill_group(proc)
        if not isinstance(e, subprocess.TimeoutExpired):
            raise                              # Ctrl-C: the tool's group does not get SIGINT itself
        try:
            stdout, _ = proc.communicate(timeout=5.0)
        except subprocess.TimeoutExpired:
            stdout = b""
        out = (stdout or b"").decode("utf-8", "replace")
        raise ToolFailed(f"{os.path.basename(tool)} did not finish within {timeout:g} s",
                         hint="check the board connection, or raise the timeout",
                         tool=tool, output_tail=_tail(out), command=quote(argv)) from e
    out = stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = _tail(out)
        last = tail.splitlines()[-1] if tail else "no output"
        raise ToolFailed(f"{os.path.basename(tool)} exited with code {proc.returncode}: {last}",
                         hint="its output ends with:\n" + "\n".join(f"    {ln}" for ln in tail.splitlines())
                         if tail else None,
                         tool=tool, returncode=proc.returncode, output_tail=tail, command=quote(argv),
                         output=out[-FULL_OUTPUT_MAX_CHARS:])
    return ToolResult(argv, proc.returncode, out)


INTERRUPT_GRACE_S = 20.0


def run_parallel(argvs: Sequence[Sequence[str]], *, jobs: int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 log: LogFn | None = None, env: Mapping[str, str] | None = None,
                 on_done: Callable[[int, ToolResult], None] | None = None,
                 grace_s: float = INTERRUPT_GRACE_S) -> list[ToolResult]:
    """Run several programs at once (at most ``jobs`` at a time), each bounded by ``timeout``.

    Unlike :func:`run_tool` a non-zero exit is not raised: each :class:`ToolResult` carries its code
    (-1: did not finish in time). A program past its time, and every program when the caller is
    interrupted (Ctrl-C), first gets SIGINT, so it can clean up (release what it holds), then
    SIGKILL after ``grace_s``. ``on_done(index, result)`` is called as each one ends.
    """
    import tempfile
    import time

    argvs = [[str(a) for a in argv] for argv in argvs]
    jobs = max(1, jobs or len(argvs) or 1)
    full_env = _environment(env)
    results: list[ToolResult | None] = [None] * len(argvs)
    running: dict[int, tuple[subprocess.Popen, object, float]] = {}
    pending = list(range(len(argvs)))

    def start(i: int) -> None:
        argv = _announce(argvs[i], None, log)
        path = require(argv[0])
        out = tempfile.TemporaryFile()
        proc = subprocess.Popen([path, *argv[1:]], env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        running[i] = (proc, out, time.monotonic() + timeout)

    def finish(i: int, code: int) -> None:
        proc, out, _ = running.pop(i)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
        out.close()
        results[i] = ToolResult(argvs[i], code, text)
        if on_done is not None:
            on_done(i, results[i])

    def stop(i: int) -> int:
        """SIGINT to the program's group, SIGKILL after the grace time; its exit code."""
        proc = running[i][0]
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except OSError:
            pass
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return proc.wait(timeout=5.0)

    try:
        while pending or running:
            while pending and len(running) < jobs:
                start(pending.pop(0))
            for i in list(running):
                proc, _, deadline = running[i]
                code = proc.poll()
                if code is not None:
                    finish(i, code)
                elif time.monotonic() > deadline:
                    stop(i)
                    finish(i, -1)
            time.sleep(0.05)
    except BaseException:
        for i in list(running):          # Ctrl-C: every program gets to clean up, all at once
            try:
                os.killpg(running[i][0].pid, signal.SIGINT)
            except OSError:
                pass
        for i in list(running):
            try:
                running[i][0].wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _kill_group(running[i][0])
            running.pop(i)[1].close()
        raise
    return [r for r in results if r is not None]


STOP_TIMEOUT_S = 5.0


@dataclass
class RunningTool(_Command):
    """A program :func:`start_tool` started (``proc`` is None in a dry run); its output is in ``output_path``."""

    proc: subprocess.Popen | None
    output_path: Path
    dry_run: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to the program and all it started, SIGKILL after ``timeout_s``; its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait(timeout=timeout_s)
        return proc.returncode


def start_tool(argv: Sequence[str], *, output: str | os.PathLike, dry_run: bool = False,
               cwd: str | os.PathLike | None = None, log: LogFn | None = None,
               env: Mapping[str, str] | None = None) -> RunningTool:
    """Start ``argv`` (a list, never a shell string) and return at once, its stdout and stderr going to
    the file ``output``. Logs ``$ <quoted command>`` first; in a dry run that is all that happens.
    Raises ToolMissing when the program is not installed, ToolFailed when it cannot be started. The
    program runs in its own process group (stdin: /dev/null); the caller stops it (RunningTool.stop).
    """
    argv = _announce(argv, cwd, log)
    if dry_run:
        return RunningTool(argv, None, Path(output), dry_run=True)
    path = require(argv[0])
    try:
        with open(output, "wb") as out:
            proc = subprocess.Popen([path, *argv[1:]], cwd=cwd, env=_environment(env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise ToolFailed(f"{argv[0]} could not be started: {e.strerror}", tool=argv[0],
                         command=quote(argv)) from e
    return RunningTool(argv, proc, Path(output))
