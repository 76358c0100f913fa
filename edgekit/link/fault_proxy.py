"""A fault-injecting man in the middle between a host and a device, for testing the link.

    proxy = FaultProxy(device_port, Faults(flip_rate=1e-4, seed=1))
    host_port = proxy.start()          # a new pty; the host opens this instead of the device
    ...
    proxy.stop(); print(proxy.counts)

Bytes are forwarded frame by frame (up to each 0x00) in both directions, and each frame can be
damaged on the way: bytes dropped, bits flipped, the frame duplicated or cut in half, garbage injected,
the host side vanishing (the pty closed under the host) or the device side going silent. Faults can be
changed while the proxy runs; a seeded RNG makes runs repeatable.
"""
from __future__ import annotations

import os
import pty
import random
import select
import threading
import time
import tty
from dataclasses import dataclass, field

from edgekit.link.transport import open_port


@dataclass
class Faults:
    drop_rate: float = 0.0            # probability that a byte is lost
    flip_rate: float = 0.0            # probability that a byte has one bit flipped
    duplicate_rate: float = 0.0       # probability that a whole frame is sent twice
    garbage_rate: float = 0.0         # probability that a random byte is inserted after a byte
    stall_rate: float = 0.0           # probability that a frame is held back for stall_s first
    stall_s: float = 0.5
    cut_next_frames: int = 0          # the next N frames lose their second half (and delimiter)
    garbage_to_host: bytes = b""      # injected once towards the host before the next device frame
    garbage_to_device: bytes = b""    # injected once towards the device before the next host frame
    mute_device: bool = False         # nothing from the device reaches the host
    vanish_after_host_bytes: int | None = None   # close the host's pty after this many bytes from it
    directions: str = "both"          # which direction the random faults hit: both | to_device | to_host
    seed: int = 0


@dataclass
class FaultCounts:
    frames_to_device: int = 0
    frames_to_host: int = 0
    bytes_dropped: int = 0
    bits_flipped: int = 0
    frames_duplicated: int = 0
    frames_cut: int = 0
    garbage_bytes: int = 0
    frames_stalled: int = 0
    frames_muted: int = 0
    vanished: bool = False
    extra: dict = field(default_factory=dict)


class FaultProxy:
    def __init__(self, device_port: str, faults: Faults | None = None, baud: int = 115200):
        self.device_port = device_port
        self.faults = faults or Faults()
        self.baud = baud
        self.counts = FaultCounts()
        self._rng = random.Random(self.faults.seed)
        self._dev = None
        self._master: int | None = None
        self._slave: int | None = None
        self.port: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._host_bytes = 0
        self._buf = {"to_device": bytearray(), "to_host": bytearray()}

    def start(self) -> str:
        self._dev = open_port(self.device_port, self.baud)
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._slave_close_for_vanish()
        if self._dev is not None:
            self._dev.close()
            self._dev = None

    def __enter__(self) -> "FaultProxy":
        if self.port is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _close_host(self) -> None:
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
            self._master = None

    # -- forwarding ------------------------------------------------------------------------------
    def _run(self) -> None:
        dev_fd = self._dev.fileno()
        while not self._stop.is_set():
            fds = [dev_fd] + ([self._master] if self._master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    continue
                if fd == dev_fd:
                    self._from_device(data)
                else:
                    self._from_host(data)

    def _from_host(self, data: bytes) -> None:
        f = self.faults
        if f.vanish_after_host_bytes is not None:
            self._host_bytes += len(data)
            if self._host_bytes >= f.vanish_after_host_bytes:
                self.counts.vanished = True
                self._slave_close_for_vanish()
                return
        for frame in self._frames("to_device", data):
            self.counts.frames_to_device += 1
            if f.garbage_to_device:
                self._write_device(f.garbage_to_device)
                self.counts.garbage_bytes += len(f.garbage_to_device)
                f.garbage_to_device = b""
            for out in self._damage(frame, "to_device"):
                self._write_device(out)

    def _slave_close_for_vanish(self) -> None:
        # The host's side disappears: close both ends of its pty, so its next read or write fails.
        self._close_host()
        if self._slave is not None:
            try:
                os.close(self._slave)
            except OSError:
                pass
            self._slave = None

    def _from_device(self, data: bytes) -> None:
        f = self.faults
        for frame in self._frames("to_host", data):
            self.counts.frames_to_host += 1
            if f.mute_device:
                self.counts.frames_muted += 1
                continue
            if f.garbage_to_host:
                self._write_host(f.garbage_to_host)
                self.counts.garbage_bytes += len(f.garbage_to_host)
                f.garbage_to_host = b""
            for out in self._damage(frame, "to_host"):
                self._write_host(out)

    def _frames(self, direction: str, data: bytes) -> list[bytes]:
        buf = self._buf[direction]
        buf += data
        out = []
        while True:
            i = buf.find(0)
            if i < 0:
                return out
            out.append(bytes(buf[:i + 1]))
            del buf[:i + 1]

    def _damage(self, frame: bytes, direction: str) -> list[bytes]:
        f = self.faults
        if f.directions not in ("both", direction) or len(frame) <= 1:
            return [frame]             # untouched direction, or a bare delimiter
        rng = self._rng
        if f.cut_next_frames > 0 and len(frame) > 4:
            f.cut_next_frames -= 1
            self.counts.frames_cut += 1
            return [frame[:len(frame) // 2]]
        if f.drop_rate or f.flip_rate or f.garbage_rate:
            out = bytearray()
            for b in frame:
                if f.drop_rate and rng.random() < f.drop_rate:
                    self.counts.bytes_dropped += 1
                    continue
                if f.flip_rate and rng.random() < f.flip_rate:
                    b ^= 1 << rng.randrange(8)
                    self.counts.bits_flipped += 1
                out.append(b)
                if f.garbage_rate and rng.random() < f.garbage_rate:
                    out.append(rng.randrange(256))
                    self.counts.garbage_bytes += 1
            frame = bytes(out)
        if f.stall_rate and rng.random() < f.stall_rate:
            self.counts.frames_stalled += 1
            time.sleep(f.stall_s)          # the relay thread holds everything back, as a stalled link would
        if f.duplicate_rate and rng.random() < f.duplicate_rate:
            self.counts.frames_duplicated += 1
            key = f"duplicated_{direction}"
            self.counts.extra[key] = self.counts.extra.get(key, 0) + 1
            return [frame, frame]
        return [frame]

    def _write_device(self, data: bytes) -> None:
        try:
            self._dev.write(data)
        except Exception:  # noqa: BLE001 - the device side went away; the test will see it
            pass

    def _write_host(self, data: bytes) -> None:
        fd = self._master
        if fd is None:
            return
        deadline = time.monotonic() + 2.0
        view = memoryview(data)
        while view and time.monotonic() < deadline:
            try:
                _, ready, _ = select.select([], [fd], [], 0.1)
                if ready:
                    view = view[os.write(fd, view):]
            except OSError:
                return
