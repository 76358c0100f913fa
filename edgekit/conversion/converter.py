"""The TFLite converter: float32, int8 (full integer), float16 or dynamic-range models."""
from __future__ import annotations

import numpy as np

from edgekit import _tf
from edgekit.errors import ConversionError


def to_tflite(*, keras_model=None, saved_model_dir: str | None = None, mode: str = "none",
              io: str = "int8", calibration: np.ndarray | None = None, qat: bool = False) -> bytes:
    """Convert a tf_keras model (or a SavedModel folder) to .tflite bytes.

    mode: none (float32) | int8 (full integer; ``calibration`` samples required, int8 input/output
    unless io == 'float') | float16 | dynamic (int8 weights, float activations).
    """
    tf = _tf.tf()
    if keras_model is not None:
        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    elif saved_model_dir is not None:
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    else:
        raise ValueError("to_tflite needs keras_model or saved_model_dir")
    if mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConversionError("int8 quantization needs calibration samples (--data)")
        samples = np.asarray(calibration, dtype=np.float32)

        def representative():
            for i in range(len(samples)):
                yield [samples[i:i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    elif mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode != "none":
        raise ConversionError(f"unknown quantization mode {mode!r}")
    try:
        return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds; report one line
        msg = str(e).strip().splitlines()
        first = next((m for m in msg if "error" in m.lower()), msg[0] if msg else type(e).__name__)
        raise ConversionError(f"TFLite conversion ({mode}) failed: {first[:240]}") from e
