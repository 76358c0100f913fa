"""Reset and bootloader-entry sequences as small strategy objects (no sleeps inlined in runners).

A board file's ``upload:`` flags pick the strategy (:func:`strategy_for`):

- ``use_1200bps_touch``: open the port at 1200 baud and drop DTR; Arduino-style cores reboot into
  their bootloader (RP2040 Arduino cores: into BOOTSEL).
- ``wait_for_upload_port``: after a touch, or after an upload, wait (bounded) for the board's serial
  port to show up again, and use the path it comes back on.

Port listing and opening go through the seams in :mod:`edgekit.ports`; in dry-run mode the steps
are only logged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgekit import ports as _ports

DEFAULT_PORT_TIMEOUT_S = 10.0


@dataclass
class ResetStrategy:
    """Base: nothing before the upload, nothing after it."""

    name = "none"

    def before_upload(self, board, port: str | None, *, dry_run: bool, log: Callable[[str], None]) -> str | None:
        return port

    def after_upload(self, board, port: str | None, *, dry_run: bool, log: Callable[[str], None]) -> str | None:
        return port


@dataclass
class WaitForPort(ResetStrategy):
    """After the upload, wait for the board's serial port to come back (same path preferred)."""

    timeout_s: float = DEFAULT_PORT_TIMEOUT_S
    settle_s: float = 0.0          # the board's boot time (upload.boot_wait_s) before it is looked for
    name = "wait-for-port"

    def after_upload(self, board, port, *, dry_run, log):
        log(f"# wait up to {self.timeout_s:g} s for {board.id} to come back on "
            f"{port or 'a port with ' + _hwids(board)}")
        if dry_run:
            return port
        if self.settle_s:
            _ports._sleep(self.settle_s)
        if port and "://" in port:
            return port

        def back(found):
            matching = [p.device for p in found if p.vid is not None and (p.vid, p.pid) in board.usb_hwids]
            if port and (port in matching or (not board.usb_hwids and port in [p.device for p in found])):
                return port
            return matching[0] if len(matching) == 1 else None

        return _ports.wait_for_port(back, timeout_s=self.timeout_s, what=f"{board.id}'s serial port")


@dataclass
class Touch1200bps(WaitForPort):
    """1200-bps touch before the upload; optionally wait for the bootloader's port to appear."""

    wait_for_bootloader_port: bool = False
    name = "1200bps-touch"

    def before_upload(self, board, port, *, dry_run, log):
        if port is None:
            return None
        log(f"# 1200-bps touch on {port} (the board reboots into its bootloader)")
        if dry_run:
            return port
        before = {p.device for p in _ports.list_ports()}
        _ports.touch_1200bps(port)
        if not self.wait_for_bootloader_port:
            if self.settle_s:
                _ports._sleep(self.settle_s)   # the bootloader needs this long to show up
            return port

        def new_port(found):
            fresh = [p.device for p in found if p.device not in before]
            return fresh[0] if fresh else None

        try:
            return _ports.wait_for_port(new_port, timeout_s=self.timeout_s, what="the bootloader's port")
        except Exception:  # noqa: BLE001 - bootloaders without a serial port (mass storage, BOOTSEL)
            return None


def _hwids(board) -> str:
    return ", ".join(f"{v:04x}:{p:04x}" for v, p in board.usb_hwids) or "no USB id"


def strategy_for(board) -> ResetStrategy:
    """The reset strategy a board's ``upload:`` flags describe."""
    upload = board.upload or {}
    timeout = float(upload.get("upload_port_timeout_s", DEFAULT_PORT_TIMEOUT_S))
    settle = float(upload.get("boot_wait_s", 0.0))
    if upload.get("use_1200bps_touch"):
        return Touch1200bps(timeout_s=timeout, settle_s=settle, wait_for_bootloader_port=False)
    if upload.get("wait_for_upload_port"):
        return WaitForPort(timeout_s=timeout, settle_s=settle)
    return ResetStrategy()
