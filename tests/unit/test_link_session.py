"""Session rules that need no device: timeouts, sequence numbers, bounded retries, statistics."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgekit.errors import NoAnswer
from edgekit.link import frames as fr
from edgekit.link.frames import MsgType
from edgekit.link.session import BASE_TIMEOUT_S, RETRIES, DeviceSession
from edgekit.profiling import latency_stats, roofline


def test_timeout_grows_with_payload_and_slow_links():
    with DeviceSession.open("loop://", 115200) as s:
        small = s.timeout_for(0, 64)
        big = s.timeout_for(4096, 64)
        assert small >= BASE_TIMEOUT_S
        assert big - small == pytest.approx(4 * (fr.wire_len(4096) - fr.wire_len(0)) / 11520)
    with DeviceSession.open("loop://", 9600) as slow:      # never assumes less than 115200 baud
        assert slow.timeout_for(4096, 64) == pytest.approx(big)
    with DeviceSession.open("loop://", 921600) as fast:
        assert fast.timeout_for(4096, 64) < big


def test_sequence_wraps_and_skips_zero():
    with DeviceSession.open("loop://") as s:
        s._seq = 65534
        assert [s._next_seq() for _ in range(3)] == [65535, 1, 2]


def test_own_echo_is_not_a_reply_and_retries_are_bounded():
    # loop:// echoes every request back: same seq, but a request type, so never taken as the reply
    with DeviceSession.open("loop://", 921600) as s:
        t0 = time.monotonic()
        with pytest.raises(NoAnswer, match=f"after {RETRIES + 1} tries"):
            s.request(MsgType.HELLO_REQ, reply_types=(MsgType.HELLO,))
        elapsed = time.monotonic() - t0
        bound = (RETRIES + 1) * s.timeout_for(0, 64)
        assert bound * 0.9 <= elapsed <= bound + 0.5
        assert s.stats.resends == RETRIES
        assert s.stats.replies_ignored == RETRIES + 1


def test_latency_stats_known_values():
    x = np.arange(1, 11, dtype=float)                     # 1..10
    st = latency_stats(x)
    assert st["mean"] == 5.5 and st["median"] == 5.5 and st["min"] == 1 and st["max"] == 10
    assert st["std"] == pytest.approx(3.02765, rel=1e-5)
    assert st["p90"] == pytest.approx(9.1) and st["p99"] == pytest.approx(9.91)
    # bootstrap intervals: around the statistic, about as wide as the t-interval for symmetric data
    half = 2.262 * 3.02765 / np.sqrt(10)                  # Student t, 9 degrees of freedom
    assert st["ci95_low"] < 5.5 < st["ci95_high"] and st["median_ci95_low"] < 5.5 < st["median_ci95_high"]
    assert 0.6 * 2 * half < st["ci95_high"] - st["ci95_low"] < 1.2 * 2 * half
    assert "bootstrap" in st["ci_method"]
    assert latency_stats(x) == st                         # a fixed seed: the same interval every time


def test_latency_intervals_never_go_below_zero_on_skewed_samples():
    # a few slow outliers among fast runs (the profile that gave "-427.0 us - 9.321 ms" before)
    x = np.r_[np.full(199, 450.0), 200_000.0]
    st = latency_stats(x)
    mean, std = float(x.mean()), float(x.std(ddof=1))
    assert mean - 1.96 * std / np.sqrt(x.size) < 0           # what a t-interval of the mean said here
    assert st["ci95_low"] >= x.min() > 0 and st["ci95_high"] <= x.max()
    assert st["median_ci95_low"] == st["median_ci95_high"] == 450.0
    assert latency_stats([7.0])["ci95_low"] == latency_stats([7.0])["ci95_high"] == 7.0


def test_t_interval_from_aggregates_is_clamped():
    from edgekit.profiling import t_interval

    low, high, method = t_interval(100.0, 900.0, 10, floor=40.0)
    assert low == 40.0 and high == pytest.approx(100 + 2.262 * 900 / np.sqrt(10), rel=1e-4)
    assert "clamped" in method
    assert t_interval(100.0, None, 10)[:2] == (None, None)


def test_energy_uses_the_median_and_names_it():
    from edgekit.boards import load_board
    from edgekit.profiling import energy_estimate

    b = load_board("nano33ble")
    st = latency_stats(np.r_[np.full(95, 1000.0), np.full(5, 50_000.0)])
    e = energy_estimate(b, st)
    assert e["latency_statistic"] == "median"
    assert e["per_inference_uj"] == pytest.approx(b.active_power_mw * 1000.0 / 1000)
    no_median = {**st, "median": None}
    assert energy_estimate(b, no_median)["latency_statistic"] == "mean"


def test_roofline_numbers():
    r = roofline(64_000_000, 2_000_000.0, 64_000_000, 2)  # 64 M MACs in 2 s at 64 MHz
    assert r["compute_bound_us"] == pytest.approx(500_000)
    assert r["achieved_macs_per_cycle"] == pytest.approx(0.5)
    assert r["utilization"] == pytest.approx(0.25)
    assert roofline(None, 10.0, 1, 1)["compute_bound_us"] is None
