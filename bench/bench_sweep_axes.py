"""Benchmark of `edgekit sweep` over what pays on a device: channel pruning x clustering x LUT
compression x dense-weight granularity on the digits CNN (sklearn digits, ~21k parameters), for the
Arduino Nano 33 BLE, each point run on the board's emulated Cortex-M4.

The points are built for the board's TFLM runtime. With a tflite-micro tree (EDGEKIT_TFLM_SRC or
--tflm-src) the firmware is built from it (`--tflm-src`: DECODE and per-channel dense kernels, so the
compress and granularity axes stay live); with only the board's own Arduino library (Chirale 2.0.0:
no DECODE, no per-channel dense) those axes merge, and the table says so. Without qemu-system-arm,
arm-none-eabi-g++ or any tree the latency is the MAC-based estimate (labelled).

Prints one table: point, accuracy, model bytes, exact arena, RAM (the board's fit: reserved arena +
firmware RAM), estimated ms and its source, energy per inference (the board's active power x that
time), Pareto (over accuracy, flash and latency) and whether the point meets the constraints. Every
time and energy figure is an estimate for the board, never host time; the sweep's own wall time on
this machine is host time and labelled so.

    python bench/bench_sweep_axes.py [--epochs 2] [--quick] [--tflm-src DIR] [--no-emulate] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import table, trained_digits  # noqa: E402

BOARD = "nano33ble"


def _tree(explicit: str | None):
    """(tree for --tflm-src or None, emulation possible, why not)."""
    from edgekit.tflm.tree import describe_tree, find_trees

    missing = [t for t in ("qemu-system-arm", "arm-none-eabi-gcc", "arm-none-eabi-g++") if shutil.which(t) is None]
    trees = [describe_tree(explicit)] if explicit else find_trees().trees
    checkout = next((t for t in trees if t.layout == "tflite-micro" and not t.problems), None)
    if missing:
        return checkout, False, f"{', '.join(missing)} not installed"
    if not trees:
        return None, False, "no TFLM tree (set EDGEKIT_TFLM_SRC or pass --tflm-src)"
    return checkout, True, None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per stage")
    ap.add_argument("--quick", action="store_true", help="granularity auto only")
    ap.add_argument("--tflm-src", default=None)
    ap.add_argument("--no-emulate", action="store_true", help="the MAC-based estimate only")
    ap.add_argument("--min-accuracy", type=float, default=0.95)
    ap.add_argument("--max-latency", type=float, default=20.0, help="ms")
    ap.add_argument("--max-ram", default="100k")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from edgekit import _tf
    from edgekit.sweep import parse_size, sweep

    tree, can_emulate, why = _tree(args.tflm_src)
    emulate = can_emulate and not args.no_emulate
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-sweep-axes-"))
    model, (x_train, x_test) = trained_digits(work)
    grid = dict(prune_channels=[0.0, 0.5], cluster=[0, 16], compress=["match", "none"],
                granularity=["auto"] if args.quick else ["auto", "per-channel", "per-tensor"])
    print(f"digits CNN: {model.count_params():,} parameters; train {len(x_train)}, test {len(x_test)}; board "
          f"{BOARD}; firmware TFLM: {tree.label + ' (--tflm-src)' if tree else 'the board library'}; latency: "
          f"{'emulated Cortex-M4 (instructions x CPI / clock)' if emulate else 'MAC-based estimate'}"
          f"{'' if emulate or args.no_emulate else ' (no emulation: ' + why + ')'}", flush=True)
    print(f"grid: --prune-channels 0,0.5 --cluster 0,16 --compress match,none --granularity "
          f"{','.join(grid['granularity'])}; {args.epochs} epochs per stage; constraints: accuracy >= "
          f"{args.min_accuracy}, RAM <= {args.max_ram}, est. latency <= {args.max_latency} ms\n", flush=True)

    def progress(task, done, total):
        print(f"  {task}: {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

    t0 = time.perf_counter()
    with _tf.quiet_native():
        res = sweep(work / "digits.keras", work / "train.npz", work / "test.npz", work / "sweep", epochs=args.epochs,
                    board=BOARD, emulate=emulate, tflm_src=tree.root if tree else None,
                    min_accuracy=args.min_accuracy, max_latency_ms=args.max_latency, max_ram=parse_size(args.max_ram),
                    progress=progress, warn=lambda m: print(f"  note: {m}", flush=True), **grid)
    wall = time.perf_counter() - t0
    rows = []
    for p in res.points:
        src = {"emulated: instructions x CPI / clock": "emulated", "MAC-based estimate": "MACs"}.get(
            p.latency_source or "", "-")
        rows.append([p.id, "error: " + p.error[:50] if p.error else f"{100 * p.accuracy:.2f}", p.compress,
                     p.dense_weights or "-", f"{p.flash_bytes:,}",
                     f"{p.arena_bytes:,}" if p.arena_bytes else "-", f"{p.ram_bytes:,}" if p.ram_bytes else "-",
                     f"{p.latency_estimate_us / 1000:.3f}" if p.latency_estimate_us else "-", src,
                     f"{p.energy_uj:.1f}" if p.energy_uj else "-",
                     f"{p.instructions:,.0f}" if p.instructions else "-",
                     "*" if p.pareto else "", "yes" if p.meets else "", p.same_model_as or ""])
    print()
    print(table(f"edgekit sweep on {BOARD} (estimates for the board; Pareto over {', '.join(res.pareto_objectives)})",
                ["point", "acc %", "LUT", "dense", "bytes", "arena", "RAM", "est. ms", "source", "µJ", "instructions", "Pareto",
                 "meets", "same model as"], rows))
    print()
    print(f"best (smallest flash meeting every constraint): {res.best.id if res.best else None}; closest: "
          f"{res.closest.id if res.closest else None}")
    if res.merged:
        print(f"{len(res.merged)} grid combination(s) merged into points with the same recipe")
    print(f"sweep wall time on this machine (host time, training + conversion + emulation): {wall:.0f} s; "
          f"chart: {res.files.get('chart')}")
    if args.json:
        args.json.write_text(json.dumps({**res.to_dict(), "wall_s": wall}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
