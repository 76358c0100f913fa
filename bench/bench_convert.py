"""Benchmark of `edgekit convert` on the digits CNN (sklearn digits, ~21k parameters).

Prints tables: size and accuracy of int8 PTQ and of compression chains (cluster 16/8/4 with LUT index
widths 4/3/2, with and without pruning, preserving QAT; channel pruning 0.4 before cluster 4 + QAT + lut2), the smallest chain within 1.0 point of float,
`edgekit --help` start-up time, and `edgekit convert` (PTQ) wall time against a minimal hand-written
TensorFlow conversion script doing the same thing.

    python bench/bench_convert.py [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARENA_BUDGET_BYTES = 12 * 1024     # the lut-auto chain's RAM budget row
sys.path.insert(0, str(ROOT / "examples" / "digits"))

MINIMAL_SCRIPT = r'''
import os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf, tf_keras
model = tf_keras.models.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])["x"].astype("float32")[:300]
def rep():
    for i in range(len(x)):
        yield [x[i:i + 1]]
c = tf.lite.TFLiteConverter.from_keras_model(model)
c.optimizations = [tf.lite.Optimize.DEFAULT]; c.representative_dataset = rep
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = tf.int8; c.inference_output_type = tf.int8
open(sys.argv[3], "wb").write(c.convert())
'''


def table(title: str, header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
    out = [title, line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    return "\n".join(out)


def timed(cmd: list[str], env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def trained_digits(work: Path):
    """Train the digits CNN (30 epochs) into work/digits.keras, with work/train.npz and work/test.npz."""
    import numpy as np
    from digits_data import load_split, train_cnn

    from edgekit import _tf

    x_train, y_train, x_test, y_test = load_split()
    np.savez(work / "train.npz", x=x_train, y=y_train)
    np.savez(work / "test.npz", x=x_test, y=y_test)
    with _tf.quiet_native():
        model = train_cnn(x_train, y_train, epochs=30)
    model.save(work / "digits.keras")
    return model, (x_train, x_test)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer chains and repeats")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--stage-epochs", type=int, default=4)
    args = ap.parse_args()

    import edgekit
    from edgekit import _tf
    from edgekit.optimize.recipe import Recipe

    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    model, (x_train, x_test) = trained_digits(work)
    print(f"digits CNN: {model.count_params():,} parameters; train {len(x_train)}, test {len(x_test)}\n")

    chains = [("int8 PTQ", Recipe.from_flags(dense_auto=False))]   # the converter's per-channel dense weights
    e = args.stage_epochs
    grid = [(16, 4), (8, 3), (4, 2)] if not args.quick else [(8, 3), (4, 2)]
    for prune in ([None, 0.5] if not args.quick else [None]):
        for clusters, bits in grid:
            name = (f"prune {prune} + " if prune else "") + f"cluster {clusters} + QAT + lut{bits}"
            chains.append((name, Recipe.from_flags(prune=prune, cluster=clusters, qat=True,
                                                   compress=f"lut{bits}", epochs=e)))
            if prune is None:      # the same chain with the bits chosen per tensor (only where it pays)
                chains.append((f"cluster {clusters} + QAT + lut-auto",
                               Recipe.from_flags(cluster=clusters, qat=True, compress="auto", epochs=e)))
            if prune is None and clusters == 8:   # auto under an arena budget between plain int8's and lut's
                budgeted = Recipe.from_flags(cluster=clusters, qat=True, compress="auto", epochs=e)
                budgeted.compress.max_arena_bytes = ARENA_BUDGET_BYTES
                chains.append((f"cluster 8 + QAT + lut-auto, --max-arena {ARENA_BUDGET_BYTES // 1024}k", budgeted))
    # structured pruning first: a smaller model for the same chain (bench/bench_prune_channels.py has more)
    chains.append(("prune-channels 0.4 + cluster 4 + QAT + lut2",
                   Recipe.from_flags(prune_channels=0.4, cluster=4, qat=True, compress="lut2", epochs=e)))
    rows, results = [], []
    float_bytes = float_acc = None
    for name, recipe in chains:
        t0 = time.perf_counter()
        with _tf.quiet_native():
            rep = edgekit.convert(work / "digits.keras", work / "train.npz", work / "test.npz", recipe).report
        dt = time.perf_counter() - t0
        ev = rep["evaluation"]
        float_bytes = rep["sizes"]["float_bytes"]
        float_acc = ev["keras_float"]["accuracy"]
        final_acc = (ev.get("litert") or ev["tflm"])["accuracy"]
        agree = (ev.get("litert_vs_tflm") or {}).get("argmax_agreement")
        bd = rep["sizes"]["final_breakdown"]
        results.append({"chain": name, "bytes": rep["sizes"]["final_bytes"], "ratio": rep["sizes"]["ratio"],
                        "weight_bytes": bd["weight_bytes"], "structure_bytes": bd["structure_bytes"],
                        "accuracy": final_acc, "delta_pt": 100 * (final_acc - float_acc),
                        "tflm_accuracy": ev["tflm"]["accuracy"], "agreement": agree,
                        "arena": ev.get("tflm_arena_bytes"), "seconds": dt})
        r = results[-1]
        rows.append([name, f"{r['bytes']:,}", f"{r['ratio']:.3f}", f"{r['weight_bytes']:,}",
                     f"{r['structure_bytes']:,}", f"{100 * final_acc:.2f}", f"{r['delta_pt']:+.2f}",
                     "-" if agree is None else f"{100 * agree:.1f}", f"{r['arena']:,}" if r["arena"] else "-",
                     f"{dt:.1f}"])
        print(f"  done: {name} ({dt:.1f} s)", flush=True)
    print()
    print(table(f"Shrink chains (float32 .tflite {float_bytes:,} B, Keras float accuracy {100 * float_acc:.2f} %)",
                ["chain", "bytes", "x float", "weights", "structure", "acc %", "Δ pt", "LiteRT=TFLM %",
                 "arena", "s"], rows))
    ok = [r for r in results if r["delta_pt"] >= -1.0]
    best = min(ok, key=lambda r: r["bytes"]) if ok else None
    print()
    ptq = results[0]
    print(f"int8 PTQ: {ptq['ratio']:.3f} of float32 (target <= 0.333), Δ {ptq['delta_pt']:+.2f} pt (target >= -0.5)")
    if best:
        print(f"smallest chain within 1.0 pt: {best['chain']}: {best['bytes']:,} B = {best['ratio']:.3f} of float32 "
              f"(target <= 0.167, aim 0.125), Δ {best['delta_pt']:+.2f} pt")

    # start-up and wall time against a minimal script
    exe = [sys.executable, "-m", "edgekit"]
    reps = 5 if args.quick else 10
    help_times = [timed([*exe, "--help"]) for _ in range(reps)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    script = work / "minimal.py"
    script.write_text(MINIMAL_SCRIPT)
    ek, mini = [], []
    for i in range(3 if not args.quick else 1):
        mini.append(timed([sys.executable, str(script), str(work / "digits.keras"), str(work / "train.npz"),
                           str(work / f"m{i}.tflite")], env=env))
        ek.append(timed([*exe, "convert", str(work / "digits.keras"), "--data", str(work / "train.npz"),
                         "-o", str(work / f"ek{i}")], env=env))
    print()
    print(table("Start-up and PTQ wall time (median)", ["what", "seconds"], [
        ["edgekit --help", f"{statistics.median(help_times):.3f}"],
        ["minimal TF script: int8 PTQ", f"{statistics.median(mini):.2f}"],
        ["edgekit convert (int8 PTQ, no --eval)", f"{statistics.median(ek):.2f}"],
        ["ratio edgekit / minimal", f"{statistics.median(ek) / statistics.median(mini):.2f} (target <= 1.2)"],
    ]))
    if args.json:
        args.json.write_text(json.dumps({"chains": results, "help_s": help_times, "minimal_s": mini,
                                         "edgekit_convert_s": ek}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
