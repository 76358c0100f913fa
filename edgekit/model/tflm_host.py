"""The host TFLM runtime (tflite-micro's Python interpreter), always in a child process.

TFLM does not verify models, so a bad flatbuffer can crash the process that runs it. Every call here
sends one request to a fresh ``python -m edgekit.model._tflm_child`` (edgekit.childproc); a crash
(NativeCrash), a hang (NativeTimeout, after the bound below) or an error (RuntimeFailed) becomes an
EdgekitError in the parent. Callers must still pass only bytes that the LiteRT verifier accepted
(edgekit.model.load).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgekit.childproc import run_once
from edgekit.errors import NativeCrash, NativeTimeout

# Timeouts scale with the model instead of being fixed, so that a child spinning on a malformed model
# is stopped within seconds while a real model on a slow CI machine never meets its bound. Measured
# on a 2-core CI machine: child start 0.3 s, interpreter build 7 ms, int8 reference kernels
# 90-400 MMAC/s; the floors below are 10-40x slower than that.
CHILD_START_S = 10.0            # Python + numpy + tflite-micro import
BUILD_S = 0.1                   # one interpreter build + allocation, plus a term per model byte
BUILD_BYTES_PER_S = 5e6
INVOKE_S = 0.01                 # one invoke, plus a term per multiply-accumulate
HOST_MACS_PER_S = 10e6
ARENA_SEARCH_PROBES = 64        # builds + invokes of one arena search (22 measured on tiny models)
MAX_TIMEOUT_S = 600.0
DEFAULT_TIMEOUT_S = MAX_TIMEOUT_S   # for a request whose model is not known


def model_macs(model: bytes) -> int:
    """Multiply-accumulates of one invoke (all subgraphs); 64 per model byte if the graph is unreadable.
    Only for bytes the flatbuffer verifier accepted (like everything here)."""
    from edgekit.model.graph import parse
    from edgekit.model.load import VerifiedModel
    from edgekit.model.macs import op_macs

    try:
        graph = parse(VerifiedModel(data=bytes(model), source="<bytes>", sha256=""))
        return int(sum(op_macs(sg, op) for sg in graph.subgraphs for op in sg.operators))
    except Exception:  # noqa: BLE001 - a bound is still needed for a model we cannot read
        return 64 * len(model)


def child_timeout_s(model: bytes, *, builds: int = 1, invokes: int = 1, macs: int | None = None) -> float:
    """How long a host TFLM child may take to build ``model`` ``builds`` times and invoke it ``invokes``
    times: a start-up allowance plus terms from the model's bytes and MACs, at most MAX_TIMEOUT_S."""
    if macs is None:
        macs = model_macs(model)
    bound = (CHILD_START_S + builds * (BUILD_S + len(model) / BUILD_BYTES_PER_S)
             + invokes * (INVOKE_S + max(int(macs), 0) / HOST_MACS_PER_S))
    return min(bound, MAX_TIMEOUT_S)


CHILD = {"name": "TFLM", "crash_hint": "the model is malformed or uses features TFLM does not support",
         "timeout_hint": "the model may be malformed or far too large for a microcontroller"}


def call_child(request: dict[str, Any], timeout_s: float | None = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Run one request in a fresh child; return its reply dict (with 'stderr' text added). The child
    is killed when it has not answered within ``timeout_s`` (see child_timeout_s)."""
    if timeout_s is None:
        timeout_s = child_timeout_s(request["model"]) if "model" in request else DEFAULT_TIMEOUT_S
    reply, stderr = run_once("edgekit.model._tflm_child", request, timeout_s, **CHILD)
    reply["stderr"] = stderr
    return reply


def invoke(model: bytes, inputs: Sequence[np.ndarray] | np.ndarray, *, arena_bytes: int | None = None,
           alt_decompression_bytes: int = 0, timeout_s: float | None = None) -> dict[str, Any]:
    """Run a batch of samples through TFLM, one invoke per sample.

    ``inputs``: array of shape (N, *input_shape) already in the model's input dtype (quantize first),
    or a list of such arrays, one per model input. Returns {'outputs': [array (N, *out_shape), ...],
    'input_details': [...], 'output_details': [...], 'arena_total_bytes': int | None}.
    ``timeout_s``: default child_timeout_s for one build and N invokes.
    """
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if timeout_s is None:
        timeout_s = child_timeout_s(model, invokes=max(len(inputs[0]) if inputs else 0, 1))
    request = {
        "op": "invoke",
        "model": bytes(model),
        "inputs": [np.ascontiguousarray(a) for a in inputs],
        "arena_bytes": int(arena_bytes) if arena_bytes else max(64 * 1024, len(model) * 10),
        "alt_decompression_bytes": int(alt_decompression_bytes),
    }
    return call_child(request, timeout_s=timeout_s)


# --- arena measurement --------------------------------------------------------------------------

ARENA_START_BYTES = 1 << 20
ARENA_MAX_BYTES = 256 << 20
_MAX_CRASH_RESTARTS = 24


def _probe_log(stderr: str) -> tuple[dict[int, bool], int | None]:
    """Parse the child's @@probe/@@result lines: {size: ran?} and the size in flight at a crash."""
    results: dict[int, bool] = {}
    in_flight = None
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "@@probe":
            in_flight = int(parts[1])
        elif len(parts) >= 4 and parts[0] == "@@result":
            results[int(parts[1])] = parts[3] == "ok"
            in_flight = None
    return results, in_flight


def _recorded_total(stderr: str) -> int | None:
    import re

    found = re.findall(r"Arena allocation total (\d+) bytes", stderr)
    return int(found[-1]) if found else None


def try_arena(model: bytes, arena_bytes: int, *, alt_decompression_bytes: int = 0,
              timeout_s: float | None = None) -> bool:
    """True when the model allocates and runs one invoke in exactly ``arena_bytes`` on host TFLM.

    A native crash on a too-small arena counts as "does not fit" (some TFLM kernels crash instead of
    failing cleanly when Prepare could not get its buffers).
    """
    if timeout_s is None:
        timeout_s = child_timeout_s(model)
    try:
        reply = call_child({"op": "probe", "model": bytes(model), "arena_bytes": int(arena_bytes),
                            "alt_decompression_bytes": int(alt_decompression_bytes)}, timeout_s)
    except NativeTimeout:
        raise                                   # a hang is not "too small": the bound was met
    except NativeCrash as e:
        if "@@probe" in e.context.get("stderr", ""):
            return False
        raise
    return bool(reply["ok"])


def measure_arena(model: bytes, *, alt_decompression_bytes: int = 0,
                  timeout_s: float | None = None) -> dict[str, Any]:
    """The exact minimal tensor arena of ``model`` on the host TFLM runtime.

    ``timeout_s`` bounds each child (default: child_timeout_s for ARENA_SEARCH_PROBES builds and
    invokes; seconds for a small model).

    Returns {'arena_bytes': int, 'recorded_bytes': int | None, 'crash_restarts': int}:
    arena_bytes is the smallest size in which the model allocates and runs (16 bytes less fails);
    recorded_bytes is what TFLM's RecordingMicroAllocator reported for a generous arena. A crash
    while probing a size marks that size as failing and the search goes on in a fresh child.
    Only pass bytes that edgekit.model.load verified.
    """
    from edgekit.errors import ModelTooLarge

    if timeout_s is None:
        timeout_s = child_timeout_s(model, builds=ARENA_SEARCH_PROBES, invokes=ARENA_SEARCH_PROBES)
    lo, hi = 0, 0
    recorded = None
    restarts = 0
    crashed: set[int] = set()      # sizes at which TFLM crashed: they count as "does not run"
    while True:
        request = {"op": "arena", "model": bytes(model), "lo": lo, "hi": hi,
                   "start_bytes": ARENA_START_BYTES, "max_bytes": ARENA_MAX_BYTES,
                   "record": recorded is None and hi == 0,
                   "alt_decompression_bytes": int(alt_decompression_bytes), "known_fail": sorted(crashed)}
        try:
            reply = call_child(request, timeout_s=timeout_s)
        except NativeTimeout:
            raise                               # a hang is not a crash at one size: do not retry
        except NativeCrash as e:
            stderr = e.context.get("stderr", "")
            results, in_flight = _probe_log(stderr)
            if in_flight is None or restarts >= _MAX_CRASH_RESTARTS:
                raise
            recorded = recorded or _recorded_total(stderr)
            results[in_flight] = False
            crashed.add(in_flight)
            restarts += 1
            oks = [n for n, ran in results.items() if ran]
            if oks:
                hi = min(oks) if not hi else min(hi, *oks)
            fails = [n for n, ran in results.items() if not ran and (not hi or n < hi)]
            if fails:
                lo = max(lo, *fails)
            if not hi:
                # Crashed before any size ran: the starting size itself is unusable.
                raise NativeCrash("the TFLM host runtime crashed while allocating this model",
                                  hint="the model is malformed or uses features TFLM does not support",
                                  stderr=stderr) from e
            continue
        if reply.get("too_large"):
            raise ModelTooLarge(f"the model needs a tensor arena above {ARENA_MAX_BYTES >> 20} MiB on TFLM",
                                hint="this is not a microcontroller-sized model")
        recorded = recorded or _recorded_total(reply.get("stderr", ""))
        return {"arena_bytes": int(reply["arena_bytes"]), "recorded_bytes": recorded,
                "crash_restarts": restarts}
