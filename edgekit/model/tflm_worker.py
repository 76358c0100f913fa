"""A long-lived host TFLM interpreter in a child process (the virtual board's "MCU").

:class:`TflmWorker` starts ``python -m edgekit.model.tflm_worker`` once (edgekit.childproc) and keeps
one TFLM interpreter alive in it, answering load / invoke / profile requests. Every model is first run
through the LiteRT flatbuffer verifier (loaded from bytes) in the same child, and only then handed to
TFLM, which does not verify. A crash (NativeCrash), a hang (NativeTimeout) or a refusal (RuntimeFailed)
becomes an EdgekitError in the parent; the next request starts a fresh child.

Invoke time is measured in the child with ``time.perf_counter_ns()`` around ``invoke()`` alone.
Arena use comes from TFLM's recording allocator ("Arena allocation total N").
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import time

from edgekit.childproc import ChildProcess, serve

_ARENA_RE = re.compile(r"Arena allocation total (\d+)")


# ---------------------------------------------------------------------------------------------
# child side (kept free of heavy imports so it starts fast)


class _Child:
    def __init__(self) -> None:
        self.it = None
        self.inputs: list[dict] = []
        self.outputs: list[dict] = []
        self.arena_used = 0

    @staticmethod
    def _io_details(d: dict) -> dict:
        import numpy as np

        dtype = np.dtype(d["dtype"])
        shape = tuple(int(v) for v in d["shape"])
        n = int(np.prod(shape)) if shape else 1
        q = d.get("quantization_parameters", {}) or {}
        scales = [float(v) for v in q.get("scales", [])]
        zps = [int(v) for v in q.get("zero_points", [])]
        if not scales and d.get("quantization"):
            s, z = d["quantization"]
            if s:
                scales, zps = [float(s)], [int(z)]
        return {"shape": shape, "dtype": dtype.str, "nbytes": n * dtype.itemsize,
                "scales": scales, "zero_points": zps}

    def load(self, req: dict) -> dict:
        model = req["model"]
        self.it = None
        # 1. the LiteRT verifier (from bytes) must accept the model before TFLM sees it
        try:
            from ai_edge_litert.interpreter import Interpreter as LiteRT
        except ImportError:
            LiteRT = None  # noqa: N806 - without LiteRT we cannot verify: refuse below
        if LiteRT is None:
            return {"error": "ai-edge-litert is not installed; models cannot be verified",
                    "kind": "missing"}
        try:
            lite = LiteRT(model_content=bytes(model))
            n_in, n_out = len(lite.get_input_details()), len(lite.get_output_details())
        except Exception as e:  # noqa: BLE001 - see below
            text = " ".join(str(e).split())
            if "not a valid Flatbuffer" in text or not isinstance(e, (ValueError, RuntimeError)):
                return {"error": f"model rejected by the flatbuffer verifier: {text}", "kind": "invalid"}
            # The verifier accepted the flatbuffer; LiteRT's interpreter refused it on semantic
            # grounds (LUT-compressed DECODE ops, TFLM-era per-channel axes). TFLM may run it.
            from ai_edge_litert import schema_py_generated as schema

            sg = schema.Model.GetRootAs(bytearray(model), 0).Subgraphs(0)
            n_in, n_out = sg.InputsLength(), sg.OutputsLength()
        in_list, out_list = range(n_in), range(n_out)
        from tflite_micro.python.tflite_micro import runtime

        try:
            it = runtime.Interpreter.from_bytes(
                bytes(model), arena_size=int(req["arena_bytes"]),
                intrepreter_config=runtime.InterpreterConfig.kAllocationRecording)
            self.inputs = [self._io_details(it.get_input_details(i)) for i in range(len(in_list))]
            self.outputs = [self._io_details(it.get_output_details(j)) for j in range(len(out_list))]
        except Exception as e:  # noqa: BLE001
            return {"error": f"refused the model: {e}", "kind": "invalid"}
        self.it = it
        self._zero_inputs()
        # one invoke so lazily allocated scratch buffers are counted, then read the arena report
        try:
            it.invoke()
        except Exception as e:  # noqa: BLE001
            self.it = None
            return {"error": f"failed to invoke the model: {e}", "kind": "invalid"}
        self.arena_used = self._arena_used()
        return {"inputs": self.inputs, "outputs": self.outputs, "arena_used": self.arena_used}

    def _arena_used(self) -> int:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as f:
            os.dup2(f.fileno(), 2)
            try:
                self.it.print_allocations()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            f.seek(0)
            text = f.read().decode("utf-8", "replace")
        m = _ARENA_RE.search(text)
        return int(m.group(1)) if m else 0

    def _zero_inputs(self) -> None:
        self._set_inputs(bytes(sum(d["nbytes"] for d in self.inputs)))

    def _set_inputs(self, data: bytes) -> None:
        import numpy as np

        off = 0
        for i, d in enumerate(self.inputs):
            arr = np.frombuffer(data, dtype=np.dtype(d["dtype"]), count=d["nbytes"] // np.dtype(d["dtype"]).itemsize,
                                offset=off).reshape(d["shape"])
            self.it.set_input(arr, i)
            off += d["nbytes"]

    def _outputs(self) -> bytes:
        import numpy as np

        return b"".join(np.ascontiguousarray(self.it.get_output(j)).tobytes()
                        for j in range(len(self.outputs)))

    def invoke(self, req: dict) -> dict:
        if self.it is None:
            return {"error": "no model loaded", "kind": "no_model"}
        data = req.get("input")
        if data is not None:
            self._set_inputs(data)
        t0 = time.perf_counter_ns()
        self.it.invoke()
        t1 = time.perf_counter_ns()
        return {"time_ns": t1 - t0, "output": self._outputs()}

    def profile(self, req: dict) -> dict:
        if self.it is None:
            return {"error": "no model loaded", "kind": "no_model"}
        if req.get("input") is not None:
            self._set_inputs(req["input"])
        it = self.it
        clock = time.perf_counter_ns
        for _ in range(int(req["warmup"])):
            it.invoke()
        times = []
        for _ in range(int(req["runs"])):
            t0 = clock()
            it.invoke()
            times.append(clock() - t0)
        return {"times_ns": times, "arena_used": self.arena_used}


def _child_main() -> None:
    child = _Child()
    serve(lambda request: getattr(child, request["op"])(request))


# ---------------------------------------------------------------------------------------------
# parent side


class TflmWorker(ChildProcess):
    """One child process holding one TFLM interpreter; one request at a time."""

    def __init__(self) -> None:
        from edgekit.model.tflm_host import CHILD

        super().__init__("edgekit.model.tflm_worker", **CHILD)

    def load(self, model: bytes, arena_bytes: int, timeout_s: float = 60.0) -> dict:
        return self.request({"op": "load", "model": bytes(model), "arena_bytes": int(arena_bytes)}, timeout_s)

    def invoke(self, input_bytes: bytes | None, timeout_s: float = 60.0) -> dict:
        return self.request({"op": "invoke", "input": input_bytes}, timeout_s)

    def profile(self, warmup: int, runs: int, input_bytes: bytes | None = None,
                timeout_s: float = 600.0) -> dict:
        return self.request({"op": "profile", "warmup": warmup, "runs": runs, "input": input_bytes}, timeout_s)


if __name__ == "__main__":
    _child_main()
