"""Benchmark: the device link to the C protocol core, on QEMU Cortex-M4 and as a host process.

    python bench/bench_qemu.py [--hellos 50] [--model-bytes 27000] [--no-host]

For each device (qemu-m4: the firmware on QEMU mps2-an386 over a pty; c-host: the same core built
for this computer, on a pty), measures with the host session (edgekit.link.session):
  - HELLO round trip: median and 90th percentile over --hellos requests,
  - upload of a model of --model-bytes random bytes (about the digits int8 model): seconds, KB/s,
    wire bytes per model byte,
  - one INVOKE round trip (64 bytes in, 10 out) and the device-reported invoke time.
Built firmware goes to a temporary folder and is removed afterwards.
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


def measure(name: str, machine, hellos: int, model: bytes) -> list[tuple[str, str, str]]:
    from edgekit.link.session import DeviceSession

    rows = []
    t0 = time.perf_counter()
    machine.start()
    machine.boot()
    rows.append((name, "start + boot (to first answered request)", f"{(time.perf_counter() - t0) * 1e3:.0f} ms"))
    with DeviceSession.open(machine.port) as s:
        s.hello()
        times = []
        for _ in range(hellos):
            t0 = time.perf_counter()
            s.hello()
            times.append(time.perf_counter() - t0)
        times.sort()
        rows.append((name, f"HELLO round trip, median of {hellos}", f"{statistics.median(times) * 1e3:.2f} ms"))
        rows.append((name, "HELLO round trip, p90", f"{times[int(0.9 * (len(times) - 1))] * 1e3:.2f} ms"))
        up = s.upload(model)
        rows.append((name, f"upload {len(model):,} B (chunks of {up.chunk_size} B)",
                     f"{up.seconds:.2f} s = {len(model) / up.seconds / 1024:.1f} KB/s"))
        rows.append((name, "upload wire bytes / model byte", f"{up.wire_bytes / len(model):.4f}"))
        t0 = time.perf_counter()
        out = s.invoke(os.urandom(64))
        rows.append((name, "INVOKE round trip (64 B in, 10 B out)",
                     f"{(time.perf_counter() - t0) * 1e3:.2f} ms (device: {out.time_ns / 1e3:.1f} us, "
                     f"{out.cycles} cycles)"))
        if s.stats.resends:
            rows.append((name, "WARNING: requests re-sent (numbers include timeouts)", str(s.stats.resends)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hellos", type=int, default=50)
    ap.add_argument("--model-bytes", type=int, default=27_000)
    ap.add_argument("--no-host", action="store_true", help="skip the c-host comparison")
    args = ap.parse_args()

    from edgekit.errors import EdgekitError
    from edgekit.runners import qemu as qemu_runner

    model = os.urandom(args.model_bytes)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        try:
            t0 = time.perf_counter()
            elf = qemu_runner.build_test_firmware(Path(tmp) / "qemu-m4")
            rows.append(("qemu-m4", "firmware build (make, cold)", f"{time.perf_counter() - t0:.1f} s"))
            with qemu_runner.QemuMachine(elf) as qm:
                rows += measure("qemu-m4", qm, args.hellos, model)
        except EdgekitError as e:
            rows.append(("qemu-m4", "skipped", str(e)))
        if not args.no_host and shutil.which("gcc"):
            binary = qemu_runner.build_host_core(Path(tmp) / "c-host", sanitize=False,
                                                 defines={"EK_MAX_PAYLOAD": "4096u", "EK_MODEL_MAX": "524288u"})
            with qemu_runner.HostCoreProcess(binary) as hc:
                rows += measure("c-host", hc, args.hellos, model)

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'device':<{w0}}  {'measure':<{w1}}  value")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 5}")
    for dev, what, value in rows:
        print(f"{dev:<{w0}}  {what:<{w1}}  {value}")


if __name__ == "__main__":
    main()
