"""The fault campaign (tests/faultcampaign.py) in CI: every fault kind over upload, repeated invokes and
profile through the fault relay. Never a silent corruption (a wrong model or wrong outputs reported as
success), nothing past HANG_S, and at 1e-3 faults per byte every operation succeeds.
bench/bench_faults.py runs more seeds and prints the table."""
from __future__ import annotations

import pytest

import faultcampaign as fc
from conformance.linkkit import digits_model, model_cache_dir, tiny_model  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def reference():
    return {}


@pytest.mark.parametrize("kind", fc.BYTE_KINDS)
def test_at_1e3_per_byte_everything_succeeds(kind, tiny_model, reference):
    for op in fc.OPS:
        row = fc.run_case(kind, 1e-3, op, 1, tiny_model, 64, reference)
        assert row.outcome == "ok", (kind, op, row.error)
        assert row.seconds < fc.HANG_S


@pytest.mark.parametrize("kind", ("mixed",))      # flips, drops and garbage at once; bench_faults runs each alone
def test_at_1e2_per_byte_success_or_one_clean_error_in_bounded_time(kind, tiny_model, reference):
    for op in fc.OPS:
        row = fc.run_case(kind, 1e-2, op, 1, tiny_model, 64, reference)
        assert row.outcome in ("ok", "error"), (kind, op)        # never "silent"
        assert row.seconds < fc.HANG_S, (kind, op, row.seconds)


@pytest.mark.parametrize("kind", fc.EVENT_KINDS)
def test_silence_and_unplug_are_clean_errors_within_10_s(kind, tiny_model, reference):
    for op in fc.OPS:
        row = fc.run_case(kind, None, op, 1, tiny_model, 64, reference)
        assert row.outcome == "error", (kind, op)
        assert row.seconds < 10.0, (kind, op, row.seconds)


def test_the_table_counts_every_run():
    rows = [fc.Row("flip", 1e-3, "upload", 1, "ok", 1.0), fc.Row("flip", 1e-3, "upload", 2, "error", 3.5, "x")]
    line = fc.table(rows)[1].split()
    assert line[:7] == ["flip", "0.001", "upload", "2", "1", "1", "0"] and line[-1] == "3.50"
