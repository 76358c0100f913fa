"""The host TFLM runtime (tflite-micro's Python interpreter), always in a child process.

TFLM does not verify models, so a bad flatbuffer can crash the process that runs it. Every call here
runs ``python -m edgekit.model._tflm_child`` with a pickled request on stdin and reads a pickled
reply on stdout; a crash (signal), a hang (timeout) or an error becomes an EdgekitError in the parent.
Callers must still pass only bytes that the LiteRT verifier accepted (edgekit.model.load).
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConversionError, NativeCrash, RuntimeMissing

DEFAULT_TIMEOUT_S = 300.0


def call_child(request: dict[str, Any], timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Run one request in a fresh child; return its reply dict (with 'stderr' text added)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgekit.model._tflm_child"],
            input=pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL),
            capture_output=True, timeout=timeout_s, env=env,
        )
    except subprocess.TimeoutExpired as e:
        raise NativeCrash(f"the TFLM host runtime did not finish within {timeout_s:.0f} s",
                          hint="the model may be malformed or far too large for a microcontroller") from e
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise NativeCrash(f"the TFLM host runtime crashed ({sig}) on this model",
                          hint="the model is malformed or uses features TFLM does not support",
                          stderr=stderr)
    try:
        reply = pickle.loads(proc.stdout)
    except Exception as e:  # noqa: BLE001 - anything unreadable is a broken child
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        raise NativeCrash(f"the TFLM host runtime failed: {last[0]}", stderr=stderr) from e
    reply["stderr"] = stderr
    if reply.get("error"):
        kind = reply.get("kind")
        if kind == "missing":
            raise RuntimeMissing(reply["error"], hint="pip install tflite-micro")
        raise ConversionError(f"TFLM: {reply['error']}", stderr=stderr)
    return reply


def invoke(model: bytes, inputs: Sequence[np.ndarray] | np.ndarray, *, arena_bytes: int | None = None,
           alt_decompression_bytes: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Run a batch of samples through TFLM, one invoke per sample.

    ``inputs``: array of shape (N, *input_shape) already in the model's input dtype (quantize first),
    or a list of such arrays, one per model input. Returns {'outputs': [array (N, *out_shape), ...],
    'input_details': [...], 'output_details': [...], 'arena_total_bytes': int | None}.
    """
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    request = {
        "op": "invoke",
        "model": bytes(model),
        "inputs": [np.ascontiguousarray(a) for a in inputs],
        "arena_bytes": int(arena_bytes) if arena_bytes else max(64 * 1024, len(model) * 10),
        "alt_decompression_bytes": int(alt_decompression_bytes),
    }
    return call_child(request, timeout_s=timeout_s)
