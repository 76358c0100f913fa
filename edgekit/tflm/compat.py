"""Can a board's TFLM runtime run this model correctly? Checked before anything is built.

The facts come from the TFLM tree the board builds with when one is at hand
(:func:`edgekit.tflm.tree.select_tree`), else from the ``tflm:`` section of its board file, which
records them with their source. Three things are checked:

- every op of the model is one the runtime's ``MicroMutableOpResolver`` can add;
- LUT-compressed models (custom op ``TFLM_DECODE``) need the DECODE kernel;
- FULLY_CONNECTED layers whose weights carry one scale per output channel (the TF 2.21 converter's
  default) need a kernel that honours them: older TFLM releases use the first scale for every
  channel and compute wrong outputs without any error;
- 16x8 models (int16 activations, int8 weights) need every op's kernel to take int16 tensors
  (``ops_16x8``): the TFLM of the Arduino boards has them for CONV_2D and FULLY_CONNECTED but not for
  MAX_POOL_2D, for one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import UnsupportedModelError

DECODE_OP = "TFLM_DECODE"
PER_TENSOR_FIX = ("convert with per-tensor dense quantization (`edgekit convert --board B`, or "
                  "`--dense-per-tensor`)")


@dataclass(frozen=True)
class RuntimeFacts:
    """What one TFLM runtime can run, and where that is known from."""

    label: str                              # "Chirale_TensorFLowLite 2.0.0", "tflite-micro", ...
    source: str                             # "tree /path (read from its sources)" or the board file's note
    ops: frozenset[str] | None              # None: not known (every op assumed present)
    decode: bool
    per_channel_fully_connected: bool
    ops_16x8: frozenset[str] | None = None  # ops with a 16x8 (int16 activation) kernel; None: not known (all)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = sorted(self.ops) if self.ops is not None else None
        d["ops_16x8"] = sorted(self.ops_16x8) if self.ops_16x8 is not None else None
        return d


@dataclass
class RuntimeProblem:
    kind: str            # "op-missing" | "decode-missing" | "per-channel-fully-connected" | "no-16x8-kernel"
    op: str
    message: str
    fixes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def facts_from_tree(tree) -> RuntimeFacts:
    return RuntimeFacts(label=tree.label, source=f"TFLM tree {tree.root} (read from its sources)",
                        ops=tree.ops, decode=tree.decode,
                        per_channel_fully_connected=tree.per_channel_fully_connected,
                        ops_16x8=frozenset(tree.ops_16x8))


def facts_from_board(board) -> RuntimeFacts | None:
    """The runtime facts a board file records (``tflm:``), or None when it records none."""
    from edgekit.model.tflm_ops import BUILTIN_RESOLVER_METHODS, CUSTOM_RESOLVER_METHODS

    facts = getattr(board, "tflm", None)
    if not facts or board.runtime != "tflm":
        return None
    all_ops = set(BUILTIN_RESOLVER_METHODS) | set(CUSTOM_RESOLVER_METHODS)
    missing = set(facts.get("ops_missing") or [])
    decode = bool(facts.get("decode", True))
    ops = all_ops - missing - (set() if decode else {DECODE_OP})
    label = facts.get("library") or f"the TFLM of {board.id}"
    ops_16x8 = facts.get("ops_16x8")
    return RuntimeFacts(label=label.replace("@", " "), source=str(facts.get("source") or f"board file {board.id}"),
                        ops=frozenset(ops), decode=decode,
                        per_channel_fully_connected=bool(facts.get("per_channel_fully_connected", True)),
                        ops_16x8=None if ops_16x8 is None else frozenset(ops_16x8))


def per_channel_dense_ops(graph) -> list[str]:
    """Names of FULLY_CONNECTED ops whose weights are quantized per output channel."""
    out = []
    for sg in graph.subgraphs:
        for op in sg.operators:
            if op.op != "FULLY_CONNECTED" or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            w = sg.tensors[op.inputs[1]]
            if len(w.scales) > 1:
                out.append(w.name or f"op {op.index}")
    return out


def int16_ops(graph) -> list[str]:
    """Names of the ops that compute on int16 activations (a 16x8 model), each once."""
    out: list[str] = []
    for sg in graph.subgraphs:
        for op in sg.operators:
            if not op.inputs or op.inputs[0] < 0 or op.op in out:
                continue
            if sg.tensors[op.inputs[0]].dtype == "int16" or (
                    op.outputs and op.outputs[0] >= 0 and sg.tensors[op.outputs[0]].dtype == "int16"):
                out.append(op.op)
    return out


def check_model(model, facts: RuntimeFacts) -> list[RuntimeProblem]:
    """The reasons ``facts``' runtime cannot run ``model`` (verified bytes, path or VerifiedModel) correctly."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    graph = parse(load_tflite(model))
    used = sorted({op.op for sg in graph.subgraphs for op in sg.operators})
    problems: list[RuntimeProblem] = []
    if DECODE_OP in used and not facts.decode:
        problems.append(RuntimeProblem(
            "decode-missing", DECODE_OP,
            f"the model is LUT-compressed and {facts.label} has no DECODE kernel",
            ["convert without --compress", "pass --tflm-src with a tflite-micro checkout that has DECODE"]))
    if facts.ops is not None:
        for op in used:
            if op != DECODE_OP and op not in facts.ops:
                problems.append(RuntimeProblem(
                    "op-missing", op, f"{facts.label} has no {op} kernel",
                    ["replace that layer", "pass --tflm-src with a TFLM tree that has it"]))
    dense = per_channel_dense_ops(graph)
    if dense and not facts.per_channel_fully_connected:
        problems.append(RuntimeProblem(
            "per-channel-fully-connected", "FULLY_CONNECTED",
            f"{len(dense)} FULLY_CONNECTED layer(s) have per-channel weight scales, and {facts.label} uses "
            "only the first scale (wrong outputs, no error)",
            [PER_TENSOR_FIX, "pass --tflm-src with a TFLM tree whose FULLY_CONNECTED is per-channel"]))
    if facts.ops_16x8 is not None:
        for op in int16_ops(graph):
            if op not in facts.ops_16x8 and (facts.ops is None or op in facts.ops):
                problems.append(RuntimeProblem(
                    "no-16x8-kernel", op, f"{facts.label} has no 16x8 (int16 activation) kernel for {op}",
                    ["convert to int8 instead of 16x8", "pass --tflm-src with a tflite-micro tree that has it"]))
    return problems


def refuse_if_unrunnable(model, facts: RuntimeFacts | None, board_id: str) -> None:
    """Raise UnsupportedModelError (one line naming the op and the ways out) if ``facts`` cannot run it."""
    if facts is None:
        return
    problems = check_model(model, facts)
    if not problems:
        return
    first = problems[0]
    more = "; ".join(p.message for p in problems[1:])
    raise UnsupportedModelError(
        f"{board_id} cannot run this model correctly: {first.message}" + (f"; also {more}" if more else ""),
        hint="ways out: " + "; or ".join(first.fixes), problems=[p.to_dict() for p in problems],
        runtime=facts.to_dict())
