"""Port discovery and port errors, through the two seams of edgekit.ports (list_ports, open_serial).

Ports that must exist are real ptys (pyserial opens them like any tty); the USB ids that a pty lacks
come from a simulated list_ports.
"""
from __future__ import annotations

import errno
import json
import os

import pytest
import serial
from typer.testing import CliRunner

from edgekit import ports
from edgekit.boards import load_board
from edgekit.errors import DeviceError, PortBusy, PortNotFound, PortPermission, PortVanished, UsageError


@pytest.fixture
def pty_paths():
    fds, paths = [], []
    for _ in range(2):
        master, slave = os.openpty()
        fds += [master, slave]
        paths.append(os.ttyname(slave))
    yield paths
    for fd in fds:
        os.close(fd)


def fake_ports(monkeypatch, *infos):
    monkeypatch.setattr(ports, "list_ports", lambda: list(infos))


def test_one_matching_port_is_chosen(monkeypatch, pty_paths):
    fake_ports(monkeypatch, ports.PortInfo("/dev/ttyS0"), ports.PortInfo(pty_paths[0], 0x2341, 0x805A))
    assert ports.resolve_port(load_board("nano33ble")) == pty_paths[0]


def test_no_matching_port_lists_what_was_seen(monkeypatch):
    fake_ports(monkeypatch, ports.PortInfo("/dev/ttyUSB7", 0x0403, 0x6001, description="FT232R"))
    with pytest.raises(DeviceError) as err:
        ports.resolve_port(load_board("nano33ble"))
    msg = err.value.message
    assert msg.startswith("no nano33ble found on USB (looked for 2341:805a, 2341:005a, 2341:8063)")
    assert "/dev/ttyUSB7 (0403:6001, FT232R)" in msg
    assert "--port" in err.value.hint


def test_several_matching_ports_ask_for_port_and_never_prompt_without_a_terminal(monkeypatch, pty_paths):
    fake_ports(monkeypatch, ports.PortInfo(pty_paths[0], 0x2E8A, 0x00C0), ports.PortInfo(pty_paths[1], 0x2E8A, 0x000A))

    def must_not_prompt(found):
        pytest.fail("prompted although stdin is not a terminal")

    with pytest.raises(DeviceError) as err:
        ports.resolve_port(load_board("pico"), interactive=False, choose=must_not_prompt)
    assert err.value.message.startswith("2 ports match pico:")
    assert pty_paths[0] in err.value.message and pty_paths[1] in err.value.message
    assert "--port" in err.value.hint


def test_several_matching_ports_on_a_terminal_ask_once(monkeypatch, pty_paths):
    fake_ports(monkeypatch, ports.PortInfo(pty_paths[0], 0x2E8A, 0x00C0), ports.PortInfo(pty_paths[1], 0x2E8A, 0x000A))
    asked = []

    def choose(found):
        asked.append([p.device for p in found])
        return found[1].device

    assert ports.resolve_port(load_board("pico"), interactive=True, choose=choose) == pty_paths[1]
    assert asked == [pty_paths]
    with pytest.raises(UsageError):
        ports.resolve_port(load_board("pico"), interactive=True, choose=lambda found: "/dev/elsewhere")


def test_given_port_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "ttyACM9")
    with pytest.raises(PortNotFound, match=f"serial port {missing} does not exist") as err:
        ports.resolve_port(load_board("nano33ble"), missing)
    assert "edgekit devices" in err.value.hint


def test_given_pty_port_is_opened_and_accepted(pty_paths):
    assert ports.resolve_port(load_board("nano33ble"), pty_paths[0]) == pty_paths[0]


def test_pyserial_urls_are_passed_through():
    assert ports.resolve_port(load_board("nano33ble"), "socket://127.0.0.1:7000") == "socket://127.0.0.1:7000"


def test_port_without_permission(monkeypatch, pty_paths):
    # Tests run as root, where chmod does not deny an open: the denial is simulated at the open seam.
    def denied(port, baudrate=115200, **kw):
        raise serial.SerialException(errno.EACCES, f"could not open port {port}: [Errno 13] Permission denied")

    monkeypatch.setattr(ports, "open_serial", denied)
    with pytest.raises(PortPermission, match=f"no permission to open {pty_paths[0]}") as err:
        ports.check_port(pty_paths[0])
    assert "dialout" in err.value.hint and err.value.exit_code == 9


def test_busy_port_names_modemmanager(monkeypatch, pty_paths):
    def busy(port, baudrate=115200, **kw):
        raise serial.SerialException(f"Could not exclusively lock port {port}: [Errno 11] Resource temporarily unavailable")

    monkeypatch.setattr(ports, "open_serial", busy)
    with pytest.raises(PortBusy, match="is busy: another program has it open") as err:
        ports.check_port(pty_paths[0])
    assert "ModemManager" in err.value.hint


def test_a_real_exclusive_lock_is_reported_busy(pty_paths):
    holder = ports.open_serial(pty_paths[0], exclusive=True, timeout=0)
    try:
        with pytest.raises(PortBusy):
            ports.check_port(pty_paths[0])
    finally:
        holder.close()


def test_vanished_port():
    err = ports.explain(serial.SerialException(errno.EIO, "read failed: [Errno 5] Input/output error"), "/dev/ttyACM0")
    assert isinstance(err, PortVanished) and "vanished" in err.message
    err = ports.explain(OSError(errno.ENOENT, "No such file or directory"), "/dev/ttyACM0", opening=False)
    assert isinstance(err, PortVanished)


def test_one_classification_for_every_opener():
    """ENOENT while opening is PortNotFound from both openers (once PortVanished in one of them)."""
    from edgekit.errors import PortNotFound
    from edgekit.link.transport import _classify_open_error

    exc = OSError(errno.ENOENT, "No such file or directory")
    a, b = ports.explain(exc, "/dev/ttyACM0"), _classify_open_error("/dev/ttyACM0", exc)
    assert type(a) is type(b) is PortNotFound and a.message == b.message and a.hint == b.hint


def test_devices_match_boards_by_usb_id(monkeypatch, pty_paths):
    fake_ports(monkeypatch, ports.PortInfo(pty_paths[0], 0x303A, 0x1001, description="USB JTAG/serial debug unit"),
               ports.PortInfo(pty_paths[1], 0x1234, 0x5678), ports.PortInfo("/dev/ttyGONE"))
    found = {d.port.device: d for d in ports.find_devices()}
    assert found[pty_paths[0]].boards == ["esp32s3"] and found[pty_paths[0]].access == "ok"
    assert found[pty_paths[1]].boards == []
    assert found["/dev/ttyGONE"].access == "missing"


def test_cli_devices_json(monkeypatch, pty_paths):
    from edgekit.cli.main import app

    fake_ports(monkeypatch, ports.PortInfo(pty_paths[0], 0x2341, 0x805A, description="Nano 33 BLE"))
    res = CliRunner().invoke(app, ["devices", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgekit.devices/1"
    assert doc["devices"] == [{"device": pty_paths[0], "usb_hwid": "2341:805a", "serial_number": None,
                     "description": "Nano 33 BLE", "manufacturer": None, "location": None,
                     "boards": ["nano33ble"], "access": "ok", "detail": ""}]
    human = CliRunner().invoke(app, ["devices"])
    assert "nano33ble" in human.stdout and "2341:805a" in human.stdout


def test_real_list_ports_returns_port_infos():
    for p in ports.list_ports():
        assert isinstance(p, ports.PortInfo) and p.device
