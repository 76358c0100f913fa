"""Real TFLM + CMSIS-NN on the emulated Cortex-M4: firmware cross-compiled from TFLM source trees and
run on QEMU mps2-an386 (-icount), checked against host TFLM on real data (sklearn digits).

The heavy builds live here, once per tree and op set per session (objects are cached in
$EDGEKIT_CACHE). Trees come from EDGEKIT_TFLM_SRC (tests/tflm_trees.py); without them these tests
skip loudly.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance.linkkit import cached_model, model_cache_dir  # noqa: F401
from tflm_trees import require_tree

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def tflite_micro():
    return require_tree("tflite-micro")


@pytest.fixture(scope="module")
def chirale():
    return require_tree("arduino-library", "Chirale_TensorFLowLite")


@pytest.fixture(scope="module")
def models(model_cache_dir, tmp_path_factory):  # noqa: F811
    """Model files: per-channel and per-tensor dense int8 digits CNNs, and a LUT-compressed CNN."""
    folder = tmp_path_factory.mktemp("emulated-models")
    out = {}
    for name in ("digits_cnn", "digits_cnn_per_tensor", "lut_digits_cnn"):
        out[name] = folder / f"{name}.tflite"
        out[name].write_bytes(cached_model(name, model_cache_dir))
    return out


@pytest.fixture(scope="module")
def digits_test(tmp_path_factory):
    """100 real sklearn digits (8x8x1) with labels, and the same images padded to 12x12x1."""
    from digits_data import load_split

    _, _, x, y = load_split()
    folder = tmp_path_factory.mktemp("emulated-data")
    np.savez(folder / "test.npz", x=x[:100], y=y[:100])
    padded = np.pad(x[:100], ((0, 0), (2, 2), (2, 2), (0, 0)))
    np.savez(folder / "test12.npz", x=padded, y=y[:100])
    return {"8x8": folder / "test.npz", "12x12": folder / "test12.npz"}


def _options(tree) -> dict:
    return {"tflm_src": str(tree.root)}


def test_qemu_m4_int8_model_equals_host_tflm_on_every_sample(tflite_micro, models, digits_test):
    import edgekit

    res = edgekit.validate(models["digits_cnn"], digits_test["8x8"], board="qemu-m4", n=100,
                           options=_options(tflite_micro))
    assert res.passed and res.samples == 100
    assert res.host_reference == "tflm" and res.max_lsb == 0 and res.exact_fraction == 1.0
    assert res.timing["unit"] == "instructions"
    assert res.firmware["tree"]["label"] == "tflite-micro" and res.firmware["kernels"] == "cmsis-nn"
    assert res.firmware["sizes"]["text"] > 30_000          # TFLM + kernels, not the test transform


def test_qemu_m4_lut_model_runs_decode_on_the_target(tflite_micro, models, digits_test):
    import edgekit

    res = edgekit.validate(models["lut_digits_cnn"], digits_test["12x12"], board="qemu-m4", n=100,
                           options=_options(tflite_micro))
    assert res.passed and res.exact_fraction == 1.0 and res.max_lsb == 0
    assert res.host_reference == "tflm"             # LiteRT cannot run DECODE


def test_instruction_counts_are_deterministic_per_op(tflite_micro, models):
    import edgekit

    docs = [edgekit.profile(models["digits_cnn"], board="qemu-m4", runs=10, warmup=2, float_baseline=False,
                            options=_options(tflite_micro)).to_dict() for _ in range(2)]
    for doc in docs:
        assert doc["timing"]["unit"] == "instructions" and doc["latency_us"] is None and doc["energy"] is None
        assert doc["instructions"]["mean"] > 100_000
        ops = {op["name"]: op["instructions_mean"] for op in doc["per_op"]}
        assert set(ops) == {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"}
        assert ops["CONV_2D"] > 10 * ops["FULLY_CONNECTED"]
    a, b = ({op["name"]: op["instructions_mean"] for op in d["per_op"]} for d in docs)
    for name in a:                              # one SysTick tick is 40 instructions
        assert abs(a[name] - b[name]) <= 40, (name, a[name], b[name])
    assert abs(docs[0]["instructions"]["median"] - docs[1]["instructions"]["median"]) <= 40
    assert docs[0]["instructions"]["max"] - docs[0]["instructions"]["min"] <= 400


def test_emulated_nano33ble_catches_per_channel_dense_with_its_library(chirale, models, digits_test):
    """The Nano's pinned library (Chirale 2.0.0) ignores per-channel FULLY_CONNECTED scales: the emulated
    board computes wrong outputs, and validate fails naming the op and the reason."""
    import edgekit
    from edgekit.errors import ValidationFailed

    res = edgekit.validate(models["digits_cnn"], digits_test["8x8"], board="nano33ble", emulate=True, n=100,
                           raise_on_fail=False, options=_options(chirale))
    assert not res.passed and res.max_lsb >= 2 and res.exact_fraction < 0.5
    assert res.firmware["tree"]["name"] == "Chirale_TensorFLowLite"
    assert any("FULLY_CONNECTED" in d and "per-channel" in d for d in res.diagnosis)
    with pytest.raises(ValidationFailed) as exc:
        res.raise_if_failed()
    assert exc.value.exit_code == 10 and "FULLY_CONNECTED" in exc.value.message


def test_emulated_nano33ble_runs_per_tensor_dense_exactly(chirale, models, digits_test):
    import edgekit

    res = edgekit.validate(models["digits_cnn_per_tensor"], digits_test["8x8"], board="nano33ble", emulate=True,
                           n=100, options=_options(chirale))
    assert res.passed and res.exact_fraction == 1.0 and res.max_lsb == 0
    assert res.firmware["fit"]["flash_used_bytes"] < res.firmware["fit"]["flash_bytes"]


def test_emulated_nano33ble_refuses_a_lut_model_before_building(chirale, models, tmp_path, monkeypatch):
    import edgekit
    from edgekit.errors import UnsupportedModelError

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnsupportedModelError) as exc:
        edgekit.profile(models["lut_digits_cnn"], board="nano33ble", emulate=True, float_baseline=False,
                        options=_options(chirale))
    assert "TFLM_DECODE" in exc.value.message and "Chirale" in exc.value.message
    assert not (tmp_path / "cache" / "tflm").exists()          # nothing was compiled


def test_cli_validate_emulate_exit_code_and_json(chirale, models, digits_test):
    r = subprocess.run([sys.executable, "-m", "edgekit", "validate", str(models["digits_cnn"]), "--board",
                        "nano33ble", "--emulate", "--tflm-src", str(chirale.root), "--data",
                        str(digits_test["8x8"]), "-n", "20", "--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 10, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["schema"] == "edgekit.validate/1" and doc["board"] == "nano33ble" and not doc["passed"]
    assert "likely cause: FULLY_CONNECTED" in r.stderr and "Traceback" not in r.stderr


def test_cli_profile_emulate_prints_instruction_counts(chirale, models, tmp_path):
    out = tmp_path / "profile.json"
    r = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(models["digits_cnn_per_tensor"]),
                        "--board", "nano33ble", "--emulate", "--tflm-src", str(chirale.root), "--runs", "5",
                        "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "instructions per inference (emulated target)" in r.stdout and "CONV_2D" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["device"]["board_id"] == "nano33ble" and "emulated on QEMU" in doc["device"]["firmware_version"]
    assert doc["firmware"]["tree"]["name"] == "Chirale_TensorFLowLite"
    assert doc["estimate"]["core"] == "cortex-m4" and doc["energy"]["estimate"] is True
    assert "estimated on nano33ble" in r.stdout


def test_model_larger_than_the_upload_slot_is_refused_before_building(tflite_micro, tmp_path):
    from edgekit.boards import load_board
    from edgekit.errors import ModelTooLarge
    from edgekit.runners.qemu import UPLOAD_SLOT_BYTES, QemuRunner

    runner = QemuRunner(load_board("qemu-m4"), options=_options(tflite_micro))
    with pytest.raises(ModelTooLarge) as exc:
        runner.firmware_config(runner.tree(), [b"\0" * (UPLOAD_SLOT_BYTES + 16)])
    assert f"{UPLOAD_SLOT_BYTES:,}" in exc.value.message


def test_rebuild_for_another_model_with_the_same_ops_reuses_every_tree_object(tflite_micro, models, tmp_path):
    from edgekit.boards import load_board
    from edgekit.runners.qemu import QemuRunner

    runner = QemuRunner(load_board("nano33ble"), options={**_options(tflite_micro), "emulate": True})
    a = runner.build_for([Path(models["digits_cnn"]).read_bytes()])
    b = runner.build_for([Path(models["digits_cnn_per_tensor"]).read_bytes()])
    assert a.elf != b.elf and b.library_sources == a.library_sources
    assert b.compiled_from_tree == 0 and b.compiled <= 10     # only the firmware's own files


def test_emulated_board_time_and_energy_int8_against_float(chirale, model_cache_dir, tmp_path):  # noqa: F811
    """--emulate gives the Nano's time and energy from instruction counts (labelled estimates), and the
    float model, built into its own firmware, costs more: shrinking saves energy on the board."""
    import edgekit

    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(cached_model("int8_cnn_per_tensor", model_cache_dir))
    (folder / "model_float.tflite").write_bytes(cached_model("float_cnn", model_cache_dir))
    doc = edgekit.profile(folder / "model.tflite", board="nano33ble", emulate=True, runs=10, warmup=1,
                          options=_options(chirale)).to_dict()
    est, energy, fb = doc["estimate"], doc["energy"], doc["energy"]["float_baseline"]
    assert doc["latency_us"] is None and est["estimate"] and est["statistic"] == "median"
    assert est["latency_us"] == pytest.approx(doc["instructions"]["median"] * est["cpi"] / 64e6 * 1e6)
    assert energy["estimate"] and energy["per_inference_uj"] == pytest.approx(20 * est["latency_us"] / 1000)
    assert fb["instructions_mean"] > 2 * doc["instructions"]["median"]          # float kernels cost more
    assert fb["saved_uj"] > 0 and 0 < fb["saved_fraction"] < 1
    assert all(op["estimated_us"] > 0 for op in doc["per_op"])
    assert any("estimates" in n and "cores/cortex-m4.yaml" in n for n in doc["notes"])


def test_qemu_m4_itself_gets_no_board_time(tflite_micro, models):
    import edgekit

    doc = edgekit.profile(models["digits_cnn"], board="qemu-m4", runs=3, warmup=0, float_baseline=False,
                          options=_options(tflite_micro)).to_dict()
    assert doc["estimate"] is None and doc["energy"] is None
    assert any("--emulate --board B" in n for n in doc["notes"])


def test_a_model_whose_input_exceeds_the_tensor_buffers_is_refused_as_too_large(tflite_micro, tmp_path):
    """The device says TOO_LARGE (not "the runtime refused the model") when only the buffers are short."""
    import tinymodels

    import edgekit
    from edgekit.errors import ProtocolError
    from edgekit.link.frames import ErrCode
    from edgekit.runners.qemu import UPLOAD_TENSOR_BYTES

    k = tinymodels._keras()
    model = k.Sequential([k.layers.Input((160, 160, 3), batch_size=1), k.layers.Conv2D(4, 3, strides=4),
                          k.layers.MaxPooling2D(2), k.layers.Flatten(), k.layers.Dense(10)])
    path = tmp_path / "big_input.tflite"
    path.write_bytes(tinymodels.convert_keras(model, int8=True))
    assert 160 * 160 * 3 > UPLOAD_TENSOR_BYTES
    with pytest.raises(ProtocolError) as exc:
        edgekit.profile(path, board="qemu-m4", runs=2, float_baseline=False, options=_options(tflite_micro))
    assert exc.value.code == int(ErrCode.TOO_LARGE) and "exceeds the tensor buffers" in exc.value.message
