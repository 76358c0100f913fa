"""Farm profile on 3 labgrid places in parallel vs one after another (`edgekit farm profile --jobs`).

The lab is the real one of tests/integration/labkit.py on loopback: a labgrid coordinator and
exporter, two virtual boards and the emulated Cortex-M4 (protocol test firmware) behind ser2net, each
a place. Times are host wall-clock times of the whole farm run (per place: a child process, acquire,
HELLO, upload, profile, release), not a board's time. The boards here are processes on this same
machine, so they compete for its cores: on a real farm each board computes on its own, and the
parallel gain can only be larger than here.

    python bench/bench_farm.py [--runs 200] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="timed runs on each board")
    ap.add_argument("--repeat", type=int, default=2, help="farm runs per mode")
    args = ap.parse_args()

    from labkit import Lab, Ser2net, labgrid_bin

    bin_dir = labgrid_bin()
    missing = [t for t in ("ser2net", "qemu-system-arm", "arm-none-eabi-gcc") if shutil.which(t) is None]
    if bin_dir is None or missing:
        print(f"skipped: needs labgrid (make labgrid) and {', '.join(missing) or 'nothing else'}")
        return 0
    os.environ["EDGEKIT_LABGRID_CLIENT"] = str(bin_dir / "labgrid-client")

    from conformance.linkkit import cached_model
    from edgekit.farm import farm_profile
    from edgekit.link.virtual_board import VirtualBoard
    from edgekit.runners.qemu import QemuMachine, build_test_firmware

    folder = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    model = cached_model("int8_cnn", folder)
    model_path = folder / "model.tflite"
    model_path.write_bytes(model)
    boards = [VirtualBoard(model, board_id="virtual"), VirtualBoard(model, board_id="virtual")]
    ptys = {"vb1": boards[0].start(), "vb2": boards[1].start()}
    machine = QemuMachine(build_test_firmware())
    ptys["m4"] = machine.start()
    machine.boot()
    ser2net = Ser2net(folder, ptys).start()
    places = {"vb-1": {"match": "lab1/vb1/*", "board": "virtual"}, "vb-2": {"match": "lab1/vb2/*", "board": "virtual"},
              "m4": {"match": "lab1/m4/*", "board": "qemu-m4"}}
    lab = Lab(folder, bin_dir, places)
    rows = []
    try:
        lab.exporter("lab1", {g: {"NetworkSerialPort": {"host": "127.0.0.1", "port": ser2net.ports[g],
                                                        "speed": 115200, "protocol": "rfc2217"}} for g in ptys})
        for jobs, label in ((3, "3 places in parallel"), (1, "one after another")):
            walls, per_place = [], []
            for k in range(args.repeat):
                started = time.monotonic()
                doc = farm_profile(model_path, places=list(places), out_dir=folder / f"out-{jobs}-{k}",
                                   coordinator=lab.coordinator, runs=args.runs, warmup=5, jobs=jobs,
                                   options={"firmware": "test"}, float_baseline=False)
                walls.append(time.monotonic() - started)
                per_place.append({r["place"]: r for r in doc["places"]})
            rows.append((label, walls, per_place))
    finally:
        lab.close()
        ser2net.close()
        machine.stop()
        for b in boards:
            b.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\nFarm profile, int8 CNN (3.4 KB), {args.runs} timed runs per board, {args.repeat} farm runs per mode "
          f"(host wall-clock, {os.cpu_count()} cores shared with the boards)\n")
    print("| mode | wall time per farm run (s) | median | speed-up |")
    print("|------|----------------------------|--------|----------|")
    base = statistics.median(rows[1][1])
    for label, walls, _ in rows:
        med = statistics.median(walls)
        print(f"| {label} | {', '.join(f'{w:.1f}' for w in walls)} | {med:.1f} | {base / med:.2f}x |")
    print("\nmedian latency per board (last farm run of each mode; virtual boards: host time, m4: test firmware "
          "ticks, not TFLM):\n")
    print("| place | board | parallel | one after another |")
    print("|-------|-------|----------|-------------------|")
    for place in places:
        cells = []
        for _, _, per_place in rows:
            r = per_place[-1][place]
            cells.append(f"{r['latency_us_median']:.1f} µs ({r['timing_source']})" if r.get("latency_us_median")
                         else "-")
        print(f"| {place} | {per_place[-1][place]['board']} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
