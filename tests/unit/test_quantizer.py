"""One calibration, many quantized models: every variant edgekit.conversion.quantizer makes equals the
public TFLite converter's own output for the same setting (after the strip pass, which drops the
converter's metadata), so the doctor's settings are what `convert` would make."""
from __future__ import annotations

import numpy as np
import pytest

import tinymodels
from edgekit.conversion import quantizer
from edgekit.conversion.strip import strip_for_micro


@pytest.fixture(scope="module")
def cnn():
    """Conv2D + MaxPool + Dense(16, relu) + Dense(10): conv and dense weights, a bias on each."""
    k = tinymodels._keras()
    model = k.Sequential([k.layers.Input((8, 8, 1)), k.layers.Conv2D(8, 3, activation="relu"),
                          k.layers.MaxPooling2D(2), k.layers.Flatten(), k.layers.Dense(16, activation="relu"),
                          k.layers.Dense(10)])
    rng = np.random.default_rng(0)
    for layer in model.layers:              # non-zero biases, so the converter keeps every bias tensor
        w = layer.get_weights()
        if w:
            layer.set_weights([w[0], rng.normal(0, 0.1, w[1].shape).astype(np.float32)])
    calib = rng.uniform(-1, 1, (48, 8, 8, 1)).astype(np.float32)
    return model, calib, quantizer.float_graph(keras_model=model, calibration=calib)


@pytest.mark.parametrize("dense_per_tensor", [False, True])
@pytest.mark.parametrize("io", ["int8", "float"])
def test_int8_variants_equal_the_converter(cnn, dense_per_tensor, io):
    model, calib, graph = cnn
    ours = quantizer.int8(graph, io=io, dense_per_tensor=dense_per_tensor)
    theirs = quantizer.converter_equivalent("int8", keras_model=model, calibration=calib,
                                            dense_per_tensor=dense_per_tensor, io=io)
    assert strip_for_micro(ours) == strip_for_micro(theirs)


@pytest.mark.parametrize("dense_per_tensor", [False, True])
def test_16x8_variants_equal_the_converter(cnn, dense_per_tensor):
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    model, calib, graph = cnn
    ours = quantizer.int16x8(graph, calib, dense_per_tensor=dense_per_tensor)
    theirs = quantizer.converter_equivalent("16x8", keras_model=model, calibration=calib,
                                            dense_per_tensor=dense_per_tensor)
    assert strip_for_micro(ours) == strip_for_micro(theirs)
    sg = parse(load_tflite(ours)).main
    conv = next(op for op in sg.operators if op.op == "CONV_2D")
    assert [sg.tensors[i].dtype for i in conv.inputs] == ["int16", "int8", "int64"]
    fc = [op for op in sg.operators if op.op == "FULLY_CONNECTED"]
    assert all((len(sg.tensors[op.inputs[1]].scales) == 1) == dense_per_tensor for op in fc)


def test_float_nodes_stay_float_and_the_rest_is_int8(cnn):
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    _, _, graph = cnn
    names = quantizer.op_output_names(graph)
    assert len(names) == 5
    dense = names[3]
    sg = parse(load_tflite(quantizer.int8(graph, io="float", float_nodes=[dense]))).main
    out_dtype = {sg.tensors[op.outputs[0]].name: (op.op, sg.tensors[op.outputs[0]].dtype) for op in sg.operators}
    assert out_dtype[dense] == ("FULLY_CONNECTED", "float32")
    assert out_dtype[names[0]] == ("CONV_2D", "int8")
    assert [op.op for op in sg.operators].count("DEQUANTIZE") == 2      # before the float op and at the end
