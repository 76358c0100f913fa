"""`edgekit flash`: exact dry-run commands per board (through the seam), the fit check at its edges,
bad input, missing / failing tools, and the whole flow against a board that answers HELLO.

The "board that answers" is edgekit's virtual board on a pty holding the flashed model (what the
firmware holds after a successful upload); the build tools are shell scripts put first on PATH.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgekit import ports
from edgekit.boards import load_board
from edgekit.errors import BoardError, DeviceError, ModelTooLarge, ToolFailed, ToolMissing, UsageError
from edgekit.flashing import check_fit, flash
from edgekit.runners import seam

PORT = "/dev/ttyACM0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinymodels

    folder = tmp_path_factory.mktemp("flash_models")
    out = {}
    # int8 with per-tensor dense weights: what the boards' TFLM library (Chirale 2.0.0) computes right
    int8 = lambda: tinymodels.convert_keras(tinymodels.int8_cnn_keras(), int8=True, dense_per_tensor=True)  # noqa: E731
    for name, build in (("int8", int8), ("float", tinymodels.float_cnn)):
        path = folder / name / "model.tflite"
        path.parent.mkdir()
        path.write_bytes(build())
        out[name] = path
    return out


@pytest.fixture
def recorded(monkeypatch):
    """Patch the one seam: record every command (and whether it was a dry run) instead of running it."""
    calls = []

    def fake_run_tool(argv, *, dry_run=False, timeout=None, cwd=None, log=None, env=None):
        calls.append((list(argv), dry_run))
        if log:
            log("$ " + seam.quote(argv))
        return seam.ToolResult(list(argv), 0, "", dry_run=dry_run)

    monkeypatch.setattr(seam, "run_tool", fake_run_tool)
    monkeypatch.setattr(ports, "touch_1200bps", lambda port: pytest.fail("touched a port in a dry run"))
    return calls


def expected_commands(board_id: str, project: str) -> list[list[str]]:
    pio = f"{project}/.pio/build/{board_id}"
    return {
        "nano33ble": [
            ["arduino-cli", "core", "install", "arduino:mbed_nano@4.1.5"],
            ["arduino-cli", "lib", "install", "Chirale_TensorFLowLite@2.0.0"],
            ["arduino-cli", "compile", "--fqbn", "arduino:mbed_nano:nano33ble", "--output-dir",
             f"{project}/build", f"{project}/edgekit_runner"],
            ["arduino-cli", "upload", "--fqbn", "arduino:mbed_nano:nano33ble", "--port", PORT,
             "--input-dir", f"{project}/build", f"{project}/edgekit_runner"],
        ],
        "esp32s3": [
            ["pio", "run", "-e", "esp32s3", "-d", project],
            ["esptool", "--chip", "esp32s3", "--port", PORT, "--baud", "921600", "--before", "default-reset",
             "--after", "hard-reset", "write-flash", "-z", "0x0", f"{pio}/bootloader.bin",
             "0x8000", f"{pio}/partitions.bin", "0x10000", f"{pio}/firmware.bin"],
        ],
        "pico": [
            ["pio", "run", "-e", "pico", "-d", project],
            ["picotool", "load", "-v", "-x", f"{pio}/firmware.uf2"],
        ],
    }[board_id]


@pytest.mark.parametrize("board_id", ["nano33ble", "esp32s3", "pico"])
def test_dry_run_exact_commands(models, recorded, tmp_path, board_id):
    project = tmp_path / "proj"
    result = flash(models["int8"], board_id, port=PORT, out_dir=project, dry_run=True)
    assert [argv for argv, _ in recorded] == expected_commands(board_id, str(project))
    assert all(dry for _, dry in recorded)
    assert not project.exists(), "a dry run must not render or build anything"
    assert result.dry_run and result.confirmed is None and "pending" in result.confirmation
    assert result.fit.fits and result.model_sha256 == hashlib.sha256(models["int8"].read_bytes()).hexdigest()


def test_dry_run_on_a_pi_lists_the_exact_ssh_commands(models, recorded, tmp_path):
    """A Linux board has no firmware: flash copies the model (temporary name, then rename), checks its
    SHA-256 on the board with the agent and, with service=True, installs the systemd user service."""
    model = tmp_path / "it's a; model.tflite"
    model.write_bytes(models["int8"].read_bytes())
    result = flash(model, "rpi5", dry_run=True, runner_options={"host": "pi@raspberrypi.local"},
                   dest="my models", service=True, service_port=9000, threads=2)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", "pi@raspberrypi.local"]
    scp = ["scp", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--"]
    staged = f".cache/edgekit/model-{sha[:16]}.tflite"
    target = "'my models/it'\"'\"'s a; model.tflite'"
    assert [argv for argv, _ in recorded] == [
        [*ssh, "mkdir -p -- .cache/edgekit"],
        [*scp, str(Path(__file__).resolve().parents[2] / "firmware_templates" / "rpi" / "edgekit_agent.py"),
         "pi@raspberrypi.local:.cache/edgekit/edgekit_agent.py"],
        [*scp, str(model.resolve()), f"pi@raspberrypi.local:{staged}"],
        [*ssh, f"mkdir -p -- 'my models' && cp -- {staged} 'my models/it'\"'\"'s a; model.tflite.edgekit-tmp' && "
               f"mv -f -- 'my models/it'\"'\"'s a; model.tflite.edgekit-tmp' {target} || "
               f"{{ rm -f -- 'my models/it'\"'\"'s a; model.tflite.edgekit-tmp'; exit 1; }}"],
        [*ssh, f"python3 .cache/edgekit/edgekit_agent.py hash {target}"],
        [*ssh, f"python3 .cache/edgekit/edgekit_agent.py install-service {target} --port 9000 --bind 127.0.0.1 "
               "--threads 2"],
    ]
    assert all(dry for _, dry in recorded)
    assert result.runner == "ssh" and result.project_dir is None and result.dry_run
    assert result.confirmed is None and result.model_sha256 == sha


def test_dry_run_cli_prints_the_commands(models, recorded, tmp_path):
    from edgekit.cli.main import app

    project = tmp_path / "p"
    res = CliRunner().invoke(app, ["flash", str(models["int8"]), "--board", "nano33", "--port", PORT,
                                   "--out", str(project), "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    commands = [ln[2:] for ln in lines if ln.startswith("$ ")]
    assert commands == [seam.quote(c) for c in expected_commands("nano33ble", str(project))]
    assert any(ln.startswith("# render the arduino project for nano33ble") for ln in lines)
    assert "dry run: nothing was built or flashed" in res.stdout

    js = CliRunner().invoke(app, ["flash", str(models["int8"]), "-b", "esp32s3", "-p", PORT,
                                  "-o", str(project), "--dry-run", "--json"])
    assert js.exit_code == 0, js.output
    doc = json.loads(js.stdout)
    assert doc["board"] == "esp32s3" and doc["dry_run"] is True and doc["fit"]["fits"] is True
    assert [c[2:] for c in doc["commands"] if c.startswith("$ ")] == \
        [seam.quote(c) for c in expected_commands("esp32s3", str(project))]


def test_dry_run_without_a_port_shows_a_placeholder(models, recorded, tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "list_ports", lambda: [])
    result = flash(models["int8"], "esp32s3", out_dir=tmp_path / "p", dry_run=True)
    assert recorded[-1][0][4] == "<port>"
    assert any("no port found" in c for c in result.commands)


# -- the fit check at its edges --------------------------------------------------------------------
def board_folder(tmp_path, *, flash_bytes, ram_bytes, runtime="tflm", int8_only=False):
    raw = {"name": "Edge board", "cpu": "Cortex-M4F", "clock_hz": 64_000_000, "flash_bytes": flash_bytes,
           "ram_bytes": ram_bytes, "firmware_flash_bytes": 100_000, "firmware_ram_bytes": 30_000,
           "peak_int8_macs_per_cycle": 2, "active_power_mw": 20, "runtime": runtime,
           "runner": "arduino-cli", "int8_only": int8_only, "build": {"fqbn": "a:b:c"}}
    folder = tmp_path / f"boards_{flash_bytes}_{ram_bytes}"
    folder.mkdir()
    (folder / "edge.yaml").write_text(yaml.safe_dump(raw))
    return load_board("edge", folder)


@pytest.fixture(scope="module")
def measured(models):
    """Model size and arena of the int8 model, measured (host TFLM), to build boards around it."""
    fit = check_fit(models["int8"], load_board("nano33ble"))
    assert fit.arena_source.startswith("exact minimum on host TFLM") and fit.arena_bytes > fit.arena_min_bytes > 0
    return fit.model_bytes, fit.arena_bytes


def test_model_that_just_fits(models, measured, tmp_path):
    model_bytes, arena = measured
    board = board_folder(tmp_path, flash_bytes=model_bytes + 100_000, ram_bytes=arena + 30_000)
    fit = check_fit(models["int8"], board)
    assert fit.fits and fit.flash_margin_bytes == 0 and fit.ram_margin_bytes == 0 and not fit.problems


def test_model_one_byte_over_flash(models, measured, tmp_path):
    model_bytes, arena = measured
    board = board_folder(tmp_path, flash_bytes=model_bytes + 100_000 - 1, ram_bytes=arena + 30_000)
    with pytest.raises(ModelTooLarge) as err:
        check_fit(models["int8"], board)
    need = model_bytes + 100_000
    assert f"flash: model {model_bytes:,} + firmware 100,000 = {need:,} bytes > {need - 1:,}" in err.value.message
    assert "--force" in err.value.hint and err.value.exit_code == 7


def test_model_one_byte_over_ram(models, measured, tmp_path):
    model_bytes, arena = measured
    board = board_folder(tmp_path, flash_bytes=model_bytes + 100_000, ram_bytes=arena + 30_000 - 1)
    with pytest.raises(ModelTooLarge, match=f"RAM: arena {arena:,} \\+ firmware 30,000"):
        check_fit(models["int8"], board)
    forced = check_fit(models["int8"], board, force=True)
    assert not forced.fits and forced.forced and forced.ram_margin_bytes == -1


def test_every_fit_problem_is_named_not_counted(models, tmp_path):
    """Flash, RAM and an int8-only runtime all fail: one line names all three (no "(and 1 more)")."""
    board = board_folder(tmp_path, flash_bytes=1000, ram_bytes=1000, int8_only=True)
    with pytest.raises(ModelTooLarge) as err:
        check_fit(models["float"], board)
    message = err.value.message
    assert "flash: model " in message and "; RAM: arena " in message
    assert "(also: a float model on an int8-only runtime" in message
    assert "more" not in message
    assert len(err.value.context["fit"]["problems"]) == 3


def test_force_goes_ahead_and_says_so(models, measured, recorded, tmp_path):
    model_bytes, arena = measured
    board = board_folder(tmp_path, flash_bytes=model_bytes + 99_999, ram_bytes=10**6)
    with pytest.raises(ModelTooLarge):
        flash(models["int8"], board, port=PORT, out_dir=tmp_path / "p", dry_run=True)
    assert recorded == []
    result = flash(models["int8"], board, port=PORT, out_dir=tmp_path / "p", dry_run=True, force=True)
    assert result.commands[0].startswith("# --force: going ahead although flash:")
    assert recorded


def test_float_model_on_an_int8_only_board(models, recorded, tmp_path):
    with pytest.raises(BoardError, match="pico runs int8 models only, and this model is float") as err:
        flash(models["float"], "pico", port=PORT, out_dir=tmp_path / "p", dry_run=True)
    assert "--quantize int8" in err.value.hint
    assert recorded == []


def test_litert_board_fit_counts_model_in_ram(models):
    fit = check_fit(models["int8"], load_board("rpi4"))
    assert fit.arena_bytes is None and fit.ram_needed_bytes == fit.model_bytes + load_board("rpi4").firmware_ram_bytes


# -- bad input --------------------------------------------------------------------------------------
def test_unknown_board(models):
    with pytest.raises(BoardError, match="unknown board 'nano34ble'") as err:
        flash(models["int8"], "nano34ble", dry_run=True)
    assert "nano33ble" in err.value.hint


def test_board_that_is_not_flashed(models, recorded):
    with pytest.raises(UsageError, match=r"board android is not flashed: its runner adb takes models at run time"):
        flash(models["int8"], "android", dry_run=True)
    with pytest.raises(UsageError, match=r"board virtual is not flashed"):
        flash(models["int8"], "virtual", dry_run=True)
    assert recorded == []


def test_model_path_problems(tmp_path):
    from edgekit.errors import InputFileError

    with pytest.raises(InputFileError, match="model not found"):
        flash(tmp_path / "nope.tflite", "nano33ble", dry_run=True)
    with pytest.raises(InputFileError, match="holds no model.tflite"):
        flash(tmp_path, "nano33ble", dry_run=True)


def test_port_that_does_not_exist_is_refused_before_any_work(models, tmp_path):
    with pytest.raises(ports.PortNotFound):
        flash(models["int8"], "nano33ble", port=str(tmp_path / "ttyACM5"), out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_no_board_found_and_several_found(models, tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "list_ports", lambda: [ports.PortInfo("/dev/ttyS0")])
    with pytest.raises(DeviceError, match="no esp32s3 found on USB"):
        flash(models["int8"], "esp32s3", out_dir=tmp_path / "p")
    monkeypatch.setattr(ports, "list_ports", lambda: [ports.PortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60),
                                                      ports.PortInfo("/dev/ttyACM0", 0x303A, 0x1001)])
    with pytest.raises(DeviceError, match="2 ports match esp32s3"):
        flash(models["int8"], "esp32s3", out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


# -- real tools on PATH (shell scripts), a real pty board -------------------------------------------
def fake_tool(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


@pytest.fixture
def pty_port():
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_missing_build_tool(models, tmp_path, bin_dir, pty_port):
    with pytest.raises(ToolMissing) as err:
        flash(models["int8"], "nano33ble", port=pty_port, out_dir=tmp_path / "p")
    assert err.value.message == "arduino-cli is not installed (not found on PATH)"
    assert "arduino-cli" in err.value.hint
    # the project was rendered before the build was attempted
    assert (tmp_path / "p" / "edgekit_runner" / "edgekit_runner.ino").is_file()


def test_failing_build_tool_shows_its_output(models, tmp_path, bin_dir, pty_port):
    fake_tool(bin_dir, "arduino-cli", 'if [ "$1" = compile ]; then echo "edgekit_runner.ino:12: error: boom"; '
                                      'echo "Compilation error: exit status 1"; exit 1; fi; exit 0')
    with pytest.raises(ToolFailed) as err:
        flash(models["int8"], "nano33ble", port=pty_port, out_dir=tmp_path / "p")
    assert err.value.message == "arduino-cli exited with code 1: Compilation error: exit status 1"
    assert "edgekit_runner.ino:12: error: boom" in err.value.context["output_tail"]


def test_failing_build_tool_cli_exit_code_and_tail(models, tmp_path, bin_dir, pty_port, capfd):
    from edgekit.cli.main import main

    fake_tool(bin_dir, "arduino-cli", 'if [ "$1" = compile ]; then echo "sketch.ino:3: error: boom"; exit 1; fi')
    with pytest.raises(SystemExit) as exit_info:
        main(["flash", str(models["int8"]), "--board", "nano33ble", "--port", pty_port, "--out", str(tmp_path / "p")])
    assert exit_info.value.code == 8
    err = capfd.readouterr().err
    assert "edgekit: error: arduino-cli exited with code 1: sketch.ino:3: error: boom" in err
    assert "  | sketch.ino:3: error: boom" in err
    assert "Traceback" not in err


def run_virtual_board(model_bytes, board_id):
    from edgekit.link.virtual_board import VirtualBoard

    vb = VirtualBoard(model_bytes, board_id=board_id)
    vb.start()
    return vb


@pytest.mark.slow
def test_flash_flow_confirms_the_model_over_serial(models, tmp_path, bin_dir, monkeypatch):
    log = tmp_path / "arduino-cli.log"
    fake_tool(bin_dir, "arduino-cli", f'echo "$@" >> {log}')
    data = models["int8"].read_bytes()
    vb = run_virtual_board(data, "nano33ble")
    try:
        monkeypatch.setattr(ports, "list_ports", lambda: [ports.PortInfo(vb.port, 0x2341, 0x805A)])
        result = flash(models["int8"], "nano33ble", out_dir=tmp_path / "p")
    finally:
        vb.stop()
    assert result.confirmed is True and result.confirmation.startswith("confirmed: nano33ble runs model sha256")
    assert result.port == vb.port
    calls = log.read_text().splitlines()
    assert calls[2].startswith("compile --fqbn arduino:mbed_nano:nano33ble")
    assert calls[3] == (f"upload --fqbn arduino:mbed_nano:nano33ble --port {vb.port} --input-dir "
                        f"{tmp_path / 'p' / 'build'} {tmp_path / 'p' / 'edgekit_runner'}")


@pytest.mark.slow
@pytest.mark.parametrize("device_model,device_id,error", [
    ("float", "nano33ble", "nano33ble runs model sha256 .*not the flashed"),
    (None, "nano33ble", "nano33ble answered but runs no model after flashing"),
    ("int8", "virtual", "says it is 'virtual', not nano33ble"),
])
def test_flash_flow_detects_the_wrong_device_state(models, tmp_path, bin_dir, monkeypatch,
                                                   device_model, device_id, error):
    fake_tool(bin_dir, "arduino-cli", "exit 0")
    vb = run_virtual_board(models[device_model].read_bytes() if device_model else None, device_id)
    try:
        monkeypatch.setattr(ports, "list_ports", lambda: [ports.PortInfo(vb.port, 0x2341, 0x805A)])
        with pytest.raises(DeviceError, match=error):
            flash(models["int8"], "nano33ble", out_dir=tmp_path / "p")
    finally:
        vb.stop()


def test_one_ram_figure_in_inspect_flash_and_the_exported_header(models, recorded, tmp_path):
    """inspect --board, flash --dry-run and the generated header agree: RAM = the arena the header
    reserves (exact minimum + the export's margin) + firmware; no alternate decompression buffer."""
    import re

    import edgekit
    from edgekit.exporters.c_arrays import export_c

    board = load_board("nano33ble")
    info = edgekit.inspect(models["int8"], board="nano33ble")
    result = flash(models["int8"], "nano33ble", port=PORT, out_dir=tmp_path / "p", dry_run=True)
    header = export_c(models["int8"], tmp_path / "c", board=board)
    text = (tmp_path / "c" / next(f for f in header.files if f.endswith(".h"))).read_text()
    reserved = int(re.search(r"_tensor_arena_size = (\d+);", text).group(1))
    assert info.board_fit.arena_bytes == result.fit.arena_bytes == reserved == header.arena_size_constant
    assert info.board_fit.arena_min_bytes == info.arena.arena_bytes == header.arena_bytes
    assert info.board_fit.ram_needed_bytes == result.fit.ram_needed_bytes == reserved + board.firmware_ram_bytes
    assert info.board_fit.to_dict() == result.fit.to_dict()
