"""Accuracy of a model in each runtime: Keras (float), LiteRT and host TFLM, and their agreement.

Classification (integer labels, several outputs): accuracy and argmax agreement. Regression: MAE and
RMSE. Inputs are quantized with the model's input scale/zero-point and outputs dequantized, exactly as
an application on the device would do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgekit.conversion.data import Dataset
from edgekit.errors import ConversionError


@dataclass
class TensorQuant:
    dtype: str
    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == "float32" or not self.scale:
            return x.astype(np.float32)
        info = np.iinfo(np.dtype(self.dtype))
        q = np.round(x / self.scale + self.zero_point)
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if self.dtype == "float32" or not self.scale:
            return q.astype(np.float32)
        return (q.astype(np.float32) - self.zero_point) * self.scale


def _quant_of(detail: dict) -> TensorQuant:
    dtype = np.dtype(detail["dtype"]).name
    scale, zp = detail.get("quantization", (0.0, 0))
    return TensorQuant(dtype, float(scale), int(zp))


def litert_run(model: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dequantized outputs, raw outputs) for every sample, with LiteRT loaded from bytes."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=model)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ConversionError(f"LiteRT cannot run this model: {str(e).splitlines()[0][:200]}") from e
    i = it.get_input_details()[0]
    o = it.get_output_details()[0]
    qi, qo = _quant_of(i), _quant_of(o)
    raw = []
    for k in range(len(x)):
        it.set_tensor(i["index"], qi.quantize(x[k:k + 1]))
        it.invoke()
        raw.append(np.array(it.get_tensor(o["index"])[0], copy=True))
    raw_arr = np.stack(raw)
    return qo.dequantize(raw_arr), raw_arr


def tflm_run(model: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Optional[int]]:
    """(dequantized outputs, raw outputs, arena bytes used) on the host TFLM runtime (child process)."""
    from edgekit.model import tflm_alloc

    qi, qo = io_quant(model)
    res = tflm_alloc.invoke(model, qi.quantize(x))
    raw = res["outputs"][0]
    return qo.dequantize(raw), raw, arena_total(res.get("stderr", ""))


def io_quant(model: bytes) -> tuple[TensorQuant, TensorQuant]:
    """Quantization of the first input and output (the model is verified first)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(model)).main

    def quant(ti: int) -> TensorQuant:
        t = sg.tensors[ti]
        return TensorQuant(t.dtype, t.scales[0] if t.scales else 0.0, t.zero_points[0] if t.zero_points else 0)

    return quant(sg.inputs[0]), quant(sg.outputs[0])


def arena_total(stderr_text: str) -> Optional[int]:
    for line in stderr_text.splitlines():
        if "Arena allocation total" in line:
            try:
                return int(line.split("total")[1].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def score(outputs: np.ndarray, data: Dataset) -> dict:
    if data.y is None:
        return {}
    if data.is_classification and outputs.ndim == 2 and outputs.shape[1] > 1:
        return {"accuracy": float(np.mean(outputs.argmax(axis=1) == data.y))}
    pred = outputs.reshape(data.y.shape) if outputs.size == data.y.size else outputs
    err = pred.astype(np.float64) - data.y.astype(np.float64)
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2)))}


MAX_CONFUSION_CLASSES = 20


def confusion(outputs: np.ndarray, data: Dataset) -> Optional[list[list[int]]]:
    """Counts of (true class, argmax class): rows are labels, columns predictions; None unless the data
    is a classification with labels in 0..classes-1 and the output has 2..20 classes."""
    if not data.is_classification or outputs.ndim != 2:
        return None
    n = outputs.shape[1]
    y = data.y.astype(np.int64).reshape(-1)
    if not 1 < n <= MAX_CONFUSION_CLASSES or len(y) != len(outputs) or y.min() < 0 or y.max() >= n:
        return None
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y, outputs.argmax(axis=1)), 1)
    return m.tolist()


def agreement(a: np.ndarray, b: np.ndarray, raw_a: np.ndarray, raw_b: np.ndarray) -> dict:
    out = {"max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0}
    if a.ndim == 2 and a.shape[1] > 1:
        out["argmax_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
    if raw_a.dtype == raw_b.dtype and np.issubdtype(raw_a.dtype, np.integer):
        out["max_diff_lsb"] = int(np.max(np.abs(raw_a.astype(np.int64) - raw_b.astype(np.int64))))
    return out
