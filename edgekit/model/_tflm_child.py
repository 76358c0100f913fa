"""Child-process side of edgekit.model.tflm_host. Reads a pickled request on stdin, writes a reply.

Kept free of edgekit imports beyond numpy so it starts fast. Arena reports from TFLM's
RecordingMicroAllocator go to the C-level stderr; the parent parses them.
"""
from __future__ import annotations

import os
import pickle
import sys
import traceback


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


OPS = {"invoke": op_invoke}


def main() -> None:
    out = sys.stdout.buffer
    # Keep native prints off the reply channel: fd 1 -> stderr while we work.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        req = pickle.load(sys.stdin.buffer)
        try:
            reply = OPS[req["op"]](req)
        except ImportError as e:
            reply = {"error": f"tflite-micro is not importable: {e}", "kind": "missing"}
        except Exception as e:  # noqa: BLE001 - reported to the parent as a clear error
            reply = {"error": f"{type(e).__name__}: {e}".strip(), "trace": traceback.format_exc()}
    finally:
        sys.stdout.flush()
        os.dup2(reply_fd, 1)
    out = os.fdopen(1, "wb")
    out.write(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()


if __name__ == "__main__":
    main()
