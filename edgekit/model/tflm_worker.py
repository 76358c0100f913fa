"""A long-lived host TFLM interpreter in a child process (the virtual board's "MCU").

:class:`TflmWorker` starts ``python -m edgekit.model.tflm_worker`` once and keeps one TFLM interpreter
alive in it, answering load / invoke / profile requests over a pipe (length-prefixed pickles). Every
model is first run through the LiteRT flatbuffer verifier (loaded from bytes) in the same child, and
only then handed to TFLM, which does not verify. A crash or hang of the child becomes an EdgekitError
in the parent; the next request starts a fresh child.

Invoke time is measured in the child with ``time.perf_counter_ns()`` around ``invoke()`` alone.
Arena use comes from TFLM's recording allocator ("Arena allocation total N").
"""
from __future__ import annotations

import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

_LEN = struct.Struct("<I")
_ARENA_RE = re.compile(r"Arena allocation total (\d+)")


# ---------------------------------------------------------------------------------------------
# child side (kept free of edgekit imports so it starts fast)


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
            return {"error": f"TFLM refused the model: {e}", "kind": "invalid"}
        self.it = it
        self._zero_inputs()
        # one invoke so lazily allocated scratch buffers are counted, then read the arena report
        try:
            it.invoke()
        except Exception as e:  # noqa: BLE001
            self.it = None
            return {"error": f"TFLM failed to invoke the model: {e}", "kind": "invalid"}
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
    reply_fd = os.dup(1)
    os.dup2(2, 1)                       # native prints must not reach the reply channel
    out = os.fdopen(reply_fd, "wb")
    inp = sys.stdin.buffer
    child = _Child()
    while True:
        head = inp.read(_LEN.size)
        if len(head) < _LEN.size:
            return
        req = pickle.loads(inp.read(_LEN.unpack(head)[0]))
        op = req.get("op")
        if op == "quit":
            return
        try:
            reply = getattr(child, op)(req)
        except ImportError as e:
            reply = {"error": f"tflite-micro is not importable: {e}", "kind": "missing"}
        except Exception as e:  # noqa: BLE001 - reported to the parent
            reply = {"error": f"{type(e).__name__}: {e}", "kind": "failed"}
        blob = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_LEN.pack(len(blob)) + blob)
        out.flush()


# ---------------------------------------------------------------------------------------------
# parent side


class WorkerError(Exception):
    """A request the worker answered with an error; ``kind`` is missing | invalid | no_model | failed."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class TflmWorker:
    """One child process holding one TFLM interpreter. Not thread-safe: one caller at a time."""

    def __init__(self, start_timeout_s: float = 60.0):
        self._proc: subprocess.Popen | None = None
        self.start_timeout_s = start_timeout_s

    def _ensure(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ)
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edgekit.model.tflm_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=env,
                stderr=None if os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0") else subprocess.DEVNULL)
        return self._proc

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        from edgekit.errors import NativeCrash, RuntimeMissing

        proc = self._ensure()
        blob = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_LEN.pack(len(blob)) + blob)
            proc.stdin.flush()
            reply = pickle.loads(self._read_exact(proc, None, timeout_s))
        except TimeoutError as e:               # before OSError, of which TimeoutError is a subclass
            self.close()
            raise NativeCrash(f"the TFLM worker did not answer '{request.get('op')}' within "
                              f"{timeout_s:.0f} s; it was stopped",
                              hint="the model may be malformed (a kernel that never finishes)") from e
        except (BrokenPipeError, EOFError, OSError, pickle.UnpicklingError) as e:
            code = proc.poll()
            self.close()
            how = f"crashed ({signal.Signals(-code).name})" if code is not None and code < 0 else "died"
            raise NativeCrash(f"the TFLM worker {how} during '{request.get('op')}'",
                              hint="the model is malformed or uses features TFLM does not support") from e
        if reply.get("error"):
            if reply.get("kind") == "missing":
                raise RuntimeMissing(reply["error"], hint="pip install 'edgekit[runtime]'")
            raise WorkerError(reply["error"], reply.get("kind", "failed"))
        return reply

    @staticmethod
    def _read_exact(proc: subprocess.Popen, n: int | None, timeout_s: float) -> bytes:
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        buf = bytearray()
        want = _LEN.size
        header_done = False
        while True:
            while len(buf) < want:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                ready, _, _ = select.select([fd], [], [], remaining)
                if not ready:
                    continue
                chunk = os.read(fd, max(want - len(buf), 65536) if header_done else want - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            if header_done:
                return bytes(buf[_LEN.size:])
            want = _LEN.size + _LEN.unpack_from(buf)[0]
            header_done = True

    def load(self, model: bytes, arena_bytes: int, timeout_s: float = 60.0) -> dict:
        return self.call({"op": "load", "model": bytes(model), "arena_bytes": int(arena_bytes)},
                         timeout_s)

    def invoke(self, input_bytes: bytes | None, timeout_s: float = 60.0) -> dict:
        return self.call({"op": "invoke", "input": input_bytes}, timeout_s)

    def profile(self, warmup: int, runs: int, input_bytes: bytes | None = None,
                timeout_s: float = 600.0) -> dict:
        return self.call({"op": "profile", "warmup": warmup, "runs": runs, "input": input_bytes},
                         timeout_s)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                try:
                    blob = pickle.dumps({"op": "quit"})
                    proc.stdin.write(_LEN.pack(len(blob)) + blob)
                    proc.stdin.flush()
                except OSError:
                    pass
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        finally:
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass

    def __enter__(self) -> "TflmWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    _child_main()
