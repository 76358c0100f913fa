"""`edgekit.inspect(model)`: what is in a .tflite and whether it fits a board.

Everything is read from the verified flatbuffer (ops, tensor shapes, weights) or measured on the host
TFLM runtime in a child process (the tensor arena); nothing is guessed.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import EdgekitError, ModelFormatError, ModelTooLarge
from edgekit.model.graph import FLOAT_DTYPES, Graph, Subgraph, Tensor, parse
from edgekit.model.load import VerifiedModel, load_tflite
from edgekit.model.macs import op_macs
from edgekit.model.tflm_ops import resolver_method

DECODE_OP = "TFLM_DECODE"
# Weight tensors smaller than this are left out of the model-wide sparsity figure (biases, LUTs).
SPARSITY_MIN_ELEMENTS = 16


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


@dataclass
class TensorSummary:
    name: str
    shape: list[int]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @classmethod
    def of(cls, t: Tensor) -> "TensorSummary":
        q = t.quant_dict()
        return cls(name=t.name, shape=list(t.shape), dtype=t.dtype, scale=q.get("scale"),
                   zero_point=q.get("zero_point"))


@dataclass
class OpSummary:
    index: int
    op: str
    macs: int
    params: int                 # elements of the constant tensors this op reads (first use only)
    output_shape: list[int]


@dataclass
class WeightTensor:
    name: str
    shape: list[int]
    dtype: str
    bytes: int
    sparsity: float | None      # fraction of elements equal to the zero point (None: not counted)


@dataclass
class ArenaReport:
    arena_bytes: int | None = None              # smallest arena that allocates and runs (host TFLM)
    recorded_bytes: int | None = None           # RecordingMicroAllocator total, generous arena
    alt_decompression_bytes: int = 0            # compressed models: alternate decompression buffer
    arena_with_alt_bytes: int | None = None     # smallest arena when that buffer is given
    error: str | None = None


@dataclass
class InspectResult:
    source: str
    sha256: str
    model_bytes: int
    subgraphs: int
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    op_histogram: dict[str, int]
    ops: list[OpSummary]
    total_macs: int
    total_params: int
    weight_bytes: int
    weights: list[WeightTensor]
    sparsity: float | None
    quantization: str                   # "int8", "int16x8", "float", "mixed"
    float_tensors: list[str]            # float tensors left in a model meant to be integer-only
    tflm_unsupported_ops: list[str]
    compressed: bool                    # holds TFLM_DECODE ops (LUT compression)
    arena: ArenaReport
    board_fit: Any = None               # with a board: edgekit.fit.FitReport (the one fit)
    roofline: dict[str, Any] | None = None   # with a board: the compute-bound floor (roofline_bound)
    estimate: dict[str, Any] | None = None   # with a board: its time/energy estimate (edgekit.estimate)
    warnings: list[str] = field(default_factory=list)

    @property
    def arena_bytes(self) -> int | None:
        return self.arena.arena_bytes

    @property
    def resolver_ops(self) -> list[str]:
        """Distinct op names in first-use order (what a MicroMutableOpResolver must hold)."""
        seen: list[str] = []
        for o in self.ops:
            if o.op not in seen:
                seen.append(o.op)
        return seen

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["board_fit"] = self.board_fit.to_dict() if self.board_fit is not None else None
        return out


def _classify(graph: Graph) -> tuple[str, list[str]]:
    """Quantization kind of the model, and the float tensors left in it when it is meant as integer."""
    sg = graph.main
    activations = [t for t in sg.tensors if not t.is_constant]
    float_tensors = [t for t in sg.tensors if t.dtype in FLOAT_DTYPES]
    quantized = [t for t in sg.tensors if t.is_quantized and t.dtype in ("int8", "int16", "uint8")]
    if not quantized:
        return "float", []
    if not float_tensors:
        if any(t.dtype == "int16" and t.is_quantized for t in activations):
            return "int16x8", []
        return "int8", []
    return "mixed", [t.name or f"tensor {t.index}" for t in float_tensors]


def _sparsity(t: Tensor) -> float | None:
    import numpy as np

    if t.data is None or t.dtype not in ("int8", "uint8", "int16", "float32", "float16"):
        return None
    dt = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "float32": np.float32,
          "float16": np.float16}[t.dtype]
    itemsize = np.dtype(dt).itemsize
    raw = t.data
    if raw.size % itemsize or raw.size // itemsize != t.elements or t.elements == 0:
        return None                      # encoded (compressed) data: no element-wise meaning
    values = np.frombuffer(raw.tobytes(), dtype=dt)
    zero = t.zero_points[0] if len(t.zero_points) == 1 else 0
    return float(np.count_nonzero(values == zero)) / values.size


def _decode_output_bytes(sg: Subgraph) -> int:
    total = 0
    for op in sg.operators:
        if op.op == DECODE_OP:
            for k in op.outputs:
                if k >= 0:
                    t = sg.tensors[k]
                    total += _align16(t.elements * max(t.element_bytes, 1))
    return total


def measure_arena(model: VerifiedModel, graph: Graph | None = None, *,
                  timeout_s: float | None = None) -> ArenaReport:
    """Measure the exact arena on host TFLM (child process); for compressed models also with the
    alternate decompression buffer sized to hold every DECODE output. ``timeout_s`` bounds each
    child (default: scaled with the model's bytes and MACs, tflm_host.child_timeout_s)."""
    from edgekit.model import tflm_host

    if timeout_s is None:
        timeout_s = tflm_host.child_timeout_s(model.data, builds=tflm_host.ARENA_SEARCH_PROBES,
                                              invokes=tflm_host.ARENA_SEARCH_PROBES)
    graph = graph or parse(model)
    report = ArenaReport()
    try:
        m = tflm_host.measure_arena(model.data, timeout_s=timeout_s)
    except ModelTooLarge as e:
        raise _at_the_ceiling(model, graph, timeout_s) from e
    report.arena_bytes, report.recorded_bytes = m["arena_bytes"], m["recorded_bytes"]
    alt = _decode_output_bytes(graph.main)
    if alt:
        report.alt_decompression_bytes = alt
        m2 = tflm_host.measure_arena(model.data, alt_decompression_bytes=alt, timeout_s=timeout_s)
        report.arena_with_alt_bytes = m2["arena_bytes"]
    return report


def _at_the_ceiling(model: VerifiedModel, graph: Graph, timeout_s: float) -> EdgekitError:
    """The arena search reached its ceiling: a model too large for any microcontroller, or a corrupt one.

    One more probe at the ceiling tells which from TFLM's own messages: a kernel refusing the model
    in Prepare, or an arena short although the activation tensors declare far less than the ceiling,
    means corrupt (ModelFormatError); an arena short for tensors that really declare that much is
    ModelTooLarge with their size.
    """
    from edgekit.model import tflm_host
    from edgekit.model.tflm_alloc import allocation_failure

    ceiling = int(tflm_host.ARENA_MAX_BYTES)
    declared = sum(_align16(t.elements * max(t.element_bytes, 1)) for t in graph.main.tensors if not t.is_constant)
    try:
        reply = tflm_host.call_child({"op": "probe", "model": bytes(model.data), "arena_bytes": ceiling,
                                      "alt_decompression_bytes": 0}, timeout_s)
        failure = allocation_failure(str(reply.get("stderr", "")))
    except EdgekitError:
        failure = None
    mib = f"{ceiling >> 20} MiB"
    if (failure is None or failure.kind == "arena") and declared > ceiling // 2:
        return ModelTooLarge(f"the model needs a tensor arena above {mib} on TFLM (its activation tensors "
                             f"declare {declared:,} bytes)",
                             hint="this is not a microcontroller-sized model, or its tensor shapes are corrupt")
    why = (failure.reason if failure is not None and failure.kind != "arena" else
           f"its activation tensors declare only {declared:,} bytes")
    return ModelFormatError(f"the model looks corrupt: host TFLM could not allocate it even with a {mib} "
                            f"arena ({why})",
                            hint="rebuild it from the source model (`edgekit convert`); `edgekit inspect "
                                 "--no-arena` shows its ops and tensors")


def roofline_bound(macs: int, board) -> dict[str, Any]:
    """The compute-bound floor of ``macs`` on ``board``: MACs / (peak int8 MACs per cycle x clock).
    A lower bound, never an estimate of the time: real kernels reach a fraction of the peak."""
    peak = float(board.peak_int8_macs_per_cycle) * float(board.clock_hz)
    return {"macs": int(macs), "peak_int8_macs_per_cycle": float(board.peak_int8_macs_per_cycle),
            "clock_hz": int(board.clock_hz), "latency_bound_us": (macs / peak * 1e6) if peak > 0 else None,
            "label": "roofline lower bound (MACs / peak), not a time estimate"}


def board_estimate(macs: int, board) -> dict[str, Any] | None:
    """The MAC-based time and energy estimate on a microcontroller board (edgekit.estimate.mac_estimate),
    or None (LiteRT boards, and the virtual / emulated boards, whose clocks are not a board's)."""
    if board.runtime != "tflm" or board.runtime_model_upload:
        return None
    from edgekit.estimate import mac_estimate

    est = mac_estimate(macs, board)
    if est is None:
        return None
    est["energy_uj"] = float(board.active_power_mw) * est["latency_us"] / 1000.0
    est["energy_uj_range"] = [float(board.active_power_mw) * est[k] / 1000.0
                              for k in ("latency_us_low", "latency_us_high")]
    if board.emulator:
        est["label"] += (f"; `edgekit profile MODEL --board {board.id} --emulate` counts the instructions "
                         "instead (a closer estimate)")
    return est


def inspect(model: str | os.PathLike | bytes | VerifiedModel, board: Any = None, *,
            measure_arena_bytes: bool = True, timeout_s: float | None = None,
            runtime_facts: Any = None) -> InspectResult:
    """Inspect a .tflite model (path or bytes).

    Returns an InspectResult (``to_dict()`` for JSON): inputs/outputs with quantization, op
    histogram, MACs and parameters per op and in total, weight bytes and sparsity per tensor, float
    tensors left in an integer model, ops TFLM cannot run, the exact minimal tensor arena measured on
    the host TFLM runtime, and with ``board`` (id or edgekit.boards.Board) the flash/RAM fit and a
    roofline latency bound. ``runtime_facts`` (edgekit.tflm.compat.RuntimeFacts): the board's TFLM
    runtime when it is not the board file's (a tree given by --tflm-src). Raises an EdgekitError for
    anything that is not a valid .tflite.
    """
    verified = load_tflite(model)
    graph = parse(verified)
    sg = graph.main
    warnings = list(verified.warnings)

    ops: list[OpSummary] = []
    counted: set[int] = set()
    for op in sg.operators:
        params = 0
        for k in op.inputs:
            if k >= 0 and k not in counted and sg.tensors[k].is_constant:
                counted.add(k)
                params += sg.tensors[k].elements
        out = sg.tensors[op.outputs[0]].shape if op.outputs and op.outputs[0] >= 0 else []
        ops.append(OpSummary(index=op.index, op=op.op, macs=op_macs(sg, op), params=params,
                             output_shape=list(out)))
    total_params = sum(t.elements for t in sg.tensors if t.is_constant)
    for other in graph.subgraphs[1:]:
        total_params += sum(t.elements for t in other.tensors if t.is_constant)

    weights, zero_count, counted_elements = [], 0.0, 0
    for t in sg.tensors:
        if not t.is_constant:
            continue
        s = _sparsity(t)
        weights.append(WeightTensor(name=t.name, shape=list(t.shape), dtype=t.dtype,
                                    bytes=t.buffer_bytes, sparsity=s))
        if s is not None and t.elements >= SPARSITY_MIN_ELEMENTS and t.dtype != "int32":
            zero_count += s * t.elements
            counted_elements += t.elements
    weights.sort(key=lambda w: -w.bytes)

    quant, float_tensors = _classify(graph)
    if float_tensors:
        warnings.append(f"{len(float_tensors)} float tensor(s) left in an integer model: "
                        + ", ".join(float_tensors[:5]) + (" ..." if len(float_tensors) > 5 else ""))
    all_ops = [o.op for g in graph.subgraphs for o in g.operators]
    unsupported = sorted({name for name in all_ops if resolver_method(name) is None})
    if unsupported:
        warnings.append("TFLM cannot run: " + ", ".join(unsupported))

    arena = ArenaReport()
    if not measure_arena_bytes:
        arena.error = "not measured"
    elif unsupported:
        arena.error = "not measured: the model has ops TFLM cannot run"
    else:
        try:
            arena = measure_arena(verified, graph, timeout_s=timeout_s)
        except EdgekitError as e:
            arena.error = e.message
            warnings.append(e.message if isinstance(e, ModelFormatError) else
                            f"TFLM could not allocate this model: {e.message}")

    total_macs = sum(o.macs for o in ops)
    fit_report = roof = estimate = None
    if board is not None:
        if isinstance(board, str):
            from edgekit.boards import load_board

            board = load_board(board)
        from edgekit.fit import fit
        from edgekit.tflm.compat import check_model, facts_from_board

        facts = None if board.runtime != "tflm" else (
            runtime_facts if runtime_facts is not None else facts_from_board(board))
        problems = check_model(verified, facts) if facts is not None else []
        fit_report = fit(board, model_bytes=verified.size_bytes, arena_min_bytes=arena.arena_bytes,
                         quantization=quant, arena_error=arena.error, unsupported_ops=unsupported,
                         runtime_problems=problems,
                         tflm_runtime=f"{facts.label} ({facts.source})" if facts is not None else None)
        for p in fit_report.runtime_problems:
            warnings.append(f"{board.id} cannot run this model correctly: {p['message']} "
                            f"(ways out: {'; or '.join(p['fixes'])})")
        roof = roofline_bound(total_macs, board)
        estimate = board_estimate(total_macs, board)

    return InspectResult(
        source=verified.source, sha256=verified.sha256, model_bytes=verified.size_bytes,
        subgraphs=len(graph.subgraphs),
        inputs=[TensorSummary.of(sg.tensors[i]) for i in sg.inputs],
        outputs=[TensorSummary.of(sg.tensors[i]) for i in sg.outputs],
        op_histogram=dict(Counter(all_ops).most_common()),
        ops=ops, total_macs=total_macs, total_params=total_params,
        weight_bytes=sum(w.bytes for w in weights), weights=weights,
        sparsity=(zero_count / counted_elements) if counted_elements else None,
        quantization=quant, float_tensors=float_tensors, tflm_unsupported_ops=unsupported,
        compressed=DECODE_OP in all_ops, arena=arena, board_fit=fit_report, roofline=roof, estimate=estimate,
        warnings=warnings)
