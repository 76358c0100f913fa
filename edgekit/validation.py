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

# float outputs: the largest allowed difference, as a share of the largest reference output
FLOAT_REL_LIMIT = 1e-3


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
    host_reference: str = "tflm"        # what `agreement` / `max_lsb` compare the device with
    host_note: str | None = None
    agreement_litert: float | None = None
    max_lsb_litert: int | None = None
    exact_fraction: float | None = None   # samples whose outputs equal the reference exactly
    diagnosis: list[str] = field(default_factory=list)   # known causes in the device's runtime (on failure)
    timing: dict[str, Any] = field(default_factory=dict)
    firmware: dict[str, Any] | None = None
    judged_by: str = "argmax agreement and output LSBs"
    mae_real: float | None = None        # mean |device - reference| in real units (dequantized)
    max_abs_real: float | None = None    # largest |device - reference| in real units
    place: dict[str, Any] | None = None  # the labgrid place it ran on (edgekit.farm.Lease.to_dict)

    def to_dict(self) -> dict[str, Any]:
        from edgekit.schemas import VALIDATE

        return {"schema": VALIDATE, **self.__dict__}

    def raise_if_failed(self) -> None:
        if not self.passed:
            ref = {"tflm": "host TFLM", "litert": "host LiteRT"}.get(self.host_reference, "the host")
            cause = f"; likely cause: {self.diagnosis[0]}" if self.diagnosis else ""
            raise ValidationFailed(f"{self.board} disagrees with {ref}: {'; '.join(self.failures)}{cause}",
                                   hint="check that the device runs this exact model and kernels; "
                                        "loosen --max-lsb/--min-agreement only if the difference is expected",
                                   diagnosis=self.diagnosis)


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


def validate(model_path: str | os.PathLike, data: str | os.PathLike, board: str | None = None,
             port: str | None = None, n: int = 100, *, max_lsb: int = 1, min_agreement: float = 0.99,
             progress: ProgressFn | None = None, baud: int | None = None,
             raise_on_fail: bool = True, host_tflm: bool = True, emulate: bool = False,
             options: dict | None = None, log=None, place: str | None = None,
             coordinator: str | None = None) -> ValidationResult:
    """Run ``n`` samples of ``data`` on ``board`` and on the host; compare (the board's runner does it).

    ``emulate``: the board's own firmware on the emulated Cortex-M4 (its TFLM library, its buffers).
    ``options``: the runner's declared options (``edgekit boards B`` lists them). ``place``: a labgrid
    place gives the board, port and reset (as in :func:`edgekit.profile`); released on every exit path.
    """
    from edgekit.farm import resolve
    from edgekit.runners import runner_for

    with resolve(board, port, place, coordinator=coordinator, emulate=emulate, log=log) as (board, port, lease):
        runner = runner_for(board, emulate=emulate, options=options, log=log)
        if lease is not None and lease.can_reset:
            runner.recover = lease.reset
        result = runner.run("validate", model_path=model_path, data=data, port=port, baud=baud, n=n,
                            max_lsb=max_lsb, min_agreement=min_agreement, progress=progress,
                            raise_on_fail=False, host_tflm=host_tflm)
        if lease is not None:
            result.place = lease.to_dict()
    if raise_on_fail:
        result.raise_if_failed()
    return result


@dataclass
class Prepared:
    """The samples of one validation and the host's outputs for them."""

    path: Path
    model: bytes
    xq: np.ndarray                  # quantized inputs, one row per sample
    odtype: np.dtype
    labels: np.ndarray | None
    litert: np.ndarray | None       # host LiteRT outputs (None: LiteRT cannot run the model)
    tflm: np.ndarray | None         # host TFLM outputs
    reference: str                  # "tflm" | "litert": what the verdict compares with
    host_note: str | None
    classification: bool = True     # class scores (argmax is judged) or continuous outputs (it is not)
    output_scale: float | None = None   # real = scale x (q - zero point): errors in real units


def prepare(model_path: str | os.PathLike, data: str | os.PathLike, n: int, *, runtime: str = "tflm",
            host_tflm: bool = True, max_lsb: int = 1, min_agreement: float = 0.99) -> Prepared:
    """Check the limits, read the model and ``n`` samples, and run them on the host.

    ``runtime`` is the board's runtime: a TFLM board is compared with host TFLM (the same kernels'
    arithmetic), a LiteRT board with host LiteRT.
    """
    from edgekit.conversion.data import load_data
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
    labels = ds.y if ds.y is not None and ds.is_classification and ds.y.ndim == 1 else None
    host_note = None
    try:
        litert = _litert_outputs(model, xq)
    except (ValueError, RuntimeError) as e:
        # e.g. LUT-compressed models (TFLM DECODE ops) or TFLM-era quantization LiteRT refuses
        litert = None
        host_note = f"LiteRT cannot run this model ({str(e).splitlines()[0][:160]})"
    tflm = None
    if host_tflm or litert is None or runtime == "tflm":
        from edgekit.model import tflm_alloc

        # an arena TFLM cannot allocate is UnsupportedModelError with TFLM's reason, not a raw RuntimeError
        tflm = tflm_alloc.invoke(model, xq)["outputs"][0].reshape(len(xq), -1)
    reference = "tflm" if (runtime == "tflm" or litert is None) else "litert"
    return Prepared(path=path, model=model, xq=xq, odtype=np.dtype(ospec["dtype"]), labels=labels,
                    litert=litert, tflm=tflm, reference=reference, host_note=host_note,
                    classification=labels is not None or _scores_output(model), output_scale=ospec.get("scale"))


CLASS_SCORE_OPS = ("SOFTMAX", "LOGISTIC", "LOG_SOFTMAX", "ARG_MAX")


def _scores_output(model: bytes) -> bool:
    """The model's output is class scores: it comes from SOFTMAX/LOGISTIC/ARG_MAX, or is a short vector."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(model)).main
    out = sg.outputs[0]
    producer = next((op for op in sg.operators if out in op.outputs), None)
    if producer is not None and producer.op in CLASS_SCORE_OPS:
        return True
    width = sg.tensors[out].elements
    return producer is not None and producer.op in ("FULLY_CONNECTED",) and width <= 100


def _diff(dev: np.ndarray, host: np.ndarray, integer: bool) -> tuple[float, int | None, float]:
    d = np.abs(dev.astype(np.float64) - host.astype(np.float64))
    max_abs = float(d.max()) if d.size else 0.0
    return max_abs, (int(max_abs) if integer else None), float(np.mean(dev.argmax(axis=1) == host.argmax(axis=1)))


def compare(prep: Prepared, device_outputs: list[bytes], times_us: list[float], *, board: str, max_lsb: int,
            min_agreement: float, diagnosis: list[str] | None = None) -> ValidationResult:
    """The verdict: device outputs against the reference (and the other host runtime, for information)."""
    n = len(prep.xq)
    dev = np.stack([np.frombuffer(o, dtype=prep.odtype).copy() for o in device_outputs]).reshape(n, -1)
    integer = np.issubdtype(prep.odtype, np.integer)
    host = prep.tflm if prep.reference == "tflm" else prep.litert
    max_abs, lsb, agreement = _diff(dev, host, integer)
    agreement_tflm = lsb_tflm = agreement_litert = lsb_litert = None
    if prep.tflm is not None:
        _, lsb_tflm, agreement_tflm = _diff(dev, prep.tflm, integer)
    if prep.litert is not None:
        _, lsb_litert, agreement_litert = _diff(dev, prep.litert, integer)
    acc_dev = acc_host = None
    if prep.labels is not None:
        acc_dev = float(np.mean(dev.argmax(axis=1) == prep.labels))
        acc_host = float(np.mean(host.argmax(axis=1) == prep.labels))
    failures = []
    if prep.classification and agreement < min_agreement:
        failures.append(f"argmax agreement {agreement:.2%} < {min_agreement:.2%}")
    if lsb is not None and lsb > max_lsb:
        failures.append(f"outputs differ by up to {lsb} LSBs (limit {max_lsb})")
    # errors in real units: dequantized integer outputs, or float outputs as they are
    scale = prep.output_scale if integer and prep.output_scale else (None if integer else 1.0)
    real_diff = np.abs(dev.astype(np.float64) - host.astype(np.float64)) * (scale or 1.0)
    mae_real = float(real_diff.mean()) if scale is not None and real_diff.size else None
    max_abs_real = float(real_diff.max()) if scale is not None and real_diff.size else None
    if not integer:
        ref_max = float(np.abs(host).max()) if host.size else 0.0
        limit = FLOAT_REL_LIMIT * max(ref_max, 1e-12)
        if max_abs_real is not None and max_abs_real > limit:
            failures.append(f"float outputs differ by up to {max_abs_real:.3g} (limit {limit:.3g}: "
                            f"{FLOAT_REL_LIMIT:g} of the largest reference output)")
    exact = float(np.mean(np.all(dev == host, axis=1))) if host.shape == dev.shape else None
    return ValidationResult(
        model=str(prep.path), board=board, samples=n, agreement=agreement,
        agreement_tflm=agreement_tflm, max_lsb=lsb, max_lsb_tflm=lsb_tflm, max_abs_diff=max_abs,
        max_lsb_limit=max_lsb, min_agreement=min_agreement, accuracy_device=acc_dev,
        accuracy_host=acc_host, latency_us_mean=float(np.mean(times_us)) if times_us else None,
        passed=not failures, failures=failures, host_reference=prep.reference, host_note=prep.host_note,
        agreement_litert=agreement_litert, max_lsb_litert=lsb_litert, exact_fraction=exact,
        diagnosis=list(diagnosis or []) if failures else [],
        judged_by="argmax agreement and output LSBs" if prep.classification else
        "output LSBs (continuous outputs: argmax agreement is shown, not judged)",
        mae_real=mae_real, max_abs_real=max_abs_real)


def diagnose(model: bytes, facts) -> list[str]:
    """Why a TFLM runtime may compute this model wrong: the runtime facts' known problems, named."""
    if facts is None:
        return []
    from edgekit.tflm.compat import check_model

    return [f"{p.op}: {p.message}" for p in check_model(model, facts)]


def validate_link(runner, model_path, data, *, port: str | None = None, baud: int | None = None, n: int = 100,
                  max_lsb: int = 1, min_agreement: float = 0.99, progress: ProgressFn | None = None,
                  raise_on_fail: bool = True, host_tflm: bool = True) -> ValidationResult:
    """Validate over protocol v1 with a :class:`~edgekit.runners.link.LinkRunner`'s device."""
    from edgekit.link.device import ensure_model

    board = runner.board
    prep = prepare(model_path, data, n, runtime=board.runtime, host_tflm=host_tflm, max_lsb=max_lsb,
                   min_agreement=min_agreement)
    outputs, times = [], []
    with runner.open_link(port=port, baud=baud, models=[prep.model]) as conn:
        ensure_model(conn, prep.model, progress)
        counts = (conn.timing or {}).get("unit") == "instructions"
        for k in range(len(prep.xq)):
            res = conn.session.invoke(prep.xq[k].tobytes())
            outputs.append(res.output)
            if not counts:
                times.append(res.time_ns / 1000.0)
            if progress:
                progress("validate", k + 1, len(prep.xq))
        firmware = conn.firmware
    result = compare(prep, outputs, times, board=board.id, max_lsb=max_lsb, min_agreement=min_agreement,
                     diagnosis=diagnose(prep.model, runtime_facts_of(board, firmware)))
    result.timing = dict(conn.timing or {})
    if firmware:
        result.firmware = {k: firmware.get(k) for k in ("tree", "kernels", "sizes", "machine", "fit")}
    if raise_on_fail:
        result.raise_if_failed()
    return result


def runtime_facts_of(board, firmware: dict | None):
    """The TFLM runtime facts of what ran: the firmware's tree when one was built, else the board file's."""
    from edgekit.tflm.compat import RuntimeFacts, facts_from_board

    tree = (firmware or {}).get("tree")
    if tree:
        return RuntimeFacts(label=tree["label"], source=f"TFLM tree {tree['root']}", ops=None,
                            decode=bool(tree["decode"]),
                            per_channel_fully_connected=bool(tree["per_channel_fully_connected"]))
    return facts_from_board(board)
