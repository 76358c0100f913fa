"""Validate a model on a device against the host: the same samples through both, compared.

    result = edgekit.validate("model.tflite", "test.npz", board="virtual", n=100)

Each sample goes through the device (INVOKE over the link), through LiteRT on the host (loaded from
bytes, so the flatbuffer verifier runs) and through the host TFLM runtime (in a child process).
Reported: argmax agreement, the largest output difference in LSBs of the output's integer type, and
accuracy on the device and the host when the data has labels. Past ``max_lsb`` or below
``min_agreement`` it raises :class:`~edgekit.errors.ValidationFailed` (exit code 10).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import RuntimeMissing, UnsupportedModelError, UsageError, ValidationFailed
from edgekit.fileio import read_input
from edgekit.progress import ProgressFn


@dataclass
class ValidationResult:
    model: str
    board: str
    samples: int
    agreement: float
    agreement_tflm: float | None
    max_lsb: int | None
    max_lsb_tflm: int | None
    max_abs_diff: float
    max_lsb_limit: int
    min_agreement: float
    accuracy_device: float | None = None
    accuracy_host: float | None = None
    latency_us_mean: float | None = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    host_reference: str = "litert"      # what `agreement` / `max_lsb` compare the device with
    host_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgekit.validate/1", **self.__dict__}

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ValidationFailed(f"the device disagrees with the host: {'; '.join(self.failures)}",
                                   hint="check that the device runs this exact model and kernels; "
                                        "loosen --max-lsb/--min-agreement only if the difference is expected")


def quantize_input(x: np.ndarray, spec: dict) -> np.ndarray:
    """Float samples to the model input's dtype (int8/uint8 via its scale and zero point)."""
    dtype = np.dtype(spec["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    if spec.get("scale"):
        info = np.iinfo(dtype)
        q = np.round(x / spec["scale"] + (spec.get("zero_point") or 0))
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _litert_outputs(model: bytes, xq: np.ndarray) -> np.ndarray:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise RuntimeMissing("ai-edge-litert is not installed", hint="pip install 'edgekit[runtime]'") from e
    it = Interpreter(model_content=model)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    res = []
    for k in range(len(xq)):
        it.set_tensor(inp["index"], xq[k:k + 1].reshape(inp["shape"]))
        it.invoke()
        res.append(np.array(it.get_tensor(out["index"])).reshape(-1))
    return np.stack(res)


def validate(model_path: str | os.PathLike, data: str | os.PathLike, board: str = "virtual",
             port: str | None = None, n: int = 100, *, max_lsb: int = 1, min_agreement: float = 0.99,
             progress: ProgressFn | None = None, baud: int | None = None,
             raise_on_fail: bool = True, host_tflm: bool = True,
             virtual_options: dict | None = None) -> ValidationResult:
    from edgekit.conversion.data import load_data
    from edgekit.link.device import connect, ensure_model
    from edgekit.profiling import model_facts

    if n < 1:
        raise UsageError("-n must be at least 1")
    if not 0.0 <= min_agreement <= 1.0:
        raise UsageError("--min-agreement must be between 0 and 1")
    if max_lsb < 0:
        raise UsageError("--max-lsb must be 0 or more")
    path = Path(model_path)
    model = read_input(path, "model")
    facts = model_facts(model, str(path))
    if len(facts.inputs) != 1 or len(facts.outputs) != 1:
        raise UnsupportedModelError("validate handles models with one input and one output",
                                    hint="profile works for any model")
    ispec, ospec = facts.inputs[0], facts.outputs[0]
    ds = load_data(data, ispec["shape"][1:], what="validation data").head(n)
    xq = quantize_input(ds.x.reshape(len(ds), *ispec["shape"][1:]), ispec)
    odtype = np.dtype(ospec["dtype"])

    host_note = None
    try:
        host = _litert_outputs(model, xq)
        reference = "litert"
    except (ValueError, RuntimeError) as e:
        # e.g. LUT-compressed models (TFLM DECODE ops) or TFLM-era quantization LiteRT refuses
        host, reference = None, "tflm"
        host_note = f"LiteRT cannot run this model ({str(e).splitlines()[0][:160]}); the host reference is TFLM"
    tflm = None
    if host_tflm or host is None:
        from edgekit.model import tflm_host

        tflm = tflm_host.invoke(model, xq)["outputs"][0].reshape(len(xq), -1)
    if host is None:
        host = tflm

    device_out = []
    times = []
    with connect(board, port, baud=baud, virtual_options=virtual_options) as conn:
        ensure_model(conn, model, progress)
        for k in range(len(xq)):
            res = conn.session.invoke(xq[k].tobytes())
            device_out.append(np.frombuffer(res.output, dtype=odtype).copy())
            times.append(res.time_ns / 1000.0)
            if progress:
                progress("validate", k + 1, len(xq))
    dev = np.stack(device_out).reshape(len(xq), -1)

    integer = np.issubdtype(odtype, np.integer)
    diff = np.abs(dev.astype(np.float64) - host.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    lsb = int(max_abs) if integer else None
    agreement = float(np.mean(dev.argmax(axis=1) == host.argmax(axis=1)))
    agreement_tflm = lsb_tflm = None
    if tflm is not None:
        agreement_tflm = float(np.mean(dev.argmax(axis=1) == tflm.argmax(axis=1)))
        d2 = np.abs(dev.astype(np.float64) - tflm.astype(np.float64))
        lsb_tflm = int(d2.max()) if integer and d2.size else None
    acc_dev = acc_host = None
    if ds.y is not None and ds.is_classification and ds.y.ndim == 1:
        acc_dev = float(np.mean(dev.argmax(axis=1) == ds.y))
        acc_host = float(np.mean(host.argmax(axis=1) == ds.y))
    failures = []
    if agreement < min_agreement:
        failures.append(f"argmax agreement {agreement:.2%} < {min_agreement:.2%}")
    if lsb is not None and lsb > max_lsb:
        failures.append(f"outputs differ by up to {lsb} LSBs (limit {max_lsb})")
    result = ValidationResult(
        model=str(path), board=board, samples=len(xq), agreement=agreement,
        agreement_tflm=agreement_tflm, max_lsb=lsb, max_lsb_tflm=lsb_tflm, max_abs_diff=max_abs,
        max_lsb_limit=max_lsb, min_agreement=min_agreement, accuracy_device=acc_dev,
        accuracy_host=acc_host, latency_us_mean=float(np.mean(times)) if times else None,
        passed=not failures, failures=failures, host_reference=reference, host_note=host_note)
    if raise_on_fail:
        result.raise_if_failed()
    return result

