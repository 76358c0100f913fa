"""Fault tolerance of the host link: a fault proxy between the session and the virtual board.

For every case: no model becomes active unless its SHA-256 matched, nothing waits past the stated
bound, an upload resumes where it can, otherwise one clear DeviceError. Outcomes are counted and a
summary table is printed at the end of the module.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from conformance.linkkit import digits_model, model_cache_dir, tiny_model  # noqa: F401
from edgekit.errors import DeviceError, DeviceReset, NoAnswer, PortVanished
from edgekit.link.fault_proxy import FaultProxy, Faults
from edgekit.link.session import RETRIES, DeviceSession
from edgekit.link.virtual_board import BoardFaults, VirtualBoard

pytestmark = pytest.mark.timeout(180)

BAUD = 921600            # what the session assumes for its timeouts (a pty is faster still)
# the first seed runs everywhere; the repeats that make the summary's counts are marked slow
SEEDS = (1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow))
SUMMARY: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request):
    yield
    if not SUMMARY:
        return
    lines = ["", "fault-injection summary (virtual board behind a fault proxy)",
             f"{'case':40} {'runs':>4} {'ok':>3} {'clear error':>11} {'wrong model':>11} "
             f"{'max s':>6} {'resends':>7} {'faults injected':>15}"]
    cases: dict[str, list[dict]] = {}
    for row in SUMMARY:
        cases.setdefault(row["case"], []).append(row)
    for case, rows in cases.items():
        lines.append(f"{case:40} {len(rows):>4} {sum(r['outcome'] == 'ok' for r in rows):>3} "
                     f"{sum(r['outcome'] == 'error' for r in rows):>11} "
                     f"{sum(r['wrong_model'] for r in rows):>11} {max(r['seconds'] for r in rows):>6.2f} "
                     f"{sum(r['resends'] for r in rows):>7} {sum(r['injected'] for r in rows):>15}")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print("\n".join(lines))
    else:
        print("\n".join(lines))


def _injected(proxy: FaultProxy) -> int:
    c = proxy.counts
    return (c.bytes_dropped + c.bits_flipped + c.frames_duplicated + c.frames_cut + c.frames_muted
            + (1 if c.garbage_bytes else 0) + int(c.vanished))


class Rig:
    """Virtual board <- fault proxy <- session; records the outcome of one run."""

    def __init__(self, case: str, faults: Faults, board_faults: BoardFaults | None = None,
                 **board_kw):
        self.case = case
        self.board = VirtualBoard(max_payload=board_kw.pop("max_payload", 1028),
                                  faults=board_faults, **board_kw)
        self.proxy = FaultProxy(self.board.start(), faults)
        self.session = DeviceSession.open(self.proxy.start(), BAUD)
        self.t0 = time.monotonic()

    def bound_s(self, payload: int, reply: int = 64, extra: float = 0.0) -> float:
        """The longest a request may take: every try timing out."""
        return (RETRIES + 1) * self.session.timeout_for(payload, reply, extra)

    def finish(self, outcome: str, uploaded: bytes | None = None) -> dict:
        seconds = time.monotonic() - self.t0
        wrong = False
        if self.board.model is not None:
            # the only models allowed to be active are ones whose hash matched their bytes
            wrong = hashlib.sha256(self.board.model).digest() != self.board.model_sha
            if uploaded is not None and outcome == "ok":
                wrong = wrong or self.board.model != uploaded
        row = {"case": self.case, "outcome": outcome, "seconds": seconds,
               "resends": self.session.stats.resends,
               "injected": _injected(self.proxy) + len(self.board.faults.fired),
               "wrong_model": wrong}
        SUMMARY.append(row)
        return row

    def close(self) -> None:
        self.session.close()
        self.proxy.stop()
        self.board.stop()


@pytest.fixture
def rigs():
    made: list[Rig] = []

    def make(*a, **kw) -> Rig:
        rig = Rig(*a, **kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def _full_run(rig: Rig, model: bytes) -> dict:
    """Upload, one invoke, a short profile: all must succeed with the right model active."""
    up = rig.session.upload(model)
    assert up.sha256 == hashlib.sha256(model).hexdigest()
    out = rig.session.invoke(bytes(64))
    assert len(out.output) == 10
    rig.session.stage_input(bytes(64))
    train = rig.session.profile(0, 20)
    assert len(train.runs) == 20
    row = rig.finish("ok", model)
    assert not row["wrong_model"]
    assert rig.board.model == model
    return row


@pytest.mark.parametrize("seed", SEEDS)
def test_bytes_dropped(rigs, tiny_model, seed):
    rig = rigs("bytes dropped (0.03 %/byte)", Faults(drop_rate=3e-4, seed=seed))
    row = _full_run(rig, tiny_model)
    assert row["injected"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_bit_flips(rigs, tiny_model, seed):
    rig = rigs("bit flips (0.03 %/byte)", Faults(flip_rate=3e-4, seed=seed))
    row = _full_run(rig, tiny_model)
    assert row["injected"] > 0


@pytest.mark.parametrize("seed,direction", [(1, "to_device"), (2, "to_host"), (3, "both")])  # fast: ~0.3 s
def test_duplicated_frames(rigs, tiny_model, seed, direction):
    rig = rigs("duplicated frames (30 %)", Faults(duplicate_rate=0.3, seed=seed, directions=direction))
    row = _full_run(rig, tiny_model)
    assert row["injected"] > 0
    if rig.proxy.counts.extra.get("duplicated_to_device"):
        assert rig.board.replays > 0          # the device answered duplicates from its cache
    assert rig.session.stats.resends == 0     # duplicates cost no retries


def test_frame_cut_in_half_mid_upload(rigs, digits_model):
    rig = rigs("frame cut in half (upload)", Faults(directions="to_device"))
    cut_at = 3 * 1024

    def progress(task, done, total):
        if done >= cut_at and not rig.proxy.counts.frames_cut:
            rig.proxy.faults.cut_next_frames = 1

    up = rig.session.upload(digits_model, progress)
    assert up.sha256 == hashlib.sha256(digits_model).hexdigest()
    assert rig.proxy.counts.frames_cut == 1
    assert rig.session.stats.resends >= 1
    assert not rig.finish("ok", digits_model)["wrong_model"]


def test_frame_cut_towards_host(rigs, tiny_model):
    rig = rigs("frame cut in half (reply)", Faults(cut_next_frames=3, directions="to_host"))
    _full_run(rig, tiny_model)
    assert rig.proxy.counts.frames_cut == 3


@pytest.mark.parametrize("seed", SEEDS)
def test_garbage_before_hello(rigs, tiny_model, seed):
    rng = np.random.default_rng(seed)
    faults = Faults(garbage_to_host=rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
                    garbage_to_device=rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    rig = rigs("garbage before HELLO (both ways)", faults)
    assert rig.session.hello().proto_version == 1
    _full_run(rig, tiny_model)


def test_device_reset_during_upload_resumes(rigs, digits_model):
    rig = rigs("device reset during upload", Faults(), BoardFaults(reset_after_chunks=5))
    up = rig.session.upload(digits_model)
    assert up.resumes_after_reset == 1
    assert up.sha256 == hashlib.sha256(digits_model).hexdigest()
    chunks = -(-len(digits_model) // up.chunk_size)
    # resumed, not restarted: every chunk reached the device exactly once
    assert rig.board._chunks_applied == chunks
    assert rig.session.stats.resets_seen == 1
    assert not rig.finish("ok", digits_model)["wrong_model"]


def test_device_reset_during_upload_without_memory_restarts(rigs, digits_model):
    rig = rigs("device reset during upload (RAM lost)", Faults(), BoardFaults(reset_after_chunks=5),
               keep_model_on_reset=False)
    up = rig.session.upload(digits_model)
    assert up.resumes_after_reset == 1
    chunks = -(-len(digits_model) // up.chunk_size)
    assert rig.board._chunks_applied == chunks + 5       # started again from 0
    assert not rig.finish("ok", digits_model)["wrong_model"]


def test_device_reset_during_profile_is_reported(rigs, tiny_model):
    rig = rigs("device reset during profile", Faults(), BoardFaults(reset_during_profile=True))
    rig.session.upload(tiny_model)
    rig.session.invoke(bytes(64))
    t0 = time.monotonic()
    with pytest.raises(DeviceReset, match="was reset"):
        rig.session.profile(2, 50)
    assert time.monotonic() - t0 < rig.bound_s(4, 1024, extra=10)
    row = rig.finish("error")
    assert not row["wrong_model"]
    # the session adopted the new boot: the next profile works
    train = rig.session.profile(0, 10)
    assert len(train.runs) == 10


def test_reset_ack_lost(rigs, tiny_model):
    rig = rigs("RESET with its ACK cut", Faults(directions="to_host"))
    before = rig.session.hello().boot_nonce
    rig.proxy.faults.cut_next_frames = 1                  # the next reply (the ACK) is cut
    after = rig.session.reset()
    assert after.boot_nonce != before and rig.board.boots == 2
    assert rig.proxy.counts.frames_cut == 1
    rig.session.upload(tiny_model)                        # the session works on after the reset
    assert not rig.finish("ok", tiny_model)["wrong_model"]


@pytest.mark.parametrize("after", (300, 2500))
def test_port_vanishes_mid_transfer(rigs, digits_model, after):
    rig = rigs("port vanishes mid-upload", Faults(vanish_after_host_bytes=after))
    t0 = time.monotonic()
    with pytest.raises(PortVanished, match="went away") as info:
        rig.session.upload(digits_model)
    assert info.value.hint and info.value.exit_code == 9
    assert time.monotonic() - t0 < rig.bound_s(1028)
    row = rig.finish("error")
    assert rig.board.model is None and not row["wrong_model"]


def test_device_never_answers(rigs, tiny_model):
    rig = rigs("device never answers", Faults(mute_device=True))
    t0 = time.monotonic()
    with pytest.raises(NoAnswer, match="no answer") as info:
        rig.session.hello()
    elapsed = time.monotonic() - t0
    assert elapsed < rig.bound_s(0, 128) + 0.5
    assert elapsed >= (RETRIES + 1) * 0.5 - 0.1          # it really waited and retried
    assert rig.session.stats.resends == RETRIES
    assert "hint" not in str(info.value) and info.value.hint
    rig.finish("error")


def test_device_stops_answering_mid_upload(rigs, digits_model):
    rig = rigs("device goes silent mid-upload", Faults())

    def progress(task, done, total):
        if done >= 4096:
            rig.proxy.faults.mute_device = True

    t0 = time.monotonic()
    with pytest.raises(NoAnswer):
        rig.session.upload(digits_model, progress)
    # the bound: the chunk's tries, then the tries of one UPLOAD_BEGIN asking where to resume
    assert time.monotonic() - t0 < rig.bound_s(1028) + rig.bound_s(36) + 1
    row = rig.finish("error")
    assert rig.board.model is None and not row["wrong_model"]
    # the link comes back: the next upload resumes from the device's offset
    rig.proxy.faults.mute_device = False
    up = rig.session.upload(digits_model)
    assert up.resumed_from >= 4096
    assert not rig.finish("ok", digits_model)["wrong_model"]


def test_no_errors_are_silent(rigs, tiny_model):
    """Heavy damage (5 %/byte): either success with the right model, or one DeviceError."""
    rig = rigs("heavy damage (5 %/byte flips)", Faults(flip_rate=0.05, seed=9))
    try:
        rig.session.upload(tiny_model)
        outcome = "ok"
    except DeviceError:
        outcome = "error"
    row = rig.finish(outcome, tiny_model)
    assert not row["wrong_model"]
    if rig.board.model is not None:
        assert rig.board.model_sha == hashlib.sha256(rig.board.model).digest()


def test_waits_do_not_grow_with_earlier_lost_replies(rigs, tiny_model):
    """One reply lost on each of several invokes: every invoke waits one timeout, never the previous
    invoke's retries as well (the waits once grew 4.2 s, 20.8 s, 87 s, ...)."""
    rig = rigs("one reply lost per invoke", Faults(directions="to_host"))
    rig.session.upload(tiny_model)
    rig.session.invoke(bytes(64))                  # a clean round trip to start from
    seconds = []
    for _ in range(4):
        rig.proxy.faults.cut_next_frames = 1       # the INVOKE_RESULT of this invoke is cut
        t0 = time.monotonic()
        out = rig.session.invoke(bytes(64))
        seconds.append(time.monotonic() - t0)
        assert len(out.output) == 10
    assert rig.proxy.counts.frames_cut == 4 and rig.session.stats.resends >= 4
    one_try = rig.session.timeout_for(64, 1028, 2.0 + 4 * 0.05)
    assert max(seconds) < 2 * one_try, seconds
    assert seconds[-1] < 1.5 * seconds[0] + 0.5, seconds
    rig.finish("ok", tiny_model)


def test_a_device_silent_during_a_long_profile_is_noticed_within_10_s(rigs, tiny_model):
    """The default 200 runs (and a slow model's latency): PROFILE goes in batches of about 0.5 s of
    device time, so a device that stops answering is noticed after one batch's wait and a HELLO probe,
    not after 200 runs' worth of waiting and retries."""
    rig = rigs("device silent during PROFILE (200 runs)", Faults())
    rig.session.upload(tiny_model)
    rig.session.invoke(bytes(64))
    rig.session.stage_input(bytes(64))
    rig.proxy.faults.mute_device = True
    t0 = time.monotonic()
    with pytest.raises(NoAnswer, match="went silent during PROFILE"):
        rig.session.profile(10, 200, latency_hint_s=0.05)       # as if each run took 50 ms: 10 s in all
    assert time.monotonic() - t0 < 10.0
    rig.finish("error")


def test_a_long_profile_in_batches_returns_every_run(rigs, tiny_model):
    rig = rigs("PROFILE in batches", Faults())
    rig.session.upload(tiny_model)
    rig.session.stage_input(bytes(64))
    requests = rig.session.stats.requests
    train = rig.session.profile(3, 120, latency_hint_s=0.02)    # batches of about 25 runs
    assert len(train.runs) == 120 and all(t > 0 for t, _ in train.runs)
    assert rig.session.stats.requests - requests >= 2            # more than one PROFILE request went out
    rig.finish("ok", tiny_model)


@pytest.mark.parametrize("seed", (11, pytest.param(12, marks=pytest.mark.slow)))
def test_uploads_succeed_at_1e3_faults_per_byte(rigs, digits_model, seed):
    """1e-3 per byte, flips and drops both ways: 4 KiB chunks almost never arrive whole, so the chunks
    shrink after failures and the upload resumes by offset; it succeeds, with the right model."""
    rig = rigs("upload at 1e-3 per-byte faults", Faults(flip_rate=5e-4, drop_rate=5e-4, seed=seed),
               max_payload=4100)
    up = rig.session.upload(digits_model)
    assert up.sha256 == hashlib.sha256(digits_model).hexdigest() and up.chunk_shrinks > 0
    assert not rig.finish("ok", digits_model)["wrong_model"]
