"""The one place that opens ports.

Every link goes through pyserial's ``serial_for_url``, so a local port (/dev/ttyACM0, COM3, a pty),
``rfc2217://host:port`` (ser2net, a remote board), ``socket://host:port`` and ``loop://`` all work the
same. OS errors become one clear :class:`~edgekit.errors.DeviceError` subclass each: permission
(dialout group), busy (another program, ModemManager), not found, vanished (unplugged mid-transfer).
"""
from __future__ import annotations

import logging
import math
import select
import time

from edgekit.errors import NoAnswer, PortNotFound, PortVanished, RuntimeMissing

log = logging.getLogger("edgekit.link")

POLL_S = 0.02              # longest single blocking read on ports polled without select()
MIN_BYTES_PER_S = 11520.0   # docs/protocol.md §4: never assume a link slower than 115200 baud


def _os_errors() -> tuple:
    """Exceptions a vanished port raises (termios.error is not an OSError)."""
    try:
        import termios
        return (OSError, termios.error)
    except ImportError:  # pragma: no cover - Windows
        return (OSError,)


def _serial():
    try:
        import serial
    except ImportError as e:  # pragma: no cover - pyserial is a core dependency
        raise RuntimeMissing("pyserial is not installed", hint="pip install pyserial") from e
    return serial


def _is_url(port: str) -> bool:
    return "://" in port


def _classify_open_error(port: str, exc: BaseException):
    """Map an exception from opening ``port`` to the right DeviceError (edgekit.ports.explain)."""
    from edgekit.ports import explain

    return explain(exc, port, opening=True)


class Transport:
    """Bytes to and from one port. Reads return what arrived within a bounded wait; writes are bounded."""

    def __init__(self, ser, port: str, baud: int, *, bounded_writes: bool = True):
        self._ser = ser
        self.port = port
        self.baud = baud
        self._bounded_writes = bounded_writes
        self._fd: int | None = None
        if not _is_url(port):
            try:
                self._fd = ser.fileno()
            except Exception:  # noqa: BLE001 - platforms without fds (Windows) poll like URLs
                self._fd = None

    @property
    def bytes_per_s(self) -> float:
        return max(MIN_BYTES_PER_S, self.baud / 10.0)

    def write(self, data: bytes) -> None:
        serial = _serial()
        # A write that cannot drain is a device that does not read: bound it like any other wait.
        # (rfc2217:// cannot bound writes; the TCP connection's buffers bound them instead.)
        if self._bounded_writes:
            bound = float(math.ceil(2.0 + 4.0 * len(data) / self.bytes_per_s))   # whole seconds:
            if self._ser.write_timeout != bound:                                # reconfigure rarely
                self._ser.write_timeout = bound
        try:
            self._ser.write(data)
            self._ser.flush()
        except serial.SerialTimeoutException as e:
            raise NoAnswer(f"the device on {self.port} does not take data "
                           f"({len(data)} bytes not sent in time)",
                           hint="check that the board runs edgekit firmware and is not stuck") from e
        except (serial.SerialException, *_os_errors()) as e:
            raise self._vanished(e) from e

    def read(self, timeout_s: float, max_bytes: int = 65536) -> bytes:
        """Bytes that arrive within ``timeout_s`` (returns as soon as some arrived); b'' on timeout.

        The port's own timeout is never changed here: on rfc2217:// that would renegotiate the line
        settings with the server on every read. Local ports wait in select(); URL ports poll in short
        reads of :data:`POLL_S`.
        """
        serial = _serial()
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            while True:
                waiting = self._ser.in_waiting
                if waiting:
                    return self._ser.read(min(waiting, max_bytes))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                if self._fd is not None:
                    ready, _, _ = select.select([self._fd], [], [], remaining)
                    if ready:
                        data = self._ser.read(min(max(self._ser.in_waiting, 1), max_bytes))
                        if data:
                            return data
                    continue
                first = self._ser.read(1)            # waits at most POLL_S
                if first:
                    more = self._ser.in_waiting
                    return first + (self._ser.read(min(more, max_bytes - 1)) if more else b"")
        except (serial.SerialException, *_os_errors()) as e:
            raise self._vanished(e) from e

    def fileno(self) -> int:
        """The OS handle of a local port (for select); URL transports may not have one."""
        return self._ser.fileno()

    def drain_input(self) -> int:
        """Discard whatever is waiting; returns how many bytes were dropped."""
        n = 0
        try:
            while True:
                waiting = self._ser.in_waiting
                if not waiting:
                    return n
                n += len(self._ser.read(waiting))
        except Exception:  # noqa: BLE001 - best effort
            return n

    def _vanished(self, exc: BaseException) -> PortVanished:
        return PortVanished(
            f"{self.port} went away during the transfer ({str(exc).strip() or type(exc).__name__})",
            hint="the board was unplugged or reset, or the remote server closed the connection; "
                 "plug it in and run again")

    def close(self) -> None:
        try:
            self._ser.close()
        except Exception:  # noqa: BLE001 - closing a vanished port may fail; nothing to do
            pass

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_port(port: str, baud: int = 115200, *, open_timeout_s: float = 5.0) -> Transport:
    """Open ``port`` (a path or a pyserial URL) and return a :class:`Transport`."""
    from edgekit.ports import open_serial

    serial = _serial()
    log.debug("opening %s at %d baud", port, baud)
    bounded_writes = not port.startswith("rfc2217://")
    kwargs = {"baudrate": baud, "timeout": POLL_S}
    if bounded_writes:
        kwargs["write_timeout"] = open_timeout_s
    if not _is_url(port):
        kwargs["exclusive"] = True
    url = port
    if port.startswith("rfc2217://") and "ign_set_control" not in port:
        # Servers whose device cannot change modem lines (ser2net on a pty, some adapters) never
        # answer SET_CONTROL for DTR/RTS, and pyserial would give up opening; the answer is not needed.
        url = port + ("&" if "?" in port else "?") + "ign_set_control"
    deadline = time.monotonic() + open_timeout_s
    while True:
        try:
            ser = open_serial(url, baud, **{k: v for k, v in kwargs.items() if k != "baudrate"})
            break
        except (serial.SerialException, OSError, ValueError, NotImplementedError) as e:
            mapped = _classify_open_error(port, e)
            # rfc2217/socket servers may refuse for an instant while starting: retry within the bound.
            if isinstance(mapped, PortNotFound) and _is_url(port) and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise mapped from e
    return Transport(ser, port, baud, bounded_writes=bounded_writes)
