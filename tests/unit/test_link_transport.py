"""The one place that opens ports: real ptys and pyserial URLs, and every failure mapped to one
DeviceError with a hint."""
from __future__ import annotations

import errno
import os
import pty
import socket
import time
import tty

import pytest

from edgekit.errors import DeviceError, PortBusy, PortNotFound, PortPermission, PortVanished
from edgekit.link.transport import _classify_open_error, open_port


@pytest.fixture
def pty_pair():
    master, slave = pty.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    yield master, path
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_loop_url_round_trip():
    with open_port("loop://") as t:
        t.write(b"hello\x00")
        assert t.read(1.0) == b"hello\x00"
        assert t.read(0.05) == b""


def test_pty_round_trip(pty_pair):
    master, path = pty_pair
    with open_port(path) as t:
        os.write(master, b"abc")
        assert t.read(1.0) == b"abc"
        t.write(b"xyz")
        assert os.read(master, 10) == b"xyz"


def test_missing_port():
    with pytest.raises(PortNotFound, match="no port /dev/ttyDOESNOTEXIST") as info:
        open_port("/dev/ttyDOESNOTEXIST")
    assert info.value.exit_code == 9 and "plug" in info.value.hint


def test_busy_port(pty_pair):
    _, path = pty_pair
    with open_port(path):
        with pytest.raises(PortBusy, match="busy") as info:
            open_port(path)
    assert "ModemManager" in info.value.hint


def test_vanished_port(pty_pair):
    master, path = pty_pair
    t = open_port(path)
    try:
        os.close(master)
        with pytest.raises(PortVanished, match="went away") as info:
            for _ in range(20):
                t.read(0.05)
                t.write(b"x")
        assert "unplugged" in info.value.hint
    finally:
        t.close()


def test_refused_socket_url_is_bounded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(PortNotFound):
        open_port(f"socket://127.0.0.1:{port}", open_timeout_s=0.5)
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("err,cls,hint", [
    (errno.EACCES, PortPermission, "dialout"),
    (errno.EBUSY, PortBusy, "ModemManager"),
    (errno.ENOENT, PortNotFound, "plug"),
])
def test_os_errors_map_to_one_error_each(err, cls, hint):
    exc = OSError(err, os.strerror(err))
    mapped = _classify_open_error("/dev/ttyACM0", exc)
    assert type(mapped) is cls and isinstance(mapped, DeviceError)
    assert hint in mapped.hint
    assert "\n" not in mapped.message
