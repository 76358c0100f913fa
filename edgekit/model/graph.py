"""A plain-Python view of a verified .tflite: subgraphs, tensors, operators.

Parsed with the flatbuffer schema module that ships with tflite-micro (or ai-edge-litert), and only
after edgekit.model.load verified the bytes. Anything odd that still slips through (indices out of
range in a structurally valid buffer, ...) becomes a ModelFormatError, never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import ModelFormatError, RuntimeMissing
from edgekit.model.load import VerifiedModel

# TensorType name -> (dtype name, bytes per element; 0 for types without a fixed size)
_DTYPES = {
    "FLOAT32": ("float32", 4), "FLOAT16": ("float16", 2), "FLOAT64": ("float64", 8),
    "BFLOAT16": ("bfloat16", 2), "INT32": ("int32", 4), "UINT8": ("uint8", 1), "INT64": ("int64", 8),
    "STRING": ("string", 0), "BOOL": ("bool", 1), "INT16": ("int16", 2), "COMPLEX64": ("complex64", 8),
    "INT8": ("int8", 1), "COMPLEX128": ("complex128", 16), "UINT64": ("uint64", 8),
    "RESOURCE": ("resource", 0), "VARIANT": ("variant", 0), "UINT32": ("uint32", 4),
    "UINT16": ("uint16", 2), "INT4": ("int4", 0), "INT2": ("int2", 0),
}
FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")


def schema():
    """The generated TFLite schema module (tflite-micro's copy, else ai-edge-litert's)."""
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    except ImportError:
        try:
            from ai_edge_litert import schema_py_generated as fb
        except ImportError as e:
            raise RuntimeMissing("no TFLite schema module found (tflite-micro or ai-edge-litert)",
                                 hint="pip install 'edgekit[runtime]'") from e
    return fb


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class Tensor:
    index: int
    name: str
    shape: list[int]
    dtype: str
    element_bytes: int
    buffer_bytes: int                    # bytes of constant data held in the model (0: activation)
    scales: list[float] = field(default_factory=list)
    zero_points: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    is_variable: bool = False
    data: Any = None                     # numpy uint8 view of the constant data, or None
    buffer: int = 0                      # index into the model's buffers (0: the empty sentinel)
    sparse: bool = False                 # has sparsity parameters (data is the compressed form)

    @property
    def is_constant(self) -> bool:
        return self.buffer_bytes > 0

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(int(d), 0)
        return n

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)

    def quant_dict(self) -> dict:
        if not self.scales:
            return {}
        if len(self.scales) == 1:
            return {"scale": self.scales[0], "zero_point": self.zero_points[0] if self.zero_points else 0}
        return {"scales": len(self.scales), "quantized_dimension": self.quantized_dimension}


@dataclass
class Operator:
    index: int
    op: str                              # builtin name (CONV_2D) or the custom code (TFLM_DECODE)
    custom: bool
    inputs: list[int]                    # tensor indices; -1 = optional input not given
    outputs: list[int]
    options: Any = None                  # the schema's builtin options object (or None)


@dataclass
class Subgraph:
    index: int
    name: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]


@dataclass
class Graph:
    subgraphs: list[Subgraph]
    description: str
    version: int

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _as_list(v) -> list:
    if v is None:
        return []
    try:
        return [x.item() if hasattr(x, "item") else x for x in v]
    except TypeError:
        return []


def parse(model: VerifiedModel) -> Graph:
    """Parse a verified model into a Graph. Raises ModelFormatError on anything inconsistent."""
    fb = schema()
    try:
        return _parse(fb, model.data)
    except ModelFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - a verified buffer can still be semantically broken
        raise ModelFormatError(f"the model's structure is inconsistent ({type(e).__name__}: {e})",
                               hint="re-create the .tflite file; it is damaged") from e


def _parse(fb, data: bytes) -> Graph:
    import numpy as np

    op_names = _enum_names(fb.BuiltinOperator)
    type_names = _enum_names(fb.TensorType)
    m = fb.Model.GetRootAs(data, 0)
    n_buffers = m.BuffersLength()
    n_codes = m.OperatorCodesLength()
    codes: list[tuple[str, bool]] = []
    for i in range(n_codes):
        oc = m.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = op_names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            codes.append((_text(oc.CustomCode()) or "CUSTOM", True))
        else:
            codes.append((name, False))

    buffer_cache: dict[int, tuple[int, Any]] = {}

    def buffer(i: int) -> tuple[int, Any]:
        if i in buffer_cache:
            return buffer_cache[i]
        if i <= 0 or i >= n_buffers:
            out = (0, None)
        else:
            b = m.Buffers(i)
            if b.Offset() > 1:
                start, size = int(b.Offset()), int(b.Size())
                if start + size > len(data):
                    raise ModelFormatError("a weight buffer points past the end of the file")
                out = (size, np.frombuffer(data, dtype=np.uint8, count=size, offset=start))
            elif b.DataLength():
                arr = b.DataAsNumpy()
                out = (int(arr.size), arr)
            else:
                out = (0, None)
        buffer_cache[i] = out
        return out

    subgraphs = []
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        tensors = []
        for t in range(sg.TensorsLength()):
            tt = sg.Tensors(t)
            tname = type_names.get(int(tt.Type()), f"TYPE_{tt.Type()}")
            dtype, elem = _DTYPES.get(tname, (tname.lower(), 0))
            nbytes, arr = buffer(int(tt.Buffer()))
            q = tt.Quantization()
            scales, zps, qdim = [], [], 0
            if q is not None and q.ScaleLength():
                scales = [float(x) for x in q.ScaleAsNumpy()]
                zps = [int(x) for x in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else []
                qdim = int(q.QuantizedDimension())
            shape = [int(x) for x in tt.ShapeAsNumpy()] if tt.ShapeLength() else []
            tensors.append(Tensor(index=t, name=_text(tt.Name()), shape=shape, dtype=dtype,
                                  element_bytes=elem, buffer_bytes=nbytes, scales=scales,
                                  zero_points=zps, quantized_dimension=qdim,
                                  is_variable=bool(tt.IsVariable()), data=arr,
                                  buffer=int(tt.Buffer()), sparse=tt.Sparsity() is not None))
        ops = []
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            ci = int(op.OpcodeIndex())
            if not 0 <= ci < n_codes:
                raise ModelFormatError(f"operator {k} uses opcode {ci}; the model defines {n_codes}")
            name, custom = codes[ci]
            ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
            for x in (*ins, *outs):
                if x >= len(tensors) or x < -1:
                    raise ModelFormatError(f"operator {k} ({name}) refers to tensor {x}; "
                                           f"subgraph {s} has {len(tensors)}")
            options = None
            if name == "BATCH_MATMUL" and op.BuiltinOptions() is not None:
                bm = fb.BatchMatMulOptions()
                tab = op.BuiltinOptions()
                bm.Init(tab.Bytes, tab.Pos)
                options = {"adj_x": bool(bm.AdjX()), "adj_y": bool(bm.AdjY())}
            elif name == "UNIDIRECTIONAL_SEQUENCE_LSTM" and op.BuiltinOptions() is not None:
                lo = fb.UnidirectionalSequenceLSTMOptions()
                tab = op.BuiltinOptions()
                lo.Init(tab.Bytes, tab.Pos)
                options = {"time_major": bool(lo.TimeMajor())}
            ops.append(Operator(index=k, op=name, custom=custom, inputs=ins, outputs=outs,
                                options=options))
        g_in = [int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else []
        g_out = [int(x) for x in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
        for x in (*g_in, *g_out):
            if not 0 <= x < len(tensors):
                raise ModelFormatError(f"subgraph {s} input/output {x} is not one of its "
                                       f"{len(tensors)} tensors")
        subgraphs.append(Subgraph(index=s, name=_text(sg.Name()), tensors=tensors, operators=ops,
                                  inputs=g_in, outputs=g_out))
    if not subgraphs:
        raise ModelFormatError("the model has no subgraph")
    return Graph(subgraphs=subgraphs, description=_text(m.Description()), version=int(m.Version()))
