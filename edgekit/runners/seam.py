"""The one seam through which edgekit runs every external program.

:func:`run_tool` logs the shell-quoted command, honours ``dry_run`` (logs and returns without running),
turns a program that is not installed into :class:`~edgekit.errors.ToolMissing` (one line naming it
and how to install it), a non-zero exit into :class:`~edgekit.errors.ToolFailed` (with the tail of
its output), and never waits longer than ``timeout`` seconds. Tests patch this one function and
assert the exact command lines.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
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

# Other names a program is installed under (tried in order when the first is not on PATH).
ALTERNATIVE_NAMES = {
    "esptool": ("esptool.py",),
    "pio": ("platformio",),
}


@dataclass
class ToolResult:
    argv: list[str]
    returncode: int
    output: str
    dry_run: bool = False

    @property
    def command(self) -> str:
        return quote(self.argv)


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


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()


def run_tool(argv: Sequence[str], *, dry_run: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
             cwd: str | os.PathLike | None = None, log: LogFn | None = None,
             env: Mapping[str, str] | None = None) -> ToolResult:
    """Run ``argv`` (a list, never a shell string) and return its combined output.

    ``log`` receives ``$ <quoted command>`` before anything runs (and in dry-run mode that is all
    that happens). Raises ToolMissing / ToolFailed as described in the module docstring.
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("run_tool needs a program to run")
    prefix = f"(cd {shlex.quote(str(cwd))} && " if cwd else ""
    suffix = ")" if cwd else ""
    if log is not None:
        log(f"$ {prefix}{quote(argv)}{suffix}")
    if dry_run:
        return ToolResult(argv, 0, "", dry_run=True)
    tool = argv[0]
    path = which(tool) if os.sep not in tool else (tool if os.access(tool, os.X_OK) else None)
    if path is None:
        raise ToolMissing(f"{tool} is not installed (not found on PATH)",
                          hint=INSTALL_HINTS.get(os.path.basename(tool), f"install {tool} and put it on PATH"),
                          tool=tool)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        # Own process group, so a timeout also stops what the tool started (compilers, uploaders).
        proc = subprocess.Popen([path, *argv[1:]], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
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
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    results: list[ToolResult | None] = [None] * len(argvs)
    running: dict[int, tuple[subprocess.Popen, object, float]] = {}
    pending = list(range(len(argvs)))

    def start(i: int) -> None:
        argv = argvs[i]
        if log is not None:
            log(f"$ {quote(argv)}")
        path = which(argv[0]) if os.sep not in argv[0] else (argv[0] if os.access(argv[0], os.X_OK) else None)
        if path is None:
            raise ToolMissing(f"{argv[0]} is not installed (not found on PATH)",
                              hint=INSTALL_HINTS.get(os.path.basename(argv[0]), f"install {argv[0]}"), tool=argv[0])
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
