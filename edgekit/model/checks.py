"""Graph checks: what the flatbuffer verifier cannot see, checked before any kernel runs.

The LiteRT flatbuffer verifier proves that a .tflite is a well-formed flatbuffer; it does not prove
that the graph in it makes sense. Mutated or hand-edited models pass it and still hold, say, two
operators in the wrong order or a weight tensor whose buffer is empty. TFLM then reads uninitialised
arena memory and computes wrong outputs without a word (or crashes, or spins). These checks run in
:func:`edgekit.model.load.load_tflite` on every model, after the verifier and before TFLM or LiteRT
allocate or invoke anything, so that every command refuses such a model with one line (exit 3):

- every operator input is a graph input, a constant with data, a variable tensor, or the output of an
  earlier operator (optional inputs, index -1, are skipped);
- no tensor is the output of two operators, and no operator writes into a constant;
- every graph output is produced (or is a graph input or a constant);
- every constant that an operator reads holds exactly the bytes its shape and type need
  (elements x element size; int4 / int2 packed two / four to a byte, or one per byte).

Not size-checked, because their data is legitimately not shape x type: inputs of TFLM_DECODE (the
LUT-compressed encoding and its ancillary table), tensors with sparsity parameters, and types without
a fixed element size (string, resource, variant). Each subgraph (control-flow bodies included) is
checked on its own, against its own inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import BrokenGraph
from edgekit.model.graph import Graph, Subgraph, Tensor

DECODE_OP = "TFLM_DECODE"
# dtype -> elements per byte when packed (a buffer of one element per byte is accepted too)
_PACKED = {"int4": 2, "int2": 4}
# Problems spelled out in the error message; the rest are counted (all are in BrokenGraph.problems).
MESSAGE_PROBLEMS = 5


@dataclass(frozen=True)
class GraphProblem:
    """One inconsistency. ``kind``: used_before_produced | no_data | produced_twice | writes_constant |
    output_not_produced | size_mismatch."""

    kind: str
    message: str
    subgraph: int
    op: int | None = None
    tensor: int | None = None


def _desc(t: Tensor) -> str:
    return f"tensor {t.index} '{t.name}' ({t.dtype}, shape {list(t.shape)})"


def expected_bytes(t: Tensor) -> tuple[int, ...]:
    """The buffer sizes ``t``'s shape and type allow; () when the type has no fixed size."""
    n = t.elements
    if t.dtype in _PACKED:
        per = _PACKED[t.dtype]
        return ((n + per - 1) // per, n)
    if t.element_bytes <= 0:
        return ()
    return (n * t.element_bytes,)


def _subgraph_problems(sg: Subgraph) -> list[GraphProblem]:
    problems: list[GraphProblem] = []
    where = f"subgraph {sg.index} " if sg.index else ""

    def add(kind: str, message: str, op: int | None = None, tensor: int | None = None) -> None:
        problems.append(GraphProblem(kind, where + message, sg.index, op, tensor))

    def label(k: int) -> str:
        return f"op {k} ({sg.operators[k].op})"

    producer: dict[int, int] = {}
    for op in sg.operators:
        for i in op.outputs:
            if i < 0:
                continue
            t = sg.tensors[i]
            if i in producer:
                add("produced_twice", f"{_desc(t)} is the output of both {label(producer[i])} and "
                    f"{label(op.index)}", op.index, i)
                continue
            producer[i] = op.index
            if t.is_constant and not t.is_variable:
                add("writes_constant", f"{label(op.index)} writes {_desc(t)}, a constant with "
                    f"{t.buffer_bytes} bytes of data in buffer {t.buffer}", op.index, i)

    available = set(sg.inputs)
    available.update(t.index for t in sg.tensors
                     if t.is_constant or t.is_variable or (t.shape and t.elements == 0))
    reported: set[int] = set()
    for op in sg.operators:
        for i in op.inputs:
            if i < 0 or i in available or i in reported:
                continue
            t = sg.tensors[i]
            reported.add(i)
            if i in producer:
                by = producer[i]
                later = "its own output" if by == op.index else f"before {label(by)} produces it"
                add("used_before_produced", f"{label(op.index)} reads {_desc(t)} {later}", op.index, i)
            else:
                add("no_data", f"{label(op.index)} reads {_desc(t)}, which no op produces, is no graph "
                    f"input and has no data (buffer {t.buffer} is empty)", op.index, i)
        available.update(i for i in op.outputs if i >= 0)
    for i in sg.outputs:
        if i not in available and i not in reported:
            add("output_not_produced", f"graph output {_desc(sg.tensors[i])} is produced by no op", None, i)

    decode_inputs = {i for op in sg.operators if op.op == DECODE_OP for i in op.inputs}
    read = {i for op in sg.operators for i in op.inputs if i >= 0} | set(sg.outputs)
    for i in sorted(read - decode_inputs):
        t = sg.tensors[i]
        if not t.is_constant or t.sparse:
            continue
        allowed = expected_bytes(t)
        if allowed and t.buffer_bytes not in allowed:
            add("size_mismatch", f"{_desc(t)} needs {allowed[0]} bytes, buffer {t.buffer} holds "
                f"{t.buffer_bytes}", None, i)
    return problems


def graph_problems(graph: Graph) -> list[GraphProblem]:
    """Every inconsistency in ``graph`` (all subgraphs), in graph order; [] for a sound graph."""
    return [p for sg in graph.subgraphs for p in _subgraph_problems(sg)]


def check_graph(graph: Graph, source: str = "the model") -> None:
    """Raise BrokenGraph (exit 3) naming the ops and tensors when ``graph`` has any problem."""
    problems = graph_problems(graph)
    if not problems:
        return
    shown = "; ".join(p.message for p in problems[:MESSAGE_PROBLEMS])
    if len(problems) > MESSAGE_PROBLEMS:
        shown += f"; {len(problems) - MESSAGE_PROBLEMS} more problem(s) of the same kinds"
    raise BrokenGraph(f"{source} has a broken graph: {shown}", problems=problems,
                      hint="no runtime can run it correctly; re-create the .tflite (edgekit convert) "
                           "or re-download it")
