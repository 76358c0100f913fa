"""The adb runner: device selection from `adb devices -l`, exact command lines through the seam, and
the profile document built from benchmark_model output (the output samples are the public ones in
test_benchmark_model_parser.py). No phone or emulator can be had here, so adb itself is faked at the
seam; the "adb missing" case uses the real seam with a PATH that has no adb."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from edgekit.boards import load_board
from edgekit.errors import DeviceError, ToolMissing, UsageError
from edgekit.runners import get_runner, seam
from edgekit.runners.adb import DEVICE_DIR, AdbRunner, parse_devices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_benchmark_model_parser import ANDROID_CPU, NEW_OPS, OLD_OPS  # noqa: E402

ONE = "List of devices attached\nR58M12ABCDE            device usb:1-1 product:a52qnsxx model:SM_A525F device:a52q transport_id:3\n\n"
TWO = ONE.rstrip("\n") + "\nemulator-5554          device product:sdk_gphone64 model:sdk_gphone64_x86_64 device:emu64x transport_id:1\n\n"
UNAUTH = "List of devices attached\n0123456789ABCDEF       unauthorized usb:1-2 transport_id:4\n\n"
DAEMON = "* daemon not running; starting now at tcp:5037\n* daemon started successfully\nList of devices attached\n\n"


class FakeAdb:
    def __init__(self, devices: str, bench_output: str = NEW_OPS):
        self.devices, self.bench_output, self.calls = devices, bench_output, []

    def __call__(self, argv, *, dry_run=False, timeout=None, cwd=None, log=None, env=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        assert timeout is not None and timeout <= 600
        if argv[1:] == ["devices", "-l"]:
            return seam.ToolResult(argv, 0, self.devices)
        if argv[3:4] == ["shell"] and "benchmark_model --graph" in argv[4]:
            return seam.ToolResult(argv, 0, self.bench_output)
        return seam.ToolResult(argv, 0, "")


@pytest.fixture
def model(tiny_models, tmp_path):
    path = tmp_path / "my model; 'x'.tflite"
    path.write_bytes(tiny_models["int8_cnn"])
    return path


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "benchmark_model"
    path.write_bytes(b"\x7fELF fake")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def runner(fake, binary, **opts):
    return get_runner("adb")(load_board("android"), tool=fake,
                             options={"benchmark_binary": str(binary), **opts})


def test_registry_serves_the_real_adb_runner():
    assert get_runner("adb") is AdbRunner


def test_parse_devices_skips_daemon_chatter_and_reads_properties():
    assert parse_devices(DAEMON) == []
    devs = parse_devices(TWO)
    assert [(d.serial, d.state) for d in devs] == [("R58M12ABCDE", "device"), ("emulator-5554", "device")]
    assert devs[0].properties["model"] == "SM_A525F"
    assert parse_devices("List of devices attached\nX1\tno permissions (user in plugdev group) usb:1-1\n")[0].state \
        == "no permissions (user in plugdev group)"


def test_profile_command_lines_and_document(model, binary):
    fake = FakeAdb(ONE)
    result = runner(fake, binary).run("profile", model_path=model, runs=64, warmup=3, threads=4, xnnpack=True)
    sha16 = result.model["sha256"][:16]
    remote_model = f"{DEVICE_DIR}/model-{sha16}.tflite"
    s = ["adb", "-s", "R58M12ABCDE"]
    assert fake.calls == [
        ["adb", "devices", "-l"],
        [*s, "shell", f"mkdir -p {DEVICE_DIR}"],
        [*s, "push", str(binary.resolve()), f"{DEVICE_DIR}/benchmark_model"],
        [*s, "shell", f"chmod 755 {DEVICE_DIR}/benchmark_model"],
        [*s, "push", str(model.resolve()), remote_model],
        [*s, "shell", f"{DEVICE_DIR}/benchmark_model --graph={remote_model} --num_runs=64 --warmup_runs=3 "
                      "--num_threads=4 --use_xnnpack=true --enable_op_profiling=true"],
    ]
    d = result.to_dict()
    assert d["schema"] == "edgekit.profile/1" and d["runner"] == "adb"
    # numbers come from what the tool printed (NEW_OPS: count=64 ... avg=15517.6 std=551)
    assert d["latency_us"]["mean"] == 15517.6 and d["latency_us"]["std"] == 551 and d["latency_us"]["n"] == 64
    assert d["latency_us"]["min"] == 14661 and d["latency_us"]["max"] == 17579
    assert d["latency_us"]["p90"] is None and d["latency_us"]["median"] is None
    assert d["latency_samples_us"] == []
    assert set(d["device"]["unavailable"]) >= {"latency_samples_us", "latency_us.p90", "latency_us.median"}
    assert d["latency_us"]["ci95_low"] < 15517.6 < d["latency_us"]["ci95_high"]
    assert [op["type"] for op in d["per_op"]][:2] == ["QUANTIZE", "Convolution (NHWC, QC8) IGEMM"]
    assert d["per_op"][2]["count"] == 13 and d["per_op"][2]["mean_us"] == pytest.approx(51.0)
    assert d["memory"]["tool_overall_mb"] == 34.8281
    json.dumps(d)


def test_no_xnnpack_flag_and_explicit_device(model, binary):
    fake = FakeAdb(TWO, OLD_OPS)
    r = runner(fake, binary, serial="emulator-5554").run("profile", model_path=model, runs=50, warmup=0,
                                                         xnnpack=False)
    assert fake.calls[-1][:3] == ["adb", "-s", "emulator-5554"]
    assert "--use_xnnpack=false" in fake.calls[-1][4]
    assert r.latency_us["mean"] == 2.95034e6 and r.per_op[0]["name"].endswith(":0")


def test_several_devices_need_device(model, binary):
    fake = FakeAdb(TWO)
    with pytest.raises(UsageError, match="2 Android devices connected") as err:
        runner(fake, binary).run("profile", model_path=model)
    assert "R58M12ABCDE (device)" in err.value.hint and "emulator-5554 (device)" in err.value.hint
    assert fake.calls == [["adb", "devices", "-l"]]          # nothing pushed


def test_zero_devices(model, binary):
    with pytest.raises(DeviceError, match="no Android device connected") as err:
        runner(FakeAdb(DAEMON), binary).run("profile", model_path=model)
    assert err.value.exit_code == 9 and "USB debugging" in err.value.hint


def test_unknown_serial(model, binary):
    with pytest.raises(DeviceError, match="no Android device XYZ connected"):
        runner(FakeAdb(ONE), binary, serial="XYZ").run("profile", model_path=model)


def test_unauthorized_device(model, binary):
    with pytest.raises(DeviceError, match="0123456789ABCDEF is unauthorized") as err:
        runner(FakeAdb(UNAUTH), binary).run("profile", model_path=model)
    assert "Allow USB debugging" in err.value.hint


def test_truncated_benchmark_output_reports_nothing(model, binary):
    cut = NEW_OPS[:NEW_OPS.index("INFO: Inference timings")]
    with pytest.raises(DeviceError, match="no 'Inference timings in us' line"):
        runner(FakeAdb(ONE, cut), binary).run("profile", model_path=model)


def test_output_without_op_table_is_refused(model, binary):
    with pytest.raises(DeviceError, match="no per-op table"):
        runner(FakeAdb(ONE, ANDROID_CPU), binary).run("profile", model_path=model)


def test_missing_benchmark_binary(model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    fake = FakeAdb(ONE)
    with pytest.raises(ToolMissing, match="no benchmark_model binary") as err:
        get_runner("adb")(load_board("android"), tool=fake).run("profile", model_path=model)
    assert "--benchmark-binary" in err.value.hint and fake.calls == []


def test_adb_not_installed_real_seam(model, binary, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    r = get_runner("adb")(load_board("android"), options={"benchmark_binary": str(binary)})
    with pytest.raises(ToolMissing, match="adb is not installed") as err:
        r.run("profile", model_path=model)
    assert err.value.exit_code == 8 and "apt-get install adb" in err.value.hint
