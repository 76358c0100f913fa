"""Drop what TFLite-Micro never reads from a .tflite, and tell weights from structure.

Removed: signature definitions, the model description, conversion metadata (every metadata entry
but ``OfflineMemoryAllocation``, which TFLM does read), names of tensors that are not model inputs or
outputs, subgraph names, and min/max calibration arrays. Kept: everything the TFLM and LiteRT
interpreters read (operators, tensors, shapes, buffers, scales and zero points). The result is
re-aligned so buffers keep their 16-byte alignment, and both interpreters still run it unchanged.
"""
from __future__ import annotations

import os
import tempfile

KEEP_METADATA = {"OfflineMemoryAllocation"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _read(model: bytes):
    schema = _schema()
    return schema.ModelT.InitFromPackedBuf(bytearray(model), 0)


def _write(model_t) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(max(1024, 1 << 16))
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return align(bytes(builder.Output()))


def align(model: bytes) -> bytes:
    """Re-pack with the C++ flatbuffers library, which honours the schema's force_align on buffers."""
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper as aligner

    with tempfile.TemporaryDirectory(prefix="edgekit-align-") as d:
        src, dst = os.path.join(d, "in.tflite"), os.path.join(d, "out.tflite")
        with open(src, "wb") as f:
            f.write(model)
        aligner.align_tflite_model(src, dst)
        with open(dst, "rb") as f:
            return f.read()


def strip_for_micro(model: bytes) -> bytes:
    m = _read(model)
    m.signatureDefs = None
    m.description = None
    if m.metadata:
        kept = []
        for md in m.metadata:
            name = md.name.decode() if isinstance(md.name, bytes) else str(md.name)
            if name in KEEP_METADATA:
                kept.append(md)
            elif md.buffer is not None and 0 <= md.buffer < len(m.buffers or []):
                m.buffers[md.buffer].data = None
        m.metadata = kept or None
    for sg in m.subgraphs or []:
        io = set(list(sg.inputs if sg.inputs is not None else []) +
                 list(sg.outputs if sg.outputs is not None else []))
        sg.name = None
        for ti, t in enumerate(sg.tensors or []):
            if ti not in io:
                t.name = None
            if t.quantization is not None:
                t.quantization.min = None
                t.quantization.max = None
    return _write(m)


def byte_breakdown(model: bytes) -> dict:
    """Model bytes split into weights (constant buffer data) and structure (everything else)."""
    m = _read(model)
    weights = sum(len(b.data) for b in (m.buffers or []) if b.data is not None)
    # buffers stored outside the flatbuffer (models > 2 GB) are not used by edgekit's targets
    return {"total_bytes": len(model), "weight_bytes": int(weights),
            "structure_bytes": int(len(model) - weights)}
