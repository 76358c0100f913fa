"""End-to-end demo on real data (sklearn digits): train a small CNN, then shrink it with edgekit.

    python examples/digits/run.py --out build/digits

Steps (each printed before it runs):
1. train the digits CNN (tf_keras) and save digits.keras, train.npz and test.npz
2. edgekit convert --board nano33ble: int8 PTQ as the Nano's TFLM runs it  -> <out>/int8
3. edgekit convert: channel pruning + cluster + preserving QAT + LUT       -> <out>
4. edgekit inspect --board nano33ble (both models); 5. edgekit export --format c
6. edgekit validate and 7. edgekit profile on the virtual board (no hardware needed)
8. on the emulated Cortex-M4 (when QEMU, the cross compiler and a TFLM tree are there): validate the
   LUT model on qemu-m4, validate and profile the int8 model as the Nano 33 BLE's firmware (--emulate)
9. edgekit report: one self-contained HTML file with charts
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  ({time.perf_counter() - t0:.1f} s)\n", flush=True)


def emulated_target_missing() -> str | None:
    """Why step 8 cannot run here (None: it can): QEMU, the cross compiler and TFLM trees."""
    import shutil

    from edgekit.boards import load_board
    from edgekit.errors import EdgekitError
    from edgekit.tflm.tree import find_trees, select_tree

    missing = [t for t in ("qemu-system-arm", "arm-none-eabi-g++") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    if "tflite-micro" not in {t.layout for t in find_trees().trees}:
        return "needs a tflite-micro checkout for DECODE: set EDGEKIT_TFLM_SRC (edgekit doctor lists what it finds)"
    try:
        select_tree(load_board("nano33ble"))
    except EdgekitError as e:
        return f"{e.message}; {e.hint}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/digits", type=Path)
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of the float model")
    ap.add_argument("--stage-epochs", type=int, default=3, help="fine-tuning epochs per shrink stage")
    args = ap.parse_args()

    import numpy as np
    from digits_data import load_split, train_cnn

    work = args.out.parent / (args.out.name + "_inputs")
    work.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = load_split()
    np.savez(work / "train.npz", x=x_train, y=y_train)
    np.savez(work / "test.npz", x=x_test, y=y_test)
    model_path = work / "digits.keras"
    print(f"1. training the digits CNN on {len(x_train)} samples ({args.epochs} epochs)", flush=True)
    t0 = time.perf_counter()
    model = train_cnn(x_train, y_train, epochs=args.epochs)
    model.save(model_path)
    print(f"  saved {model_path} ({model.count_params():,} parameters, {time.perf_counter() - t0:.1f} s)\n")

    edgekit = [sys.executable, "-m", "edgekit"]
    common = ["--data", str(work / "train.npz"), "--eval", str(work / "test.npz")]
    print("2. int8 post-training quantization, made for the Nano 33 BLE's TFLM library")
    run([*edgekit, "convert", str(model_path), *common, "--board", "nano33ble", "-o", str(args.out / "int8")])
    print("3. the whole shrink chain: whole channels removed (fewer MACs, bytes and arena on the device), then "
          "cluster + QAT + LUT")
    run([*edgekit, "convert", str(model_path), *common, "--prune-channels", "0.4", "--cluster", "8", "--qat",
         "--compress", "lut3", "--epochs", str(args.stage_epochs), "-o", str(args.out)])
    out = args.out
    print("4. inspect: ops, MACs, exact TFLM arena, fit on a Nano 33 BLE (the LUT model needs DECODE, "
          "which the Nano's library lacks: inspect says so)")
    run([*edgekit, "inspect", str(out / "int8" / "model.tflite"), "--board", "nano33ble"])
    run([*edgekit, "inspect", str(out / "model.tflite"), "--board", "nano33ble"])
    print("5. export TFLM C arrays and the op resolver")
    run([*edgekit, "export", str(out / "model.tflite"), "--format", "c", "-o", str(out / "c"), "--name", "digits"])
    print("6. validate on the virtual board (real TFLM kernels over the serial protocol on a pty)")
    run([*edgekit, "validate", str(out / "model.tflite"), "--board", "virtual", "--data", str(work / "test.npz")])
    print("7. profile on the virtual board (with the float baseline for the energy estimate)")
    run([*edgekit, "profile", str(out / "model.tflite"), "--board", "virtual", "--runs", "200", "--warmup", "10",
         "-o", str(out / "profile.json")])
    step8 = emulated_target_missing()
    if step8:
        print(f"8. emulated Cortex-M4: skipped ({step8})\n")
    else:
        print("8. the emulated Cortex-M4: real TFLM + CMSIS-NN cross-compiled and run on QEMU (instruction counts)")
        run([*edgekit, "validate", str(out / "model.tflite"), "--board", "qemu-m4", "--data", str(work / "test.npz")])
        run([*edgekit, "validate", str(out / "int8" / "model.tflite"), "--board", "nano33ble", "--emulate",
             "--data", str(work / "test.npz")])
        run([*edgekit, "profile", str(out / "int8" / "model.tflite"), "--board", "nano33ble", "--emulate",
             "--runs", "50", "-o", str(out / "profile_nano33ble_emulated.json")])
    print("9. the HTML report (charts embedded; sizes, sparsity, accuracy, latency, budget on nano33ble)")
    run([*edgekit, "report", str(out), "--board", "nano33ble", "-o", str(out / "report.html")])
    print(f"done: {out}/model.tflite, {out}/report.json, {out}/c/, {out}/profile.json, {out}/report.html")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
