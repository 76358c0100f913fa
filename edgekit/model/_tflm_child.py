"""Child-process side of edgekit.model.tflm_host: answers requests through edgekit.childproc.serve.

Kept free of edgekit imports beyond numpy and childproc so it starts fast. Arena reports from TFLM's
RecordingMicroAllocator go to the C-level stderr; the parent parses them.
"""
from __future__ import annotations

import sys

from edgekit.childproc import serve


def _details(d: dict) -> dict:
    q = d.get("quantization_parameters", {})
    return {
        "shape": [int(v) for v in d["shape"]],
        "dtype": str(d["dtype"].__name__ if hasattr(d["dtype"], "__name__") else d["dtype"]),
        "scales": [float(v) for v in q.get("scales", [])],
        "zero_points": [int(v) for v in q.get("zero_points", [])],
    }


def _interpreter(req: dict):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(
        req["model"], arena_size=req["arena_bytes"],
        intrepreter_config=runtime.InterpreterConfig.kAllocationRecording,
        alt_decompression_memory_size=req.get("alt_decompression_bytes", 0))


def op_invoke(req: dict) -> dict:
    import numpy as np

    it = _interpreter(req)
    inputs = req["inputs"]
    n = len(inputs[0]) if inputs else 0
    in_details = [_details(it.get_input_details(i)) for i in range(len(inputs))]
    outs: list[list] | None = None
    for k in range(n):
        for i, arr in enumerate(inputs):
            it.set_input(arr[k:k + 1], i)
        it.invoke()
        if outs is None:
            n_out = 0
            while True:
                try:
                    it.get_output_details(n_out)
                except Exception:  # noqa: BLE001 - TFLM raises on an index past the last output
                    break
                n_out += 1
            outs = [[] for _ in range(n_out)]
        for j in range(len(outs)):
            outs[j].append(np.array(it.get_output(j)[0], copy=True))
    outs = outs or []
    out_details = [_details(it.get_output_details(j)) for j in range(len(outs))]
    sys.stderr.flush()
    it.print_allocations()
    return {"outputs": [np.stack(o) for o in outs], "input_details": in_details,
            "output_details": out_details}


def _input_count(it) -> int:
    n = 0
    while n < 64:
        try:
            it.get_input_details(n)
        except Exception:  # noqa: BLE001 - TFLM raises on an index past the last input
            break
        n += 1
    return n


def _runs(req: dict, arena_bytes: int, alt_bytes: int) -> bool:
    """True when the model allocates in ``arena_bytes`` and one invoke on zero inputs succeeds.

    Each attempt is logged on stderr before and after ("@@probe"/"@@result") so that the parent can
    tell which size was being tried if a kernel crashes the process on a too-small arena.
    """
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    import gc

    sys.stderr.write(f"@@probe {arena_bytes} {alt_bytes}\n")
    sys.stderr.flush()
    ok = True
    it = None
    try:
        it = runtime.Interpreter.from_bytes(
            req["model"], arena_size=arena_bytes,
            intrepreter_config=runtime.InterpreterConfig.kAllocationRecording,
            alt_decompression_memory_size=alt_bytes)
        for i in range(_input_count(it)):
            d = it.get_input_details(i)
            it.set_input(np.zeros([int(v) for v in d["shape"]], dtype=d["dtype"]), i)
        it.invoke()
    except Exception:  # noqa: BLE001 - any failure means "does not run in this arena"
        ok = False
    # Destroy the interpreter before the result line: TFLM may crash tearing down an interpreter whose
    # allocation failed half-way, and that crash belongs to this size, not to the next one.
    it = None
    gc.collect()
    sys.stderr.write(f"@@result {arena_bytes} {alt_bytes} {'ok' if ok else 'fail'}\n")
    sys.stderr.flush()
    return ok


def op_probe(req: dict) -> dict:
    return {"ok": _runs(req, int(req["arena_bytes"]), int(req.get("alt_decompression_bytes", 0)))}


def op_arena(req: dict) -> dict:
    """Smallest arena (bytes) in which the model allocates and runs, by bisection.

    ``lo`` is a size known to fail, ``hi`` one known to run (0: find one by doubling from
    ``start_bytes`` up to ``max_bytes``). With ``record`` the recording allocator's total for a
    generous arena is printed on stderr first ("Arena allocation total N").
    """
    from tflite_micro.python.tflite_micro import runtime

    alt = int(req.get("alt_decompression_bytes", 0))
    lo, hi = int(req.get("lo", 0)), int(req.get("hi", 0))
    known_fail = set(int(n) for n in req.get("known_fail", ()))   # sizes that crashed an earlier child

    def runs(size: int) -> bool:
        return size not in known_fail and _runs(req, size, alt)

    if not hi:
        size = int(req["start_bytes"])
        while not runs(size):
            if size >= int(req["max_bytes"]):
                return {"arena_bytes": None, "too_large": True}
            lo, size = size, min(size * 2, int(req["max_bytes"]))
        hi = size
    if req.get("record"):
        it = runtime.Interpreter.from_bytes(
            req["model"], arena_size=hi,
            intrepreter_config=runtime.InterpreterConfig.kAllocationRecording,
            alt_decompression_memory_size=alt)
        sys.stderr.flush()
        it.print_allocations()
        del it
    while True:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if runs(mid):
                hi = mid
            else:
                lo = mid
        # Allocation is not guaranteed monotonic in the arena size: insist that 16 bytes less fails.
        if hi >= 16 and runs(hi - 16):
            hi, lo = hi - 16, 0
            continue
        return {"arena_bytes": hi}


OPS = {"invoke": op_invoke, "arena": op_arena, "probe": op_probe}


def main() -> None:
    serve(lambda request: OPS[request["op"]](request))


if __name__ == "__main__":
    main()
