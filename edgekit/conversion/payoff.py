"""What pruning buys on the device, measured: report.json's ``channel_pruning`` and ``unstructured_pruning``.

Both compare against a *reference*: the input model through the same quantization (and strip pass)
with no shrinking stage. For each model: bytes, gzip bytes, MACs counted from the .tflite's tensor
shapes (edgekit.model.macs), and the exact TFLM arena (the smallest in which host TFLM allocates and
runs it: edgekit.model.tflm_host.measure_arena).

Unstructured pruning is measured three ways, each labelled with the runtime it is about:
- TFLM (microcontrollers): the pruned model's bytes, MACs and arena against the reference's. TFLM's
  kernels are dense: the zeros are stored and multiplied.
- gzip: what the zeros save where a file is compressed (an over-the-air download, a package).
- LiteRT sparse format: the converter's ``Optimize.EXPERIMENTAL_SPARSITY`` stores sparse weight tensors
  in a sparse encoding; the file size, the DENSIFY ops it adds, whether LiteRT runs it (with its
  default XNNPACK delegate and with the built-in kernels alone) and whether TFLM has every op it needs.
"""
from __future__ import annotations

import gzip
from typing import Any, Callable, Optional

import numpy as np

from edgekit.errors import EdgekitError

TFLM_LABEL = "TFLM (microcontrollers)"
GZIP_LABEL = "gzip (download / package size)"
SPARSE_LABEL = "LiteRT sparse format (converter EXPERIMENTAL_SPARSITY)"
CHANNEL_INSTRUCTIONS_HINT = ("instruction counts: `edgekit profile MODEL --board qemu-m4` on model.tflite and on "
                             "the reference (docs/emulated-target.md); bench/bench_prune_channels.py does both")


def _gzip_len(b: bytes) -> int:
    return len(gzip.compress(b, compresslevel=9, mtime=0))


def _ops(model: bytes) -> list[str]:
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    graph = parse(load_tflite(model))
    return [op.op for sg in graph.subgraphs for op in sg.operators]


def _exact_arena(model: bytes) -> tuple[Optional[int], Optional[str]]:
    from edgekit.model import tflm_host
    from edgekit.model.tflm_ops import resolver_method

    missing = sorted({o for o in _ops(model) if resolver_method(o) is None})
    if missing:
        return None, f"TFLM has no kernel for {', '.join(missing)}"
    try:
        return int(tflm_host.measure_arena(model)["arena_bytes"]), None
    except EdgekitError as e:
        return None, e.message


def facts(model: bytes, *, arena_bytes: Optional[int] = None, measure_arena: bool = True) -> dict[str, Any]:
    """bytes, gzip_bytes, macs, arena_bytes (None with ``arena_note`` when TFLM cannot run it)."""
    from edgekit.model.tflm_host import model_macs

    out: dict[str, Any] = {"bytes": len(model), "gzip_bytes": _gzip_len(model), "macs": model_macs(model)}
    note = None
    if arena_bytes is None and measure_arena:
        arena_bytes, note = _exact_arena(model)
    out["arena_bytes"] = arena_bytes
    if note:
        out["arena_note"] = note
    return out


def _change(before: Optional[float], after: Optional[float]) -> Optional[float]:
    if before in (None, 0) or after is None:
        return None
    return round(after / before - 1.0, 4)


def channel_section(rep, reference: dict, final: dict, *, params_reference: int, params_final: int) -> dict:
    """report.json's ``channel_pruning``: the stage's layers and what it bought, reference vs final."""
    before = {"params": params_reference, **reference}
    after = {"params": params_final, **final}
    keys = ("params", "macs", "bytes", "gzip_bytes", "arena_bytes")
    return {
        "criterion": rep.settings["criterion"], "scope": rep.settings["scope"], "fraction": rep.settings["fraction"],
        "layers": rep.layers, "unprunable": rep.unprunable,
        "keras": {"params_before": rep.params_before, "params_after": rep.params_after,
                  "macs_before": rep.macs_before, "macs_after": rep.macs_after},
        "before": before, "after": after,
        "change": {k: _change(before.get(k), after.get(k)) for k in keys},
        "reference": "the input model through the same quantization and strip pass, no shrinking stage",
        "after_is": "the final model (every stage of the recipe)",
        "macs_source": "counted from the .tflite tensor shapes",
        "arena_source": "exact: the smallest arena in which host TFLM allocates and runs the model",
        "instructions": CHANNEL_INSTRUCTIONS_HINT,
    }


def int8_weight_rows(model: bytes) -> list[dict]:
    """Per int8 weight tensor of a converted model (weight ops only): zeros and distinct values."""
    from edgekit.conversion.compress import WEIGHT_OPS
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite

    sg = parse(load_tflite(model)).main
    rows = []
    for op in sg.operators:
        k = WEIGHT_OPS.get(op.op)
        if k is None or len(op.inputs) <= k or op.inputs[k] < 0:
            continue
        t = sg.tensors[op.inputs[k]]
        if t.data is None or t.dtype != "int8":
            continue
        w = t.data.view(np.int8)
        rows.append({"tensor": t.name, "op": op.op, "params": int(w.size), "zeros": int(np.sum(w == 0)),
                     "sparsity": float(np.mean(w == 0)), "unique_values": int(len(np.unique(w)))})
    return rows


def _int8_sparsity(model: bytes) -> float:
    """Zeros among the int8 weights of weight ops (what pruning made)."""
    rows = int8_weight_rows(model)
    total = sum(r["params"] for r in rows)
    return round(sum(r["zeros"] for r in rows) / total, 4) if total else 0.0


def _litert_runs(model: bytes, delegates: bool) -> tuple[bool, Optional[str]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        it = Interpreter(model_content=model, experimental_op_resolver_type=kind)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
        it.invoke()
    except (ValueError, RuntimeError) as e:
        return False, " ".join(str(e).split())[:200]
    return True, None


def _pct(before: int, after: int) -> str:
    return f"{100 * (after / before - 1):+.1f} %" if before else "-"


def unstructured_section(reference: dict, pruned: dict, pruned_model: bytes, sparse_model: Optional[bytes],
                         sparse_error: Optional[str], target_sparsity: float) -> dict:
    """report.json's ``unstructured_pruning``: what the zeros buy on each runtime, measured."""
    from edgekit.model.tflm_ops import resolver_method

    same = [k for k in ("bytes", "macs", "arena_bytes") if reference.get(k) == pruned.get(k)]
    if len(same) == 3:
        tflm_buys = ("nothing: the same model bytes, MACs and arena as the unpruned model (TFLM's kernels are "
                     "dense; every zero is stored and multiplied)")
    else:
        diffs = ", ".join(f"{k} {reference.get(k)} -> {pruned.get(k)}" for k in ("bytes", "macs", "arena_bytes")
                          if k not in same)
        tflm_buys = f"{diffs} (the kernels are dense: MACs do not drop with zeros)"
    runtimes = [
        {"runtime": TFLM_LABEL, "bytes_before": reference["bytes"], "bytes_after": pruned["bytes"],
         "macs_before": reference["macs"], "macs_after": pruned["macs"],
         "arena_bytes_before": reference.get("arena_bytes"), "arena_bytes_after": pruned.get("arena_bytes"),
         "buys": tflm_buys},
        {"runtime": GZIP_LABEL, "bytes_before": reference["gzip_bytes"], "bytes_after": pruned["gzip_bytes"],
         "buys": f"{_pct(reference['gzip_bytes'], pruned['gzip_bytes'])} compressed bytes; the device still stores "
                 f"and runs the {pruned['bytes']:,}-byte model"},
    ]
    if sparse_model is None:
        runtimes.append({"runtime": SPARSE_LABEL, "buys": f"not measured: the converter failed ({sparse_error})"})
    else:
        ops = _ops(sparse_model)
        densify = ops.count("DENSIFY")
        xnn_ok, xnn_err = _litert_runs(sparse_model, delegates=True)
        builtin_ok, builtin_err = _litert_runs(sparse_model, delegates=False)
        tflm_missing = sorted({o for o in ops if resolver_method(o) is None})
        parts = [f"{len(sparse_model):,} B ({_pct(pruned['bytes'], len(sparse_model))} vs the dense int8 file)"]
        if densify:
            parts.append(f"{densify} DENSIFY op(s) expand the weights to dense tensors before the kernels run "
                         "(no fewer MACs)")
        parts.append("LiteRT with XNNPACK " + ("runs it" if xnn_ok else "refuses it"))
        parts.append("LiteRT built-in kernels " + ("run it" if builtin_ok else "refuse it"))
        parts.append("TFLM cannot run it (no kernel for " + ", ".join(tflm_missing) + ")" if tflm_missing
                     else "TFLM has every op it needs")
        runtimes.append({"runtime": SPARSE_LABEL, "bytes": len(sparse_model), "densify_ops": densify,
                         "litert_xnnpack_runs": xnn_ok, "litert_xnnpack_error": xnn_err,
                         "litert_builtin_runs": builtin_ok, "litert_builtin_error": builtin_err,
                         "tflm_missing_ops": tflm_missing, "buys": "; ".join(parts)})
    return {"target_sparsity": target_sparsity, "int8_weight_sparsity": _int8_sparsity(pruned_model),
            "reference": reference, "pruned": pruned, "runtimes": runtimes,
            "measured_on": "the model right after the prune stage, quantized like the final model (before "
                           "any cluster / QAT / compress stage)",
            "speed": ("MACs counted from the .tflite shapes: "
                      + ("the same as the unpruned model's" if reference["macs"] == pruned["macs"] else
                         f"{reference['macs']:,} -> {pruned['macs']:,}")
                      + "; instruction counts on the emulated Cortex-M4: " + CHANNEL_INSTRUCTIONS_HINT.split(": ", 1)[1]
                      + "; channel pruning (--prune-channels) removes whole filters instead")}


def sparse_convert(convert: Callable[[bool], bytes]) -> tuple[Optional[bytes], Optional[str]]:
    """``convert(sparse=True)`` guarded: (model, None) or (None, why it failed)."""
    try:
        return convert(True), None
    except EdgekitError as e:
        return None, e.message


def human_lines(report: dict) -> list[str]:
    """One-line summaries of both sections, for `edgekit convert`'s terminal output."""
    lines = []
    cp = report.get("channel_pruning")
    if cp:
        b, a = cp["before"], cp["after"]

        def arrow(k):
            if b.get(k) is None or a.get(k) is None:
                return f"{k} -"
            return f"{k} {b[k]:,} -> {a[k]:,} ({100 * (a[k] / b[k] - 1):+.0f} %)" if b[k] else f"{k} {a[k]:,}"

        lines.append("channel pruning vs the unshrunk model: " + ", ".join(arrow(k) for k in
                                                                           ("params", "macs", "bytes", "arena_bytes")))
        for u in cp.get("unprunable") or []:
            lines.append(f"  kept whole: {u['layer']} ({u['type']}): {u['reason']}")
    up = report.get("unstructured_pruning")
    if up:
        lines.append(f"unstructured pruning ({100 * up['int8_weight_sparsity']:.0f} % zeros), measured:")
        for r in up["runtimes"]:
            lines.append(f"  {r['runtime']}: {r['buys']}")
    return lines


def measure(recipe, *, reference: Optional[bytes], final: bytes, final_arena: Optional[int], channel_rep,
            prune_input, pruned, quantize: Callable[..., bytes], warn: Callable[[str], None]
            ) -> tuple[Optional[dict], Optional[dict]]:
    """(channel_pruning, unstructured_pruning) sections of report.json (None for a stage not in the recipe).

    reference: the input model quantized like the final one. prune_input / pruned: the tf_keras models
    going into and coming out of the prune stage (None without one). quantize(keras_model, sparse=False)
    converts a tf_keras model like the final one.
    """
    if reference is None:
        return None, None
    ref = facts(reference)
    channel = unstructured = None
    if channel_rep is not None:
        channel = channel_section(channel_rep, ref, facts(final, arena_bytes=final_arena),
                                  params_reference=channel_rep.params_before, params_final=channel_rep.params_after)
    if pruned is not None:
        # the zeros alone: against the model that went into the prune stage (the channel-pruned model
        # when channel pruning ran first, else the input model, i.e. the reference)
        base = ref if channel_rep is None else facts(quantize(prune_input))
        pruned_model = quantize(pruned)
        sparse_model, sparse_error = sparse_convert(lambda _s: quantize(pruned, sparse=True))
        if sparse_error:
            warn(f"the sparse-format conversion (to measure what pruning buys on LiteRT) failed: {sparse_error}")
        unstructured = unstructured_section(base, facts(pruned_model), pruned_model, sparse_model, sparse_error,
                                            recipe.prune.target_sparsity)
    return channel, unstructured
