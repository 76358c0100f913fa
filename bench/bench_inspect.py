"""Benchmark: inspect time, generated C size, and a fuzz run, printed as a table.

    python bench/bench_inspect.py [--fuzz-cases 300]

Builds a ~20k-parameter digits-like int8 CNN (tests/tinymodels.py), then measures
  - edgekit.inspect wall time without and with the exact arena measurement (host TFLM child),
  - export --format c: model_data.cc size / model size, and export wall time,
  - N randomly mutated copies (random bytes, or 32-bit words set to boundary values) through
    edgekit.inspect in this process: outcome counts.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz-cases", type=int, default=300)
    args = ap.parse_args()

    import tinymodels

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from test_fuzz_tflite import mutate     # the same mutations as the fuzz test

    import edgekit
    from edgekit.errors import EdgekitError

    t0 = time.perf_counter()
    model = tinymodels.digits_cnn()
    build_s = time.perf_counter() - t0

    rows = []
    t0 = time.perf_counter()
    r = edgekit.inspect(model, measure_arena_bytes=False)
    rows.append(("inspect, no arena, first call", f"{(time.perf_counter() - t0) * 1e3:.0f} ms "
                 "(starts the LiteRT verifier child)"))
    t0 = time.perf_counter()
    r = edgekit.inspect(model, measure_arena_bytes=False)
    rows.append(("inspect, no arena", f"{(time.perf_counter() - t0) * 1e3:.0f} ms"))
    t0 = time.perf_counter()
    r = edgekit.inspect(model, board="nano33ble")
    rows.append(("inspect with exact arena + fit", f"{(time.perf_counter() - t0) * 1e3:.0f} ms"))
    rows.append(("model", f"{r.model_bytes:,} B, {r.total_params:,} params, {r.total_macs:,} MACs"))
    rows.append(("arena (exact / recorded)", f"{r.arena.arena_bytes:,} B / {r.arena.recorded_bytes:,} B"))
    rows.append(("roofline bound on nano33ble", f"{r.roofline['latency_bound_us']:,.1f} us"))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        e = edgekit.export_c(model, tmp, name="digits")
        rows.append(("export --format c", f"{(time.perf_counter() - t0) * 1e3:.0f} ms"))
        rows.append(("model_data.cc / model size",
                     f"{e.source_bytes:,} B / {e.model_bytes:,} B = {e.source_bytes / e.model_bytes:.2f}x"))

    rng = np.random.default_rng(1)
    outcomes: Counter[str] = Counter()
    t0 = time.perf_counter()
    for _ in range(args.fuzz_cases):
        data = mutate(model, rng)
        try:
            res = edgekit.inspect(data, timeout_s=30)
            outcomes["result" if res.arena.error is None else "result, TFLM refused"] += 1
        except EdgekitError as err:
            outcomes[type(err).__name__] += 1
    fuzz_s = time.perf_counter() - t0
    rows.append(("fuzz cases run", f"{args.fuzz_cases} in {fuzz_s:.1f} s (no crash, no traceback)"))
    for k, v in outcomes.most_common():
        rows.append((f"  outcome: {k}", str(v)))

    width = max(len(a) for a, _ in rows)
    print(f"bench_inspect (model built in {build_s:.1f} s)")
    print("-" * (width + 40))
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


if __name__ == "__main__":
    main()
