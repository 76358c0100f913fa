"""One calibration, many quantized models: the float graph, then int8 and 16x8 variants of it.

``TFLiteConverter.convert()`` calibrates and quantizes in one call. The quantization doctor needs many
variants of one model (per-channel or per-tensor dense weights, int16 activations, layers left in
float, corrected biases), so it takes the two steps apart the way the converter itself and LiteRT's
``QuantizationDebugger`` do:

1. :func:`float_graph`: the converter with ``_experimental_calibrate_only`` returns the float model
   with the calibration statistics (min/max of every activation) recorded in it;
2. :func:`int8`: ``mlir_quantize`` on that graph, the call ``convert()`` makes for int8 (with the
   denylist ``QuantizationDebugger`` uses to leave chosen ops in float);
3. :func:`int16x8`: the calibrator's ``calibrate_and_quantize``, the call ``convert()`` makes for the
   ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`` mode (int16 activations, int8
   weights, int64 biases; the whole model: the converter has no per-layer 16x8).

These are TensorFlow's internal entry points; ``tests/unit/test_quantizer.py`` pins every variant to
the public converter's output byte for byte (after the strip pass), so a TensorFlow release that
changes them fails there and not silently here. A variant costs milliseconds; the calibration (one
converter run) is paid once.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from edgekit import _tf
from edgekit.errors import ConversionError

IO_INT8 = ("int8", "float")
IO_16X8 = ("int16", "float")


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return next((m for m in msg if "error" in m.lower()), msg[0] if msg else type(e).__name__)[:240]


def _samples(calibration) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise ConversionError("quantization needs calibration samples (--data)")
    return np.asarray(calibration, dtype=np.float32)


def _generator(samples: np.ndarray):
    def representative():
        for i in range(len(samples)):
            yield [samples[i:i + 1]]

    return representative


def float_graph(*, keras_model=None, saved_model_dir: str | None = None, calibration=None) -> bytes:
    """The float .tflite of a SavedModel export (preferred) or a tf_keras model, with its calibration
    statistics: what the converter quantizes. ``calibration``: samples shaped like the model input."""
    tf = _tf.tf()
    samples = _samples(calibration)
    if saved_model_dir is not None:
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    elif keras_model is not None:
        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    else:
        raise ValueError("float_graph needs keras_model or saved_model_dir")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _generator(samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv._experimental_calibrate_only = True
    try:
        return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds; report one line
        raise ConversionError(f"calibration failed: {_first_line(e)}") from e


def calibrate(graph: bytes, calibration) -> bytes:
    """``graph`` (a float .tflite, e.g. after its biases were edited) with fresh calibration statistics."""
    from tensorflow.lite.python.optimize import calibrator

    samples = _samples(calibration)
    try:
        with_intermediates = calibrator.add_intermediate_tensors(bytes(graph))
        return bytes(calibrator.Calibrator(with_intermediates).calibrate(_generator(samples)))
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"calibration failed: {_first_line(e)}") from e


def int8(graph: bytes, *, io: str = "int8", dense_per_tensor: bool = False,
         float_nodes: Iterable[str] = ()) -> bytes:
    """Full-integer int8 model of a calibrated float graph (what ``convert()`` makes).

    io: int8 (int8 input/output tensors) or float. dense_per_tensor: one weight scale per
    FULLY_CONNECTED (the converter's default is one per output channel). float_nodes: output tensor
    names of ops left in float (a QUANTIZE / DEQUANTIZE pair around them): float fallback.
    """
    from tensorflow.lite.python.convert import mlir_quantize

    if io not in IO_INT8:
        raise ValueError(f"io must be one of {IO_INT8}")
    tf = _tf.tf()
    io_type = tf.int8 if io == "int8" else tf.float32
    deny = sorted(set(float_nodes))
    try:
        return bytes(mlir_quantize(bytes(graph), input_data_type=io_type, output_data_type=io_type,
                                   denylisted_nodes=deny or None,
                                   disable_per_channel_for_dense_layers=dense_per_tensor))
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"int8 quantization failed: {_first_line(e)}") from e


def int16x8(graph: bytes, calibration, *, io: str = "int16", dense_per_tensor: bool = False) -> bytes:
    """The 16x8 model (int16 activations, int8 weights, int64 biases) of a float graph, calibrated on
    ``calibration``: what ``convert()`` makes with ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``.
    io: int16 (int16 input/output tensors) or float."""
    from tensorflow.lite.python.optimize import calibrator
    from tensorflow.lite.python.util import modify_model_io_type

    if io not in IO_16X8:
        raise ValueError(f"io must be one of {IO_16X8}")
    tf = _tf.tf()
    samples = _samples(calibration)
    io_type = tf.int16 if io == "int16" else tf.float32
    try:
        with_intermediates = calibrator.add_intermediate_tensors(bytes(graph))
        model = calibrator.Calibrator(with_intermediates).calibrate_and_quantize(
            _generator(samples), io_type, io_type, False, tf.int16, tf.int64, disable_per_channel=False,
            disable_per_channel_quantization_for_dense_layers=dense_per_tensor)
        if io == "int16":     # as convert() does for io types its MLIR quantizer does not set
            model = modify_model_io_type(model, tf.int16, tf.int16)
        return bytes(model)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"16x8 quantization failed: {_first_line(e)}") from e


def op_output_names(model: bytes) -> list[str]:
    """Output tensor name of every op of the main subgraph, in execution order (the names
    ``float_nodes`` takes)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(model)).main
    return [sg.tensors[op.outputs[0]].name for op in sg.operators if op.outputs and op.outputs[0] >= 0]


def converter_equivalent(kind: str, *, keras_model=None, saved_model_dir: str | None = None,
                         calibration: Sequence | None = None, dense_per_tensor: bool = False,
                         io: str | None = None) -> bytes:
    """The public converter's own output for ``kind`` (int8 | 16x8), for tests that hold the variants
    above to it."""
    tf = _tf.tf()
    samples = _samples(calibration)
    conv = (tf.lite.TFLiteConverter.from_saved_model(saved_model_dir) if saved_model_dir is not None
            else tf.lite.TFLiteConverter.from_keras_model(keras_model))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _generator(samples)
    if kind == "int8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if (io or "int8") == "int8":
            conv.inference_input_type = conv.inference_output_type = tf.int8
    elif kind == "16x8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if (io or "int16") == "int16":
            conv.inference_input_type = conv.inference_output_type = tf.int16
    else:
        raise ValueError(kind)
    if dense_per_tensor:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return bytes(conv.convert())
