"""Benchmark of dense quantization choices and of the quantization doctor (`edgekit diagnose`).

1. Per-channel vs per-tensor FULLY_CONNECTED weights (`edgekit convert`, int8 PTQ, stripped): model
   bytes, the exact TFLM arena (host TFLM, the smallest arena that allocates and runs), accuracy on
   host TFLM, and what `convert` chooses on its own (per-tensor where it costs <= 0.1 point), for the
   digits CNN (sklearn digits) and a dense autoencoder of the MLPerf Tiny anomaly-detection shape
   (640 -> 4 x 128 -> 8 -> 4 x 128 -> 640, trained here on synthetic low-rank signals; its "points" are
   the reconstruction MAE's increase as a percentage of the mean absolute input).
2. The doctor on small models where int8 PTQ loses accuracy (tests/tinymodels.py: the outlier and
   dead-unit MLPs) and on the digits CNN: plain int8 PTQ's drop, the setting chosen within
   --max-drop 1, its drop (host TFLM), and the doctor's host wall time.
3. With QEMU, the cross compiler and the Chirale tree (EDGEKIT_TFLM_SRC): the chosen 16x8 model on the
   Nano 33 BLE's own firmware (`validate --emulate`), against host TFLM.

    python bench/bench_doctor.py [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_convert import table, trained_digits  # noqa: E402


def autoencoder(work: Path, epochs: int) -> None:
    """The MLPerf Tiny AD-shaped dense autoencoder, trained to reconstruct synthetic low-rank signals."""
    from edgekit import _tf

    k = _tf.keras()
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    basis = rng.normal(0, 1, (12, 640)).astype(np.float32)

    def signals(n):
        return (rng.normal(0, 1, (n, 12)).astype(np.float32) @ basis / 4 + rng.normal(0, 0.1, (n, 640))).astype(
            np.float32)

    x_train, x_test = signals(2000), signals(400)
    np.savez(work / "ae_train.npz", x=x_train, y=x_train)
    np.savez(work / "ae_test.npz", x=x_test, y=x_test)
    inp = k.layers.Input((640,))
    x = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = k.layers.ReLU()(k.layers.BatchNormalization()(k.layers.Dense(units)(x)))
    model = k.Model(inp, k.layers.Dense(640)(x))
    model.compile(k.optimizers.Adam(1e-3), "mse")
    with _tf.quiet_native():
        model.fit(x_train, x_train, epochs=epochs, batch_size=64, verbose=0)
    model.save(work / "ae.keras")


def dense_rows(work: Path, name: str, model: str, train: str, test: str) -> tuple[list[list], list[dict]]:
    import edgekit
    from edgekit import _tf
    from edgekit.conversion.doctor import drop_points
    from edgekit.conversion.data import load_data
    from edgekit.optimize.recipe import Recipe

    test_data = load_data(work / test, need_labels=True)
    rows, docs = [], []
    for label, recipe in (("per-channel", Recipe.from_flags(dense_auto=False)),
                          ("per-tensor", Recipe.from_flags(dense_per_tensor=True)),
                          ("convert's choice", Recipe.from_flags())):
        with _tf.quiet_native():
            rep = edgekit.convert(work / model, work / train, work / test, recipe).report
        ev = rep["evaluation"]
        metric = ev["delta_vs_float"]["metric"]
        drop = drop_points(ev["tflm"], ev["keras_float"], test_data)
        quant = next(s for s in rep["stages"] if s["stage"] == "quantize")
        chosen = quant["settings"]["dense_per_tensor"]
        note = ""
        if "dense_choice" in quant:
            note = f"{quant['dense_choice']['chosen']} (per-tensor costs {quant['dense_choice']['cost_points']:+.2f} pt)"
        value = f"{100 * ev['tflm'][metric]:.2f} %" if metric == "accuracy" else f"MAE {ev['tflm'][metric]:.4f}"
        rows.append([name, label if label != "convert's choice" else f"convert: {note}",
                     f"{rep['sizes']['final_bytes']:,}", f"{ev['tflm_arena_bytes']:,}", value, f"{drop:+.2f}"])
        docs.append({"model": name, "variant": label, "bytes": rep["sizes"]["final_bytes"],
                     "arena_bytes": ev["tflm_arena_bytes"], "tflm": ev["tflm"], "float": ev["keras_float"],
                     "drop_points": drop, "dense_per_tensor": chosen, "dense_choice": quant.get("dense_choice")})
        print(f"  converted: {name}, {label}", flush=True)
    return rows, docs


def doctor_row(name: str, model, train, test, board: str | None = None) -> tuple[list, dict, object]:
    from edgekit import _tf
    from edgekit.conversion.doctor import diagnose

    t0 = time.perf_counter()
    with _tf.quiet_native():
        d = diagnose(model, train, test, board=board, max_drop=1.0, raise_if_unmet=False)
    dt = time.perf_counter() - t0
    chosen = d.chosen
    first = d.trials[0]

    def arena(trial):
        return f"{trial.exact_arena_bytes:,}" if trial is not None and trial.exact_arena_bytes else "-"

    row = [name + (f" (board {board})" if board else ""), f"{100 * d.float_score['accuracy']:.2f} %",
           f"{d.baseline.drop_points:+.2f}", f"{first.setting.name}: {first.drop_points:+.2f}",
           chosen.setting.name if chosen else f"none; closest {d.closest.setting.name}",
           f"{(chosen or d.closest).drop_points:+.2f}", f"{d.baseline.model_bytes:,} / {arena(d.baseline)}",
           f"{chosen.model_bytes:,} / {arena(chosen)}" if chosen else "-", f"{len(d.trials)}", f"{dt:.1f}"]
    return row, d.to_dict(), d


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer training epochs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import tinymodels

    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-doctor-"))
    print(f"models and data in {work}", flush=True)
    trained_digits(work)
    autoencoder(work, epochs=3 if args.quick else 10)
    doc: dict = {}

    rows, doc["dense"] = dense_rows(work, "digits CNN", "digits.keras", "train.npz", "test.npz")
    more, docs = dense_rows(work, "dense autoencoder", "ae.keras", "ae_train.npz", "ae_test.npz")
    rows += more
    doc["dense"] += docs
    print()
    print(table("Dense weights: per-channel vs per-tensor (int8 PTQ, stripped; arena: exact minimum on host TFLM; "
                "accuracy on host TFLM)", ["model", "dense weights", "bytes", "arena B", "host TFLM", "drop pt"], rows))

    x, y = tinymodels.blobs(600, seed=1)
    train = (x, None)
    test = tinymodels.blobs(400, seed=2)
    doctor_rows, doc["doctor"] = [], []
    cases = [("outlier MLP", tinymodels.outlier_mlp_keras(), train, test, None),
             ("outlier MLP", tinymodels.outlier_mlp_keras(), train, test, "nano33ble"),
             ("dead-unit MLP", tinymodels.dead_unit_mlp_keras(), train, test, None),
             ("digits CNN", work / "digits.keras", work / "train.npz", work / "test.npz", None),
             ("digits CNN", work / "digits.keras", work / "train.npz", work / "test.npz", "nano33ble")]
    chosen16 = None
    for name, model, tr, te, board in cases:
        row, d_doc, d = doctor_row(name, model, tr, te, board)
        doctor_rows.append(row)
        doc["doctor"].append(d_doc)
        if board == "nano33ble" and d.chosen is not None and d.chosen.setting.activations == "int16":
            chosen16 = d.model
        print(f"  diagnosed: {row[0]}", flush=True)
    print()
    print(table("The doctor (edgekit diagnose --max-drop 1): drops in points against float on host TFLM; bytes "
                "stripped / exact arena on host TFLM; time is host wall time",
                ["model", "float", "plain int8 PTQ drop", "cheapest setting: drop", "chosen setting", "its drop",
                 "plain B / arena", "chosen B / arena", "settings tried", "host s"], doctor_rows))

    # the 16x8 fix on the Nano's own library, when the emulated target can be built
    if chosen16 is not None:
        from edgekit.errors import EdgekitError
        from edgekit.tflm.tree import find_trees

        trees = [t for t in find_trees().trees if t.name == "Chirale_TensorFLowLite" and not t.problems]
        if trees:
            import edgekit

            path = work / "outlier16.tflite"
            path.write_bytes(chosen16)
            np.savez(work / "blobs_test.npz", x=test[0], y=test[1])
            try:
                r = edgekit.validate(path, work / "blobs_test.npz", board="nano33ble", emulate=True, n=400,
                                     raise_on_fail=False, options={"tflm_src": str(trees[0].root)})
                print()
                print(table("The 16x8 fix on the Nano 33 BLE's firmware (Chirale 2.0.0, emulated Cortex-M4) against "
                            "host TFLM", ["model", "samples", "equal to host TFLM", "max LSB", "verdict"],
                            [["outlier MLP, 16x8 per-tensor dense", r.samples, f"{100 * r.exact_fraction:.1f} %",
                              r.max_lsb, "pass" if r.passed else "fail"]]))
                doc["emulated_16x8"] = r.to_dict()
            except EdgekitError as e:
                print(f"\n(emulated Nano check skipped: {e.message})")
        else:
            print("\n(emulated Nano check skipped: no Chirale_TensorFLowLite tree in EDGEKIT_TFLM_SRC)")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
