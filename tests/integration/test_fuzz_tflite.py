"""Damaged models through the public Python API, in the pytest process itself.

If any path handed a bad flatbuffer to native code without verification, a segfault here would kill
pytest: passing proves the safety. Every case must end in an EdgekitError (one line, with a hint for
the reader) or a result; nothing else escapes, and nothing hangs (each TFLM child has a timeout).
"""
from __future__ import annotations

import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinymodels  # noqa: E402

import edgekit  # noqa: E402
from edgekit.errors import EdgekitError, ModelFormatError, NativeCrash  # noqa: E402

MUTATED_CASES = 300


@pytest.fixture(scope="module")
def model() -> bytes:
    return tinymodels.int8_cnn()


def _inspect_outcome(data: bytes, measure_arena: bool = True) -> str:
    try:
        r = edgekit.inspect(data, measure_arena_bytes=measure_arena, timeout_s=30)
    except EdgekitError as e:
        assert e.message and "\n" not in e.message
        return type(e).__name__
    assert r.model_bytes == len(data)
    if not measure_arena:
        return "result"
    return "result" if r.arena.error is None else "result-without-arena"


def test_every_truncation_is_a_clear_error(model):
    lengths = list(range(0, 65)) + [len(model) // 2, len(model) - 1]
    for n in lengths:
        with pytest.raises(ModelFormatError):
            edgekit.inspect(model[:n], measure_arena_bytes=False)


INT32_EDGES = (0, 1, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(model: bytes, rng: np.random.Generator) -> bytes:
    """Half the time flip 1-8 random bytes; otherwise overwrite 1-3 aligned 32-bit words (offsets,
    lengths, indices in a flatbuffer) with boundary values."""
    data = bytearray(model)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    else:
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(data) // 4)) * 4
            data[pos:pos + 4] = struct.pack("<I", INT32_EDGES[int(rng.integers(0, len(INT32_EDGES)))])
    return bytes(data)


@pytest.mark.slow
def test_randomly_mutated_models_never_crash_or_hang(model):
    rng = np.random.default_rng(20261126)
    outcomes: Counter[str] = Counter()
    for case in range(MUTATED_CASES):
        # The TFLM arena search (a child per model) runs on every other case to keep the test short.
        outcomes[_inspect_outcome(mutate(model, rng), measure_arena=case % 2 == 0)] += 1
    assert sum(outcomes.values()) == MUTATED_CASES
    # Most damage is caught by the verifier; some mutations (weights, names) leave a valid model.
    assert outcomes["ModelFormatError"] > MUTATED_CASES // 3
    assert outcomes["result"] > 0
    print(dict(outcomes))


# Found by the boundary-value fuzzing above (seed 3, case 425, on tinymodels.int8_cnn): LiteRT's
# Interpreter(model_content=...) dies with SIGSEGV on these four bytes changed. Run in-process, this
# would kill pytest; edgekit runs LiteRT in a child and must report a NativeCrash instead.
KNOWN_LITERT_CRASH = {20: (20, 0), 22: (16, 0), 1692: (14, 0), 1695: (0, 0x80)}


def test_known_litert_crasher_is_contained(model):
    if len(model) != 3376 or any(model[i] != old for i, (old, _) in KNOWN_LITERT_CRASH.items()):
        pytest.skip("LAYOUT CHANGED: tinymodels.int8_cnn no longer has the byte layout the LiteRT "
                    "crash was found on (new TensorFlow?); the random fuzzing still runs")
    data = bytearray(model)
    for i, (_, new) in KNOWN_LITERT_CRASH.items():
        data[i] = new
    with pytest.raises(NativeCrash, match="LiteRT crashed"):
        edgekit.inspect(bytes(data))
    # The verifier child is replaced after the crash: the next model is checked as usual.
    assert edgekit.inspect(model, measure_arena_bytes=False).model_bytes == len(model)
    with pytest.raises(ModelFormatError):
        edgekit.inspect(model[: len(model) // 2], measure_arena_bytes=False)


def test_identifier_mutations_are_rejected(model):
    for pos in range(4, 8):
        for value in (0x00, 0xFF, ord("X")):
            data = bytearray(model)
            data[pos] = value
            with pytest.raises(ModelFormatError, match="not a TFLite model"):
                edgekit.inspect(bytes(data), measure_arena_bytes=False)


def test_root_offset_mutations_end_in_verifier_errors(model):
    """A root offset pointing elsewhere (bytes 0..3) must be caught by the verifier, not crash."""
    for value in (0x00, 0x04, 0x7F, 0xFF):
        data = bytearray(model)
        data[0] = value
        data[3] = 0x7F if value == 0xFF else 0
        with pytest.raises(ModelFormatError):
            edgekit.inspect(bytes(data), measure_arena_bytes=False)
