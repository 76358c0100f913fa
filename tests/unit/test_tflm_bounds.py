"""Host TFLM children are stopped by a bound that scales with the model: seconds for a small model."""
from __future__ import annotations

import time

import pytest

from edgekit.errors import NativeTimeout
from edgekit.model import tflm_host
from edgekit.model.tflm_host import ARENA_SEARCH_PROBES, MAX_TIMEOUT_S, child_timeout_s, model_macs


def test_bound_is_seconds_for_small_models_and_grows_with_the_model(tiny_models):
    small = tiny_models["int8_cnn"]
    assert model_macs(small) > 0
    one = child_timeout_s(small)
    search = child_timeout_s(small, builds=ARENA_SEARCH_PROBES, invokes=ARENA_SEARCH_PROBES)
    assert 5 <= one < 15 and one < search < 30
    # more MACs, more bytes, more invokes: a longer bound, never above the cap
    assert child_timeout_s(small, macs=10**9) > child_timeout_s(small, macs=10**7) > one
    assert child_timeout_s(small * 100, macs=model_macs(small)) > one
    assert child_timeout_s(small, invokes=1000) > one
    assert child_timeout_s(small, macs=10**15) == MAX_TIMEOUT_S


def test_bound_covers_real_models_many_times(tiny_models):
    """The bound is far above what the arena search really takes (no real model may meet it)."""
    data = tiny_models["digits_cnn"]
    t0 = time.monotonic()
    tflm_host.measure_arena(data)
    took = time.monotonic() - t0
    assert took * 5 < child_timeout_s(data, builds=ARENA_SEARCH_PROBES, invokes=ARENA_SEARCH_PROBES)


def test_a_child_that_does_not_answer_in_time_is_stopped(tiny_models):
    t0 = time.monotonic()
    with pytest.raises(NativeTimeout, match="did not answer 'probe' within 0.1 s"):
        tflm_host.call_child({"op": "probe", "model": tiny_models["int8_cnn"], "arena_bytes": 1 << 20}, 0.1)
    assert time.monotonic() - t0 < 5


def test_a_spinning_worker_is_killed_within_its_bound(tiny_models):
    """A worker busy far past its bound (here: a profile of 10^9 runs) is stopped and killed."""
    from edgekit.model.tflm_worker import TflmWorker

    worker = TflmWorker()
    try:
        worker.load(tiny_models["int8_cnn"], 64 * 1024, timeout_s=60)
        proc = worker._proc
        t0 = time.monotonic()
        with pytest.raises(NativeTimeout, match="did not answer 'profile' within 1 s"):
            worker.profile(0, 10**9, timeout_s=1.0)
        assert time.monotonic() - t0 < 1.0 + 5          # the bound, plus the kill after a short grace
        assert proc.poll() is not None                  # the spinning child is gone
    finally:
        worker.close()


def test_virtual_board_bounds_scale_with_its_model(tiny_models):
    from edgekit.link.virtual_board import VirtualBoard

    data = tiny_models["int8_cnn"]
    board = VirtualBoard()
    board._model_macs = model_macs(data)
    assert board._worker_bound(data, builds=0) < 15
    assert board._worker_bound(data, builds=0, invokes=200) < 20
    assert VirtualBoard(worker_timeout_s=3.0)._worker_bound(data, builds=0) == 3.0
