"""Host runtimes (LiteRT, TFLM) run in child processes, all through this one module.

A crafted model can crash LiteRT's interpreter build, and TFLM verifies nothing, so native runtime code
never runs in edgekit's own process. :class:`ChildProcess` starts ``python -m <module>`` with the
current interpreter and exchanges framed requests with it; the module answers them with :func:`serve`.

- Framing: each message is ``MAGIC`` (4 bytes), a little-endian 64-bit length and a pickle. Requests go
  on the child's stdin, replies come on its stdout. The child moves its fd 1 onto stderr before anything
  runs, so native prints cannot reach the reply channel, and the parent unpickles replies with a
  restricted unpickler (plain data and numpy arrays only).
- Deadline: every request has one (``timeout_s``: its callers scale it with the model); writing the
  request and reading the reply both count against it. A child past its deadline is killed and the
  request raises :class:`~edgekit.errors.NativeTimeout`.
- Crashes: a child that dies by a signal raises :class:`~edgekit.errors.NativeCrash` naming the signal;
  one that exits, or sends something that is not a frame, raises NativeCrash too. The next request
  starts a fresh child.
- stderr: the child's stderr goes to a temporary file; what it printed during a request is
  ``last_stderr`` (and ``stderr`` in every error's context), and its last line ends a crash's message.
  Lines starting with ``@@`` are the child's own progress marks: kept in ``last_stderr``, never quoted.
  With ``EDGEKIT_DEBUG=1`` it is also copied to edgekit's stderr.
- Errors the child reports (``{"error": ..., "kind": ...}``, as :func:`serve` makes from an exception)
  become :class:`~edgekit.errors.RuntimeMissing` (kind ``missing``) or
  :class:`~edgekit.errors.RuntimeFailed`.

The child side imports nothing heavy: a child module imports this one, defines a handler and calls
``serve(handler)``.
"""
from __future__ import annotations

import atexit
import fcntl
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Any, Callable

MAGIC = b"EKc1"
HEADER = struct.Struct("<4sQ")
MAX_FRAME_BYTES = 1 << 32           # a reply longer than this is garbage, not a runtime's answer
MARK = "@@"                         # a child's progress lines on stderr (parsed by its parent, not quoted)
STDERR_KEEP_BYTES = 1 << 20         # a long-lived child's stderr file is emptied between requests past this
STDERR_MAX_BYTES = 4 << 20          # at most this much of one request's stderr is kept
CLOSE_WAIT_S = 2.0                  # a child asked to quit (stdin closed) gets this long before a kill
REAP_WAIT_S = 5.0
MISSING_HINT = "pip install 'edgekit[runtime]'"


def encode(message: Any) -> bytes:
    """One frame: MAGIC, the pickle's length, the pickle."""
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(MAGIC, len(blob)) + blob


# ---------------------------------------------------------------------------------------------
# child side


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reply_to(handle: Callable[[Any], Any], request: Any) -> bytes:
    try:
        reply = handle(request)
    except ImportError as e:
        reply = {"error": f"cannot import {e.name or 'a runtime module'} ({e})", "kind": "missing"}
    except Exception as e:  # noqa: BLE001 - every failure is reported to the parent
        reply = {"error": f"{type(e).__name__}: {e}".strip(), "kind": "failed"}
    try:
        return encode(reply)
    except Exception as e:  # noqa: BLE001 - a reply that cannot be pickled is a failure too
        return encode({"error": f"unsendable reply ({type(e).__name__}: {e})", "kind": "failed"})


def serve(handle: Callable[[Any], Any]) -> None:
    """Answer framed requests on stdin with ``handle(request)`` until stdin closes.

    An exception in ``handle`` is answered with ``{"error": "...", "kind": "missing" | "failed"}``
    (``missing`` for an ImportError). A native crash simply ends the process: the parent reports it.
    """
    reply_fd = os.dup(1)
    os.dup2(2, 1)                       # native prints must not reach the reply channel
    in_fd = sys.stdin.fileno()
    while True:
        head = _read_exact(in_fd, HEADER.size)
        if head is None:
            return
        magic, length = HEADER.unpack(head)
        body = _read_exact(in_fd, length) if magic == MAGIC else None
        if body is None:
            return
        frame = _reply_to(handle, pickle.loads(body))
        sys.stdout.flush()
        sys.stderr.flush()
        _write_all(reply_fd, frame)


# ---------------------------------------------------------------------------------------------
# parent side

# The only globals a reply may name: numpy arrays, scalars and dtypes (numpy 1.x and 2.x paths).
_REPLY_GLOBALS = frozenset(
    [("numpy", "dtype"), ("numpy", "ndarray")]
    + [(f"numpy.{core}.{mod}", name) for core in ("core", "_core")
       for mod, name in (("numeric", "_frombuffer"), ("multiarray", "_reconstruct"), ("multiarray", "scalar"))])


class _ReplyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _REPLY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a reply may not name {module}.{name}")


def decode_reply(body: bytes) -> Any:
    """Unpickle a child's reply, allowing plain data and numpy arrays only."""
    import io

    return _ReplyUnpickler(io.BytesIO(body)).load()


class _Malformed(Exception):
    """The child's reply channel carried something that is not a frame."""


def _seconds(t: float) -> str:
    return f"{t:.1f}".rstrip("0").rstrip(".")


def signal_name(returncode: int) -> str:
    """``SIGSEGV`` for a child killed by signal 11 (returncode -11)."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def last_words(stderr: str, limit: int = 160) -> str:
    """The child's last stderr line that is not a progress mark, shortened to ``limit`` characters."""
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line and not line.startswith(MARK):
            return line if len(line) <= limit else line[:limit - 3] + "..."
    return ""


_LIVE: "weakref.WeakSet[ChildProcess]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for child in list(_LIVE):
        child.close()


class ChildProcess:
    """``python -m <module>`` answering framed requests; started on first use and again after a crash.

    ``name`` starts every error message ("TFLM crashed (SIGSEGV) during 'probe'"). ``crash_hint`` and
    ``timeout_hint`` are the errors' hints. Requests are dicts with an ``op``; one at a time (a lock
    serialises threads). Use as a context manager, or call :meth:`close`; children still running at
    exit are closed then. After a fork the child belongs to the parent: the forked process starts its
    own.
    """

    def __init__(self, module: str, *, name: str, crash_hint: str, timeout_hint: str,
                 missing_hint: str = MISSING_HINT):
        self.module = module
        self.name = name
        self.crash_hint = crash_hint
        self.timeout_hint = timeout_hint
        self.missing_hint = missing_hint
        self.last_stderr = ""
        self._stderr_from = 0               # where the current (or last) request's stderr begins
        self._stderr_kept = ""              # its part read before the file was emptied
        self._proc: subprocess.Popen | None = None
        self._stderr_file = None
        self._pid = 0
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None

    def _start(self) -> subprocess.Popen:
        from edgekit.errors import NativeCrash

        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        err = tempfile.TemporaryFile()
        # appending: the file can be emptied between requests while the child holds it open
        fcntl.fcntl(err.fileno(), fcntl.F_SETFL, fcntl.fcntl(err.fileno(), fcntl.F_GETFL) | os.O_APPEND)
        try:
            proc = subprocess.Popen([sys.executable, "-m", self.module], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, env=env, bufsize=0)
        except OSError as e:
            err.close()
            raise NativeCrash(f"{self.name} could not be started ({e.strerror})", hint=self.crash_hint) from e
        os.set_blocking(proc.stdin.fileno(), False)
        self._proc, self._stderr_file, self._pid = proc, err, os.getpid()
        _LIVE.add(self)
        return proc

    def close(self) -> None:
        """Ask the child to quit (stdin closed), kill it if it does not within CLOSE_WAIT_S. Then
        ``last_stderr`` holds all the child wrote since its last request began, its exit included."""
        proc, err, self._proc, self._stderr_file = self._proc, self._stderr_file, None, None
        if proc is None or self._pid != os.getpid():
            return                          # a forked copy: the child is the parent's to close
        try:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                self._kill(proc)
            self._read_stderr(err)
        finally:
            proc.stdout.close()
            err.close()

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        proc.kill()
        try:
            proc.wait(timeout=REAP_WAIT_S)
        except subprocess.TimeoutExpired:
            pass                            # unkillable (stuck in the kernel): nothing more to do

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------------------
    def request(self, request: dict[str, Any], timeout_s: float) -> Any:
        """Send ``request``; return the child's reply within ``timeout_s`` seconds, or raise."""
        with self._lock:
            if not self.running:
                self.close()
                self._start()
            proc, err = self._proc, self._stderr_file
            self._stderr_from, self._stderr_kept, self.last_stderr = os.fstat(err.fileno()).st_size, "", ""
            deadline = time.monotonic() + timeout_s
            op = request.get("op", "request") if isinstance(request, dict) else "request"
            try:
                self._send(proc.stdin.fileno(), encode(request), deadline)
                reply = self._receive(proc.stdout.fileno(), deadline)
            except TimeoutError as e:
                self._kill(proc)
                raise self._failure(f"did not answer '{op}' within {_seconds(timeout_s)} s; it was killed",
                                    timeout=True) from e
            except _Malformed as e:
                self._kill(proc)
                raise self._failure(f"sent a malformed reply to '{op}' ({e}); it was killed") from e
            except (EOFError, BrokenPipeError) as e:
                try:
                    code = proc.wait(timeout=REAP_WAIT_S)
                except subprocess.TimeoutExpired:   # closed its stdout yet runs on
                    self._kill(proc)
                    code = proc.returncode
                what = (f"crashed ({signal_name(code)}) during '{op}'" if code is not None and code < 0
                        else f"exited with code {code} during '{op}'" if code
                        else f"exited without answering '{op}'")
                raise self._failure(what) from e
            except BaseException:               # Ctrl-C mid-request: a half-sent frame must not stay
                self._kill(proc)
                self.close()
                raise
            stderr = self._read_stderr(err)
            if isinstance(reply, dict) and reply.get("error"):
                from edgekit.errors import RuntimeFailed, RuntimeMissing

                if reply.get("kind") == "missing":
                    raise RuntimeMissing(str(reply["error"]), hint=self.missing_hint)
                raise RuntimeFailed(f"{self.name}: {reply['error']}", kind=str(reply.get("kind") or "failed"),
                                    stderr=stderr)
            return reply

    def _failure(self, what: str, *, timeout: bool = False):
        from edgekit.errors import NativeCrash, NativeTimeout

        self.close()                        # the child is gone; this collects its stderr
        stderr = self.last_stderr
        words = last_words(stderr)
        message = f"{self.name} {what}" + (f"; its last words: {words}" if words and not timeout else "")
        cls = NativeTimeout if timeout else NativeCrash
        return cls(message, hint=self.timeout_hint if timeout else self.crash_hint, stderr=stderr)

    def _read_stderr(self, err) -> str:
        """What the child wrote on stderr since its request began (into ``last_stderr``). A long-lived
        child's file is emptied when it grew past STDERR_KEEP_BYTES."""
        end = os.fstat(err.fileno()).st_size
        start = max(self._stderr_from, end - STDERR_MAX_BYTES)
        new = os.pread(err.fileno(), end - start, start).decode("utf-8", "replace") if end > start else ""
        text = self._stderr_kept + new
        if os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0"):
            sys.stderr.write(text[len(self.last_stderr):])
        if end > STDERR_KEEP_BYTES:
            os.ftruncate(err.fileno(), 0)
            self._stderr_from, self._stderr_kept = 0, text
        self.last_stderr = text
        return text

    @staticmethod
    def _wait(fd: int, events: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(fd, events)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if poller.poll(max(1, int(left * 1000))):
                return

    def _send(self, fd: int, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(fd, select.POLLOUT, deadline)
            try:
                view = view[os.write(fd, view[:1 << 20]):]
            except BlockingIOError:
                continue

    def _read(self, fd: int, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            self._wait(fd, select.POLLIN, deadline)
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _receive(self, fd: int, deadline: float) -> Any:
        magic, length = HEADER.unpack(self._read(fd, HEADER.size, deadline))
        if magic != MAGIC:
            raise _Malformed(f"{magic!r} where a frame starts")
        if length > MAX_FRAME_BYTES:
            raise _Malformed(f"a frame of {length} bytes")
        body = self._read(fd, length, deadline)
        try:
            return decode_reply(body)
        except Exception as e:  # noqa: BLE001 - whatever the bytes were, they are not a reply
            raise _Malformed(f"unreadable: {type(e).__name__}") from e


def run_once(module: str, request: dict[str, Any], timeout_s: float, **names: str) -> tuple[Any, str]:
    """One request in a fresh child that quits afterwards: ``(reply, the child's stderr)``.
    ``names``: ChildProcess's name, crash_hint, timeout_hint."""
    child = ChildProcess(module, **names)
    try:
        reply = child.request(request, timeout_s)
    finally:
        child.close()
    return reply, child.last_stderr
