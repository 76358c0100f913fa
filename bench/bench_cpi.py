"""Board time from emulated instruction counts, against published on-device latencies.

The four MLPerf Tiny v0.5 reference architectures (bench/reference_models.py, random int8 weights)
run on the emulated Cortex-M4 (`--board qemu-m4`, a tflite-micro tree with CMSIS-NN). Their
instruction counts x the calibrated CPI (targets/cores/cortex-m4.yaml) / clock are compared with the
latencies MLPerf Tiny publishes for TFLM + CMSIS-NN on real boards:

- NUCLEO-L4R5ZI, Cortex-M4 at 120 MHz, TFLM 2.3.1 + CMSIS-NN (v0.5 closed reference; the calibration)
- EK-RA6M4, Cortex-M33 at 200 MHz, tflite-micro + CMSIS-NN (v0.7 closed, Renesas; for comparison)

Published latency = 1000 / "Median throughput" (inferences per second) of each results.txt.

    python bench/bench_cpi.py [--tflm-src DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import table  # noqa: E402

# published median throughput (inferences per second), MLPerf Tiny closed division
PUBLISHED = {
    "NUCLEO-L4R5ZI (Cortex-M4, 120 MHz)": {
        "clock_hz": 120_000_000,
        "source": "mlcommons/tiny_results_v0.5 closed/reference/results/Nucleo-L4R5ZI/<bm>/performance/results.txt",
        "throughput": {"kws": 5.497, "vww": 1.665, "ic": 1.420, "ad": 99.487}},
    "EK-RA6M4 (Cortex-M33, 200 MHz)": {
        "clock_hz": 200_000_000,
        "source": "mlcommons/tiny_results_v0.7 closed/renesas/results/EK-RA6M4/<bm>/performance/results.txt",
        "throughput": {"kws": 19.774, "vww": 6.159, "ic": 4.062, "ad": 216.772}},
}
NAMES = {"kws": "keyword spotting (DS-CNN)", "vww": "visual wake words (MobileNetV1 0.25)",
         "ic": "image classification (ResNet-8)", "ad": "anomaly detection (FC autoencoder)"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflm-src", help="TFLM tree (default: EDGEKIT_TFLM_SRC's tflite-micro checkout)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import reference_models as rm

    import edgekit
    from edgekit import _tf
    from edgekit.estimate import load_cores
    from edgekit.model.inspect import inspect
    from edgekit.tflm.tree import find_trees

    tree = args.tflm_src or next((str(t.root) for t in find_trees().trees if t.layout == "tflite-micro"), None)
    if tree is None:
        print("needs a tflite-micro tree: --tflm-src or EDGEKIT_TFLM_SRC")
        return 1
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-cpi-"))
    counts, macs = {}, {}
    for name, build in rm.BUILDERS.items():
        with _tf.quiet_native():
            data = rm.int8_tflite(build())
        path = work / f"{name}.tflite"
        path.write_bytes(data)
        macs[name] = inspect(data, measure_arena_bytes=False).total_macs
        doc = edgekit.profile(path, board="qemu-m4", runs=5, warmup=1, float_baseline=False,
                              options={"tflm_src": tree}).to_dict()
        counts[name] = doc["instructions"]["median"]
        print(f"  {name}: {counts[name]:,.0f} instructions, {macs[name]:,} MACs", flush=True)

    core = load_cores()["cortex-m4"]
    rows, doc = [], {"instructions": counts, "macs": macs, "cpi": core.cpi, "boards": {}}
    for board, pub in PUBLISHED.items():
        implied = {}
        for name, thr in pub["throughput"].items():
            published_ms = 1000.0 / thr
            implied[name] = published_ms / 1000.0 * pub["clock_hz"] / counts[name]
            estimate_ms = counts[name] * core.cpi / pub["clock_hz"] * 1000.0
            rows.append([board, NAMES[name], f"{counts[name]:,.0f}", f"{published_ms:.2f}", f"{implied[name]:.2f}",
                         f"{estimate_ms:.2f}", f"{estimate_ms / published_ms:.2f}"])
        doc["boards"][board] = {"implied_cpi": implied, "median_cpi": statistics.median(implied.values()),
                                "source": pub["source"]}
    print()
    print(table(f"Estimate (instructions x CPI {core.cpi} / clock) vs published MLPerf Tiny latency",
                ["board", "model", "instructions", "published ms", "implied CPI", "estimate ms", "estimate/published"],
                rows))
    for board, facts in doc["boards"].items():
        print(f"{board}: median implied CPI {facts['median_cpi']:.2f} "
              f"(range {min(facts['implied_cpi'].values()):.2f}-{max(facts['implied_cpi'].values()):.2f}); "
              f"{facts['source']}")
    print(f"targets/cores/cortex-m4.yaml: cpi {core.cpi}, range {core.cpi_low}-{core.cpi_high}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
