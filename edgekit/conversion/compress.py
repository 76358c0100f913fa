"""TFLM look-up-table (LUT) compression of clustered int8 weights.

After clustering, each output channel of a weight tensor holds only a few distinct int8 values. LUT
compression (tflite-micro's compression module) stores a small value table per channel plus N-bit indices, and
inserts DECODE operators that expand the weights at run time. Only TFLM runs such models.

Tensors chosen: constant int8 weights of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED with at least
``min_tensor_bytes`` bytes, per channel along their quantized dimension (per tensor when quantized per
tensor). Each gets the fewest index bits its distinct values need, up to ``index_bits``; a tensor with
more distinct values per channel than 2**index_bits stays uncompressed and is listed with the reason.

``--compress auto`` (``CompressSpec.auto``): every candidate gets the fewest index bits its values need
(1..7), the model is compressed once, and each tensor's cost is read from the result (its packed
indices + value table, plus its share of what the DECODE ops and their tensors add to the flatbuffer);
tensors where that is not smaller than the plain int8 bytes are left plain and the model is compressed
again without them. So auto never makes a model larger than plain int8; when no tensor pays, the model
is returned unchanged. Each report row says ``bytes`` before, ``after_bytes`` and ``method``.

Decoded weights cost RAM: TFLM's DECODE writes them into the tensor arena (edgekit's firmware sets up
no alternate decompression buffer), so a compressed model needs a larger arena than plain int8. Under a
budget (``--max-arena``, the recipe's ``compress.max_arena_bytes``, or with ``convert --board`` the
largest arena the board's RAM leaves, :func:`edgekit.fit.arena_budget`) auto keeps tensors plain, the
most decoded bytes per flash byte saved first, until the measured exact arena fits.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from edgekit.errors import ConversionError
from edgekit.optimize.recipe import CompressSpec

WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}   # op -> weight input index


def plan(model: bytes, spec: CompressSpec) -> tuple[list, list[dict]]:
    """Which tensors to compress and how: (tflite-micro compression specs, one report row per candidate)."""
    from tflite_micro.tensorflow.lite.micro.compression import spec as lut_spec

    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    graph = parse(load_tflite(model))
    specs, rows = [], []
    seen = set()
    for sg in graph.subgraphs:
        for op in sg.operators:
            k = WEIGHT_OPS.get(op.op)
            if k is None or len(op.inputs) <= k or op.inputs[k] < 0 or (sg.index, op.inputs[k]) in seen:
                continue
            ti = op.inputs[k]
            seen.add((sg.index, ti))
            t = sg.tensors[ti]
            row = {"tensor": t.name or f"tensor {ti}", "index": ti, "subgraph": sg.index, "op": op.op,
                   "shape": list(t.shape), "bytes": t.buffer_bytes}
            rows.append(row)
            if t.data is None or t.dtype != "int8":
                row["skipped"] = "not a constant int8 tensor"
                continue
            if t.buffer_bytes < spec.min_tensor_bytes:
                row["skipped"] = f"smaller than {spec.min_tensor_bytes} bytes; a table would not pay"
                continue
            arr = t.data.view(np.int8).reshape(t.shape)
            axis = t.quantized_dimension if len(t.scales) > 1 else None
            if axis is not None and axis not in (0, arr.ndim - 1):
                row["skipped"] = f"channel axis {axis} not supported by the TFLM decoder"
                continue
            if axis is None:
                unique = len(np.unique(arr))
            else:
                unique = max(len(np.unique(s)) for s in np.moveaxis(arr, axis, 0))
            bits = max(1, math.ceil(math.log2(unique))) if unique > 1 else 1
            row.update({"unique_per_channel": int(unique), "axis": axis})
            if bits > spec.index_bits:
                row["skipped"] = (f"{unique} distinct values per channel need {bits} index bits "
                                  f"(> {spec.index_bits}); cluster to <= {2 ** spec.index_bits} values")
                continue
            row["index_bits"] = bits
            mode = lut_spec.PerChannel(axis=axis) if axis is not None else lut_spec.PerTensor()
            specs.append(lut_spec.Tensor(subgraph=sg.index, tensor=ti,
                                         compression=[lut_spec.LookUpTableCompression(
                                             index_bitwidth=bits, mode=mode)]))
    return specs, rows


def _run_compress(model: bytes, specs: list) -> bytes:
    from tflite_micro.tensorflow.lite.micro.compression import compress

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(compress(model, specs))
    except Exception as e:  # noqa: BLE001 - the compressor's own error types vary
        raise ConversionError(f"TFLM LUT compression failed: {str(e).splitlines()[0][:200]}") from e


def encoded_bytes(model: bytes) -> dict[tuple[int, int], int]:
    """Per compressed tensor of ``model``, by (subgraph, tensor index): its encoded indices + value table
    bytes. The compressor keeps the weight tensor's index for the encoded data (names may be stripped)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    out: dict[str, int] = {}
    for sg in parse(load_tflite(model)).subgraphs:
        for op in sg.operators:
            if op.op in ("TFLM_DECODE", "DECODE") and op.inputs:
                ins = [i for i in op.inputs if i >= 0]
                out[(sg.index, ins[0])] = sum(sg.tensors[i].buffer_bytes for i in ins)
    return out


def compress_lut(model: bytes, spec: CompressSpec, *, max_arena_bytes: int | None = None,
                 measure_arena=None) -> tuple[bytes, list[dict]]:
    """Returns (compressed model, report rows). Raises ConversionError when nothing can be compressed
    (with ``spec.auto``: returns the model unchanged when no tensor pays).

    With ``spec.auto`` and an arena budget (``max_arena_bytes``, else ``spec.max_arena_bytes``), the
    arena the decoded weights need is weighed too: see :func:`_fit_arena`. ``measure_arena(model) ->
    bytes`` is the exact minimal arena (default: host TFLM's, ``tflm_host.measure_arena``)."""
    budget = max_arena_bytes if max_arena_bytes is not None else spec.max_arena_bytes
    specs, rows = plan(model, spec)
    if not specs:
        if spec.auto:
            for r in rows:
                r.update(after_bytes=r["bytes"], method="none")
            return model, rows
        reasons = "; ".join(f"{r['tensor']}: {r.get('skipped')}" for r in rows[:3])
        raise ConversionError(f"no weight tensor qualifies for lut{spec.index_bits} compression ({reasons})",
                              hint="cluster the weights first (--cluster 16 for lut4, 8 for lut3, 4 for lut2)")
    out = _run_compress(model, specs)
    by_index = {(r["subgraph"], r["index"]): r for r in rows}
    if spec.auto:
        out, specs = _keep_what_pays(model, out, specs, by_index)
        if specs and len(out) >= len(model):           # the guarantee: never larger than plain int8
            for t in specs:
                by_index[(t.subgraph, t.tensor)]["skipped"] = (f"the compressed model ({len(out):,} B) was not smaller than "
                                                 f"plain int8 ({len(model):,} B): kept plain")
            out, specs = model, []
        if specs and budget is not None:
            out, specs = _fit_arena(model, out, specs, by_index, budget, measure_arena or _host_arena)
    after = encoded_bytes(out) if specs else {}
    kept = {(t.subgraph, t.tensor) for t in specs}
    for r in rows:
        key = (r["subgraph"], r["index"])
        if key in kept:
            r.update(after_bytes=after[key], method=f"lut{r['index_bits']}")
        else:
            r.update(after_bytes=r["bytes"], method="none")
    return out, rows


def _keep_what_pays(model: bytes, out: bytes, specs: list, by_index: dict) -> tuple[bytes, list]:
    """Drop the tensors whose encoded bytes plus their share of the DECODE overhead are not smaller."""
    after = encoded_bytes(out)
    saved = {(t.subgraph, t.tensor): by_index[(t.subgraph, t.tensor)]["bytes"] - after[(t.subgraph, t.tensor)]
             for t in specs}
    # what the DECODE ops, their output tensors and names add, beyond the tensors' own bytes
    overhead = (len(out) - len(model)) + sum(saved.values())
    per_tensor = max(0.0, overhead / len(specs))
    keep = [t for t in specs if saved[(t.subgraph, t.tensor)] > per_tensor]
    for t in specs:
        if t not in keep:
            r = by_index[(t.subgraph, t.tensor)]
            r["skipped"] = (f"lut{r['index_bits']} would save {saved[(t.subgraph, t.tensor)]} B of {r['bytes']} B "
                            f"but its DECODE "
                            f"op costs about {per_tensor:.0f} B: kept plain")
    if len(keep) == len(specs):
        return out, specs
    if not keep:
        return model, []
    return _run_compress(model, keep), keep


def _host_arena(model: bytes) -> int:
    from edgekit.model import tflm_host

    return int(tflm_host.measure_arena(model)["arena_bytes"])


def _fit_arena(model: bytes, out: bytes, specs: list, by_index: dict, budget: int, measure) -> tuple[bytes, list]:
    """Keep tensors plain until the exact arena is at most ``budget`` bytes.

    TFLM's DECODE writes each compressed tensor's int8 weights into the tensor arena (no alternate
    decompression buffer is set up by edgekit's firmware), so compression trades flash for RAM. The
    tensor that costs the most decoded bytes per flash byte it saves goes back to plain first, one at a
    time, each step measured (not estimated); then each tensor put back to plain before the last one
    is tried compressed again (it may fit once a bigger one is plain). Every kept row records the
    budget it was judged against."""
    arena = measure(out)
    if arena <= budget:
        for t in specs:
            by_index[(t.subgraph, t.tensor)]["arena_budget_bytes"] = budget
        return out, specs
    plain_arena = measure(model)
    if plain_arena > budget:
        for t in specs:
            by_index[(t.subgraph, t.tensor)]["skipped"] = (
                f"even plain int8 needs a {plain_arena:,} B arena (> the {budget:,} B budget) and decoded weights "
                "only add to it: kept plain")
        return model, []
    after = encoded_bytes(out)

    def cost(t) -> float:                     # decoded arena bytes per flash byte saved
        key = (t.subgraph, t.tensor)
        return by_index[key]["bytes"] / max(1, by_index[key]["bytes"] - after[key])

    keep = sorted(specs, key=cost)           # cheapest last to go
    dropped = []
    while keep and arena > budget:
        t = keep.pop()
        dropped.append(t)
        r = by_index[(t.subgraph, t.tensor)]
        r["skipped"] = (f"its {r['bytes']:,} B of decoded weights live in the arena, which was {arena:,} B with it "
                        f"compressed (> the {budget:,} B budget): kept plain")
        out = _run_compress(model, keep) if keep else model
        arena = measure(out)
    # a tensor dropped early may fit again once a bigger one is plain: try each back, cheapest first
    for t in sorted(dropped[:-1], key=cost):
        trial = _run_compress(model, keep + [t])
        trial_arena = measure(trial)
        if trial_arena <= budget:
            keep.append(t)
            out, arena = trial, trial_arena
            del by_index[(t.subgraph, t.tensor)]["skipped"]
    for t in keep:
        by_index[(t.subgraph, t.tensor)]["arena_budget_bytes"] = budget
    kept = {(t.subgraph, t.tensor) for t in keep}
    return out, [t for t in specs if (t.subgraph, t.tensor) in kept]
