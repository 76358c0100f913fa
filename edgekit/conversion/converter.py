"""The TFLite converter: float32, int8 (full integer), float16 or dynamic-range models.

``TFLiteConverter.from_keras_model`` writes the model to a temporary SavedModel on every call (and
imports Keras 3 to ask whether the model is one). edgekit exports a tf_keras model once, with the
same options, and converts the export: the float baseline and the quantized model share one export,
and the output is the same model (only the flatbuffer's "converted from" metadata field differs, and
the strip pass drops it).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekit import _tf
from edgekit.errors import ConversionError


def export_for_converter(keras_model, directory: str | Path) -> str | None:
    """Write ``keras_model`` as the SavedModel that ``from_keras_model`` would have written.

    Returns the folder, or None when the model cannot be saved this way (the converter then takes
    the Keras model itself and freezes it, as ``from_keras_model`` does after a failed export).
    """
    tf = _tf.tf()
    from tensorflow.python.saved_model import save_options

    try:
        tf.saved_model.save(keras_model, str(directory), options=save_options.SaveOptions(save_debug_info=True))
    except Exception:  # noqa: BLE001 - same fallback as the converter's own export
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return str(directory)


def to_tflite(*, keras_model=None, saved_model_dir: str | None = None, mode: str = "none",
              io: str = "int8", calibration: np.ndarray | None = None, dense_per_tensor: bool = False,
              sparse: bool = False) -> bytes:
    """Convert a SavedModel folder (preferred, see export_for_converter) or a tf_keras model.

    mode: none (float32) | int8 (full integer; ``calibration`` samples required, int8 input/output
    unless io == 'float') | float16 | dynamic (int8 weights, float activations).
    dense_per_tensor: one weight scale per FULLY_CONNECTED tensor (the converter's default is one
    per output channel, which older TFLM releases compute wrong).
    sparse: add the converter's ``Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight encodings; LiteRT
    densifies them at run time, TFLM has no kernel for that): only to measure what pruning buys.
    """
    if saved_model_dir is None and keras_model is not None:
        with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
            exported = export_for_converter(keras_model, Path(tmp) / "model")
            return _convert(keras_model if exported is None else None, exported, mode, io, calibration,
                            dense_per_tensor, sparse)
    return _convert(None, saved_model_dir, mode, io, calibration, dense_per_tensor, sparse)


def _convert(keras_model, saved_model_dir: str | None, mode: str, io: str,
             calibration: np.ndarray | None, dense_per_tensor: bool = False, sparse: bool = False) -> bytes:
    tf = _tf.tf()
    if saved_model_dir is not None:
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    elif keras_model is not None:
        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
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
    if sparse:
        conv.optimizations = [*conv.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if dense_per_tensor:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    try:
        return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds; report one line
        msg = str(e).strip().splitlines()
        first = next((m for m in msg if "error" in m.lower()), msg[0] if msg else type(e).__name__)
        raise ConversionError(f"TFLite conversion ({mode}) failed: {first[:240]}") from e
