"""Why host TFLM could not allocate a model, read from what its child printed.

TFLM reports an allocation failure as one ``RuntimeError: TFLM failed to allocate tensors``; the cause
is in the lines it printed on stderr before: an arena that is too small ("Failed to resize buffer.
Requested: N, available M, missing: K") or a kernel that refused the model in Prepare ("... input->type
!= output->type (INT8 != INT16)" then "Node FULLY_CONNECTED (number 0) failed to prepare with status
1"). :func:`allocation_failure` tells the two apart; :func:`invoke` is ``tflm_host.invoke`` that
retries a too-small arena with the measured one and turns a refusal into an
:class:`~edgekit.errors.UnsupportedModelError` with the kernel's reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConversionError, EdgekitError, UnsupportedModelError

ALLOCATE_FAILED = "failed to allocate tensors"
# What the arena lacked: TFLM's SingleArenaBufferAllocator and MicroAllocator messages
_ARENA_SHORT = re.compile(r"^Failed to (?:resize buffer|allocate)\b")
_PREPARE = re.compile(r"Node (\S+) \(number (\d+)\) failed to (prepare|init|invoke) with status (\d+)")
_SOURCE = re.compile(r"^(?:\S+/)?([A-Za-z0-9_]+\.(?:cc|h|cpp)):(\d+)\s+(.*)$")
_NOISE = ("@@", "Arena allocation", "[RecordingMicroAllocator]")
# Extra bytes over the measured minimum when invoke retries with it (32-bit kernels' slack)
ARENA_RETRY_SLACK_BYTES = 4096


@dataclass
class AllocationFailure:
    kind: str          # "arena": the arena was too small; "prepare": a kernel refused the model; "other"
    reason: str        # one line, from TFLM's own messages

    def error(self, what: str = "host TFLM cannot allocate this model's tensors") -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{what}: {self.reason}",
            hint="the model is malformed or uses a form TFLM's kernels refuse; `edgekit inspect MODEL` shows "
                 "its ops and tensors", allocation=self.kind)


def _messages(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines()
            if line.strip() and not line.strip().startswith(_NOISE)]


def allocation_failure(stderr: str, message: str = ALLOCATE_FAILED) -> AllocationFailure | None:
    """The cause of a TFLM allocation failure (None when ``message`` is not one)."""
    if ALLOCATE_FAILED not in message.lower():
        return None
    lines = _messages(stderr)
    for line in reversed(lines):
        m = _ARENA_SHORT.search(line)
        if m:
            return AllocationFailure("arena", f"the arena is too small ({line.rstrip('.')})")
    for k in range(len(lines) - 1, -1, -1):
        m = _PREPARE.search(lines[k])
        if m:
            op, node, stage = m.group(1), m.group(2), m.group(3)
            detail = ""
            if k > 0 and not _PREPARE.search(lines[k - 1]):
                src = _SOURCE.match(lines[k - 1])
                detail = f": {src.group(3)} ({src.group(1)}:{src.group(2)})" if src else f": {lines[k - 1]}"
            return AllocationFailure("prepare", f"{op} (node {node}) failed to {stage}{detail}")
    tail = lines[-1] if lines else "TFLM printed no reason"
    return AllocationFailure("other", tail[:240])


def invoke(model: bytes, inputs: Sequence[np.ndarray] | np.ndarray, *, arena_bytes: int | None = None,
           **kwargs) -> dict[str, Any]:
    """:func:`edgekit.model.tflm_host.invoke`, with allocation failures made clear.

    Without ``arena_bytes`` tflm_host guesses an arena from the model size; when that guess is too
    small the exact arena is measured (``tflm_host.measure_arena``) and the invoke runs again in it.
    A kernel that refuses the model (or an arena above the measuring ceiling) raises
    :class:`~edgekit.errors.UnsupportedModelError` "host TFLM cannot allocate this model's tensors: ...".
    """
    from edgekit.model import tflm_host

    try:
        return tflm_host.invoke(model, inputs, arena_bytes=arena_bytes, **kwargs)
    except ConversionError as e:
        failure = allocation_failure(str(e.context.get("stderr", "")), e.message)
        if failure is None:
            raise
        if failure.kind != "arena" or arena_bytes is not None:
            raise failure.error() from e
        first = e
    try:
        measured = int(tflm_host.measure_arena(model, alt_decompression_bytes=int(
            kwargs.get("alt_decompression_bytes", 0)))["arena_bytes"])
    except EdgekitError as e:
        raise UnsupportedModelError(f"host TFLM cannot allocate this model's tensors: {e.message}",
                                    hint=e.hint) from first
    try:
        return tflm_host.invoke(model, inputs, arena_bytes=measured + ARENA_RETRY_SLACK_BYTES, **kwargs)
    except ConversionError as e:
        failure = allocation_failure(str(e.context.get("stderr", "")), e.message)
        if failure is None:
            raise
        raise failure.error() from e
