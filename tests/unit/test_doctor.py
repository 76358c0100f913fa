"""`edgekit doctor`: tools on PATH (real programs, some fake ones), runtimes imported in child
processes, ports listed through the port seam."""
from __future__ import annotations

import json
import stat

import pytest
from typer.testing import CliRunner

import edgekit.diagnostics as doc
from edgekit import ports


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def fake_tool(folder, name, body):
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_tools_found_missing_and_broken(bin_dir):
    fake_tool(bin_dir, "arduino-cli", 'echo "arduino-cli  Version: 1.1.1 Commit: fa6eafcb"')
    fake_tool(bin_dir, "platformio", 'echo "PlatformIO Core, version 6.1.16"')   # the alternative name of pio
    fake_tool(bin_dir, "picotool", "echo broken >&2; exit 2")
    checks = {t.name: t for t in (doc.check_tool(name) for name in doc.TOOLS)}
    assert checks["arduino-cli"].installed and checks["arduino-cli"].version.startswith("arduino-cli  Version: 1.1.1")
    assert checks["pio"].installed and checks["pio"].version == "PlatformIO Core, version 6.1.16"
    assert checks["picotool"].installed and checks["picotool"].error == "picotool exited with code 2: broken"
    assert not checks["esptool"].installed and "esptool" in checks["esptool"].install_hint
    assert not checks["adb"].installed and checks["adb"].install_hint


def test_every_tool_a_runner_declares_is_checked(bin_dir):
    from edgekit.runners import all_runners

    declared = {tool for cls in all_runners().values() for tool in cls.capabilities.tools}
    assert declared <= set(doc.TOOLS), declared - set(doc.TOOLS)
    assert all(doc.check_tool(t).install_hint for t in declared if not doc.check_tool(t).installed)
    fake_tool(bin_dir, "scp", "echo 'usage: scp [-346ABCOpqRrsTv]' >&2; exit 1")   # scp has no version flag
    scp = doc.check_tool("scp")
    assert scp.installed and scp.error is None and scp.path == str(bin_dir / "scp")


def test_runtimes_are_imported_in_a_child(monkeypatch):
    import sys

    monkeypatch.setitem(doc.RUNTIMES, "edgekit_no_such_runtime", ("edgekit-no-such-runtime", "test"))
    ok = doc.check_runtime("ai_edge_litert")
    assert ok.available and ok.version
    missing = doc.check_runtime("edgekit_no_such_runtime")
    assert not missing.available and "No module named 'edgekit_no_such_runtime'" in missing.error
    assert "edgekit_no_such_runtime" not in sys.modules


def test_doctor_reports_ports_and_permission_problems(monkeypatch):
    monkeypatch.setattr(ports, "list_ports", lambda: [ports.PortInfo("/dev/ttyACM0", 0x2341, 0x805A),
                                                      ports.PortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60)])
    monkeypatch.setattr(ports, "access_of", lambda path: ("no-permission", ports.DIALOUT_HINT)
                        if path == "/dev/ttyACM0" else ("ok", ""))
    report = doc.doctor(tools=False, runtimes=False)
    by_port = {p["device"]: p for p in report.ports}
    assert by_port["/dev/ttyACM0"]["boards"] == ["nano33ble"]
    assert by_port["/dev/ttyUSB0"]["boards"] == ["esp32s3"]
    assert report.problems == [f"no permission to open /dev/ttyACM0: {ports.DIALOUT_HINT}"]
    assert report.boards >= 8


def test_cli_doctor_json(monkeypatch):
    from edgekit.cli.main import app

    monkeypatch.setattr(doc, "RUNTIMES", {"tflite_micro": ("tflite-micro", "host TFLM")})
    monkeypatch.setattr(ports, "list_ports", lambda: [])
    res = CliRunner().invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert {t["name"] for t in report["tools"]} == set(doc.TOOLS)
    assert report["runtimes"][0]["module"] == "tflite_micro" and report["runtimes"][0]["available"]
    assert report["ports"] == []
    human = CliRunner().invoke(app, ["doctor"])
    assert human.exit_code == 0 and "tools" in human.stdout and "serial ports" in human.stdout
