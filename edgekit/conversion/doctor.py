"""The quantization doctor: which layer loses accuracy in int8, and the cheapest setting that fixes it.

``diagnose(model, data, eval_data)``:

1. calibrates once (:mod:`edgekit.conversion.quantizer`) and makes the plain int8 PTQ model (what
   ``edgekit convert`` makes: per-channel weights everywhere);
2. per layer, the error between the float and the int8 model on the same samples, on each op's output
   tensor: MSE, cosine similarity and relative L2 (``||f - q|| / ||f||``), the metrics ST Edge AI's
   ``validate`` reports; computed with LiteRT keeping every intermediate tensor;
3. a sensitivity ranking: each op quantized alone (every other op left in float with the denylist of
   LiteRT's ``QuantizationDebugger``), its accuracy drop and output error on LiteRT;
4. fixes in order of their cost on the device, each verified on host TFLM until one keeps accuracy
   within ``max_drop`` points of the float model:

   ========================================  =====================================================
   int8, per-tensor dense weights            one scale per FULLY_CONNECTED: fewer bytes, smaller arena
   ... + bias correction                     no cost on the device (biases are edited on the host)
   int8, per-channel dense weights           the converter's default
   ... + bias correction
   16x8, per-tensor / per-channel dense      int16 activations, int8 weights (the converter's
   (each also + bias correction)             whole-model 16x8 mode): twice the activation memory,
                                             int16 kernels; only where the board's TFLM has them
   int8 + float fallback for the 1-2 worst   opt-in (``fixes`` "float"): float kernels for those
   layers                                    ops; not on int8-only boards
   ========================================  =====================================================

   Settings a board's runtime cannot run are skipped and say why (per-channel FULLY_CONNECTED on
   TFLM releases without it; 16x8 where the TFLM lacks an op's int16 kernel). The converter has no
   per-layer 16x8: leaving a layer out of int8 with the debugger's denylist runs it in float, and is
   offered as such (float fallback), not as 16x8.

Bias correction (empirical, after Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction"): layer by layer, the mean error of each CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED pre-activation output, ``W_q E[x_q] - W E[x]`` measured on the calibration data (with
the layers before it already corrected), is subtracted from its float bias and the model quantized
again.

Accuracy "points": classification accuracy in percentage points; for regression, the mean absolute
error's increase as a percentage of the mean absolute target (relative L1 error points).

``choose_dense`` is the per-tensor-or-per-channel choice ``edgekit convert`` makes on its own.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from edgekit import schemas
from edgekit.conversion import quantizer
from edgekit.conversion.data import Dataset
from edgekit.errors import AccuracyBudgetError, ConversionError, EdgekitError, UnsupportedModelError, UsageError
from edgekit.progress import ProgressFn

SCHEMA = schemas.DIAGNOSE
ALL_FIXES = ("dense", "bias", "16x8", "float")
DEFAULT_FIXES = ("dense", "bias", "16x8")
DEFAULT_MAX_DROP = 1.0              # points
AUTO_DENSE_MAX_COST = 0.1           # points: per-tensor dense is kept when it costs at most this
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_QDQ = ("QUANTIZE", "DEQUANTIZE")
BYTE_MOVING_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")    # nothing to gain by leaving them in float
FLOAT_FALLBACK_LAYERS = (1, 2)      # how many of the worst layers the float-fallback rungs keep in float
BIAS_SAMPLES = 200                  # calibration samples the bias correction measures means on


# -- settings ------------------------------------------------------------------------------------

def short_name(tensor_name: str) -> str:
    """``sequential/dense_1/MatMul;sequential/dense_1/Relu`` -> ``dense_1`` (the Keras layer)."""
    first = (tensor_name or "").split(";")[0]
    parts = [p for p in first.split("/") if p]
    if len(parts) >= 3:
        return parts[1]
    if len(parts) == 2:
        return parts[0] if parts[0] not in ("sequential", "model", "functional") else parts[1]
    return first or "?"


def layer_name(sg, op) -> str:
    """The Keras layer an op came from: from its output tensor's name, else its weights' (the model's
    last op's output is named after the signature, ``StatefulPartitionedCall:0``)."""
    for ti in [*op.outputs[:1], *op.inputs[1:2]]:
        if ti >= 0 and "/" in (sg.tensors[ti].name or ""):
            return short_name(sg.tensors[ti].name)
    return f"{op.op.lower()}_{op.index}"


@dataclass(frozen=True)
class Setting:
    """One way to quantize a model."""

    activations: str = "int8"               # int8 | int16 (16x8: int16 activations, int8 weights)
    dense_per_tensor: bool = False          # one weight scale per FULLY_CONNECTED
    bias_correction: bool = False
    float_layers: tuple[str, ...] = ()      # output tensor names of ops left in float
    float_labels: tuple[str, ...] = field(default=(), compare=False)   # their layer names, for people

    @property
    def name(self) -> str:
        text = f"{'16x8' if self.activations == 'int16' else 'int8'}, " \
               f"{'per-tensor' if self.dense_per_tensor else 'per-channel'} dense"
        if self.bias_correction:
            text += " + bias correction"
        if self.float_layers:
            text += " + float " + ", ".join(self.float_labels or [short_name(n) for n in self.float_layers])
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["float_layers"] = list(self.float_labels or self.float_layers)
        d.pop("float_labels", None)
        d["name"] = self.name
        return d


@dataclass
class Trial:
    """A setting built and evaluated on host TFLM."""

    setting: Setting
    model_bytes: int                    # after the strip pass: what convert writes and a device gets
    arena_bytes: Optional[int]          # TFLM's recording allocator's total for this model (host TFLM)
    score: dict                         # {"accuracy": ...} or {"mae": ..., "rmse": ...}
    drop_points: float                  # float score minus this one, in points (see module doc)
    meets: bool
    runtime: str = "host TFLM"
    notes: list[str] = field(default_factory=list)
    exact_arena_bytes: Optional[int] = None     # the smallest arena host TFLM runs it in (baseline, chosen)

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting.to_dict(), "model_bytes": self.model_bytes,
                "arena_bytes": self.arena_bytes, "exact_arena_bytes": self.exact_arena_bytes, "score": self.score,
                "drop_points": round(self.drop_points, 4), "meets": self.meets, "runtime": self.runtime,
                "notes": self.notes}


@dataclass
class Diagnosis:
    source: str
    task: str                               # classification | regression | unlabelled
    metric: Optional[str]
    max_drop: float
    fixes: list[str]
    float_score: dict                       # the float graph on LiteRT
    baseline: Optional[Trial]               # plain int8 PTQ (the converter's default), host TFLM
    layers: list[dict]                      # per op of the plain int8 model
    trials: list[Trial]                     # settings evaluated, cheapest first
    skipped: list[dict]                     # settings not tried, and why
    chosen: Optional[Trial]
    closest: Optional[Trial]
    runtime: Optional[dict]                 # the board's TFLM facts the settings were checked against
    board: Optional[str]
    samples: dict
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    model: Optional[bytes] = None           # the chosen setting's .tflite, stripped (not in the JSON document)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "source": self.source, "task": self.task, "metric": self.metric,
            "max_drop_points": self.max_drop, "fixes": self.fixes, "float": self.float_score,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "layers": self.layers, "trials": [t.to_dict() for t in self.trials], "skipped": self.skipped,
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "closest": None if self.closest is None else self.closest.to_dict(),
            "board": self.board, "runtime": self.runtime, "samples": self.samples, "notes": self.notes,
            "duration_s": round(self.duration_s, 3),
        }

    def raise_if_unmet(self) -> None:
        """AccuracyBudgetError naming the closest setting, when labelled data was given and no setting
        kept accuracy within ``max_drop`` points."""
        if self.chosen is not None or self.closest is None:
            return
        c = self.closest
        raise AccuracyBudgetError(
            f"no quantization setting keeps {self.metric} within {self.max_drop:g} points of float: the closest "
            f"is {c.setting.name} at {c.drop_points:.2f} points (host TFLM, {self.samples.get('eval', 0)} samples)",
            hint=f"allow it with --max-drop {max(c.drop_points, 0) + 0.005:.2f}, or recover accuracy by training: "
                 "convert --qat", closest=c.to_dict())


# -- scores --------------------------------------------------------------------------------------

def _score(outputs: np.ndarray, data: Dataset) -> dict:
    from edgekit.conversion import evaluate as ev

    return ev.score(outputs, data)


def drop_points(score: dict, reference: dict, data: Dataset) -> float:
    """How many points ``score`` is below ``reference`` (negative: better)."""
    if "accuracy" in reference:
        return 100.0 * (reference["accuracy"] - score["accuracy"])
    scale = float(np.mean(np.abs(data.y.astype(np.float64)))) or 1.0
    return 100.0 * (score["mae"] - reference["mae"]) / scale


def _metric(data: Dataset | None) -> Optional[str]:
    if data is None or data.y is None:
        return None
    return "accuracy" if data.is_classification else "mae"


# -- running models ------------------------------------------------------------------------------

class _Litert:
    """One LiteRT interpreter (from verified bytes), optionally keeping every intermediate tensor."""

    def __init__(self, model: bytes, *, keep_all: bool = False):
        from ai_edge_litert.interpreter import Interpreter

        from edgekit.model.load import load_tflite

        load_tflite(model)                       # the verifier first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.it = Interpreter(model_content=model, experimental_preserve_all_tensors=keep_all)
                self.it.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                raise ConversionError(f"LiteRT cannot run this model: {str(e).splitlines()[0][:200]}") from e
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        details = self.it.get_tensor_details()
        self.details = {d["name"]: d for d in details}
        self.by_index = {d["index"]: d for d in details}

    @staticmethod
    def _quant(detail) -> tuple[float, int]:
        scale, zp = detail.get("quantization", (0.0, 0))
        return float(scale), int(zp)

    def invoke(self, x1: np.ndarray) -> None:
        scale, zp = self._quant(self.inp)
        dtype = np.dtype(self.inp["dtype"])
        if dtype.kind in "iu" and scale:
            info = np.iinfo(dtype)
            x1 = np.clip(np.round(x1 / scale + zp), info.min, info.max).astype(dtype)
        self.it.set_tensor(self.inp["index"], x1.astype(dtype, copy=False))
        self.it.invoke()

    def value(self, detail) -> np.ndarray:
        raw = self.it.get_tensor(detail["index"])
        scale, zp = self._quant(detail)
        if np.dtype(detail["dtype"]).kind in "iu" and scale:
            return (raw.astype(np.float64) - zp) * scale
        return raw.astype(np.float64)

    def output(self) -> np.ndarray:
        return self.value(self.out)

    def run(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(len(x)):
            self.invoke(x[i:i + 1])
            outs.append(self.output()[0])
        return np.stack(outs)


def _rel(sse, ff):
    return np.where(ff > 0, np.sqrt(sse / np.where(ff > 0, ff, 1.0)), np.where(sse == 0, 0.0, np.inf))


class _Error:
    """Running sums for MSE, cosine similarity and relative L2 of q against f, over the whole tensor
    and per channel (last axis): one channel with a wide range can hide that every other is lost."""

    def __init__(self):
        self.n = 0
        self.sse = self.ff = self.qq = self.fq = 0.0
        self.sse_c = self.ff_c = None

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = np.asarray(f, np.float64)
        q = np.asarray(q, np.float64)
        d2 = (f - q) ** 2
        self.n += f.size
        self.sse += float(np.sum(d2))
        self.ff += float(np.sum(f * f))
        self.qq += float(np.sum(q * q))
        self.fq += float(np.sum(f * q))
        if f.ndim:
            c = f.shape[-1]
            sse_c, ff_c = d2.reshape(-1, c).sum(axis=0), (f * f).reshape(-1, c).sum(axis=0)
            self.sse_c = sse_c if self.sse_c is None else self.sse_c + sse_c
            self.ff_c = ff_c if self.ff_c is None else self.ff_c + ff_c

    def to_dict(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        rel = float(_rel(np.float64(self.sse), np.float64(self.ff)))
        if self.ff > 0 and self.qq > 0:
            cos = self.fq / float(np.sqrt(self.ff * self.qq))
        else:
            cos = 1.0 if self.sse == 0 else 0.0
        out = {"mse": self.sse / self.n, "cosine": float(cos), "rel_l2": rel}
        if self.sse_c is not None and self.sse_c.size > 1:
            out["worst_channel_rel_l2"] = float(np.max(_rel(self.sse_c, self.ff_c)))
        return out


def _graph_names(sg) -> dict[int, str]:
    """Op index -> the name its output has in the float graph. A quantized model with float output ends
    in DEQUANTIZE, which takes the float graph's output name: the op before it is that op."""
    names = {op.index: sg.tensors[op.outputs[0]].name for op in sg.operators if op.outputs and op.outputs[0] >= 0}
    producer = {op.outputs[0]: op for op in sg.operators if op.outputs and op.outputs[0] >= 0}
    for op in sg.operators:
        if op.op == "DEQUANTIZE" and op.inputs and op.inputs[0] in producer and op.outputs[0] in sg.outputs:
            names[producer[op.inputs[0]].index] = names.pop(op.index)
    return names


def layer_errors(graph: bytes, model: bytes, x: np.ndarray) -> list[dict]:
    """Per op of ``model`` (QUANTIZE / DEQUANTIZE left out): its output tensor against the same tensor of
    the float ``graph`` on the samples ``x``: MSE, cosine similarity, relative L2 (dequantized)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(model)).main
    f_run, q_run = _Litert(graph, keep_all=True), _Litert(model, keep_all=True)
    rows, pairs = [], []
    names = _graph_names(sg)
    for op in sg.operators:
        if op.op in _QDQ or not op.outputs or op.outputs[0] < 0:
            continue
        t = sg.tensors[op.outputs[0]]
        row = {"index": op.index, "op": op.op, "layer": layer_name(sg, op), "tensor": names[op.index],
               "shape": list(t.shape), "dtype": t.dtype, "scale": t.scales[0] if t.scales else None}
        fd, qd = f_run.details.get(names[op.index]), q_run.details.get(t.name)
        rows.append(row)
        if fd is not None and qd is not None:
            pairs.append((row, fd, qd, _Error()))
    for i in range(len(x)):
        f_run.invoke(x[i:i + 1])
        q_run.invoke(x[i:i + 1])
        for _, fd, qd, err in pairs:
            err.add(f_run.value(fd), q_run.value(qd))
    for row, _, _, err in pairs:
        row.update(err.to_dict())
    return rows


def _tflm_trial(model: bytes, setting: Setting, test: Dataset, float_score: dict, max_drop: float) -> Trial:
    from edgekit.conversion import evaluate as ev

    from edgekit.conversion.strip import strip_for_micro

    outputs, _, arena = ev.tflm_run(model, test.x)          # verified by LiteRT's verifier first
    score = _score(outputs, test)
    drop = drop_points(score, float_score, test)
    return Trial(setting, len(strip_for_micro(model)), arena, score, drop, drop <= max_drop + 1e-9)


def _stripped(model: bytes) -> bytes:
    from edgekit.conversion.strip import strip_for_micro

    return strip_for_micro(model)


def _exact_arena(model: bytes) -> Optional[int]:
    from edgekit.model import tflm_host

    try:
        return int(tflm_host.measure_arena(model)["arena_bytes"])
    except EdgekitError:
        return None


# -- bias correction -----------------------------------------------------------------------------

def _weights(t) -> Optional[np.ndarray]:
    """A constant weight tensor as float64 (int8 dequantized with its scales)."""
    if t.data is None:
        return None
    if t.dtype == "float32":
        return t.data.view(np.float32).reshape(t.shape).astype(np.float64)
    if t.dtype != "int8" or not t.scales:
        return None
    w = t.data.view(np.int8).reshape(t.shape).astype(np.float64)
    scales = np.asarray(t.scales, np.float64)
    zps = np.asarray(t.zero_points or [0] * len(scales), np.float64)
    shape = [1] * w.ndim
    if len(scales) > 1:
        shape[t.quantized_dimension] = len(scales)
    return (w - zps.reshape(shape)) * scales.reshape(shape)


def _apply(op: str, w: np.ndarray, mean_in: np.ndarray) -> Optional[np.ndarray]:
    """``W . E[x]`` per output channel (padding ignored), or None when the shapes do not fit."""
    if op == "FULLY_CONNECTED":
        return w @ mean_in if w.shape[1] == mean_in.size else None
    if op == "CONV_2D":
        return np.einsum("ohwi,i->o", w, mean_in) if w.shape[3] == mean_in.size else None
    if w.shape[3] % mean_in.size:                       # DEPTHWISE_CONV_2D: [1, h, w, in * multiplier]
        return None
    return w.sum(axis=(0, 1, 2)) * np.repeat(mean_in, w.shape[3] // mean_in.size)


def bias_correction(graph: bytes, quantize: Callable[[bytes], bytes], x: np.ndarray) -> tuple[bytes, list[dict]]:
    """``graph`` (float) with the biases of its CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops moved so
    that the quantized model's mean pre-activation output equals the float one's on the samples ``x``.

    Layer by layer, in execution order: the expected error of an op's pre-activation output is
    ``W_q E[x_q] - W E[x]`` (expectation is linear), with ``W_q`` its quantized weights, ``E[x_q]`` the
    mean (per channel) of its input in the quantized model as corrected so far, and ``E[x]`` that of its
    input in the float graph; the float bias is lowered by it and the model quantized again.
    ``quantize`` makes the quantized model of a float graph (calibrating it). Returns the edited float
    graph and one row per corrected op."""
    from edgekit.conversion.strip import _read, _write
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    g = parse(load_tflite(graph)).main
    names = _graph_names(g)
    targets = [op for op in g.operators
               if op.op in WEIGHT_OPS and len(op.inputs) >= 3 and min(op.inputs[:3]) >= 0
               and g.tensors[op.inputs[1]].dtype == "float32" and g.tensors[op.inputs[1]].data is not None
               and g.tensors[op.inputs[2]].dtype == "float32" and g.tensors[op.inputs[2]].data is not None]
    if not targets:
        return graph, []
    float_means = _means(graph, [op.inputs[0] for op in targets], x)
    model_t = _read(graph)
    sg_t = model_t.subgraphs[0]
    users: dict[int, int] = {}
    for t in sg_t.tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    current, rows = graph, []
    for op in targets:
        quantized = quantize(current)
        q = parse(load_tflite(quantized)).main
        qop = next((q.operators[i] for i, n in _graph_names(q).items() if n == names[op.index]), None)
        if qop is None or qop.op != op.op or len(qop.inputs) < 2 or qop.inputs[1] < 0:
            continue
        w_q, w_f = _weights(q.tensors[qop.inputs[1]]), _weights(g.tensors[op.inputs[1]])
        if w_q is None or w_f is None or w_q.shape != w_f.shape:
            continue
        q_mean = _means(quantized, [qop.inputs[0]], x).get(qop.inputs[0])
        f_mean = float_means.get(op.inputs[0])
        if q_mean is None or f_mean is None:
            continue
        got, want = _apply(op.op, w_q, q_mean), _apply(op.op, w_f, f_mean)
        bias = g.tensors[op.inputs[2]].data.view(np.float32).astype(np.float64)
        if got is None or want is None or got.shape != bias.shape:
            continue
        shift = got - want
        tensor_t = sg_t.tensors[op.inputs[2]]
        if users.get(tensor_t.buffer, 0) > 1:          # a buffer shared with another tensor: give it its own
            from ai_edge_litert import schema_py_generated as fb

            model_t.buffers.append(fb.BufferT())
            users[tensor_t.buffer] -= 1
            tensor_t.buffer = len(model_t.buffers) - 1
            users[tensor_t.buffer] = 1
        new = (bias - shift).astype("<f4")
        model_t.buffers[tensor_t.buffer].data = np.frombuffer(new.tobytes(), dtype=np.uint8).copy()
        current = _write(model_t)
        rows.append({"op": op.op, "layer": layer_name(g, op), "channels": int(bias.size),
                     "mean_abs_shift": float(np.mean(np.abs(shift))), "max_abs_shift": float(np.max(np.abs(shift))),
                     "mean_abs_bias": float(np.mean(np.abs(bias)))})
    return current, rows


def _means(model: bytes, tensors: Iterable[int], x: np.ndarray) -> dict[int, np.ndarray]:
    """Mean of each tensor (by index; dequantized) over the samples, per channel (last axis)."""
    run = _Litert(model, keep_all=True)
    wanted = {i: run.by_index[i] for i in set(tensors) if i in run.by_index}
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for k in range(len(x)):
        run.invoke(x[k:k + 1])
        for i, d in wanted.items():
            v = run.value(d)
            v = v.reshape(-1, v.shape[-1]) if v.ndim else v.reshape(1, 1)
            sums[i] = sums.get(i, 0) + v.sum(axis=0)
            counts[i] = counts.get(i, 0) + v.shape[0]
    return {i: sums[i] / counts[i] for i in sums}


# -- the doctor ----------------------------------------------------------------------------------

class _Maker:
    """Builds the model of any Setting from one calibrated float graph (cached)."""

    def __init__(self, graph: bytes, calibration: np.ndarray, io: str):
        self.graph = graph
        self.calibration = calibration
        self.io = io
        self.cache: dict[Setting, bytes] = {}
        self.bias_rows: dict[Setting, list[dict]] = {}

    def build(self, s: Setting) -> bytes:
        if s in self.cache:
            return self.cache[s]
        graph = self.graph
        if s.bias_correction:
            edited, rows = bias_correction(self.graph, lambda g: self._quantize(quantizer.calibrate(
                g, self.calibration), replace(s, bias_correction=False)), self.calibration[:BIAS_SAMPLES])
            self.bias_rows[s] = rows
            graph = quantizer.calibrate(edited, self.calibration) if rows else self.graph
        model = self.cache[s] = self._quantize(graph, s)
        return model

    def _quantize(self, graph: bytes, s: Setting) -> bytes:
        if s.activations == "int16":
            return quantizer.int16x8(graph, self.calibration, io="int16" if self.io == "int8" else "float",
                                     dense_per_tensor=s.dense_per_tensor)
        return quantizer.int8(graph, io=self.io, dense_per_tensor=s.dense_per_tensor, float_nodes=s.float_layers)


def _has_dense(graph: bytes) -> bool:
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(graph)).main
    for op in sg.operators:
        if op.op == "FULLY_CONNECTED" and len(op.inputs) > 1 and op.inputs[1] >= 0:
            shape = sg.tensors[op.inputs[1]].shape
            if shape and shape[0] > 1:
                return True
    return False


def parse_fixes(text: str | Iterable[str] | None) -> tuple[tuple[str, ...], bool]:
    """(fixes, explicit) from ``dense,bias,16x8`` (or a list); None gives the defaults."""
    if text is None:
        return DEFAULT_FIXES, False
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    items = ["16x8" if t in ("int16", "16x8", "a16w8") else t for t in items]
    bad = [t for t in items if t not in ALL_FIXES]
    if bad or not items:
        raise UsageError(f"unknown fix {', '.join(bad) or '(none given)'}",
                         hint=f"--fixes takes a comma list of {', '.join(ALL_FIXES)}")
    return tuple(t for t in ALL_FIXES if t in items), True


def ladder(fixes: tuple[str, ...], *, has_dense: bool, per_channel_ok: bool, worst: list[tuple[str, str]],
           float_ok: bool) -> tuple[list[Setting], list[dict]]:
    """The settings to try, cheapest on the device first, and those left out with the reason."""
    skipped: list[dict] = []
    if not has_dense:
        dense = [False]                 # no FULLY_CONNECTED with several outputs: both are the same model
    elif "dense" in fixes:
        dense = [True, False] if per_channel_ok else [True]
    else:
        dense = [False] if per_channel_ok else [True]
    if has_dense and not per_channel_ok:
        skipped.append({"setting": "per-channel dense",
                        "reason": "the board's TFLM uses one weight scale per FULLY_CONNECTED (per-channel "
                                  "computes wrong outputs)"})
    bias = [False, True] if "bias" in fixes else [False]
    out = [Setting("int8", d, b) for d in dense for b in bias]
    if "16x8" in fixes:
        out += [Setting("int16", d, b) for d in dense for b in bias]
    if "float" in fixes:
        if not float_ok:
            skipped.append({"setting": "float fallback", "reason": "the board runs integer kernels only"})
        else:
            for k in FLOAT_FALLBACK_LAYERS:
                if k <= len(worst):
                    out.append(Setting("int8", dense[-1], False, tuple(t for t, _ in worst[:k]),
                                       tuple(label for _, label in worst[:k])))
    return out, skipped


def sensitivity(maker: _Maker, names: list[str], dense_per_tensor: bool, x: np.ndarray,
                test: Optional[Dataset], float_out: np.ndarray, float_score: dict,
                progress: ProgressFn | None = None) -> dict[str, dict]:
    """Each op quantized alone (all others float, float input/output), on LiteRT: output error against
    the float graph, and the accuracy drop when the data is labelled."""
    out = {}
    for k, name in enumerate(names):
        model = quantizer.int8(maker.graph, io="float", dense_per_tensor=dense_per_tensor,
                               float_nodes=[n for n in names if n != name])
        pred = _Litert(model).run(x)
        err = _Error()
        err.add(float_out, pred)
        row = {"rel_l2": err.to_dict()["rel_l2"], "cosine": err.to_dict()["cosine"]}
        if test is not None and test.y is not None:
            row["drop_points"] = drop_points(_score(pred, test), float_score, test)
        out[name] = row
        if progress:
            progress("sensitivity", k + 1, len(names))
    return out


def _facts(board, tflm_src):
    from edgekit.tflm.compat import facts_from_board, facts_from_tree

    board_obj = None
    if board is not None:
        from edgekit.boards import Board, load_board

        board_obj = board if isinstance(board, Board) else load_board(str(board))
    if tflm_src is not None:
        from edgekit.tflm.tree import describe_tree

        return board_obj, facts_from_tree(describe_tree(tflm_src))
    return board_obj, (facts_from_board(board_obj) if board_obj is not None else None)


def _16x8_problems(model: bytes, facts) -> list:
    if facts is None:
        return []
    from edgekit.tflm.compat import check_model

    return [p for p in check_model(model, facts) if p.kind == "no-16x8-kernel"]


def diagnose(model: Any, data: Any, eval_data: Any = None, *, board: Any = None, tflm_src: Any = None,
             max_drop: float = DEFAULT_MAX_DROP, fixes: str | Iterable[str] | None = None, io: str = "int8",
             calibration_samples: int = 300, eval_samples: int | None = None, layer_samples: int = 200,
             allow_lambda: bool = False, progress: ProgressFn | None = None,
             warn: Callable[[str], None] | None = None, raise_if_unmet: bool = True) -> Diagnosis:
    """Find where int8 loses accuracy and the cheapest setting that keeps it (see the module doc).

    model: Keras model path (.keras / .h5 / SavedModel) or tf_keras model. data: calibration samples
    (path, Dataset or (x, y)). eval_data: labelled data; without it the doctor reports errors and the
    ranking but chooses nothing. board / tflm_src: the runtime the settings must run on. max_drop:
    points of accuracy the chosen setting may lose against float. fixes: which fixes to try
    (``dense``, ``bias``, ``16x8``, ``float``); naming ``16x8`` for a board whose TFLM lacks the
    model's int16 kernels raises UnsupportedModelError. io: int8 (int16 for 16x8) or float
    input/output tensors.
    """
    from edgekit.conversion.converter import export_for_converter
    from edgekit.conversion.data import calibration_warning
    from edgekit.conversion.pipeline import _as_dataset
    from edgekit.optimize.loading import as_loaded

    t_start = time.perf_counter()
    warn = warn or (lambda msg: None)
    fix_list, explicit = parse_fixes(fixes)
    if not max_drop >= 0:
        raise UsageError(f"--max-drop must be 0 or more points, got {max_drop}", hint="e.g. --max-drop 1")
    if io not in ("int8", "float"):
        raise UsageError(f"io must be int8 or float, got {io!r}")
    board_obj, facts = _facts(board, tflm_src)
    loaded = as_loaded(model, allow_lambda=allow_lambda)
    train = _as_dataset(data, loaded.input_shape, need_labels=False, what="data")
    if train is None:
        from edgekit.errors import DataError

        raise DataError("the doctor needs calibration samples", hint="pass --data with a few hundred inputs")
    test = _as_dataset(eval_data, loaded.input_shape, need_labels=True, what="eval data")
    if test is not None and eval_samples:
        test = test.head(eval_samples)
    calib = train.x[:calibration_samples]
    msg = calibration_warning(len(calib))
    if msg:
        warn(msg)
    probe = (test.x if test is not None else train.x)[:layer_samples]

    def step(name: str, k: int, total: int) -> None:
        if progress:
            progress(name, k, total)

    with tempfile.TemporaryDirectory(prefix="edgekit-diagnose-") as scratch:
        source_dir = loaded.saved_model_dir or export_for_converter(loaded.keras, Path(scratch) / "model")
        graph = quantizer.float_graph(keras_model=loaded.keras if source_dir is None else None,
                                      saved_model_dir=source_dir, calibration=calib)
    maker = _Maker(graph, calib, io)
    notes: list[str] = []
    per_channel_ok = facts is None or facts.per_channel_fully_connected
    has_dense = _has_dense(graph)

    # 16x8 needs an int16 kernel for every op on the board's TFLM: asked for, it is refused before any work
    no_16x8 = None
    if "16x8" in fix_list and facts is not None:
        problems = _16x8_problems(maker.build(Setting("int16", True)), facts)
        if problems:
            ops = sorted({p.op for p in problems})
            where = board_obj.id if board_obj is not None else "this runtime"
            if explicit:
                raise UnsupportedModelError(
                    f"16x8 was asked for, and {where}'s TFLM ({facts.label}) has no 16x8 (int16 activation) "
                    f"kernel for {', '.join(ops)}",
                    hint="drop 16x8 from --fixes, or build the firmware from a TFLM tree with those kernels "
                         "(--tflm-src a tflite-micro checkout)", ops=ops, runtime=facts.to_dict())
            no_16x8 = {"setting": "16x8", "reason": f"{facts.label} has no 16x8 kernel for {', '.join(ops)}"}

    # the float reference and the plain int8 PTQ model (per-channel weights: what convert makes)
    f_run = _Litert(graph)
    float_out = f_run.run(probe)
    float_score = _score(f_run.run(test.x), test) if test is not None else {}
    plain_setting = Setting("int8", False)
    plain = maker.build(plain_setting)
    step("layers", 0, 3)
    layers = layer_errors(graph, plain, probe)
    step("layers", 1, 3)
    names = quantizer.op_output_names(graph)
    probe_test = test.head(len(probe)) if test is not None else None
    sens = sensitivity(maker, names, False, probe, probe_test, float_out,
                       _score(float_out, probe_test) if probe_test is not None else {}, progress)
    for row in layers:
        s = sens.get(row["tensor"])
        if s is not None:
            row["alone_int8"] = s
    key = (lambda r: (-(r["alone_int8"].get("drop_points", 0.0)), -r["alone_int8"]["rel_l2"]))
    ranked = sorted((r for r in layers if "alone_int8" in r), key=key)
    for rank, row in enumerate(ranked, 1):
        row["sensitivity_rank"] = rank
    worst = [(r["tensor"], r["layer"]) for r in ranked if r["op"] not in BYTE_MOVING_OPS]
    step("layers", 2, 3)

    settings, skipped = ladder(fix_list, has_dense=has_dense, per_channel_ok=per_channel_ok, worst=worst,
                               float_ok=not (board_obj is not None and board_obj.int8_only))
    if no_16x8:
        settings = [s for s in settings if s.activations != "int16"]
        skipped.append(no_16x8)
    step("layers", 3, 3)

    baseline = chosen = closest = None
    trials: list[Trial] = []
    if test is None:
        notes.append("no labelled --eval data: errors and ranking only; no setting chosen")
    else:
        baseline = _tflm_trial(plain, plain_setting, test, float_score, max_drop)
        if has_dense and not per_channel_ok:
            baseline.notes.append("for reference: the board's TFLM computes per-channel FULLY_CONNECTED wrong")
        for k, s in enumerate(settings):
            model_bytes = plain if s == plain_setting else maker.build(s)
            trial = baseline if s == plain_setting else _tflm_trial(model_bytes, s, test, float_score, max_drop)
            if s.bias_correction:
                rows = maker.bias_rows.get(s, [])
                trial.notes.append(f"bias correction on {len(rows)} layer(s)" if rows else
                                   "no layer with weights and a bias to correct")
            trials.append(trial)
            step("settings", k + 1, len(settings))
            if trial.meets:
                chosen = trial
                break
        if trials:
            closest = min(trials, key=lambda t: t.drop_points)
        baseline.exact_arena_bytes = _exact_arena(plain)
        if chosen is not None:
            chosen.exact_arena_bytes = _exact_arena(maker.build(chosen.setting))
        if chosen is not None and chosen.setting != plain_setting:
            after = layer_errors(graph, maker.build(chosen.setting), probe) if not chosen.setting.float_layers else []
            by_tensor = {r["tensor"]: r for r in after}
            for row in layers:
                a = by_tensor.get(row["tensor"])
                if a is not None and "rel_l2" in a:
                    row["chosen"] = {k: a[k] for k in ("mse", "cosine", "rel_l2")}
    result = Diagnosis(
        source=loaded.source, task="unlabelled" if test is None else ("classification" if test.is_classification
                                                                      else "regression"),
        metric=_metric(test), max_drop=float(max_drop), fixes=list(fix_list), float_score=float_score,
        baseline=baseline, layers=layers, trials=trials, skipped=skipped, chosen=chosen, closest=closest,
        runtime=None if facts is None else facts.to_dict(), board=None if board_obj is None else board_obj.id,
        samples={"calibration": int(len(calib)), "eval": 0 if test is None else int(len(test)),
                 "layers": int(len(probe))},
        notes=notes, duration_s=time.perf_counter() - t_start,
        model=None if chosen is None else _stripped(maker.build(chosen.setting)))
    if raise_if_unmet:
        result.raise_if_unmet()
    return result


# -- hooks for edgekit convert -------------------------------------------------------------------

def check_auto_fix(recipe, test: Optional[Dataset], max_drop: float) -> None:
    """``convert --auto-fix`` refuses, before any work, what it cannot do."""
    from edgekit.errors import DataError, RecipeError

    if not max_drop >= 0:
        raise UsageError(f"--max-drop must be 0 or more points, got {max_drop}", hint="e.g. --max-drop 1")
    if recipe.quantize.mode != "int8":
        raise RecipeError("--auto-fix tunes int8 quantization", hint="drop --quantize, or drop --auto-fix")
    if recipe.qat is not None:
        raise RecipeError("--auto-fix tunes post-training quantization; QAT trains the quantization instead",
                          hint="drop --qat or --auto-fix")
    if recipe.compress is not None:
        raise RecipeError("--auto-fix and --compress together are not supported (LUT compression keeps the "
                          "weights' int8 scheme)", hint="drop one of them")
    if test is None or test.y is None:
        raise DataError("--auto-fix measures accuracy: it needs labelled --eval data",
                        hint="pass --eval with labelled test data")


def auto_fix(*, keras_model=None, saved_model_dir: str | None = None, calibration: np.ndarray, test: Dataset,
             facts=None, int8_only: bool = False, max_drop: float = DEFAULT_MAX_DROP, io: str = "int8",
             progress: ProgressFn | None = None) -> tuple[bytes, dict]:
    """``convert --auto-fix``: the cheapest setting of the default fixes within ``max_drop`` points of
    float, verified on host TFLM (no per-layer analysis). Returns its model and what was tried;
    AccuracyBudgetError (naming the closest setting) when none meets the budget."""
    graph = quantizer.float_graph(keras_model=keras_model if saved_model_dir is None else None,
                                  saved_model_dir=saved_model_dir, calibration=calibration)
    maker = _Maker(graph, calibration, io)
    float_score = _score(_Litert(graph).run(test.x), test)
    per_channel_ok = facts is None or facts.per_channel_fully_connected
    settings, skipped = ladder(DEFAULT_FIXES, has_dense=_has_dense(graph), per_channel_ok=per_channel_ok,
                               worst=[], float_ok=not int8_only)
    sixteen = [s for s in settings if s.activations == "int16"]
    if sixteen and facts is not None:
        problems = _16x8_problems(maker.build(sixteen[0]), facts)
        if problems:
            settings = [s for s in settings if s.activations != "int16"]
            skipped.append({"setting": "16x8", "reason": f"{facts.label} has no 16x8 kernel for "
                                                         f"{', '.join(sorted({p.op for p in problems}))}"})
    trials: list[Trial] = []
    chosen = None
    for k, s in enumerate(settings):
        trial = _tflm_trial(maker.build(s), s, test, float_score, max_drop)
        trials.append(trial)
        if progress:
            progress("auto-fix", k + 1, len(settings))
        if trial.meets:
            chosen = trial
            break
    doc = {"max_drop_points": float(max_drop), "float": float_score, "metric": _metric(test),
           "trials": [t.to_dict() for t in trials], "skipped": skipped,
           "chosen": None if chosen is None else chosen.to_dict()}
    if chosen is None:
        closest = min(trials, key=lambda t: t.drop_points) if trials else None
        diag = Diagnosis(source="", task="", metric=_metric(test), max_drop=float(max_drop), fixes=list(DEFAULT_FIXES),
                         float_score=float_score, baseline=None, layers=[], trials=trials, skipped=skipped,
                         chosen=None, closest=closest, runtime=None, board=None, samples={"eval": len(test)})
        diag.raise_if_unmet()
        raise ConversionError("no quantization setting could be built for --auto-fix")
    return maker.build(chosen.setting), doc


def choose_dense(per_channel: bytes, make_per_tensor: Callable[[], bytes], test: Dataset, *,
                 max_cost: float = AUTO_DENSE_MAX_COST) -> tuple[bytes, Optional[dict]]:
    """Per-tensor dense weights where they cost at most ``max_cost`` points against per-channel on host
    TFLM (they are smaller and need a smaller arena), else the per-channel model. ``None`` for the
    record when the model has no per-channel FULLY_CONNECTED (nothing to choose)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite
    from edgekit.tflm.compat import per_channel_dense_ops

    if not per_channel_dense_ops(parse(load_tflite(per_channel))):
        return per_channel, None
    per_tensor = make_per_tensor()
    from edgekit.conversion import evaluate as ev

    try:
        out_pc, _, arena_pc = ev.tflm_run(per_channel, test.x)
        out_pt, _, arena_pt = ev.tflm_run(per_tensor, test.x)
    except EdgekitError as e:
        return per_channel, {"chosen": "per-channel", "reason": f"host TFLM could not compare them: {e.message}"}
    s_pc, s_pt = _score(out_pc, test), _score(out_pt, test)
    cost = drop_points(s_pt, s_pc, test)
    keep_pt = cost <= max_cost + 1e-9
    doc = {"chosen": "per-tensor" if keep_pt else "per-channel", "cost_points": round(cost, 4),
           "max_cost_points": max_cost, "runtime": "host TFLM", "samples": len(test),
           "per_channel": {"bytes": len(per_channel), "arena_bytes": arena_pc, "score": s_pc},
           "per_tensor": {"bytes": len(per_tensor), "arena_bytes": arena_pt, "score": s_pt}}
    return (per_tensor if keep_pt else per_channel), doc
