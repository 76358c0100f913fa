"""Serial ports: listing, matching them to boards by USB VID:PID, choosing one, explaining errors.

Two seams for everything that touches the operating system here, so tests can simulate any machine:
:func:`list_ports` (wraps ``serial.tools.list_ports``) and :func:`open_serial` (wraps
``serial.Serial``). Nothing else in edgekit lists or probes ports.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from edgekit.errors import DeviceError, PortBusy, PortNotFound, PortPermission, PortVanished, UsageError

DIALOUT_HINT = ("add your user to the group that owns the port (usually dialout; uucp on Arch/Fedora): "
                "sudo usermod -aG dialout $USER, then log out and in again")
BUSY_HINT = ("close other programs that hold the port (serial monitors, the Arduino IDE, screen, "
             "minicom); ModemManager probes new USB serial ports: stop it (sudo systemctl stop "
             "ModemManager) or mark the board ID_MM_DEVICE_IGNORE in a udev rule")
DEVICES_HINT = "is the board plugged in? `edgekit devices` lists the serial ports seen"


@dataclass(frozen=True)
class PortInfo:
    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = ""
    manufacturer: str | None = None
    location: str | None = None

    @property
    def hwid(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "usb_hwid": self.hwid or None, "serial_number": self.serial_number,
                "description": self.description, "manufacturer": self.manufacturer,
                "location": self.location}


@dataclass
class Device:
    """A serial port and the boards whose USB ids it matches."""

    port: PortInfo
    boards: list[str] = field(default_factory=list)
    access: str = "unknown"       # ok | no-permission | missing
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.port.to_dict(), "boards": list(self.boards), "access": self.access,
                "detail": self.detail}


# -- seams ------------------------------------------------------------------------------------------
def list_ports() -> list[PortInfo]:
    """Every serial port the OS shows (the one seam for port discovery)."""
    from serial.tools import list_ports as _lp

    out = []
    for p in _lp.comports():
        out.append(PortInfo(device=p.device, vid=p.vid, pid=p.pid, serial_number=p.serial_number,
                            description=p.description or "", manufacturer=p.manufacturer,
                            location=p.location))
    return sorted(out, key=lambda p: p.device)


def open_serial(port: str, baudrate: int = 115200, **kwargs):
    """Open a serial port or pyserial URL: the one place a port is opened (the device link's
    :func:`edgekit.link.transport.open_port`, the port checks and the 1200-baud touch all come here).
    Raises pyserial's own errors; :func:`explain` turns them into edgekit's."""
    import serial

    return serial.serial_for_url(port, baudrate=baudrate, **kwargs)


_sleep = time.sleep
_monotonic = time.monotonic


# -- matching ---------------------------------------------------------------------------------------
def boards_for(port: PortInfo, boards: Iterable) -> list[str]:
    if port.vid is None or port.pid is None:
        return []
    return [b.id for b in boards if (port.vid, port.pid) in b.usb_hwids]


def matching_ports(board, ports: Sequence[PortInfo] | None = None) -> list[PortInfo]:
    ports = list_ports() if ports is None else ports
    return [p for p in ports if p.vid is not None and (p.vid, p.pid) in board.usb_hwids]


def access_of(path: str) -> tuple[str, str]:
    """Non-intrusive access check (does not open the port, so no board is reset by DTR)."""
    if "://" in path:
        return "ok", "pyserial URL"
    if not os.path.exists(path):
        return "missing", "vanished"
    if not os.access(path, os.R_OK | os.W_OK):
        return "no-permission", DIALOUT_HINT
    return "ok", ""


def find_devices(boards: Iterable | None = None) -> list[Device]:
    """Serial ports found, each with the board ids its VID:PID matches and its access status."""
    if boards is None:
        from edgekit.boards import list_boards

        boards = list_boards()
    boards = list(boards)
    out = []
    for p in list_ports():
        access, detail = access_of(p.device)
        out.append(Device(port=p, boards=boards_for(p, boards), access=access, detail=detail))
    return out


def _describe(ports: Sequence[PortInfo]) -> str:
    if not ports:
        return "none"
    return "; ".join(f"{p.device} ({p.hwid or 'no USB id'}{', ' + p.description if p.description else ''})"
                     for p in ports)


def resolve_port(board, port: str | None = None, *, interactive: bool = False,
                 choose: Callable[[list[PortInfo]], str] | None = None) -> str:
    """The port to use for ``board``: the one given, or the only port whose VID:PID matches.

    With none or several matches, lists what was seen and asks for ``--port``. ``choose`` (a prompt)
    is used only when ``interactive`` (stdin is a terminal); it is never called otherwise.
    """
    if port:
        check_port(port)
        return port
    if not board.usb_hwids:
        raise UsageError(f"board {board.id} has no USB ids to find it by", hint="pass --port")
    ports = list_ports()
    found = matching_ports(board, ports)
    ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in board.usb_hwids)
    if len(found) == 1:
        check_port(found[0].device)
        return found[0].device
    if not found:
        raise DeviceError(f"no {board.id} found on USB (looked for {ids}); ports seen: {_describe(ports)}",
                          hint=f"plug the board in, or pass --port. {DEVICES_HINT}")
    if interactive and choose is not None:
        chosen = choose(found)
        if chosen not in [p.device for p in found]:
            raise UsageError(f"{chosen!r} is not one of the listed ports")
        check_port(chosen)
        return chosen
    raise DeviceError(f"{len(found)} ports match {board.id}: {_describe(found)}",
                      hint="pass --port with the one to use")


# -- opening and explaining -------------------------------------------------------------------------
def explain(exc: BaseException, port: str, *, opening: bool = True) -> DeviceError:
    """Turn an exception from opening (``opening``) or using a port into one clear DeviceError: the one
    classification of port errors. A port that does not exist when it is opened is PortNotFound; one
    that goes away (ENOENT, EIO, ENXIO, ENODEV) while in use is PortVanished."""
    code = getattr(exc, "errno", None)
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    url = "://" in port
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM) or "permission denied" in low:
        return PortPermission(f"no permission to open {port}", hint=DIALOUT_HINT, port=port)
    if (code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "busy" in low or "exclusively lock" in low
            or "temporarily unavailable" in low):
        return PortBusy(f"{port} is busy: another program has it open", hint=BUSY_HINT, port=port)
    gone = (isinstance(exc, FileNotFoundError) or code in (errno.ENOENT, errno.ENXIO, errno.ENODEV, errno.EIO)
            or "no such file" in low or "device not configured" in low or "disconnected" in low)
    if gone and opening and code != errno.EIO:
        return PortNotFound(f"no port {port}", hint=f"plug the board in and check the name. {DEVICES_HINT}",
                            port=port)
    if gone:
        return PortVanished(f"{port} vanished (the board was unplugged or reset)", hint=DEVICES_HINT, port=port)
    if opening:
        what = "server" if url else "port"
        return PortNotFound(f"cannot open {port}: {text}", hint=f"check that the {what} exists and is reachable",
                            port=port)
    return DeviceError(f"cannot use {port}: {text}", hint=DEVICES_HINT, port=port)


def check_port(port: str) -> None:
    """Refuse a port that does not exist, that we may not open, or that another program holds."""
    if "://" in port:
        return
    if not os.path.exists(port):
        raise PortNotFound(f"serial port {port} does not exist", hint=DEVICES_HINT, port=port)
    try:
        handle = open_serial(port, exclusive=True, timeout=0)
    except Exception as e:  # noqa: BLE001 - every open failure is explained
        raise explain(e, port) from e
    try:
        handle.close()
    except Exception:  # noqa: BLE001
        pass


def touch_1200bps(port: str) -> None:
    """Open at 1200 baud and drop DTR: Arduino-style cores reboot into their bootloader."""
    try:
        handle = open_serial(port, 1200)
        try:
            handle.dtr = False
        finally:
            handle.close()
    except Exception as e:  # noqa: BLE001
        # The board often disappears while we close it: that is the touch working.
        if isinstance(e, OSError) or "disconnected" in str(e).lower() or "no such" in str(e).lower():
            return
        raise explain(e, port) from e


def wait_for_port(predicate: Callable[[list[PortInfo]], str | None], *, timeout_s: float,
                  poll_s: float = 0.25, what: str = "the board's serial port") -> str:
    """Poll :func:`list_ports` until ``predicate(ports)`` returns a device path; bounded by timeout_s."""
    deadline = _monotonic() + timeout_s
    while True:
        chosen = predicate(list_ports())
        if chosen:
            return chosen
        if _monotonic() >= deadline:
            raise DeviceError(f"{what} did not appear within {timeout_s:.0f} s",
                              hint="press the board's reset button, or pass --port once it shows up")
        _sleep(poll_s)
