"""A fault campaign over the device link: every fault kind at two rates over upload, repeated invokes
and profile, between the host session and the virtual board, through the fault relay
(edgekit.link.fault_proxy: a pty man-in-the-middle that damages frames on the way).

Used by tests/integration/test_fault_campaign.py (one seed, asserting) and bench/bench_faults.py (more
seeds, a table). Each run records its outcome: ``ok`` (the operation succeeded and its result is right),
``error`` (one clear DeviceError), or ``silent`` (it "succeeded" with a wrong model or wrong outputs:
the one outcome that must never happen), and how long it took.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from edgekit.errors import DeviceError
from edgekit.link.fault_proxy import FaultProxy, Faults
from edgekit.link.session import DeviceSession
from edgekit.link.virtual_board import VirtualBoard

BAUD = 921600
HANG_S = 60.0                 # nothing may take longer than this (the "hang")
OPS = ("upload", "invokes", "profile")
INVOKES = 8
PROFILE_RUNS = 40


def faults_for(kind: str, rate: float, seed: int) -> Faults:
    """The relay's settings for a fault kind at a per-byte ``rate`` (per frame for frame-level kinds)."""
    if kind == "flip":
        return Faults(flip_rate=rate, seed=seed)
    if kind == "drop":
        return Faults(drop_rate=rate, seed=seed)
    if kind == "garbage":
        return Faults(garbage_rate=rate, seed=seed)
    if kind == "mixed":
        return Faults(flip_rate=rate / 3, drop_rate=rate / 3, garbage_rate=rate / 3, seed=seed)
    if kind == "duplicate":               # a frame-level fault: ~100 bytes per frame, so rate x 100 per frame
        return Faults(duplicate_rate=min(1.0, rate * 100), seed=seed)
    if kind == "stall":                   # the link stops for half a second now and then
        return Faults(stall_rate=min(1.0, rate * 100), stall_s=0.5, seed=seed)
    raise ValueError(kind)


BYTE_KINDS = ("flip", "drop", "garbage", "mixed", "duplicate", "stall")
EVENT_KINDS = ("silence", "unplug")


@dataclass
class Row:
    kind: str
    rate: float | None
    op: str
    seed: int
    outcome: str          # ok | error | silent
    seconds: float
    error: str = ""


def _inputs(n: int, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=size, dtype=np.int64).astype(np.int8).tobytes() for _ in range(n)]


def _reference(model: bytes, inputs: list[bytes]) -> list[bytes]:
    """Outputs of a clean link (the same virtual board, no relay)."""
    board = VirtualBoard(max_payload=1028)
    try:
        with DeviceSession.open(board.start(), BAUD) as s:
            s.upload(model)
            return [s.invoke(x).output for x in inputs]
    finally:
        board.stop()


def run_case(kind: str, rate: float | None, op: str, seed: int, model: bytes, input_bytes: int,
             reference: dict | None = None) -> Row:
    """One run of ``op`` with ``kind`` faults; the model is uploaded cleanly first for invokes/profile."""
    inputs = _inputs(INVOKES, input_bytes, seed)
    if op == "invokes":
        reference = reference if reference is not None else {}
        key = (hashlib.sha256(model).hexdigest(), seed)
        if key not in reference:
            reference[key] = _reference(model, inputs)
        want = reference[key]
    board = VirtualBoard(max_payload=1028)
    proxy = FaultProxy(board.start(), Faults())
    session = DeviceSession.open(proxy.start(), BAUD)
    t0 = time.monotonic()
    try:
        if op != "upload":
            session.upload(model)                                 # clean: the faults start afterwards
            session.invoke(inputs[0])
            if op == "profile":
                session.stage_input(inputs[0])
        if kind in BYTE_KINDS:
            proxy.faults = faults_for(kind, rate, seed)
            proxy._rng.seed(seed)
        t0 = time.monotonic()
        if kind == "silence":
            proxy.faults.mute_device = True
        elif kind == "unplug":
            proxy.faults.vanish_after_host_bytes = proxy._host_bytes + 8   # the next request goes nowhere
        if op == "upload":
            up = session.upload(model)
            ok = (board.model == model and up.sha256 == hashlib.sha256(model).hexdigest())
        elif op == "invokes":
            got = [session.invoke(x).output for x in inputs]
            ok = got == want
        else:
            train = session.profile(2, PROFILE_RUNS)
            ok = len(train.runs) == PROFILE_RUNS and all(t > 0 for t, _ in train.runs)
        # a model active on the board must always be one whose hash matched its bytes
        if board.model is not None and hashlib.sha256(board.model).digest() != board.model_sha:
            ok = False
        return Row(kind, rate, op, seed, "ok" if ok else "silent", time.monotonic() - t0)
    except DeviceError as e:
        return Row(kind, rate, op, seed, "error", time.monotonic() - t0, e.message)
    finally:
        session.close()
        proxy.stop()
        board.stop()


def campaign(model: bytes, input_bytes: int, seeds=(1,), rates=(1e-3, 1e-2), kinds=BYTE_KINDS + EVENT_KINDS,
             ops=OPS, progress=None) -> list[Row]:
    rows, ref = [], {}
    cases = [(k, r) for k in kinds for r in (rates if k in BYTE_KINDS else (None,))]
    total = len(cases) * len(ops) * len(seeds)
    for kind, rate in cases:
        for op in ops:
            for seed in seeds:
                rows.append(run_case(kind, rate, op, seed, model, input_bytes, ref))
                if progress:
                    progress(len(rows), total, rows[-1])
    return rows


def table(rows: list[Row]) -> list[str]:
    """runs, correct, clean errors, silent corruptions and worst time to an error, per fault kind and rate."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.rate, r.op), []).append(r)
    lines = [f"{'fault':10} {'rate':>6} {'operation':9} {'runs':>4} {'ok':>3} {'clean error':>11} "
             f"{'silent':>6} {'worst s':>7} {'worst s to error':>16}"]
    for (kind, rate, op), rs in groups.items():
        errs = [r.seconds for r in rs if r.outcome == "error"]
        lines.append(f"{kind:10} {('-' if rate is None else f'{rate:g}'):>6} {op:9} {len(rs):>4} "
                     f"{sum(r.outcome == 'ok' for r in rs):>3} {len(errs):>11} "
                     f"{sum(r.outcome == 'silent' for r in rs):>6} {max(r.seconds for r in rs):>7.2f} "
                     f"{(max(errs) if errs else 0):>16.2f}")
    return lines
