"""Parse what LiteRT's ``benchmark_model`` prints into numbers edgekit can trust.

Two output shapes are known: the older one (tab-separated tables with a ``[start]`` column, no line
prefix) and the newer one (``INFO:`` prefixes, space-aligned tables without ``[start]``, a count
line that may end in ``p5= median= p95=``). What is read:

- ``Inference timings in us: Init: A, First inference: B, Warmup (avg): C, Inference (avg): D``
  (required: without it the output is truncated or from an unknown version, and nothing is reported);
- the ``count=N first= curr= min= max= avg= std= [p5= median= p95=]`` line of the regular runs;
- memory: ``Memory footprint delta ... init= overall=``, ``Peak memory footprint (MB): init= overall=``
  or ``Overall peak memory footprint (MB) via periodic monitoring: X``;
- with ``--enable_op_profiling=true``: the ``Run Order`` table after ``Operator-wise Profiling Info
  for Regular Benchmark Runs``, ending at ``Number of nodes executed`` (a table without that end is
  a truncated output and is refused).

benchmark_model does not print individual run times, p90 or p99: those stay unavailable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import DeviceError

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PREFIX = re.compile(r"^(?:INFO|VERBOSE|WARNING|ERROR|I tflite\s*|[A-Z] tflite\s*)\s*:\s?")
_TIMINGS = re.compile(rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
                      rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})")
_COUNT = re.compile(rf"^count=(\d+)((?:\s+\w+={_NUM}(?:\(all same\))?)+)\s*$")
_KV = re.compile(rf"(\w+)=({_NUM})")
_MEM_DELTA = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) "
                        rf"\(MB\): init=({_NUM}) overall=({_NUM})")
_MEM_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_OP_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_OPS_END = re.compile(r"^Number of nodes executed: (\d+)")


class BenchmarkOutputError(DeviceError):
    """benchmark_model output that edgekit cannot read (truncated, failed, or an unknown version)."""


@dataclass
class BenchmarkOutput:
    init_us: float
    first_inference_us: float
    warmup_avg_us: float
    inference_avg_us: float
    runs: int | None = None                       # regular runs the stats line counts
    stats_us: dict[str, float] = field(default_factory=dict)   # min, max, avg, std, [p5, median, p95]
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_peak_mb: float | None = None
    per_op: list[dict[str, Any]] | None = None     # rows of the Run Order table
    nodes_executed: int | None = None


def _clean(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n")).strip("\r")


def _op_row_regex(header: str) -> re.Pattern:
    start = r"(?P<start>" + _NUM + r")\s+" if "[start]" in header else ""
    return re.compile(r"^\s*(?P<type>\S.*?)\s+" + start + rf"(?P<first>{_NUM})\s+(?P<avg_ms>{_NUM})\s+"
                      rf"(?P<pct>{_NUM})%\s+(?P<cdf>{_NUM})%\s+(?P<mem_kb>{_NUM})\s+(?P<called>\d+)\s+"
                      r"(?P<name>\S.*?)\s*$")


def _parse_ops(lines: list[str], at: int) -> tuple[list[dict], int]:
    """Rows of the Run Order table that follows line ``at``; raises when the table is cut off."""
    i = at + 1
    while i < len(lines) and "Run Order" not in lines[i]:
        i += 1
    if i + 1 >= len(lines) or "[node type]" not in lines[i + 1]:
        raise BenchmarkOutputError("benchmark_model per-op table is cut off (no Run Order header)",
                                   hint="the output was truncated; run again")
    row = _op_row_regex(lines[i + 1])
    ops = []
    for line in lines[i + 2:]:
        if not line.strip() or line.startswith("="):
            break
        m = row.match(line)
        if m is None:
            raise BenchmarkOutputError(f"benchmark_model per-op row not understood: {line.strip()[:80]!r}",
                                       hint="an unknown benchmark_model version; report it with its output")
        ops.append({"type": m["type"], "name": m["name"], "first_ms": float(m["first"]),
                    "avg_ms": float(m["avg_ms"]), "percent": float(m["pct"]), "cdf_percent": float(m["cdf"]),
                    "mem_kb": float(m["mem_kb"]), "times_called": int(m["called"])})
    nodes = None
    for line in lines[i + 2:]:
        m = _OPS_END.match(line.strip())
        if m:
            nodes = int(m.group(1))
            break
    if nodes is None or not ops:
        raise BenchmarkOutputError("benchmark_model per-op output is cut off (no 'Number of nodes executed')",
                                   hint="the output was truncated; run again")
    return ops, nodes


def parse(text: str, *, expect_ops: bool = False) -> BenchmarkOutput:
    """Parse one benchmark_model run's combined output. Raises BenchmarkOutputError."""
    lines = [_clean(ln) for ln in text.splitlines()]
    if any("Benchmarking failed" in ln for ln in lines):
        errors = [ln for ln in text.splitlines() if "ERROR" in ln or "Failed" in ln]
        why = _clean(errors[0]).strip() if errors else "Benchmarking failed"
        raise BenchmarkOutputError(f"benchmark_model failed on the device: {why}",
                                   hint="check the model and the delegate options")
    timing_idx = None
    for idx, line in enumerate(lines):
        m = _TIMINGS.search(line)
        if m:
            timing_idx, values = idx, [float(v) for v in m.groups()]
    if timing_idx is None:
        raise BenchmarkOutputError("benchmark_model output has no 'Inference timings in us' line",
                                   hint="the run was cut off, or the binary is a version edgekit does not "
                                        "know; run it by hand and check its output")
    out = BenchmarkOutput(*values)
    # the regular-run stats: the last count line with min= before the timings line
    for line in reversed(lines[:timing_idx]):
        m = _COUNT.match(line.strip())
        if m and "min=" in m.group(2):
            out.runs = int(m.group(1))
            out.stats_us = {k: float(v) for k, v in _KV.findall(m.group(2)) if k != "curr"}
            break
    for line in lines:
        m = _MEM_DELTA.search(line)
        if m:
            out.memory_init_mb, out.memory_overall_mb = float(m.group(1)), float(m.group(2))
        m = _MEM_PEAK.search(line)
        if m:
            out.memory_peak_mb = float(m.group(1))
    section = next((i for i, ln in enumerate(lines) if _OP_SECTION in ln), None)
    if section is not None:
        out.per_op, out.nodes_executed = _parse_ops(lines, section)
    elif expect_ops:
        raise BenchmarkOutputError("benchmark_model printed no per-op table although op profiling was on",
                                   hint="the output was truncated, or the binary ignores "
                                        "--enable_op_profiling (an unknown version)")
    return out


def to_profile(bench: BenchmarkOutput, *, path, facts, board, device: dict, runs: int, warmup: int,
               runner: str):
    """The profile document (edgekit.profile/1) of one benchmark_model run, for the adb and ssh runners.
    ``latency_samples_us``, p90 and p99 stay empty (the tool prints aggregates only; listed in
    ``device.unavailable``); ``memory`` holds the tool's own MB figures."""
    import math

    from edgekit.profiling import litert_profile, t_interval

    s = bench.stats_us
    n = bench.runs or runs
    mean = s.get("avg", bench.inference_avg_us)
    std = s.get("std")
    low, high, method = t_interval(mean, std, n, floor=s.get("min") or 0.0)
    latency = {"mean": mean, "median": s.get("median"), "p90": None, "p99": None, "min": s.get("min"),
               "max": s.get("max"), "std": std, "ci95_low": low, "ci95_high": high,
               "median_ci95_low": None, "median_ci95_high": None, "ci_method": method, "n": n}
    per_op = None
    if bench.per_op:
        per_op = [{"name": op["name"], "type": op["type"], "count": op["times_called"],
                   "mean_us": op["avg_ms"] * 1000.0, "total_us": op["avg_ms"] * 1000.0 * n,
                   "share": op["percent"] / 100.0} for op in bench.per_op]
    device = {"firmware_version": "LiteRT benchmark_model", **device, "init_us": bench.init_us,
              "first_inference_us": bench.first_inference_us, "warmup_avg_us": bench.warmup_avg_us,
              "nodes_executed": bench.nodes_executed,
              "unavailable": ["latency_samples_us", "latency_us.p90", "latency_us.p99"]
              + ([] if "median" in s else ["latency_us.median"])}
    return litert_profile(path=path, facts=facts, board=board, device=device, runs=n, warmup=warmup,
                          latency_us=latency, latency_samples_us=[], per_op=per_op,
                          per_op_note=None if per_op else "benchmark_model printed no per-op table",
                          memory={"tool_init_mb": bench.memory_init_mb, "tool_overall_mb": bench.memory_overall_mb,
                                  "tool_peak_mb": bench.memory_peak_mb}, runner=runner)


def command_args(model: str, *, runs: int, warmup: int, threads: int, xnnpack: bool) -> list[str]:
    """benchmark_model's flags for one profile (after the binary's path)."""
    return [f"--graph={model}", f"--num_runs={runs}", f"--warmup_runs={warmup}", f"--num_threads={threads}",
            f"--use_xnnpack={'true' if xnnpack else 'false'}", "--enable_op_profiling=true"]

