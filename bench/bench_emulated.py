"""Benchmark of the emulated Cortex-M4 with real TFLM: correctness against host TFLM, instruction counts,
firmware sizes and build times, for every TFLM tree found (EDGEKIT_TFLM_SRC, --tflm-src).

On the digits CNN (sklearn digits, trained here): int8 PTQ (the converter's per-channel dense
weights), int8 with per-tensor dense weights (`convert --board nano33ble`), and the demo's chain
(cluster 8 + QAT + lut3). Each runs on `--board qemu-m4` (upload firmware) and on the Nano 33 BLE's
own firmware (`--emulate --board nano33ble`), built with each tree.

    python bench/bench_emulated.py [--tflm-src DIR ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_convert import table, trained_digits  # noqa: E402


def _models(work: Path, stage_epochs: int) -> dict[str, Path]:
    import edgekit
    from edgekit import _tf
    from edgekit.optimize.recipe import Recipe

    trained_digits(work)
    chains = {"int8 (per-channel dense)": Recipe.from_flags(dense_auto=False),
              "int8 (per-tensor dense)": Recipe.from_flags(dense_per_tensor=True),
              "cluster 8 + QAT + lut3": Recipe.from_flags(cluster=8, qat=True, compress="lut3", epochs=stage_epochs)}
    out = {}
    for i, (name, recipe) in enumerate(chains.items()):
        folder = work / f"m{i}"
        with _tf.quiet_native():
            edgekit.convert(work / "digits.keras", work / "train.npz", work / "test.npz", recipe, folder)
        out[name] = folder / "model.tflite"
        print(f"  converted: {name} ({out[name].stat().st_size:,} B)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflm-src", action="append", default=[], help="TFLM tree (repeatable)")
    ap.add_argument("--stage-epochs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import edgekit
    from edgekit.boards import load_board
    from edgekit.errors import EdgekitError
    from edgekit.runners.qemu import QemuRunner
    from edgekit.tflm.tree import describe_tree, find_trees

    trees = [describe_tree(p) for p in args.tflm_src] or find_trees().trees
    if not trees:
        print("no TFLM tree: pass --tflm-src or set EDGEKIT_TFLM_SRC")
        return 1
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-emulated-"))
    print(f"digits CNN models in {work}", flush=True)
    models = _models(work, args.stage_epochs)
    test = work / "test.npz"
    doc: dict = {"validate": [], "profile": [], "firmware": [], "builds": []}

    # -- correctness against host TFLM on the whole test set ---------------------------------------
    rows = []
    for tree in trees:
        for board, emulate in (("qemu-m4", False), ("nano33ble", True)):
            for name, path in models.items():
                t0 = time.perf_counter()
                try:
                    r = edgekit.validate(path, test, board=board, emulate=emulate, n=10_000, raise_on_fail=False,
                                         options={"tflm_src": str(tree.root)})
                    row = [tree.label, board + (" --emulate" if emulate else ""), name, f"{r.samples}",
                           f"{100 * r.exact_fraction:.1f}", str(r.max_lsb), f"{100 * r.agreement:.1f}",
                           f"{100 * r.accuracy_device:.2f}", "pass" if r.passed else "FAIL (exit 10)"]
                    doc["validate"].append({"tree": tree.label, "board": board, "model": name, **r.to_dict()})
                except EdgekitError as e:
                    row = [tree.label, board + (" --emulate" if emulate else ""), name, "-", "-", "-", "-", "-",
                           f"refused (exit {e.exit_code})"]
                    doc["validate"].append({"tree": tree.label, "board": board, "model": name, "refused": e.message})
                rows.append(row)
                print(f"  validate: {' / '.join(row[:3])}: {row[-1]} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print()
    print(table("Emulated Cortex-M4 vs host TFLM (whole digits test set)",
                ["tree", "board", "model", "samples", "exact %", "max LSB", "argmax %", "device acc %", "verdict"],
                rows))

    # -- instruction counts, twice ----------------------------------------------------------------------
    tree = next((t for t in trees if t.layout == "tflite-micro"), trees[0])
    int8 = models["int8 (per-channel dense)"]
    profiles = []
    for _ in range(2):
        profiles.append(edgekit.profile(int8, board="qemu-m4", runs=50, warmup=5, float_baseline=True,
                                        options={"tflm_src": str(tree.root)}).to_dict())
    a, b = ({op["name"]: op["instructions_mean"] for op in p["per_op"]} for p in profiles)
    rows = [[name, f"{a[name]:,.0f}", f"{b[name]:,.0f}", f"{abs(a[name] - b[name]):,.0f}"] for name in a]
    rows.append(["whole inference (median)", f"{profiles[0]['instructions']['median']:,.0f}",
                 f"{profiles[1]['instructions']['median']:,.0f}",
                 f"{abs(profiles[0]['instructions']['median'] - profiles[1]['instructions']['median']):,.0f}"])
    fb = profiles[0].get("float_baseline") or {}
    print()
    print(table(f"Instructions per inference, int8 digits CNN, {tree.label} ({profiles[0]['firmware']['kernels']}), "
                "two profiles (one SysTick tick = 40 instructions)", ["op", "run 1", "run 2", "difference"], rows))
    if "instructions_mean" in fb:
        print(f"float32 model on the same firmware: {fb['instructions_mean']:,.0f} instructions per inference "
              f"({fb['instructions_mean'] / profiles[0]['instructions']['mean']:.2f}x the int8 model)")
    doc["profile"] = profiles

    # -- time and energy on the Nano 33 BLE, estimated from instruction counts ---------------------------
    rows = []
    for tree in trees:
        for name, path in models.items():
            try:
                p = edgekit.profile(path, board="nano33ble", emulate=True, runs=20, warmup=2,
                                    options={"tflm_src": str(tree.root)}).to_dict()
            except EdgekitError as e:
                rows.append([tree.label, name, "-", "-", "-", f"refused: {e.message[:60]}"])
                continue
            est, energy = p["estimate"], p["energy"]
            fb = energy.get("float_baseline") or {}
            rows.append([tree.label, name, f"{p['instructions']['median']:,.0f}",
                         f"{est['latency_us'] / 1000:.1f} ({est['latency_us_low'] / 1000:.1f}-"
                         f"{est['latency_us_high'] / 1000:.1f})", f"{energy['per_inference_uj']:.0f}",
                         (f"float {fb['estimated_latency_us'] / 1000:.1f} ms, {fb['per_inference_uj']:.0f} µJ: "
                          f"saves {100 * fb['saved_fraction']:.0f} %") if "saved_uj" in fb else fb.get("skipped", "-")])
            doc.setdefault("energy", []).append({"tree": tree.label, "model": name, "estimate": est, "energy": energy})
    print()
    print(table("Nano 33 BLE (--emulate), estimated from instruction counts x CPI (targets/cores/cortex-m4.yaml) "
                "/ 64 MHz, 20 mW active", ["tree", "model", "instructions", "ms (band)", "µJ", "float model"], rows))

    # -- firmware sizes and build times ----------------------------------------------------------------
    per_tensor = models["int8 (per-tensor dense)"].read_bytes()
    other = models["int8 (per-channel dense)"].read_bytes()
    rows, build_rows = [], []
    for tree in trees:
        cache = Path(tempfile.mkdtemp(prefix="edgekit-bench-cache-"))
        old = os.environ.get("EDGEKIT_CACHE")
        os.environ["EDGEKIT_CACHE"] = str(cache)
        try:
            nano = QemuRunner(load_board("nano33ble"), options={"tflm_src": str(tree.root), "emulate": True})
            t0 = time.perf_counter()
            clean = nano.build_for([per_tensor])
            t_clean = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = nano.build_for([other])
            t_rebuild = time.perf_counter() - t0
            upload = QemuRunner(load_board("qemu-m4"), options={"tflm_src": str(tree.root)}).build_for([per_tensor])
        finally:
            if old is None:
                os.environ.pop("EDGEKIT_CACHE", None)
            else:
                os.environ["EDGEKIT_CACHE"] = old
            shutil.rmtree(cache, ignore_errors=True)
        text = clean.sizes["text"]
        rows.append([tree.label, f"{text:,}", f"{text - len(per_tensor):,}", f"{clean.sizes['data']:,}",
                     f"{clean.sizes['bss']:,}", f"{upload.sizes['text']:,}", str(len(clean.library_sources))])
        build_rows.append([tree.label, f"{t_clean:.0f}", str(clean.compiled), f"{t_rebuild:.1f}",
                           str(again.compiled_from_tree), str(again.compiled)])
        doc["firmware"].append({"tree": tree.label, "nano33ble_builtin": clean.to_dict(), "qemu_upload": upload.to_dict()})
        doc["builds"].append({"tree": tree.label, "clean_s": t_clean, "model_change_s": t_rebuild})
    print()
    print(table(f"Linked firmware (nano33ble's build emulated, model built in: {len(per_tensor):,} B)",
                ["tree", "text", "text without model", "data", "bss", "qemu-m4 upload fw text", "tree sources"],
                rows))
    print()
    print(table(f"Build times on {os.cpu_count()} cores (clean: empty object cache; model change: same ops)",
                ["tree", "clean s", "objects", "model change s", "tree objects rebuilt", "objects rebuilt"],
                build_rows))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
