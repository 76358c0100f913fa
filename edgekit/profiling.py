"""Profile a model on a device: latency statistics, arena, roofline and an energy estimate.

    result = edgekit.profile("build/digits/model.tflite", board="virtual", runs=200)
    print(result.latency_us["median"], result.to_dict())

The result is one JSON document, schema ``edgekit.profile/1`` (docs/profile-schema.md), the same
for every runner (serial boards, the virtual board, later a Raspberry Pi or an Android phone).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import schemas
from edgekit.errors import UsageError
from edgekit.fileio import read_input
from edgekit.link.frames import Capability
from edgekit.progress import ProgressFn

SCHEMA = schemas.PROFILE
LITERT_TIMING = {"unit": "ns", "source": "device",
                 "label": "measured on the board: LiteRT's own timing of each invoke"}
FLOAT_BASELINE_NAME = "model_float.tflite"
FLOAT_BASELINE_MAX_RUNS = 50
INPUT_SEED = 0

# two-sided 95 % Student t quantiles for 1..30 degrees of freedom; 1.96 beyond
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


def t95(n: int) -> float:
    """Two-sided 95 % Student t quantile for n samples (n - 1 degrees of freedom); normal past 31."""
    return _T95[n - 2] if 2 <= n <= 31 else 1.96


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_METHOD = f"bootstrap percentile interval, {BOOTSTRAP_RESAMPLES} resamples (seed {BOOTSTRAP_SEED})"


def bootstrap_ci(x: np.ndarray, stat, *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ``stat`` (np.mean or np.median, taking ``axis=1``).

    It lies inside [min, max] of the samples, so a latency interval never goes below zero however
    skewed the samples are (a t-interval on the mean does). Deterministic: a fixed seed.
    """
    n = x.size
    if n < 2:
        v = float(x[0]) if n else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    block = max(1, min(resamples, 4_000_000 // n))      # bound the index matrix's memory
    for start in range(0, resamples, block):
        k = min(block, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        out[start:start + k] = stat(x[idx], axis=1)
    lo, hi = np.percentile(out, [2.5, 97.5])
    return float(lo), float(hi)


def latency_stats(samples_us: list[float] | np.ndarray) -> dict[str, float]:
    """mean, median, p90, p99, min, max, std (sample), and 95 % bootstrap intervals of the mean
    (``ci95_low/high``) and of the median (``median_ci95_low/high``); ``ci_method`` names the method."""
    x = np.asarray(samples_us, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    n = x.size
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    lo, hi = bootstrap_ci(x, np.mean)
    mlo, mhi = bootstrap_ci(x, np.median)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99)), "min": float(x.min()), "max": float(x.max()),
            "std": std, "ci95_low": lo, "ci95_high": hi, "median_ci95_low": mlo, "median_ci95_high": mhi,
            "ci_method": CI_METHOD, "n": int(n)}


def t_interval(mean: float, std: float | None, n: int, floor: float = 0.0) -> tuple[float | None, float | None, str]:
    """95 % Student t interval of the mean from aggregates only (no samples to resample), its low end
    clamped at ``floor`` (the fastest run, or 0): a latency cannot be negative."""
    if std is None or n < 2:
        return None, None, "no interval: the tool printed no standard deviation"
    half = t95(n) * std / math.sqrt(n)
    return max(floor, mean - half), mean + half, "Student t interval of the mean from the tool's mean, std " \
        "and run count (it prints no samples), low end clamped at the fastest run"


@dataclass
class ModelFacts:
    path: str
    sha256: str
    size_bytes: int
    input_bytes: int
    output_bytes: int
    macs: int | None
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)


def model_facts(data: bytes, path: str = "<bytes>") -> ModelFacts:
    """Verify the model (LiteRT verifier) and read its I/O and MAC count."""
    from edgekit.model.graph import parse
    from edgekit.model.load import load_tflite
    from edgekit.model.macs import op_macs

    verified = load_tflite(data)
    graph = parse(verified)
    sg = graph.main

    def io(index: int) -> dict:
        t = sg.tensors[index]
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.elements * t.element_bytes,
                "scale": t.scales[0] if len(t.scales) == 1 else None,
                "zero_point": t.zero_points[0] if len(t.zero_points) == 1 else None}

    ins = [io(i) for i in sg.inputs]
    outs = [io(i) for i in sg.outputs]
    macs = sum(op_macs(sg, op) for s in graph.subgraphs for op in s.operators)
    return ModelFacts(path=path, sha256=verified.sha256, size_bytes=len(data),
                      input_bytes=sum(d["bytes"] for d in ins), output_bytes=sum(d["bytes"] for d in outs),
                      macs=int(macs), inputs=ins, outputs=outs)


def random_input(facts: ModelFacts, seed: int = INPUT_SEED) -> bytes:
    """Deterministic input bytes for profiling (uniform over each input's dtype range)."""
    rng = np.random.default_rng(seed)
    parts = []
    for d in facts.inputs:
        dtype = np.dtype(d["dtype"])
        n = int(np.prod(d["shape"])) if d["shape"] else 1
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arr = rng.integers(info.min, info.max, size=n, endpoint=True, dtype=np.int64).astype(dtype)
        else:
            arr = rng.uniform(-1, 1, size=n).astype(dtype)
        parts.append(arr.tobytes())
    return b"".join(parts)


@dataclass
class ProfileResult:
    model: dict[str, Any]
    board: dict[str, Any]
    device: dict[str, Any]
    runs: int
    warmup: int
    latency_us: dict[str, float] | None          # None when the device counts instructions, not time
    latency_samples_us: list[float] | None
    cycles: dict[str, float] | None
    per_op: list[dict[str, Any]] | None
    per_op_note: str | None
    memory: dict[str, Any]
    roofline: dict[str, Any] | None
    energy: dict[str, Any] | None
    upload: dict[str, Any] | None
    runner: str = "serial"
    created: str = ""
    edgekit_version: str = ""
    # where the numbers come from: {"unit": "ns" | "instructions", "source": "device" | "host" | "emulated", ...}
    timing: dict[str, Any] = field(default_factory=dict)
    instructions: dict[str, float] | None = None  # per-inference statistics on the emulated target
    firmware: dict[str, Any] | None = None        # what was built for the device (emulated target)
    notes: list[str] = field(default_factory=list)
    float_baseline: dict[str, Any] | None = None  # the float model on the same device (also in energy)
    estimate: dict[str, Any] | None = None        # a board's time from emulated counts (edgekit.estimate)
    place: dict[str, Any] | None = None           # the labgrid place it ran on (edgekit.farm.Lease.to_dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "created": self.created, "edgekit_version": self.edgekit_version,
                "runner": self.runner, "model": self.model, "board": self.board, "device": self.device,
                "timing": self.timing, "runs": self.runs, "warmup": self.warmup, "latency_us": self.latency_us,
                "latency_samples_us": self.latency_samples_us, "instructions": self.instructions,
                "cycles": self.cycles, "per_op": self.per_op, "per_op_note": self.per_op_note,
                "memory": self.memory, "roofline": self.roofline, "energy": self.energy, "upload": self.upload,
                "firmware": self.firmware, "float_baseline": self.float_baseline, "estimate": self.estimate,
                "place": self.place, "notes": self.notes}


def energy_estimate(board, latency: dict) -> dict:
    """Energy per inference, estimated: the board's active power x the median latency measured on it
    (the mean where the tool reports no median), with the band of that statistic's interval."""
    from edgekit.estimate import energy_from_time

    stat = "median" if latency.get("median") is not None else "mean"
    prefix = "median_" if stat == "median" else ""
    out = energy_from_time(board, latency[stat], latency.get(f"{prefix}ci95_low"),
                           latency.get(f"{prefix}ci95_high"),
                           method=f"board active_power_mw x {stat} latency measured on the board")
    out["latency_statistic"] = stat
    return out


def roofline(macs: int | None, latency_us: float, clock_hz: int, peak_macs_per_cycle: float) -> dict:
    """Compute-bound floor and what the device achieved (MACs per clock cycle)."""
    if not macs:
        return {"macs": macs, "clock_hz": clock_hz, "peak_macs_per_cycle": peak_macs_per_cycle,
                "compute_bound_us": None, "achieved_macs_per_cycle": None, "utilization": None}
    bound_us = macs / (peak_macs_per_cycle * clock_hz) * 1e6
    cycles = latency_us * 1e-6 * clock_hz
    achieved = macs / cycles if cycles > 0 else None
    return {"macs": int(macs), "clock_hz": clock_hz, "peak_macs_per_cycle": peak_macs_per_cycle,
            "compute_bound_us": bound_us, "achieved_macs_per_cycle": achieved,
            "utilization": achieved / peak_macs_per_cycle if achieved is not None else None}


def model_doc(facts: ModelFacts, path) -> dict[str, Any]:
    """The profile document's ``model`` part."""
    return {"path": str(path), "sha256": facts.sha256, "size_bytes": facts.size_bytes,
            "macs": facts.macs, "inputs": facts.inputs, "outputs": facts.outputs}


def board_doc(b) -> dict[str, Any]:
    """The profile document's ``board`` part."""
    return {"id": b.id, "name": b.name, "cpu": b.cpu, "clock_hz": b.clock_hz, "runtime": b.runtime,
            "active_power_mw": b.active_power_mw, "peak_int8_macs_per_cycle": b.peak_int8_macs_per_cycle,
            "notes": b.notes or None}


def litert_profile(*, path, facts: ModelFacts, board, device: dict, runs: int, warmup: int, latency_us: dict,
                   latency_samples_us: list[float], per_op, per_op_note, runner: str,
                   memory: dict | None = None) -> ProfileResult:
    """A profile from a LiteRT runtime on a Linux board or a phone (ssh / adb runners): no arena and
    no cycle counter; roofline and energy from the median latency (the mean where there is no median)."""
    from edgekit._version import __version__

    typical = latency_us["median"] if latency_us.get("median") is not None else latency_us["mean"]
    return ProfileResult(
        model=model_doc(facts, path), board=board_doc(board), device=device, runs=runs, warmup=warmup,
        latency_us=latency_us, latency_samples_us=latency_samples_us, cycles=None, per_op=per_op,
        per_op_note=per_op_note,
        memory={"arena_used_bytes": None, "arena_bytes": None, "model_bytes": facts.size_bytes, **(memory or {})},
        roofline=roofline(facts.macs, typical, board.clock_hz, board.peak_int8_macs_per_cycle),
        energy=energy_estimate(board, latency_us), upload=None, runner=runner,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), edgekit_version=__version__,
        timing=dict(LITERT_TIMING))


def _measure(conn, model: bytes, facts: ModelFacts, runs: int, warmup: int,
             progress: ProgressFn | None) -> tuple[dict | None, Any, list]:
    from edgekit.link.device import ensure_model

    from edgekit.link.session import ProfileTrain

    upload = ensure_model(conn, model, progress)
    session = conn.session
    x = random_input(facts)
    if session.hello().has(Capability.PROFILE):
        session.stage_input(x)
        session.invoke(b"")                  # one invoke: checks the model runs, times the wait
        train = session.profile(warmup, runs, progress)
    else:
        # firmware without PROFILE: time single INVOKEs (the device still measures each one)
        for _ in range(warmup + 1):
            session.invoke(x)
        records = []
        for k in range(runs):
            res = session.invoke(x)
            records.append((res.time_ns, res.cycles))
            if progress:
                progress("profile", k + 1, runs)
        train = ProfileTrain(runs=records, arena_used=upload.arena_used if upload else 0)
    return (upload.to_dict() if upload else None), train, session


def profile(model_path: str | os.PathLike, board: str | None = None, port: str | None = None,
            runs: int = 200, warmup: int = 10, progress: ProgressFn | None = None, *,
            baud: int | None = None, float_baseline: str | os.PathLike | None | bool = True,
            emulate: bool = False, options: dict | None = None, log=None, place: str | None = None,
            coordinator: str | None = None) -> ProfileResult:
    """Profile ``model_path`` on ``board``: the board's runner does it (one dispatch for every board).

    ``port``: the serial port or URL of a serial board (found by its USB id when left out; the
    virtual and emulated boards start themselves). ``emulate``: run the board's own firmware on the
    emulated Cortex-M4 (instruction counts). ``options``: the runner's declared options (``host`` of a
    Pi, ``serial`` of a phone, ``tflm_src`` of the emulated board, ...; ``edgekit boards B`` lists
    them). ``float_baseline``: True looks for model_float.tflite next to the model (the convert
    artifact folder); a path uses that file; False/None skips it. The float model runs on the same
    device when the device takes models at run time. ``place``: a labgrid place (edgekit.farm) gives the
    board (its ``board=`` tag; ``board`` may be left out), the port and a reset; it is acquired for the
    run and released on every exit path. ``board`` defaults to the virtual board.
    """
    from edgekit.farm import resolve
    from edgekit.runners import runner_for

    with resolve(board, port, place, coordinator=coordinator, emulate=emulate, log=log) as (board, port, lease):
        runner = runner_for(board, emulate=emulate, options=options, log=log)
        if lease is not None and lease.can_reset:
            runner.recover = lease.reset
        result = runner.run("profile", model_path=model_path, port=port, runs=runs, warmup=warmup,
                            progress=progress, baud=baud, float_baseline=float_baseline)
        if lease is not None:
            result.place = lease.to_dict()
    return result


def _check_counts(runs: int, warmup: int) -> None:
    if not 1 <= runs <= 65535:
        raise UsageError(f"--runs must be 1..65535, got {runs}")
    if not 0 <= warmup <= 65535:
        raise UsageError(f"--warmup must be 0..65535, got {warmup}")


def profile_link(runner, model_path: str | os.PathLike, *, port: str | None = None, runs: int = 200,
                 warmup: int = 10, progress: ProgressFn | None = None, baud: int | None = None,
                 float_baseline: str | os.PathLike | None | bool = True) -> ProfileResult:
    """Profile over protocol v1 with a :class:`~edgekit.runners.link.LinkRunner`'s device."""
    from edgekit._version import __version__

    _check_counts(runs, warmup)
    path = Path(model_path)
    model = read_input(path, "model")
    facts = model_facts(model, str(path))
    baseline_path = _baseline_path(path, float_baseline)
    models = [model]
    if baseline_path is not None:
        models.append(read_input(baseline_path, "float baseline model"))

    with runner.open_link(port=port, baud=baud, models=models) as conn:
        b = conn.board
        baseline = None
        if baseline_path is not None:
            baseline = _profile_baseline(conn, baseline_path, min(runs, FLOAT_BASELINE_MAX_RUNS),
                                         min(warmup, 5), progress)
        upload, train, session = _measure(conn, model, facts, runs, warmup, progress)
        hello = session.hello()
    if (baseline is not None and "skipped" in baseline and getattr(runner, "builds_per_model", False)
            and not conn.board.int8_only):
        # a board that gets its model built in (an emulated Nano): the float model gets its own firmware
        with runner.open_link(port=port, baud=baud, models=[models[1]]) as other:
            baseline = _profile_baseline(other, baseline_path, min(runs, FLOAT_BASELINE_MAX_RUNS),
                                         min(warmup, 5), progress)

    timing = conn.timing or {}
    counts = timing.get("unit") == "instructions"
    raw = [float(t) for t, _ in train.runs]
    notes: list[str] = []
    if counts:
        instructions, times_us, stats = latency_stats(raw), None, None
    else:
        instructions, times_us = None, [t / 1000.0 for t in raw]
        stats = latency_stats(times_us)
    cycles = None
    if hello.has(Capability.CYCLES) and timing.get("source") == "device":
        cycles = latency_stats([float(c) for _, c in train.runs])
    per_op, note = None, None
    if train.ops:
        total = sum(t for _, _, t in train.ops) or 1
        per_op = []
        for n, c, t in train.ops:
            row = {"name": n, "count": c, "share": t / total}
            if counts:
                row.update({"instructions_total": t, "instructions_mean": t / max(runs, 1)})
            else:
                row.update({"total_us": t / 1000.0, "mean_us": t / 1000.0 / max(runs, 1)})
            per_op.append(row)
    else:
        note = ("the device has no per-op timing (PER_OP capability)"
                if not hello.has(Capability.PER_OP) else "the device sent no per-op records")
    energy = roof = estimate = None
    if timing.get("source") == "device" and not timing.get("board_mismatch"):
        energy = energy_estimate(b, stats)
        roof = roofline(facts.macs, stats["median"], b.clock_hz, b.peak_int8_macs_per_cycle)
        if baseline is not None and "latency_us_median" in baseline:
            f_uj = b.active_power_mw * baseline["latency_us_median"] / 1000.0
            e_uj = energy["per_inference_uj"]
            baseline.update({"per_inference_uj": f_uj, "saved_uj": f_uj - e_uj,
                             "saved_fraction": (f_uj - e_uj) / f_uj if f_uj > 0 else None})
        if baseline is not None:
            energy["float_baseline"] = baseline
    elif counts:
        roof = {"macs": facts.macs, "instructions_per_mac": (instructions["mean"] / facts.macs) if facts.macs else None}
        estimate, energy = _board_estimate(runner, b, instructions, per_op, baseline, notes)
    else:
        notes.append(f"{timing.get('label') or 'host time'}; no board roofline or energy is computed from it")
    return ProfileResult(
        model=model_doc(facts, path), board=board_doc(b),
        device={**hello.to_dict(), "port": None if conn.started_here else conn.port},
        runs=runs, warmup=warmup, latency_us=stats, latency_samples_us=times_us, cycles=cycles,
        per_op=per_op, per_op_note=note,
        memory={"arena_used_bytes": train.arena_used or None, "arena_bytes": hello.arena_bytes,
                "model_bytes": facts.size_bytes},
        roofline=roof, energy=energy, upload=upload, runner=runner.name,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgekit_version=__version__, timing=timing, instructions=instructions, firmware=conn.firmware,
        notes=notes, float_baseline=baseline, estimate=estimate)


def _board_estimate(runner, board, instructions: dict, per_op, baseline, notes: list[str]):
    """Time and energy on the emulated board from its instruction counts (edgekit.estimate), or why not.

    Only when a real board's firmware was emulated (``--emulate``): the qemu-m4 machine's own clock is
    nominal. Uses the median instruction count (named in the result).
    """
    from edgekit.estimate import energy_from_time, not_available, time_estimate

    if not getattr(runner, "emulating", False):
        notes.append("instruction counts from the emulated target; for a board's time and energy emulate that "
                     "board (--emulate --board B)")
        return None, None
    est = time_estimate(instructions["median"], board)
    if est is None:
        notes.append(not_available(board))
        return None, None
    est["statistic"] = "median"
    scale = est["latency_us"] / instructions["median"] if instructions["median"] else 0.0
    for row in per_op or []:
        row["estimated_us"] = row["instructions_mean"] * scale
    method = "board active_power_mw x estimated time (instructions x CPI / clock)"
    energy = energy_from_time(board, est["latency_us"], est["latency_us_low"], est["latency_us_high"], method=method)
    energy["latency_statistic"] = "median"
    if baseline is not None and "instructions_median" in baseline:
        f_est = time_estimate(baseline["instructions_median"], board)
        f_uj = board.active_power_mw * f_est["latency_us"] / 1000.0
        baseline.update({"estimated_latency_us": f_est["latency_us"], "per_inference_uj": f_uj,
                         "saved_uj": f_uj - energy["per_inference_uj"],
                         "saved_fraction": (f_uj - energy["per_inference_uj"]) / f_uj if f_uj > 0 else None})
        energy["float_baseline"] = baseline
    notes.append(f"time and energy on {board.id} are estimates: instructions x CPI {est['cpi']} "
                 f"({est['cpi_range'][0]}-{est['cpi_range'][1]}) / {board.clock_hz / 1e6:g} MHz; CPI source: "
                 f"targets/cores/{est['core']}.yaml")
    return est, energy


def _baseline_path(path: Path, float_baseline) -> Path | None:
    if float_baseline is None or float_baseline is False:
        return None
    cand = path.parent / FLOAT_BASELINE_NAME if float_baseline is True else Path(float_baseline)
    if not cand.is_file():
        if float_baseline is True:
            return None
        raise UsageError(f"float baseline model not found: {cand}")
    try:
        if cand.resolve() == path.resolve():
            return None
    except OSError:
        return None
    return cand


def _profile_baseline(conn, path: Path, runs: int, warmup: int, progress) -> dict:
    """Latency (or instruction count) of the float model on the same device, or why it was skipped."""
    from edgekit.errors import DeviceError, EdgekitError

    out: dict[str, Any] = {"path": str(path)}
    if conn.board.int8_only:
        out["skipped"] = f"board {conn.board.id} runs int8 kernels only"
        return out
    data = read_input(path, "float baseline model")
    if not conn.runtime_model_upload and conn.hello.model_sha256 != hashlib.sha256(data).digest():
        out["skipped"] = "the board takes no models at run time (flash it to compare)"
        return out
    try:
        facts = model_facts(data, str(path))
        _, train, _ = _measure(conn, data, facts, runs, warmup, progress)
    except DeviceError as e:
        if getattr(e, "code", None) is None:
            raise                      # a link failure is not a baseline problem
        out["skipped"] = f"the device refused the float model: {e.message}"
        return out
    except EdgekitError as e:
        out["skipped"] = f"float model unusable: {e.message}"
        return out
    out["runs"] = runs
    raw = np.asarray([float(t) for t, _ in train.runs])
    if (conn.timing or {}).get("unit") == "instructions":
        out["instructions_mean"] = float(raw.mean())
        out["instructions_median"] = float(np.median(raw))
    else:
        out["latency_us_mean"] = float(raw.mean()) / 1000.0
        out["latency_us_median"] = float(np.median(raw)) / 1000.0
    out["sha256"] = facts.sha256
    return out
