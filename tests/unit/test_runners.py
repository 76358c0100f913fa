"""Runners: the registry, capability refusal, the external-program seam, reset strategies, UF2."""
from __future__ import annotations

import struct
import sys

import pytest

from edgekit import ports
from edgekit.boards import load_board
from edgekit.errors import DeviceError, EdgekitError, ToolFailed, ToolMissing, UsageError
from edgekit.runners import RUNNER_NAMES, all_runners, get_runner, seam
from edgekit.runners.base import Capabilities, Runner
from edgekit.runners.reset import ResetStrategy, Touch1200bps, WaitForPort, strategy_for
from edgekit.runners.rp2040 import RP2040_FAMILY_ID, bin_to_uf2

EXPECTED_RUNNERS = {"arduino-cli", "esptool", "picotool", "ssh", "adb", "virtual", "qemu", "estimate"}


class Recorder:
    """Stands in for the seam: records (argv, dry_run) and returns success."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv, *, dry_run=False, timeout=None, cwd=None, log=None, env=None):
        self.calls.append(list(argv))
        if log:
            log("$ " + seam.quote(argv))
        return seam.ToolResult(list(argv), 0, "", dry_run=dry_run)


# -- registry ---------------------------------------------------------------------------------------
def test_exact_set_of_runner_names():
    assert set(RUNNER_NAMES) == EXPECTED_RUNNERS
    runners = all_runners()
    assert set(runners) == EXPECTED_RUNNERS
    for name, cls in runners.items():
        assert issubclass(cls, Runner) and cls.name == name
        assert isinstance(cls.capabilities, Capabilities)


def test_unknown_runner_name():
    with pytest.raises(EdgekitError, match="unknown runner 'esptol'") as err:
        get_runner("esptol")
    assert "esptool" in err.value.hint


def test_serial_runners_declare_build_and_flash():
    for name in ("arduino-cli", "esptool", "picotool"):
        caps = get_runner(name).capabilities
        assert caps.build and caps.flash and caps.tools
    assert get_runner("arduino-cli").capabilities.needs_port
    assert not get_runner("picotool").capabilities.needs_port


# -- the base class refuses before anything runs ----------------------------------------------------
def test_runner_refuses_what_it_cannot_do_before_running_anything():
    rec = Recorder()
    adb = get_runner("adb")(load_board("android"), tool=rec)
    with pytest.raises(UsageError, match=r"runner adb \(board android\) cannot flash") as err:
        adb.run("flash", build=None, port="/dev/null")
    assert "run, profile" in err.value.hint
    assert rec.calls == []


def test_runner_needing_a_port_refuses_without_one():
    rec = Recorder()
    arduino = get_runner("arduino-cli")(load_board("nano33ble"), tool=rec)
    with pytest.raises(UsageError, match="needs a serial port to flash"):
        arduino.run("flash", build=None, port=None)
    assert rec.calls == []


def test_unknown_option_and_bad_option_type():
    with pytest.raises(UsageError, match="runner esptool has no option 'speed'"):
        get_runner("esptool")(load_board("esp32s3"), options={"speed": 1})
    with pytest.raises(UsageError, match="option 'flash_baud' must be int"):
        get_runner("esptool")(load_board("esp32s3"), options={"flash_baud": "fast"})
    r = get_runner("esptool")(load_board("esp32s3"), options={"flash_baud": "115200"})
    assert r.options["flash_baud"] == 115200


def test_ssh_and_adb_runners_are_the_real_classes():
    from edgekit.runners.adb import AdbRunner
    from edgekit.runners.ssh import SshRunner

    assert get_runner("adb") is AdbRunner and get_runner("ssh") is SshRunner
    assert AdbRunner.can("profile") and SshRunner.can("profile")


# -- the seam ---------------------------------------------------------------------------------------
def test_seam_dry_run_logs_the_quoted_command_and_runs_nothing(tmp_path):
    lines = []
    marker = tmp_path / "ran"
    res = seam.run_tool(["sh", "-c", f"touch {marker}", "two words"], dry_run=True, log=lines.append)
    assert res.dry_run and res.returncode == 0
    assert lines == [f"$ sh -c 'touch {marker}' 'two words'"]
    assert not marker.exists()


def test_seam_dry_run_does_not_need_the_tool():
    lines = []
    seam.run_tool(["arduino-cli-that-does-not-exist", "compile"], dry_run=True, log=lines.append)
    assert lines == ["$ arduino-cli-that-does-not-exist compile"]


def test_seam_runs_and_returns_output(tmp_path):
    res = seam.run_tool(["sh", "-c", "echo hello; echo err >&2"], cwd=tmp_path)
    assert res.returncode == 0 and "hello" in res.output and "err" in res.output


def test_seam_missing_tool_is_one_line_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as err:
        seam.run_tool(["picotool", "load", "x.uf2"])
    assert err.value.message == "picotool is not installed (not found on PATH)"
    assert "picotool" in err.value.hint and "\n" not in err.value.message
    assert err.value.exit_code == 8


def test_seam_alternative_name_is_found(monkeypatch, tmp_path):
    script = tmp_path / "esptool.py"
    script.write_text("#!/bin/sh\necho esptool.py v4 \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    res = seam.run_tool(["esptool", "version"])
    assert "esptool.py v4 version" in res.output


def test_seam_nonzero_exit_carries_the_output_tail():
    with pytest.raises(ToolFailed) as err:
        seam.run_tool(["sh", "-c", "for i in $(seq 1 30); do echo line $i; done; exit 3"])
    e = err.value
    assert e.message == "sh exited with code 3: line 30"
    tail = e.context["output_tail"].splitlines()
    assert tail[0] == "line 16" and tail[-1] == "line 30" and len(tail) == seam.OUTPUT_TAIL_LINES
    assert "line 30" in e.hint


def test_seam_timeout_is_bounded():
    with pytest.raises(ToolFailed, match=r"python[0-9.]* did not finish within 0\.5 s"):
        seam.run_tool([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


def test_seam_start_dry_run_logs_and_starts_nothing(tmp_path):
    lines = []
    marker = tmp_path / "ran"
    tool = seam.start_tool(["qemu-that-does-not-exist", "-kernel", "a b.elf"], output=tmp_path / "out.log",
                           dry_run=True, log=lines.append)
    tool2 = seam.start_tool(["sh", "-c", f"touch {marker}"], output=tmp_path / "out.log", dry_run=True,
                            log=lines.append, cwd=tmp_path)
    assert lines == ["$ qemu-that-does-not-exist -kernel 'a b.elf'",
                     f"$ (cd {tmp_path} && sh -c 'touch {marker}')"]
    assert tool.dry_run and tool.proc is None and not tool.running and tool.stop() is None
    assert tool2.proc is None and not marker.exists() and not (tmp_path / "out.log").exists()


def test_seam_start_missing_tool_is_tool_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="qemu-system-arm is not installed") as err:
        seam.start_tool(["qemu-system-arm", "-M", "mps2-an386"], output=tmp_path / "out.log")
    assert err.value.hint == "apt-get install qemu-system-arm"


def test_seam_start_runs_in_the_background_and_stop_ends_all_it_started(tmp_path):
    import time

    lines = []
    tool = seam.start_tool(["sh", "-c", "echo started; sleep 60 & echo child $!; wait"],
                           output=tmp_path / "out.log", log=lines.append)
    try:
        deadline = time.monotonic() + 10
        while "child " not in tool.output() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tool.running and lines == [f"$ {tool.command}"]
        grandchild = int(tool.output().split("child ")[1].split()[0])
    finally:
        code = tool.stop(timeout_s=5)
    assert code == -15 and not tool.running and tool.output().startswith("started")
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)                    # the sleep it started went with it


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- reset strategies -------------------------------------------------------------------------------
def test_strategy_comes_from_the_board_file():
    assert isinstance(strategy_for(load_board("nano33ble")), Touch1200bps)
    assert isinstance(strategy_for(load_board("pico")), Touch1200bps)
    assert type(strategy_for(load_board("esp32s3"))) is WaitForPort
    assert type(strategy_for(load_board("rpi4"))) is ResetStrategy


def test_touch_in_dry_run_only_logs(monkeypatch):
    monkeypatch.setattr(ports, "touch_1200bps", lambda port: pytest.fail("touched in a dry run"))
    lines = []
    port = Touch1200bps().before_upload(load_board("pico"), "/dev/ttyACM0", dry_run=True, log=lines.append)
    assert port == "/dev/ttyACM0"
    assert lines == ["# 1200-bps touch on /dev/ttyACM0 (the board reboots into its bootloader)"]


def test_touch_then_wait_for_the_bootloader_port(monkeypatch):
    board = load_board("nano33ble")
    app = ports.PortInfo("/dev/ttyACM0", 0x2341, 0x805A)
    boot = ports.PortInfo("/dev/ttyACM1", 0x2341, 0x005A)
    listings = iter([[app], [], [], [boot]])
    touched = []
    monkeypatch.setattr(ports, "list_ports", lambda: next(listings))
    monkeypatch.setattr(ports, "touch_1200bps", touched.append)
    monkeypatch.setattr(ports, "_sleep", lambda s: None)
    strategy = Touch1200bps(timeout_s=5, wait_for_bootloader_port=True)
    assert strategy.before_upload(board, "/dev/ttyACM0", dry_run=False, log=lambda line: None) == "/dev/ttyACM1"
    assert touched == ["/dev/ttyACM0"]


def test_wait_for_port_is_bounded(monkeypatch):
    clock = iter(range(0, 1000))
    monkeypatch.setattr(ports, "_monotonic", lambda: next(clock))
    monkeypatch.setattr(ports, "_sleep", lambda s: None)
    monkeypatch.setattr(ports, "list_ports", lambda: [])
    with pytest.raises(DeviceError, match=r"nano33ble's serial port did not appear within 3 s"):
        WaitForPort(timeout_s=3).after_upload(load_board("nano33ble"), "/dev/ttyACM0", dry_run=False,
                                              log=lambda line: None)


def test_wait_for_port_returns_the_port_that_came_back(monkeypatch):
    back = ports.PortInfo("/dev/ttyACM3", 0x303A, 0x1001)
    listings = iter([[], [back]])
    monkeypatch.setattr(ports, "list_ports", lambda: next(listings))
    monkeypatch.setattr(ports, "_sleep", lambda s: None)
    got = WaitForPort(timeout_s=5).after_upload(load_board("esp32s3"), "/dev/ttyACM0", dry_run=False,
                                                log=lambda line: None)
    assert got == "/dev/ttyACM3"


# -- UF2 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 256, 257, 5000])
def test_uf2_blocks_hold_the_image(size):
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    uf2 = bin_to_uf2(data)
    blocks = [uf2[i:i + 512] for i in range(0, len(uf2), 512)]
    assert len(uf2) % 512 == 0 and len(blocks) == -(-size // 256)
    rebuilt = bytearray()
    for n, block in enumerate(blocks):
        m0, m1, flags, addr, payload, number, total, family = struct.unpack_from("<8I", block)
        assert (m0, m1) == (0x0A324655, 0x9E5D5157) and struct.unpack_from("<I", block, 508)[0] == 0x0AB16F30
        assert flags & 0x2000 and family == RP2040_FAMILY_ID
        assert addr == 0x10000000 + 256 * n and number == n and total == len(blocks) and payload == 256
        rebuilt += block[32:32 + 256]
    assert bytes(rebuilt[:size]) == data and not any(rebuilt[size:])
