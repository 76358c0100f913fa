"""The board's runtime as data: what a board's TFLM runs correctly, refusals before building, the
recipe a board needs, and the one runner dispatch behind profile / validate."""
from __future__ import annotations

import pytest

from edgekit.boards import load_board
from edgekit.errors import RecipeError, UnsupportedModelError, UsageError
from edgekit.tflm.compat import check_model, facts_from_board, per_channel_dense_ops, refuse_if_unrunnable


def test_board_files_record_their_library_and_its_facts():
    nano = facts_from_board(load_board("nano33ble"))
    assert nano.label == "Chirale_TensorFLowLite 2.0.0"
    assert not nano.decode and not nano.per_channel_fully_connected
    assert "TFLM_DECODE" not in nano.ops and "BATCH_MATMUL" not in nano.ops and "CONV_2D" in nano.ops
    assert "validate --emulate" in nano.source
    for board in ("esp32s3", "pico"):
        assert facts_from_board(load_board(board)).label == nano.label
    host = facts_from_board(load_board("virtual"))
    assert host.decode and host.per_channel_fully_connected
    assert facts_from_board(load_board("rpi4")) is None            # LiteRT boards have no TFLM facts


def test_per_channel_dense_weights_are_found(tiny_models):
    import tinymodels

    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    per_tensor = tinymodels.convert_keras(tinymodels.int8_cnn_keras(), int8=True, dense_per_tensor=True)
    assert per_channel_dense_ops(parse(load_tflite(tiny_models["int8_cnn"])))
    assert per_channel_dense_ops(parse(load_tflite(per_tensor))) == []


def test_what_the_nano_library_cannot_run_is_named_with_the_ways_out(tiny_models):
    import tinymodels

    facts = facts_from_board(load_board("nano33ble"))
    problems = check_model(tiny_models["int8_cnn"], facts)
    assert [p.kind for p in problems] == ["per-channel-fully-connected"]
    assert "per-tensor" in problems[0].fixes[0] and "--tflm-src" in problems[0].fixes[1]
    lut = check_model(tiny_models["lut_compressed"], facts)
    assert lut[0].kind == "decode-missing" and "without --compress" in lut[0].fixes[0]
    per_tensor = tinymodels.convert_keras(tinymodels.int8_cnn_keras(), int8=True, dense_per_tensor=True)
    assert check_model(per_tensor, facts) == []
    with pytest.raises(UnsupportedModelError) as exc:
        refuse_if_unrunnable(tiny_models["lut_compressed"], facts, "nano33ble")
    assert exc.value.message.startswith("nano33ble cannot run this model correctly: the model is LUT-compressed")
    assert "ways out" in exc.value.hint and exc.value.exit_code == 5


def test_inspect_on_the_board_reports_the_runtime_problem(tiny_models):
    from edgekit.model.inspect import inspect

    fit = inspect(tiny_models["int8_cnn"], board="nano33ble").board_fit
    assert fit.fits is False and fit.tflm_runtime.startswith("Chirale_TensorFLowLite 2.0.0")
    assert any("cannot run this model correctly" in p for p in fit.problems)
    assert fit.runtime_problems[0]["op"] == "FULLY_CONNECTED"
    assert inspect(tiny_models["int8_cnn"], board="virtual").board_fit.runtime_problems == []


def test_flash_refuses_before_anything_is_rendered(tiny_models, tmp_path):
    from edgekit.flashing import flash

    calls = []
    with pytest.raises(UnsupportedModelError):
        flash(tiny_models.path("int8_cnn"), "nano33ble", port="/dev/null", out_dir=tmp_path / "fw", dry_run=True,
              tool=lambda argv, **kw: calls.append(argv))
    assert calls == [] and not (tmp_path / "fw").exists()


def test_the_recipe_follows_the_board_runtime():
    from edgekit.optimize.recipe import Recipe, recipe_for_runtime

    facts = facts_from_board(load_board("nano33ble"))
    recipe, notes = recipe_for_runtime(Recipe.from_flags(), facts, "nano33ble")
    assert recipe.quantize.dense_per_tensor and "per tensor" in notes[0]
    assert not Recipe.from_flags().quantize.dense_per_tensor
    with pytest.raises(RecipeError) as exc:
        recipe_for_runtime(Recipe.from_flags(compress="lut4"), facts, "nano33ble")
    assert "DECODE" in exc.value.message and "drop --compress" in exc.value.hint
    same, notes = recipe_for_runtime(Recipe.from_flags(compress="lut4"), facts_from_board(load_board("virtual")),
                                     "virtual")
    assert same.compress is not None and not same.quantize.dense_per_tensor and notes == []


# -- one dispatch ------------------------------------------------------------------------------------

def test_runner_for_dispatches_every_board_kind():
    from edgekit.runners import runner_for
    from edgekit.runners.link import LinkRunner

    assert runner_for("virtual").name == "virtual"
    assert runner_for("qemu-m4").name == "qemu"
    emulated = runner_for("nano33ble", emulate=True)
    assert emulated.name == "qemu" and emulated.emulating and emulated.board.id == "nano33ble"
    assert not emulated.takes_uploads()                      # a Nano gets its model built in
    assert runner_for("nano33ble").name == "arduino-cli" and isinstance(runner_for("nano33ble"), LinkRunner)
    assert runner_for("rpi4", options={"host": "pi@raspberrypi"}).name == "ssh"


def test_emulating_a_board_without_an_emulated_core_is_refused():
    from edgekit.runners import runner_for

    with pytest.raises(UsageError) as exc:
        runner_for("rpi4", emulate=True)
    assert "board rpi4" in exc.value.message and "cannot be emulated" in exc.value.message
    for board in ("esp32s3", "pico"):          # microcontrollers: profile gets an estimate, nothing else runs
        runner = runner_for(board, emulate=True)
        assert runner.name == "estimate"
        with pytest.raises(UsageError) as exc:
            runner.run("validate", model_path="m.tflite", data="d.npz")
        assert f"board {board} cannot be emulated" in exc.value.message and "MAC-based estimate" in exc.value.hint


def test_profile_emulate_on_a_board_the_emulator_cannot_run_is_a_labelled_mac_estimate(tiny_models, tmp_path):
    import edgekit
    from edgekit.boards import load_board
    from edgekit.estimate import load_cores

    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_models["int8_cnn"])
    d = edgekit.profile(model, board="pico", emulate=True).to_dict()
    core, b = load_cores()["cortex-m4"], load_board("pico")
    est = d["estimate"]
    assert d["runner"] == "estimate" and d["latency_us"] is None and d["instructions"] is None
    assert d["timing"]["source"] == "estimate" and est["estimate"] is True
    assert est["macs"] == d["model"]["macs"] > 0
    assert est["latency_us"] == pytest.approx(est["macs"] * core.cycles_per_mac / b.clock_hz * 1e6)
    assert est["latency_us_low"] < est["latency_us"] < est["latency_us_high"]
    assert not est["calibrated_core"] and "not calibrated or emulated" in est["label"]
    assert d["energy"]["per_inference_uj"] == pytest.approx(b.active_power_mw * est["latency_us"] / 1000)
    assert d["roofline"]["compute_bound_us"] < est["latency_us_low"]      # the floor stays below the estimate


def test_runner_options_are_the_runner_s_own():
    from edgekit.runners import runner_for

    with pytest.raises(UsageError) as exc:
        runner_for("virtual", options={"host": "pi@raspberrypi"})
    assert "runner virtual has no option 'host'" in exc.value.message and "max_payload" in exc.value.hint
    assert runner_for("qemu-m4", options={"emulate": "yes"}).options["emulate"] is True


def test_sdk_profiles_a_pi_without_cli_flags_in_its_errors(tmp_path, tiny_models):
    """From Python, a Pi is profiled through its runner; a missing host names the runner option."""
    import edgekit

    with pytest.raises(UsageError) as exc:
        edgekit.profile(tiny_models.path("int8_cnn"), board="rpi4")
    assert "needs a host" in exc.value.message and "--port" not in exc.value.message


def test_validate_refused_by_a_runner_that_cannot(tiny_models, tmp_path):
    import numpy as np

    import edgekit

    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(UsageError) as exc:
        edgekit.validate(tiny_models.path("int8_cnn"), tmp_path / "d.npz", board="android")
    assert "cannot validate" in exc.value.message


# -- time and energy from instruction counts -----------------------------------------------------------

def test_board_time_is_instructions_times_cpi_over_clock_with_a_band():
    from edgekit.estimate import energy_from_time, load_cores, time_estimate

    nano = load_board("nano33ble")
    core = load_cores()["cortex-m4"]
    est = time_estimate(1_000_000, nano)
    assert est["estimate"] is True and est["core"] == "cortex-m4" and est["clock_hz"] == 64_000_000
    assert est["latency_us"] == pytest.approx(1e6 * core.cpi / 64e6 * 1e6)
    assert est["latency_us_low"] < est["latency_us"] < est["latency_us_high"]
    assert "MLPerf Tiny" in est["source"]
    e = energy_from_time(nano, est["latency_us"], est["latency_us_low"], est["latency_us_high"], method="m")
    assert e["per_inference_uj"] == pytest.approx(nano.active_power_mw * est["latency_us"] / 1000)
    assert e["per_inference_uj_low"] < e["per_inference_uj"] < e["per_inference_uj_high"]
    assert e["per_year_at_1_hz_j"] == pytest.approx(e["per_inference_uj"] * 1e-6 * 365 * 24 * 3600)


def test_boards_without_an_emulated_core_or_a_calibration_say_so():
    from dataclasses import replace

    from edgekit.estimate import not_available, time_estimate

    esp = load_board("esp32s3")
    assert time_estimate(1000, esp) is None and "has no emulated core" in not_available(esp)
    odd = replace(load_board("nano33ble"), emulator={"machine": "mps2-an505", "cpu": "cortex-m33"})
    assert time_estimate(1000, odd) is None
    assert "no CPI calibration for core 'cortex-m33'" in not_available(odd)


def test_a_malformed_core_file_is_one_clear_error(tmp_path, monkeypatch):
    from edgekit import estimate, resources
    from edgekit.errors import BoardError

    (tmp_path / "cores").mkdir()
    (tmp_path / "cores" / "cortex-m4.yaml").write_text("cpi: 2.0\ncpi_range: [2.5, 3.0]\nsource: x\n")
    monkeypatch.setattr(resources, "targets_dir", lambda: tmp_path)
    estimate.load_cores.cache_clear()
    try:
        with pytest.raises(BoardError, match="cortex-m4.yaml: cpi_range must hold cpi"):
            estimate.load_cores()
    finally:
        estimate.load_cores.cache_clear()


def test_a_16x8_model_needs_int16_kernels_for_every_op():
    """The Nano's library has int16 CONV_2D and FULLY_CONNECTED kernels but no int16 MAX_POOL_2D: a 16x8
    CNN is refused naming it; a 16x8 dense model passes; a runtime whose 16x8 set is unknown passes all."""
    import numpy as np

    import tinymodels
    from edgekit.conversion import quantizer

    facts = facts_from_board(load_board("nano33ble"))
    calib = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
    cnn = quantizer.float_graph(keras_model=tinymodels.int8_cnn_keras(), calibration=calib)
    cnn16 = quantizer.int16x8(cnn, calib, dense_per_tensor=True)
    problems = check_model(cnn16, facts)
    assert [(p.kind, p.op) for p in problems] == [("no-16x8-kernel", "MAX_POOL_2D")]
    assert "int16" in problems[0].message and "Chirale" in problems[0].message
    assert check_model(quantizer.int8(cnn, dense_per_tensor=True), facts) == []     # the int8 model is fine
    dense = quantizer.float_graph(keras_model=tinymodels.dense_keras(),
                                  calibration=np.random.default_rng(0).uniform(-1, 1, (16, 16)).astype(np.float32))
    assert check_model(quantizer.int16x8(dense, np.ones((4, 16), np.float32), dense_per_tensor=True), facts) == []
    assert check_model(cnn16, facts_from_board(load_board("virtual"))) == []
