"""edgekit.inspect: MACs from shapes, params, sparsity, quantization, TFLM op support, exact arena,
board fit."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import edgekit
from edgekit.boards import load_board
from edgekit.model import tflm_host
from edgekit.model.inspect import inspect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinymodels  # noqa: E402


def _float(model) -> bytes:
    return tinymodels.convert_keras(model, int8=False)


def _macs_by_op(result) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in result.ops:
        out[o.op] = out.get(o.op, 0) + o.macs
    return out


def test_conv_macs_hand_computed():
    # 7x7x2 input, 4 filters 3x3, stride 2, same padding -> 4x4x4 output; each output reads 3*3*2.
    r = inspect(_float(tinymodels.conv_keras(input_hw=7, in_ch=2, filters=4, kernel=3, strides=2,
                                             padding="same")), measure_arena_bytes=False)
    assert _macs_by_op(r) == {"CONV_2D": 4 * 4 * 4 * (3 * 3 * 2)}
    assert r.ops[0].output_shape == [1, 4, 4, 4]
    assert r.total_params == 4 * 3 * 3 * 2 + 4


def test_depthwise_macs_hand_computed():
    # 6x6x3, depthwise 3x3 multiplier 2 (valid) -> 4x4x6: 4*4*6*9; then 1x1 conv to 4: 4*4*4*6.
    r = inspect(_float(tinymodels.depthwise_keras(input_hw=6, channels=3, multiplier=2, kernel=3)),
                measure_arena_bytes=False)
    macs = _macs_by_op(r)
    assert macs["DEPTHWISE_CONV_2D"] == 4 * 4 * 6 * 9
    assert macs["CONV_2D"] == 4 * 4 * 4 * 6
    assert r.total_macs == 4 * 4 * 6 * 9 + 4 * 4 * 4 * 6


def test_dense_macs_and_params_hand_computed():
    model = tinymodels.dense_keras(inputs=16, hidden=12, outputs=5)
    for layer in model.layers:                        # non-zero biases, so the converter keeps them
        w, b = layer.get_weights()
        layer.set_weights([w, b + 0.5])
    r = inspect(_float(model), measure_arena_bytes=False)
    assert _macs_by_op(r) == {"FULLY_CONNECTED": 16 * 12 + 12 * 5}
    assert r.total_params == 16 * 12 + 12 + 12 * 5 + 5
    assert r.quantization == "float"


def test_lstm_macs_from_weight_shapes(tiny_models):
    r = inspect(tiny_models["float_lstm"], measure_arena_bytes=False)
    # 6 steps x (4 gates x (8x3 input weights + 8x8 recurrent weights)), then Dense 8 -> 4.
    assert _macs_by_op(r)["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 6 * 4 * (8 * 3 + 8 * 8)
    assert _macs_by_op(r)["FULLY_CONNECTED"] == 8 * 4


def test_int8_model_io_quantization_and_weights(tiny_models):
    r = inspect(tiny_models["int8_cnn"], measure_arena_bytes=False)
    assert r.quantization == "int8" and r.float_tensors == []
    assert r.inputs[0].dtype == "int8" and r.inputs[0].shape == [1, 8, 8, 1]
    assert r.inputs[0].scale > 0 and r.outputs[0].zero_point is not None
    assert r.op_histogram["CONV_2D"] == 1 and r.op_histogram["FULLY_CONNECTED"] == 1
    conv_w = next(w for w in r.weights if w.shape == [8, 3, 3, 1])
    assert conv_w.bytes == 72 and conv_w.dtype == "int8"
    assert r.weight_bytes == sum(w.bytes for w in r.weights)
    assert r.tflm_unsupported_ops == []
    d = r.to_dict()
    assert d["total_macs"] == r.total_macs and d["arena"]["error"] == "not measured"


def test_float_tensors_in_mixed_model_are_named(tiny_models):
    r = inspect(tiny_models["dynamic_range"], measure_arena_bytes=False)
    assert r.quantization == "mixed"
    assert r.float_tensors and all(isinstance(n, str) and n for n in r.float_tensors)
    assert any("float tensor" in w for w in r.warnings)


def test_sparsity_counts_zero_weights():
    k = tinymodels._keras()
    model = tinymodels.dense_keras(inputs=16, hidden=12, outputs=5)
    w, b = model.layers[0].get_weights()
    w[:, :6] = 0.0                                    # half the first layer's weights
    model.layers[0].set_weights([w, b])
    assert k is not None
    r = inspect(_float(model), measure_arena_bytes=False)
    first = next(t for t in r.weights if t.shape == [12, 16])
    assert first.sparsity == pytest.approx(0.5)
    assert 0.3 < r.sparsity < 0.5                     # 96 zeros of 192 + 60 (second layer dense)


def _replace_op(model: bytes, old: str, new: str) -> bytes:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    for code in m.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == getattr(fb.BuiltinOperator, old):
            code.builtinCode = getattr(fb.BuiltinOperator, new)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_ops_tflm_cannot_run_are_named(tiny_models):
    model = _replace_op(tiny_models["float_cnn"], "MAX_POOL_2D", "LSH_PROJECTION")
    r = inspect(model)
    assert r.tflm_unsupported_ops == ["LSH_PROJECTION"]
    assert r.arena.arena_bytes is None and "TFLM cannot run" in r.arena.error
    assert any("LSH_PROJECTION" in w for w in r.warnings)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["int8_cnn", "float_cnn", "int8_depthwise", "float_lstm", "lut_compressed"])
def test_arena_is_exact(tiny_models, name):
    """The reported arena allocates and runs on host TFLM; 16 bytes less fails."""
    data = tiny_models[name]
    r = inspect(data)
    a = r.arena
    assert a.error is None and a.arena_bytes > 0
    assert tflm_host.try_arena(data, a.arena_bytes)
    assert not tflm_host.try_arena(data, a.arena_bytes - 16)
    if name == "lut_compressed":
        assert r.compressed and a.alt_decompression_bytes > 0
        assert tflm_host.try_arena(data, a.arena_with_alt_bytes,
                                   alt_decompression_bytes=a.alt_decompression_bytes)
        assert not tflm_host.try_arena(data, a.arena_with_alt_bytes - 16,
                                       alt_decompression_bytes=a.alt_decompression_bytes)
        # Decoded weights live in the alternate buffer, so the main arena shrinks.
        assert a.arena_with_alt_bytes < a.arena_bytes


def test_board_fit_and_roofline(tiny_models):
    from edgekit.exporters.c_arrays import arena_with_margin

    board = load_board("nano33ble")
    r = edgekit.inspect(tiny_models["int8_cnn_per_tensor"], board="nano33ble")
    f = r.board_fit
    assert f.flash_needed_bytes == r.model_bytes + board.firmware_flash_bytes
    # RAM: the arena as the generated firmware reserves it (exact minimum + the export's margin)
    assert f.arena_min_bytes == r.arena.arena_bytes
    assert f.ram_needed_bytes == arena_with_margin(r.arena.arena_bytes) + board.firmware_ram_bytes
    assert f.flash_margin_bytes == board.flash_bytes - f.flash_needed_bytes
    assert f.ram_margin_bytes == board.ram_bytes - f.ram_needed_bytes
    assert f.fits is True
    expected_us = r.total_macs / (board.peak_int8_macs_per_cycle * board.clock_hz) * 1e6
    assert r.roofline["latency_bound_us"] == pytest.approx(expected_us)


def test_board_fit_reports_too_large():
    from dataclasses import replace

    from edgekit.fit import fit

    board = replace(load_board("nano33ble"), flash_bytes=250_000, ram_bytes=61_000, firmware_ram_bytes=58_000)
    f = fit(board, model_bytes=20_000, arena_min_bytes=2_000, quantization="int8")
    assert f.fits is False and f.flash_margin_bytes == 250_000 - 260_000
    assert f.arena_bytes == 3_024 and f.ram_margin_bytes == 61_000 - 61_024      # 2,000 + 1 KiB margin
    assert f.problems[0].startswith("flash:") and f.problems[1].startswith("RAM:")


def test_arena_search_survives_tflm_crashing_at_some_sizes(tiny_models, tmp_path):
    """Host TFLM segfaults on this autoencoder at some too-small arenas: those sizes count as failing,
    the search goes on, and the result is a size that allocates and runs."""
    from edgekit.model import tflm_host

    model = tiny_models["int8_autoencoder"]
    arena = tflm_host.measure_arena(model)["arena_bytes"]
    assert arena > 0 and tflm_host.try_arena(model, arena)
    r = edgekit.export_c(model, tmp_path, name="ae")
    assert r.arena_bytes == arena and r.arena_size_constant > arena


def test_a_stock_int8_mlp_exports_and_fits_a_board_with_room(tmp_path):
    """The 64-1024-256-10 int8 MLP whose arena search used to end in a host TFLM crash (exit 5): its arena
    is found, verified by an allocation and an invoke, and export writes it."""
    import tinymodels

    from edgekit.model import tflm_host

    k = tinymodels._keras()
    inp = k.layers.Input((64,), batch_size=1)
    x = k.layers.Dense(1024, activation="relu")(inp)
    x = k.layers.Dense(256, activation="relu")(x)
    model = tinymodels.convert_keras(k.Model(inp, k.layers.Dense(10)(x)), int8=True, dense_per_tensor=True)
    arena = tflm_host.measure_arena(model)["arena_bytes"]
    assert arena > 0 and tflm_host.try_arena(model, arena)
    r = edgekit.export_c(model, tmp_path, name="mlp", board="nano33ble")
    assert r.arena_bytes == arena and r.board_fit.fits is True
